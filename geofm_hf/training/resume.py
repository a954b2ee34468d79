"""Resuming: whether a run already finished, whether a checkpoint came from a run this one can
continue exactly, and restoring model, optimiser and data position from it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from geofm_hf.training.arguments import (
    ArgumentError,
    as_flat_dict,
    end_training,
)
from geofm_hf.training.checkpointing import TRAINER_STATE

if TYPE_CHECKING:
    from geofm_hf.training.data_contract import DataContract
    from geofm_hf.training.run import Run


def run_already_finished(run: Run) -> bool:
    """Rerunning a finished run's command (``resume_from_checkpoint: auto``) does nothing, says
    so, and leaves its export and card as they are."""
    if run.resume_path is None:
        return False
    step = json.loads((run.resume_path / TRAINER_STATE).read_text())["step"]
    if step > run.args.max_steps:
        raise ArgumentError(
            f"--max_steps {run.args.max_steps} is below the step of the checkpoint resumed from "
            f"({run.resume_path}, step {step}): raise --max_steps to continue training."
        )
    if step == run.args.max_steps and _exported_at(run.output_dir, step):
        run.log(
            f"{run.output_dir} already finished: {run.output_dir / 'final'} holds step {step} "
            f"of --max_steps {run.args.max_steps}; nothing to do (raise --max_steps to train on)."
        )
        end_training(run.accelerator)
        return True
    return False


def _exported_at(output_dir: Path, step: int) -> bool:
    record = output_dir / "final" / "run_record.json"
    try:
        return json.loads(record.read_text()).get("steps") == step
    except (OSError, ValueError):
        return False


# What must match to resume exactly: the model's shape and bands, and what places each rank in
# the data stream. Anything else (schedule, logging, checkpoint cadence...) may change, and is
# recorded.
_MODEL_KEYS = (
    "preset", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "decoder_hidden_size", "decoder_num_hidden_layers", "patch_size", "image_size",
    "num_channels", "band_names", "mask_ratio", "norm_pix_loss",
)  # fmt: skip


_DATA_KEYS = (
    "dataset_name_or_path", "dataset_revision", "train_split", "synthetic_data", "seed",
    "model_name_or_path",
)  # fmt: skip


_NOT_RECORDED = ("output_dir", "resume_from_checkpoint", "dry_run", "accelerate_config")


def model_fingerprint(config) -> dict:
    return {key: getattr(config, key, None) for key in _MODEL_KEYS}


def check_resume_compatibility(run: Run, config, data: DataContract) -> None:
    """Before anything is loaded: the checkpoint must come from a run this one can continue
    exactly. Names every difference; records the allowed changes of arguments."""
    if run.resume_path is None:
        return
    state = json.loads((run.resume_path / TRAINER_STATE).read_text())
    before = state.get("arguments")
    if before is None:
        run.log(f"{run.resume_path} records no arguments (older version): not compared")
        return
    now = as_flat_dict(run.model_args, run.data_args, run.args)
    now["dataset_name_or_path"] = data.name_or_path
    problems = []
    for key, (was, found) in _differences(state.get("model", {}), model_fingerprint(config)):
        problems.append(f"model {key}: {was!r} in the checkpoint, {found!r} now")
    for key in _DATA_KEYS:
        if key in before and before[key] != now.get(key):
            problems.append(f"{key}: {before[key]!r} in the checkpoint, {now.get(key)!r} now")
    problems += _global_batch_problems(run, before, now, state.get("world_size") or run.world)
    if problems:
        raise ArgumentError(
            f"Cannot resume {run.resume_path}: it was written by another run.\n  "
            + "\n  ".join(problems)
            + "\nUse another --output_dir for this run, or pass the checkpoint's values."
        )
    changes = {
        key: [before[key], now.get(key)]
        for key in sorted(set(before) | set(now))
        if key not in _NOT_RECORDED and key not in _DATA_KEYS and before.get(key) != now.get(key)
    }
    if state.get("world_size") not in (None, run.world):
        # The data loader re-splits the rest of the epoch; weights reshard on load.
        changes["world_size"] = [state["world_size"], run.world]
    run.argument_changes = list(state.get("argument_changes", []))
    if changes:
        run.argument_changes.append({"step": state["step"], "changes": changes})
        listed = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changes.items())
        run.log(f"resuming at step {state['step']} with changed arguments: {listed}")


def _global_batch_problems(run: Run, before: dict, now: dict, world: int) -> list[str]:
    """The global batch (per-device batch x world size x accumulation) must stay as saved, so
    the LR schedule's steps and the data cursor keep their meaning, unless the user allows it."""
    keys = ("per_device_train_batch_size", "gradient_accumulation_steps")
    if any(k not in before for k in keys):
        return []
    was = before[keys[0]] * world * before[keys[1]]
    found = now[keys[0]] * run.world * now[keys[1]]
    if was == found or now.get("allow_global_batch_change"):
        return []
    fits = was / (run.world * now[keys[1]])
    hint = (
        f" (--per_device_train_batch_size {int(fits)} at {run.world} processes)"
        if fits.is_integer()
        else ""
    )
    return [
        f"global batch (per-device batch x world size x accumulation): {before[keys[0]]} x "
        f"{world} x {before[keys[1]]} = {was} in the checkpoint, {now[keys[0]]} x {run.world} x "
        f"{now[keys[1]]} = {found} now; keep it at {was}{hint} so the LR schedule and the data "
        "cursor keep their meaning, or pass --allow_global_batch_change"
    ]


def _differences(before: dict, now: dict):
    for key in sorted(set(before) | set(now)):
        if before.get(key) != now.get(key):
            yield key, (before.get(key), now.get(key))


def resume(run: Run, loader) -> int:
    """Restore model, optimiser and data position from the resume checkpoint; the start step."""
    if run.resume_path is None:
        return 0
    trainer_state, data_state = run.checkpoints.load(run.resume_path)
    loader.load_state_dict(data_state)
    run.log(f"resumed from {run.resume_path} at step {trainer_state['step']}")
    if trainer_state["world_size"] != run.world and "cursor" in data_state:
        cursor = data_state["cursor"]
        run.log(
            f"world size {trainer_state['world_size']} -> {run.world}: the rest of data epoch "
            f"{cursor['epoch']} ({cursor['samples_consumed']} samples consumed by all ranks) is "
            f"re-split over {run.world} ranks; weights and optimiser state resharded on load"
        )
    return trainer_state["step"]
