"""The docs run: every ```python block of README.md and docs/**/*.md executes, and every flag a
shell block passes to one of our tools exists in that tool's --help.

A Python block runs in its own temporary folder. Blocks that load `outputs/demo/final` (or the
mixed-sensor / time-series demo exports) find there a small randomly initialised export of the
same shape as the demo's, built once per session without pretraining. A block that cannot run
on a CPU without network (Hub downloads, GPUs, Slurm) is preceded by the line
`<!-- notest: REASON -->`; the skips are counted and printed with their reasons.
"""

from __future__ import annotations

import contextlib
import io
import re
import runpy
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```", re.S | re.M)
NOTEST = re.compile(r"^<!--\s*notest:(.*?)-->\s*$")
# Skipped blocks are for what CI cannot reach; more than this says examples stopped running.
MAX_SKIPPED = 8


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    lang: str
    code: str
    skip: str | None  # the notest reason, "" when the marker gives none

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _blocks() -> list[Block]:
    out = []
    for path in DOC_FILES:
        text = path.read_text()
        for m in FENCE.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
            marker = NOTEST.match(before)
            skip = marker.group(1).strip() if marker else None
            out.append(Block(path, line, m.group(1), m.group(2), skip))
    return out


BLOCKS = _blocks()
PYTHON = [b for b in BLOCKS if b.lang == "python"]
SHELL = [b for b in BLOCKS if b.lang in ("bash", "sh", "shell")]


# --- exports the examples load ---------------------------------------------------------------


def _demo(folder: Path) -> None:
    """The quickstart export's shape: `tiny` MAE on the bundled sample's 13 bands, 64 px."""
    from geofm_hf import GeoViTMAEConfig, GeoViTMAEForPreTraining, GeoViTMAEImageProcessor
    from geofm_hf.data import read_dataset_info, sample_dataset_path

    info = read_dataset_info(sample_dataset_path())
    config = GeoViTMAEConfig.from_preset(
        "tiny", num_channels=len(info.band_names), band_names=info.band_names,
        wavelengths_um=info.wavelengths_um, gsd_m=info.gsd_m, image_mean=info.mean,
        image_std=info.std, image_size=64,
    )  # fmt: skip
    GeoViTMAEForPreTraining(config).save_pretrained(folder)
    GeoViTMAEImageProcessor.from_model_config(config).save_pretrained(folder)


def _mixed_sensors(folder: Path) -> None:
    """recipes/configs/demo_mixed_sensors.yaml's shape: a `tiny` wavelength model at 32 px."""
    from geofm_hf import GeoViTMAEConfig, GeoViTMAEForPreTraining, GeoViTMAEImageProcessor

    config = GeoViTMAEConfig.from_preset(
        "tiny", patch_embedding="wavelength", wavelength_embed_dim=64, image_size=32,
        num_channels=13,
    )  # fmt: skip
    GeoViTMAEForPreTraining(config).save_pretrained(folder)
    GeoViTMAEImageProcessor.from_model_config(config).save_pretrained(folder)


def _timeseries(folder: Path) -> None:
    """recipes/configs/demo_timeseries.yaml's shape: Landsat B3-B5, 4 dates, tubelets of 2."""
    from geofm_hf import GeoViTMAEConfig, GeoViTMAEForPreTraining, GeoViTMAEImageProcessor

    config = GeoViTMAEConfig.from_preset(
        "tiny", num_channels=3, band_names=["B3", "B4", "B5"],
        wavelengths_um=[0.66, 0.835, 1.65], image_mean=[700.0, 2000.0, 1800.0],
        image_std=[400.0, 900.0, 800.0], image_size=32, num_frames=4, tubelet_size=2,
        temporal_encoding=True, location_encoding=True,
    )  # fmt: skip
    GeoViTMAEForPreTraining(config).save_pretrained(folder)
    GeoViTMAEImageProcessor.from_model_config(config).save_pretrained(folder)


EXPORTS = {
    "outputs/demo/final": _demo,
    "outputs/demo_mixed_sensors/final": _mixed_sensors,
    "outputs/demo_timeseries/final": _timeseries,
}


@pytest.fixture(scope="session")
def export(tmp_path_factory):
    """The export a block names, built on first use (seconds: random weights, no training)."""
    import torch

    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            torch.manual_seed(0)
            folder = tmp_path_factory.mktemp("docs_exports") / name
            EXPORTS[name](folder)
            built[name] = folder
        return built[name]

    return get


# --- Python blocks ---------------------------------------------------------------------------


@pytest.mark.parametrize("block", PYTHON, ids=[b.where for b in PYTHON])
def test_python_block_runs(block, tmp_path, monkeypatch, export):
    if block.skip is not None:
        pytest.skip(f"{block.where}: {block.skip}")
    monkeypatch.chdir(tmp_path)
    if "tests/fixtures/" in block.code:  # the repo's real rasters, read where the docs say
        (tmp_path / "tests").symlink_to(ROOT / "tests", target_is_directory=True)
    for name in EXPORTS:
        if name in block.code:
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).symlink_to(export(name), target_is_directory=True)
    exec(compile(block.code, block.where, "exec"), {"__name__": "__main__"})


def test_skipped_blocks_say_why_and_stay_few():
    skipped = [b for b in BLOCKS if b.skip is not None]
    print(f"\ndoc code blocks: {len(PYTHON)} Python, {len(PYTHON) - len(skipped)} run, "
          f"{len(skipped)} skipped:")  # fmt: skip
    for b in skipped:
        print(f"  {b.where}: {b.skip}")
    assert all(b.skip for b in skipped), [b.where for b in skipped if not b.skip]
    assert all(b.lang == "python" for b in skipped), "notest marks Python blocks only"
    assert len(skipped) <= MAX_SKIPPED, [b.where for b in skipped]
    assert len(PYTHON) - len(skipped) >= 8


def test_readme_examples_run():
    readme = [b for b in PYTHON if b.path.name == "README.md" and b.path.parent == ROOT]
    assert readme and all(b.skip is None for b in readme)


# --- shell blocks: the flags and paths they name exist ---------------------------------------

_SCRIPTS = {
    e.name: e.value for e in entry_points(group="console_scripts") if e.name.startswith("geofm-")
}
TOOL = re.compile(
    r"(?:^|\s)(geofm-[\w-]+|-m geofm_hf\.data\.cli|(?:recipes|benchmarks|scripts)/[\w/]+\.(?:py|sbatch))(?=\s|$)"
)
PATH = re.compile(
    r"(?:^|[\s=,])((?:recipes|accelerate_configs|benchmarks|scripts|tests|geofm_hf)/[\w./-]+)"
)


def _commands(code: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", code)
    lines = (line.split(" #", 1)[0] for line in joined.splitlines() if not line.startswith("#"))
    return [" ".join(part.split()) for line in lines for part in re.split(r"&&|\|\||;|\|", line)]


def _tool_calls() -> list[tuple[str, str, list[str], str]]:
    """(where, tool, argv before the flags, flags) for each call of one of our tools."""
    calls = []
    for block in SHELL:
        for command in _commands(block.code):
            m = TOOL.search(command)
            if not m:
                continue
            tool = m.group(1).removeprefix("-m ")
            if tool == "geofm_hf.data.cli":
                tool = "geofm-make-shards"
            if tool.endswith(".sbatch"):  # passes its arguments to the pretraining recipe
                tool = "recipes/pretrain.py"
            rest = command[m.end() :].split()
            sub = ["table"] if rest[:1] == ["table"] else []
            for flag in re.findall(r"(?:^|[\s\[])(--[A-Za-z][\w-]*)", command[m.end() :]):
                calls.append((f"{block.where}: {command[:60]}", tool, sub, flag))
    return calls


def _help(tool: str, sub: list[str]) -> str:
    """The tool's --help text, from its own argument parser (in process: one torch import)."""
    argv = [*sub, "--help"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        if tool in _SCRIPTS:
            module, func = _SCRIPTS[tool].split(":")
            getattr(__import__(module, fromlist=[func]), func)(argv)
        else:
            old = sys.argv
            sys.argv = [str(ROOT / tool), *argv]
            try:
                runpy.run_path(str(ROOT / tool), run_name="__main__")
            finally:
                sys.argv = old
    return out.getvalue()


def test_shell_blocks_pass_only_flags_their_tools_define():
    calls = _tool_calls()
    assert len({tool for _, tool, _, _ in calls}) >= 8, "the flag check found too few tools"
    helps: dict[tuple[str, tuple[str, ...]], set[str]] = {}
    unknown = []
    for where, tool, sub, flag in calls:
        key = (tool, tuple(sub))
        if key not in helps:
            helps[key] = set(re.findall(r"--[\w-]+", _help(tool, sub)))
        if flag not in helps[key]:
            unknown.append(f"{where}: {tool} has no {flag}")
    assert not unknown, "\n".join(unknown)


def test_shell_blocks_name_only_files_that_exist():
    # outputs/, runs/ and the like are written by the commands themselves; the repo's own
    # folders must hold what the commands read.
    missing = []
    for block in SHELL:
        for path in PATH.findall(block.code):
            path = path.rstrip(".,")
            if "*" not in path and not (ROOT / path).exists():
                missing.append(f"{block.where}: {path}")
    assert not missing, missing


def test_shell_commands_split_like_a_shell():
    # The flag check reads commands as the shell would: continuation lines joined, comments cut.
    assert _commands("geofm-plan --preset a \\\n    --nodes 2  # --json\n") == [
        "geofm-plan --preset a --nodes 2"
    ]
    assert _commands("pip install x && python -m pytest") == ["pip install x", "python -m pytest"]
