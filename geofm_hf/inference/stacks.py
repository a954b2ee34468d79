"""Scene stacks: the dated scenes of one place, read as one time series for a model whose
config takes ``num_frames`` T > 1, and the dates and place each window gives the model.

Scenes are grouped into series exactly as ``geofm-make-shards --num-frames`` groups them
(:func:`geofm_hf.data.time_series.footprint_series`: scenes on one grid, dates from their names,
in date order); every date is brought onto the first date's grid and read in lockstep, so a
window is ``(T, C, S, S)``. Dates and places are encoded as the shard dataset records them
(:func:`geofm_hf.data.format.chip_metadata`: year and day of year of each frame, latitude and
longitude of the window centre), so a model sees the same numbers from a stack of rasters as
from the shards written from it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from affine import Affine

from ..data.format import BadInputError
from .scenes import SceneGrid, SceneReading, open_grid

__all__ = ["ModelNeeds", "SceneStack", "group_inputs", "open_unit", "window_coords"]

logger = logging.getLogger(__name__)
_WHAT = {"temporal_coords": "dates", "location_coords": "places"}


@dataclass(frozen=True)
class ModelNeeds:
    """What a model takes beside pixels: ``frames`` per sample (config ``num_frames``) and the
    metadata it encodes, ``wanted`` (``temporal_coords`` / ``location_coords``)."""

    frames: int
    wanted: tuple[str, ...]

    @classmethod
    def of(cls, config) -> ModelNeeds:
        frames = int(getattr(config, "num_frames", 1) or 1)
        wanted = tuple(name for option, name in (("temporal_encoding", "temporal_coords"),
                                                 ("location_encoding", "location_coords"))
                       if getattr(config, option, False))  # fmt: skip
        return cls(frames, wanted)

    def describe(self) -> str:
        """``series of 4 frames``, ``single images``."""
        return f"series of {self.frames} frames" if self.frames > 1 else "single images"


def group_inputs(scenes, needs: ModelNeeds, policy) -> list[list]:
    """The model's inputs from ``scenes``: each scene alone for a single-frame model; for a
    series model each footprint's dates, cut into consecutive series of ``needs.frames`` (the
    dates left over are recorded in ``policy`` and named in a warning). A scene (or footprint)
    that cannot be one is recorded in ``policy`` (raised under ``on_error=raise``): an undated
    scene for a model that encodes dates, a footprint of fewer dates than a series takes."""
    from ..data.time_series import footprint_series

    if needs.frames == 1:
        units = []
        for scene in scenes:
            if "temporal_coords" in needs.wanted and scene.datetime is None:
                policy.record(BadInputError(
                    "needs_metadata",
                    f"the model encodes dates (temporal_encoding=True) but scene {scene.source} "
                    "has none: expected a date in its file name (YYYYMMDD, YYYY-MM-DD or a "
                    "Landsat scene id)"), scene.source)  # fmt: skip
                continue
            units.append([scene])
        return units
    units = []
    for members in footprint_series(scenes, policy):
        if len(members) < needs.frames:
            dates = [m.datetime[:10] for m in members]
            policy.record(BadInputError(
                "frames_mismatch",
                f"the model takes {needs.describe()} (config num_frames={needs.frames}) but "
                f"the footprint of {members[0].source} holds {len(members)} dated scene"
                f"{'s' if len(members) != 1 else ''} {dates}: give {needs.frames} scenes of one "
                "place, each dated in its file name, or a model of "
                f"num_frames={len(members)}"), members[0].source)  # fmt: skip
            continue
        # More dates than T: consecutive series of T in date order, as geofm-make-shards
        # --num-frames cuts them; the dates left over are named and counted, not dropped quietly.
        whole = len(members) // needs.frames * needs.frames
        units += [members[i : i + needs.frames] for i in range(0, whole, needs.frames)]
        left = members[whole:]
        for scene in left:
            policy.record(BadInputError(
                "frames_left_over",
                f"the footprint of {members[0].source} holds {len(members)} dated scenes and "
                f"the model takes series of {needs.frames}: {scene.source} "
                f"({scene.datetime[:10]}) is in none"), scene.source, is_error=False)  # fmt: skip
        if left:
            logger.warning(
                "%d of %d dated scenes of the footprint of %s are in no series of %d (the last "
                "dates: %s); give a multiple of %d dates to use them all",
                len(left), len(members), members[0].source, needs.frames,
                ", ".join(s.source for s in left), needs.frames,
            )  # fmt: skip
    return units


class SceneStack:
    """``T`` dated scenes of one place on the first date's grid, read in lockstep: duck-types a
    :class:`~geofm_hf.inference.scenes.SceneGrid` whose blocks are ``(T, C, rows, cols)``."""

    def __init__(self, frames: list[SceneGrid]) -> None:
        first = frames[0]
        self.frames = frames
        self.source, self.datetime = first.source, first.datetime  # as a series' shard row
        self.scene_id = f"{first.scene_id}_T{len(frames)}"  # as a series' chip id
        self.crs, self.transform = first.crs, first.transform
        self.width, self.height = first.width, first.height
        self.band_names, self.input_bands = first.band_names, first.input_bands
        self.wavelengths_um = first.wavelengths_um
        sensors = sorted({str(f.sensor) for f in frames})
        self.sensor = first.sensor if len(sensors) == 1 else "+".join(sensors)

    @property
    def datetimes(self) -> list[str | None]:
        return [f.datetime for f in self.frames]

    @property
    def sources(self) -> list[str]:
        return [f.source for f in self.frames]

    def read_block(self, row0: int, rows: int, col0: int = 0, cols: int | None = None):
        """:meth:`SceneGrid.read_block` of every date: ``(T, C, rows, cols)``."""
        return np.stack([f.read_block(row0, rows, col0, cols) for f in self.frames])

    def close(self) -> None:
        for frame in self.frames:
            frame.close()


def open_unit(members, model, sensors: dict[str, str | None],
              reading: SceneReading | None = None) -> SceneGrid | SceneStack:  # fmt: skip
    """One input of the model: a scene's :class:`SceneGrid`, or (several ``members``, dates of
    one footprint in date order) their :class:`SceneStack` on the first date's grid."""
    first = open_grid(members[0], model, sensors.get(members[0].source), reading)
    if len(members) == 1:
        return first
    frames = [first]
    try:
        target = (first.crs, first.transform, first.width, first.height)
        for scene in members[1:]:
            frames.append(open_grid(scene, model, sensors.get(scene.source), reading,
                                    target=target))  # fmt: skip
    except BaseException:
        for frame in frames:
            frame.close()
        raise
    return SceneStack(frames)


