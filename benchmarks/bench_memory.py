"""Peak resident memory per rank of a pretraining run, from start to export: from scratch and
continued from an export.

    python benchmarks/bench_memory.py                      # vit-huge, needs ~16 GB free RAM
                                                           # and ~2.5 GB of disk for the export
    python benchmarks/bench_memory.py --preset tiny        # seconds: checks the script itself

Runs the unchanged recipe three times, one after the other (never two at once), on the bundled
Sentinel-2 sample at a small crop and batch 1:

1. sharded: 2 CPU processes under FSDP2 (``tests/configs/cpu_fsdp.yaml`` through the
   ``geofm_hf.training.cpu_fsdp`` launcher), the model built on ``meta`` and materialised per shard;
2. continued: the same, with ``--model_name_or_path`` an export of the same model (random weights,
   ``save_pretrained`` in the work folder, written by a separate process first): each rank reads
   only its own slices of ``model.safetensors``;
3. unsharded: one process, no distribution (the baseline).

With ``--glibc-default-too`` a third run repeats (1) with ``--cpu_release_freed_memory false``:
glibc's dynamic mmap threshold, which keeps freed block-sized tensors in the heap
(``geofm_hf/training/host_memory.py`` explains it).

Each run trains ``--steps`` steps, writes its checkpoint and streams its export. The peak of each
process is its kernel high-water mark (``VmHWM`` in ``/proc/PID/status``), read until it exits.
All are printed against one full fp32 training state (weights + gradients + two AdamW moments =
16 bytes per parameter); the goal of issues 16 and 23 is a sharded peak below 60 % of it, from
scratch and continued alike.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]


def _vm_hwm_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def _run_and_watch(cmd: list[str], is_rank, log: Path) -> dict[int, int]:
    """Run ``cmd``; return {pid: peak RSS bytes} for the processes ``is_rank`` picks."""
    peaks: dict[int, int] = {}
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                family = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            for p in family:
                try:
                    parent = p.parent()
                    if not is_rank(p.cmdline()) or (parent and is_rank(parent.cmdline())):
                        # A rank's own children (forked data-loader workers keep its command
                        # line) are not ranks.
                        continue
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                hwm = _vm_hwm_bytes(p.pid)
                if hwm is not None:
                    peaks[p.pid] = max(peaks.get(p.pid, 0), hwm)
            time.sleep(0.05)
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({proc.returncode}); see {log}:\n{log.read_text()[-3000:]}")
    return peaks


def _make_export(recipe_args: list[str], folder: Path) -> None:
    """What a from-scratch run of ``recipe_args`` would build, with random weights, saved as an
    export to continue from (run in its own process: the benchmark itself stays small)."""
    import torch

    from geofm_hf import GeoViTMAEForPreTraining
    from geofm_hf.training.arguments import parse_arguments
    from geofm_hf.training.data_contract import build_model_config, read_data_contract

    model_args, data_args, _ = parse_arguments([*recipe_args, "--output_dir", str(folder)])
    data = read_data_contract(data_args)
    config = build_model_config(model_args, data_args, data.info, data.datasets)
    torch.manual_seed(0)
    GeoViTMAEForPreTraining(config).save_pretrained(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="vit-huge")
    parser.add_argument("--image_size", type=int, default=56, help="crop (patch-aligned)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--workdir", default=None)
    parser.add_argument(
        "--glibc-default-too",
        action="store_true",
        help="also run the sharded case with glibc's default allocator settings",
    )
    opts = parser.parse_args()

    import torch

    from geofm_hf import GeoViTMAEConfig, GeoViTMAEForPreTraining

    with torch.device("meta"):
        model = GeoViTMAEForPreTraining(
            GeoViTMAEConfig.from_preset(opts.preset, num_channels=13, image_size=opts.image_size)
        )
    params = sum(p.numel() for p in model.parameters())
    full_state = 16 * params

    work = Path(opts.workdir or tempfile.mkdtemp(prefix="bench_memory_"))
    work.mkdir(parents=True, exist_ok=True)
    recipe_args = [
        "--preset", opts.preset, "--image_size", str(opts.image_size),
        "--max_steps", str(opts.steps), "--save_steps", str(opts.steps), "--warmup_steps", "1",
        "--per_device_train_batch_size", "1", "--logging_steps", "1", "--report_to", "none",
        "--bf16", "false", "--plot_reconstructions", "false",
    ]  # fmt: skip
    launch = [sys.executable, "-m", "accelerate.commands.launch"]
    sharded_cmd = [
        *launch, "--config_file", str(ROOT / "tests" / "configs" / "cpu_fsdp.yaml"),
        "-m", "geofm_hf.training.cpu_fsdp", str(ROOT / "recipes" / "pretrain.py"),
        *recipe_args, "--output_dir", str(work / "sharded"),
    ]  # fmt: skip
    single_cmd = [
        sys.executable, str(ROOT / "recipes" / "pretrain.py"),
        *recipe_args, "--output_dir", str(work / "single"),
    ]  # fmt: skip

    def worker(cmdline):
        return any("pretrain.py" in part for part in cmdline) and not any(
            "accelerate.commands.launch" in part for part in cmdline
        )

    export = work / "export"
    continued_cmd = [*sharded_cmd, "--model_name_or_path", str(export)]
    continued_cmd[continued_cmd.index(str(work / "sharded"))] = str(work / "continued")

    print(f"{opts.preset}: {params / 1e6:.1f}M parameters, full fp32 training state "
          f"(weights + grads + AdamW) {full_state / 2**30:.2f} GiB; logs in {work}")  # fmt: skip
    sharded = _run_and_watch(sharded_cmd, worker, work / "sharded.log")
    if not (export / "model.safetensors").is_file():
        maker = multiprocessing.get_context("spawn").Process(
            target=_make_export, args=(recipe_args, export)
        )
        maker.start()
        maker.join()
        if maker.exitcode != 0:
            raise SystemExit(f"writing the export to {export} failed ({maker.exitcode})")
    exported = (export / "model.safetensors").stat().st_size
    continued = _run_and_watch(continued_cmd, worker, work / "continued.log")
    single = _run_and_watch(single_cmd, worker, work / "single.log")
    if len(sharded) != 2 or len(continued) != 2 or len(single) != 1:
        raise SystemExit(
            f"expected 2 sharded ranks (twice) and 1 single process: {sharded} {continued} {single}"
        )
    glibc = {}
    if opts.glibc_default_too:
        glibc_cmd = [*sharded_cmd, "--cpu_release_freed_memory", "false"]
        glibc_cmd[glibc_cmd.index(str(work / "sharded"))] = str(work / "sharded_glibc")
        glibc = _run_and_watch(glibc_cmd, worker, work / "sharded_glibc.log")

    gib = 2**30
    print(f"{'case':<34}{'peak RSS per rank':>20}{'of full state':>15}")
    for i, peak in enumerate(sorted(sharded.values())):
        print(f"{f'FSDP2, 2 CPU ranks (rank peak {i})':<34}{peak / gib:>16.2f} GiB"
              f"{peak / full_state:>15.0%}")  # fmt: skip
    for i, peak in enumerate(sorted(continued.values())):
        print(f"{f'continued, 2 ranks (rank peak {i})':<34}{peak / gib:>16.2f} GiB"
              f"{peak / full_state:>15.0%}")  # fmt: skip
    for i, peak in enumerate(sorted(glibc.values())):
        print(f"{f'same, glibc default (rank peak {i})':<34}{peak / gib:>16.2f} GiB"
              f"{peak / full_state:>15.0%}")  # fmt: skip
    (peak_single,) = single.values()
    print(f"{'unsharded, 1 process (baseline)':<34}{peak_single / gib:>16.2f} GiB"
          f"{peak_single / full_state:>15.0%}")  # fmt: skip
    print(f"export continued from: {exported / gib:.2f} GiB of model.safetensors")
    for label, peaks in (("from scratch", sharded), ("continued", continued)):
        worst = max(peaks.values())
        print(f"{label}: sharded / unsharded peak {worst / peak_single:.2f}; goal < 60% of full "
              f"state: {'met' if worst < 0.6 * full_state else 'NOT met'} "
              f"({worst / full_state:.0%})")  # fmt: skip


if __name__ == "__main__":
    main()
