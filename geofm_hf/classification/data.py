"""Image-classification datasets -> in-memory arrays with labels, class names and band names.

Three sources, one result (:class:`ClassificationSplit`):

- our Parquet shards with a ``label`` column (``geofm_dataset.json`` names the classes and bands),
  from a local folder or a Hub dataset repo;
- an image folder on disk, ``ROOT/<split>/<class>/*.{tif,tiff,png,jpg,jpeg}`` (GeoTIFF through
  rasterio, so multispectral and uint16 images keep every band);
- any ``datasets`` repo (Hub id or local folder) with an image column and a class-label column.

Benchmarks are small (UC Merced 2,100 images; NWPU-RESISC45 31,500 at 256 px): whole splits are
held in memory, which keeps the probe's feature pass a plain loop.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.format import BadInputError

__all__ = [
    "ClassificationDataError",
    "ClassificationSplit",
    "check_splits",
    "load_classification_split",
    "load_geobench_train_test",
    "load_train_test",
    "metadata_for_model",
]

_IMAGE_EXTENSIONS = {".tif", ".tiff", ".png", ".jpg", ".jpeg"}
_GEOTIFF = {".tif", ".tiff"}


class ClassificationDataError(BadInputError):
    """A classification dataset that cannot be used as asked (missing column, empty split ...);
    a user error: the recipes exit 2 with its one line."""

    def __init__(self, message: str) -> None:
        super().__init__("classification_data", message)


@dataclass
class ClassificationSplit:
    """One split in memory.

    Attributes:
        images: ``(N, C, H, W)`` array, or a list of ``(C, H, W)`` arrays when sizes differ;
            time series (shards written with ``num_frames``) are ``(N, T, C, H, W)``.
        labels: ``(N,)`` int64 class indices into ``label_names``.
        label_names: class names, index = label.
        band_names: names of the image channels, in order.
        source: where the split came from (path or repo id, and split name).
        skipped: images that could not be read, ``{path: reason}`` (none under on_error="raise").
        temporal_coords: ``(N, T, 2)`` (year, day of year) of each frame, NaN where unknown;
            ``None`` for sources that carry no dates (only our shards do).
        location_coords: ``(N, 2)`` (latitude, longitude) of each chip's centre, NaN where
            unknown; ``None`` for sources that carry no places.
    """

    images: np.ndarray | list[np.ndarray]
    labels: np.ndarray
    label_names: list[str]
    band_names: list[str]
    source: str
    skipped: dict[str, str] = field(default_factory=dict)
    temporal_coords: np.ndarray | None = None
    location_coords: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_frames(self) -> int:
        """Frames per sample: T of ``(N, T, C, H, W)`` time series, 1 for single images."""
        ndim = self.images.ndim - 1 if isinstance(self.images, np.ndarray) else self.images[0].ndim
        return self.images[0].shape[0] if ndim == 4 else 1


def load_classification_split(
    name_or_path: str | os.PathLike,
    split: str,
    *,
    revision: str | None = None,
    image_column: str = "image",
    label_column: str = "label",
    band_names: list[str] | None = None,
    on_error: str = "raise",
) -> ClassificationSplit:
    """Load ``split`` of an image-classification dataset (see the module docstring for sources).

    Args:
        name_or_path: local folder or Hub dataset repo id.
        split: split name (``"train"``, ``"test"`` ...).
        revision: Hub revision (branch, tag or commit) of a repo id.
        image_column, label_column: column names for ``datasets`` repos and shards.
        band_names: names of the image channels when the dataset does not say (e.g.
            ``["red", "green", "blue"]`` for RGB folders); overrides what the dataset says.
        on_error: ``"raise"`` stops at an unreadable image; ``"skip"`` drops it and records it in
            ``skipped`` (never silently).

    Raises:
        ClassificationDataError: the split is missing or empty, the label column is missing or not
            class-like, or band names disagree with the channel count.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip': found {on_error!r}.")
    path = Path(name_or_path)
    if path.is_dir() and (path / "geofm_dataset.json").is_file():
        out = _load_geofm_shards(path, split, label_column, revision=None)
    elif path.is_dir() and (path / split).is_dir() and _looks_like_image_folder(path / split):
        out = _load_image_folder(path, split, on_error)
    elif not path.exists() and _is_geofm_hub_dataset(str(name_or_path), revision):
        out = _load_geofm_shards(str(name_or_path), split, label_column, revision=revision)
    else:
        out = _load_hf_dataset(str(name_or_path), split, revision, image_column, label_column)
    if band_names is not None:
        out.band_names = list(band_names)
    channels = out.images[0].shape[-3]  # (C, H, W) or a series' (T, C, H, W)
    if len(out.band_names) != channels:
        raise ClassificationDataError(
            f"{out.source}: {len(out.band_names)} band names {out.band_names} for images with "
            f"{channels} channels; pass band_names=[...] with one name per channel."
        )
    return out


