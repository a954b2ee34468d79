"""Which per-rank costs of the real pretraining recipe grow with the number of processes?

Runs ``recipes/pretrain.py`` (tiny preset, bundled Sentinel-2 sample) under ``accelerate launch``
at 2, 4 and 8 CPU processes, against the sample as local shards and the same shards pushed to a
local Hub (``tests/hubserver.py``): a first run that trains and saves, then a second that resumes
from that checkpoint, trains and saves again. Every rank runs under ``tests/workers/scale_probe.py``,
which counts from outside the package what that rank did. Then, per figure, the least-squares
slope in processes, the extrapolation to 8,192 ranks and a verdict: flat, or grows.

    python benchmarks/scale_harness.py                      # DDP, 2/4/8 processes, local + hub
    python benchmarks/scale_harness.py --launcher fsdp      # FSDP2 (tests/configs/cpu_fsdp.yaml)
    python benchmarks/scale_harness.py --worlds 2 4 --steps 2 --json out.json

Figures (per rank: the largest over the ranks, unless the name says job or rank 0):

- files opened under the run folder and under the dataset (the shard folder, or the Hub cache);
- Hub requests per rank (the user agent names the rank) and metadata requests per job (all but
  the shards' bytes);
- shard bytes the stream read;
- rank-0-only seconds at start-up (dataset resolved by the main process), save and resume: rank
  0's work minus the median of the other ranks' (work = wall time less time inside collectives);
- collectives per optimizer step besides the gradient reduction (count_collectives' count).

Each world size starts with an empty run folder and, against the Hub, an empty Hub cache.

Timings on a shared or oversubscribed CPU (8 processes on 2 cores) are noisy: read the counts
first, and the seconds as an order of magnitude.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from pretrain_utils import CPU_CONFIG, CPU_FSDP_CONFIG, launch, records  # noqa: E402

from geofm_hf.data import sample_dataset_path  # noqa: E402

PROBE = ROOT / "tests" / "workers" / "scale_probe.py"
RECIPE = ROOT / "recipes" / "pretrain.py"
REPO = "geofm-bench/s2-sample"
TARGET_RANKS = 8192
_ORIGIN = re.compile(r"origin/geofm-rank(\d+)")
_DATA = re.compile(r"/datasets/" + re.escape(REPO) + r"/resolve/[^/]+/data/")

# (name, unit, tolerance): a figure is flat when its value at the largest world is at most its
# value at the smallest plus the tolerance (counts are exact; bytes and seconds are not).
FIGURES = (
    ("files opened, run folder (train+save)", "files", 0),
    ("files opened, run folder (resume+save)", "files", 0),
    ("files opened, dataset (train run)", "files", 0),
    ("files opened, dataset (resume run)", "files", 0),
    ("Hub requests per rank (train run)", "requests", 0),
    ("Hub requests per rank (resume run)", "requests", 0),
    ("Hub metadata requests per job (train run)", "requests", 0),
    ("Hub metadata requests per job (resume run)", "requests", 0),
    ("shard bytes read per rank (train run)", "bytes", 0.1),
    ("rank-0-only seconds, start-up", "s", 0.25),
    ("rank-0-only seconds, save", "s", 0.25),
    ("rank-0-only seconds, resume", "s", 0.25),
    ("collectives per step", "per step", 0),
)


def cpu_description() -> str:
    """The CPU model and whether it has AMX / AVX512-BF16 (bf16 matmuls in hardware)."""
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        found = re.search(r"Model name:\s*(.+)", out)
        model = found.group(1).strip() if found else model
    flags: set[str] = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    have = [f for f in ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f") if f in flags]
    return f"{model} | {os.cpu_count()} CPUs | flags: {', '.join(have) or 'no AMX/AVX512-BF16'}"


@contextlib.contextmanager
def local_hub_with_sample():
    """A local Hub (tests/hubserver.py) holding the bundled sample; yields the ``FakeHub``."""
    import pytest
    from hubserver import serving_hub
    from huggingface_hub import HfApi

    with (
        tempfile.TemporaryDirectory(prefix="scale-hub-") as home,
        pytest.MonkeyPatch.context() as mp,
        serving_hub(str(Path(home) / "hf_home"), mp) as hub,
    ):
        HfApi().create_repo(REPO, repo_type="dataset")
        HfApi().upload_folder(folder_path=sample_dataset_path(), repo_id=REPO, repo_type="dataset")
        yield hub


def _parse(stdout: str) -> dict[int, dict[str, float]]:
    ranks = {}
    for line in records(stdout, "SCALE"):
        fields = dict(item.split("=", 1) for item in line.split()[1:])
        ranks[int(fields["rank"])] = {k: float(v) for k, v in fields.items()}
    return ranks


def _run(world: int, output_dir: Path, steps: int, first: bool, launcher: str, hub, env: dict):
    """One launch of the recipe under the probe; its per-rank records and (hub) requests."""
    dataset = REPO if hub is not None else str(sample_dataset_path())
    args = [
        RECIPE,
        "--config", ROOT / "recipes" / "configs" / "demo.yaml",
        "--output_dir", output_dir, "--report_to", "none",
        "--dataset_name_or_path", dataset,
        "--per_device_train_batch_size", "2", "--logging_steps", "1", "--warmup_steps", "1",
        "--max_steps", str(steps if first else 2 * steps), "--save_steps", str(steps),
        "--plot_reconstructions", "false", "--resume_from_checkpoint", "auto",
    ]  # fmt: skip
    if hub is not None:
        hub.requests.clear()
    result = launch(
        PROBE,
        *args,
        env=env,
        config=CPU_FSDP_CONFIG if launcher == "fsdp" else CPU_CONFIG,
        launch_args=("--num_processes", str(world)),
    )
    ranks = _parse(result.stdout)
    if sorted(ranks) != list(range(world)):
        raise AssertionError(f"expected records of ranks 0..{world - 1}, got {sorted(ranks)}:\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")  # fmt: skip
    if hub is not None:
        per_rank = {r: 0 for r in range(world)}
        metadata = 0
        for request in hub.requests:
            found = _ORIGIN.search(request.headers.get("user-agent", ""))
            if found is None:
                raise AssertionError(f"a Hub request from no rank: {request.method} {request.path}")
            per_rank[int(found.group(1))] += 1
            metadata += not _DATA.search(request.path)
        for rank, count in per_rank.items():
            ranks[rank]["hub_requests"] = count
        ranks[0]["hub_metadata_per_job"] = metadata
    return ranks


def _rank0_only(ranks: dict, key: str) -> float:
    others = [r[key] for rank, r in ranks.items() if rank != 0]
    return ranks[0][key] - statistics.median(others)


def measure_world(world: int, source: str, steps: int, launcher: str, hub) -> dict[str, float]:
    """Every figure of one world size: a run that trains and saves, then one that resumes."""
    env = dict(hub.env) if hub is not None else {}
    with tempfile.TemporaryDirectory(prefix=f"scale-{source}-{world}-") as tmp:
        output_dir = Path(tmp) / "run"
        env["SCALE_OUTPUT_DIR"] = str(output_dir)
        if hub is not None:
            # A cache of its own per world: a warm one would hide the first world's downloads.
            home = Path(tmp) / "hf_home"
            env.update(HF_HOME=str(home), HF_HUB_CACHE=str(home / "hub"),
                       HF_XET_CACHE=str(home / "xet"), HF_MODULES_CACHE=str(home / "modules"))  # fmt: skip
        else:
            env["SCALE_DATA_DIR"] = str(sample_dataset_path())
        data_key = "opens_hf" if hub is not None else "opens_data"
        start = time.perf_counter()
        train = _run(world, output_dir, steps, True, launcher, hub, env)
        resume = _run(world, output_dir, steps, False, launcher, hub, env)
        seconds = time.perf_counter() - start

    def worst(ranks, key):
        return max(r.get(key, 0) for r in ranks.values())

    per_step = max(r["collectives_between_steps"] / max(r["steps"] - 1, 1)
                   for run in (train, resume) for r in run.values())  # fmt: skip
    figures = {
        "files opened, run folder (train+save)": worst(train, "opens_output"),
        "files opened, run folder (resume+save)": worst(resume, "opens_output"),
        "files opened, dataset (train run)": worst(train, data_key),
        "files opened, dataset (resume run)": worst(resume, data_key),
        "shard bytes read per rank (train run)": worst(train, "stream_bytes_read"),
        "rank-0-only seconds, start-up": _rank0_only(train, "startup_work_s"),
        "rank-0-only seconds, save": _rank0_only(train, "save_work_s"),
        "rank-0-only seconds, resume": _rank0_only(resume, "resume_work_s"),
        "collectives per step": per_step,
    }
    if hub is not None:
        figures["Hub requests per rank (train run)"] = worst(train, "hub_requests")
        figures["Hub requests per rank (resume run)"] = worst(resume, "hub_requests")
        figures["Hub metadata requests per job (train run)"] = train[0]["hub_metadata_per_job"]
        figures["Hub metadata requests per job (resume run)"] = resume[0]["hub_metadata_per_job"]
    figures["wall seconds (both runs)"] = seconds
    return figures


def slope_and_intercept(worlds: list[int], values: list[float]) -> tuple[float, float]:
    """Least squares of value = intercept + slope x processes."""
    mean_x, mean_y = statistics.fmean(worlds), statistics.fmean(values)
    sxx = sum((x - mean_x) ** 2 for x in worlds)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(worlds, values)) / sxx
    return slope, mean_y - slope * mean_x


def verdicts(by_world: dict[int, dict[str, float]]) -> list[dict]:
    """Per figure: values by world, slope, value extrapolated to 8,192 ranks, flat or grows."""
    worlds = sorted(by_world)
    rows = []
    for name, unit, tolerance in FIGURES:
        if any(name not in by_world[w] for w in worlds):
            continue
        values = [by_world[w][name] for w in worlds]
        slope, intercept = slope_and_intercept(worlds, values)
        # A falling cost is extrapolated as its last value (no cost goes below zero).
        at_target = intercept + slope * TARGET_RANKS if slope > 0 else values[-1]
        # Bytes are judged relative to the smallest world's value, the rest in their units.
        allowed = tolerance * values[0] if unit == "bytes" else tolerance
        flat = values[-1] <= values[0] + allowed or slope <= 0
        rows.append({
            "figure": name, "unit": unit, "values": dict(zip(worlds, values)), "slope": slope,
            f"at_{TARGET_RANKS}": at_target,
            "verdict": "flat" if flat else "grows",
        })  # fmt: skip
    return rows


def _fmt(value: float, unit: str) -> str:
    if unit == "s" or unit == "per step":
        return f"{value:.3f}"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def table(source: str, rows: list[dict]) -> str:
    worlds = list(rows[0]["values"]) if rows else []
    head = (f"| {source}: figure | " + " | ".join(f"{w} proc" for w in worlds)
            + f" | slope / proc | at {TARGET_RANKS:,} | verdict |")  # fmt: skip
    lines = [head, "|" + "---|" * (len(worlds) + 4)]
    for row in rows:
        cells = [_fmt(row["values"][w], row["unit"]) for w in worlds]
        lines.append(
            f"| {row['figure']} ({row['unit']}) | " + " | ".join(cells)
            + f" | {row['slope']:+.4g} | {_fmt(row[f'at_{TARGET_RANKS}'], row['unit'])} "
            f"| {row['verdict']} |"
        )  # fmt: skip
    return "\n".join(lines)


def measure(worlds=(2, 4, 8), sources=("local", "hub"), steps: int = 3, launcher: str = "ddp"):
    """{source: {"by_world": {world: figures}, "rows": verdicts}} for each source."""
    results = {}
    for source in sources:
        with local_hub_with_sample() if source == "hub" else contextlib.nullcontext() as hub:
            by_world = {w: measure_world(w, source, steps, launcher, hub) for w in worlds}
        results[source] = {"by_world": by_world, "rows": verdicts(by_world)}
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worlds", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--sources", nargs="+", choices=("local", "hub"), default=["local", "hub"])
    parser.add_argument("--launcher", choices=("ddp", "fsdp"), default="ddp")
    parser.add_argument("--steps", type=int, default=3,
                        help="steps of each run: the first saves at its last step, the second "
                        "resumes from it and trains as many again")  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if len(args.worlds) < 2:
        parser.error("--worlds needs at least two process counts for a slope")
    print(f"CPU: {cpu_description()}")
    print(f"launcher {args.launcher} | worlds {args.worlds} | {args.steps}+{args.steps} steps, "
          "per-device batch 2, tiny preset, bundled sample", flush=True)  # fmt: skip
    results = measure(sorted(args.worlds), args.sources, args.steps, args.launcher)
    for source, result in results.items():
        print()
        print(table(f"{args.launcher}/{source}", result["rows"]))
        walls = ", ".join(f"{w}: {f['wall seconds (both runs)']:.0f} s"
                          for w, f in result["by_world"].items())  # fmt: skip
        print(f"wall time of both runs per world: {walls}")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_description(), "launcher": args.launcher,
                                         "results": results}, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
