"""geofm_hf exports as TerraTorch backbones (``backbone: geofm_hf``): the features TerraTorch
builds equal ours, bands map by name and wavelength, and ``terratorch fit`` trains on them."""

from __future__ import annotations

import csv
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from interop_helpers import S2, S2_TERRATORCH, ndvi, require, sample_chips, statistics, write_tif
from interop_helpers import tiny_export as _tiny_export

require("terratorch")

from terratorch.models import EncoderDecoderFactory  # noqa: E402
from terratorch.registry import BACKBONE_REGISTRY  # noqa: E402

from geofm_hf import GeoViTMAEConfig, GeoViTMAEModel, select_input_bands  # noqa: E402
from geofm_hf.interop import terratorch as plugin  # noqa: E402

ATOL = 1e-5
SIX = ["BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2"]  # HLS's six
SIX_S2 = ["B02", "B03", "B04", "B8A", "B11", "B12"]  # the same bands, by wavelength


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    return _tiny_export(tmp_path_factory.mktemp("export") / "tiny")


def _ours(
    export: Path, x: torch.Tensor, bands: list[str] | None = None, **coords
) -> list[torch.Tensor]:
    """Our per-layer tokens (the last after the final norm), from the export itself."""
    model = GeoViTMAEModel.from_pretrained(export).eval()
    if bands is not None:
        select_input_bands(model, bands)
    with torch.no_grad():
        out = model(x, output_hidden_states=True, **coords)
    return [*out.hidden_states[1:-1], out.last_hidden_state]


