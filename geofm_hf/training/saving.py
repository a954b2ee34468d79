"""A training checkpoint: the trainer state that resume compares, written collectively."""

from __future__ import annotations

from typing import TYPE_CHECKING

import geofm_hf
from geofm_hf.training.arguments import (
    as_flat_dict,
)
from geofm_hf.training.distributed import save_pretrained_streaming
from geofm_hf.training.health import parameters_finite
from geofm_hf.training.resume import model_fingerprint

if TYPE_CHECKING:
    from geofm_hf.training.run import Run


def save_checkpoint(run: Run, model, loader, step: int, config, processor=None) -> None:
    """Collective. Refuses to write weights holding NaN/inf."""
    args, accelerator = run.args, run.accelerator
    if not parameters_finite(accelerator, model):
        raise FloatingPointError(
            f"Parameters hold NaN/inf at step {step}: not writing a checkpoint. The previous "
            f"checkpoint in {args.output_dir} is intact."
        )
    trainer_state = {
        "step": step,
        "world_size": run.world,
        "seed": args.seed,
        "max_steps": args.max_steps,
        "global_batch": run.global_batch,
        "geofm_hf_version": geofm_hf.__version__,
        # What check_resume_compatibility compares before a resume loads anything.
        "arguments": {
            **as_flat_dict(run.model_args, run.data_args, args),
            "dataset_name_or_path": run.extra.get("dataset"),
        },
        "model": model_fingerprint(config),
        "argument_changes": run.argument_changes,
    }

    def describe(folder):
        # What geofm-export needs to turn the (sharded) weights into a loadable export on one
        # process, away from the job: the model's config and the image processor.
        config.save_pretrained(folder)
        if processor is not None:
            processor.save_pretrained(folder)

    path = run.checkpoints.save(step, trainer_state, loader.state_dict(), extra=describe)
    if args.push_to_hub:
        # Hub revisions hold loadable weights (safetensors + code), not optimiser shards.
        export_dir = path / "hub_export"
        save_pretrained_streaming(model, export_dir, write=run.pusher is not None)
        if run.pusher is not None:
            if processor is not None:
                # Without it AutoImageProcessor (and so the probe / fine-tune recipes) cannot
                # load a checkpoint revision.
                processor.save_pretrained(export_dir)
            run.pusher.push_checkpoint(export_dir, step)
        accelerator.wait_for_everyone()
