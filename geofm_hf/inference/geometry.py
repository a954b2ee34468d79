"""Window geometry: where the windows of a scene lie, and where their embedding pixels lie."""

from __future__ import annotations

import math

from affine import Affine

__all__ = ["embedding_transform", "window_origins"]


def window_origins(size: int, window: int, stride: int) -> list[int]:
    """Offsets of windows of ``window`` px every ``stride`` px covering ``size`` px.

    The last window may reach past the edge (it is padded and its valid fraction says so), so
    the windows form one regular grid that covers every pixel.
    """
    count = math.ceil(max(size - window, 0) / stride) + 1
    return [i * stride for i in range(count)]


def embedding_transform(transform: Affine, window: int, stride: int, pooling: str,
                        patch: int) -> Affine:  # fmt: skip
    """Geotransform of the embedding raster of a scene with pixel transform ``transform``.

    cls/mean: one pixel per window, ``stride`` scene pixels wide, centred on its window (with
    ``stride == window`` the pixel is exactly the window). patch: one pixel per patch.
    """
    if pooling == "patch":
        return transform @ Affine.scale(patch)
    offset = (window - stride) / 2
    return transform @ Affine.translation(offset, offset) @ Affine.scale(stride)
