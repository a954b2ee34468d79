"""Encoder inference on CPU: onnxruntime running a ``geofm-export-onnx`` file against eager PyTorch.

For each preset (default tiny and vit-base; random weights, 13 Sentinel-2 bands), a
``GeoViTMAEModel`` is saved, exported with :func:`geofm_hf.convert.onnx.export_onnx` (the
export's own check against PyTorch runs too), and the same batch is encoded by both, in
alternating timed rounds in one process (A B A B ...), fp32, the same number of threads.
Prints the CPU case it ran in (model name, AMX / AVX512-BF16 flags, load average), images/s of
each side, the ratio onnxruntime / eager, and eager bf16 autocast as a third row where the CPU
multiplies bf16 natively (what ``geofm-embed`` uses there).

    python benchmarks/bench_export.py [--presets tiny vit-base] [--batch 8] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
import torch

# A script's own folder is on sys.path: the CPU case is printed as bench_model prints it.
from bench_model import cpu_case

import geofm_hf
from geofm_hf.convert.onnx import export_onnx
from geofm_hf.training.reporting import cpu_has_fast_bf16

S2_BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]  # fmt: skip


def _timed(run, steps: int) -> float:
    """Seconds per call of ``run``, over ``steps`` calls."""
    start = time.perf_counter()
    for _ in range(steps):
        run()
    return (time.perf_counter() - start) / steps


def bench(preset: str, batch: int, rounds: int, steps: int, folder: Path) -> dict[str, float]:
    torch.manual_seed(0)
    config = geofm_hf.GeoViTMAEConfig.from_preset(preset, band_names=S2_BANDS)
    model = geofm_hf.GeoViTMAEModel(config).eval()
    model.save_pretrained(folder / preset)
    start = time.perf_counter()
    result = export_onnx(folder / preset, folder / f"{preset}.onnx")
    print(
        f"{preset}: exported in {time.perf_counter() - start:.0f} s, "
        f"{result.path.stat().st_size / 1e6:.0f} MB, onnxruntime vs eager max abs diff "
        f"{result.max_abs_diff:.1e}"
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(result.path), options, providers=["CPUExecutionProvider"])
    size = config.image_size
    pixels = torch.randn(batch, len(S2_BANDS), size, size)
    feed = {"pixel_values": pixels.numpy()}

    def eager(bf16: bool = False):
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            model(pixels)

    sides = {"eager fp32": eager, "onnxruntime fp32": lambda: session.run(None, feed)}
    if cpu_has_fast_bf16():
        sides["eager bf16 autocast"] = lambda: eager(bf16=True)
    for run in sides.values():  # warm-up: first calls allocate and pick kernels
        run()
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, run in sides.items():
            times[name].append(_timed(run, steps))
    return {name: batch / statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "vit-base"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="timed calls per round")
    args = parser.parse_args()
    print(cpu_case())
    print(
        f"batch {args.batch}, {args.rounds} alternating rounds of {args.steps} calls, "
        f"median round; torch {torch.__version__}, onnxruntime {ort.__version__}"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets:
            rows.append((preset, bench(preset, args.batch, args.rounds, args.steps, Path(tmp))))
    print(f"\n{'preset':<10} {'side':<22} {'images/s':>10} {'vs eager fp32':>14}")
    for preset, speeds in rows:
        base = speeds["eager fp32"]
        for name, speed in speeds.items():
            print(f"{preset:<10} {name:<22} {speed:>10.1f} {speed / base:>13.2f}x")


if __name__ == "__main__":
    main()
