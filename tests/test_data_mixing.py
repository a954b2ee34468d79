"""Several datasets (sensors) in one pretraining stream: one band set per batch, exact resume."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from rasterio.io import MemoryFile
from rasterio.transform import from_origin

from geofm_hf import GeoViTMAEConfig, GeoViTMAEForPreTraining
from geofm_hf.data import make_pretrain_dataloader, read_dataset_info, sample_dataset_path
from geofm_hf.data.mixing import MixedPretrainLoader

SAMPLE = sample_dataset_path()
RGBN = [0.665, 0.56, 0.49, 0.842]


def rgbn_dataset(path, count=24):
    """A 4-band 64 px GeoTIFF-bytes dataset in two shards (an RGB+NIR sensor)."""
    rng = np.random.default_rng(0)
    (path / "data").mkdir(parents=True)
    images = []
    for _ in range(count):
        with MemoryFile() as mem:
            with mem.open(driver="GTiff", width=64, height=64, count=4, dtype="uint16",
                          crs="EPSG:32633", transform=from_origin(0, 640, 10, 10)) as dst:  # fmt: skip
                dst.write(rng.integers(0, 3000, (4, 64, 64), dtype=np.uint16))
            images.append(mem.read())
    half = count // 2
    for shard in range(2):
        part = images[shard * half : (shard + 1) * half]
        table = pa.table({"image": part, "chip_id": [f"n{shard}-{i}" for i in range(half)]})
        pq.write_table(table, path / "data" / f"train-0000{shard}-of-00002.parquet")
    return path


def mixture(tmp_path, weights=None, seed=0):
    s2 = make_pretrain_dataloader(SAMPLE, batch_size=4, seed=1)
    rgbn = make_pretrain_dataloader(
        tmp_path / "rgbn", batch_size=4, seed=2, mean=[1500.0] * 4, std=[900.0] * 4
    )
    wavelengths = {"s2": read_dataset_info(SAMPLE).wavelengths_um, "rgbn": RGBN}
    return MixedPretrainLoader({"s2": s2, "rgbn": rgbn}, wavelengths, weights, seed=seed)


@pytest.fixture
def data(tmp_path):
    rgbn_dataset(tmp_path / "rgbn")
    return tmp_path


def test_batches_are_one_band_set_each_and_weighted_by_size(data):
    mixed = mixture(data)
    sizes = {n: loader.stats["num_samples"] for n, loader in mixed.loaders.items()}
    draws = [mixed.dataset_at(k) for k in range(4000)]
    share = draws.count("rgbn") / len(draws)
    assert share == pytest.approx(sizes["rgbn"] / sum(sizes.values()), abs=0.03)
    it = iter(mixed)
    for _ in range(8):
        batch = next(it)
        channels = batch["pixel_values"].shape[1]
        assert channels == len(batch["wavelengths"]) == (13 if batch["dataset"] == "s2" else 4)
    only = mixture(data, weights={"s2": 0.0, "rgbn": 1.0})
    assert {only.dataset_at(k) for k in range(50)} == {"rgbn"}


def test_bandwidths_come_with_each_batch_when_asked_for(data):
    mixed = mixture(data)
    widths = {"s2": read_dataset_info(SAMPLE).band_widths(), "rgbn": [0.03, 0.035, 0.065, 0.115]}
    asked = MixedPretrainLoader(mixed.loaders, {n: mixed.wavelengths[n].tolist() for n in mixed.names},
                                seed=0, bandwidths=widths)  # fmt: skip
    it = iter(asked)
    for _ in range(6):
        batch = next(it)
        assert batch["bandwidths"].tolist() == pytest.approx(widths[batch["dataset"]])
    assert "bandwidths" not in next(iter(mixture(data)))
    with pytest.raises(ValueError, match=r"Datasets \['rgbn'\] have no bandwidths"):
        MixedPretrainLoader(mixed.loaders, {n: [0.5] for n in mixed.names},
                            bandwidths={"s2": widths["s2"], "rgbn": None})  # fmt: skip


def test_resume_gives_exactly_the_uninterrupted_batches(data):
    full = mixture(data, seed=5)
    it = iter(full)
    reference = [next(it) for _ in range(10)]
    assert {b["dataset"] for b in reference} == {"s2", "rgbn"}
    first = mixture(data, seed=5)
    it = iter(first)
    for _ in range(4):
        next(it)
    state = first.state_dict()
    resumed = mixture(data, seed=5)
    resumed.load_state_dict(state)
    it = iter(resumed)
    for expected in reference[4:]:
        got = next(it)
        assert got["dataset"] == expected["dataset"]
        assert torch.equal(got["pixel_values"], expected["pixel_values"])
    with pytest.raises(ValueError, match="saved mixture differs"):
        mixture(data, seed=6).load_state_dict(state)


def test_a_wavelength_model_trains_on_the_mixture(data):
    config = GeoViTMAEConfig.from_preset(
        "tiny", patch_embedding="wavelength", wavelength_embed_dim=32
    )
    model = GeoViTMAEForPreTraining(config)
    it = iter(mixture(data, seed=3))
    for _ in range(4):
        batch = next(it)
        out = model(pixel_values=batch["pixel_values"], wavelengths=batch["wavelengths"])
        assert torch.isfinite(out.loss)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weights": {"s2": 1.0}}, "must name each dataset once"),
        ({"weights": {"s2": -1.0, "rgbn": 1.0}}, "non-negative"),
    ],
)
def test_bad_mixtures_are_explained(data, kwargs, message):
    with pytest.raises(ValueError, match=message):
        mixture(data, **kwargs)
