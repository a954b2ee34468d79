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
        with self.open("wb") as handle:
            handle.write(data[:10])
        raise OSError("No space left on device")

    monkeypatch.setattr("pathlib.Path.write_bytes", fail)
    info.mean = [5.0]
    with pytest.raises(OSError, match=r"(?i)no space left"):
        info.save(path)
    assert path.read_text() == before and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_atomic_open_streams_then_replaces_and_a_failure_keeps_the_old_file(tmp_path):
    from geofm_hf._atomic import atomic_open

    dst = tmp_path / "weights.bin"
    with atomic_open(dst, fsync=True) as handle:
        handle.write(b"old")
        assert not dst.exists()  # nothing under the final name before the block ends
    assert dst.read_bytes() == b"old"
    with pytest.raises(OSError, match=r"(?i)no space left"), atomic_open(dst) as handle:
        handle.write(b"half of the new")
        raise OSError("No space left on device")
    assert dst.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == [dst.name]


def _small_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3), torch.nn.Linear(3, 2))


@pytest.mark.usefixtures("umask_022")
def test_streamed_safetensors_export_is_whole_and_0644(tmp_path):
    from geofm_hf.training.distributed import save_safetensors_streaming

    model = _small_model()
    path = tmp_path / "model.safetensors"
    save_safetensors_streaming(model, path, write=True)
    saved = load_file(path)
    assert saved.keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(saved[key], value), key
    assert _mode(path) == 0o644 and [p.name for p in tmp_path.iterdir()] == [path.name]
    save_safetensors_streaming(model, tmp_path / "other.safetensors", write=False)  # a reader
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


@pytest.mark.parametrize("failure", ["gather", "disk"])
@pytest.mark.parametrize("earlier", [False, True])
def test_streamed_safetensors_export_that_fails_midway_leaves_no_partial_file(
    tmp_path, monkeypatch, failure, earlier
):
    """A gather or a write that fails after the first tensor: the final name keeps the earlier
    export (or stays absent) and no temporary file is left behind."""
    import contextlib

    from geofm_hf._atomic import atomic_open
    from geofm_hf.training import distributed

    path = tmp_path / "model.safetensors"
    if earlier:
        save_file({"w": torch.arange(5.0)}, path)
    before = path.read_bytes() if earlier else None
    written = []
    if failure == "gather":
        calls = iter(range(100))

        def full(tensor):
            if next(calls) == 1:
                raise RuntimeError("gather failed: rank 1 went away")
            return tensor

        monkeypatch.setattr(distributed, "_full", full)
        match = "gather failed"
    else:

        class Disk:
            def __init__(self, handle):
                self.handle = handle

            def write(self, data):
                if len(written) == 3:  # header length, header, first tensor: then full
                    self.handle.write(data[: len(data) // 2])
                    raise OSError("No space left on device")
                written.append(len(data))
                return self.handle.write(data)

        @contextlib.contextmanager
        def small_disk(target, **kw):
            with atomic_open(target, **kw) as handle:
                yield Disk(handle)

        monkeypatch.setattr(distributed, "atomic_open", small_disk)
        match = r"(?i)no space left"
    with pytest.raises((RuntimeError, OSError), match=match):
        distributed.save_safetensors_streaming(_small_model(), path, write=True)
    if failure == "disk":
        assert len(written) == 3
    assert [p.name for p in tmp_path.iterdir()] == ([path.name] if earlier else [])
    if earlier:
        assert path.read_bytes() == before and torch.equal(load_file(path)["w"], torch.arange(5.0))


def _figure_writers():
    import numpy as np

    from geofm_hf.classification.metrics import save_confusion_matrix_png
    from geofm_hf.segmentation.visualize import save_prediction_png
    from geofm_hf.training.reporting import plot_loss_curve

    return {
        "loss_curve": lambda path: plot_loss_curve([{"step": 1, "loss": 2.0}], path),
        "confusion_matrix": lambda path: save_confusion_matrix_png(
            np.eye(2, dtype=int), ["a", "b"], path
        ),
        "prediction": lambda path: save_prediction_png(
            [("map", np.zeros((4, 4), int))], ["a"], path
        ),
    }


@pytest.mark.parametrize("writer", ["loss_curve", "confusion_matrix", "prediction"])
def test_figures_are_written_atomically_and_closed(tmp_path, monkeypatch, writer):
    """Every figure writer of the package goes through atomic_savefig: a failure halfway leaves
    the earlier file whole and no temporary file; the figure is closed either way."""
    import matplotlib.figure
    import matplotlib.pyplot as plt

    write = _figure_writers()[writer]
    path = tmp_path / "figure.png"
    write(path)
    before = path.read_bytes()
    assert before[:4] == b"\x89PNG" and [p.name for p in tmp_path.iterdir()] == [path.name]
    figures = len(plt.get_fignums())

    def savefig(self, target, **kw):
        with open(target, "wb") as handle:
            handle.write(b"\x89PNG half")
        raise OSError("No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    with pytest.raises(OSError, match=r"(?i)no space left"):
        write(path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == [path.name]
    assert len(plt.get_fignums()) == figures


def test_atomic_savefig_takes_the_format_from_the_suffix(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from geofm_hf._atomic import atomic_savefig

    assert atomic_savefig(plt.figure(), tmp_path / "a.pdf").read_bytes()[:4] == b"%PDF"
    assert atomic_savefig(plt.figure(), tmp_path / "b").read_bytes()[:4] == b"\x89PNG"
    assert atomic_savefig(plt.figure(), tmp_path / "c.pdf", "png").read_bytes()[:4] == b"\x89PNG"
    assert not plt.get_fignums()


def test_the_metrics_log_trimmed_on_resume_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    from geofm_hf.training.reporting import MetricsLog

    log = tmp_path / "logs" / "metrics.jsonl"
    log.parent.mkdir()
    log.write_text("".join(f'{{"step": {s}, "loss": 1.0}}\n' for s in (1, 2, 3)))
    old = log.read_text()

    def write_bytes(self, data):
        with open(self, "wb") as handle:
            handle.write(data[:5])
        raise OSError("No space left on device")

    monkeypatch.setattr("pathlib.Path.write_bytes", write_bytes)
    monkeypatch.setattr(
        "pathlib.Path.write_text", lambda self, text, **kw: write_bytes(self, text.encode())
    )
    with pytest.raises(OSError, match=r"(?i)no space left"):
        MetricsLog(log, resume_step=2)
    assert log.read_text() == old and [p.name for p in log.parent.iterdir()] == [log.name]
    monkeypatch.undo()
    assert [r["step"] for r in MetricsLog(log, resume_step=2).read()] == [1, 2]
