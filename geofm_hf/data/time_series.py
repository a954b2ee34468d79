"""Chip extraction, time series: the dates of one footprint cut in lockstep and stacked
``(T, C, H, W)``, frames in date order."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from collections import defaultdict
from collections.abc import Iterator

import numpy as np

from .chips import _Chip, _ChipSpec, _DatasetState, _scene_chips
from .error_policy import ErrorPolicy
from .format import BadInputError
from .scenes import Scene, open_raster


def _footprint(scene: Scene) -> tuple:
    """The grid of a scene's first raster: scenes sharing it are dates of one footprint."""
    with contextlib.closing(
        open_raster(scene.multiband or next(iter(scene.band_files.values())))
    ) as src:
        return (src.crs.to_string() if src.crs else None, tuple(src.transform)[:6],
                src.width, src.height)  # fmt: skip


def footprint_series(scenes: list[Scene], policy: ErrorPolicy) -> list[list[Scene]]:
    """The dates of each footprint: scenes on one grid, sorted by date, one scene per date.

    A scene without a date in its name (``no_date``) or whose footprint holds two scenes of one
    date (``duplicate_date``) is recorded in ``policy`` and left out; ``geofm-make-shards
    --num-frames`` and the inference tools group a scene stack alike through here.
    """
    footprints: dict[tuple, list[Scene]] = defaultdict(list)
    for scene in scenes:
        if scene.datetime is None:
            policy.record(
                BadInputError(
                    "no_date",
                    f"scene {scene.source}: no date in its name; a time series needs "
                    "each frame's date (YYYYMMDD, YYYY-MM-DD or a Landsat scene id)",
                ),
                scene.source,
            )
            continue
        try:
            footprints[_footprint(scene)].append(scene)
        except BadInputError as err:
            policy.record(err, scene.source)
    out = []
    for members in footprints.values():
        members.sort(key=lambda m: (m.datetime, m.source))
        dates = [m.datetime for m in members]
        if len(set(dates)) != len(dates):
            twice = sorted({d for d in dates if dates.count(d) > 1})
            policy.record(BadInputError(
                "duplicate_date",
                f"footprint of {members[0].source} has several scenes dated "
                f"{twice}; a time series takes one scene per date. Remove or mosaic them first",
            ), members[0].source)  # fmt: skip
            continue
        out.append(members)
    return out


def _time_series_chips(scenes: list[Scene], scene_sensors: dict[str, str | None],
                       spec: _ChipSpec, state: _DatasetState, policy: ErrorPolicy,
                       num_frames: int, sources: list[str]) -> Iterator[_Chip]:  # fmt: skip
    """Chips of ``num_frames`` dates of one window: ``(T, C, H, W)``, frames in date order.

    Scenes on one grid are the dates of one footprint; their chip generators run in lockstep
    (one strip of each date in memory, all of its files open at once). Per window, a frame
    over ``spec.max_nodata_fraction`` invalid is skipped (``frame_invalid``) and frames short
    of a whole series are left over (``frames_left_over``); both are counted, never silent.
    """
    every_chip = dataclasses.replace(spec, max_nodata_fraction=1.0)  # windows stay aligned
    for members in footprint_series(scenes, policy):
        try:
            yield from _footprint_series(members, scene_sensors, every_chip, spec, state, policy,
                                         num_frames)  # fmt: skip
        except BadInputError as err:  # this footprint only (raised again under on_error=raise)
            policy.record(err, members[0].source)
            continue
        sources.extend(m.source for m in members)


def _footprint_series(members: list[Scene], scene_sensors: dict[str, str | None],
                      every_chip: _ChipSpec, spec: _ChipSpec, state: _DatasetState,
                      policy: ErrorPolicy, num_frames: int) -> Iterator[_Chip]:  # fmt: skip
    """The series of one footprint's dates (``members``, sorted by date)."""
    gens = [_scene_chips(m, scene_sensors.get(m.source), every_chip, state, policy)
            for m in members]  # fmt: skip
    try:
        for frames in itertools.zip_longest(*gens):
            if any(f is None for f in frames):
                raise BadInputError(
                    "window_mismatch",
                    f"the dates of the footprint of "
                    f"{members[0].source} gave different numbers of chips",
                )
            if len({tuple(f.row["transform"]) for f in frames}) != 1:
                raise BadInputError(
                    "window_mismatch",
                    f"the dates of the footprint of {members[0].source} are not on one grid",
                )
            usable = []
            for f in frames:
                fraction = f.counts["invalid_pixels"] / f.counts["pixels"]
                if fraction > spec.max_nodata_fraction:
                    policy.record(BadInputError(
                        "frame_invalid", f"{fraction:.1%} of pixels invalid (max_nodata_"
                        f"fraction={spec.max_nodata_fraction})"), f.row["chip_id"],
                        is_error=False)  # fmt: skip
                else:
                    usable.append(f)
            whole = len(usable) // num_frames * num_frames
            for f in usable[whole:]:
                policy.record(BadInputError(
                    "frames_left_over", f"{len(usable)} usable frames of this window; "
                    f"series take {num_frames}"), f.row["chip_id"], is_error=False)  # fmt: skip
            for first in range(0, whole, num_frames):
                yield _stack_frames(usable[first : first + num_frames])
    finally:
        for gen in gens:
            gen.close()


def _stack_frames(group: list[_Chip]) -> _Chip:
    first = group[0]
    pixels = np.stack([f.pixels for f in group])  # (T, C, H, W)
    band_valid = np.stack([f.band_valid for f in group])
    return _Chip(
        split=first.split,
        row={
            **first.row,
            "image": pixels.tobytes(),
            "shape": list(pixels.shape),
            "chip_id": f"{first.row['chip_id']}_T{len(group)}",
            "frame_datetimes": [f.row["datetime"] for f in group],
            "valid_mask": np.packbits(band_valid.all(axis=1)).tobytes(),
        },
        # The statistics are per band over every frame: frames stacked along the rows.
        pixels=np.concatenate([f.pixels for f in group], axis=1),
        band_valid=np.concatenate([f.band_valid for f in group], axis=1),
        counts={k: sum(f.counts[k] for f in group) for k in first.counts},
    )
