"""How much of the dataset each reader touches: the stream's layout at 8..8192 readers.

    python benchmarks/simulate_readers.py [--epochs 2] [--rows-per-shard 1200]

Pure metadata (no I/O): for readers (world_size x DataLoader workers) in {8, 64, 1024, 8192} and
shard counts in {10, 997, 5000}, shards shaped as geofm-make-shards writes them (equal row counts
but a shorter last shard; row groups of 64 chips; 13 x 64 x 64 uint16 chips), prints the most
shards and bytes one reader touches in an epoch against the ideal (total / readers), and the
bytes all readers fetch together against the dataset's size, for:

- ``new``: the stream's ``_Layout`` (a contiguous stretch of the epoch's shuffled shard sequence
  per reader; only the Parquet row groups under a stretch are read, plus the shard's footer);
- ``old``: the layout before it (whole shards per reader when the shard count is a multiple of
  the reader count, else every reader takes every R-th row of every shard and loads each whole).

Footer bytes come from a real Parquet footer written with the writer's schema and row groups.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from geofm_hf.data.format import SHARD_SCHEMA  # noqa: E402
from geofm_hf.data.stream import _Layout  # noqa: E402

CHIP_BYTES = 13 * 64 * 64 * 2
ROW_GROUP = 64  # geofm_hf.data.writer writes row groups of 64 chips


def footer_bytes(row_groups: int) -> int:
    """Size of a real shard footer with ``row_groups`` groups (tiny images: same metadata)."""
    n = row_groups * ROW_GROUP
    table = pa.table(
        {
            "image": [b"\0" * 8] * n,
            "shape": [[13, 64, 64]] * n,
            "dtype": ["uint16"] * n,
            "band_names": [["B01"]] * n,
            "crs": ["EPSG:32633"] * n,
            "transform": [[10.0, 0.0, 0.0, 0.0, -10.0, 0.0]] * n,
            "bounds": [[0.0, 0.0, 1.0, 1.0]] * n,
            "source": ["scene"] * n,
            "datetime": ["2020-01-01"] * n,
            "gsd_m": [10.0] * n,
            "chip_id": [f"c{i}" for i in range(n)],
        },
        schema=SHARD_SCHEMA,
    )
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", row_group_size=ROW_GROUP)
    return pq.ParquetFile(io.BytesIO(buf.getvalue())).metadata.serialized_size + 8


def simulate(n_shards: int, readers: int, rows: int, epochs: int) -> dict[str, float]:
    counts = [rows] * (n_shards - 1) + [max(1, rows * 7 // 12)]
    groups = [math.ceil(c / ROW_GROUP) for c in counts]
    foot = {g: footer_bytes(g) for g in set(groups)}
    shard_bytes = [c * CHIP_BYTES + foot[g] for c, g in zip(counts, groups)]
    total = sum(shard_bytes)
    layout = _Layout(counts, 0, readers, 0, 1, drop_last=True)
    max_shards = max_bytes = 0
    fetched = 0.0
    for epoch in range(epochs):
        for g in range(readers):
            pieces = layout.reader_pieces(epoch, g)
            nbytes = 0
            for shard, a, b in pieces:
                g0, g1 = a // ROW_GROUP, (b - 1) // ROW_GROUP
                group_rows = min((g1 + 1) * ROW_GROUP, counts[shard]) - g0 * ROW_GROUP
                nbytes += group_rows * CHIP_BYTES + foot[groups[shard]]
            max_shards = max(max_shards, len(pieces))
            max_bytes = max(max_bytes, nbytes)
            fetched += nbytes
    if n_shards % readers == 0:  # the old layout's "shard" mode
        per = [0] * readers
        for k, s in enumerate(np.random.default_rng(0).permutation(n_shards)):
            per[k % readers] += shard_bytes[s]
        old_shards, old_bytes, old_all = n_shards // readers, max(per), float(total)
    else:  # "row" mode: every reader loads every shard whole
        old_shards, old_bytes, old_all = n_shards, total, float(total) * readers
    return {
        "ideal": total / readers,
        "bound": math.ceil(n_shards / readers) + 1,
        "new_shards": max_shards,
        "new_bytes": max_bytes,
        "new_all": fetched / epochs / total,
        "old_shards": old_shards,
        "old_bytes": old_bytes,
        "old_all": old_all / total,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=2, help="worst case over this many epochs")
    p.add_argument("--rows-per-shard", type=int, default=1200, help="~128 MB of 13x64x64 chips")
    args = p.parse_args()
    print(f"chips of {CHIP_BYTES / 1e3:.0f} kB, {args.rows_per_shard} per shard, row groups of "
          f"{ROW_GROUP}; worst reader over {args.epochs} epochs")  # fmt: skip
    head = (f"{'readers':>7} {'shards':>6} {'ideal MB':>9} | {'new: shards':>11} {'(bound)':>7} "
            f"{'MB':>9} {'x ideal':>8} {'all/total':>9} | {'old: shards':>11} {'MB':>9} "
            f"{'x ideal':>8} {'all/total':>9}")  # fmt: skip
    print(head)
    print("-" * len(head))
    for readers in (8, 64, 1024, 8192):
        for n_shards in (10, 997, 5000):
            r = simulate(n_shards, readers, args.rows_per_shard, args.epochs)
            print(
                f"{readers:>7} {n_shards:>6} {r['ideal'] / 1e6:>9.1f} | {r['new_shards']:>11} "
                f"{'(' + str(r['bound']) + ')':>7} {r['new_bytes'] / 1e6:>9.1f} "
                f"{r['new_bytes'] / r['ideal']:>8.2f} {r['new_all']:>9.3f} | "
                f"{r['old_shards']:>11} {r['old_bytes'] / 1e6:>9.1f} "
                f"{r['old_bytes'] / r['ideal']:>8.2f} {r['old_all']:>9.1f}"
            )


if __name__ == "__main__":
    main()
