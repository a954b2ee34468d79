"""``image-feature-extraction`` for multispectral arrays as well as RGB images.

transformers' pipeline turns every input into a PIL image first, which cannot hold 13 uint16
bands. This subclass hands arrays (``(C, H, W)`` numpy / torch, or ``{band: array}``) straight
to the model's image processor, which orders and normalises the bands by name; anything else
(PIL images, paths, URLs) takes the stock route. Every export (``save_pretrained``, the
pretraining export, the converters: ``modeling_geofm.write_remote_code``) copies this file next
to the weights and names it in ``config.custom_pipelines``, so
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
            inputs = dict(
                self.image_processor(image, return_tensors="pt", **image_processor_kwargs)
            )
            # Everything the processor returns is a model input: pixel_mask keeps nodata and
            # padding out of the features, wavelengths/gsd name the bands and the scale.
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
            return inputs
        return super().preprocess(image, timeout=timeout, **image_processor_kwargs)


__all__ = ["GeoViTMAEFeatureExtractionPipeline"]
