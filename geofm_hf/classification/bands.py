"""Band mapping between a dataset and a model, through the band contract.

Bands are matched by sensor and wavelength, never by band number: Sentinel-2 ``B05`` (red edge,
0.705 um) is not Landsat ``B5`` (NIR or SWIR). The rule is the one every door uses
(:func:`geofm_hf.bands.match_bands`): when both sides' wavelengths are known (the model's
``config.wavelengths_um`` or its names' sensor; the dataset's from its ``geofm_dataset.json``,
its sensor or generic colour names) each dataset band goes to the model band at the nearest
centre wavelength within the bands' bandwidth. Without wavelengths only names that mean one
wavelength match. A dataset with fewer bands is an *explicit* subset (:func:`geofm_hf.select_input_bands`
narrows model and processor together); extra dataset bands must be dropped explicitly
(``dataset_bands``). Missing bands are never zero-filled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..bands import (
    Band,
    BandMatchError,
    BandSet,
    canonical_band_name,
    get_sensor_bands,
    match_bands,
)
from ..data.format import BadInputError

__all__ = [
    "BandMatch",
    "BandMismatchError",
    "dataset_band_table",
    "map_dataset_bands",
    "match_splits_to_model",
    "prepare_dataset_bands",
    "restrict_to_bands",
]

_DATASET_HINT = "give the dataset's sensor (--dataset_sensor)"

# Generic colour names: wavelength (um) and a broad bandwidth.
_GENERIC = {"red": (0.665, 0.1), "green": (0.56, 0.1), "blue": (0.49, 0.1), "nir": (0.842, 0.15)}


class BandMismatchError(BadInputError):
    """The dataset's bands cannot be matched to the model's band contract (a user error: the
    recipes exit 2 with its one line)."""

    def __init__(self, message: str) -> None:
        super().__init__("band_mismatch", message)


def dataset_band_table(
    band_names: list[str],
    *,
    sensor: str | None = None,
    wavelengths_um: list[float] | None = None,
) -> list[Band] | None:
    """Wavelength-bearing :class:`Band` records for ``band_names``, or ``None`` when unknown.

    From ``sensor``'s table, else explicit ``wavelengths_um`` (e.g. ``geofm_dataset.json``),
    else generic colour names (``red``, ``green``, ``blue``, ``nir``).
    """
    if sensor:
        table = {b.name: b for b in get_sensor_bands(sensor)}
        try:
            return [table[canonical_band_name(n, sensor)] for n in band_names]
        except ValueError as err:
            raise BandMismatchError(
                f"dataset bands {band_names} vs sensor {sensor}: {err}"
            ) from None
    if wavelengths_um is not None:
        if len(wavelengths_um) != len(band_names):
            raise BandMismatchError(
                f"{len(wavelengths_um)} wavelengths for {len(band_names)} bands {band_names}"
            )
        return [Band(n, None, float(w), None, None) for n, w in zip(band_names, wavelengths_um)]
    if all(n.strip().lower() in _GENERIC for n in band_names):
        return [Band(n, n.lower(), *_GENERIC[n.strip().lower()][:1], None,
                     _GENERIC[n.strip().lower()][1]) for n in band_names]  # fmt: skip
    return None


def map_dataset_bands(
    dataset_bands: list[str],
    model_bands: list[str],
    *,
    dataset_table: list[Band] | None = None,
    model_wavelengths: list[float] | None = None,
) -> list[str]:
    """The model's name for each dataset band (``"red"`` -> ``"B04"`` on a Sentinel-2 model).

    The one matching rule of every door (:func:`geofm_hf.bands.match_bands`): with the dataset's
    wavelengths (``dataset_table``, see :func:`dataset_band_table`) and the model's (its
    ``wavelengths_um``, or its names' sensor table), by nearest wavelength within bandwidth;
    otherwise by a name that means one wavelength (never a bare band number: ``B5`` is not
    ``B05``, and Landsat ``B4`` is NIR or red by sensor). Raises :class:`BandMismatchError` for
    a dataset band the model does not have.
    """
    try:
        if dataset_table is not None and all(b.wavelength_um is not None for b in dataset_table):
            have = BandSet.of(dataset_bands, wavelengths_um=[b.wavelength_um for b in dataset_table],
                              bandwidths_um=[b.bandwidth_um for b in dataset_table],
                              label="the dataset", hint=_DATASET_HINT)  # fmt: skip
        else:
            have = BandSet.of(dataset_bands, label="the dataset", hint=_DATASET_HINT)
        wavelengths = model_wavelengths
        if wavelengths is not None and len(wavelengths) != len(model_bands):
            wavelengths = None
        model = BandSet.of(model_bands, wavelengths_um=wavelengths or None, label="the model",
                           hint="record its bands' wavelengths in its config (wavelengths_um)")  # fmt: skip
        hits = match_bands(have, model)
    except BandMatchError as err:
        raise BandMismatchError(str(err)) from None
    missing = [j for j, i in enumerate(hits) if i is None]
    if missing:
        known = have.wavelengths_um
        unmatched = [have.names[j] + (f" ({known[j]} um)" if known else "") for j in missing]
        # Asking for the sensor only helps when the dataset's wavelengths are not known.
        sensor_hint = "" if known else "give the dataset's sensor (--dataset_sensor), "
        raise BandMismatchError(
            f"Dataset band {have.names[missing[0]]!r} is not among the model's bands by sensor "
            f"and wavelength: {', '.join(unmatched)} {'have' if len(missing) > 1 else 'has'} no "
            f"model band there; the model has {model.describe()}; band numbers differ between "
            f"sensors: {sensor_hint}use only the matching dataset bands with dataset_bands=[...] "
            "(--dataset_bands), or a model trained on them."
        )
    mapped = [model_bands[i] for i in hits]
    if len(set(mapped)) != len(mapped):
        raise BandMismatchError(f"Dataset bands {dataset_bands} map to duplicates {mapped}.")
    return mapped


def restrict_to_bands(
    model,
    processor,
    dataset_bands: list[str],
    allow_subset: bool = True,
    *,
    dataset_table: list[Band] | None = None,
) -> list[str]:
    """Match ``model`` and ``processor`` to a dataset's bands; returns the model band name of
    each dataset band, in the dataset's order (pass them to the processor as ``band_names``).

    With every model band present, nothing changes (the processor reorders by name). With a strict
    subset and ``allow_subset``, model and processor are restricted together with
    :func:`geofm_hf.select_input_bands` to those bands, in the dataset's order. Otherwise
    :class:`BandMismatchError`.
    """
    from ..modeling_geofm import select_input_bands

    model_bands = list(model.config.band_names or [])
    if not model_bands:
        if len(dataset_bands) != model.config.num_channels:
            raise BandMismatchError(
                f"The model has {model.config.num_channels} unnamed input bands, the dataset "
                f"{len(dataset_bands)} ({dataset_bands}): expected the same count."
            )
        return list(dataset_bands)
    mapped = map_dataset_bands(
        dataset_bands,
        model_bands,
        dataset_table=dataset_table,
        model_wavelengths=getattr(model.config, "wavelengths_um", None),
    )
    if set(model_bands) <= set(mapped):
        return mapped
    if not allow_subset:
        missing = [b for b in model_bands if b not in mapped]
        raise BandMismatchError(
            f"The dataset lacks the model's bands {missing}; allow_band_subset=True would use "
            f"the model restricted to {mapped} (select_input_bands); they are never zero-filled."
        )
    processor_bands = list(processor.band_names or model_bands)
    select_input_bands(model, mapped, processor=processor)
    if processor.band_names != mapped:  # a processor without band names of its own
        processor.select_bands(mapped, reference=processor_bands)
    return list(mapped)


def prepare_dataset_bands(
    model,
    processor,
    split_band_names: list[str],
    *,
    dataset: str | None = None,
    dataset_revision: str | None = None,
    dataset_bands: list[str] | None = None,
    dataset_sensor: str | None = None,
    allow_subset: bool = True,
) -> tuple[list[int], list[str], list[str]]:
    """What the probe and fine-tune recipes need to feed a dataset to a model.

    ``dataset_bands`` selects (and orders) the dataset's channels to use; the dataset's
    wavelengths come from ``dataset_sensor`` or the dataset's ``geofm_dataset.json``
    (sensor / wavelengths_um). Returns ``(channel indices into the dataset images, the model
    band name of each selected channel, the model bands used)``; model and processor are
    restricted in place when the dataset covers a strict subset.
    """
    names = list(split_band_names)
    if dataset_bands:
        missing = [b for b in dataset_bands if b not in names]
        if missing:
            raise BandMismatchError(
                f"--dataset_bands {missing} are not bands of the dataset; it has {names}."
            )
        if len(set(dataset_bands)) != len(dataset_bands):
            raise BandMismatchError(f"--dataset_bands names a band twice: {dataset_bands}.")
    chosen = list(dataset_bands) if dataset_bands else names
    index = [names.index(b) for b in chosen]
    sensor, wavelengths = dataset_sensor, None
    if sensor is None and dataset is not None:
        from ..data.format import read_dataset_info

        try:
            info = read_dataset_info(dataset, revision=dataset_revision)
        except Exception:
            info = None
        if info is not None and list(info.band_names) == names:
            wavelengths = info.wavelengths_um
            if info.sensor and "+" not in info.sensor and wavelengths is None:
                sensor = info.sensor
    if wavelengths is not None:
        wavelengths = [wavelengths[i] for i in index]
    table = dataset_band_table(chosen, sensor=sensor, wavelengths_um=wavelengths)
    mapped = restrict_to_bands(model, processor, chosen, allow_subset, dataset_table=table)
    used = list(model.config.band_names or mapped)
    return index, mapped, used


@dataclass
class BandMatch:
    """How a run feeds its dataset to the model (see :func:`match_splits_to_model`).

    Attributes:
        band_names: the model's name of each dataset channel kept, in the images' order (the
            processor's ``band_names``).
        bands_used: the model bands the run uses: all of them, or the explicit subset.
        band_subset: whether ``bands_used`` is a strict subset of the model's bands.
    """

    band_names: list[str]
    bands_used: list[str]
    band_subset: bool


def match_splits_to_model(model, processor, splits, args) -> BandMatch:
    """Match the dataset of ``splits`` to ``model`` and ``processor`` as ``args`` asks.

    :func:`prepare_dataset_bands` with the run's band options (``dataset_bands``,
    ``dataset_sensor`` defaulting to the dataset's ``geofm_dataset.json``,
    ``allow_band_subset``); the splits' images and ``band_names`` keep only the chosen channels,
    in place. Every split must have the first one's bands.
    """
    model_bands = list(model.config.band_names or [])
    names = list(splits[0].band_names)
    channels, mapped, used = prepare_dataset_bands(
        model, processor, names, dataset=args.dataset_name_or_path,
        dataset_revision=args.dataset_revision, dataset_bands=args.dataset_bands,
        dataset_sensor=args.dataset_sensor, allow_subset=args.allow_band_subset,
    )  # fmt: skip
    if channels != list(range(len(names))):
        for split in splits:
            # Channels are the third axis from the end, in single images and series alike.
            split.images = (split.images[..., channels, :, :]
                            if isinstance(split.images, np.ndarray)
                            else [im[..., channels, :, :] for im in split.images])  # fmt: skip
            split.band_names = [split.band_names[i] for i in channels]
    return BandMatch(mapped, used, bool(model_bands) and len(used) < len(model_bands))
