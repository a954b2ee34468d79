"""Duplicated band names (issue 25, class 2), one table row per way a band gets its name: given
twice in ``band_names`` (``--band-names``), written twice in a file's band descriptions, or two
spellings (aliases, case) of one sensor band, from names or per-band file keys. Each is refused
naming the band, as ``bands=`` (``--bands``) already was; before, one of the two bands was
dropped (or the descriptions replaced by placeholders) without a word."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine

from geofm_hf.data import write_shards
from geofm_hf.data.format import BadInputError

TRANSFORM = Affine(10, 0, 500_000, 0, -10, 4_600_000)


def _multiband(path, descriptions=None, count=3):
    with rasterio.open(path, "w", driver="GTiff", width=32, height=32, count=count,
                       dtype="uint16", crs="EPSG:32633", transform=TRANSFORM) as dst:  # fmt: skip
        dst.write(np.random.default_rng(0).integers(1, 3000, (count, 32, 32), dtype=np.uint16))
        for i, name in enumerate(descriptions or [], 1):
            dst.set_band_description(i, name)
    return path


def _single(path):
    return _multiband(path, count=1)


# name -> (write_shards inputs and kwargs from tmp_path, words the error must hold)
CASES = {
    "band_names_twice": (
        lambda t: (_multiband(t / "s.tif"), {"band_names": ["B4", "B4", "B3"]}),
        ["band_names (--band-names)", "'B4' twice"],
    ),
    "band_names_twice_with_sensor": (
        lambda t: (_multiband(t / "s.tif"),
                   {"band_names": ["B2", "B3", "B2"], "sensor": "sentinel2-l2a"}),
        ["'B2' twice"],
    ),
    "band_names_alias_of_one_band": (
        lambda t: (_multiband(t / "s.tif"),
                   {"band_names": ["B04", "red", "B02"], "sensor": "sentinel2-l2a"}),
        ["'B04' twice", "'red'"],
    ),
    "band_names_case_of_one_band": (
        lambda t: (_multiband(t / "s.tif"),
                   {"band_names": ["b4", "B4", "B2"], "sensor": "sentinel2-l2a"}),
        ["twice", "'b4' and 'B4'"],
    ),
    "descriptions_twice": (
        lambda t: (_multiband(t / "s.tif", ["red", "red", "blue"]), {}),
        ["band descriptions", "s.tif", "'red' twice"],
    ),
    "descriptions_twice_with_sensor": (
        lambda t: (_multiband(t / "s.tif", ["red", "green", "green"]), {"sensor": "rgb"}),
        ["band descriptions", "'green' twice"],
    ),
    "descriptions_alias_of_one_band": (
        lambda t: (_multiband(t / "s.tif", ["B04", "red", "B03"]), {"sensor": "sentinel2-l2a"}),
        ["'B04' twice"],
    ),
    "band_files_alias_of_one_band": (
        lambda t: ([], {"band_files": {"B04": str(_single(t / "a.tif")),
                                       "red": str(_single(t / "b.tif")),
                                       "B03": str(_single(t / "c.tif"))},
                        "sensor": "sentinel2-l2a"}),
        ["'B04' twice"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_band_named_twice_is_refused(name, tmp_path):
    make, words = CASES[name]
    inputs, kwargs = make(tmp_path)
    with pytest.raises(BadInputError) as err:
        write_shards(inputs, tmp_path / "out", chip_size=16, **kwargs)
    assert err.value.reason == "duplicate_band_name", str(err.value)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_distinct_names_still_write_every_band(tmp_path):
    summary = write_shards(_multiband(tmp_path / "s.tif", ["red", "green", "blue"]),
                           tmp_path / "out", chip_size=16, sensor="rgb")  # fmt: skip
    assert summary.band_names == ["red", "green", "blue"]
