"""Per-pixel class masks for segmentation shards (a class raster or rasterised polygons), and
continuous per-pixel targets for regression shards (a raster, :class:`TargetSource`).

A :class:`MaskSource` is opened once per scene on the scene's target grid and read one strip at
a time alongside the imagery, so masks never need the whole scene in memory. Pixels without a
class (outside every polygon, the raster's nodata, outside the label raster) hold
:data:`IGNORE_INDEX`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from affine import Affine

from .._errors import BadInputError, InputNotFoundError

__all__ = ["IGNORE_INDEX", "MIN_LABEL_OVERLAP", "TARGET_FIELD_NAME", "MaskSource", "TargetSource"]

IGNORE_INDEX = 255
# A scene whose area the labels' footprint covers less than this fraction of is refused: its
# masks would be (almost) all IGNORE_INDEX, a dataset that trains nothing. Labels on another CRS
# are compared after reprojecting their bounds.
MIN_LABEL_OVERLAP = 0.01


class MaskSource:
    """Class masks from ``raster`` (values are class indices, reprojected nearest-neighbour) or
    from ``vector`` polygons whose ``field`` names the class (sorted distinct values = classes)."""

    def __init__(self, raster: str | os.PathLike | None = None,
                 vector: str | os.PathLike | None = None, field: str | None = None,
                 label_names: list[str] | None = None) -> None:  # fmt: skip
        if (raster is None) == (vector is None):
            raise BadInputError("bad_labels", "give exactly one of a label raster (--labels) or a label vector "
                             "file (--labels-vector)")  # fmt: skip
        self.raster = str(raster) if raster is not None else None
        self.vector = str(vector) if vector is not None else None
        self.max_class = -1
        if self.vector is not None:
            if not field:
                raise BadInputError("bad_labels", "--labels-vector needs --label-field (the attribute naming the "
                                 "class of each polygon)")  # fmt: skip
            import pyogrio

            if not os.path.exists(self.vector):
                raise InputNotFoundError(
                    "missing_labels", f"label vector file {self.vector} does not exist"
                )
            try:
                meta, _, geometry, values = pyogrio.raw.read(self.vector, columns=[field])
            except Exception as err:  # pyogrio's DataSourceError and friends
                raise BadInputError(
                    "unreadable_labels",
                    f"label vector file {self.vector} (--labels-vector) is not a vector file "
                    f"GDAL can read ({err}); expected GeoPackage, GeoJSON, shapefile ...",
                ) from None
            if field not in list(meta["fields"]):
                raise BadInputError("bad_labels", f"{self.vector} has no field {field!r}: found "
                                 f"{list(meta['fields'])}")  # fmt: skip
            classes = [str(v) for v in values[0]]
            self.label_names = list(label_names) if label_names else sorted(set(classes))
            unknown = sorted(set(classes) - set(self.label_names))
            if unknown:
                raise BadInputError(
                    "bad_labels", f"{self.vector}: classes {unknown} are not in label_names"
                )
            if len(self.label_names) >= IGNORE_INDEX:
                raise BadInputError(
                    "bad_labels", f"at most {IGNORE_INDEX} classes: found {len(self.label_names)}"
                )
            import shapely

            self._crs = meta["crs"]
            self._shapes = [
                (shapely.from_wkb(g).__geo_interface__, self.label_names.index(c))
                for g, c in zip(geometry, classes)
                if g is not None
            ]
        else:
            if not os.path.exists(self.raster):
                raise InputNotFoundError(
                    "missing_labels", f"label raster {self.raster} does not exist"
                )
            with _open_label_raster(self.raster) as src:  # refused now, before any scene
                self._raster_footprint = src.crs, tuple(src.bounds)
            self.label_names = list(label_names) if label_names else None

    def open_scene(self, crs, transform: Affine, width: int, height: int) -> _SceneMask:
        """The scene's masks, read strip by strip; refuses a scene the labels barely cover."""
        self._check_overlap(crs, transform, width, height)
        return _SceneMask(self, crs, transform, width, height)

    def _footprint(self):
        """``(crs, (left, bottom, right, top))`` of the labels."""
        if self.raster is not None:
            return self._raster_footprint
        import shapely

        if not self._shapes:
            return None, None
        return self._crs, tuple(shapely.total_bounds([shapely.geometry.shape(g)
                                                      for g, _ in self._shapes]))  # fmt: skip

    def _check_overlap(self, crs, transform: Affine, width: int, height: int) -> None:
        from rasterio.crs import CRS
        from rasterio.warp import transform_bounds

        left, top = transform.c, transform.f
        right, bottom = left + width * transform.a, top + height * transform.e
        label_crs, box = self._footprint()
        what = f"labels {self.raster or self.vector}"
        if box is None:
            raise BadInputError("labels_no_overlap", f"{what} hold no polygon")
        if label_crs is not None:
            try:
                box = transform_bounds(CRS.from_user_input(label_crs), crs, *box, densify_pts=21)
            except Exception as err:  # bounds that do not exist in the scene's CRS
                raise BadInputError("labels_no_overlap", f"{what} cannot be placed on the "
                                    f"scene's CRS {crs}: {err}") from None  # fmt: skip
        ix = max(0.0, min(right, box[2]) - max(left, box[0]))
        iy = max(0.0, min(top, box[3]) - max(bottom, box[1]))
        fraction = ix * iy / max((right - left) * (top - bottom), 1e-300)
        if fraction < MIN_LABEL_OVERLAP:
            raise BadInputError(
                "labels_no_overlap",
                f"{what} cover {fraction:.2%} of the scene (bounds {box} vs the scene's "
                f"{(left, bottom, right, top)} in {crs}); at least {MIN_LABEL_OVERLAP:.0%} "
                "(MIN_LABEL_OVERLAP) is needed, or every mask is unlabelled. Check that the "
                "labels are for these scenes and declare the right CRS",
            )

    def names(self) -> list[str]:
        """Class names: given, from the vector field, or ``"0" .. str(max class seen)``."""
        if self.label_names is not None:
            return self.label_names
        return [str(i) for i in range(self.max_class + 1)]


