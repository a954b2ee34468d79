"""geofm-export-onnx: onnxruntime matches eager PyTorch (conv and wavelength patch embeddings, at
batch sizes other than the traced one), the band contract travels in the ONNX metadata, and bad
inputs give one line, exit 2 and no file."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import geofm_hf  # noqa: E402
from geofm_hf import (  # noqa: E402
    GeoViTMAEConfig,
    GeoViTMAEForImageClassification,
    GeoViTMAEForPreTraining,
    GeoViTMAEForSemanticSegmentation,
    GeoViTMAEImageProcessor,
    GeoViTMAEModel,
)
from geofm_hf.bands import band_wavelengths  # noqa: E402
from geofm_hf.convert.onnx import export_onnx, main  # noqa: E402

BANDS = ["B02", "B03", "B04", "B08"]
WAVELENGTHS = [0.49, 0.56, 0.665, 0.842]
ATOL = 1e-4


def _save(folder, cls, sensor=None, **overrides):
    """A tiny random-weight export (weights + processor), as save_pretrained writes one."""
    torch.manual_seed(0)
    config = GeoViTMAEConfig.from_preset(
        "tiny",
        band_names=BANDS,
        wavelengths_um=WAVELENGTHS,
        image_mean=[100.0, 200.0, 300.0, 400.0],
        image_std=[10.0, 20.0, 30.0, 40.0],
        **overrides,
    )
    model = cls(config).eval()
    model.save_pretrained(folder)
    GeoViTMAEImageProcessor.from_model_config(config).save_pretrained(folder)
    if sensor:
        (folder / "run_record.json").write_text(json.dumps({"sensor": sensor}))
    return folder


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _metadata(path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


@pytest.fixture(scope="module")
def conv(tmp_path_factory):
    """A pretraining checkpoint (encoder exported, decoder left out) and its ONNX file."""
    root = tmp_path_factory.mktemp("conv")
    folder = _save(root / "model", GeoViTMAEForPreTraining, sensor="sentinel2-l2a")
    result = export_onnx(folder, root / "out" / "model.onnx")
    return folder, result


@pytest.fixture(scope="module")
def wavelength(tmp_path_factory):
    root = tmp_path_factory.mktemp("wavelength")
    folder = _save(root / "model", GeoViTMAEModel, patch_embedding="wavelength")
    result = export_onnx(folder, root / "model.onnx")
    return folder, result


def _encoder_outputs(model, x, **kwargs):
    with torch.no_grad():
        out = model(x, **kwargs)
    return [out.last_hidden_state.numpy(), out.pooler_output.numpy()]


def _assert_close(got, expected):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        assert float(np.abs(g - e).max()) <= ATOL


@pytest.mark.parametrize("batch", [2, 5])
def test_conv_encoder_matches_pytorch_at_any_batch_size(conv, batch):
    folder, result = conv
    session = _session(result.path)
    (only,) = session.get_inputs()
    assert only.name == "pixel_values" and isinstance(only.shape[0], str)  # a symbolic batch
    assert [o.name for o in session.get_outputs()] == ["last_hidden_state", "pooler_output"]
    model = GeoViTMAEModel.from_pretrained(folder).eval()
    x = torch.randn(batch, 4, 64, 64, generator=torch.Generator().manual_seed(batch))
    got = session.run(None, {"pixel_values": x.numpy()})
    _assert_close(got, _encoder_outputs(model, x))
    assert got[0].shape == (batch, 1 + 64, 192)


@pytest.mark.parametrize("batch", [2, 5])
def test_wavelength_encoder_matches_pytorch_with_the_wavelengths_baked_in(wavelength, batch):
    folder, result = wavelength
    session = _session(result.path)
    # The wavelengths are constants of the graph: pixel_values is the only input.
    assert [i.name for i in session.get_inputs()] == ["pixel_values"]
    model = GeoViTMAEModel.from_pretrained(folder).eval()
    x = torch.randn(batch, 4, 64, 64, generator=torch.Generator().manual_seed(batch))
    got = session.run(None, {"pixel_values": x.numpy()})
    _assert_close(got, _encoder_outputs(model, x, wavelengths=WAVELENGTHS))
    # They are the export's bands' wavelengths, and they matter: other ones give other tokens.
    other = _encoder_outputs(model, x, wavelengths=[0.45, 0.6, 0.7, 1.6])
    assert float(np.abs(got[1] - other[1]).max()) > 100 * ATOL
    assert json.loads(_metadata(result.path)["geofm.wavelengths_um"]) == WAVELENGTHS


def test_wavelength_model_exports_the_bands_asked_for(wavelength, tmp_path):
    """Another band set (here three bands, reordered) of the same weights is another export."""
    folder, _ = wavelength
    out = tmp_path / "rgb.onnx"
    argv = [str(folder), "-o", str(out), "--band-names", "B04", "B03", "B02"]
    assert main([*argv, "--sensor", "sentinel2-l2a"]) == 0
    meta = _metadata(out)
    assert json.loads(meta["geofm.band_names"]) == ["B04", "B03", "B02"]
    expected_um = band_wavelengths(["B04", "B03", "B02"], "sentinel2-l2a")
    assert json.loads(meta["geofm.wavelengths_um"]) == expected_um
    model = GeoViTMAEModel.from_pretrained(folder).eval()
    x = torch.randn(3, 3, 64, 64)
    got = _session(out).run(None, {"pixel_values": x.numpy()})
    _assert_close(got, _encoder_outputs(model, x, wavelengths=expected_um))


@pytest.mark.parametrize(
    "cls, shape",
    [
        (GeoViTMAEForImageClassification, (2, 3)),
        (GeoViTMAEForSemanticSegmentation, (2, 3, 64, 64)),
    ],
)
def test_heads_export_with_the_encoder(tmp_path, cls, shape):
    folder = _save(tmp_path / "model", cls, num_labels=3)
    result = export_onnx(folder, tmp_path / "head.onnx")
    assert result.outputs == ["logits"]
    model = cls.from_pretrained(folder).eval()
    for batch in (2, 1):
        x = torch.randn(batch, 4, 64, 64)
        (got,) = _session(result.path).run(None, {"pixel_values": x.numpy()})
        with torch.no_grad():
            expected = model(x).logits.numpy()
        assert got.shape == (batch, *shape[1:])
        assert float(np.abs(got - expected).max()) <= ATOL
    meta = _metadata(result.path)
    assert json.loads(meta["geofm.id2label"]) == {
        str(k): v for k, v in model.config.id2label.items()
    }
    assert meta["geofm.model_class"] == cls.__name__


def test_band_contract_travels_in_the_metadata(conv):
    folder, result = conv
    meta = _metadata(result.path)
    config = GeoViTMAEConfig.from_pretrained(folder)
    processor = GeoViTMAEImageProcessor.from_pretrained(folder)
    assert json.loads(meta["geofm.band_names"]) == config.band_names == BANDS
    assert json.loads(meta["geofm.wavelengths_um"]) == config.wavelengths_um
    assert json.loads(meta["geofm.image_mean"]) == processor.image_mean
    assert json.loads(meta["geofm.image_std"]) == processor.image_std
    assert int(meta["geofm.image_size"]) == config.image_size == 64
    assert int(meta["geofm.patch_size"]) == config.patch_size
    assert int(meta["geofm.num_frames"]) == config.num_frames
    # The run record's sensor, not a guess from the band names (which would say L1C).
    assert meta["geofm.sensor"] == "sentinel2-l2a"
    assert meta["geofm.geofm_hf_version"] == geofm_hf.__version__
    assert meta["geofm.source_model"] == str(folder)
    assert "geofm.source_revision" not in meta  # a local folder has none
    assert meta["geofm.model_class"] == "GeoViTMAEForPreTraining"
    assert json.loads(meta["geofm.outputs"]) == ["last_hidden_state", "pooler_output"]
    assert result.metadata == meta
    # onnxruntime users read the same keys.
    assert _session(result.path).get_modelmeta().custom_metadata_map == meta


def test_hub_model_records_the_commit_it_resolved_to(tmp_path, local_hub):
    from huggingface_hub import HfApi

    folder = _save(tmp_path / "model", GeoViTMAEModel)
    api = HfApi()
    api.create_repo("org/tiny")
    first = api.upload_folder(folder_path=folder, repo_id="org/tiny").oid
    api.create_tag("org/tiny", tag="v1")
    (folder / "run_record.json").write_text(json.dumps({"sensor": "sentinel2-l2a"}))
    api.upload_folder(folder_path=folder, repo_id="org/tiny")  # main moves on
    out = tmp_path / "hub.onnx"
    assert main(["org/tiny", "--revision", "v1", "-o", str(out)]) == 0
    meta = _metadata(out)
    assert meta["geofm.source_model"] == "org/tiny"
    assert meta["geofm.source_revision"] == first
    assert meta["geofm.sensor"] == "sentinel2-l1c"  # v1 had no run record: from the band names


# ------------------------------------------------------------------------------ bad inputs
def _fails(capsys, argv, *words, after_loading=False):
    """``main(argv)`` exits 2 with one line on stderr. Bad inputs are caught before the weights
    load; a failure ``after_loading`` follows transformers' loading progress bar."""
    capsys.readouterr()  # what the test printed before (save_pretrained's progress bars)
    assert main(argv) == 2
    err = capsys.readouterr().err
    if after_loading:
        err = err.rsplit("\r", 1)[-1].split("\n", 1)[-1]
    assert err.startswith("geofm-export-onnx: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in err, err
    return err


def test_missing_model_path(tmp_path, capsys):
    _fails(capsys, [str(tmp_path / "nope"), "-o", str(tmp_path / "m.onnx")], "nope")
    assert list(tmp_path.iterdir()) == []


def test_output_must_be_onnx_in_a_writable_folder(conv, tmp_path, capsys):
    folder, _ = conv
    _fails(capsys, [str(folder), "-o", str(tmp_path / "m.pt")], ".onnx", "m.pt")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    _fails(capsys, [str(folder), "-o", str(blocker / "m.onnx")], "cannot write", str(blocker))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_models_that_cannot_be_exported(tmp_path, capsys):
    from transformers import ViTMAEConfig, ViTMAEModel

    theirs = tmp_path / "vitmae"
    ViTMAEModel(ViTMAEConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=64, image_size=32, patch_size=8)).save_pretrained(theirs)  # fmt: skip
    _fails(capsys, [str(theirs), "-o", str(tmp_path / "a.onnx")], "vit_mae", "geofm-convert")

    unknown = _save(tmp_path / "unknown", GeoViTMAEModel)
    config = json.loads((unknown / "config.json").read_text())
    config["architectures"] = ["GeoViTMAEForObjectDetection"]
    (unknown / "config.json").write_text(json.dumps(config))
    _fails(capsys, [str(unknown), "-o", str(tmp_path / "b.onnx")], "GeoViTMAEForObjectDetection")

    # A conv model's bands are its weights: choosing others is refused, not exported wrong.
    conv = _save(tmp_path / "conv", GeoViTMAEModel)
    argv = [str(conv), "-o", str(tmp_path / "c.onnx"), "--band-names", "B04"]
    _fails(capsys, argv, "wavelength model")
    assert not any(p.suffix == ".onnx" for p in tmp_path.iterdir())


def test_a_failed_export_leaves_the_old_file_and_no_partial_one(conv, tmp_path, capsys):
    folder, _ = conv
    out = tmp_path / "model.onnx"
    out.write_bytes(b"the previous export")
    # No tolerance at all: onnxruntime's float32 maths differs from PyTorch's in the last bits,
    # so the check after the file is staged fails.
    _fails(capsys, [str(folder), "-o", str(out), "--atol", "0"], "differ", after_loading=True)
    assert out.read_bytes() == b"the previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_command_line_entry_point(tmp_path):
    """The module runs as a program: one line on stderr, exit 2, for a bad output name."""
    proc = subprocess.run(
        [sys.executable, "-m", "geofm_hf.convert.onnx", str(tmp_path), "-o", "x.zip"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and ".onnx" in proc.stderr, proc.stderr
