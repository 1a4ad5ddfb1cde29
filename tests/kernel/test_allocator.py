"""The operator's C allocator setting, observed through glibc's own counters.

Each case runs in a fresh interpreter: the setting is for the whole process, and the
dynamic threshold it turns off moves only on the first large blocks a process frees.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator only")

# Frees one mapped block of 256 KiB (glibc then raises its threshold to that size, unless
# fixed), then prints how many mapped blocks a new 200 KiB block added: 1 when it got a
# mapping of its own, 0 when it was cut from an arena.
_PROBE = textwrap.dedent(
    """
    import ctypes, ctypes.util, sys
    from plait.kernel.allocator import fix_mmap_threshold

    class Mallinfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallinfo2.restype = Mallinfo2
    fixed = fix_mmap_threshold() if sys.argv[1] == "fix" else None
    freed = bytearray(256 * 1024)
    del freed
    before = libc.mallinfo2().hblks
    block = bytearray(200 * 1024)
    print(fixed, libc.mallinfo2().hblks - before)
    """
)


def _probe(mode: str, **environ: str) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(environ)
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0], int(out[1])


def test_without_the_fix_a_freed_large_block_moves_the_threshold_past_the_next_one() -> None:
    assert _probe("leave") == ("None", 0)


def test_the_fixed_threshold_gives_every_large_block_its_own_mapping() -> None:
    assert _probe("fix") == ("True", 1)


def test_a_threshold_set_in_the_environment_is_left_as_the_owner_chose() -> None:
    # 1 MiB: the 200 KiB block comes from an arena, and the call does not override it.
    assert _probe("fix", MALLOC_MMAP_THRESHOLD_=str(1024 * 1024)) == ("False", 0)
