"""GEO-Bench task folders read without the ``geobench`` package (its 1.x pins cannot live beside us).

A task folder (e.g. ``classification_v1.0/m-eurosat``) holds one ``<sample>.hdf5`` per sample,
``default_partition.json`` (``{"train": [names], "valid": [...], "test": [...]}``) and
``band_stats.json`` (per band ``mean``, ``std``, ``min``, ``max`` ...; segmentation tasks also a
``label`` entry). Each HDF5 file has one dataset per band, named by GEO-Bench's band descriptor
(``"04 - Red"``, ``"08A - Vegetation Red Edge"``), and a segmentation mask as dataset ``label``.

What GEO-Bench keeps only in pickles is taken elsewhere. ``task_specs.pkl`` is never opened: the
label type is whether the samples hold a ``label`` dataset, the class count comes from
``band_stats.json`` or the labels themselves, and the patch size from the arrays. A
classification sample's class index and its bands' sensor class and wavelengths sit in the
file's ``pickle`` attribute; they are read from its opcode stream with :mod:`pickletools`,
which disassembles and never builds an object or runs code.

Bands are renamed to our sensor tables (:mod:`geofm_hf.bands`) by their number under the sensor
the samples name (``Sentinel2`` -> ``sentinel2-l1c``, ``Landsat8`` -> ``landsat8-oli``) or that
``sensor=`` gives, and kept only when GEO-Bench's own wavelength lies within that band's
bandwidth; the recipes then match them to a model by the one rule, :func:`geofm_hf.bands.match_bands`.
"""

from __future__ import annotations

import ast
import json
import pickletools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..bands import get_sensor_bands
from .format import BadInputError

__all__ = [
    "GeoBenchError",
    "GeoBenchSplit",
    "GeoBenchTask",
    "is_geobench_task",
    "read_geobench_split",
    "read_geobench_task",
]

PARTITION_FILE = "default_partition.json"
STATS_FILE = "band_stats.json"
SPLITS = ("train", "valid", "test")

# GEO-Bench's band classes (geobench.dataset.Sentinel2 ...) -> our sensor tables.
_SENSOR_CLASSES = {"Sentinel2": "sentinel2-l1c", "Landsat8": "landsat8-oli"}
# "08A - Vegetation Red Edge" -> "08A": the band number GEO-Bench puts first in every name.
_NUMBERED = re.compile(r"^\s*(\d{1,2}A?)\s*-")
_GENERIC = {"red", "green", "blue", "nir"}
_INT_OPS = {"BININT", "BININT1", "BININT2", "LONG1", "INT"}
_FLOAT_OPS = {"BINFLOAT", "FLOAT"}
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"}


class GeoBenchError(BadInputError):
    """A GEO-Bench task folder that cannot be used as asked (no partition file, a band our
    tables do not know ...); a user error: the recipes exit 2 with its one line."""

    def __init__(self, message: str) -> None:
        super().__init__("geobench", message)


@dataclass
class GeoBenchTask:
    """What a task folder says about itself (from its JSON files and one sample).

    Attributes:
        root: the task folder.
        name: its name (``m-eurosat``).
        partition: sample names of each split (``train``, ``valid``, ``test``).
        label_type: ``"classification"`` (one class index a sample) or ``"segmentation"`` (a
            ``label`` mask).
        geobench_band_names: GEO-Bench's band descriptors, in the samples' order.
        band_names: our name of each band (``B04``), in the same order.
        sensor: our sensor table the names belong to (``sentinel2-l1c``), or ``None`` for
            generic colour names.
        wavelengths_um: GEO-Bench's centre wavelength of each band (``None`` where unknown).
        num_classes: class count, from ``band_stats.json``'s ``label`` maximum (``None`` when it
            does not say: then from the labels read).
        mean, std: per band, from ``band_stats.json``.
    """

    root: Path
    name: str
    partition: dict[str, list[str]]
    label_type: str
    geobench_band_names: list[str]
    band_names: list[str]
    sensor: str | None
    wavelengths_um: list[float | None]
    num_classes: int | None
    mean: list[float]
    std: list[float]


@dataclass
class GeoBenchSplit:
    """One split in memory: ``images`` ``(N, C, H, W)`` and ``labels`` ``(N,)`` class indices
    (classification) or ``(N, H, W)`` masks (segmentation), with the task it came from."""

    images: np.ndarray
    labels: np.ndarray
    sample_names: list[str]
    task: GeoBenchTask

    def __len__(self) -> int:
        return len(self.labels)


