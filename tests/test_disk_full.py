"""A full disk (issue 25, class 9), one table row per writer: each writes onto a small tmpfs the
test mounts (skipped where mounting is not allowed), runs out of room, and must say
``no space left on <its output>`` (entry points: one line, exit 2, no traceback), leave no file
under a finished name (a shard, an export's weights, a checkpoint folder, a COG) and nothing
partial but what a rerun can build on (``geofm-embed``'s whole parts, for ``--resume``).

Before, make-shards said "no space left on the output device" without naming it, geofm-embed,
geofm-export and geofm-convert gave tracebacks, and a checkpoint save left its unfinished
folder and raised whatever torch raised.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from affine import Affine
from inference_helpers import make_model, write_crop

from geofm_hf._errors import DiskFullError
from geofm_hf.training.checkpointing import (
    CheckpointManager,
    list_checkpoints,
    resolve_resume,
)


@pytest.fixture
def small_disk(tmp_path):
    """``mount(size, leave=None)``: a fresh tmpfs of ``size`` (e.g. "1m"), filled up to
    ``leave`` free bytes when given; unmounted at teardown."""
    mounted = []

    def mount(size: str, leave: int | None = None) -> Path:
        path = tmp_path / f"disk{len(mounted)}"
        path.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode:
            pytest.skip(f"cannot mount a small tmpfs to fill (needs root or CAP_SYS_ADMIN): "
                        f"{done.stderr.strip() or done.returncode}")  # fmt: skip
        mounted.append(path)
        if leave is not None:
            free = os.statvfs(path).f_bavail * os.statvfs(path).f_frsize
            (path / ".filler").write_bytes(b"\0" * max(free - leave, 0))
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", "--lazy", str(path)], check=False)


def _noise_scene(folder: Path, name="scene.tif", size=256) -> str:
    """A 3-band uint16 scene of noise: its shards do not compress below its raw size."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3,
                       dtype="uint16", crs="EPSG:32633",
                       transform=Affine(10, 0, 5e5, 0, -10, 4.6e6)) as dst:  # fmt: skip
        dst.write(rng.integers(0, 10000, (3, size, size), dtype=np.uint16))
        for i, band in enumerate(["red", "green", "blue"], 1):
            dst.set_band_description(i, band)
    return str(path)


def _cli(main, argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err, err
    # One line says what went wrong (a progress bar of the model load may precede it).
    (line,) = [line for line in err.splitlines() if ": error: " in line]
    return line


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} - {".filler"}


# --------------------------------------------------------------------------- the cases
# Each returns (the error line, the output path it must name, the files it may leave).


def _make_shards(tmp_path, small_disk, capsys):
    from geofm_hf.data.cli import main

    disk = small_disk("384k")
    out = disk / "out"
    argv = [_noise_scene(tmp_path / "src"), "-o", str(out), "--chip-size", "32", "--sensor",
            "rgb", "--rows-per-shard", "8"]  # fmt: skip
    line = _cli(main, argv, capsys)
    assert "at least" in line and "more" in line  # how much room, from the shards so far
    return line, out, set()


def _make_shards_two_scenes(tmp_path, small_disk, capsys):
    from geofm_hf.data.cli import main

    disk = small_disk("384k")
    out = disk / "out"
    src = tmp_path / "src"
    scenes = [_noise_scene(src, "a.tif", 192), _noise_scene(src, "b.tif", 192)]
    line = _cli(main, [*scenes, "-o", str(out), "--chip-size", "32", "--sensor", "rgb",
                       "--rows-per-shard", "8"], capsys)  # fmt: skip
    return line, out, set()


def _make_shards_over_a_dataset(tmp_path, small_disk, capsys):
    """Replacing a finished dataset: the old one stays whole and usable."""
    from geofm_hf.data import read_dataset_info
    from geofm_hf.data.cli import main

    disk = small_disk("640k")
    out = disk / "out"
    common = ["-o", str(out), "--chip-size", "32", "--sensor", "rgb", "--rows-per-shard", "8"]
    assert main([_noise_scene(tmp_path / "small", size=96), *common]) == 0
    before = _files(out)
    capsys.readouterr()
    line = _cli(main, [_noise_scene(tmp_path / "big", size=320), *common, "--overwrite"], capsys)
    assert _files(out) == before
    assert read_dataset_info(str(out)).num_samples == {"train": 9}
    return line, out, {f"out/{f}" for f in before}


def _embed(fmt, leave):
    """``leave``: room for some whole parts (kept for --resume) or for none."""

    def case(tmp_path, small_disk, capsys):
        from geofm_hf.inference.embed import main

        model = make_model(tmp_path / "model")
        crop = write_crop(tmp_path / "crop")
        capsys.readouterr()
        disk = small_disk("3m", leave=leave)
        out = disk / f"emb.{'parquet' if fmt == 'parquet' else 'tif'}"
        argv = [str(model), str(crop), "-o", str(out), "--stride", "16", "--format", fmt,
                "--pooling", "patch", "--no-progress", "--checkpoint-every", "4", "--batch-size", "4"]  # fmt: skip
        line = _cli(main, argv, capsys)
        kept = {f for f in _files(disk) if f.startswith(f"{out.name}.partial/")}
        # Whole parts are kept for --resume, and the line says so; a run with none keeps none.
        assert bool(kept) == (leave > 100_000) == ("--resume" in line), (kept, line)
        return line, out, kept

    return case


