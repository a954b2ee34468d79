"""Helpers for the classification tests: model exports and small datasets built at test time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from geofm_hf.data import read_dataset_info

LABELLED = str(Path(__file__).resolve().parents[1] / "geofm_hf" / "sample_data" / "s2_osm_landuse")

# Narrow and shallow so a CPU test fine-tunes in seconds; 16 px = the bundled chips' size.
SMALL = dict(
    hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
    image_size=16, patch_size=4, decoder_hidden_size=32, decoder_num_hidden_layers=1,
    decoder_num_attention_heads=2, decoder_intermediate_size=64,
)  # fmt: skip


def tiny_export(path, *, seed: int = 0, band_names=None, **overrides) -> Path:
    """A pretraining export (weights + image processor) of a small random model on S2 bands.

    Point tests at a real recipe export instead by passing its folder wherever this one is used.
    """
    from geofm_hf import GeoViTMAEConfig, GeoViTMAEForPreTraining, GeoViTMAEImageProcessor

    info = read_dataset_info(LABELLED)
    names = band_names or info.band_names
    index = [info.band_names.index(b) for b in names]
    torch.manual_seed(seed)
    config = GeoViTMAEConfig.from_preset(
        "tiny",
        band_names=names,
        image_mean=[info.mean[i] for i in index],
        image_std=[info.std[i] for i in index],
        **{**SMALL, **overrides},
    )
    GeoViTMAEForPreTraining(config).save_pretrained(path)
    GeoViTMAEImageProcessor.from_model_config(config).save_pretrained(path)
    return Path(path)


def rgb_png_folder(root, splits=("train", "test"), limit: int | None = None) -> Path:
    """An imagefolder of 8-bit RGB PNGs (B04, B03, B02 stretched) made from the bundled chips."""
    from PIL import Image

    from geofm_hf.classification import load_classification_split

    root = Path(root)
    for split in splits:
        data = load_classification_split(LABELLED, split)
        rgb_idx = [data.band_names.index(b) for b in ("B04", "B03", "B02")]
        for i, (image, label) in enumerate(zip(data.images, data.labels)):
            if limit is not None and i >= limit:
                break
            rgb = image[rgb_idx].astype(np.float32)
            rgb = np.clip((rgb - 500) / 2500 * 255, 0, 255).astype(np.uint8).transpose(1, 2, 0)
            folder = root / split / data.label_names[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb).save(folder / f"{i:04d}.png")
    return root


def wake_metadata_encoders(model) -> None:
    """The date and place projections start at zero (a fresh model ignores them): random
    weights, as after pretraining, so that what reaches them shows in the outputs."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "temporal_embedding" in name or "location_embedding" in name:
                param.normal_(0, 0.5)


def series_export(path: Path, data: Path, bands: list[str], frames: int, **overrides) -> Path:
    """A tiny time-series pretraining export (dates and places encoded) with the statistics and
    wavelengths of the shard dataset ``data``; ``overrides`` change its config."""
    from geofm_hf import GeoViTMAEConfig, GeoViTMAEForPreTraining, GeoViTMAEImageProcessor

    info = read_dataset_info(data)
    torch.manual_seed(0)
    options = dict(num_frames=frames, temporal_encoding=True, location_encoding=True)
    config = GeoViTMAEConfig.from_preset(
        "tiny", band_names=bands, wavelengths_um=info.wavelengths_um,
        image_mean=info.mean, image_std=info.std, **{**SMALL, **options, **overrides},
    )  # fmt: skip
    model = GeoViTMAEForPreTraining(config)
    wake_metadata_encoders(model)
    model.save_pretrained(path)
    GeoViTMAEImageProcessor.from_model_config(config).save_pretrained(path)
    return path
