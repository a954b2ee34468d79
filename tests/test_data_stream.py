"""Streaming: local folder through the repo-id code path, GeoTIFF bytes, rank/worker cover,
determinism, normalisation and exact resume (num_workers 0 and 2)."""

from __future__ import annotations

import json
from pathlib import Path

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
from geofm_hf.data.layout import _Layout, augmentation_params

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


def _writer_like(rng, shards, rows):
    """Shard row counts as geofm-make-shards writes them: all equal but the last, shuffled."""
    counts = [rows] * (shards - 1) + [int(rng.integers(1, rows + 1))]
    return [int(c) for c in rng.permutation(counts)]


@pytest.mark.parametrize("seed", range(6))
def test_every_epoch_readers_are_disjoint_covering_balanced_and_open_few_shards(seed):
    rng = np.random.default_rng(seed)
    for _ in range(12):
        n_shards = int(rng.integers(1, 80))
        counts = _writer_like(rng, n_shards, int(rng.integers(1, 70)))
        total = sum(counts)
        world, workers = int(rng.integers(1, 20)), int(rng.integers(0, 4))
        readers = world * max(workers, 1)
        if readers > total:
            continue
        layout = _Layout(counts, seed, world, workers, 1, drop_last=True)
        per_reader = total // readers
        for epoch in range(3):
            seen: set[tuple[int, int]] = set()
            for g in range(readers):
                shards, rows = layout.reader_positions(epoch, g)
                assert len(shards) == per_reader  # the same count for every reader, every epoch
                mine = set(zip(shards.tolist(), rows.tolist()))
                assert len(mine) == per_reader and not seen & mine
                assert all(0 <= r < counts[s] for s, r in mine)
                seen |= mine
                pieces = layout.reader_pieces(epoch, g)
                assert len(pieces) == len({s for s, _, _ in pieces})  # each shard opened once
                assert len(pieces) <= -(-n_shards // readers) + 1, (counts, readers, epoch)
            assert (
                len(seen)
                == per_reader * readers
                == total - layout.dropped_per_epoch()["to_balance_readers"]
            )
            assert total - len(seen) < readers


def test_why_not_split_dataset_by_node(tmp_path):
    """The module docstring's reasons, on the installed ``datasets``: its node split reads every
    shard on every node, or hands out whole shards in unequal counts, or refuses few shards."""
    import datasets
    from datasets.distributed import split_dataset_by_node

    files = []
    for k in range(3):
        files.append(str(tmp_path / f"s{k}.parquet"))
        pq.write_table(pa.table({"shard": [k] * 4}), files[-1])
    stream = datasets.load_dataset("parquet", data_files=files, split="train", streaming=True)
    assert stream.num_shards == 3

    def shards_seen(world, rank, strategy="auto"):
        node = split_dataset_by_node(stream, rank=rank, world_size=world, strategy=strategy)
        return [row["shard"] for row in node]

    assert all(set(shards_seen(2, r)) == {0, 1, 2} for r in range(2))  # I/O x world_size
    assert [len(shards_seen(2, r, "shards")) for r in range(2)] == [8, 4]  # out of step
    with pytest.raises(ValueError, match="num_shards=3"):
        split_dataset_by_node(stream, rank=0, world_size=4, strategy="shards")
    # ours on the same counts: equal stretches, each reader opening at most 2 of the 3 shards
    layout = _Layout([4, 4, 4], 0, 2, 0, 1, drop_last=True)
    assert [len(layout.reader_positions(0, g)[0]) for g in range(2)] == [6, 6]
    assert all(len(layout.reader_pieces(0, g)) <= 2 for g in range(2))


def test_dropped_samples_change_every_epoch():
    layout = _Layout([7] * 10 + [3], 0, 4, 1, 1, drop_last=True)  # 73 = 4 x 18 + 1
    unseen = []
    for epoch in range(6):
        seen = {p for g in range(4) for p in zip(*map(list, layout.reader_positions(epoch, g)))}
        unseen.append({(s, r) for s in range(11) for r in range(layout.counts[s])} - seen)
    assert all(len(u) == 1 for u in unseen) and len(set().union(*unseen)) > 1


def _row_grouped(tmp_path, rows_per_group=6):
    """The bundled train split rewritten with small row groups (4 shards x 9 groups of 6)."""
    info = read_dataset_info(SAMPLE)
    (tmp_path / "data").mkdir()
    for shard in info.shards["train"]:
        name = shard["file"].split("/")[-1]
        pq.write_table(pq.read_table(f"{SAMPLE}/data/{name}"), tmp_path / "data" / name,
                       row_group_size=rows_per_group)  # fmt: skip
    data = json.loads((Path(SAMPLE) / "geofm_dataset.json").read_text())
    data["shards"].pop("validation")
    data["num_samples"].pop("validation")
    for entry in data["shards"]["train"]:  # other files now: their recorded size and hash go
        entry.pop("bytes", None)
        entry.pop("sha256", None)
    (tmp_path / "geofm_dataset.json").write_text(json.dumps(data))
    return tmp_path


def test_each_reader_reads_only_the_row_groups_under_its_stretch(tmp_path):
    folder = _row_grouped(tmp_path)
    where = {}  # chip id -> (shard file, row group)
    total_bytes = 0
    for path in sorted((folder / "data").glob("*.parquet")):
        total_bytes += path.stat().st_size
        for row, chip in enumerate(pq.read_table(path).column("chip_id").to_pylist()):
            where[chip] = (path.name, row // 6)
    for rank in range(8):  # 8 readers over 4 shards of 54 rows: 27 rows each
        loader = make_pretrain_dataloader(folder, batch_size=9, seed=2, rank=rank, world_size=8,
                                          return_chip_ids=True)  # fmt: skip
        ids = [i for _, batch in _take(loader, loader.batches_per_epoch) for i in batch]
        needed = {where[i] for i in ids}
        stats = loader.stream.stats
        assert stats["row_groups_read"] == len(needed) <= 27 // 6 + 2
        assert stats["bytes_read"] < 0.25 * total_bytes  # ideal 1/8; a whole shard would be 1/4


def test_resume_mid_epoch_with_stretches_across_shards(tmp_path):
    folder = _row_grouped(tmp_path)

    def build():
        return make_pretrain_dataloader(folder, batch_size=8, seed=4, rank=1, world_size=3,
                                        num_workers=2, return_chip_ids=True)  # fmt: skip

    reference = build()
    assert reference.batches_per_epoch == 8  # 6 readers x 36 rows, 4 batches each
    want = _take(reference, 13)
    first = build()
    _take(first, 5)
    resumed = build()
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    for (x, ids), (want_x, want_ids) in zip(_take(resumed, 8), want[5:]):
        assert ids == want_ids and torch.equal(x, want_x)


def test_a_mistyped_local_path_fails_at_once(tmp_path, monkeypatch):
    import datasets
    import huggingface_hub

    def no_network(*args, **kwargs):
        raise AssertionError("went to the Hub")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", no_network)
    monkeypatch.setattr(datasets, "load_dataset", no_network)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    for load in (read_dataset_info, load_geo_dataset,
                 lambda p: make_pretrain_dataloader(p, batch_size=2)):  # fmt: skip
        with pytest.raises(
            ValueError, match=r"'ds_lsat' is neither an existing folder .* org/name"
        ):
            load("ds_lsat")
        with pytest.raises(ValueError, match="neither an existing folder"):
            load("org/bad name!")
        for path in ("./ds_lsat", "~/no_such_geofm_ds", str(tmp_path / "ds_lsat"), "a/b/c"):
            with pytest.raises(FileNotFoundError, match="does not exist"):
                load(path)
        with pytest.raises(NotADirectoryError, match="is a file"):
            load("notes.txt")
        with pytest.raises(AssertionError, match="went to the Hub"):
            load("geofm-test/ds_lsat")  # a valid repo id still goes to the Hub


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
    other = make_pretrain_dataloader(SAMPLE, batch_size=8, seed=2)  # batch size may change
    with pytest.raises(ValueError, match="seed"):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match="version 1, this geofm_hf reads version 2"):
        loader.load_state_dict({**state, "version": 1})  # saved under the previous layout


def test_bad_arguments_say_what_was_expected():
    with pytest.raises(ValueError, match="crop_size 80 exceeds"):
        make_pretrain_dataloader(SAMPLE, batch_size=8, crop_size=80)
    with pytest.raises(ValueError, match="rank must be"):
        make_pretrain_dataloader(SAMPLE, batch_size=8, rank=2, world_size=2)
    with pytest.raises(ValueError, match="fewer than batch_size"):
        make_pretrain_dataloader(SAMPLE, split="validation", batch_size=100)
    with pytest.raises(ValueError, match="one value per band"):
        make_pretrain_dataloader(SAMPLE, batch_size=8, mean=[0.0] * 3, std=[1.0] * 3)
