"""MAE pretraining of a geospatial ViT from Python, as ``recipes/pretrain.py`` runs it.

:func:`pretrain` is the table of contents: arguments -> model config (the same path for
``--dry_run``) -> Accelerator and run folder -> model -> data -> optimiser -> resume -> train ->
export. Each step is a component of :mod:`geofm_hf.training`, in a file named for it. Exactly
resumable (``--resume_from_checkpoint auto``): model, optimiser, data position and the masking
noise are all functions of saved state or of (seed, step, rank).
"""

from __future__ import annotations

from geofm_hf.training.arguments import check_output_dir_writable, end_training, parse_arguments
from geofm_hf.training.data_contract import build_model_config, build_processor, read_data_contract
from geofm_hf.training.dry_run import dry_run
from geofm_hf.training.export import export
from geofm_hf.training.inputs import build_dataloader
from geofm_hf.training.loop import train
from geofm_hf.training.model_setup import build_model, build_optimizer
from geofm_hf.training.resume import check_resume_compatibility, resume, run_already_finished
from geofm_hf.training.run import check_activation_checkpointing, describe_run, start_run
from geofm_hf.training.run_status import write_run_status


def pretrain(argv: list[str] | None = None) -> int:
    """Run a pretraining from recipe arguments (``["--config", "demo.yaml", ...]``, or
    ``sys.argv`` when None); returns the process exit code. Collective: every rank calls it.

    Bad arguments raise :class:`~geofm_hf.training.arguments.ArgumentError`;
    :func:`~geofm_hf.training.arguments.run_recipe` turns them into one line and exit 2.
    """
    model_args, data_args, args = parse_arguments(argv)
    if args.dry_run:
        data = read_data_contract(data_args)
        config = build_model_config(model_args, data_args, data.info, data.datasets)
        return dry_run(config, args)

    check_output_dir_writable(args.output_dir)
    run = start_run(model_args, data_args, args)
    # After the process group exists: the main process resolves the datasets for every rank.
    data = read_data_contract(data_args, run.accelerator)
    config = build_model_config(model_args, data_args, data.info, data.datasets)
    check_activation_checkpointing(run, model_args)
    if run_already_finished(run):
        return 0
    check_resume_compatibility(run, config, data)
    model, weights = build_model(run, config)
    processor = build_processor(config, data)
    loader = build_dataloader(run, data, data_args, config)
    model, optimizer = build_optimizer(run, model, weights)
    start_step = resume(run, loader)
    describe_run(run, model, config, start_step)

    try:
        outcome = train(run, model, optimizer, loader, config, processor, start_step)
        if not outcome.stopped_by_signal:
            export(run, model, config, processor, data, outcome, loader)
            if run.accelerator.is_main_process:
                write_run_status(run.output_dir, "finished", step=outcome.step, signal=None)
    finally:
        run.checkpoints.close()  # rotated-out checkpoints finish deleting
        if run.pusher is not None and not run.pusher.closed:
            # Stopped by a signal or an error: the job's end must not wait for the Hub (queued
            # pushes would otherwise run before the interpreter exits). What is not pushed stays
            # staged, logged with the geofm-push command that uploads it.
            run.accelerator.print(f"hub: {run.pusher.close(timeout=0)}")
    end_training(run.accelerator)
    return outcome.exit_code