def _open_label_raster(path: str):
    """The label raster, open; a file GDAL cannot read or one with no CRS is refused naming it."""
    import rasterio

    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as err:
        raise BadInputError(
            "unreadable_labels",
            f"label raster {path} (--labels) is not a raster GDAL can read ({err}); expected a "
            "GeoTIFF of class values (or pass polygons with --labels-vector)",
        ) from None
    if src.crs is None:
        src.close()
        raise BadInputError(
            "bad_labels", f"label raster {path} has no CRS; expected a georeferenced class raster"
        )
    return src


class _SceneMask:
    def __init__(self, source: MaskSource, crs, transform, width, height):
        self.source, self.transform, self.width = source, transform, width
        self._vrt = self._src = None
        self._shapes: list[tuple[Any, int]] = []
        if source.raster is not None:
            from rasterio.enums import Resampling
            from rasterio.vrt import WarpedVRT

            self._src = _open_label_raster(source.raster)
            nodata = self._src.nodata
            self._vrt = WarpedVRT(self._src, crs=crs, transform=transform, width=width,
                                  height=height, resampling=Resampling.nearest,
                                  nodata=IGNORE_INDEX if nodata is None else nodata)  # fmt: skip
            self._nodata = IGNORE_INDEX if nodata is None else nodata
        else:
            from rasterio.crs import CRS
            from rasterio.warp import transform_geom

            src_crs = CRS.from_user_input(source._crs) if source._crs else crs
            if src_crs != crs:
                self._shapes = [(transform_geom(src_crs, crs, g), v) for g, v in source._shapes]
            else:
                self._shapes = source._shapes

    def read_strip(self, row0: int, rows: int) -> np.ndarray:
        """Class indices ``(rows, width)`` uint8, :data:`IGNORE_INDEX` where unlabelled."""
        if self._vrt is not None:
            from rasterio.windows import Window

            data = self._vrt.read(1, window=Window(0, row0, self.width, rows))
            out = np.full(data.shape, IGNORE_INDEX, dtype=np.uint8)
            valid = data != self._nodata
            values = data[valid]
            if values.size and (values.min() < 0 or values.max() >= IGNORE_INDEX):
                raise BadInputError(
                    "bad_labels",
                    f"label raster {self.source.raster}: class values must be 0..{IGNORE_INDEX - 1}"
                    f" (nodata marks unlabelled pixels): found {values.min()}..{values.max()}",
                )
            if values.size and values.dtype.kind == "f" and (values != np.round(values)).any():
                fractional = np.unique(values[values != np.round(values)])[:5].tolist()
                raise BadInputError(
                    "non_integer_labels",
                    f"label raster {self.source.raster} holds non-integer class values (e.g. "
                    f"{fractional}); class values must be whole numbers 0..{IGNORE_INDEX - 1}. "
                    "Map them to class indices first (e.g. rasterio / gdal_calc.py), they "
                    "are not truncated here",
                )
            out[valid] = values
            if values.size:
                self.source.max_class = max(self.source.max_class, int(values.max()))
            return out
        from rasterio import features

        if not self._shapes:
            return np.full((rows, self.width), IGNORE_INDEX, dtype=np.uint8)
        return features.rasterize(
            self._shapes, out_shape=(rows, self.width), fill=IGNORE_INDEX, dtype="uint8",
            transform=self.transform @ Affine.translation(0, row0),
        )  # fmt: skip

    def close(self) -> None:
        for handle in (self._vrt, self._src):
            if handle is not None:
                handle.close()


TARGET_FIELD_NAME = "target"


class TargetSource:
    """Continuous per-pixel targets (``--targets``) from the first band of ``raster`` on any
    grid, reprojected bilinear onto each scene's grid; stored as float32, NaN where the target is
    unknown (the raster's nodata, NaN, or outside it)."""

    def __init__(self, raster: str | os.PathLike) -> None:
        self.raster = str(raster)
        if not os.path.exists(self.raster):
            raise FileNotFoundError(f"target raster {self.raster} does not exist")

    def open_scene(self, crs, transform: Affine, width: int, height: int) -> _SceneTarget:
        return _SceneTarget(self, crs, transform, width, height)


class _SceneTarget:
    def __init__(self, source: TargetSource, crs, transform, width, height):
        import rasterio
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT

        self.width = width
        self._src = rasterio.open(source.raster)
        if self._src.crs is None:
            self._src.close()
            raise ValueError(f"target raster {source.raster} has no CRS; expected a "
                             "georeferenced raster")  # fmt: skip
        # Bilinear, not nearest: a continuous field is interpolated onto the chip grid; GDAL
        # leaves nodata out of the interpolation and marks outside pixels invalid in read_masks.
        self._vrt = WarpedVRT(self._src, crs=crs, transform=transform, width=width,
                              height=height, resampling=Resampling.bilinear)  # fmt: skip

    def read_strip(self, row0: int, rows: int) -> np.ndarray:
        """Targets ``(rows, width)`` float32, NaN where unknown."""
        from rasterio.windows import Window

        window = Window(0, row0, self.width, rows)
        data = self._vrt.read(1, window=window).astype(np.float32)
        data[self._vrt.read_masks(1, window=window) == 0] = np.nan
        data[~np.isfinite(data)] = np.nan
        return data

    def close(self) -> None:
        self._vrt.close()
        self._src.close()
