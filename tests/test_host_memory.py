"""CPU ranks return freed tensors to the OS (geofm_hf.training.host_memory)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# What an FSDP2 rank does to the heap: a large freed tensor raises glibc's dynamic mmap threshold,
# then a block-sized tensor (8 MiB) is allocated. glibc's own count of mapped bytes (mallinfo2)
# says where it went: mapped (returned to the OS on free) or heap (kept by the process).
_SCENARIO = """
import ctypes, importlib.util, sys, torch
# Loaded alone: importing the package first would change the heap this scenario measures.
spec = importlib.util.spec_from_file_location("host_memory", sys.argv[2])
host_memory = importlib.util.module_from_spec(spec)
spec.loader.exec_module(host_memory)
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split())]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
if sys.argv[1] == "pin":
    print(host_memory.pin_mmap_threshold())
big = torch.ones(30 << 18)
del big
mapped = libc.mallinfo2().hblkhd
block = torch.ones(2 << 20)
print("MAPPED_MIB", (libc.mallinfo2().hblkhd - mapped) / 2**20)
"""


def _mapped_mib(mode: str, **env) -> tuple[float, str]:
    out = subprocess.run(
        [sys.executable, "-c", _SCENARIO, mode, str(ROOT / "geofm_hf/training/host_memory.py")],
        env={
            **{k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"},
            **env,
        },
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("MAPPED_MIB"))
    return float(line.split()[1]), out


needs_glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION"),
    reason="glibc's allocator only",
)


@needs_glibc
def test_pinned_threshold_maps_block_sized_tensors():
    heap, _ = _mapped_mib("default")
    mapped, out = _mapped_mib("pin")
    # glibc's default (threshold raised to 30 MiB by the freed tensor) puts the 8 MiB block in
    # the heap, where freeing it returns nothing; pinned, it is mapped and unmapped on free.
    assert heap == 0, f"glibc's default no longer raises its threshold: {heap} MiB mapped"
    assert mapped >= 8, out
    assert "pinned at 1 MiB" in out


@needs_glibc
def test_an_explicit_glibc_setting_is_left_alone():
    mapped, out = _mapped_mib("pin", MALLOC_MMAP_THRESHOLD_="33554432")
    assert mapped == 0, out
    assert "MALLOC_MMAP_THRESHOLD_=33554432 from the environment, left as set" in out


def test_threshold_must_be_positive():
    from geofm_hf.training.host_memory import pin_mmap_threshold

    with pytest.raises(ValueError, match="must be > 0: found 0"):
        pin_mmap_threshold(0)
