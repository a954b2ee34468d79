"""Pretraining machinery, one component a file; ``recipes/pretrain.py`` is its command line.

- :func:`pretrain` (``pretrainer.py``): the run, step by step, callable from Python.
- ``arguments.py``: the recipe's arguments and their checks; ``run_recipe`` (exit 2 on bad input).
- ``data_contract.py``: datasets, bands and the model config they imply; ``dry_run.py``.
- ``run.py``: the Accelerator, run folder and banner; ``model_setup.py``: model and optimiser.
- ``inputs.py``: batches and masking noise; ``signals.py``: stop signals; ``health.py``: votes
  and NaN diagnosis; ``loop.py``: the loop and its ``train_step``.
- ``checkpointing.py``, ``saving.py``, ``resume.py``: checkpoints written, checked, resumed.
- ``export.py``: the final export and card; ``distributed.py``, ``cpu_fsdp.py``: sharding.
"""

from __future__ import annotations


def __getattr__(name: str):
    # Lazy: `geofm_hf.training.arguments` is imported by the classification recipes, which must
    # not pay for the whole pretraining stack (accelerate, datasets) at import.
    if name == "pretrain":
        from geofm_hf.training.pretrainer import pretrain

        return pretrain
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
