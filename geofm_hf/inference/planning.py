"""The plan of a whole-scene inference run (``geofm-embed``, ``geofm-segment``), from headers only.

Each scene's grid is the one :func:`~geofm_hf.inference.scenes.open_grid` will read (the bands
the model takes, on the finest one's grid) and its windows are those
:func:`~geofm_hf.inference.scenes.iter_windows` lays over it, so the count is what the run reads.
:func:`start_progress` checks the plan against ``--max-chips`` and returns the run's reporter.
"""

from __future__ import annotations

import contextlib

from ..data.band_resolution import resolve_model_bands
from ..data.format import BadInputError
from ..data.grid import target_grid
from ..data.progress import Plan, Progress, SceneSize, check_max_chips
from ..data.scenes import open_raster
from .geometry import window_origins
from .scenes import SceneReading

__all__ = ["plan_windows", "start_progress"]


def plan_windows(units, sensors: dict[str, str | None], model_bands, reading: SceneReading,
                 window: int, stride: int) -> Plan:  # fmt: skip
    """Windows of ``window`` px every ``stride`` px over every input of the model (``units``: a
    scene, or a stack of one place's dates on its first date's grid), and the float32 pixels
    they feed the model (every date of a stack)."""
    plan = Plan("windows", window, stride, bytes_label="of pixels to read")
    for unit in units:
        scene = unit[0]
        with contextlib.ExitStack() as stack:
            try:
                srcs = [stack.enter_context(open_raster(p)) for p in scene.paths]
                selected = resolve_model_bands(scene, srcs, model_bands,
                                               sensors.get(scene.source), reading.band_names)  # fmt: skip
                _, _, width, height, _ = target_grid([s for _, s, _ in selected], None)
            except BadInputError:
                continue  # the run records it, under --on-error
        n = len(window_origins(width, window, stride)) * len(window_origins(height, window, stride))
        plan.scenes.append(SceneSize(scene.source, width, height, n))
        plan.bytes += n * len(unit) * len(selected) * window * window * 4
    return plan


def start_progress(prog: str, kind: str, units, sensors, model_bands, reading: SceneReading,
                   window: int, stride: int, max_chips: int | None, enabled: bool,
                   dataset_revision: str | None = None) -> Progress:  # fmt: skip
    """Plan the run (``kind``: ``"rasters"``, whose ``units`` are the model's inputs, or
    ``"shards"``, ``units`` holding the one shard dataset, whose chips are the windows), refuse
    it over ``max_chips``, and return its started reporter."""
    if kind == "rasters":
        plan = plan_windows(units, sensors, model_bands, reading, window, stride)
        knobs = "a larger --stride"
    else:
        from ..data import read_dataset_info

        info = read_dataset_info(units[0], revision=dataset_revision)
        plan = Plan("windows", window, window, bytes_label="of pixels to read")
        chips = sum(info.num_samples.values())
        plan.scenes.append(SceneSize(f"shard dataset {units[0]}", None, None, chips))
        plan.bytes = chips * len(model_bands.names) * window * window * 4 * (info.num_frames or 1)
        knobs = "a smaller dataset"
    check_max_chips(plan, max_chips, knobs)
    progress = Progress(prog, enabled=enabled)
    progress.plan(plan)
    return progress
