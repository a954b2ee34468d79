"""Import public geospatial MAEs into geofm_hf, and hand our encoders to timm users.

- :func:`convert_from` / ``geofm-convert``: known Hub sources, checkpoint files, state dicts
  and in-memory timm / transformers models -> a geofm_hf export (one module per source family:
  :mod:`.vitmae` transformers, :mod:`.layout` timm / MAE / Prithvi, :mod:`.timm` timm modules).
- :func:`to_timm`: our encoder as a timm-layout state dict and ``VisionTransformer`` kwargs.
"""

from .api import (
    UnsafeCheckpointError,
    convert_from,
    download_known_source,
    export,
    load_checkpoint,
    main,
)
from .layout import Conversion, UnsupportedSourceError, convert_mae_layout
from .sources import KNOWN_SOURCES, KnownSource
from .timm import from_timm_module, to_timm
from .vitmae import config_from_vitmae, from_transformers_vitmae

__all__ = [
    "KNOWN_SOURCES",
    "Conversion",
    "KnownSource",
    "UnsafeCheckpointError",
    "UnsupportedSourceError",
    "config_from_vitmae",
    "convert_from",
    "convert_mae_layout",
    "download_known_source",
    "export",
    "from_timm_module",
    "from_transformers_vitmae",
    "load_checkpoint",
    "main",
    "to_timm",
]
