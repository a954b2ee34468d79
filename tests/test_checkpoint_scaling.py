"""Checkpoint integrity at many ranks costs each rank its own share: on save every rank hashes
about 1/world of the bytes and on resume verifies about 1/world (before: rank 0 hashed every
file of every rank, ~176 GB at 15B, while the others waited). Issue 23 item 3."""

import pytest
from pretrain_utils import CPU_FSDP_CONFIG, ROOT, launch, records

WORKER = ROOT / "tests" / "workers" / "checkpoint_costs.py"


def _ranks(tmp_path, world: int) -> list[dict]:
    result = launch(WORKER, tmp_path / f"w{world}", config=CPU_FSDP_CONFIG,
                    launch_args=("--num_processes", str(world)))  # fmt: skip
    lines = records(result.stdout, "CKPT")
    assert len(lines) == world, result.stdout[-2000:]
    return [dict(item.split("=") for item in line.split()[1:]) for line in lines]


@pytest.fixture(scope="module")
def by_world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ckpt")
    return {world: _ranks(tmp, world) for world in (2, 4)}


@pytest.mark.parametrize("phase", ["save_hashed", "verify_hashed"])
def test_each_rank_hashes_its_share_and_together_all_bytes(by_world, phase):
    for world, ranks in by_world.items():
        total = int(ranks[0]["total"])
        hashed = [int(r[phase]) for r in ranks]
        assert sum(hashed) == total, (world, hashed, total)  # every byte, exactly once
        # The FSDP2 shards are the bulk and equal-sized: no rank far past an equal share.
        assert max(hashed) <= 1.5 * total / world, (world, hashed, total)


def test_rank_zero_work_does_not_grow_with_ranks(by_world):
    for phase in ("save_hashed", "verify_hashed"):
        rank0 = {world: int(next(r for r in ranks if r["rank"] == "0")[phase])
                 for world, ranks in by_world.items()}  # fmt: skip
        assert rank0[4] <= rank0[2], (phase, rank0)
