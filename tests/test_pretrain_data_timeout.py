"""A stalled read on one rank must not hang the job (issue 23 item 13): with data workers, a rank
that gets no batch in --dataloader_timeout_s seconds stops with an error naming the rank and the
shard, and the launcher ends every rank."""

from __future__ import annotations

import re
import subprocess

import pytest
from pretrain_utils import ROOT, _command, _env, kill_tree, records

from geofm_hf.training.arguments import ArgumentError, parse_arguments

# Without the timeout the stalled worker sleeps for an hour: this bound makes the test fail
# (rather than hang CI) on code that waits for it.
_HANG_S = 240


def test_a_stalled_read_on_one_rank_ends_the_job_with_the_rank_and_shard(tmp_path):
    cmd = _command(
        ROOT / "tests" / "workers" / "stalled_read.py",
        [
            ROOT / "recipes" / "pretrain.py",
            "--config", ROOT / "recipes" / "configs" / "demo.yaml",
            "--output_dir", tmp_path / "run", "--report_to", "none",
            "--per_device_train_batch_size", "2", "--max_steps", "3", "--save_steps", "100",
            "--plot_reconstructions", "false", "--warmup_steps", "1",
            "--dataloader_num_workers", "1", "--dataloader_timeout_s", "3",
        ],
    )  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env={**_env(None), "STALL_RANK": "1"}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = proc.communicate(timeout=_HANG_S)
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)
        output = proc.communicate()[0]
        pytest.fail(f"the job hung on a stalled read for {_HANG_S} s:\n{output[-3000:]}")
    finally:
        kill_tree(proc.pid)
    assert proc.returncode != 0, output[-3000:]
    (stall,) = records(output, "STALL")
    shard = re.search(r"shard=(\d+)", stall).group(1)
    found = re.search(r"DataLoaderTimeoutError: rank 1: data worker 0 produced no batch in 3 s "
                      r"\(--dataloader_timeout_s\) while reading ([^\n]*)", output)  # fmt: skip
    assert found, output[-4000:]
    assert re.search(rf"\bshard {shard} \(\S*train-0000{shard}-of-00004\.parquet\)", found[1]), (
        found[1]
    )


@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_dataloader_timeout_must_be_positive(value):
    with pytest.raises(ArgumentError, match=r"--dataloader_timeout_s must be > 0: found"):
        parse_arguments(["--dataloader_timeout_s", value])
