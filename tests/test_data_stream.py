"""Streaming: local folder through the repo-id code path, GeoTIFF bytes, rank/worker cover,
determinism, normalisation and exact resume (num_workers 0 and 2)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from rasterio.io import MemoryFile
from rasterio.transform import from_origin

from geofm_hf.data import (
    decode_batch,
    decode_image,
    load_geo_dataset,
    make_pretrain_dataloader,
    read_dataset_info,
    sample_dataset_path,
)
from geofm_hf.data.stream import _Layout, augmentation_params

SAMPLE = sample_dataset_path()


def _chips_by_id(split="train"):
    table = pa.concat_tables(
        [pq.read_table(f"{SAMPLE}/data/{s['file'].split('/')[-1]}")
         for s in read_dataset_info(SAMPLE).shards[split]]
    )  # fmt: skip
    return dict(zip(table.column("chip_id").to_pylist(), decode_batch(table)))


def _take(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


def test_load_geo_dataset_local_folder_same_path_as_repo_id():
    ds = load_geo_dataset(SAMPLE, split="validation")
    rows = list(ds)
    assert len(rows) == 72
    img = decode_image(rows[0])
    assert img.shape == (13, 64, 64) and img.dtype == np.uint16  # no int64 blow-up
    batch = next(iter(ds.with_format("arrow").iter(batch_size=10)))
    arr = decode_batch(batch)
    assert arr.dtype == np.uint16 and arr.shape == (10, 13, 64, 64)
    np.testing.assert_array_equal(arr[0], img)
    with pytest.raises(ValueError, match="split"):
        load_geo_dataset(SAMPLE, split="nope")


def test_geotiff_bytes_dataset_streams(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "data").mkdir()
    images, ids = [], []
    for i in range(12):
        arr = rng.integers(0, 5000, (3, 32, 32), dtype=np.uint16)
        with MemoryFile() as mem:
            with mem.open(driver="GTiff", width=32, height=32, count=3, dtype="uint16",
                          crs="EPSG:32633", transform=from_origin(0, 320, 10, 10)) as dst:  # fmt: skip
                dst.write(arr)
            images.append(mem.read())
        ids.append(f"c{i}")
    for shard in range(2):
        pq.write_table(pa.table({"image": images[shard * 6 : shard * 6 + 6],
                                 "chip_id": ids[shard * 6 : shard * 6 + 6]}),
                       tmp_path / "data" / f"train-0000{shard}-of-00002.parquet")  # fmt: skip
    row = next(iter(load_geo_dataset(tmp_path)))
    assert row["image"][:4] == b"II*\x00" and decode_image(row).shape == (3, 32, 32)
    loader = make_pretrain_dataloader(tmp_path, batch_size=4, mean=[100.0] * 3, std=[2.0] * 3,
                                      augment=False, return_chip_ids=True)  # fmt: skip
    x, chip_ids = next(iter(loader))
    want = np.stack([decode_image({"image": images[ids.index(c)]}) for c in chip_ids])
    torch.testing.assert_close(x, torch.from_numpy((want.astype(np.float32) - 100.0) / 2.0))


@pytest.mark.parametrize("split,batch_size", [("train", 9), ("validation", 6)])
def test_two_ranks_two_workers_disjoint_cover(split, batch_size):
    # train: 4 shards over 4 readers; validation: 2 shards of 54 and 18 rows over 4 readers.
    seen = []
    for rank in range(2):
        loader = make_pretrain_dataloader(
            SAMPLE, split=split, batch_size=batch_size, seed=3, rank=rank, world_size=2,
            num_workers=2, return_chip_ids=True,
        )  # fmt: skip
        assert loader.stats["mode"] == "stretch"
        for _, ids in _take(loader, loader.batches_per_epoch):
            seen.extend(ids)
    everything = set(_chips_by_id(split))
    assert len(seen) == len(set(seen)) == len(everything)  # no duplicates, nothing dropped
    assert set(seen) == everything


@pytest.mark.parametrize("counts,world,workers,batch", [
    ([54, 54, 54, 54], 2, 2, 9), ([54, 18], 2, 2, 5), ([10, 7, 3], 3, 1, 2),
    ([5, 5, 5, 4], 1, 2, 3), ([100], 4, 2, 4),
])  # fmt: skip
def test_layout_is_disjoint_and_counts_every_drop(counts, world, workers, batch):
    layout = _Layout(counts, 7, world, workers, batch, drop_last=True)
    readers = world * max(workers, 1)
    seen = set()
    for g in range(readers):
        shards, rows = layout.reader_positions(0, g)
        used = list(zip(shards, rows))[: layout.batches_per_epoch * batch]
        assert not seen & set(used)
        seen |= set(used)
    dropped = layout.dropped_per_epoch()
    assert len(seen) + sum(dropped.values()) == sum(counts)


def test_order_is_a_function_of_seed_and_epoch():
    def ids(seed):
        loader = make_pretrain_dataloader(SAMPLE, batch_size=36, seed=seed, return_chip_ids=True)
        return [tuple(i) for _, i in _take(loader, 12)]  # two epochs of 6 batches

    a, b, c = ids(0), ids(0), ids(1)
    assert a == b and a != c
    assert all(list(ids) != sorted(ids) for ids in a)  # rows are shuffled inside shards too
    assert a[:6] != a[6:] and sorted(sum(a[:6], ())) == sorted(sum(a[6:], ()))


def test_normalisation_and_augmentation_are_exact():
    info = read_dataset_info(SAMPLE)
    chips = _chips_by_id()
    mean = np.asarray(info.mean, np.float32)[:, None, None]
    std = np.asarray(info.std, np.float32)[:, None, None]
    loader = make_pretrain_dataloader(SAMPLE, batch_size=8, augment=False, return_chip_ids=True)
    x, ids = next(iter(loader))
    want = np.stack([(chips[i].astype(np.float32) - mean) / std for i in ids])
    np.testing.assert_array_equal(x.numpy(), want)

    loader = make_pretrain_dataloader(SAMPLE, batch_size=8, crop_size=48, seed=5,
                                      return_chip_ids=True)  # fmt: skip
    x, ids = next(iter(loader))
    order = sorted(chips)  # global sample index = row position in the shard files
    params = augmentation_params(5, 0, np.array([order.index(i) for i in ids]), 64, 48)
    assert x.shape == (8, 13, 48, 48)
    for k, (y0, x0, hf, vf, rot) in enumerate(params):
        v = chips[ids[k]][:, y0 : y0 + 48, x0 : x0 + 48]
        v = v[:, :, ::-1] if hf else v
        v = v[:, ::-1, :] if vf else v
        v = np.rot90(v, rot, axes=(1, 2))
        np.testing.assert_array_equal(x[k].numpy(), (v.astype(np.float32) - mean) / std)
    assert len({tuple(p) for p in params}) > 1


@pytest.mark.parametrize("num_workers,k,m", [(0, 7, 6), (2, 5, 8)])
def test_resume_after_k_batches_gives_exactly_the_rest(num_workers, k, m):
    def build():
        return make_pretrain_dataloader(SAMPLE, batch_size=32, seed=11, num_workers=num_workers,
                                        crop_size=56)  # fmt: skip

    reference = _take(build(), k + m)  # crosses an epoch boundary (6 batches per epoch)
    first = build()
    it = iter(first)
    for _ in range(k):
        next(it)
    state = json.loads(json.dumps(first.state_dict()))
    assert state["batches_consumed"] == k
    resumed = build()
    resumed.load_state_dict(state)
    rest = _take(resumed, m)
    for want, got in zip(reference[k:], rest):
        assert torch.equal(want, got)
    assert not torch.equal(reference[k], reference[k - 1])


def test_resume_refuses_a_different_layout():
    loader = make_pretrain_dataloader(SAMPLE, batch_size=8, seed=1)
    state = loader.state_dict()
    other = make_pretrain_dataloader(SAMPLE, batch_size=16, seed=1)
    with pytest.raises(ValueError, match="batch_size"):
        other.load_state_dict(state)


def test_bad_arguments_say_what_was_expected():
    with pytest.raises(ValueError, match="crop_size 80 exceeds"):
        make_pretrain_dataloader(SAMPLE, batch_size=8, crop_size=80)
    with pytest.raises(ValueError, match="rank must be"):
        make_pretrain_dataloader(SAMPLE, batch_size=8, rank=2, world_size=2)
    with pytest.raises(ValueError, match="fewer than batch_size"):
        make_pretrain_dataloader(SAMPLE, split="validation", batch_size=100)
    with pytest.raises(ValueError, match="one value per band"):
        make_pretrain_dataloader(SAMPLE, batch_size=8, mean=[0.0] * 3, std=[1.0] * 3)
