"""Pausing Python's cyclic garbage collector while the agent builds its state.

A cold start and a big apply allocate millions of long-lived containers and free
next to nothing cyclic: the collector would walk the growing heap again and
again while finding nothing to free. `GcPause` turns it off (only if it was on)
and back on; the daemon holds it until its first apply and then freezes what it
built (`gc.freeze()`: later collections only look at what was allocated since),
and the policy dataplane pauses it for each apply (`with GcPause():`). Plain
refcounting frees as usual throughout.
"""
from __future__ import annotations

import gc
import time
from typing import Any

__all__ = ["GcPause"]


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
            gc.enable()

    def expired(self, now: float) -> bool:
        return self.held and now > self.until

    def __enter__(self) -> "GcPause":
        self.hold()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
