"""Work one process does for all: the answer, or the error, reaches every rank alike."""

from __future__ import annotations


def on_main_process(accelerator, compute):
    """``compute()`` on the main process only; every process returns its value, or raises its
    error (a rank that raised alone would leave the others waiting in the next collective)."""
    if accelerator is None or accelerator.num_processes == 1:
        return compute()
    from accelerate.utils import broadcast_object_list

    box: list = [None]
    if accelerator.is_main_process:
        try:
            box = [("ok", compute())]
        except Exception as err:  # re-raised below, on every rank alike
            box = [("error", err)]
    broadcast_object_list(box)
    status, value = box[0]
    if status == "error":
        raise value
    return value
