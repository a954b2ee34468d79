"""Bad input to the pretraining recipe: each case handled (and counted where a user looks) or
stopped with an error that names the problem; never a hang, never a misleading diagnosis.

The 2-process cases launch the real recipe (``accelerate launch``, gloo); the rest call its
stages in-process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from pretrain_utils import CPU_FSDP_CONFIG, pretrain
from rasterio.transform import from_origin
from safetensors.torch import load_file, save_file

from geofm_hf.data import sample_dataset_path, write_shards
from geofm_hf.training.arguments import (
    ArgumentError,
    check_output_dir_writable,
    parse_arguments,
    run_recipe,
)
from geofm_hf.training.checkpointing import list_checkpoints
from geofm_hf.training.data_contract import read_data_contract
from geofm_hf.training.health import diagnose_nan
from geofm_hf.training.signals import StopSignal, StopWhileWaitingForData

ROOT = Path(__file__).resolve().parents[1]

FAST = ("--plot_reconstructions", "false", "--warmup_steps", "1")


def _sample_copy(tmp_path) -> Path:
    ds = tmp_path / "s2"
    shutil.copytree(sample_dataset_path(), ds)
    return ds


def _break_footer(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-8:] = b"XXXXXXXX"
    path.write_bytes(bytes(data))


# ----------------------------------------------------------------------------- 2-process runs


def test_no_batch_producible_stops_instead_of_spinning(tmp_path):
    ds = _sample_copy(tmp_path)
    for shard in (ds / "data").glob("train-*.parquet"):
        _break_footer(shard)
    start = time.monotonic()
    result = pretrain(tmp_path / "out", "--dataset_name_or_path", ds, "--max_steps", "3",
                      "--on_error", "skip", "--max_error_fraction", "1.0", *FAST,
                      check=False)  # fmt: skip
    assert result.returncode != 0
    assert "no batch can be produced" in result.stderr
    assert "Traceback" not in result.stderr.split("pretrain.py: error:")[0][-2000:]
    assert not (tmp_path / "out" / "final").exists()
    assert time.monotonic() - start < 300


def test_skipped_shard_is_counted_in_summary_run_record_and_card(tmp_path):
    ds = _sample_copy(tmp_path)
    _break_footer(ds / "data" / "train-00002-of-00004.parquet")
    out = tmp_path / "out"
    pretrain(out, "--dataset_name_or_path", ds, "--max_steps", "2", "--on_error", "skip",
             "--max_error_fraction", "0.3", "--warmup_steps", "1")  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped"]["bad_shards"] == [2]
    rows = json.loads((ds / "geofm_dataset.json").read_text())["shards"]["train"][2]["num_rows"]
    assert summary["skipped"]["rows_lost_to_bad_shards"] == rows
    record = json.loads((out / "final" / "run_record.json").read_text())
    assert record["skipped"]["bad_shards"] == [2]
    assert f"1 unreadable shard(s) were skipped ({rows} chips" in (
        out / "final" / "README.md").read_text()  # fmt: skip


def test_shard_found_bad_mid_run_by_a_data_worker_of_any_rank_is_counted(tmp_path):
    # A flipped byte inside a data page passes the start-up footer check; the page checksum
    # catches it when the shard is read, in a DataLoader worker of whichever rank reads it.
    ds = _sample_copy(tmp_path)
    shard = ds / "data" / "train-00002-of-00004.parquet"
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0xFF
    shard.write_bytes(bytes(data))
    out = tmp_path / "out"
    # 14 steps of 8 cover an epoch of every reader (2 ranks x 1 worker): shard 2 is read.
    pretrain(out, "--dataset_name_or_path", ds, "--max_steps", "14", "--on_error", "skip",
             "--max_error_fraction", "0.3", "--dataloader_num_workers", "1", *FAST)  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped"]["bad_shards"] == [2]
    assert summary["skipped"]["batches_lost_to_bad_shards"] >= 1
    rows = json.loads((ds / "geofm_dataset.json").read_text())["shards"]["train"][2]["num_rows"]
    assert summary["skipped"]["rows_lost_to_bad_shards"] == rows


def test_damaged_newest_checkpoint_falls_back_with_a_warning(tmp_path):
    out = tmp_path / "out"
    pretrain(out, "--max_steps", "4", "--save_steps", "2", *FAST)
    (_, older), (_, newest) = list_checkpoints(out)
    (weights,) = newest.glob("model*.safetensors")
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated: no usable metadata
    resumed = pretrain(out, "--max_steps", "5", "--save_steps", "2", *FAST)
    log = resumed.stdout + resumed.stderr
    assert f"not resuming from {newest}" in log and weights.name in log
    assert f"resumed from {older} at step 2" in log
    assert json.loads((out / "final" / "run_record.json").read_text())["steps"] == 5
    # Asking for fewer steps than the checkpoint holds is refused, not a silent re-export.
    lower = pretrain(out, "--max_steps", "3", *FAST, check=False)
    assert lower.returncode != 0 and "--max_steps 3 is below" in lower.stderr


def _nan_dataset(folder: Path) -> Path:
    """Float32 chips, each with a few NaN pixels kept by max_nodata_fraction."""
    rng = np.random.default_rng(0)
    data = rng.uniform(0, 1, (2, 128, 256)).astype(np.float32)
    data[:, ::16, ::16] = np.nan
    folder.mkdir()
    with rasterio.open(folder / "F_20200101.tif", "w", driver="GTiff", width=256, height=128,
                       count=2, dtype="float32", crs="EPSG:32633",
                       transform=from_origin(500000, 5600000, 10, 10)) as dst:  # fmt: skip
        dst.write(data)
    write_shards(folder, folder.parent / "nan_ds", chip_size=32, max_nodata_fraction=0.1)
    return folder.parent / "nan_ds"


def test_nan_pixels_kept_by_max_nodata_fraction_are_masked_not_trained_on(tmp_path):
    ds = _nan_dataset(tmp_path / "raw")
    out = tmp_path / "out"
    pretrain(out, "--dataset_name_or_path", ds, "--max_steps", "2",
             "--per_device_train_batch_size", "4", "--image_size", "32",  # 32 px chips
             *FAST)  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert np.isfinite(summary["final_loss"])
    assert summary["skipped"]["steps_skipped_non_finite"] == 0


# ----------------------------------------------------------------------------- in-process


def test_non_finite_dataset_statistics_refused_at_start(tmp_path):
    ds = _sample_copy(tmp_path)
    info = json.loads((ds / "geofm_dataset.json").read_text())
    info["mean"][3] = float("inf")
    (ds / "geofm_dataset.json").write_text(json.dumps(info))
    _, data_args, _ = parse_arguments(["--dataset_name_or_path", str(ds)])
    with pytest.raises(ValueError, match="non-finite normalisation statistics"):
        read_data_contract(data_args)


def test_continuing_from_weights_holding_nan_is_refused_on_every_rank(tmp_path):
    from test_pretrain_continue import make_export

    export = make_export(tmp_path / "nan_export")
    tensors = load_file(export / "model.safetensors")
    # One value in the last row: under FSDP2 only rank 1 reads it, and both ranks must stop.
    tensors["vit.encoder.layers.0.mlp.fc1.weight"][-1, 0] = float("nan")
    save_file(tensors, export / "model.safetensors", metadata={"format": "pt"})
    result = pretrain(tmp_path / "run", "--model_name_or_path", export, "--max_steps", "1",
                      "--bf16", "false", *FAST, config=CPU_FSDP_CONFIG, check=False)  # fmt: skip
    assert result.returncode != 0
    assert result.stderr.count("hold NaN/inf in 1 tensors") == 2, result.stderr[-3000:]
    assert "vit.encoder.layers.0.mlp.fc1.weight" in result.stderr


def test_unwritable_output_dir_exits_2(tmp_path, monkeypatch, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:  # root ignores permission bits: refuse the write the way EACCES does
        real_mkdir = os.mkdir

        def mkdir(path, *args, **kwargs):
            if str(path).startswith(str(ro)):
                raise PermissionError(13, "Permission denied", str(path))
            return real_mkdir(path, *args, **kwargs)

        monkeypatch.setattr(os, "mkdir", mkdir)
    else:
        ro.chmod(0o555)
    with pytest.raises(ArgumentError, match=r"--output_dir .* is not writable"):
        check_output_dir_writable(ro / "run")
    code = run_recipe(lambda: check_output_dir_writable(ro / "run"))
    assert code == 2 and "Permission denied" in capsys.readouterr().err
    assert not (ro / "run").exists()


def test_signal_while_waiting_for_data_interrupts_the_wait():
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        stop = StopSignal()

        def stalled():  # a read that never returns, as a hung network filesystem would
            while True:
                time.sleep(0.01)
                yield from ()

        timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
        timer.start()
        start = time.monotonic()
        with pytest.raises(StopWhileWaitingForData) as err:
            stop.next_batch(stalled())
        assert err.value.signum == signal.SIGTERM and time.monotonic() - start < 30
        # Outside a data wait the signal only sets the flag, voted on after the step.
        stop.received = None
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.05)
        assert stop.received == signal.SIGUSR1
        assert stop.next_batch(iter([1])) == 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _FakeRun:
    def __init__(self, output_dir, model_name_or_path=None, resume_path=None):
        self.output_dir = Path(output_dir)
        self.resume_path = resume_path
        self.model_args = type("M", (), {"model_name_or_path": model_name_or_path})()


@pytest.mark.parametrize(
    "input_bad,weights_bad,step,words",
    [
        (True, False, 3, ["input batch holds NaN/inf: a data fault", "mean/std"]),
        (False, True, 0, ["weights already hold NaN/inf", "org/continued"]),
        (False, True, 3, ["weights already hold NaN/inf", "an earlier update"]),
        (False, False, 3, ["optimisation diverged", "Lower the learning rate"]),
    ],
)
def test_nan_diagnosis_names_the_fault(input_bad, weights_bad, step, words, tmp_path):
    run = _FakeRun(tmp_path, model_name_or_path="org/continued")
    text = diagnose_nan(run, float("nan"), step, 0, input_bad, weights_bad, 0)
    for word in words:
        assert word in text, (word, text)
    if input_bad or weights_bad:
        assert "Lower the learning rate or" not in text
    assert "No checkpoint has been written" in text  # no pointer to a checkpoint that is not there
    (tmp_path / "checkpoint-000002").mkdir()
    (tmp_path / "checkpoint-000002" / "COMPLETE").write_text("2\n")
    text = diagnose_nan(run, float("nan"), step, 0, input_bad, weights_bad, 0)
    assert "checkpoint-000002" in text and "No checkpoint" not in text