def _checkpoint_pair(tmp_path):
    """A tiny model with its optimiser: one checkpoint of it fits where two do not."""
    accelerator = Accelerator(cpu=True)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.Linear(256, 64))
    optimizer = torch.optim.AdamW(model.parameters())
    model, optimizer = accelerator.prepare(model, optimizer)
    model(torch.randn(2, 64)).sum().backward()
    optimizer.step()
    return accelerator


def _checkpoint_second_save(tmp_path, small_disk, capsys):
    """The newest checkpoint's size refuses the next save up front, naming the room needed."""
    accelerator = _checkpoint_pair(tmp_path)
    disk = small_disk("1m")
    manager = CheckpointManager(accelerator, disk, limit=None)
    manager.save(1, {"step": 1, "world_size": 1}, {"consumed": 1})
    (disk / ".filler").write_bytes(b"\0" * (os.statvfs(disk).f_bavail * 4096 - 200_000))
    with pytest.raises(DiskFullError) as err:
        manager.save(2, {"step": 2, "world_size": 1}, {"consumed": 2})
    assert err.value.need_bytes and "more" in str(err.value)
    # Resume takes the complete checkpoint, as if the failed save had never begun.
    assert resolve_resume(disk, "auto") == disk / "checkpoint-000001"
    return str(err.value), disk, {f for f in _files(disk) if f.startswith("checkpoint-000001/")}


def _checkpoint_mid_write(tmp_path, small_disk, capsys):
    """A first save (nothing to size it by but the tensors) that runs out of room mid-write:
    its unfinished folder is removed, and resume starts afresh."""
    accelerator = _checkpoint_pair(tmp_path)
    disk = small_disk("1m", leave=400_000)  # > the tensors (~390 KB), < the checkpoint
    manager = CheckpointManager(accelerator, disk, limit=None)
    with pytest.raises(DiskFullError) as err:
        manager.save(1, {"step": 1, "world_size": 1}, {"consumed": 1})
    assert list_checkpoints(disk) == [] and resolve_resume(disk, "auto") is None
    assert manager.clean_partial() == []  # nothing left for the next start to clear
    return str(err.value), disk, set()


def _geofm_export(tmp_path, small_disk, capsys):
    from geofm_hf import GeoViTMAEConfig, GeoViTMAEForPreTraining
    from geofm_hf.training.export_checkpoint import main

    accelerator = Accelerator(cpu=True)
    config = GeoViTMAEConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                             intermediate_size=128, decoder_hidden_size=32,
                             decoder_num_hidden_layers=1, decoder_num_attention_heads=4,
                             decoder_intermediate_size=64, patch_size=8, image_size=32,
                             band_names=["B04", "B03", "B02"])  # fmt: skip
    accelerator.prepare(GeoViTMAEForPreTraining(config))
    manager = CheckpointManager(accelerator, tmp_path / "run", limit=None)
    checkpoint = manager.save(1, {"step": 1, "world_size": 1}, {"consumed": 1},
                              extra=config.save_pretrained)  # fmt: skip
    disk = small_disk("256k")
    out = disk / "export"
    line = _cli(main, [str(checkpoint), "-o", str(out)], capsys)
    assert "more" in line  # the weights' size is known before the first byte
    return line, out, set()


def _geofm_convert(tmp_path, small_disk, capsys):
    from source_replicas import TimmViT

    from geofm_hf.convert import main

    torch.manual_seed(0)
    source = TimmViT(img_size=32, patch_size=8, in_chans=4, embed_dim=64, depth=2, num_heads=4)
    path = tmp_path / "vit.pth"
    torch.save(source.state_dict(), path)
    disk = small_disk("256k")
    out = disk / "converted"
    argv = [str(path), "-o", str(out), "--num-heads", "4", "--no-normalization"]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    (line,) = err.strip().splitlines()
    return line, out, set()


CASES = {
    "make_shards": _make_shards,
    "make_shards_two_scenes": _make_shards_two_scenes,
    "make_shards_over_a_dataset": _make_shards_over_a_dataset,
    "embed_geoparquet": _embed("parquet", 12_000),
    "embed_geoparquet_parts_kept": _embed("parquet", 600_000),
    "embed_cog": _embed("cog", 600_000),
    "checkpoint_second_save": _checkpoint_second_save,
    "checkpoint_mid_write": _checkpoint_mid_write,
    "geofm_export": _geofm_export,
    "geofm_convert": _geofm_convert,
}


@pytest.mark.parametrize("case", list(CASES))
def test_full_disk_names_the_output_and_leaves_nothing_that_looks_complete(
    case, tmp_path, small_disk, capsys
):
    try:
        line, output, may_stay = CASES[case](tmp_path, small_disk, capsys)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    assert f"no space left on {output}" in line, line
    disk = next(p for p in tmp_path.iterdir() if p.name.startswith("disk"))
    assert _files(disk) <= may_stay, _files(disk) - may_stay
