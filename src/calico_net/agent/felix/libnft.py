"""nft transactions through libnftables in this process (ctypes), without the nft CLI.

Owns `LibNft`, one libnftables context, and `load`, which finds the library. Why:
an incremental change that is not element-only (a policy edited, a new policy
combination) is a small ``nft -f`` script, but the nft CLI pays for a fork/exec,
its own start and a full cache read of our table before it commits. The same
script given to libnftables in the agent's process skips the new process, and
ctypes releases the GIL for the call, so other threads keep running.

One `nft_ctx` per `LibNft`, output and errors buffered (read back for the error
message), the script passed whole to `nft_run_cmd_from_buffer` — one transaction,
exactly as ``nft -f -``. With a network namespace the calling thread enters it
(`netlink.in_netns`) around context creation and every call. Full loads of the
whole table stay with the CLI (`NftRunner` decides): libnftables' parser needs a
lot of memory for a big table, which would stay in the agent's resident set.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import threading

from .netlink import in_netns

__all__ = ["LibNft", "load"]

_lib: ctypes.CDLL | None = None
_lib_error: str | None = None
_lock = threading.Lock()


def load() -> ctypes.CDLL | None:
    """libnftables, or None if it cannot be loaded (then the CLI is used)."""
    global _lib, _lib_error
    with _lock:
        if _lib is not None or _lib_error is not None:
            return _lib
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("nftables") or "libnftables.so.1")
            lib.nft_ctx_new.restype = ctypes.c_void_p
            lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
            lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_free.restype = None
            lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
            lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
            lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
            lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        except (OSError, AttributeError) as exc:
            _lib_error = str(exc)
            return None
        _lib = lib
        return lib


class LibNft:
    """One libnftables context; `run(script)` is one atomic transaction."""

    def __init__(self, netns: str | None = None) -> None:
        lib = load()
        if lib is None:
            raise OSError(f"libnftables not available: {_lib_error}")
        self._lib = lib
        self.netns = netns
        with in_netns(netns):
            ctx = lib.nft_ctx_new(0)          # NFT_CTX_DEFAULT: opens its netlink socket now
        if not ctx:
            raise OSError("nft_ctx_new failed")
        self._ctx = ctx
        lib.nft_ctx_buffer_output(ctx)
        lib.nft_ctx_buffer_error(ctx)

    def run(self, script: str) -> str | None:
        """Run `script`; None on success, else nft's error text."""
        with in_netns(self.netns):
            rc = self._lib.nft_run_cmd_from_buffer(self._ctx, script.encode())
        err = self._lib.nft_ctx_get_error_buffer(self._ctx) or b""
        self._lib.nft_ctx_get_output_buffer(self._ctx)   # drop (and reset) any output
        if rc != 0:
            return err.decode(errors="replace") or f"libnftables returned {rc}"
        return None

    def close(self) -> None:
        if self._ctx:
            self._lib.nft_ctx_free(self._ctx)
            self._ctx = None

    def __del__(self) -> None:  # pragma: no cover - interpreter shutdown order
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass
