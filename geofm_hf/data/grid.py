"""Target grids: the common grid a scene's bands are warped onto, and its pixel size in metres."""

from __future__ import annotations

import numpy as np
from affine import Affine

from .format import BadInputError

__all__ = ["gsd_metres", "target_grid"]

_EARTH_RADIUS_M = 6371008.8  # mean Earth radius (IUGG)


def target_grid(band_srcs, resolution):
    """Intersection of the band extents on a grid of GSD ``resolution`` (finest by default)."""
    crs = band_srcs[0].crs
    for src in band_srcs:
        if src.crs != crs:
            raise BadInputError(
                "crs_mismatch", f"{src.name} is in {src.crs}, other bands of the scene in {crs}"
            )
        if src.crs is None or src.transform.is_identity:
            gcps, _ = src.gcps
            if gcps:
                raise BadInputError(
                    "gcp_only",
                    f"{src.name} is georeferenced by {len(gcps)} ground control points, not a "
                    "geotransform; warp it to a north-up grid first (gdalwarp -t_srs EPSG:...)",
                )
            raise BadInputError("no_georeference", f"{src.name} has no CRS/geotransform")
        if not src.transform.is_rectilinear:
            # Warping a rotated grid north-up fills the corners; those fill pixels would be
            # stored (and counted in the statistics) as real data.
            t = src.transform
            raise BadInputError(
                "rotated_geotransform",
                f"{src.name} has a rotated or skewed geotransform (rotation terms b={t.b:g}, "
                f"d={t.d:g}); warp it to a north-up grid first (gdalwarp -t_srs EPSG:... "
                "-dstnodata ...) so the fill is marked nodata",
            )
    res = (
        float(resolution)
        if resolution
        else min(min(abs(s.res[0]), abs(s.res[1])) for s in band_srcs)
    )
    # min/max: a south-up (positive y step) or east-to-west grid has bottom > top in .bounds;
    # the WarpedVRT below brings it north-up.
    boxes = [(min(b.left, b.right), min(b.bottom, b.top), max(b.left, b.right),
              max(b.bottom, b.top)) for b in (s.bounds for s in band_srcs)]  # fmt: skip
    left = max(b[0] for b in boxes)
    right = min(b[2] for b in boxes)
    bottom = max(b[1] for b in boxes)
    top = min(b[3] for b in boxes)
    width = int(np.floor((right - left) / res + 1e-6))
    height = int(np.floor((top - bottom) / res + 1e-6))
    if width <= 0 or height <= 0:
        raise BadInputError("no_overlap", "the bands of the scene do not overlap")
    return crs, Affine(res, 0.0, left, 0.0, -res, top), width, height, res


def gsd_metres(crs, res: float, top: float, bottom: float) -> float:
    """Pixel size in metres whatever the CRS (degrees: at the grid's central latitude)."""
    if crs.is_geographic:
        lat = np.deg2rad((top + bottom) / 2)
        metres_per_degree = np.pi / 180 * _EARTH_RADIUS_M
        # Geometric mean of the east-west and north-south pixel sizes.
        return float(res * metres_per_degree * np.sqrt(max(np.cos(lat), 1e-12)))
    try:
        factor = crs.linear_units_factor[1]
    except Exception:
        factor = 1.0
    return float(res * factor)
