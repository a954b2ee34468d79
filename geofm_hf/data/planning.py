"""The shard writer's plan: how many chips, shards and bytes the scenes hold, from headers only.

Each scene's grid is the one :mod:`~geofm_hf.data.chips` will cut (the selected bands'
:func:`~geofm_hf.data.grid.target_grid`), so the chip count is exactly the windows the run will
read; chips dropped for nodata make the written count smaller, never larger. A scene whose
headers the run would refuse is left out here: the run reports it, under ``--on-error``.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np

from .band_resolution import resolve_band_names
from .format import BadInputError
from .grid import target_grid
from .progress import Plan, SceneSize
from .scenes import Scene, open_raster

__all__ = ["plan_chips"]


def plan_chips(scenes: list[Scene], scene_sensors: dict[str, str | None], *, chip_size: int,
               stride: int, bands=None, band_names=None, resolution: float | None = None,
               num_frames: int | None = None, target_bytes: int, rows_per_shard: int | None,
               num_splits: int = 1) -> Plan:  # fmt: skip
    """The :class:`~geofm_hf.data.progress.Plan` of a :func:`~geofm_hf.data.write_shards` run.

    Time series count every date's chips (each is read); the note says how many series of
    ``num_frames`` they make at most.
    """
    plan = Plan("chips", chip_size, stride, bytes_label="uncompressed")
    for scene in scenes:
        if num_frames is not None and scene.datetime is None:
            continue  # refused by the run (no date)
        with contextlib.ExitStack() as stack:
            try:
                srcs = [stack.enter_context(open_raster(p)) for p in scene.paths]
                selected = resolve_band_names(scene, srcs, bands, scene_sensors.get(scene.source),
                                              band_names)  # fmt: skip
                _, _, width, height, _ = target_grid([s for _, s, _ in selected], resolution)
            except (BadInputError, ValueError):
                continue
            itemsize = np.result_type(*[np.dtype(s.dtypes[i - 1]) for _, s, i in selected]).itemsize
            chips = _windows(width, chip_size, stride) * _windows(height, chip_size, stride)
            plan.scenes.append(SceneSize(scene.source, width, height, chips))
            plan.bytes += chips * len(selected) * chip_size * chip_size * itemsize
    rows = plan.chips
    if num_frames is not None:
        rows = plan.chips // num_frames
        plan.note = f"up to {rows:,} series of {num_frames} frames"
    shards = math.ceil(rows / rows_per_shard) if rows_per_shard else math.ceil(
        plan.bytes / max(target_bytes, 1))  # fmt: skip
    plan.shards = max(shards, num_splits) if rows else 0
    return plan


def _windows(size: int, chip_size: int, stride: int) -> int:
    """Chips of ``chip_size`` every ``stride`` px along ``size`` px (whole chips only)."""
    return (size - chip_size) // stride + 1 if size >= chip_size else 0
