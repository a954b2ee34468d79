"""Shard writer: rasters (files, folders, globs; one file per band or multi-band) -> Parquet.

:func:`write_shards` runs the steps of a write, each in the module named for it: scene discovery
(:mod:`~geofm_hf.data.scenes`) and band/sensor resolution (:mod:`~geofm_hf.data.band_resolution`),
chip extraction on each scene's target grid (:mod:`~geofm_hf.data.chips`,
:mod:`~geofm_hf.data.time_series`, :mod:`~geofm_hf.data.grid`), and publishing
(:mod:`~geofm_hf.data.publish`): shards are staged, and the finished dataset replaces the previous
one only when the whole run succeeded; ``geofm_dataset.json`` is written last, so its presence
marks a complete dataset.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import disk_full_as, free_bytes
from .._errors import _size
from ..bands import (
    band_bandwidths,
    band_gsd,
    band_wavelengths,
    get_sensor_bands,
    resolve_sensor,
    sensor_fill_values,
)
from .band_resolution import discover_scenes
from .chips import ChipMeta, _Chip, _ChipSpec, _DatasetState, _scene_chips
from .error_policy import ErrorPolicy
from .format import STAGING_DIR, BadInputError, GeoDatasetInfo, TooManyErrorsError
from .planning import plan_chips
from .progress import Progress, check_max_chips
from .publish import _clean_up_on_failure, _prepare_output, _publish, _ShardSink
from .scenes import Scene
from .time_series import _time_series_chips

__all__ = ["ChipMeta", "WriteSummary", "write_shards"]

logger = logging.getLogger(__name__)


@dataclass
class WriteSummary:
    """What a :func:`write_shards` run produced."""

    output_dir: str
    num_samples: dict[str, int]
    num_shards: dict[str, int]
    skipped: dict[str, Any]
    band_names: list[str]
    mean: list[float]
    std: list[float]
    bytes_read: int
    seconds: float
    skipped_items: list[dict[str, str]] = field(default_factory=list)

    @property
    def read_mb_per_s(self) -> float:
        """Raster bytes decoded (at the target grid) per second of wall time."""
        return self.bytes_read / 1e6 / max(self.seconds, 1e-9)


@_clean_up_on_failure
def write_shards(
    inputs: str | os.PathLike | Iterable[str | os.PathLike],
    output_dir: str | os.PathLike,
    *,
    chip_size: int = 64,
    stride: int | None = None,
    bands: Sequence[str] | None = None,
    band_names: Sequence[str] | None = None,
    band_files: Mapping[str, str] | Sequence[Mapping[str, str]] | None = None,
    filename_pattern: str | re.Pattern | None = None,
    resolution: float | None = None,
    resampling: str = "nearest",
    nodata: float | None = None,
    max_nodata_fraction: float = 0.0,
    target_shard_mb: float = 128.0,
    rows_per_shard: int | None = None,
    compression_level: int = 3,
    split: str | Mapping[str, float] = "train",
    on_error: str = "raise",
    max_error_fraction: float = 0.05,
    labels: Callable[[ChipMeta], int | None] | None = None,
    label_names: Sequence[str] | None = None,
    sensor: str | None = None,
    qa_masks: bool = True,
    overwrite: bool = False,
    dataset_name: str | None = None,
    license: str = "other",
    card_notes: str | None = None,
    label_raster: str | os.PathLike | None = None,
    label_vector: str | os.PathLike | None = None,
    label_field: str | None = None,
    mask_label_names: Sequence[str] | None = None,
    num_frames: int | None = None,
    target_raster: str | os.PathLike | None = None,
    max_chips: int | None = None,
    progress: Progress | None = None,
) -> WriteSummary:
    r"""Cut rasters into chips and write a Hub-ready Parquet dataset to ``output_dir``.

    Args:
        inputs: files, folders (searched recursively for raster extensions) or globs. Files
            named ``<scene>_B02.jp2`` etc. are grouped into one scene per prefix and stacked;
            ``<scene>_fmask`` / ``_SCL`` / ``_QA_PIXEL`` files are that scene's cloud/QA mask.
            A one-band file whose band has no name is an error (group it, or name it).
        chip_size, stride: chip edge and step in target-grid pixels (stride defaults to
            chip_size).
        bands: names (or aliases) to select and reorder; default all bands in the sensor's
            canonical order. The pixels always follow the names.
        band_names: names for the bands of multi-band files that carry no band descriptions
            (``--band-names``); one per band, in file order.
        band_files: explicit ``{band: path}`` mapping(s), one per scene.
        filename_pattern: regex with a named ``band`` group (and optionally ``scene``) that
            groups one-file-per-band inputs, e.g. ``r"(?P<scene>.+)_(?P<band>\d+)\.tif$"``;
            every file must match.
        resolution: target GSD in CRS units (default: the finest band of the scene).
        resampling: rasterio resampling name used to bring coarser/finer bands onto the grid.
        nodata: value treated as nodata in every band, besides each file's declared nodata and
            the sensor's known fill value (e.g. 0 for Sentinel-2 and Landsat Collection 2).
            NaN and +-inf are always invalid.
        max_nodata_fraction: chips with a larger fraction of invalid pixels (nodata, fill,
            NaN/inf, cloud/QA-flagged) are dropped (counted in the summary and card). Kept
            chips store their validity mask (``valid_mask``, 1 = valid) for the loss.
        target_shard_mb: uncompressed image bytes per shard (MB = 1e6 bytes).
        rows_per_shard: chips per shard instead (overrides ``target_shard_mb``).
        compression_level: zstd level of the Parquet files (3 is fast; 19 is ~35% smaller).
        split: one split name, or ``{"train": 0.8, "validation": 0.2}`` to assign spatially
            disjoint column blocks of each scene (west to east) to splits.
        on_error: ``"raise"`` stops at the first bad input; ``"skip"`` logs, counts and goes on.
        max_error_fraction: under ``"skip"``, stop with :class:`TooManyErrorsError` once more
            than this fraction of the input scenes is bad.
        labels, label_names: optional callable giving an integer label per chip (``None``
            drops the chip, counted as ``unlabelled``) and the class names.
        sensor: band table for names/wavelengths (``landsat7``, ``sentinel2-l2a`` ...). By
            default identified from evidence only: product/scene ids in the file names
            (``LE07_...``, ``S2A_MSIL2A_...``), metadata tags, or band names only one family
            of sensors spells; ambiguous names (``B1..B7``) are an error asking for it.
        qa_masks: apply the scenes' cloud/QA mask files (fmask, SCL, QA_PIXEL) to validity.
        overwrite: replace a finished dataset in ``output_dir``.
        dataset_name: title of the dataset card. license: its ``license:`` tag (SPDX id or
            ``other``). card_notes: markdown appended to the card (source, licence, citation).
        label_raster: a class raster (values = class index, nodata = unlabelled) on this or
            any grid, reprojected nearest-neighbour onto each scene's grid; or label_vector +
            label_field: polygons rasterised with the class named by that attribute (sorted
            distinct values, or ``mask_label_names``). Each chip then gets a ``mask`` column
            (uint8 bytes, 255 = unlabelled); the class names go to ``geofm_dataset.json``
            under ``mask_label_names``.
        target_raster: a continuous raster (its first band: elevation, NDVI, biomass ...) for
            pixel-wise regression, on this or any grid, reprojected bilinear. Each chip then
            gets a ``target`` column (float32 bytes, chip_size x chip_size, NaN = unknown: the
            raster's nodata, NaN or outside it); ``geofm_dataset.json`` describes it under
            ``regression_target``.
        num_frames: write time series: the scenes on one grid are the dates of one footprint,
            and each chip is ``(num_frames, C, H, W)``, its frames in date order (dates from
            the file names), with a ``(T, H, W)`` ``valid_mask`` and ``frame_datetimes``. A
            frame over ``max_nodata_fraction`` invalid in a window is skipped there; frames
            short of a whole series are left over; both are counted in ``skipped``. A
            ``label_raster`` / ``label_vector`` mask or a ``target_raster`` goes with each
            series as one ``(H, W)`` map (the frames share the footprint's grid); ``labels``
            (one class a chip) is for single-date chips only.
        max_chips: refuse (:class:`BadInputError`, before any pixel is read or anything is
            written) scenes whose grids hold more chips than this (every date of a time series
            counts); ``None``: no limit. ``geofm-make-shards --max-chips`` defaults to
            :data:`~geofm_hf.data.progress.DEFAULT_MAX_CHIPS`.
        progress: a :class:`~geofm_hf.data.progress.Progress` told the plan (scenes, chips,
            shards, bytes) before the run and every strip read during it; ``None``: silent.

    Returns:
        A :class:`WriteSummary`. The folder holds ``README.md``, ``geofm_dataset.json`` and
        ``data/<split>-NNNNN-of-MMMMM.parquet``.
    """
    from .card import render_dataset_card

    start = time.perf_counter()
    stride = chip_size if stride is None else stride
    _check_arguments(chip_size, stride, max_nodata_fraction, split, resampling, labels,
                     label_names, num_frames, label_raster, label_vector, sensor)  # fmt: skip
    masks = _mask_source(label_raster, label_vector, label_field, mask_label_names)
    targets = None
    if target_raster is not None:
        from .masks import TargetSource

        targets = TargetSource(target_raster)
    if bands is not None and isinstance(bands, str):
        raise BadInputError(
            "bad_argument", f"bands must be a list of names; got the string {bands!r}"
        )
    sensor = resolve_sensor(sensor) if sensor else None
    output_dir = Path(output_dir)
    scenes, scene_sensors = _discover_scenes(inputs, band_files, filename_pattern, band_names,
                                             bands, sensor, on_error)  # fmt: skip
    split_names = [split] if isinstance(split, str) else list(split)
    plan = plan_chips(scenes, scene_sensors, chip_size=chip_size, stride=stride, bands=bands,
                      band_names=band_names, resolution=resolution, num_frames=num_frames,
                      target_bytes=int(target_shard_mb * 1e6), rows_per_shard=rows_per_shard,
                      num_splits=len(split_names))  # fmt: skip
    check_max_chips(plan, max_chips, "a larger --stride or --chip-size")
    output_dir.mkdir(parents=True, exist_ok=True)
    _prepare_output(output_dir, overwrite)
    policy = ErrorPolicy(on_error, max_error_fraction, len(scenes))
    sink = _ShardSink(split_names, output_dir / STAGING_DIR,
                      target_bytes=int(target_shard_mb * 1e6), rows_per_shard=rows_per_shard,
                      compression_level=compression_level, labelled=labels is not None,
                      masked=masks is not None, time_series=num_frames is not None,
                      targeted=targets is not None)  # fmt: skip
    spec = _ChipSpec(chip_size, stride, max_nodata_fraction, bands, band_names, resolution,
                     resampling, nodata, qa_masks, split, labels, label_names, masks,
                     targets)  # fmt: skip
    state = _DatasetState(progress=progress)
    sources: list[str] = []
    if progress is not None:
        progress.plan(plan, lambda: f"read {_size(state.bytes_read)}, shards written: "
                      f"{sum(map(len, sink.files.values()))}")  # fmt: skip
    try:
        with disk_full_as(output_dir, lambda: _space_needed(scenes, sources, sink, output_dir),
                          at_least=True):  # fmt: skip
            _cut_chips(scenes, scene_sensors, spec, state, policy, sink, num_frames, sources)
            num_samples = sink.close()
    finally:
        if progress is not None:
            progress.close()
    _check_chips_kept(state, num_samples, policy, len(scenes))
    if masks is not None:
        _check_masks_labelled(state, masks)

    # Finalise: staged shards get their final names (moved by _publish), hashes recorded.
    shards, moves = sink.shards()
    info = _dataset_info(spec, state, sink, policy, num_samples, shards, sources, num_frames)
    card = render_dataset_card(info, name=dataset_name or output_dir.name,
                               skipped_items=policy.items, license=license,
                               notes=card_notes)  # fmt: skip
    info.extra["readme_sha256"] = hashlib.sha256(card.encode()).hexdigest()
    _publish(output_dir, output_dir / STAGING_DIR, moves, card, info)
    summary = WriteSummary(
        output_dir=str(output_dir),
        num_samples=num_samples,
        num_shards={s: len(v) for s, v in shards.items()},
        skipped=policy.summary(),
        band_names=list(state.bands),
        mean=info.mean,
        std=info.std,
        bytes_read=state.bytes_read,
        seconds=time.perf_counter() - start,
        skipped_items=policy.items,
    )
    logger.info("wrote %s: %s samples, skipped %s", output_dir, num_samples, summary.skipped)
    return summary


def _check_arguments(chip_size, stride, max_nodata_fraction, split, resampling, labels,
                     label_names, num_frames, label_raster, label_vector, sensor) -> None:  # fmt: skip
    """Refuse argument values no input could make right, before any raster is read."""
    from rasterio.enums import Resampling

    if chip_size <= 0 or stride <= 0:
        raise BadInputError(
            "bad_argument", f"chip_size and stride must be positive; got {chip_size}, {stride}"
        )
    if not 0.0 <= max_nodata_fraction <= 1.0:
        raise BadInputError(
            "bad_argument", f"max_nodata_fraction must be in [0, 1]; got {max_nodata_fraction}"
        )
    if not isinstance(split, str):
        total = sum(split.values())
        if not split or abs(total - 1.0) > 1e-6 or min(split.values()) <= 0:
            raise BadInputError(
                "bad_argument", f"split fractions must be positive and sum to 1; got {dict(split)}"
            )
    if resampling not in Resampling.__members__:
        raise BadInputError("bad_argument", f"unknown resampling {resampling!r}")
    if labels is not None and not label_names:
        raise BadInputError(
            "bad_argument", "labels needs label_names (the class names, index = label)"
        )
    if num_frames is not None:
        if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
            raise BadInputError(
                "bad_argument", f"num_frames must be a positive integer; got {num_frames!r}"
            )
        if labels is not None:
            raise BadInputError(
                "bad_argument",
                "num_frames (time series) cannot be combined with labels: scene labels are "
                "written for single-date chips only (a series takes a per-pixel mask, "
                "label_raster or label_vector, or a target_raster)",
            )
    if sensor is not None:
        get_sensor_bands(sensor)  # an unknown sensor fails here, before any raster is read


def _mask_source(label_raster, label_vector, label_field, mask_label_names):
    """The per-pixel class labels (a :class:`~geofm_hf.data.masks.MaskSource`), if any."""
    if label_raster is None and label_vector is None:
        return None
    from .masks import MaskSource

    return MaskSource(label_raster, label_vector, label_field,
                      list(mask_label_names) if mask_label_names else None)  # fmt: skip


def _discover_scenes(inputs, band_files=None, filename_pattern=None, band_names=None,
                     bands=None, sensor=None, on_error="raise"):  # fmt: skip
    """Scene discovery: the input rasters grouped into scenes (band files, QA masks, date) and
    the sensor of each, with the band selection checked. Reads headers only; writes nothing.
    Returns ``(scenes, {scene.source: sensor or None})``."""
    return discover_scenes(inputs, band_files, filename_pattern, band_names, bands, sensor,
                           on_error)  # fmt: skip


def _cut_chips(scenes: list[Scene], scene_sensors: dict[str, str | None], spec: _ChipSpec,
               state: _DatasetState, policy: ErrorPolicy, sink: _ShardSink,
               num_frames: int | None, sources: list[str] | None = None) -> list[str]:  # fmt: skip
    """Every kept chip of ``scenes`` into ``sink``; returns the sources that gave chips (also
    appended to ``sources`` as each is done: the progress a failed write reports from).

    A bad scene is recorded in ``policy`` (raised again under ``on_error="raise"``)."""
    sources = [] if sources is None else sources
    if num_frames is not None:
        with contextlib.closing(_time_series_chips(scenes, scene_sensors, spec, state, policy,
                                                   num_frames, sources)) as chips:  # fmt: skip
            for chip in chips:
                sink.add(chip)
                _tally_mask(state, chip)
        return sources
    for scene in scenes:
        try:
            with contextlib.closing(
                _scene_chips(scene, scene_sensors.get(scene.source), spec, state, policy)
            ) as chips:
                scene_chips = 0
                for chip in chips:
                    sink.add(chip)
                    _tally_mask(state, chip)
                    scene_chips += 1
            sources.append(scene.source)
            logger.info("scene %s: %d chips", scene.source, scene_chips)
        except BadInputError as err:
            policy.record(err, scene.source)
    return sources


def _space_needed(
    scenes: list[Scene], sources: list[str], sink: _ShardSink, output_dir: Path
) -> int:
    """After a write ran out of space: at least how much more room the whole dataset needs,
    extrapolated from the bytes its chips took so far over the share of input bytes read (the
    scenes done and the one in progress, counted whole: hence "at least"). The staging folder
    is about to be deleted, so its bytes count as free."""
    staged, pending = sink.bytes_so_far()
    sizes = [sum(_file_bytes(p) for p in s.paths) for s in scenes]
    read = sum(sizes[: len(sources) + 1]) or 1
    total = (staged + pending) * max(sum(sizes), 1) / read
    return max(int(total) - free_bytes(output_dir) - staged, pending, 1)


def _file_bytes(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:  # a Hub or /vsi path: count it as nothing
        return 0


def _tally_mask(state: _DatasetState, chip: _Chip) -> None:
    """Add a kept chip's mask pixels to the class tallies. Counted here, where chips are kept,
    not where they are cut: a time series cuts every frame of a window (each with the same
    mask) and keeps a series only, so counting the cut frames would count each pixel T times
    and count windows that were dropped."""
    if "mask" in chip.row:
        counts = np.bincount(np.frombuffer(chip.row["mask"], np.uint8), minlength=256)
        state.mask_pixels.update({int(k): int(counts[k]) for k in np.flatnonzero(counts)})


def _check_chips_kept(state: _DatasetState, num_samples: dict[str, int], policy: ErrorPolicy,
                      num_scenes: int) -> None:  # fmt: skip
    """Stop when nothing usable was written; warn about splits that received no chip."""
    if state.bands is None:
        raise TooManyErrorsError(
            f"no usable scene among {num_scenes} inputs; skipped: {policy.summary()}"
        )
    if not any(num_samples.values()):
        raise BadInputError(
            "no_chips",
            f"every chip was dropped (skipped: {policy.summary()}); check nodata, "
            "max_nodata_fraction and chip_size",
        )
    empty = [s for s, n in num_samples.items() if n == 0]
    if empty:
        logger.warning(
            "split(s) %s received no chips (%s): splits are blocks of chip columns, west to "
            "east, within each scene, and no scene was wide enough to reach them (one chip "
            "column feeds only the first split). Use wider scenes, a smaller chip size or "
            "stride, or one split name.", empty, num_samples,
        )  # fmt: skip


def _check_masks_labelled(state: _DatasetState, masks) -> None:
    """Refuse segmentation shards whose masks hold no labelled pixel: they train nothing."""
    from .masks import IGNORE_INDEX

    labelled = sum(n for k, n in state.mask_pixels.items() if k != IGNORE_INDEX)
    if not labelled:
        raise BadInputError(
            "no_labelled_pixels",
            f"no kept chip has a labelled pixel: every mask pixel is unlabelled ({IGNORE_INDEX})."
            f" The labels ({masks.raster or masks.vector}) hold only nodata where the imagery "
            "is, or fall outside it; check their extent, CRS and nodata value",
        )


def _mask_class_pixels(state: _DatasetState, names: list[str]) -> dict[str, int]:
    """Labelled pixels per class name in the kept chips, and ``"unlabelled"``."""
    from .masks import IGNORE_INDEX

    out = {name: int(state.mask_pixels.get(i, 0)) for i, name in enumerate(names)}
    out["unlabelled"] = int(state.mask_pixels.get(IGNORE_INDEX, 0))
    return out


def _dataset_info(spec: _ChipSpec, state: _DatasetState, sink: _ShardSink, policy: ErrorPolicy,
                  num_samples: dict[str, int], shards: dict[str, list[dict[str, Any]]],
                  sources: list[str], num_frames: int | None) -> GeoDatasetInfo:  # fmt: skip
    """The dataset info of the run: bands and their sensor tables, shards, statistics, tallies."""
    dataset_bands, dataset_sensor, sensors = state.bands, state.sensor, state.sensors
    stats_by_split = sink.stats_by_split()
    # Normalisation statistics come from the training split (or the first non-empty split).
    stats_split = "train" if "train" in stats_by_split else next(iter(stats_by_split))
    masks = spec.masks
    return GeoDatasetInfo(
        band_names=list(dataset_bands),
        dtype=state.dtype.name,
        chip_size=spec.chip_size,
        num_samples=num_samples,
        mean=stats_by_split[stats_split]["mean"],
        std=stats_by_split[stats_split]["std"],
        wavelengths_um=band_wavelengths(dataset_bands, dataset_sensor) if dataset_sensor else None,
        gsd_m=band_gsd(dataset_bands, dataset_sensor) if dataset_sensor else None,
        bandwidths_um=band_bandwidths(dataset_bands, dataset_sensor) if dataset_sensor else None,
        sensor="+".join(sorted(sensors)) if dataset_sensor and len(sensors) > 1 else dataset_sensor,
        sources=sources,
        skipped=policy.summary(),
        label_names=list(spec.label_names) if spec.label_names else None,
        shards=shards,
        stats_by_split=stats_by_split,
        num_frames=num_frames or 1,
        extra={"stats_split": stats_split, "stride": spec.stride, "target_gsd_m": state.gsd_m,
               "target_resolution_crs_units": state.res, "sensors": dict(sensors),
               "validity": {**dict(sink.validity), "nodata_given": spec.nodata,
                            "sensor_fill_values": list(sensor_fill_values(dataset_sensor)),
                            "qa_masks": spec.qa_masks},
               "radiometric_offset_scenes": state.offset_scenes,
               "resampling": spec.resampling, "max_nodata_fraction": spec.max_nodata_fraction,
               **({"mask_label_names": masks.names(), "mask_ignore_index": 255,
                   "mask_class_pixels": _mask_class_pixels(state, masks.names())}
                  if masks is not None else {}),
               **({"regression_target": {
                   "column": "target", "dtype": "float32", "shape": "chip_size x chip_size",
                   "nodata": "NaN", "source": Path(spec.targets.raster).name,
                   "resampling": "bilinear"}} if spec.targets is not None else {})},
    )  # fmt: skip
