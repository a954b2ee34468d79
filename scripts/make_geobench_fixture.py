"""Write the two tiny GEO-Bench tasks of tests/fixtures/geobench/ with geobench 1.0.0's own classes.

Run it in a separate environment (geobench 1.0.0 pins huggingface-hub 0.19.4 and pandas 1.5.3,
which cannot live beside geofm_hf):

    python3.11 -m venv .venv-geobench
    .venv-geobench/bin/pip install geobench==1.0.0 h5py
    .venv-geobench/bin/python scripts/make_geobench_fixture.py tests/fixtures/geobench

Nothing is downloaded: the pixels are seeded random int16 with a per-class offset (so a probe has
something to learn), written through geobench's ``Sample``/``Band``/``write_sample_hdf5``,
``Partition.save`` and ``compute_dataset_statistics``, exactly as its converters
write a task. The pickled ``task_specs.pkl`` is deliberately not written: geofm_hf never reads it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from geobench import dataset as gd

SIDE = 8
SPLITS = {"train": 10, "valid": 1, "test": 4}


def _bands(rng, offset: int, band_infos) -> list:
    return [
        gd.Band(
            data=(rng.normal(1000 + 40 * k + offset, 50, (SIDE, SIDE))).astype(np.int16),
            band_info=info,
            spatial_resolution=10,
        )
        for k, info in enumerate(band_infos)
    ]


def _finish(folder: Path, partition: gd.Partition, samples: list) -> None:
    # Partition "default" is written as default_partition.json itself (as_default would add a
    # symlink to it, which not every checkout keeps).
    partition.save(str(folder), "default")
    # band_stats.json as compute_dataset_statistics writes it (its GeobenchDataset needs the
    # pickled task_specs.pkl, which these fixtures leave out), over every pixel of every split.
    values: dict = {}
    for sample in samples:
        for band in sample.bands:
            values.setdefault(band.band_info.name, []).append(band.data.flatten())
        label = sample.label
        values.setdefault("label", []).append(
            label.data.flatten() if isinstance(label, gd.Band) else np.array([label])
        )
    stats = {k: gd.compute_stats(np.hstack(v)).to_dict() for k, v in values.items()}
    (folder / "band_stats.json").write_text(json.dumps(stats, indent=2))


def classification(folder: Path) -> None:
    """m-eurosat-like: 13 Sentinel-2 bands, 10 classes, 8 x 8 px."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    partition, samples = gd.Partition(), []
    n = 0
    for split, count in SPLITS.items():
        for i in range(count):
            label = i % 10  # every class in train, so every test class can be learnt
            name = f"id_{n:04d}"
            sample = gd.Sample(_bands(rng, 150 * label, gd.sentinel2_13_bands), label, name)
            gd.write_sample_hdf5(sample, str(folder))
            samples.append(sample)
            partition.add(split, name)
            n += 1
    _finish(folder, partition, samples)


def segmentation(folder: Path) -> None:
    """m-cashew-like: the 13 Sentinel-2 bands and a 3-class ``label`` mask, 8 x 8 px."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    label_info = gd.SegmentationClasses("label", spatial_resolution=10, n_classes=3)
    partition, samples = gd.Partition(), []
    n = 0
    for split, count in SPLITS.items():
        for _ in range(max(1, count // 2)):
            mask = np.zeros((SIDE, SIDE), dtype=np.int16)
            mask[:, SIDE // 3 :] = 1
            mask[SIDE // 2 :, 2 * SIDE // 3 :] = 2
            mask = np.rot90(mask, n % 4).copy()
            bands = _bands(rng, 0, gd.sentinel2_13_bands)
            for band in bands:
                band.data = (band.data + 300 * mask).astype(np.int16)
            label = gd.Band(mask, label_info, spatial_resolution=10)
            name = f"id_{n:04d}"
            sample = gd.Sample(bands, label, name)
            gd.write_sample_hdf5(sample, str(folder))
            samples.append(sample)
            partition.add(split, name)
            n += 1
    _finish(folder, partition, samples)


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/geobench")
    classification(root / "m-eurosat-tiny")
    segmentation(root / "m-cashew-tiny")