def check_splits(train: ClassificationSplit, test: ClassificationSplit) -> None:
    """Raise :class:`ClassificationDataError` unless ``test`` can be scored by a model of ``train``.

    Both splits must be non-empty and name the same classes and bands, and every class present in
    ``test`` must have training samples (a class seen only in test cannot be learnt).
    """
    for split in (train, test):
        if len(split) == 0:
            raise ClassificationDataError(f"{split.source} is empty: expected at least one image.")
    if train.label_names != test.label_names:
        raise ClassificationDataError(
            f"train and test name different classes: {train.label_names} vs {test.label_names}."
        )
    if train.band_names != test.band_names:
        raise ClassificationDataError(
            f"train and test have different bands: {train.band_names} vs {test.band_names}."
        )
    if train.num_frames != test.num_frames:
        raise ClassificationDataError(
            f"train and test hold different series: {train.num_frames} vs {test.num_frames} "
            "frame(s) per sample."
        )
    only_test = sorted(set(test.labels.tolist()) - set(train.labels.tolist()))
    if only_test:
        names = [train.label_names[i] for i in only_test]
        raise ClassificationDataError(
            f"classes {names} appear in {test.source} but have no sample in {train.source}: "
            "expected every test class to be present in train."
        )


# ---------------------------------------------------------------------------- our shards
def load_train_test(args) -> tuple[ClassificationSplit, ClassificationSplit]:
    """The train and test splits a run's arguments name (a
    :class:`~geofm_hf.classification.ClassificationArguments`), checked by :func:`check_splits`."""
    if getattr(args, "geobench_task", None):
        train, test = load_geobench_train_test(args)
        check_splits(train, test)
        return train, test
    load = dict(revision=args.dataset_revision, image_column=args.image_column,
                label_column=args.label_column, band_names=args.band_names)  # fmt: skip
    train = load_classification_split(args.dataset_name_or_path, args.train_split, **load)
    test = load_classification_split(args.dataset_name_or_path, args.test_split, **load)
    check_splits(train, test)
    return train, test


def load_geobench_train_test(args) -> tuple[ClassificationSplit, ClassificationSplit]:
    """The ``args.train_split`` and ``args.test_split`` of the GEO-Bench classification task
    ``args.geobench_task`` (its ``default_partition.json``), bands in our sensor tables' names.

    The task's sensor becomes ``args.dataset_sensor`` when none is given, so that the band
    matching goes by the sensor's wavelengths. Classes are ``0 .. K-1``: K from
    ``band_stats.json``'s ``label`` maximum, else from the labels of both splits.
    """
    from ..data.geobench import GeoBenchError, read_geobench_split

    try:
        read = [read_geobench_split(args.geobench_task, s, sensor=args.dataset_sensor)
                for s in (args.train_split, args.test_split)]  # fmt: skip
    except GeoBenchError as err:
        raise ClassificationDataError(str(err)) from None
    task = read[0].task
    if task.label_type != "classification":
        raise ClassificationDataError(
            f"{task.root} is a GEO-Bench {task.label_type} task: expected a classification task "
            "(one class a sample) here; run recipes/segment.py on it."
        )
    args.dataset_sensor = args.dataset_sensor or task.sensor
    num_classes = task.num_classes or max(int(r.labels.max()) for r in read) + 1
    out = []
    for split, r in zip((args.train_split, args.test_split), read):
        if r.labels.max() >= num_classes:
            raise ClassificationDataError(
                f"{task.root} (split {split!r}): labels up to {int(r.labels.max())} for "
                f"{num_classes} classes ({task.root.name}/band_stats.json's label maximum)."
            )
        out.append(ClassificationSplit(
            images=r.images, labels=r.labels, label_names=[str(k) for k in range(num_classes)],
            band_names=list(task.band_names), source=f"{task.root} (split {split!r})",
        ))  # fmt: skip
    return out[0], out[1]


def _is_geofm_hub_dataset(repo_id: str, revision: str | None) -> bool:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        hf_hub_download(repo_id, "geofm_dataset.json", repo_type="dataset", revision=revision)
    except EntryNotFoundError:
        return False
    except Exception:
        # Unknown repo, no network ...: let `datasets` report it in its own words.
        return False
    return True


