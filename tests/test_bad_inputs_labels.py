"""Labels that do not fit the imagery (issue 25, class 1), one table row per case: a label raster
or polygons elsewhere (another place, another CRS read as if it were the scene's, all nodata),
non-integer class values or a label file that is no raster/vector are refused naming the file;
labels that fit give a dataset that counts its labelled pixels per class. Before, these wrote a
dataset whose masks were all the ignore index, or truncated 1.5 to class 1, without a word."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from affine import Affine

from geofm_hf.data import write_shards
from geofm_hf.data.format import BadInputError

ORIGIN = (500_000.0, 4_600_000.0)  # UTM 33N metres
SIZE = 64


def _scene(path):
    with rasterio.open(path, "w", driver="GTiff", width=SIZE, height=SIZE, count=3,
                       dtype="uint16", crs="EPSG:32633",
                       transform=Affine(10, 0, ORIGIN[0], 0, -10, ORIGIN[1])) as dst:  # fmt: skip
        dst.write(np.random.default_rng(0).integers(1, 3000, (3, SIZE, SIZE), dtype=np.uint16))
        for i, name in enumerate(["red", "green", "blue"], 1):
            dst.set_band_description(i, name)
    return path


def _labels(path, values, *, dx=0.0, crs="EPSG:32633", nodata=None, dtype=None, origin=ORIGIN):
    values = np.asarray(values)
    dtype = dtype or values.dtype.name
    with rasterio.open(path, "w", driver="GTiff", width=values.shape[1], height=values.shape[0],
                       count=1, dtype=dtype, crs=crs, nodata=nodata,
                       transform=Affine(10, 0, origin[0] + dx, 0, -10, origin[1])) as dst:  # fmt: skip
        dst.write(values.astype(dtype), 1)
    return path


def _classes(dtype="uint8"):
    return (np.indices((SIZE, SIZE)).sum(0) % 3).astype(dtype)


def _vector(path, polygons_xy, crs="EPSG:32633"):
    features = [{"type": "Feature", "properties": {"kind": name},
                 "geometry": {"type": "Polygon", "coordinates": [ring]}}
                for name, ring in polygons_xy]  # fmt: skip
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features,
                                "crs": {"type": "name", "properties": {"name": crs}}}))  # fmt: skip
    return path


def _box(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


# name -> (make labels(tmp) -> write_shards kwargs, words the error must hold)
REFUSED = {
    "raster_far_away": (
        lambda t: {"label_raster": _labels(t / "l.tif", _classes(), dx=1e6)},
        ["cover 0.00%", "MIN_LABEL_OVERLAP", "l.tif"],
    ),
    "raster_other_crs_same_numbers": (  # the scene's coordinates, declared UTM zone 34
        lambda t: {"label_raster": _labels(t / "l.tif", _classes(), crs="EPSG:32634")},
        ["cover 0.00%", "l.tif", "CRS"],
    ),
    "raster_overlaps_a_sliver": (  # half a column of 64 overlaps: 0.78 % of the scene
        lambda t: {"label_raster": _labels(t / "l.tif", _classes()[:, :1], dx=-10 * 0.5)},
        ["cover 0.78%", "MIN_LABEL_OVERLAP"],
    ),
    "raster_all_nodata": (
        lambda t: {
            "label_raster": _labels(t / "l.tif", np.full((SIZE, SIZE), 9), nodata=9, dtype="uint8")
        },
        ["no kept chip has a labelled pixel", "l.tif"],
    ),
    "raster_float_fractional": (
        lambda t: {"label_raster": _labels(t / "l.tif", _classes("float32") + 0.5)},
        ["non-integer class values", "0.5", "not truncated"],
    ),
    "raster_is_text": (
        lambda t: {"label_raster": (t / "l.tif").write_text("class,x\n") and t / "l.tif"},
        ["l.tif", "not a raster GDAL can read"],
    ),
    "raster_is_a_folder": (
        lambda t: {"label_raster": t},
        ["not a raster GDAL can read"],
    ),
    "vector_far_away": (
        lambda t: {
            "label_vector": _vector(t / "v.geojson", [("a", _box(0, 0, 10, 10))]),
            "label_field": "kind",
        },
        ["cover 0.00%", "v.geojson"],
    ),
    "vector_is_text": (
        lambda t: {
            "label_vector": (t / "v.gpkg").write_text("nope") and t / "v.gpkg",
            "label_field": "kind",
        },
        ["v.gpkg", "not a vector file"],
    ),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_labels_that_do_not_fit_are_refused_naming_the_file(name, tmp_path):
    make, words = REFUSED[name]
    scene = _scene(tmp_path / "scene.tif")
    with pytest.raises(BadInputError) as err:
        write_shards(scene, tmp_path / "out", chip_size=32, sensor="rgb", **make(tmp_path))
    for word in words:
        assert word in str(err.value), (word, str(err.value))
    assert not (tmp_path / "out").exists()


# name -> (labels array, kwargs, expected mask_class_pixels)
ACCEPTED = {
    "uint8_classes": (_classes(), {}, {"0": 1366, "1": 1365, "2": 1365, "unlabelled": 0}),
    "float_whole_numbers": (_classes("float32"), {},
                            {"0": 1366, "1": 1365, "2": 1365, "unlabelled": 0}),
    "nodata_half": (np.where(np.arange(SIZE)[None, :] < 32, 1, 7).repeat(SIZE, 0), {"nodata": 7,
                    "dtype": "uint8"}, {"0": 0, "1": 2048, "unlabelled": 2048}),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_labels_that_fit_count_their_pixels_per_class(name, tmp_path):
    values, kwargs, counts = ACCEPTED[name]
    scene = _scene(tmp_path / "scene.tif")
    labels = _labels(tmp_path / "l.tif", values, **kwargs)
    write_shards(scene, tmp_path / "out", chip_size=32, sensor="rgb", label_raster=labels)
    info = json.loads((tmp_path / "out" / "geofm_dataset.json").read_text())
    assert info["mask_class_pixels"] == counts


def test_segmentation_recipe_says_the_masks_are_unlabelled(tmp_path):
    """A dataset written before this check (masks all 255) is refused with the real reason, not
    "its shards hold no masks"."""
    from geofm_hf.segmentation.data import SegmentationDataError, load_segmentation_split

    scene = _scene(tmp_path / "scene.tif")
    labels = _labels(tmp_path / "l.tif", np.ones((SIZE, SIZE)), dtype="uint8")
    write_shards(scene, tmp_path / "out", chip_size=32, sensor="rgb", label_raster=labels)
    info_path = tmp_path / "out" / "geofm_dataset.json"
    info = json.loads(info_path.read_text())
    info["mask_label_names"] = []  # what the old writer recorded for all-unlabelled masks
    info_path.write_text(json.dumps(info))
    with pytest.raises(SegmentationDataError, match="no labelled pixel") as err:
        load_segmentation_split(tmp_path / "out", "train")
    assert "hold no masks" not in str(err.value)
