"""The public geospatial MAEs geofm_hf imports by name: where their weights live, their
published architecture and their band contract, each value cited to where it is published."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..bands import SENSORS, band_gsd, band_wavelengths

# The 13 bands in the order SSL4EO-S12 stacked them: the sensor table's own order.
_S2_L1C = [band.name for band in SENSORS["sentinel2-l1c"]]
# HLS v2.0 names (L30 spelling), in Prithvi's order: Blue, Green, Red, narrow NIR, SWIR 1, SWIR 2.
_HLS6 = ["B02", "B03", "B04", "B05", "B06", "B07"]

_TERRATORCH = (
    "TerraTorch 1.2.13 `terratorch/models/backbones/prithvi_vit.py` (Apache-2.0): "
    "`PRETRAINED_BANDS`, `PRITHVI_V1_MEAN/STD`, `PRITHVI_V2_MEAN/STD`, `prithvi_cfgs`, "
    "`pretrained_weights`; architecture in `prithvi_mae.py`"
)
_PRITHVI_1_CITATION = """@article{jakubik2023foundation,
  title   = {Foundation Models for Generalist Geospatial Artificial Intelligence},
  author  = {Jakubik, Johannes and Roy, Sujit and Phillips, C. E. and Fraccaro, Paolo and others},
  journal = {arXiv preprint arXiv:2310.18660},
  year    = {2023}
}"""
_PRITHVI_2_CITATION = """@article{szwarcman2024prithvi,
  title   = {Prithvi-EO-2.0: A Versatile Multi-Temporal Foundation Model for Earth Observation Applications},
  author  = {Szwarcman, Daniela and Roy, Sujit and Fraccaro, Paolo and others},
  journal = {arXiv preprint arXiv:2412.02732},
  year    = {2024}
}"""


@dataclass(frozen=True)
class KnownSource:
    """A public checkpoint: its Hub file, architecture, band contract, license and citation.

    ``arch`` are the :func:`~geofm_hf.convert.layout.convert_mae_layout` arguments the state
    dict cannot tell (heads, frames, LayerNorm eps, ...); ``expected`` the published shape the
    converted config must have (a file of another shape is refused).
    """

    name: str
    title: str
    repo_id: str
    filename: str
    revision: str | None
    arch: dict[str, Any]
    expected: dict[str, Any]
    band_names: list[str]
    sensor: str
    image_mean: list[float]
    image_std: list[float]
    license: str
    citation: str
    band_source: str
    notes: list[str] = field(default_factory=list)

    def band_contract(self) -> dict[str, Any]:
        return {
            "band_names": list(self.band_names),
            "wavelengths_um": band_wavelengths(self.band_names, self.sensor),
            "gsd_m": band_gsd(self.band_names, self.sensor),
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
        }


def _prithvi(
    name: str, title: str, repo: str, filename: str, v1: bool, tl: bool, **shape
) -> KnownSource:
    mean = [775.0, 1081.0, 1229.0, 2497.0, 2204.0, 1611.0] if v1 else [
        1087.0, 1342.0, 1433.0, 2734.0, 1958.0, 1363.0
    ]  # fmt: skip
    std = [1282.0, 1270.0, 1399.0, 1368.0, 1292.0, 1155.0] if v1 else [
        2248.0, 2179.0, 2178.0, 1850.0, 1242.0, 1049.0
    ]  # fmt: skip
    frames = 3 if v1 else 4
    heads = shape.pop("num_attention_heads")
    return KnownSource(
        name=name,
        title=title,
        repo_id=repo,
        filename=filename,
        revision=None,
        # Prithvi's blocks are timm Blocks with torch's LayerNorm (eps 1e-5); 3D sin-cos
        # positions computed from the grid; MAE decoder 512 wide, 8 blocks, 16 heads.
        arch={
            "num_heads": heads,
            "decoder_num_heads": 16,
            "num_frames": frames,
            "layer_norm_eps": 1e-5,
            "norm_pix_loss": False,
            "require_position": "sincos_3d",
        },
        expected={
            **shape,
            "num_hidden_layers": shape["num_hidden_layers"],
            "num_frames": frames,
            "tubelet_size": 1,
            "num_channels": 6,
            "image_size": 224,
            "decoder_hidden_size": 512,
            "decoder_num_hidden_layers": 8,
            # TL checkpoints hold the time and location encoders; the others must not.
            "temporal_encoding": tl,
            "location_encoding": tl,
        },
        band_names=_HLS6,
        sensor="hls-l30",
        image_mean=mean,
        image_std=std,
        license="apache-2.0",
        citation=_PRITHVI_1_CITATION if v1 else _PRITHVI_2_CITATION,
        band_source=_TERRATORCH,
        notes=[
            "Inputs are HLS v2.0 surface reflectance (scaled by 10000) in Prithvi's band order: "
            "Blue, Green, Red, narrow NIR, SWIR 1, SWIR 2 (L30 B02-B07; S30 B02, B03, B04, B8A, "
            "B11, B12).",
            f"A time series of {frames} frames, (B, T, C, H, W) in geofm_hf "
            "(Prithvi takes (B, C, T, H, W)).",
        ],
    )


KNOWN_SOURCES: dict[str, KnownSource] = {
    "ssl4eo-s12-mae-vit-s16": KnownSource(
        name="ssl4eo-s12-mae-vit-s16",
        title="SSL4EO-S12 MAE ViT-S/16, Sentinel-2 L1C, 13 bands",
        repo_id="wangyi111/SSL4EO-S12",
        filename="B13_vits16_mae_ep99_enc.pth",
        # The commit torchgeo 0.8.1 pins (ViTSmall16_Weights.SENTINEL2_ALL_MAE).
        revision="75c72195d35201dc1fb210818993518c25da566b",
        # timm vit_small_patch16_224(in_chans=13): 6 heads, LayerNorm eps 1e-6. torchgeo loads
        # the encoder with strict=False and accepts a missing final norm (left at 1/0).
        arch={"num_heads": 6, "layer_norm_eps": 1e-6, "missing_final_norm": "identity"},
        expected={
            "hidden_size": 384,
            "num_hidden_layers": 12,
            "patch_size": 16,
            "num_channels": 13,
            "image_size": 224,
        },
        band_names=_S2_L1C,
        sensor="sentinel2-l1c",
        image_mean=[0.0] * 13,
        image_std=[10000.0] * 13,
        license="cc-by-4.0",
        citation="""@article{wang2023ssl4eo,
  title   = {SSL4EO-S12: A Large-Scale Multi-Modal, Multi-Temporal Dataset for Self-Supervised Learning in Earth Observation},
  author  = {Wang, Yi and Braham, Nassim Ait Ali and Xiong, Zhitong and Liu, Chenying and Albrecht, Conrad M and Zhu, Xiao Xiang},
  journal = {IEEE Geoscience and Remote Sensing Magazine},
  year    = {2023},
  note    = {arXiv:2211.07044}
}""",
        band_source=(
            "torchgeo 0.8.1 `torchgeo/models/vit.py` (MIT): `ViTSmall16_Weights.SENTINEL2_ALL_MAE` "
            "(url, in_chans 13, model vit_small_patch16_224, bands `_sentinel2_toa_bands` "
            "B1-B12 with B8a and B10) and `_zhu_xlab_transforms` (Resize 256, CenterCrop 224, "
            "Normalize mean 0, std 10000)"
        ),
        notes=[
            "Inputs are Sentinel-2 L1C top-of-atmosphere digital numbers, all 13 bands, divided "
            "by 10000 (torchgeo: resize to 256 and centre-crop 224 first).",
        ],
    ),
    "prithvi-eo-1.0-100m": _prithvi(
        "prithvi-eo-1.0-100m",
        "Prithvi-EO-1.0 100M (HLS, 6 bands, 3 frames)",
        "ibm-nasa-geospatial/Prithvi-EO-1.0-100M",
        "Prithvi_EO_V1_100M.pt",
        v1=True,
        tl=False,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        patch_size=16,
    ),
    "prithvi-eo-2.0-300m": _prithvi(
        "prithvi-eo-2.0-300m",
        "Prithvi-EO-2.0 300M (HLS, 6 bands, 4 frames)",
        "ibm-nasa-geospatial/Prithvi-EO-2.0-300M",
        "Prithvi_EO_V2_300M.pt",
        v1=False,
        tl=False,
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        patch_size=16,
    ),
    "prithvi-eo-2.0-600m": _prithvi(
        "prithvi-eo-2.0-600m",
        "Prithvi-EO-2.0 600M (HLS, 6 bands, 4 frames)",
        "ibm-nasa-geospatial/Prithvi-EO-2.0-600M",
        "Prithvi_EO_V2_600M.pt",
        v1=False,
        tl=False,
        hidden_size=1280,
        num_hidden_layers=32,
        num_attention_heads=16,
        patch_size=14,
    ),
    "prithvi-eo-2.0-300m-tl": _prithvi(
        "prithvi-eo-2.0-300m-tl",
        "Prithvi-EO-2.0 300M TL",
        "ibm-nasa-geospatial/Prithvi-EO-2.0-300M-TL",
        "Prithvi_EO_V2_300M_TL.pt",
        v1=False,
        tl=True,
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        patch_size=16,
    ),
    "prithvi-eo-2.0-600m-tl": _prithvi(
        "prithvi-eo-2.0-600m-tl",
        "Prithvi-EO-2.0 600M TL",
        "ibm-nasa-geospatial/Prithvi-EO-2.0-600M-TL",
        "Prithvi_EO_V2_600M_TL.pt",
        v1=False,
        tl=True,
        hidden_size=1280,
        num_hidden_layers=32,
        num_attention_heads=16,
        patch_size=14,
    ),
}

__all__ = ["KNOWN_SOURCES", "KnownSource"]
