"""``geofm-export CHECKPOINT -o FOLDER``: a training checkpoint, sharded or not, as a loadable
export (safetensors weights, config, remote code, image processor, run record, model card).

At thousands of ranks a gathered export inside the job costs every rank a wait while the full
model streams through one process, and a Hub push from a compute node may not be possible at
all. This command runs on one process anywhere that sees the checkpoint (a login or data-transfer
node on Frontier), reads the FSDP2 shards (``torch.distributed.checkpoint``, no process group)
or the replicated weights, and writes what the recipe's ``final/`` holds; ``geofm-push`` then
uploads it. Only checkpoints written by this package's recipe are read (their shard index is
torch's own format).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from geofm_hf._atomic import disk_full_as, fsync_path
from geofm_hf._errors import UserInputError
from geofm_hf.data.format import BadInputError
from geofm_hf.training.checkpointing import COMPLETE, TRAINER_STATE, verify_checkpoint

_SHARDED = "pytorch_model_fsdp_0"  # accelerate's folder for the model's distributed checkpoint
_WHOLE = "model.safetensors"  # accelerate's file for a replicated (DDP) model


def export_checkpoint(checkpoint: str | Path, output_dir: str | Path, verify: bool = True) -> Path:
    """Write the export of ``checkpoint`` to ``output_dir`` (atomically: a temporary folder
    beside it is renamed in at the end); returns ``output_dir``."""
    import torch

    from geofm_hf import GeoViTMAEConfig, GeoViTMAEForPreTraining

    checkpoint, output_dir = Path(checkpoint), Path(output_dir)
    _check_checkpoint(checkpoint, verify)
    config = GeoViTMAEConfig.from_pretrained(checkpoint)
    with torch.device("meta"):
        model = GeoViTMAEForPreTraining(config)
    model.to_empty(device="cpu")
    state = model.state_dict()
    if (checkpoint / _WHOLE).is_file():
        from safetensors.torch import load_file

        loaded = load_file(checkpoint / _WHOLE)
    else:
        import torch.distributed.checkpoint as dcp

        loaded = {f"model.{k}": v for k, v in state.items()}
        dcp.load(loaded, checkpoint_id=str(checkpoint / _SHARDED), no_dist=True)
        loaded = {k.removeprefix("model."): v for k, v in loaded.items()}
    missing = sorted(set(state) - set(loaded))
    if missing:
        raise BadInputError(
            "checkpoint_weights",
            f"{checkpoint} lacks {len(missing)} of the model's tensors (first: {missing[0]}): "
            "it was not written for this config. Export a checkpoint of the same run.",
        )
    model.load_state_dict({k: loaded[k] for k in state}, strict=True)
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise BadInputError(
            "checkpoint_weights",
            f"{checkpoint} holds NaN/inf in {len(bad)} tensors (first: {bad[0]}): not exported. "
            "Export an earlier checkpoint.",
        )
    tmp = output_dir.with_name(f".tmp-{output_dir.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with disk_full_as(output_dir):
            _write_export(model, checkpoint, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if output_dir.exists():
        shutil.rmtree(output_dir)
    tmp.rename(output_dir)
    fsync_path(output_dir.parent)
    return output_dir


def _write_export(model, checkpoint: Path, tmp: Path) -> None:
    """Weights, processor, run record and card of ``model`` into ``tmp``."""
    from geofm_hf import GeoViTMAEImageProcessor
    from geofm_hf.model_card import RunRecord, write_model_card
    from geofm_hf.training.distributed import save_pretrained_streaming

    save_pretrained_streaming(model, tmp, write=True)
    processor = None
    if (checkpoint / "preprocessor_config.json").is_file():
        processor = GeoViTMAEImageProcessor.from_pretrained(checkpoint)
        processor.save_pretrained(tmp)
    trainer_state = json.loads((checkpoint / TRAINER_STATE).read_text())
    record = RunRecord.from_model(
        model,
        processor,
        run_config=trainer_state.get("arguments", {}),
        world_size=trainer_state.get("world_size"),
        global_batch=trainer_state.get("global_batch"),
        steps=trainer_state.get("step"),
        package_version=trainer_state.get("geofm_hf_version"),
        license="apache-2.0",
        limitations=[
            f"Exported from the training checkpoint {checkpoint.name} by geofm-export, away from "
            "the training job: throughput and loss figures are not recorded here."
        ],
    )
    record.save(tmp / "run_record.json")
    write_model_card(tmp, record)


def _check_checkpoint(checkpoint: Path, verify: bool) -> None:
    if not (checkpoint / COMPLETE).is_file():
        raise BadInputError(
            "checkpoint",
            f"{checkpoint} is not a complete training checkpoint (expected a checkpoint-NNNNNN "
            f"folder holding {COMPLETE}); pass one of the run's checkpoint folders.",
        )
    if not (checkpoint / "config.json").is_file():
        raise BadInputError(
            "checkpoint",
            f"{checkpoint} holds no config.json (written by checkpoints of geofm_hf newer than "
            "this command's first release); resume the run for one more save, or export its "
            "final/ folder instead.",
        )
    if not ((checkpoint / _WHOLE).is_file() or (checkpoint / _SHARDED).is_dir()):
        raise BadInputError(
            "checkpoint",
            f"{checkpoint} holds neither {_WHOLE} nor {_SHARDED}/: not a checkpoint of the "
            "pretraining recipe.",
        )
    if verify:
        problem = verify_checkpoint(checkpoint)
        if problem is not None:
            raise BadInputError(
                "checkpoint", f"{checkpoint} is damaged: {problem}. Export another checkpoint."
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="geofm-export", description=__doc__.split("\n\n")[0].replace("``", "")
    )
    parser.add_argument("checkpoint", help="a checkpoint-NNNNNN folder of a pretraining run")
    parser.add_argument("-o", "--output-dir", required=True, help="the export folder to write")
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="skip re-hashing every file against the checkpoint's COMPLETE manifest",
    )
    args = parser.parse_args(argv)
    try:
        out = export_checkpoint(args.checkpoint, args.output_dir, verify=not args.no_verify)
    except UserInputError as err:  # a bad checkpoint, a full disk
        print(f"geofm-export: error: {err}", file=sys.stderr)
        return 2
    print(f"exported {args.checkpoint} -> {out} (push it with: geofm-push {out} ORG/NAME)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
