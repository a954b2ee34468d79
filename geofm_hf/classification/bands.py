"""Band mapping between a dataset and a model, through the band contract.

A dataset with every band the model expects is reordered by name by the image processor. A
dataset with fewer bands (an RGB benchmark on a Sentinel-2 model) is an *explicit* band subset:
:func:`geofm_hf.select_input_bands` keeps the patch-projection channels of those bands and the
image processor is narrowed to match. Missing bands are never zero-filled.
"""

from __future__ import annotations

from ..bands import SENSORS, canonical_band_name, detect_sensor

__all__ = ["BandMismatchError", "map_dataset_bands", "restrict_to_bands"]


class BandMismatchError(ValueError):
    """The dataset's bands cannot be matched to the model's band contract."""


def map_dataset_bands(dataset_bands: list[str], model_bands: list[str]) -> list[str]:
    """The model's name for each dataset band (``"red"`` -> ``"B04"`` on a Sentinel-2 model).

    Raises :class:`BandMismatchError` for a dataset band the model does not have.
    """
    sensor = detect_sensor(list(model_bands))
    mapped = []
    for name in dataset_bands:
        if name in model_bands:
            mapped.append(name)
            continue
        candidate = None
        for table in [sensor] if sensor else list(SENSORS):
            try:
                candidate = canonical_band_name(name, table)
            except ValueError:
                continue
            if candidate in model_bands:
                break
            candidate = None
        if candidate is None:
            raise BandMismatchError(
                f"Dataset band {name!r} is not among the model's bands {model_bands} (under any "
                "alias). Pass band_names=[...] naming the dataset's channels with the model's "
                "names, or use a model trained on these bands."
            )
        mapped.append(candidate)
    if len(set(mapped)) != len(mapped):
        raise BandMismatchError(f"Dataset bands {dataset_bands} map to duplicates {mapped}.")
    return mapped


def restrict_to_bands(model, processor, dataset_bands: list[str], allow_subset: bool = True):
    """Match ``model`` and ``processor`` to a dataset's bands; returns the model band names used.

    With every model band present, nothing changes (the processor reorders by name). With a strict
    subset and ``allow_subset``, the model is restricted in place with
    :func:`geofm_hf.select_input_bands` and ``processor`` narrowed to the same bands, in the
    dataset's order. Otherwise :class:`BandMismatchError`.
    """
    from .. import select_input_bands

    model_bands = list(model.config.band_names or [])
    if not model_bands:
        if len(dataset_bands) != model.config.num_channels:
            raise BandMismatchError(
                f"The model has {model.config.num_channels} unnamed input bands, the dataset "
                f"{len(dataset_bands)} ({dataset_bands}): expected the same count."
            )
        return list(dataset_bands)
    mapped = map_dataset_bands(dataset_bands, model_bands)
    if set(model_bands) <= set(mapped):
        return model_bands
    if not allow_subset:
        missing = [b for b in model_bands if b not in mapped]
        raise BandMismatchError(
            f"The dataset lacks the model's bands {missing}; allow_band_subset=True would use "
            f"the model restricted to {mapped} (select_input_bands); they are never zero-filled."
        )
    processor_bands = list(processor.band_names or model_bands)
    select_input_bands(model, mapped)
    order = [processor_bands.index(b) for b in mapped]
    processor.band_names = list(mapped)
    for attr in ("image_mean", "image_std"):
        values = getattr(processor, attr)
        if values is not None:
            setattr(processor, attr, [values[i] for i in order])
    return list(mapped)
