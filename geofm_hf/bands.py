"""Sensor band tables: band names, common aliases, centre wavelengths and ground sample distance.

Pure Python (no torch, no numpy) so the data layer, the image processor and the model card can
all share one source of truth for band order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "SENSORS",
    "Band",
    "band_gsd",
    "band_wavelengths",
    "canonical_band_name",
    "detect_sensor",
    "get_sensor_bands",
    "rgb_band_indices",
]


@dataclass(frozen=True)
class Band:
    """One spectral band of a sensor.

    Attributes:
        name: canonical band name as the provider spells it (``"B8A"``).
        common_name: STAC ``eo:common_name`` alias (``"nir08"``), or ``None``.
        wavelength_um: centre wavelength in micrometres.
        gsd_m: native ground sample distance in metres, or ``None`` when not fixed.
    """

    name: str
    common_name: str | None
    wavelength_um: float | None
    gsd_m: float | None


# Canonical order B01..B08, B8A, B09..B12 (the order of the ESA product and of EuroSAT-MS).
_SENTINEL2_L1C = (
    Band("B01", "coastal", 0.443, 60.0),
    Band("B02", "blue", 0.490, 10.0),
    Band("B03", "green", 0.560, 10.0),
    Band("B04", "red", 0.665, 10.0),
    Band("B05", "rededge1", 0.705, 20.0),
    Band("B06", "rededge2", 0.740, 20.0),
    Band("B07", "rededge3", 0.783, 20.0),
    Band("B08", "nir", 0.842, 10.0),
    Band("B8A", "nir08", 0.865, 20.0),
    Band("B09", "water_vapor", 0.945, 60.0),
    Band("B10", "cirrus", 1.375, 60.0),
    Band("B11", "swir16", 1.610, 20.0),
    Band("B12", "swir22", 2.190, 20.0),
)

_LANDSAT8_OLI = (
    Band("B1", "coastal", 0.443, 30.0),
    Band("B2", "blue", 0.482, 30.0),
    Band("B3", "green", 0.561, 30.0),
    Band("B4", "red", 0.655, 30.0),
    Band("B5", "nir08", 0.865, 30.0),
    Band("B6", "swir16", 1.609, 30.0),
    Band("B7", "swir22", 2.201, 30.0),
    Band("B8", "pan", 0.590, 15.0),
    Band("B9", "cirrus", 1.373, 30.0),
)

# Aerial / Google Earth RGB (MillionAID, UC Merced ...): GSD varies per scene.
_RGB = (
    Band("red", "red", 0.665, None),
    Band("green", "green", 0.560, None),
    Band("blue", "blue", 0.490, None),
)

SENSORS: dict[str, tuple[Band, ...]] = {
    "sentinel2-l1c": _SENTINEL2_L1C,
    "landsat8-oli": _LANDSAT8_OLI,
    "rgb": _RGB,
}

_S2_NAME = re.compile(r"^b0?(\d{1,2})(a?)$", re.IGNORECASE)
_LANDSAT_NAME = re.compile(r"^b0?(\d)$", re.IGNORECASE)


def get_sensor_bands(sensor: str) -> tuple[Band, ...]:
    """Return the band table of ``sensor`` (a key of :data:`SENSORS`)."""
    try:
        return SENSORS[sensor]
    except KeyError:
        raise ValueError(f"unknown sensor {sensor!r}; expected one of {sorted(SENSORS)}") from None


def canonical_band_name(name: str, sensor: str = "sentinel2-l1c") -> str:
    """Map a band name or alias to the sensor's canonical name.

    ``"b2"``, ``"B2"``, ``"B02"`` and ``"blue"`` all give ``"B02"`` for Sentinel-2;
    ``"8a"`` and ``"nir08"`` give ``"B8A"``. Raises ``ValueError`` for a name the sensor
    does not have.
    """
    bands = get_sensor_bands(sensor)
    key = name.strip()
    for band in bands:
        if key.upper() == band.name.upper() or (
            band.common_name is not None and key.lower() == band.common_name.lower()
        ):
            return band.name
    pattern = _LANDSAT_NAME if sensor.startswith("landsat") else _S2_NAME
    match = pattern.match(key if key.upper().startswith("B") else f"B{key}")
    if match is not None:
        if sensor.startswith("landsat"):
            candidate = f"B{int(match.group(1))}"
        else:
            candidate = f"B{int(match.group(1)):02d}{match.group(2).upper()}"
            if match.group(2):
                candidate = f"B{int(match.group(1))}A"
        if any(b.name == candidate for b in bands):
            return candidate
    raise ValueError(
        f"band {name!r} is not a {sensor} band; expected one of "
        f"{[b.name for b in bands]} or aliases {[b.common_name for b in bands if b.common_name]}"
    )


def detect_sensor(band_names: list[str] | tuple[str, ...]) -> str | None:
    """Return the first sensor of :data:`SENSORS` whose table names every band, else ``None``."""
    for sensor, bands in SENSORS.items():
        names = {b.name for b in bands}
        if band_names and all(n in names for n in band_names):
            return sensor
    return None


def _lookup(band_names, sensor):
    sensor = sensor or detect_sensor(list(band_names))
    if sensor is None:
        return None
    table = {b.name: b for b in get_sensor_bands(sensor)}
    return [table[canonical_band_name(n, sensor)] for n in band_names]


def band_wavelengths(band_names, sensor: str | None = None) -> list[float] | None:
    """Centre wavelengths (um) of ``band_names``, or ``None`` when the sensor is unknown."""
    bands = _lookup(band_names, sensor)
    return None if bands is None else [b.wavelength_um for b in bands]


def band_gsd(band_names, sensor: str | None = None) -> list[float | None] | None:
    """Native GSD (m) of ``band_names``, or ``None`` when the sensor is unknown."""
    bands = _lookup(band_names, sensor)
    return None if bands is None else [b.gsd_m for b in bands]


def _common_name(name: str) -> str | None:
    lowered = name.strip().lower()
    for bands in SENSORS.values():
        for band in bands:
            if band.common_name == lowered:
                return lowered
    for sensor in SENSORS:
        try:
            canonical = canonical_band_name(name, sensor)
        except ValueError:
            continue
        return next(b.common_name for b in SENSORS[sensor] if b.name == canonical)
    return None


def rgb_band_indices(band_names) -> tuple[int, int, int]:
    """Indices of the red, green and blue bands in ``band_names`` (for RGB composites).

    Bands are matched by alias (``"red"``) or by a sensor band name (``"B04"``, ``"B4"``).
    Raises ``ValueError`` naming the missing colour when one is absent.
    """
    common = [_common_name(n) for n in band_names]
    out = []
    for colour in ("red", "green", "blue"):
        if colour not in common:
            raise ValueError(
                f"no {colour} band in {list(band_names)}; expected a band named {colour!r} "
                "or a sensor band with that alias (e.g. Sentinel-2 B04/B03/B02)"
            )
        out.append(common.index(colour))
    return out[0], out[1], out[2]
