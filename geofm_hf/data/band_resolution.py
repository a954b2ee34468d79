"""Band and sensor resolution: a scene's bands, their names, and the sensor that took them.

A scene's bands are named by their files (per-band files), their band descriptions, or
``band_names``; the sensor comes from ``sensor=`` or from evidence (product ids in file and folder
names, metadata tags, band names only one family spells). :func:`discover_scenes` finds the
scenes and their sensors, :func:`resolve_band_names` selects and orders the bands a caller asks
for by name, :func:`resolve_model_bands` the bands a model takes by (sensor, name) and
wavelength, and :func:`band_fill_values` / :func:`qa_mask_sources` say which pixels are invalid.
The writer and every inference tool go through here, so each door reads a scene the same way.
"""

from __future__ import annotations

import contextlib
import logging
import re
from pathlib import Path

from ..bands import (
    AmbiguousSensorError,
    BandMatchError,
    BandSet,
    canonical_band_name,
    get_sensor_bands,
    identify_sensor,
    match_bands,
    sensor_fill_values,
    unknown_band_names,
)
from .format import BadInputError
from .scenes import Scene, _check_unnamed_singles, find_scenes, open_raster

__all__ = [
    "band_fill_values",
    "discover_scenes",
    "model_band_indices",
    "qa_mask_sources",
    "resolve_band_names",
    "resolve_model_bands",
    "scene_band_set",
]

logger = logging.getLogger(__name__)

# Sentinel-2 processing baseline in a SAFE product name (..._N0400_...) or its metadata XML.
_S2_BASELINE = re.compile(r"_N(\d{2})(\d{2})_")


_S2_BASELINE_XML = re.compile(r"<PROCESSING_BASELINE>\s*(\d{2})\.(\d{2})\s*<")


_S2_OFFSET_XML = re.compile(
    r"<(?:RADIO|BOA)_ADD_OFFSET\s+band_id=\"(\d+)\"\s*>\s*(-?\d+(?:\.\d+)?)\s*<"
)


def _scene_evidence(scene: Scene, srcs) -> list[str]:
    """File names, folder names and metadata tags: what may name the sensor."""
    texts = [scene.scene_id, scene.source]
    for p in scene.paths:
        texts.extend(Path(p).parts[-4:])
    for src in srcs:
        with contextlib.suppress(Exception):
            texts.extend(str(v) for v in src.tags().values())
    return texts


def _s2_offset(scene: Scene) -> dict[int, float] | None:
    """Radiometric offset of a Sentinel-2 product of processing baseline >= 04.00.

    From the product metadata XML (``MTD_MSIL1C.xml`` / ``MTD_MSIL2A.xml``: RADIO_ADD_OFFSET /
    BOA_ADD_OFFSET per band id) when it sits above the band files, else from the baseline in
    the SAFE name (``_N0400_``: -1000 for every band, as ESA specifies). ``None`` before 04.00
    or when nothing states the baseline.
    """
    first = Path(scene.paths[0])
    for parent in list(first.parents)[:6]:
        for xml in sorted(parent.glob("MTD_MSIL*.xml")):
            text = xml.read_text(errors="replace")
            m = _S2_BASELINE_XML.search(text)
            if m and int(m.group(1)) * 100 + int(m.group(2)) >= 400:
                offsets = {int(b): float(v) for b, v in _S2_OFFSET_XML.findall(text)}
                return offsets or dict.fromkeys(range(13), -1000.0)
            if m:
                return None
    for part in first.parts:
        m = _S2_BASELINE.search(part)
        if m and part.startswith("S2"):
            if int(m.group(1)) * 100 + int(m.group(2)) >= 400:
                return dict.fromkeys(range(13), -1000.0)
            return None
    return None


def _refuse_duplicate_names(names: list[str], sensor: str | None, where: str) -> None:
    """One rule for every way a band gets its name (``--band-names``, band descriptions, file
    names, aliases of one sensor band): two bands of one name would leave one of them behind."""
    seen: dict[str, str] = {}
    for name in names:
        key = canonical_band_name(name, sensor) if sensor else name
        if key in seen:
            same = f" ({seen[key]!r} and {name!r} are both {key})" if seen[key] != name else ""
            raise BadInputError(
                "duplicate_band_name",
                f"{where} name band {key!r} twice{same} in {names}; give each band its own "
                "name, in file order, with band_names=[...] (--band-names B2,B3,B4)",
            )
        seen[key] = name