def is_geobench_task(path) -> bool:
    """Whether ``path`` looks like a GEO-Bench task folder (HDF5 samples and a band_stats.json)."""
    path = Path(path)
    return path.is_dir() and (path / STATS_FILE).is_file() and any(path.glob("*.hdf5"))


def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise GeoBenchError(
            f"{path.parent} has no {path.name}: expected a GEO-Bench task folder with its "
            f"{what} ({PARTITION_FILE}, {STATS_FILE} and one .hdf5 per sample), as geobench's "
            "download writes it."
        ) from None
    except (OSError, ValueError) as err:
        raise GeoBenchError(f"{path} is not readable JSON ({what}): {err}") from None


def _pickle_facts(raw) -> tuple[int | None, list[str], dict[str, float]]:
    """``(class index or None, band classes, {band descriptor: wavelength})`` from a sample's
    ``pickle`` attribute, by disassembly only (no object is built, no code runs)."""
    data = ast.literal_eval(raw) if isinstance(raw, str) else bytes(raw)
    # A string used twice is written once and fetched from the memo after (BINGET): resolve
    # those fetches to the string, so that every key reads the same wherever it appears.
    ops: list[tuple[str, object]] = []
    memo: list[object] = []
    for op, arg, _ in pickletools.genops(data):
        if op.name == "MEMOIZE":
            memo.append(ops[-1][1] if ops and ops[-1][0] == "STR" else None)
        elif op.name in ("BINGET", "LONG_BINGET", "GET"):
            value = memo[int(arg)] if int(arg) < len(memo) else None
            ops.append(("STR", value) if isinstance(value, str) else (op.name, arg))
        else:
            ops.append(("STR" if op.name in _STRING_OPS else op.name, arg))
    label, classes, wavelengths, band = None, [], {}, None
    for i, (name, arg) in enumerate(ops[:-1]):
        following, value = ops[i + 1]
        if name == "STR" and arg == "label" and label is None and following in _INT_OPS:
            label = int(value)
        elif name == "STACK_GLOBAL" and i >= 2 and ops[i - 2][1] == "geobench.dataset":
            classes.append(ops[i - 1][1])
        elif name == "STR" and following == "EMPTY_DICT":
            band = arg  # a top-level key: the band descriptor whose attributes follow
        elif name == "STR" and arg == "wavelength" and following in _FLOAT_OPS and band:
            wavelengths[band] = float(value)
    return label, classes, wavelengths


def _our_band(name: str, sensor: str | None, wavelength: float | None, root: Path) -> str:
    """Our table's name for GEO-Bench band ``name``, checked against its wavelength."""
    if name.strip().lower() in _GENERIC:
        return name.strip().lower()
    number = _NUMBERED.match(name)
    if sensor is None or number is None:
        raise GeoBenchError(
            f"{root}: band {name!r} names no band of a sensor we know: expected GEO-Bench's "
            "'NN - description' names of Sentinel-2 or Landsat 8 bands (give the sensor with "
            "--dataset_sensor) or red/green/blue/nir."
        )
    digits = number.group(1)
    table = {b.name: b for b in get_sensor_bands(sensor)}
    if digits.endswith("A"):  # Sentinel-2 08A is our B8A
        ours = f"B{int(digits[:-1])}A"
    else:
        ours = f"B{digits.zfill(2)}" if sensor.startswith("sentinel2") else f"B{int(digits)}"
    band = table.get(ours)
    if band is None:
        raise GeoBenchError(
            f"{root}: band {name!r} has no band {ours} in the {sensor} table; its bands are "
            f"{sorted(table)}: give the task's sensor with --dataset_sensor."
        )
    if wavelength is not None and band.wavelength_um is not None:
        half = max(band.bandwidth_um or 0.0, 0.01) / 2
        if abs(wavelength - band.wavelength_um) > half:
            raise GeoBenchError(
                f"{root}: band {name!r} is at {wavelength} um, but {sensor} {band.name} is at "
                f"{band.wavelength_um} um (bandwidth {band.bandwidth_um} um): the task is not "
                f"{sensor}; give its sensor with --dataset_sensor."
            )
    return band.name


