"""GeoParquet 1.1 helpers: WKB polygons of window bounds and the ``geo`` file metadata."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa

__all__ = ["bbox_polygons_wkb", "geo_metadata", "projjson"]

BBOX_TYPE = pa.struct(
    [("xmin", pa.float64()), ("ymin", pa.float64()), ("xmax", pa.float64()), ("ymax", pa.float64())]
)


def bbox_polygons_wkb(xmin, ymin, xmax, ymax) -> pa.Array:
    """ISO WKB (little-endian) Polygons of axis-aligned boxes, counter-clockwise exterior rings."""
    xmin, ymin, xmax, ymax = (np.asarray(v, dtype="<f8") for v in (xmin, ymin, xmax, ymax))
    n = len(xmin)
    header = np.frombuffer(b"\x01" + np.array([3, 1, 5], dtype="<u4").tobytes(), dtype=np.uint8)
    coords = np.stack([xmin, ymin, xmax, ymin, xmax, ymax, xmin, ymax, xmin, ymin], axis=1).astype(
        "<f8"
    )  # (n, 10)
    body = np.concatenate(
        [np.broadcast_to(header, (n, header.size)), coords.view(np.uint8).reshape(n, 80)], axis=1
    )  # (n, 93)
    size = body.shape[1]
    offsets = np.arange(0, (n + 1) * size, size, dtype=np.int32)
    return pa.BinaryArray.from_buffers(
        pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(body.tobytes())]
    )


def projjson(crs) -> dict[str, Any]:
    """The PROJJSON dict of a rasterio CRS (GeoParquet's required CRS encoding)."""
    return crs.to_dict(projjson=True)


def geo_metadata(crs, bbox: list[float] | None) -> bytes:
    """The ``geo`` key of a GeoParquet 1.1 file with one WKB polygon column and a bbox covering."""
    column: dict[str, Any] = {
        "encoding": "WKB",
        "geometry_types": ["Polygon"],
        "crs": projjson(crs),
        "covering": {
            "bbox": {
                "xmin": ["bbox", "xmin"],
                "ymin": ["bbox", "ymin"],
                "xmax": ["bbox", "xmax"],
                "ymax": ["bbox", "ymax"],
            }
        },
    }
    if bbox is not None:
        column["bbox"] = [float(v) for v in bbox]
    meta = {"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": column}}
    return json.dumps(meta).encode()