def _available_bands(scene: Scene, src_list, band_names, sensor):
    """(default order, {name: (dataset, band index)}, named) of ``scene``'s bands.

    Per-band files are named by their file (or ``band_files`` key); a multi-band file by its
    band descriptions, else by ``band_names`` (``--band-names``), else ``band_1..band_n``
    placeholders (``named`` False: positions, never evidence of a sensor, never a match).
    """
    if scene.multiband is None:
        available = {}
        for name, src in zip(scene.band_files, src_list):
            if src.count != 1:
                raise BadInputError(
                    "band_count_mismatch",
                    f"{src.name} holds {src.count} bands; a per-band file must hold exactly 1",
                )
            available[name] = (src, 1)
        named = True
    else:
        src = src_list[0]
        descriptions = list(src.descriptions)
        named = all(descriptions) and len(set(descriptions)) == len(descriptions)
        if band_names is not None:
            _refuse_duplicate_names(list(band_names), None, "band_names (--band-names)")
        elif all(descriptions):
            _refuse_duplicate_names(descriptions, None, f"the band descriptions of {src.name}")
        if band_names is not None:
            if len(band_names) != src.count:
                raise BadInputError(
                    "band_count_mismatch",
                    f"band_names (--band-names) gives {len(band_names)} names {list(band_names)} "
                    f"but {src.name} holds {src.count} bands; expected one name per band",
                )
            if named and descriptions != list(band_names):
                raise BadInputError(
                    "band_name_mismatch",
                    f"{src.name} names its bands {descriptions}; band_names gives "
                    f"{list(band_names)}. band_names only names unnamed bands: drop it, or "
                    "use bands= (--bands) to select and reorder",
                )
            names, named = list(band_names), True
        elif named:
            names = descriptions
        else:
            names = unknown_band_names(src.count)
        available = {n: (src, i + 1) for i, n in enumerate(names)}
    if sensor is not None and not named:
        raise BadInputError(
            "unnamed_bands",
            f"{scene.multiband} has {len(available)} bands without names (no band descriptions); "
            f"the {sensor} table cannot be applied by position. Name them in file order with "
            "band_names=[...] (--band-names B3,B4,B5)",
        )
    if sensor is None or not named:
        order = list(available) if scene.multiband else sorted(available)
        return order, available, named
    canon = {}
    for key, value in available.items():
        try:
            canon[canonical_band_name(key, sensor)] = value
        except ValueError:
            raise BadInputError(
                "band_name_mismatch",
                f"scene {scene.source}: band {key!r} is not a {sensor} band; expected one of "
                f"{[b.name for b in get_sensor_bands(sensor)]}",
            ) from None
    _refuse_duplicate_names(list(available), sensor, f"scene {scene.source}")
    if scene.multiband:
        order = list(canon)
    else:
        order = [b.name for b in get_sensor_bands(sensor) if b.name in canon]
    return order, canon, named


def resolve_band_names(scene: Scene, src_list, bands, sensor, band_names=None):
    """Return (band_name, dataset, band_index) in output order for ``scene``.

    ``bands`` only selects and reorders by name (or alias): the pixels follow the names.
    """
    order, available, named = _available_bands(scene, src_list, band_names, sensor)
    if bands is None:
        return [(n, *available[n]) for n in order]
    wanted = []
    for name in bands:
        key = name
        if key not in available and sensor is not None:
            try:
                key = canonical_band_name(name, sensor)
            except ValueError:
                key = name
        if key not in available:
            unnamed = scene.multiband is not None and not named
            raise BadInputError(
                "band_name_mismatch",
                f"scene {scene.source} has no band {name!r}; it has {list(available)}"
                + (
                    " (placeholders: the file names no bands; bands= only selects, name them "
                    "with band_names=[...] / --band-names)"
                    if unnamed
                    else ""
                )
                + (
                    ""
                    if sensor or unnamed
                    else " (no sensor identified: aliases like 'red' need one)"
                ),
            )
        wanted.append((key, *available[key]))
    if len({w[0] for w in wanted}) != len(wanted):
        raise ValueError(f"bands {list(bands)} name a band twice ({[w[0] for w in wanted]})")
    return wanted


def discover_scenes(inputs, band_files=None, filename_pattern=None, band_names=None, bands=None,
                    sensor=None, on_error="raise"):  # fmt: skip
    """The scenes of ``inputs`` and ``band_files`` and the sensor of each, as every door reads
    them: files grouped into scenes (``filename_pattern``, ``<scene>_B<n>``, ``band_files``),
    unnamed one-band files refused, each scene's sensor from ``sensor`` or evidence, and the
    band selection ``bands`` checked. Reads headers only. Returns
    ``(scenes, {scene.source: sensor or None})``."""
    scenes = find_scenes(inputs, band_files, filename_pattern)
    _check_unnamed_singles(scenes, band_names)
    return scenes, _identify_scene_sensors(scenes, sensor, band_names, bands, on_error)


