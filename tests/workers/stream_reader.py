"""Launched by tests/test_data_hub.py: one rank streaming a Hub dataset repo over HTTP.

Reads batches of ``make_pretrain_dataloader(repo, rank, world_size)`` and, after each batch,
writes the chip ids so far and ``state_dict()`` atomically to OUT (JSON). With ``--resume`` it
starts from OUT's saved state. With ``--hang-after K`` it stops after K batches and waits to be
killed (the test SIGKILLs it, as a node failure would). The start-up footer check
(``check_shards``) is off: the test counts what the stream itself fetches.
"""

import argparse
import json
import time

from geofm_hf._atomic import atomic_write_text
from geofm_hf.data import make_pretrain_dataloader


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("repo")
    p.add_argument("out")
    p.add_argument("--rank", type=int, required=True)
    p.add_argument("--world-size", type=int, required=True)
    p.add_argument("--batch-size", type=int, default=6)
    p.add_argument("--batches", type=int, default=None, help="default: one epoch")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--hang-after", type=int, default=None)
    args = p.parse_args()
    loader = make_pretrain_dataloader(
        args.repo, batch_size=args.batch_size, seed=5, rank=args.rank,
        world_size=args.world_size, return_chip_ids=True, check_shards=False,
    )  # fmt: skip
    record = {"ids": [], "state": loader.state_dict()}
    if args.resume:
        with open(args.out) as fh:
            record = json.load(fh)
        loader.load_state_dict(record["state"])
    total = args.batches or loader.batches_per_epoch
    done = record["state"]["batches_consumed"]
    for _, (_, ids) in zip(range(total - done), loader):
        record["ids"].append(ids)
        record["state"] = loader.state_dict()
        record["bytes_read"] = loader.stream.stats.get("bytes_read", 0)
        atomic_write_text(args.out, json.dumps(record))
        if args.hang_after is not None and len(record["ids"]) >= args.hang_after:
            while True:
                time.sleep(1)


if __name__ == "__main__":
    main()
