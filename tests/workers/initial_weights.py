"""Writes the recipe's initial full weights (before any step) to OUT/model.safetensors.

Launched by tests/test_pretrain_memory.py once as a lone process and once under 2-process FSDP2:
the recipe's own config, model and sharding functions, then its streaming export.
"""

import sys
from pathlib import Path

# Also run through runpy by the CPU FSDP launcher, where this folder is not on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from record import emit

from geofm_hf.training.arguments import parse_arguments
from geofm_hf.training.data_contract import build_model_config, read_data_contract
from geofm_hf.training.distributed import prepare_model, save_pretrained_streaming
from geofm_hf.training.model_setup import build_model
from geofm_hf.training.run import start_run


def main(out: str, *extra: str) -> None:
    argv = ["--preset", "tiny", "--output_dir", out, "--report_to", "none", "--bf16", "false"]
    model_args, data_args, args = parse_arguments([*argv, *extra])
    data = read_data_contract(data_args)
    config = build_model_config(model_args, data_args, data.info)
    run = start_run(model_args, data_args, args)
    model, _ = build_model(run, config)
    on_meta = all(p.is_meta for p in model.parameters())
    model = prepare_model(run.accelerator, model, args.seed, args.gradient_reduce_dtype)
    local = sum(
        p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in model.parameters()
    )
    full = sum(p.numel() for p in model.parameters())
    save_pretrained_streaming(model, Path(out) / "initial", run.accelerator.is_main_process)
    run.accelerator.wait_for_everyone()
    policy = model._get_fsdp_state()._mp_policy if hasattr(model, "_get_fsdp_state") else None
    emit(
        f"INITIAL_WEIGHTS param_dtype={getattr(policy, 'param_dtype', None)} "
        f"reduce_dtype={getattr(policy, 'reduce_dtype', None)} rank={run.rank} world={run.world} built_on_meta={on_meta} "
        f"local={local} full={full} type={run.accelerator.distributed_type.value}"
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
