"""The README's Quickstart and CI stay in sync: CI runs the README's test command verbatim."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quickstart_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = re.search(r"^## quick ?start\n(.*?)^## ", text, re.S | re.M | re.I).group(1)
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_quickstart_has_two_commands_and_ci_runs_the_test_one():
    install_and_train, install_and_test = quickstart_commands()
    assert "recipes/pretrain.py" in install_and_train and "accelerate launch" in install_and_train
    assert "pytest" in install_and_test
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert install_and_test in ci


def test_readme_has_no_unfilled_placeholders():
    assert "PLACEHOLDER" not in (ROOT / "README.md").read_text()


def test_paths_named_in_the_readme_exist():
    text = (ROOT / "README.md").read_text()
    for path in set(
        re.findall(
            r"`((?:recipes|accelerate_configs|benchmarks|docs|model_cards|geofm_hf)/[\w./-]+)`",
            text,
        )
    ):
        assert (ROOT / path).exists(), path


def test_code_map_names_every_module_and_folder_of_the_package():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"^## Code map\n+```\n(.*?)```", text, re.S | re.M).group(1)
    lines = block.split("geofm_hf/\n", 1)[1].split("\nrecipes/", 1)[0]
    # names in the first column (descriptions start at column 29)
    named = {n for line in lines.splitlines() for n in re.findall(r"[\w.]+/?", line[:29])}
    package = ROOT / "geofm_hf"
    entries = {p.name + "/" if p.is_dir() else p.name for p in package.iterdir()
               if p.name != "__pycache__" and (p.is_dir() or p.suffix == ".py")}  # fmt: skip
    assert entries == named, (sorted(entries - named), sorted(named - entries))
