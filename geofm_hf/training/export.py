"""The end of a run: consolidated safetensors weights, processor, figures, run record and card
in ``final/``, swapped in atomically; ``summary.json`` beside it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from accelerate.utils import (
    gather_object,
)

import geofm_hf
from geofm_hf import GeoViTMAEForPreTraining
from geofm_hf._atomic import atomic_write_text
from geofm_hf.bands import rgb_band_indices
from geofm_hf.data import make_pretrain_dataloader
from geofm_hf.modeling_geofm import count_parameters
from geofm_hf.training.arguments import (
    as_flat_dict,
)
from geofm_hf.training.distributed import save_pretrained_streaming
from geofm_hf.training.reporting import (
    plot_loss_curve,
    plot_reconstructions,
)

if TYPE_CHECKING:
    from geofm_hf.training.data_contract import DataContract
    from geofm_hf.training.loop import Outcome
    from geofm_hf.training.run import Run


def export(
    run: Run, model, config, processor, data: DataContract, outcome: Outcome, loader
) -> None:
    """Consolidated safetensors weights, processor, figures, run record and card -> final/."""
    from geofm_hf.model_card import RunRecord, write_model_card

    args, accelerator, output_dir = run.args, run.accelerator, run.output_dir
    model_args, data_args = run.model_args, run.data_args
    step, wall, last_loss = outcome.step, outcome.wall_s, outcome.last_loss
    flops_img, peak_flops = run.extra["flops_img"], run.extra["peak_flops"]
    final = output_dir / "final"
    tmp = output_dir / ".tmp-final"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    # Collective: every rank gathers one tensor at a time; the main process writes.
    try:
        save_pretrained_streaming(model, tmp, write=accelerator.is_main_process)
    except BaseException:  # a full disk above all: leave no weights-less export behind
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    recon = None
    # A wavelength model needs each dataset's wavelengths; the plot takes one band set.
    if (
        args.plot_reconstructions
        and not data_args.synthetic_data
        and config.patch_embedding == "conv"
    ):
        # Collective too: the trained (sharded) model itself, not a reloaded copy.
        recon = plot_export_reconstructions(run, model, config, data, tmp)
    # Collective: each rank met its own bad shards; the record counts them all.
    skipped = _skipped_counts(loader, outcome, accelerator)
    if not accelerator.is_main_process:
        accelerator.wait_for_everyone()
        return
    if processor is not None:
        processor.save_pretrained(tmp)
    records = run.metrics.read() if run.metrics is not None else []
    plot_loss_curve(records, tmp / "loss_curve.png")
    with torch.device("meta"):
        described = GeoViTMAEForPreTraining(config)  # parameter counts for the record, no memory
    ips = outcome.images / wall if wall > 0 else None
    info = data.info
    record = RunRecord.from_model(
        described,
        processor,
        sensor=getattr(info, "sensor", None),
        datasets=[
            {
                "repo_id_or_path": name
                if not os.path.isdir(name)
                else os.path.basename(os.path.normpath(name)),
                "revision": data_args.dataset_revision,
            }
            for name, _ in data.datasets
        ]
        if info
        else [],
        base_model=model_args.model_name_or_path,
        base_model_revision=model_args.model_revision,
        run_config=as_flat_dict(model_args, data_args, args),
        accelerate_config={
            "distributed_type": accelerator.distributed_type.value,
            "mixed_precision": accelerator.mixed_precision,
            "num_processes": accelerator.num_processes,
        },
        hardware=_hardware(accelerator),
        world_size=accelerator.num_processes,
        global_batch=run.global_batch,
        peak_learning_rate=run.peak_lr,
        learning_rate_rule=run.lr_rule,
        steps=step,
        wall_time_s=round(wall, 1),
        images_per_s=round(ips, 2) if ips else None,
        mfu=round(ips * flops_img / (peak_flops * accelerator.num_processes), 4)
        if ips and peak_flops
        else None,
        final_loss=round(last_loss, 5),
        loss_curve_png="loss_curve.png",
        reconstruction_png=recon,
        license="apache-2.0",
        repo_id=args.hub_model_id,
        package_version=geofm_hf.__version__,
        skipped=skipped,
        argument_changes=run.argument_changes,
        limitations=_skipped_text(skipped) + _changes_text(run.argument_changes),
    )
    record.save(tmp / "run_record.json")
    write_model_card(tmp, record)
    if final.exists():
        # Never overwrite published weights: the earlier export is kept under its own name.
        previous = output_dir / f"final-before-step-{step:06d}-{int(time.time())}"
        os.replace(final, previous)
        accelerator.print(f"kept the previous export as {previous}")
    os.replace(tmp, final)
    summary = {"final_dir": str(final), "steps": step, "final_loss": last_loss, "images_per_s": ips}
    summary["skipped"] = skipped
    if hasattr(loader, "stats"):
        summary["data"] = loader.stats
    atomic_write_text(output_dir / "summary.json", json.dumps(summary, indent=2, default=str))
    accelerator.print(
        f"exported {final} (loss {last_loss:.4f}); images/s: {ips or 0:.2f}, MFU: {record.mfu}"
    )
    if run.pusher is not None:
        run.pusher.push_final(final, step=step)
        accelerator.print(f"hub: {run.pusher.close(timeout=args.hub_close_timeout_s)}")
    accelerator.wait_for_everyone()


def plot_export_reconstructions(run: Run, model, config, data: DataContract, folder: Path):
    """Collective (every rank runs the forward of a sharded model); the main process draws.
    Skipped from 2B parameters up, where the figure is not worth the forward."""
    if count_parameters(run.accelerator.unwrap_model(model)) >= 2e9:
        return None
    data_args = run.data_args
    sample = make_pretrain_dataloader(
        data.name_or_path,
        source=data.sources.get(data.name_or_path),
        split=data_args.train_split,
        batch_size=3,
        seed=run.args.seed + 1,
        # The training loader already checked every footer; with the check, each of 8,192 ranks
        # (all rank 0 of 1 here, for the same three chips) reopened every shard's footer.
        check_shards=False,
        crop_size=config.image_size,
        mean=config.image_mean,
        std=config.image_std,
        augment=False,
        revision=data_args.dataset_revision,
        on_error=data_args.on_error,
        max_error_fraction=data_args.max_error_fraction,
        num_frames=config.num_frames,
    )
    try:
        rgb = rgb_band_indices(config.band_names or [])
    except ValueError:
        rgb = None  # no red/green/blue bands: a grey composite of the first band
    path = folder / "reconstruction.png"
    plot_reconstructions(
        run.accelerator.unwrap_model(model),
        next(iter(sample)).to(run.accelerator.device),
        path,
        rgb,
        draw=run.accelerator.is_main_process,
    )
    return "reconstruction.png"


def _skipped_counts(loader, outcome: Outcome, accelerator) -> dict:
    """What the run did not train on, over all ranks (and their data workers), for
    summary.json, the run record and the card. Collective when several processes run."""
    stats = getattr(loader, "stats", {})
    mine = {
        "bad_shards": list(stats.get("bad_shards", [])),
        "rows_lost_to_bad_shards": int(stats.get("rows_lost_to_bad_shards", 0)),
        "batches_lost_to_bad_shards": int(stats.get("batches_lost_to_bad_shards", 0)),
    }
    ranks = gather_object([mine]) if accelerator.num_processes > 1 else [mine]
    bad = sorted({s for r in ranks for s in r["bad_shards"]})
    counts = getattr(getattr(loader, "stream", None), "counts", None)
    rows = (
        sum(counts[s] for s in bad)
        if counts is not None
        else max(r["rows_lost_to_bad_shards"] for r in ranks)
    )
    return {
        "bad_shards": bad,
        "rows_lost_to_bad_shards": int(rows),
        "batches_lost_to_bad_shards": sum(r["batches_lost_to_bad_shards"] for r in ranks),
        "steps_skipped_non_finite": outcome.skipped_steps,
    }


def _changes_text(argument_changes: list) -> list[str]:
    """One card line per resume that changed arguments: the figures hold from that step on."""
    return [
        f"Resumed at step {entry['step']} with changed arguments (in force from that step on): "
        + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in entry["changes"].items())
        + "."
        for entry in argument_changes
    ]


def _skipped_text(skipped: dict) -> list[str]:
    lines = []
    if skipped["bad_shards"]:
        lines.append(
            f"{len(skipped['bad_shards'])} unreadable shard(s) were skipped "
            f"({skipped['rows_lost_to_bad_shards']} chips not trained on)."
        )
    if skipped["steps_skipped_non_finite"]:
        lines.append(
            f"{skipped['steps_skipped_non_finite']} optimizer step(s) were skipped for a "
            "non-finite loss or gradient (--nan_policy skip)."
        )
    return lines


def _hardware(accelerator) -> str:
    device = accelerator.device
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads/process)"
    return f"{accelerator.num_processes}x {name} on {socket.gethostname() if accelerator.num_processes > 1 else 'one host'}"
