"""Cost of the reliability checks on the bundled Sentinel-2 data, each against a baseline run side
by side in the same process (alternating, median of ``--reps``):

- start-up footer check of every shard vs one pass reading every shard (what it saves you from
  discovering late);
- reading with page-checksum verification vs without (the bundled shards are rewritten with page
  checksums first, as geofm-make-shards writes them);
- the full SHA-256 check (``check_shard_footers(full=True)``) vs the footer check.

    python benchmarks/bench_startup_checks.py [--reps 7]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from geofm_hf.data import read_dataset_info, sample_dataset_path  # noqa: E402
from geofm_hf.data.publish import _sha256, _write_parquet_atomic  # noqa: E402
from geofm_hf.data.verify import check_shard_footers  # noqa: E402


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _with_checksums(src: Path, dst: Path) -> None:
    """A copy of ``src`` whose shards carry page checksums and hashes, as the writer makes them."""
    shutil.copytree(src, dst)
    info = read_dataset_info(dst)
    for entries in info.shards.values():
        for entry in entries:
            path = dst / entry["file"]
            _write_parquet_atomic(pq.read_table(path), path)
            entry.update(bytes=path.stat().st_size, sha256=_sha256(path))
    info.save(dst / "geofm_dataset.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ds = Path(tmp) / "s2"
        _with_checksums(Path(sample_dataset_path()), ds)
        info = read_dataset_info(ds)
        files = [ds / e["file"] for entries in info.shards.values() for e in entries]
        total_mb = sum(f.stat().st_size for f in files) / 1e6

        def footers():
            for split in info.shards:
                assert not check_shard_footers(ds, info, split)

        def full():
            for split in info.shards:
                assert not check_shard_footers(ds, info, split, full=True)

        def read(verify: bool):
            return lambda: [pq.read_table(f, page_checksum_verification=verify) for f in files]

        runs = {"footers": [], "full": [], "read": [], "read_verified": []}
        for _ in range(args.reps):  # alternate so background load hits every variant alike
            runs["footers"].append(_timed(footers))
            runs["read"].append(_timed(read(False)))
            runs["read_verified"].append(_timed(read(True)))
            runs["full"].append(_timed(full))
        t = {k: statistics.median(v) for k, v in runs.items()}
    print(f"bundled data: {len(files)} shards, {total_mb:.2f} MB, median of {args.reps} runs")
    print(f"start-up footer check: {t['footers'] * 1e3:.2f} ms "
          f"({t['footers'] / len(files) * 1e3:.2f} ms per shard); one read of every shard "
          f"{t['read'] * 1e3:.1f} ms: ratio {t['footers'] / t['read']:.3f}")  # fmt: skip
    print(f"read with page-checksum verification {t['read_verified'] * 1e3:.1f} ms vs without "
          f"{t['read'] * 1e3:.1f} ms: ratio {t['read_verified'] / t['read']:.3f}")  # fmt: skip
    print(f"full SHA-256 check {t['full'] * 1e3:.1f} ms vs footer check "
          f"{t['footers'] * 1e3:.2f} ms: ratio {t['full'] / t['footers']:.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
