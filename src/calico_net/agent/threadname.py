"""The kernel's name for the calling thread (`top -H`, `ps -L`, /proc/PID/task/TID/comm),
set to the thread's Python name, so that an operator (or a benchmark) can see which of
the agent's threads uses the CPU. Linux keeps 15 bytes of it; elsewhere, or if the
call fails, nothing happens."""
from __future__ import annotations

import ctypes
import ctypes.util
import threading

_PR_SET_NAME = 15
_libc = None


def name_os_thread(name: str | None = None) -> None:
    """Give the calling thread `name` (default: its Python name) in the kernel."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        text = (name or threading.current_thread().name).encode("utf-8", "replace")[:15]
        _libc.prctl(_PR_SET_NAME, ctypes.c_char_p(text), 0, 0, 0)
    except (OSError, AttributeError):
        pass
