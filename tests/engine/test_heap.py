"""The allocator setting every smpc process makes at start-up: large buffers come from the
heap and stay there when freed (so the next one reuses the pages); SMPC_KEEP_FREED_MEMORY=0
leaves glibc's malloc alone."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = """
import ctypes, sys
from parties.engine import heap
took = heap.keep_freed_memory()
libc = ctypes.CDLL("libc.so.6")
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                               "usmblks", "fsmblks", "uordblks", "fordblks",
                                               "keepcost")]
libc.mallinfo2.restype = Info
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = 64 << 20
first = libc.malloc(size)
mapped = libc.mallinfo2().hblkhd  # bytes handed out by mmap rather than the heap
libc.free(first)
kept = libc.mallinfo2().fordblks  # free bytes the heap keeps for reuse
again = libc.malloc(size)
print(int(took), mapped, kept, int(again == first))
"""


def _probe(**env: str) -> list[int]:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         check=True, env={**os.environ, **env}, timeout=60)
    return [int(v) for v in out.stdout.split()]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_large_buffers_stay_in_the_heap_and_are_reused() -> None:
    took, mapped, kept, same = _probe()
    assert took == 1
    assert mapped < 64 << 20  # 64 MiB came from the heap, not a fresh mmap
    assert kept >= 64 << 20  # and stayed there once freed
    assert same == 1  # the next buffer reuses the same pages


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_the_setting_can_be_turned_off() -> None:
    took, mapped, kept, _ = _probe(SMPC_KEEP_FREED_MEMORY="0")
    assert took == 0
    assert mapped >= 64 << 20  # glibc's default: a large buffer is its own mmap
    assert kept < 64 << 20  # and goes back to the kernel when freed