def read_geobench_task(root, *, sensor: str | None = None) -> GeoBenchTask:
    """Describe the GEO-Bench task folder ``root`` (see :class:`GeoBenchTask`).

    Args:
        root: the task folder.
        sensor: our sensor table of its bands (``sentinel2-l1c``); default: the band class its
            samples name (GEO-Bench's ``Sentinel2`` / ``Landsat8``).

    Raises:
        GeoBenchError: a missing or unreadable partition or statistics file, no samples, or a
            band our tables do not know.
    """
    import h5py

    root = Path(root)
    if not root.is_dir():
        raise GeoBenchError(f"{root} is not a folder: expected a GEO-Bench task folder.")
    partition = _read_json(root / PARTITION_FILE, "partition")
    stats = _read_json(root / STATS_FILE, "band statistics")
    if not isinstance(partition, dict) or not all(s in partition for s in ("train", "test")):
        raise GeoBenchError(
            f"{root / PARTITION_FILE}: expected lists of sample names under 'train', 'valid' and "
            f"'test': found keys {sorted(partition) if isinstance(partition, dict) else partition}."
        )
    first = next((n for s in SPLITS for n in partition.get(s, [])), None)
    if first is None or not (root / f"{first}.hdf5").is_file():
        raise GeoBenchError(
            f"{root}: no sample file {first}.hdf5 for the partition's first sample: expected one "
            ".hdf5 per sample name of the partition."
        )
    with h5py.File(root / f"{first}.hdf5", "r") as fp:
        names = [k for k in fp if not k.startswith("label")]
        segmentation = "label" in fp
        _, classes, wavelengths = _pickle_facts(fp.attrs["pickle"]) if "pickle" in fp.attrs else (
            None, [], {})  # fmt: skip
    # h5py lists datasets alphabetically; GEO-Bench's band order is its numbering, the same.
    names.sort()
    if sensor is None:
        found = sorted({_SENSOR_CLASSES[c] for c in classes if c in _SENSOR_CLASSES})
        sensor = found[0] if len(found) == 1 else None
    ours = [_our_band(n, sensor, wavelengths.get(n), root) for n in names]
    missing = [n for n in names if n not in stats]
    if missing:
        raise GeoBenchError(f"{root / STATS_FILE} has no statistics for bands {missing}.")
    num_classes = None
    if isinstance(stats.get("label"), dict) and "max" in stats["label"]:
        num_classes = int(stats["label"]["max"]) + 1
    return GeoBenchTask(
        root=root, name=root.name, partition={s: list(partition.get(s, [])) for s in SPLITS},
        label_type="segmentation" if segmentation else "classification",
        geobench_band_names=names, band_names=ours,
        sensor=None if all(b in _GENERIC for b in ours) else sensor,
        wavelengths_um=[wavelengths.get(n) for n in names], num_classes=num_classes,
        mean=[float(stats[n]["mean"]) for n in names], std=[float(stats[n]["std"]) for n in names],
    )  # fmt: skip


def read_geobench_split(root, split: str, *, sensor: str | None = None) -> GeoBenchSplit:
    """Read ``split`` (``train``, ``valid`` or ``test``) of the task folder ``root``.

    Raises:
        GeoBenchError: see :func:`read_geobench_task`; also an unknown or empty split, a missing
            sample file, a sample without a class index, or bands of differing shapes.
    """
    import h5py

    task = read_geobench_task(root, sensor=sensor)
    if split not in SPLITS:
        raise GeoBenchError(f"GEO-Bench splits are {list(SPLITS)}: found {split!r}.")
    names = task.partition[split]
    if not names:
        raise GeoBenchError(f"{task.root}: split {split!r} of {PARTITION_FILE} is empty.")
    images, labels = [], []
    for name in names:
        path = task.root / f"{name}.hdf5"
        if not path.is_file():
            raise GeoBenchError(f"{path} is missing: {PARTITION_FILE} lists sample {name!r}.")
        with h5py.File(path, "r") as fp:
            absent = [b for b in task.geobench_band_names if b not in fp]
            if absent:
                raise GeoBenchError(f"{path} lacks bands {absent} that the task's samples have.")
            bands = [np.asarray(fp[b]) for b in task.geobench_band_names]
            if len({b.shape for b in bands}) != 1:
                raise GeoBenchError(
                    f"{path}: bands of different shapes {sorted({b.shape for b in bands})}: "
                    "expected every band resampled to one grid, as GEO-Bench's tasks are."
                )
            images.append(np.stack(bands))  # (C, H, W)
            if task.label_type == "segmentation":
                labels.append(np.asarray(fp["label"]))
            else:
                label, _, _ = _pickle_facts(fp.attrs["pickle"])
                if label is None:
                    raise GeoBenchError(
                        f"{path}: no class index in the sample (multi-label tasks such as "
                        "m-bigearthnet are not read): expected one integer label a sample."
                    )
                labels.append(label)
    if len({im.shape for im in images}) != 1:
        raise GeoBenchError(f"{task.root}: samples of split {split!r} differ in shape.")
    return GeoBenchSplit(
        images=np.stack(images), labels=np.asarray(labels, dtype=np.int64), sample_names=names,
        task=task,
    )  # fmt: skip