def _close(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.shape == b.shape
        assert (a - b).abs().max().item() <= ATOL


def test_features_through_terratorch_equal_ours(export):
    plugin.register()
    x = torch.randn(2, 13, 16, 16)
    backbone = BACKBONE_REGISTRY.build("geofm_hf", model_name_or_path=str(export)).eval()
    assert backbone.out_channels == [192] * 4
    with torch.no_grad():
        _close(backbone(x), _ours(export, x))
    # As a TerraTorch config builds it: backbone_* arguments through the model factory.
    model = (
        EncoderDecoderFactory()
        .build_model(
            task="segmentation",
            backbone="geofm_hf",
            backbone_model_name_or_path=str(export),
            backbone_bands=S2_TERRATORCH,
            decoder="UperNetDecoder",
            decoder_channels=16,
            necks=[
                {"name": "SelectIndices", "indices": [0, 1, 2, 3]},
                {"name": "ReshapeTokensToImage"},
                {"name": "LearnedInterpolateToPyramidal"},
            ],
            num_classes=2,
        )
        .eval()
    )
    with torch.no_grad():
        _close(model.encoder(x), _ours(export, x))
        assert model(x).output.shape == (2, 2, 16, 16)


def test_bands_in_another_order_and_names_map_by_wavelength(export):
    plugin.register()
    order = [12, 0, 5, 3, 1, 2, 4, 6, 7, 8, 9, 10, 11]
    x = torch.randn(2, 13, 16, 16)
    backbone = BACKBONE_REGISTRY.build(
        "geofm_hf", model_name_or_path=str(export), bands=[S2_TERRATORCH[i] for i in order]
    ).eval()
    assert backbone.image_std == [statistics()[1][i] for i in order]
    with torch.no_grad():
        _close(backbone(x[:, order]), _ours(export, x))


def test_band_subset_uses_the_models_own_kernels(export):
    plugin.register()
    x = torch.randn(2, 6, 16, 16)
    backbone = BACKBONE_REGISTRY.build(
        "geofm_hf", model_name_or_path=str(export), bands=SIX, band_subset=True
    ).eval()
    assert backbone.image_mean == [statistics()[0][S2.index(b)] for b in SIX_S2]
    with torch.no_grad():
        _close(backbone(x), _ours(export, x, bands=SIX_S2))
    # In another order too: the input is gathered, the model's kernels stay as they are.
    shuffled = [3, 0, 5, 1, 4, 2]
    backbone = plugin.load_backbone(export, bands=[SIX[i] for i in shuffled], band_subset=True)
    with torch.no_grad():
        _close(backbone.eval()(x[:, shuffled]), _ours(export, x, bands=SIX_S2))


@pytest.mark.parametrize(
    ("bands", "message"),
    [
        (SIX, r"Missing bands \['B01', 'B05'.*never zero-filled.*band_subset"),
        ([*S2_TERRATORCH, "THERMAL_INFRARED_1"], r"\['THERMAL_INFRARED_1'\] match none"),
        ([*S2_TERRATORCH[:-1], "BLUE"], "twice"),
        ([*S2_TERRATORCH[:-1], "mystery"], r"\['mystery'\] match none"),
    ],
)
def test_band_mismatches_are_errors(export, bands, message):
    with pytest.raises(ValueError, match=message):
        plugin.load_backbone(export, bands=bands)


def test_a_wavelength_model_takes_any_bands_by_their_wavelengths():
    config = GeoViTMAEConfig.from_preset(
        "tiny", patch_embedding="wavelength", image_size=16, patch_size=4
    )
    torch.manual_seed(0)
    model = GeoViTMAEModel(config).eval()
    backbone = plugin.GeoFMTerraTorchBackbone(model, bands=SIX).eval()
    wavelengths = [0.49, 0.56, 0.665, 0.865, 1.61, 2.19]  # Sentinel-2 B02 B03 B04 B8A B11 B12
    assert backbone.wavelengths.tolist() == pytest.approx(wavelengths)
    x = torch.randn(2, 6, 16, 16)
    with torch.no_grad():
        out = model(x, wavelengths=torch.tensor(wavelengths), output_hidden_states=True)
        _close(backbone(x), [*out.hidden_states[1:-1], out.last_hidden_state])
    with pytest.raises(ValueError, match=r"\['mystery'\] have no known wavelength"):
        plugin.GeoFMTerraTorchBackbone(model, bands=[*SIX, "mystery"])


def test_hub_id_and_revision(local_hub, tmp_path):
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo("org/tiny")
    api.upload_folder(folder_path=_tiny_export(tmp_path / "v1", seed=1), repo_id="org/tiny")
    api.create_tag("org/tiny", tag="v1")
    api.upload_folder(folder_path=_tiny_export(tmp_path / "v2", seed=2), repo_id="org/tiny")
    plugin.register()
    x = torch.randn(1, 13, 16, 16)
    for revision, folder in (("v1", tmp_path / "v1"), ("main", tmp_path / "v2")):
        backbone = BACKBONE_REGISTRY.build(
            "geofm_hf", model_name_or_path="org/tiny", revision=revision
        ).eval()
        with torch.no_grad():
            _close(backbone(x), _ours(folder, x))


# ----------------------------------------------------------------------------- time series
FRAMES = 4


@pytest.fixture(scope="module", params=[1, 2], ids=["tubelet1", "tubelet2"])
def series_export(request, tmp_path_factory) -> Path:
    """A tiny 4-frame model with date and place encodings, tubelets of 1 or 2 frames."""
    folder = tmp_path_factory.mktemp("series") / f"tubelet{request.param}"
    return _tiny_export(folder, num_frames=FRAMES, tubelet_size=request.param,
                        temporal_encoding=True, location_encoding=True)  # fmt: skip


def _series() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """TerraTorch's ``(B, C, T, H, W)`` series with (year, day of year) dates, (lat, lon)."""
    torch.manual_seed(1)
    dates = torch.tensor([[2020.0, 10], [2020, 100], [2020, 200], [2021, 5]]).expand(2, -1, -1)
    places = torch.tensor([[46.5, 6.6], [-33.9, 18.4]])
    return torch.randn(2, 13, FRAMES, 16, 16), dates.clone(), places


def _ours_series(export: Path, x: torch.Tensor, **coords) -> list[torch.Tensor]:
    """Our per-layer tokens on TerraTorch's ``(B, C, T, H, W)``, in our ``(B, T, C, H, W)``."""
    return _ours(export, x.transpose(1, 2), **coords)


def test_a_series_model_through_terratorch_equals_ours_with_its_dates_and_places(
    series_export,
):
    plugin.register()
    x, dates, places = _series()
    tubelets = FRAMES // GeoViTMAEConfig.from_pretrained(series_export).tubelet_size
    backbone = BACKBONE_REGISTRY.build("geofm_hf", model_name_or_path=str(series_export)).eval()
    assert backbone.out_channels == [192 * tubelets] * 4
    with torch.no_grad():
        got = backbone(x, temporal_coords=dates, location_coords=places)
        assert got[-1].shape == (2, 1 + tubelets * 4 * 4, 192)
        _close(got, _ours_series(series_export, x, temporal_coords=dates, location_coords=places))
        later = backbone(x, temporal_coords=dates + torch.tensor([1.0, 90]), location_coords=places)
        elsewhere = backbone(x, temporal_coords=dates, location_coords=-places)
        # The coords are optional metadata (our model's contract): without them, no encoding.
        bare = backbone(x)
        _close(bare, _ours_series(series_export, x))
    for changed in (later, elsewhere, bare):
        assert (changed[-1] - got[-1]).abs().max().item() > 1e-3


def test_series_maps_stack_each_tubelet_d_channels_in_time_order(series_export):
    backbone = plugin.load_backbone(series_export).eval()
    tubelet = backbone.model.config.tubelet_size
    tubelets = FRAMES // tubelet
    x, dates, places = _series()
    with torch.no_grad():
        tokens = backbone(x, temporal_coords=dates, location_coords=places)
    maps = backbone.prepare_features_for_image_model(tokens)
    assert [m.shape for m in maps] == [(2, 192 * tubelets, 4, 4)] * 4
    # Prithvi's "(t h w) e -> (t e) h w": tubelet k's 4 x 4 tokens (row-major) at [kD, (k+1)D).
    for m, t in zip(maps, tokens):
        for k in range(tubelets):
            grid = t[:, 1 + k * 16 : 1 + (k + 1) * 16].transpose(1, 2).reshape(2, 192, 4, 4)
            assert torch.equal(m[:, k * 192 : (k + 1) * 192], grid)
    # And our tokens are in that (tubelet, row, col) order: pixels of the last tubelet's frames
    # in patch (row 1, col 2) move only those D channels at (1, 2) of the embedding output
    # (every layer after it attends across tubelets and places).
    changed = x.clone()
    changed[:, :, -tubelet:, 4:8, 8:12] += 1.0
    with torch.no_grad():
        before, after = (
            backbone.model(v.transpose(1, 2), output_hidden_states=True).hidden_states[0]
            for v in (x, changed)
        )
    (moved,) = backbone.prepare_features_for_image_model([after - before])
    moved = moved.abs().amax(dim=0).view(tubelets, 192, 4, 4).amax(dim=1)  # (T', h, w)
    assert moved[-1, 1, 2] > 1e-3
    moved[-1, 1, 2] = 0
    assert (moved == 0).all(), moved


def test_a_terratorch_segmentation_model_on_a_series_backbone(series_export):
    plugin.register()
    x, dates, places = _series()
    tubelets = FRAMES // GeoViTMAEConfig.from_pretrained(series_export).tubelet_size
    factory = EncoderDecoderFactory()
    upernet = factory.build_model(
        task="segmentation",
        backbone="geofm_hf",
        backbone_model_name_or_path=str(series_export),
        backbone_bands=S2_TERRATORCH,
        decoder="UperNetDecoder",
        decoder_channels=16,
        necks=[
            {"name": "SelectIndices", "indices": [0, 1, 2, 3]},
            {"name": "ReshapeTokensToImage", "effective_time_dim": tubelets},
            {"name": "LearnedInterpolateToPyramidal"},
        ],
        num_classes=3,
    ).eval()
    # No neck: TerraTorch falls back to the backbone's prepare_features_for_image_model.
    fcn = factory.build_model(
        task="segmentation",
        backbone="geofm_hf",
        backbone_model_name_or_path=str(series_export),
        decoder="FCNDecoder",
        num_classes=3,
    ).eval()
    for model in (upernet, fcn):
        with torch.no_grad():
            out = model(x, temporal_coords=dates, location_coords=places).output
            later = model(x, temporal_coords=dates + torch.tensor([1.0, 90]),
                          location_coords=places).output  # fmt: skip
        assert out.shape == (2, 3, 16, 16)
        assert (out - later).abs().max().item() > 0  # the dates reach the encoder


def test_a_series_of_another_length_is_refused(series_export):
    backbone = plugin.load_backbone(series_export)
    x, dates, places = _series()
    with pytest.raises(ValueError, match=r"num_frames=4 frames .* found 3 frames in shape"):
        backbone(x[:, :, :3], temporal_coords=dates[:, :3], location_coords=places)
    with pytest.raises(ValueError, match=r"num_frames=4 .* found input of shape \(2, 13, 16, 16\)"):
        backbone(x[:, :, 0])
    with pytest.raises(
        ValueError, match=r"temporal_coords must have shape \(2, 4, 2\).*\(2, 3, 2\)"
    ):
        backbone(x, temporal_coords=dates[:, :3], location_coords=places)


# ----------------------------------------------------------------------------- terratorch fit
def _chips(root: Path) -> Path:
    """16 sample chips as GeoTIFFs: images, land-use masks, NDVI maps, class folders."""
    images, labels = sample_chips(16)
    index = ndvi(images)
    for i, (image, target, label) in enumerate(zip(images, index, labels)):
        write_tif(root / "pixels" / f"{i:02d}_img.tif", image)
        # The chip's OSM land-use class on every pixel: the sample's own labels, as masks.
        write_tif(root / "pixels" / f"{i:02d}_seg.tif", np.full(target.shape, label, "int16"))
        write_tif(root / "pixels" / f"{i:02d}_reg.tif", target.astype("float32"))
        write_tif(root / "classes" / f"class_{label}" / f"{i:02d}.tif", image)
    return root


@pytest.fixture(scope="module")
def chips(tmp_path_factory) -> Path:
    return _chips(tmp_path_factory.mktemp("chips"))


def _config(task: str, export: Path, chips: Path, out: Path) -> dict:
    mean, std = statistics()
    six = [S2_TERRATORCH.index(b) for b in SIX]
    data = {
        "batch_size": 4,
        "num_workers": 0,
        # Copies: yaml would write one list object twice as an anchor and an alias.
        "dataset_bands": list(S2_TERRATORCH),
        "output_bands": list(SIX),
        "means": [mean[i] for i in six],
        "stds": [std[i] for i in six],
        "no_data_replace": 0,
    }
    model = {
        "backbone": "geofm_hf",
        "backbone_model_name_or_path": str(export),
        "backbone_bands": list(SIX),
        "backbone_band_subset": True,
    }
    pyramid = [
        {"name": "SelectIndices", "indices": [0, 1, 2, 3]},
        {"name": "ReshapeTokensToImage"},
        {"name": "LearnedInterpolateToPyramidal"},
    ]
    pixels = str(chips / "pixels")
    if task == "segmentation":
        data_class, task_class = "GenericNonGeoSegmentationDataModule", "SemanticSegmentationTask"
        data.update(num_classes=5, img_grep="*_img.tif", label_grep="*_seg.tif")
        model.update(
            decoder="UNetDecoder", decoder_channels=[64, 32, 16, 8], necks=pyramid, num_classes=5
        )
        loss = "ce"
    elif task == "regression":
        data_class = "GenericNonGeoPixelwiseRegressionDataModule"
        task_class = "PixelwiseRegressionTask"
        data.update(img_grep="*_img.tif", label_grep="*_reg.tif")
        model.update(decoder="UNetDecoder", decoder_channels=[64, 32, 16, 8], necks=pyramid)
        loss = "mse"
    else:
        data_class, task_class = "GenericNonGeoClassificationDataModule", "ClassificationTask"
        data.update(num_classes=5)
        model.update(
            decoder="IdentityDecoder",
            necks=[{"name": "SelectIndices", "indices": [-1]}, {"name": "ReshapeTokensToImage"}],
            num_classes=5,
        )
        loss = "ce"
        pixels = str(chips / "classes")
    if task != "classification":
        data.update(train_label_data_root=pixels, val_label_data_root=pixels,
                    test_label_data_root=pixels)  # fmt: skip
    data.update(train_data_root=pixels, val_data_root=pixels, test_data_root=pixels)
    return {
        "seed_everything": 0,
        "custom_modules_path": str(plugin.plugin_path()),
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "max_epochs": 3,
            "log_every_n_steps": 1,
            "limit_val_batches": 0,
            "num_sanity_val_steps": 0,
            "enable_checkpointing": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "default_root_dir": str(out),
            "logger": {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": str(out), "name": "log", "version": 0},
            },
        },
        "data": {"class_path": f"terratorch.datamodules.{data_class}", "init_args": data},
        "model": {
            "class_path": f"terratorch.tasks.{task_class}",
            "init_args": {
                "model_factory": "EncoderDecoderFactory",
                "model_args": model,
                "loss": loss,
                **({"ignore_index": -1} if task == "segmentation" else {}),
            },
        },
        "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-3}},
    }