def _load_geofm_shards(
    source: str | Path, split: str, label_column: str, revision: str | None
) -> ClassificationSplit:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..data import decode_batch, read_dataset_info
    from ..data.format import chip_metadata

    info = read_dataset_info(source, revision=revision)
    where = f"{source} (split {split!r})"
    if split not in info.shards:
        raise ClassificationDataError(
            f"{source} has no split {split!r}: expected one of {sorted(info.shards)}."
        )
    if not info.label_names:
        raise ClassificationDataError(
            f"{source}: geofm_dataset.json has no label_names, so the shards are not labelled; "
            "expected shards written with write_shards(labels=..., label_names=...)."
        )
    tables = []
    for shard in info.shards[split]:
        if isinstance(source, Path):
            file = source / shard["file"]
        else:
            from huggingface_hub import hf_hub_download

            file = hf_hub_download(source, shard["file"], repo_type="dataset", revision=revision)
        tables.append(pq.read_table(file))
    if not tables or sum(t.num_rows for t in tables) == 0:
        raise ClassificationDataError(f"{where} is empty: expected at least one chip.")
    table = pa.concat_tables(tables)
    if label_column not in table.column_names:
        raise ClassificationDataError(
            f"{where} has no label column {label_column!r}: found columns {table.column_names}."
        )
    labels = _class_indices(table.column(label_column).to_pylist(), info.label_names, where)
    images = decode_batch(table)  # (N, C, H, W) or (N, T, C, H, W), stored dtype
    frames = images.shape[1] if images.ndim == 5 else 1
    # The same dates and places the pretraining stream gives a time-series model.
    temporal, location = chip_metadata(table, np.arange(table.num_rows), frames)
    return ClassificationSplit(
        images=images,
        labels=labels,
        label_names=list(info.label_names),
        band_names=list(info.band_names),
        source=where,
        temporal_coords=np.stack(temporal),
        location_coords=np.stack(location),
    )


def metadata_for_model(config, split: ClassificationSplit) -> dict[str, np.ndarray]:
    """The ``temporal_coords`` / ``location_coords`` of ``split`` that a model of ``config``
    encodes (none for a model without ``temporal_encoding`` / ``location_encoding``).

    Raises:
        ClassificationDataError: the split's frames per sample differ from the model's
            ``num_frames``, or the model encodes dates or places and the split carries none.
    """
    frames, found = int(getattr(config, "num_frames", 1) or 1), split.num_frames
    if found != frames:
        held = "single images" if found == 1 else f"series of {found} frames"
        if frames == 1:
            todo = (f"use a time-series model (config num_frames={found}), or single-date shards "
                    "(geofm-make-shards without --num-frames)")  # fmt: skip
        else:
            todo = f"write time-series shards with geofm-make-shards --num-frames {frames}"
        raise ClassificationDataError(
            f"the model takes {'single images' if frames == 1 else f'series of {frames} frames'} "
            f"(config num_frames={frames}) but {split.source} holds {held}: {todo}."
        )
    out = {}
    wanted = (
        ("temporal_encoding", "temporal_coords", split.temporal_coords, "dates",
         "geofm shards whose file names carry each scene's date (YYYYMMDD, ISO or a Landsat "
         "scene id), written by geofm-make-shards"),
        ("location_encoding", "location_coords", split.location_coords, "places",
         "geofm shards of georeferenced rasters (a CRS and transform per chip), written by "
         "geofm-make-shards"),
    )  # fmt: skip
    for option, name, values, what, how in wanted:
        if not getattr(config, option, False):
            continue
        if values is None or not np.isfinite(values).any():
            raise ClassificationDataError(
                f"the model encodes {what} ({option}=True) but {split.source} gives none: "
                f"expected {how}."
            )
        out[name] = values
    return out


# ---------------------------------------------------------------------------- image folders
def _looks_like_image_folder(split_dir: Path) -> bool:
    return any(
        child.is_dir() and any(f.suffix.lower() in _IMAGE_EXTENSIONS for f in child.iterdir())
        for child in split_dir.iterdir()
    )


def _read_image(path: Path) -> tuple[np.ndarray, list[str] | None]:
    """``(C, H, W)`` array and band names (GeoTIFF descriptions) of one image file."""
    if path.suffix.lower() in _GEOTIFF:
        import rasterio

        with rasterio.open(path) as src:
            names = list(src.descriptions)
            return src.read(), (names if all(names) else None)
    from PIL import Image

    with Image.open(path) as im:
        if im.mode not in ("RGB", "L"):
            im = im.convert("RGB")
        array = np.asarray(im)
    if array.ndim == 2:
        return array[None], None
    return array.transpose(2, 0, 1), (["red", "green", "blue"] if array.shape[2] == 3 else None)