def window_coords(grid, windows: list[tuple[int, int]], window: int,
                  wanted) -> list[dict[str, np.ndarray]]:  # fmt: skip
    """The ``wanted`` metadata of each window ``(row, col)`` of ``grid`` (a scene or a stack):
    ``temporal_coords`` ``(T, 2)`` and / or ``location_coords`` ``(2,)`` of its centre. One call
    a batch: the places are projected together."""
    import pyarrow as pa

    from ..data.format import chip_metadata

    if not wanted:
        return [{} for _ in windows]
    dates = grid.datetimes
    crs = grid.crs.to_string() if grid.crs else None
    table = pa.table({
        "frame_datetimes": pa.array([dates] * len(windows), pa.list_(pa.string())),
        "crs": [crs] * len(windows),
        "transform": [list(grid.transform @ Affine.translation(c, r))[:6] for r, c in windows],
        "shape": [[len(dates), window, window]] * len(windows),
    })  # fmt: skip
    times, places = chip_metadata(table, np.arange(len(windows)), len(dates))
    found = {"temporal_coords": times, "location_coords": places}
    for name in wanted:
        if windows and not np.isfinite(found[name][0]).all():
            raise BadInputError(
                "needs_metadata",
                f"the model encodes {_WHAT[name]} but {grid.source} gives none "
                f"({'dates ' + str(dates) if name == 'temporal_coords' else 'no CRS'})",
            )
    return [{name: found[name][k] for name in wanted} for k in range(len(windows))]
