"""Nearest windows by cosine similarity over a ``geofm-embed`` GeoParquet file."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa

__all__ = ["search"]


def search(embeddings: str | os.PathLike | pa.Table, query, k: int = 10,
           exclude_query: bool = True) -> pa.Table:  # fmt: skip
    """The ``k`` windows most similar (cosine) to ``query``, most similar first.

    Args:
        embeddings: a ``geofm-embed`` GeoParquet file (or the table read from one).
        query: a row index into ``embeddings`` (a window of the file), or a vector of the
            embedding width.
        k: how many windows to return.
        exclude_query: with a row index, leave that row out of the answer.

    Returns:
        A table of the ``k`` rows (every column but ``embedding``: ``geometry`` WKB in the file's
        CRS, ``bbox``, source, row, col ...) with ``similarity`` and ``index`` (row in the file)
        first.
    """
    import pyarrow.parquet as pq

    table = embeddings if isinstance(embeddings, pa.Table) else pq.read_table(embeddings)
    if "embedding" not in table.column_names:
        raise ValueError(
            f"expected a geofm-embed table with an 'embedding' column: found {table.column_names}"
        )
    column = table.column("embedding").combine_chunks()
    n = len(column)
    matrix = column.values.to_numpy(zero_copy_only=False).reshape(n, -1).astype(np.float32)
    if isinstance(query, (int, np.integer)):
        if not 0 <= int(query) < n:
            raise IndexError(f"query row {query} is outside the table's {n} rows.")
        vector = matrix[int(query)]
    else:
        vector = np.asarray(query, dtype=np.float32).reshape(-1)
        if vector.shape[0] != matrix.shape[1]:
            raise ValueError(
                f"query vector has {vector.shape[0]} values; the embeddings have {matrix.shape[1]}."
            )
        exclude_query = False
    norms = np.linalg.norm(matrix, axis=1) * max(float(np.linalg.norm(vector)), 1e-12)
    scores = matrix @ vector / np.maximum(norms, 1e-12)
    if exclude_query:
        scores[int(query)] = -np.inf
    k = min(k, n - (1 if exclude_query else 0))
    top = np.argpartition(-scores, k - 1)[:k] if k < n else np.arange(n)
    top = top[np.argsort(-scores[top], kind="stable")][:k]
    out = table.drop_columns(["embedding"]).take(pa.array(top))
    out = out.add_column(0, "index", pa.array(top, pa.int64()))
    return out.add_column(0, "similarity", pa.array(scores[top], pa.float32()))
