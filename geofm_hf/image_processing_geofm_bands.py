"""The image processor's band contract: which input band is which model band, and whether the
input's values look like the model's statistics.

Bands are matched by name (with Sentinel-2's RGB aliases) or by centre wavelength, never by
number across sensors; a band the model needs but the input lacks is an error naming it.

Part of the image processor's remote code: ``image_processing_geofm.py`` imports it relatively,
so ``processor.save_pretrained`` copies it next to the weights and ``trust_remote_code=True``
loads it. It must only import ``numpy``, ``torch``, ``transformers`` and the standard library
(``geofm_hf``'s sensor tables only where installed, inside ``try``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

# Red/green/blue under Sentinel-2's own spelling (B04/B03/B02), so a PIL RGB image matches a
# Sentinel-2 model by name. Not "B4": that is red on Landsat 8 but NIR on Landsat 5/7; other
# sensors are matched by wavelength (the config's wavelengths_um). Kept here rather than imported
# from geofm_hf.bands: this file must stand alone as remote code.
RGB_ALIASES = {
    "red": ("red", "r", "b04"),
    "green": ("green", "g", "b03"),
    "blue": ("blue", "b", "b02"),
}
# Centre wavelength and half-width (um) of generic colour names, for wavelength matching.
COLOUR_WAVELENGTHS = {"red": (0.665, 0.05), "green": (0.56, 0.05), "blue": (0.49, 0.05),
                      "nir": (0.842, 0.075)}  # fmt: skip
# Inputs whose mean lies further than this many model standard deviations from the model's mean
# are almost surely on another scale or from another sensor (warned once per processor).
FAR_Z = 3.0


def same_band(a: str, b: str) -> bool:
    """Whether two band names are one band: equal up to case, or one of the RGB aliases."""
    a, b = a.strip().lower(), b.strip().lower()
    if a == b:
        return True
    return any(a in group and b in group for group in RGB_ALIASES.values())


def table_lookup(names: Sequence[str], sensor: str | None):
    """Wavelengths (um), the finest GSD (m) and the bandwidths (um; ``None`` unless every band
    has one) of ``names`` from geofm_hf's sensor tables.

    ``(None, None, None)`` where the package is absent (remote code) or the sensor is unknown;
    the caller then needs ``wavelengths_um=`` / ``gsd=`` / ``bandwidths_um=``.
    """
    try:
        from geofm_hf import bands as tables
    except ImportError:
        return None, None, None
    try:
        wavelengths = tables.band_wavelengths(list(names), sensor)
        gsds = tables.band_gsd(list(names), sensor)
        widths = tables.band_bandwidths(list(names), sensor)
    except ValueError:
        if sensor is not None:
            raise
        return None, None, None
    known = [g for g in (gsds or []) if g]
    if widths is not None and any(w is None for w in widths):
        widths = None
    return wavelengths, (min(known) if known else None), widths


def check_names_mean_the_models_bands(
    matched: list[int | None],
    names: list[str],
    sensor: str | None,
    model_bands: list[str],
    model_wavelengths: list[float] | None,
) -> None:
    """Bands matched by name must be the model's bands, not another sensor's band of the
    same name (Landsat 8 ``B4`` is red, Landsat 7's NIR). With the package installed, its
    one rule decides (``geofm_hf.bands``): the input's sensor (``sensor=``, or the one its
    band names identify together, as ``B02 .. B12`` do) gives each input band a wavelength
    that must be the model band's; a bare name no sensor pins down must mean one wavelength.
    Remote code without the package keeps matching by name."""
    try:
        from geofm_hf import bands as tables
    except ImportError:
        return
    if model_wavelengths is None:
        return
    try:
        known = tables.BandSet.of(names, sensor=sensor).wavelengths_um
    except ValueError:  # names outside the tables (aliases, custom bands): checked one by one
        known = None
    for b, i in enumerate(matched):
        if i is None:
            continue
        model_um = model_wavelengths[b]
        if known is not None:
            if abs(known[i] - model_um) > 0.05:
                raise ValueError(
                    f"Input band {names[i]!r}{f' of {sensor}' if sensor else ''} is at "
                    f"{known[i]} um, but the model's {model_bands[b]!r} is at {model_um} "
                    "um: the same name, another band. Pass the input's bands under the "
                    "model's names for the same wavelengths, or use a wavelength model."
                )
            continue
        problem = tables.bare_name_problem(names[i], model_um)
        if problem is not None:
            raise ValueError(
                f"Input band {names[i]!r} is matched to the model's by name alone, but {problem}: "
                "pass sensor=... (or wavelengths_um=...) so that bands are compared by "
                "wavelength."
            )


def order_bands(
    pixels: torch.Tensor,
    names: list[str] | None,
    wavelengths: Sequence[float] | None,
    sensor: str | None,
    model_bands: list[str] | None,
    model_wavelengths: list[float] | None,
    num_channels: int | None,
) -> torch.Tensor:
    """``(B, C, H, W)`` input bands -> the model's bands, in its order.

    Named inputs are matched to ``model_bands`` by wavelength when both sides know theirs,
    else by name; unnamed inputs must already be in the model's order. Without
    ``model_bands`` (a wavelength model) only the band count, when known, is checked.
    """
    channels = pixels.shape[1]
    if wavelengths is not None and len(wavelengths) != channels:
        raise ValueError(
            f"Got {len(wavelengths)} wavelengths for an input with {channels} channels."
        )
    if names is not None and len(names) != channels:
        raise ValueError(
            f"Got {len(names)} band names for an input with {channels} channels: {names}."
        )
    if model_bands is None:
        if num_channels is not None and channels != num_channels:
            raise ValueError(f"Expected {num_channels} bands, found {channels}.")
        return pixels
    if names is None:
        if channels != len(model_bands):
            raise ValueError(
                f"Expected {len(model_bands)} bands ({', '.join(model_bands)}), found "
                f"{channels}. Pass band_names=[...] to select and reorder bands by name."
            )
        return pixels  # unnamed input: taken to be in the model's order already
    if wavelengths is None and model_wavelengths is not None:
        # Generic colour names (PIL input, RGB datasets) have a known wavelength.
        known = [COLOUR_WAVELENGTHS.get(n.strip().lower()) for n in names]
        if all(known):
            wavelengths = [k[0] for k in known]
    matched = []
    for b, band in enumerate(model_bands):
        if wavelengths is not None and model_wavelengths is not None:
            # Across sensors a band number means nothing (Landsat 7 B4 is NIR, Landsat 8 B4
            # red): nearest centre wavelength, within 0.05 um, decides.
            target = model_wavelengths[b]
            dist = [abs(w - target) for w in wavelengths]
            best = min(range(channels), key=dist.__getitem__)
            matched.append(best if dist[best] <= 0.05 else None)
            continue
        # Exact names first; Sentinel-2 RGB aliases (red = B04) only when no exact match.
        hits = [i for i, n in enumerate(names) if n == band]
        if not hits:
            hits = [i for i, n in enumerate(names) if same_band(n, band)]
        matched.append(hits[0] if hits else None)
    if wavelengths is None:
        check_names_mean_the_models_bands(matched, names, sensor, model_bands, model_wavelengths)
    missing = [b for b, i in zip(model_bands, matched) if i is None]
    if missing:
        how = " at the same wavelength" if wavelengths is not None else ""
        raise ValueError(
            f"Missing bands {missing}: the model expects {model_bands}, the input has "
            f"{names}{how}. Missing bands are never zero-filled; to run on fewer bands, "
            "restrict the model and this processor together with "
            "geofm_hf.select_input_bands(model, bands, processor=processor)."
        )
    if len(set(matched)) != len(matched):
        raise ValueError(
            f"Input bands {names} match the model's bands {model_bands} ambiguously "
            f"({matched}); pass band_names/wavelengths_um that tell them apart."
        )
    return pixels.index_select(1, torch.tensor(matched))


def far_from_statistics(
    pixels: torch.Tensor,
    invalid: torch.Tensor,
    image_mean: list[float],
    image_std: list[float],
    band_names: list[str] | None,
) -> str | None:
    """The warning for ``pixels`` (raw ``(B, C, H, W)``, ``invalid`` pixels left out) when a
    band's mean is > 3 model standard deviations from the model's mean in a way natural
    variation does not explain: a factor of 5 or more, an 8-bit or 0-1 range, the Sentinel-2
    +1000 offset in every band, or bands off in opposite directions. ``None`` otherwise."""
    valid = (~invalid).float()
    count = valid.sum(dim=(0, 2, 3))
    if not bool((count > 0).all()):
        return None
    means = (pixels * valid).sum(dim=(0, 2, 3)) / count
    model_mean = torch.tensor(image_mean)
    model_std = torch.tensor(image_std)
    z = (means - model_mean) / model_std
    far = [int(i) for i in torch.nonzero(z.abs() > FAR_Z).flatten()]
    if not far:
        return None
    peak = float(pixels.max())
    ratios = [
        float(means[i]) / float(model_mean[i]) if float(model_mean[i]) else 1.0
        for i in range(len(z))
    ]
    offset = (means - model_mean - 1000.0).abs() < 2 * model_std
    # One band far off one way while another is off the other way: what a swapped pair
    # looks like (a bright or dark scene moves every band the same way).
    opposite = bool(
        ((z > FAR_Z).any() and (z < -0.5).any()) or ((z < -FAR_Z).any() and (z > 0.5).any())
    )
    scaled = [i for i in far if ratios[i] > 5 or 0 < ratios[i] < 0.2]
    small_range = (peak <= 255.0 and bool((model_mean > 255.0).any())) or (
        peak <= 1.5 and bool((model_mean > 1.5).any())
    )
    if not (scaled or opposite or small_range or bool(offset.all())):
        # Every far band off the same way by less than a factor 5: a bright (cloud, snow)
        # or dark (water, shadow) scene of the right kind, not a contract error.
        return None
    bands = band_names or [f"channel {i}" for i in range(len(z))]
    lines = []
    for i in far:
        ratio = ratios[i]
        if peak <= 255.0 and float(model_mean[i]) > 255.0:
            cause = "8-bit input (uint8 0-255) against statistics of 16-bit digital numbers"
        elif peak <= 1.5 and float(model_mean[i]) > 1.5:
            cause = "reflectance in 0-1 against statistics of scaled integers (x10000)"
        elif bool(offset.all()):
            cause = "the Sentinel-2 baseline 04.00 offset (+1000) not removed"
        elif ratio > 5 or 0 < ratio < 0.2:
            cause = f"another scaling (input/model mean = {ratio:.3g})"
        else:
            cause = (
                "bands off in opposite directions: a mislabelled or reordered band, another "
                "sensor, or a surface unlike the pretraining data"
            )
        lines.append(
            f"band {bands[i]}: input mean {float(means[i]):.4g} is {float(z[i]):+.1f} model "
            f"std from the model's mean {float(model_mean[i]):.4g}; likely cause: {cause}"
        )
    return (
        "Inputs far outside the model's statistics (|mean z| > 3), normalised anyway: "
        + "; ".join(lines)
        + ". Check the sensor, the scaling and the band order of the input."
    )