@pytest.mark.parametrize("task", ["segmentation", "regression", "classification"])
def test_terratorch_fit_trains_and_the_loss_falls(task, export, chips, tmp_path, monkeypatch):
    config = tmp_path / f"{task}.yaml"
    config.write_text(yaml.safe_dump(_config(task, export, chips, tmp_path)))
    if task == "segmentation":
        # The real command, in a fresh process: only custom_modules_path registers geofm_hf.
        terratorch_cli = Path(sys.executable).with_name("terratorch")
        run = subprocess.run(
            [str(terratorch_cli), "fit", "--config", str(config)], capture_output=True, text=True
        )
        assert run.returncode == 0, run.stderr[-4000:]
    else:
        # What `terratorch fit` calls, in this process (saves a TerraTorch import per task).
        from terratorch.cli_tools import build_lightning_cli

        # The argv and the warnings filter the command has: Lightning, jsonargparse, torchmetrics
        # and rioxarray warn as they run, which the command prints and this suite's
        # filterwarnings would raise; a warning from geofm_hf still fails the test.
        monkeypatch.setattr(sys, "argv", ["terratorch"])
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            build_lightning_cli(["fit", "--config", str(config)])
        ours = [f"{w.filename}: {w.message}" for w in seen if "geofm_hf" in w.filename]
        assert not ours, ours
    with open(tmp_path / "log" / "version_0" / "metrics.csv") as f:
        losses = [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]
    assert len(losses) == 3 * 4  # 16 chips, batch 4, 3 epochs
    # Seeded, on CPU: the same losses every run. Each epoch sees the same 16 chips, so epoch
    # means differ only by what the model learnt.
    first, last = np.mean(losses[:4]), np.mean(losses[-4:])
    assert last < first, losses
