"""``image-feature-extraction`` for multispectral arrays as well as RGB images.

transformers' pipeline turns every input into a PIL image first, which cannot hold 13 uint16
bands. This subclass hands arrays (``(C, H, W)`` numpy / torch, or ``{band: array}``) straight
to the model's image processor, which orders and normalises the bands by name; anything else
(PIL images, paths, URLs) takes the stock route. ``save_pretrained`` copies this file next to the
weights and names it in ``config.custom_pipelines``, so
``pipeline("image-feature-extraction", model=..., revision=..., trust_remote_code=True)`` picks
it; with geofm_hf installed, ``pipeline_class=GeoViTMAEFeatureExtractionPipeline`` does too.

This file is copied next to the weights (remote code), so it must only import ``numpy``,
``torch`` and ``transformers``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from transformers.pipelines.image_feature_extraction import ImageFeatureExtractionPipeline


class GeoViTMAEFeatureExtractionPipeline(ImageFeatureExtractionPipeline):
    """Features of RGB images and of multispectral ``(C, H, W)`` arrays."""

    def preprocess(self, image, timeout=None, **image_processor_kwargs):
        if isinstance(image, (np.ndarray, torch.Tensor, Mapping)):
            inputs = self.image_processor(image, return_tensors="pt", **image_processor_kwargs)
            inputs = {k: v for k, v in inputs.items() if k == "pixel_values"}
            return {"pixel_values": inputs["pixel_values"].to(self.dtype)}
        return super().preprocess(image, timeout=timeout, **image_processor_kwargs)


__all__ = ["GeoViTMAEFeatureExtractionPipeline"]
