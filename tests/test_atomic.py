"""The one atomic-write helper (geofm_hf._atomic) that every file writer of the package uses."""

import os
import stat

import pytest
import torch
from safetensors.torch import load_file, save_file

from geofm_hf._atomic import atomic_path, atomic_write_bytes, atomic_write_text


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_writer_that_raises_keeps_old_content_and_leaves_no_temp(tmp_path):
    dst = tmp_path / "results.json"
    dst.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(dst) as tmp:
        tmp.write_text("half of the new")
        raise RuntimeError("disk full")
    assert dst.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_new_file_that_fails_leaves_nothing(tmp_path):
    dst = tmp_path / "sub" / "card.md"
    with pytest.raises(KeyboardInterrupt), atomic_path(dst) as tmp:
        tmp.write_text("partial")
        raise KeyboardInterrupt
    assert not dst.exists() and list((tmp_path / "sub").iterdir()) == []


def test_success_replaces_and_returns_path(tmp_path):
    dst = tmp_path / "a" / "b.txt"  # parent folders are made
    assert atomic_write_text(dst, "héllo\n") == dst
    assert dst.read_bytes() == "héllo\n".encode()
    atomic_write_bytes(dst, b"\x00\x01", fsync=True)
    assert dst.read_bytes() == b"\x00\x01"
    assert [p.name for p in dst.parent.iterdir()] == ["b.txt"]


def test_temp_is_beside_destination_unique_and_found_by_star_tmp(tmp_path):
    with atomic_path(tmp_path / "f.parquet") as a, atomic_path(tmp_path / "f.parquet") as b:
        assert a != b and a.parent == b.parent == tmp_path
        assert a.match("*.tmp") and a.name.startswith("f.parquet.")
        a.write_bytes(b"a")
        b.write_bytes(b"b")
    assert (tmp_path / "f.parquet").read_bytes() == b"a"  # the last rename wins, whole


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_files_get_the_mode_of_a_plain_open(tmp_path, umask, mode):
    # issue 16: safetensors (and mkstemp) make 0600 files, which stayed so after the rename
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "README.md", "card")
        with atomic_path(tmp_path / "model.safetensors", fsync=True) as tmp:
            save_file({"w": torch.zeros(2)}, tmp)
    finally:
        os.umask(old)
    assert _mode(tmp_path / "README.md") == _mode(tmp_path / "model.safetensors") == mode
    assert load_file(tmp_path / "model.safetensors")["w"].shape == (2,)


@pytest.mark.usefixtures("umask_022")
def test_package_writers_go_through_it(tmp_path, monkeypatch):
    """A call site (the dataset card info) keeps the old file when its write fails."""
    from geofm_hf.data.format import GeoDatasetInfo

    info = GeoDatasetInfo(band_names=["B04"], dtype="uint16", chip_size=16,
                          num_samples={"train": 1}, mean=[1.0], std=[2.0])  # fmt: skip
    path = tmp_path / "geofm_dataset.json"
    info.save(path)
    before = path.read_text()
    assert _mode(path) == 0o644

    def fail(self, data):
        self.open("wb").write(data[:10])
        raise OSError("No space left on device")

    monkeypatch.setattr("pathlib.Path.write_bytes", fail)
    info.mean = [5.0]
    with pytest.raises(OSError, match="No space"):
        info.save(path)
    assert path.read_text() == before and [p.name for p in tmp_path.iterdir()] == [path.name]
