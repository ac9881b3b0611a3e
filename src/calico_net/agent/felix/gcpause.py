"""Pausing Python's cyclic garbage collector while the agent builds its state.

A cold start and a big apply allocate millions of long-lived containers and free
next to nothing cyclic: the collector would walk the growing heap again and
again while finding nothing to free. `GcPause` turns it off (only if it was on)
and back on; the daemon holds it until its first apply and then freezes what it
built (`gc.freeze()`: later collections only look at what was allocated since),
and the policy dataplane pauses it for each apply (`with GcPause():`). Plain
refcounting frees as usual throughout.

With the freeze, the C allocator's free pages go back to the system
(`trim_heap`: glibc's ``malloc_trim``): a cold start's transient buffers (etcd's
response pages, the values decoded for validation, the full nft script) are
freed by then, but glibc keeps such pages resident, interleaved with what stays.
"""
from __future__ import annotations

import ctypes
import gc
import time
from typing import Any

__all__ = ["GcPause", "trim_heap"]

_malloc_trim: Any = None


def trim_heap() -> bool:
    """Return the C heap's free pages to the system; False where there is no
    ``malloc_trim`` (not glibc)."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
            _malloc_trim.argtypes = [ctypes.c_size_t]
            _malloc_trim.restype = ctypes.c_int
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim is False:
        return False
    _malloc_trim(0)
    return True


class GcPause:
    """Cyclic GC off from `hold()` (or entering the block) until `release()` (or
    leaving it), if it was on at `hold()`; `expired()` tells when a hold with
    `max_seconds` has run out."""

    __slots__ = ("held", "until")

    def __init__(self) -> None:
        self.held = False
        self.until = float("inf")

    def hold(self, max_seconds: float = float("inf")) -> None:
        if gc.isenabled():
            gc.disable()
            self.held = True
            self.until = time.monotonic() + max_seconds

    def release(self, freeze: bool = False) -> None:
        if self.held:
            self.held = False
            if freeze:
                gc.freeze()
                trim_heap()
            gc.enable()

    def expired(self, now: float) -> bool:
        return self.held and now > self.until

    def __enter__(self) -> "GcPause":
        self.hold()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
