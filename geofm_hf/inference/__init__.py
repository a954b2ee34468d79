"""Maps out of whole scenes: window embeddings (GeoParquet / COG), search, segmentation maps."""

from .embed import EmbedSummary, embed
from .search import search

__all__ = ["EmbedSummary", "embed", "search"]
