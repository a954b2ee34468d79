"""Segmentation shards (``geofm-make-shards --labels / --labels-vector``) and regression shards
(``--targets``) -> arrays in memory."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.format import BadInputError

__all__ = [
    "SegmentationDataError",
    "SegmentationSplit",
    "load_geobench_segmentation_split",
    "load_regression_split",
    "load_segmentation_split",
    "metadata_for_model",
]

_CHIP = re.compile(r"_r(\d+)_c(\d+)(?:_T\d+)?$")  # a series' id ends in _T<frames>


class SegmentationDataError(BadInputError):
    """A segmentation dataset that cannot be used as asked (no masks, no such split ...); a user
    error: the recipe exits 2 with its one line."""

    def __init__(self, message: str) -> None:
        super().__init__("segmentation_data", message)


_UNLABELLED = (
    "{source}: its masks hold no labelled pixel (every pixel is the ignore index): the labels "
    "given to geofm-make-shards did not overlap the imagery (another place or CRS) or were all "
    "nodata. Check the label file against the scenes and write the shards again."
)


@dataclass
class SegmentationSplit:
    """One split: ``images`` ``(N, C, H, W)`` (time series, shards written with ``num_frames``:
    ``(N, T, C, H, W)``), ``masks`` ``(N, H, W)`` uint8 (``ignore_index`` = unlabelled; for
    regression float32 targets, NaN = unknown; one map a series), class (or target) and band
    names, and each chip's pixel offset in its scene. ``temporal_coords`` ``(N, T, 2)`` (year,
    day of year of each frame) and ``location_coords`` ``(N, 2)`` (latitude, longitude of the
    chip centre) are NaN where unknown, ``None`` for sources that carry none (GEO-Bench);
    ``source`` names the dataset and split in messages."""

    images: np.ndarray
    masks: np.ndarray
    label_names: list[str]
    band_names: list[str]
    ignore_index: int
    offsets: np.ndarray  # (N, 2) row, col in the scene's grid (-1 when the id does not say)
    sources: list[str]
    temporal_coords: np.ndarray | None = None
    location_coords: np.ndarray | None = None
    source: str = ""

    def __len__(self) -> int:
        return len(self.masks)

    @property
    def num_frames(self) -> int:
        """Frames per sample: T of ``(N, T, C, H, W)`` time series, 1 for single images."""
        return self.images.shape[1] if self.images.ndim == 5 else 1


def load_segmentation_split(source: str | Path, split: str, revision: str | None = None,
                            mask_column: str = "mask") -> SegmentationSplit:  # fmt: skip
    """Load ``split`` of a local folder or Hub dataset of segmentation shards."""
    source, info, table = _read_split(source, split, revision, "mask_label_names",
                                      "geofm-make-shards --labels or --labels-vector")  # fmt: skip
    return _split_of(table, mask_column, np.uint8, list(info.extra["mask_label_names"]),
                     info, int(info.extra.get("mask_ignore_index", 255)), source, split)  # fmt: skip


def load_regression_split(source: str | Path, split: str, revision: str | None = None,
                          target_column: str = "target") -> SegmentationSplit:  # fmt: skip
    """Load ``split`` of a dataset of regression shards (``geofm-make-shards --targets``): the
    split's ``masks`` are then the float32 targets, NaN where unknown, and ``label_names`` the
    target's one name (its column)."""
    source, info, table = _read_split(source, split, revision, "regression_target",
                                      "geofm-make-shards --targets RASTER")  # fmt: skip
    return _split_of(table, target_column, np.float32, [target_column], info, -1, source, split)


