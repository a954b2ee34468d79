"""``geofm-embed``'s other input: a shard dataset written by ``geofm-make-shards`` (a folder or a
Hub dataset id), whose chips are the windows. Its bands feed the model's by the sensor and
wavelengths its ``geofm_dataset.json`` records (:func:`~geofm_hf.data.band_resolution.
model_band_indices`, the rule every door uses); its chips' dates and places feed a model that
encodes them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from ..data.error_policy import ErrorPolicy
from ..data.format import BadInputError
from .embed_output import PartWriter, Tally, done_windows
from .scenes import SceneReading, open_scenes
from .stacks import ModelNeeds

__all__ = ["check_shard_dataset", "embed_shards", "iter_shard_chips", "window_sources"]


def window_sources(inputs, reading: SceneReading, on_error: str):
    """``("rasters", scenes, {source: sensor})`` or ``("shards", [dataset path or id], {})``."""
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    from ..data.format import DATASET_INFO_FILE

    if len(items) == 1 and not reading.band_files:
        text = str(items[0])
        if Path(text).is_dir() and (Path(text) / DATASET_INFO_FILE).exists():
            return "shards", [Path(text)], {}
        if not Path(text).exists() and text.count("/") == 1 and not any(c in text for c in "*?["):
            return "shards", [text], {}  # a Hub dataset repo id
    return "rasters", *open_scenes(items, reading, on_error)


def iter_shard_chips(source, revision, window: int) -> Iterator[tuple[str, dict, np.ndarray]]:
    """Chips of a geofm shard dataset (every split) as ``(split, meta, pixels)``; ``meta`` holds
    the chip's ``temporal_coords`` ``(T, 2)`` and ``location_coords`` ``(2,)`` (NaN = unknown)
    beside its columns."""
    from ..data import decode_batch, read_dataset_info
    from ..data.format import chip_metadata

    info = read_dataset_info(source, revision=revision)
    if info.chip_size != window:
        raise ValueError(
            f"{source}: chips are {info.chip_size} px, the model takes {window} px windows; "
            "expected shards cut at the model's image_size (geofm-make-shards --chip-size)."
        )
    for split, shards in info.shards.items():
        for shard in shards:
            if isinstance(source, Path):
                file = source / shard["file"]
            else:
                from huggingface_hub import hf_hub_download

                file = hf_hub_download(str(source), shard["file"], repo_type="dataset",
                                       revision=revision)  # fmt: skip
            table = pq.read_table(file)
            images = decode_batch(table)  # (N, C, H, W) or a series' (N, T, C, H, W)
            frames = images.shape[1] if images.ndim == 5 else 1
            times, places = chip_metadata(table, np.arange(table.num_rows), frames)
            cols = table.select(["source", "chip_id", "bounds", "crs", "datetime", "band_names"])
            for i, meta in enumerate(cols.to_pylist()):
                meta.update(temporal_coords=times[i], location_coords=places[i])
                yield split, meta, images[i]


def check_shard_dataset(needs: ModelNeeds, source, revision) -> tuple[str, ...]:
    """What the model takes beside pixels checked against a shard dataset: frames per chip, and
    the dates and places it encodes present. Returns the metadata to pass (``needs.wanted``)."""
    from ..data import read_dataset_info

    frames, wanted = needs.frames, needs.wanted
    info = read_dataset_info(source, revision=revision)
    if info.num_frames != frames:
        held = "single images" if info.num_frames == 1 else f"series of {info.num_frames} frames"
        todo = (f"write time-series shards with geofm-make-shards --num-frames {frames}"
                if frames > 1 else f"embed it with a time-series model (num_frames="
                f"{info.num_frames}), or write single-date shards")  # fmt: skip
        raise BadInputError(
            "frames_mismatch",
            f"the model takes {needs.describe()} (config num_frames={frames}) but {source} holds {held}: {todo}",
        )
    if wanted:
        # One chip tells whether the dataset records dates and places at all.
        _, meta, _ = next(iter_shard_chips(source, revision, info.chip_size))
        for name, what, how in (
            ("temporal_coords", "dates", "shards whose file names carry each scene's date "
             "(YYYYMMDD, ISO or a Landsat scene id)"),
            ("location_coords", "places", "shards of georeferenced rasters (a CRS and transform)"),
        ):  # fmt: skip
            if name in wanted and not np.isfinite(meta[name]).any():
                option = "temporal_encoding" if name == "temporal_coords" else "location_encoding"
                raise BadInputError(
                    "needs_metadata",
                    f"the model encodes {what} ({option}=True) but {source} gives none: "
                    f"expected {how}, written by geofm-make-shards",
                )
    return wanted


def embed_shards(source, revision, model_bands, window: int, parts: PartWriter,
                  policy: ErrorPolicy, wanted=()) -> Tally:  # fmt: skip
    """Every chip of a shard dataset into parts (its chips are the windows)."""
    tally = Tally()
    key = str(source)
    done = done_windows(parts.staging, 0)
    tally.resumed += len(done)
    first_part = len(list(parts.staging.glob("s00000-*.parquet")))
    try:
        items = _shard_items(source, revision, window, done, model_bands, wanted)
        n, n_empty = parts.write(items, 0, first_part)
        tally.crs = _shard_crs(source, revision, window)
        tally.windows += n
        tally.empty += n_empty
        tally.per_scene[key] = n + len(done)
    except BadInputError as err:
        for stale in parts.staging.glob("s00000-*.parquet"):
            stale.unlink()
        policy.record(err, key)
    return tally


def _shard_items(source, revision, window, done, model_bands, wanted=()):
    """Shard chips as ``((source, row, col, datetime), bounds, pixels, coords)``; row/col are the
    chip's offsets parsed from its id (``<scene>_rNNNNN_cNNNNN``); ``coords`` holds the
    ``wanted`` metadata (``temporal_coords``, ``location_coords``). Every chip must share one
    CRS (one GeoParquet file has one)."""
    import re

    from rasterio.crs import CRS

    crs_ref = None
    pattern = re.compile(r"_r(\d+)_c(\d+)$")
    take = None
    for _, meta, pixels in iter_shard_chips(source, revision, window):
        names = list(meta["band_names"])
        if take is None:
            take = _shard_band_index(source, revision, names, model_bands)
        crs = CRS.from_user_input(meta["crs"])
        if crs_ref is None:
            crs_ref = crs
        elif crs != crs_ref:
            raise BadInputError(
                "crs_mismatch",
                f"chip {meta['chip_id']} is in {crs}, earlier chips in {crs_ref}; one GeoParquet "
                "file has one CRS: write the shards of each CRS to their own dataset.",
            )
        m = pattern.search(meta["chip_id"])
        r, c = (int(m.group(1)), int(m.group(2))) if m else (-1, -1)
        if (meta["source"], r, c) in done:
            continue
        pix = pixels[..., take, :, :].astype(np.float32)  # bands are the third axis from the end
        coords = {k: meta[k] for k in wanted}
        yield (meta["source"], r, c, meta["datetime"]), tuple(meta["bounds"]), pix, coords


def _shard_band_index(source, revision, names: list[str], model_bands) -> list[int]:
    """The chip channel of each model band: the dataset's bands identified by the sensor and
    wavelengths its ``geofm_dataset.json`` records, matched by the one rule."""
    from ..bands import BandMatchError, BandSet, unknown_band_names
    from ..data import read_dataset_info
    from ..data.band_resolution import model_band_indices

    info = read_dataset_info(source, revision=revision)
    sensor = info.sensor if info.sensor and "+" not in info.sensor else None
    wavelengths = info.wavelengths_um if list(info.band_names) == names else None
    try:
        have = BandSet.of(names, None if wavelengths else sensor, wavelengths,
                          named=names != unknown_band_names(len(names)),
                          label=f"dataset {source}",
                          hint="write it with geofm-make-shards --sensor")  # fmt: skip
    except BandMatchError as err:
        raise BadInputError("band_mismatch", str(err)) from None
    return model_band_indices(model_bands, have, f"dataset {source}")


def _shard_crs(source, revision, window):
    """The CRS of a shard dataset's chips (all equal: :func:`_shard_items` checks)."""
    from rasterio.crs import CRS

    for _, meta, _ in iter_shard_chips(source, revision, window):
        return CRS.from_user_input(meta["crs"])
    raise BadInputError("empty_dataset", f"{source} holds no chips")
