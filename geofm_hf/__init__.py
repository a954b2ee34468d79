"""geofm_hf: billion-scale geospatial ViT-MAE foundation models for the Hugging Face ecosystem.

Importing the package registers the models with transformers' Auto classes::

    import geofm_hf  # noqa: F401
    from transformers import AutoModel
    model = AutoModel.from_pretrained("path/or/repo", revision="...")
"""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForPreTraining,
    AutoModelForSemanticSegmentation,
)

from ._version import __version__ as __version__
from .configuration_geofm import (
    PAPER_PARAMETER_COUNTS,
    PRESETS,
    GeoViTMAEConfig,
    GeoViTMAEInputError,
)
from .convert import config_from_vitmae, convert_from, from_transformers_vitmae, to_timm
from .image_processing_geofm import GeoViTMAEImageProcessor
from .modeling_geofm import (
    GeoViTMAEForImageClassification,
    GeoViTMAEForPreTraining,
    GeoViTMAEForSemanticSegmentation,
    GeoViTMAEModel,
    GeoViTMAEPreTrainedModel,
    count_parameters,
    flops_per_image,
    select_input_bands,
)


def embed(*args, **kwargs):
    """Embed every window of whole scenes: see :func:`geofm_hf.inference.embed`."""
    from .inference.embed import embed as _embed

    return _embed(*args, **kwargs)


def search(*args, **kwargs):
    """Nearest windows by cosine similarity: see :func:`geofm_hf.inference.search`."""
    from .inference.search import search as _search

    return _search(*args, **kwargs)


def _register() -> None:
    AutoConfig.register(GeoViTMAEConfig.model_type, GeoViTMAEConfig, exist_ok=True)
    AutoModel.register(GeoViTMAEConfig, GeoViTMAEModel, exist_ok=True)
    AutoModelForPreTraining.register(GeoViTMAEConfig, GeoViTMAEForPreTraining, exist_ok=True)
    AutoModelForImageClassification.register(
        GeoViTMAEConfig, GeoViTMAEForImageClassification, exist_ok=True
    )
    AutoModelForSemanticSegmentation.register(
        GeoViTMAEConfig, GeoViTMAEForSemanticSegmentation, exist_ok=True
    )
    AutoImageProcessor.register(
        GeoViTMAEConfig,
        image_processor_classes={
            "pil": GeoViTMAEImageProcessor,
            "torchvision": GeoViTMAEImageProcessor,
        },
        exist_ok=True,
    )
    # Saving then copies the code and writes `auto_map`, so checkpoints load with
    # trust_remote_code=True where this package is not installed.
    GeoViTMAEConfig.register_for_auto_class("AutoConfig")
    GeoViTMAEImageProcessor.register_for_auto_class("AutoImageProcessor")
    for cls, auto in (
        (GeoViTMAEModel, "AutoModel"),
        (GeoViTMAEForPreTraining, "AutoModelForPreTraining"),
        (GeoViTMAEForImageClassification, "AutoModelForImageClassification"),
        (GeoViTMAEForSemanticSegmentation, "AutoModelForSemanticSegmentation"),
    ):
        cls.register_for_auto_class(auto)


_register()

__all__ = [
    "PAPER_PARAMETER_COUNTS",
    "PRESETS",
    "GeoViTMAEConfig",
    "GeoViTMAEForImageClassification",
    "GeoViTMAEForPreTraining",
    "GeoViTMAEForSemanticSegmentation",
    "GeoViTMAEImageProcessor",
    "GeoViTMAEInputError",
    "GeoViTMAEModel",
    "GeoViTMAEPreTrainedModel",
    "config_from_vitmae",
    "convert_from",
    "count_parameters",
    "embed",
    "flops_per_image",
    "from_transformers_vitmae",
    "search",
    "select_input_bands",
    "to_timm",
]
