"""Pretraining machinery used by ``recipes/pretrain.py``: arguments, optimiser, schedule,
checkpoints, reporting, and the single CPU-FSDP workaround."""