def _load_image_folder(root: Path, split: str, on_error: str) -> ClassificationSplit:
    split_dir = root / split
    # Classes are the union over splits, so the index of a class is the same in every split.
    class_dirs = {
        d.name
        for s in root.iterdir()
        if s.is_dir()
        for d in s.iterdir()
        if d.is_dir() and any(f.suffix.lower() in _IMAGE_EXTENSIONS for f in d.iterdir())
    }
    label_names = sorted(class_dirs)
    images, labels, skipped = [], [], {}
    band_names: list[str] | None = None
    for k, name in enumerate(label_names):
        folder = split_dir / name
        if not folder.is_dir():
            continue
        for file in sorted(folder.iterdir()):
            if file.suffix.lower() not in _IMAGE_EXTENSIONS:
                continue
            try:
                array, names = _read_image(file)
            except Exception as err:
                if on_error == "raise":
                    raise ClassificationDataError(f"cannot read image {file}: {err}") from err
                skipped[str(file)] = f"{type(err).__name__}: {err}"
                continue
            if images and array.shape[0] != images[0].shape[0]:
                raise ClassificationDataError(
                    f"{file} has {array.shape[0]} bands, {images[0].shape[0]} expected (as the "
                    "first image of the split): every image of a dataset must have the same bands."
                )
            band_names = band_names or names
            images.append(array)
            labels.append(k)
    where = f"{root} (split {split!r})"
    if not images:
        raise ClassificationDataError(f"{where} is empty: expected images in {split_dir}/<class>/.")
    if band_names is None:
        band_names = [f"band_{i}" for i in range(images[0].shape[0])]
    stacked: np.ndarray | list[np.ndarray]
    stacked = np.stack(images) if len({im.shape for im in images}) == 1 else images
    return ClassificationSplit(
        images=stacked,
        labels=np.asarray(labels, dtype=np.int64),
        label_names=label_names,
        band_names=band_names,
        source=where,
        skipped=skipped,
    )


# ---------------------------------------------------------------------------- datasets repos
def _load_hf_dataset(
    name: str, split: str, revision: str | None, image_column: str, label_column: str
) -> ClassificationSplit:
    import datasets

    where = f"{name} (split {split!r})"
    try:
        ds = datasets.load_dataset(name, split=split, revision=revision)
    except ValueError as err:
        if "split" in str(err).lower():
            raise ClassificationDataError(f"{name} has no split {split!r}: {err}") from err
        raise
    for column, what in ((image_column, "image"), (label_column, "label")):
        if column not in ds.column_names:
            raise ClassificationDataError(
                f"{where} has no {what} column {column!r}: found columns {ds.column_names}; pass "
                f"{what}_column=... to name it."
            )
    if len(ds) == 0:
        raise ClassificationDataError(f"{where} is empty: expected at least one image.")
    feature = ds.features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        label_names = list(feature.names)
        labels = np.asarray(ds[label_column], dtype=np.int64)
    else:
        values = ds[label_column]
        if values and isinstance(values[0], str):
            label_names = sorted(set(values))
        else:
            label_names = None
        labels = _class_indices(values, label_names, where)
        if label_names is None:
            label_names = [str(i) for i in range(int(labels.max()) + 1)]
    images = []
    band_names = None
    for item in ds[image_column]:
        if hasattr(item, "getbands"):  # PIL image (datasets' Image feature)
            band_names = ["red", "green", "blue"]
            images.append(np.asarray(item.convert("RGB")).transpose(2, 0, 1))
        else:
            array = np.asarray(item)
            if array.ndim == 2:
                array = array[None]
            if array.ndim != 3:
                raise ClassificationDataError(
                    f"{where}: expected images of shape (C, H, W), found {array.shape}."
                )
            images.append(array)
    if band_names is None:
        band_names = [f"band_{i}" for i in range(images[0].shape[0])]
    stacked = np.stack(images) if len({im.shape for im in images}) == 1 else images
    return ClassificationSplit(stacked, labels, label_names, band_names, where)


def _class_indices(values: list[Any], label_names: list[str] | None, where: str) -> np.ndarray:
    """Labels as int64 class indices, or a clear error when they are not class-like."""
    if any(v is None for v in values):
        n = sum(v is None for v in values)
        raise ClassificationDataError(f"{where}: {n} samples have no label (None).")
    if values and isinstance(values[0], str):
        if label_names is None:
            raise ClassificationDataError(f"{where}: string labels need label names.")
        unknown = sorted(set(values) - set(label_names))
        if unknown:
            raise ClassificationDataError(
                f"{where}: labels {unknown[:5]} are not among the classes {label_names}."
            )
        return np.asarray([label_names.index(v) for v in values], dtype=np.int64)
    array = np.asarray(values)
    if array.ndim != 1 or array.dtype.kind not in "iub":
        raise ClassificationDataError(
            f"{where}: the label column is not class-like: expected one integer class index (or "
            f"class name) per sample, found dtype {array.dtype} and shape {array.shape}."
        )
    if array.size and (array.min() < 0 or (label_names and array.max() >= len(label_names))):
        bound = f"0..{len(label_names) - 1}" if label_names else ">= 0"
        raise ClassificationDataError(
            f"{where}: label values must be in {bound}: found {array.min()}..{array.max()}."
        )
    return array.astype(np.int64)
