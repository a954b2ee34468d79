"""Runs ``recipes/pretrain.py`` as ``__main__`` with one read that never returns: on rank
``STALL_RANK`` the first row-group read inside a DataLoader worker sleeps for an hour, as a Hub
request or a file system that stopped answering would. Prints ``STALL rank=R shard=S`` then."""

import os
import runpy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from record import emit

from geofm_hf.data import stream

_read_row_groups = stream.GeoPretrainStream._read_row_groups


def _stalling(self, shard, *args, **kwargs):
    # DataLoader workers are forked from this process, so they inherit the patch.
    in_worker = torch.utils.data.get_worker_info() is not None
    if in_worker and self.rank == int(os.environ["STALL_RANK"]):
        emit(f"STALL rank={self.rank} shard={shard}")
        time.sleep(3600)
    return _read_row_groups(self, shard, *args, **kwargs)


stream.GeoPretrainStream._read_row_groups = _stalling
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