def _read_split(source, split, revision, key: str, writer: str):
    """``(source, dataset info, split table)``, refusing datasets without ``key`` in their info
    (written without per-pixel labels) and empty or missing splits."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..data import read_dataset_info

    local = Path(source)
    source = local if local.is_dir() else str(source)
    info = read_dataset_info(source, revision=revision)
    if key == "mask_label_names" and key in info.extra and not info.extra[key]:
        # Written with labels that gave no class anywhere: the masks exist, all unlabelled.
        raise SegmentationDataError(_UNLABELLED.format(source=source))
    if not info.extra.get(key):
        other = "mask_label_names" if key == "regression_target" else "regression_target"
        task = "segmentation" if key == "regression_target" else "regression"
        raise SegmentationDataError(
            f"{source}: geofm_dataset.json has no {key}, so its shards hold no per-pixel "
            f"{'targets' if key == 'regression_target' else 'masks'}; expected shards written "
            f"with {writer}"
            + (f" (its shards suit --task {task})." if info.extra.get(other) else ".")
        )
    if split not in info.shards:
        raise SegmentationDataError(
            f"{source} has no split {split!r}: expected one of {sorted(info.shards)}."
        )
    tables = []
    for shard in info.shards[split]:
        if isinstance(source, Path):
            file = source / shard["file"]
        else:
            from huggingface_hub import hf_hub_download

            file = hf_hub_download(source, shard["file"], repo_type="dataset", revision=revision)
        tables.append(pq.read_table(file))
    table = pa.concat_tables(tables)
    if table.num_rows == 0:
        raise SegmentationDataError(
            f"{source} split {split!r} is empty: expected at least one chip."
        )
    return source, info, table


def _split_of(table, column: str, dtype, names: list[str], info, ignore_index: int,
              source, split: str) -> SegmentationSplit:  # fmt: skip
    from ..data import decode_batch
    from ..data.format import chip_metadata

    if column not in table.column_names:
        raise SegmentationDataError(f"{source}: no {column!r} column; found {table.column_names}")
    images = decode_batch(table)  # (N, C, H, W) or (N, T, C, H, W)
    frames = images.shape[1] if images.ndim == 5 else 1
    # The same dates and places the pretraining stream and the classification recipes give.
    temporal, location = chip_metadata(table, np.arange(table.num_rows), frames)
    side = images.shape[-1]
    masks = np.frombuffer(b"".join(table.column(column).to_pylist()), dtype=dtype)
    masks = masks.reshape(len(images), images.shape[-2], side).copy()
    if dtype == np.uint8 and (masks == ignore_index).all():  # class masks, none labelled
        raise SegmentationDataError(_UNLABELLED.format(source=source).replace(
            "its masks", f"the masks of split {split!r}"))  # fmt: skip
    offsets = []
    for chip_id in table.column("chip_id").to_pylist():
        m = _CHIP.search(chip_id)
        offsets.append((int(m.group(1)), int(m.group(2))) if m else (-1, -1))
    return SegmentationSplit(
        images=images, masks=masks, label_names=names, band_names=list(info.band_names),
        ignore_index=ignore_index, offsets=np.array(offsets, dtype=np.int64),
        sources=table.column("source").to_pylist(), temporal_coords=np.stack(temporal),
        location_coords=np.stack(location), source=f"{source} (split {split!r})",
    )  # fmt: skip


def metadata_for_model(config, split: SegmentationSplit) -> dict:
    """The ``temporal_coords`` / ``location_coords`` tensors of ``split`` that a model of
    ``config`` encodes, as the classification recipes find them
    (:func:`~geofm_hf.classification.data.metadata_for_model`): none for a model without
    ``temporal_encoding`` / ``location_encoding``.

    Raises:
        SegmentationDataError: the split's frames per sample differ from the model's
            ``num_frames``, or the model encodes dates or places and the split carries none.
    """
    import torch

    from ..classification.data import ClassificationDataError
    from ..classification.data import metadata_for_model as classification_metadata

    try:
        found = classification_metadata(config, split)
    except ClassificationDataError as err:
        raise SegmentationDataError(str(err)) from None
    return {name: torch.from_numpy(values) for name, values in found.items()}


def load_geobench_segmentation_split(
    root: str | Path, split: str, sensor: str | None = None
) -> tuple[SegmentationSplit, str | None]:
    """``split`` of the GEO-Bench segmentation task folder ``root`` (its default partition), and
    the sensor its bands belong to. Classes are ``0 .. K-1``, K from ``band_stats.json``'s
    ``label`` maximum (else the masks'); GEO-Bench masks have no unlabelled value, so
    ``ignore_index`` is 255, a value no class takes."""
    from ..data.geobench import GeoBenchError, read_geobench_split

    try:
        read = read_geobench_split(root, split, sensor=sensor)
    except GeoBenchError as err:
        raise SegmentationDataError(str(err)) from None
    task = read.task
    if task.label_type != "segmentation":
        raise SegmentationDataError(
            f"{task.root} is a GEO-Bench {task.label_type} task: expected a segmentation task "
            "(a label mask a sample) here; run recipes/linear_probe.py or finetune.py on it."
        )
    num_classes = task.num_classes or int(read.labels.max()) + 1
    if num_classes > 255 or read.labels.min() < 0 or read.labels.max() >= num_classes:
        raise SegmentationDataError(
            f"{task.root} (split {split!r}): mask values {int(read.labels.min())}.."
            f"{int(read.labels.max())}: expected class indices 0..{num_classes - 1} (< 255)."
        )
    out = SegmentationSplit(
        images=read.images, masks=read.labels.astype(np.uint8),
        label_names=[str(k) for k in range(num_classes)], band_names=list(task.band_names),
        ignore_index=255, offsets=np.full((len(read), 2), -1, dtype=np.int64),
        sources=[f"{task.root.name}/{n}" for n in read.sample_names],
        source=f"{task.root} (split {split!r})",
    )  # fmt: skip
    return out, task.sensor