def _identify_scene_sensors(
    scenes: list[Scene], sensor, band_names, bands, on_error: str
) -> dict[str, str | None]:
    """Sensor of every scene (``sensor`` or evidence) and a check of the band selection.

    Runs before the output folder is touched, so an ambiguous sensor, or (under
    ``on_error="raise"``) a band selection a scene cannot satisfy, writes nothing.
    """
    out: dict[str, str | None] = {}
    for scene in scenes:
        srcs = []
        try:
            for path in scene.paths:
                srcs.append(open_raster(path))
            if sensor is not None:
                out[scene.source] = sensor
            else:
                _, available, named = _available_bands(scene, srcs, band_names, None)
                names = list(available) if named else []
                if not named:
                    logger.warning(
                        "%s names none of its %d bands (no band descriptions, no --band-names): "
                        "they are %s, with no sensor and no wavelengths, and match no model or "
                        "dataset band. Name them in file order with --band-names (band_names=)",
                        scene.multiband, len(available), ", ".join(available),
                    )  # fmt: skip
                try:
                    out[scene.source] = identify_sensor(names, _scene_evidence(scene, []))
                except AmbiguousSensorError:
                    out[scene.source] = identify_sensor(names, _scene_evidence(scene, srcs))
            resolve_band_names(scene, srcs, bands, out[scene.source], band_names)
        except BadInputError:
            out.setdefault(scene.source, None)
            if on_error == "raise":
                raise
        finally:
            for src in srcs:
                src.close()
    return out


def scene_band_set(scene: Scene, names, sensor: str | None, named: bool = True) -> BandSet:
    """The bands ``names`` of ``scene`` as a :class:`~geofm_hf.bands.BandSet`: identified by
    (sensor, name), with the sensor table's wavelengths when the sensor is known."""
    try:
        return BandSet.of(names, sensor, named=named, label=f"scene {scene.source}",
                          hint="pass sensor= (--sensor)")  # fmt: skip
    except BandMatchError as err:
        raise BadInputError("band_name_mismatch", str(err)) from None


def resolve_model_bands(scene: Scene, src_list, model: BandSet, sensor, band_names=None):
    """Return (scene band name, dataset, band index) for each band of ``model``, in its order.

    The one matching rule (:func:`geofm_hf.bands.match_bands`): by wavelength within bandwidth
    when both sides know their sensor or wavelengths, by a name only when it means one
    wavelength; extra scene bands are left out; a missing model band is never zero-filled.
    """
    _, available, named = _available_bands(scene, src_list, band_names, sensor)
    have = scene_band_set(scene, list(available), sensor, named)
    hits = model_band_indices(model, have, f"scene {scene.source}")
    names = list(available)
    return [(names[i], *available[names[i]]) for i in hits]


def model_band_indices(model: BandSet, have: BandSet, where: str) -> list[int]:
    """The position in ``have`` (an input's bands: a scene's, a dataset's) of each band of
    ``model``, by the one matching rule (:func:`geofm_hf.bands.match_bands`); a model band
    ``where`` (``scene X``, ``dataset X``) lacks is an error, never zero-filled."""
    try:
        hits = match_bands(model, have)
    except BandMatchError as err:
        raise BadInputError("band_mismatch", str(err)) from None
    missing = [n for n, i in zip(model.names, hits) if i is None]
    if missing:
        raise BadInputError(
            "band_mismatch",
            f"{where} has no band for {model.label}'s {missing}: the model takes "
            f"{model.describe()}, {where} has {have.describe()}. Bands are matched by sensor "
            "and wavelength, never by bare name, and missing bands are never zero-filled: give "
            "the input's sensor (--sensor) if it is wrong, or use a model trained on its bands",
        )
    return [int(i) for i in hits]


def band_fill_values(src, bidx: int, sensor: str | None, nodata: float | None) -> list[float]:
    """The values that mark band ``bidx`` of ``src`` invalid: its declared nodata, ``nodata``
    (``--nodata``) and the sensor's fill values (NaN and +-inf are always invalid)."""
    import math

    values = {float(v) for v in (src.nodatavals[bidx - 1], nodata, *sensor_fill_values(sensor))
              if v is not None and not math.isnan(v)}  # fmt: skip
    return sorted(values)


def qa_mask_sources(scene: Scene, sensor: str | None) -> list[tuple[str, str]]:
    """``(kind, path)`` of ``scene``'s cloud/QA masks, ``kind`` a key of
    :data:`geofm_hf.bands.QA_MASKS` (an HLS Fmask is bit-coded, unlike CFmask)."""
    out = []
    for kind, path in sorted(scene.masks.items()):
        if kind == "fmask" and sensor and sensor.startswith("hls"):
            kind = "hls_fmask"
        out.append((kind, path))
    return out
