"""A per-node IPAM lock between the processes of one host, with a hint of the block
written last.

Calico's CNI plugin serialises IPAM on a host with a file lock
(`/var/run/calico/ipam.lock`): a runtime starting many containers at once otherwise
has every CNI process racing for the same affine block, and all but one of them lose
each compare-and-swap. `HostLock` does the same per node name (one file per node, so
one host simulating several nodes, as the bench and tests do, locks them separately),
with `fcntl.flock`, which the kernel drops when the holder dies.

The lock file also carries a hint: the node's block written last, with its etcd mod
revision (a header line `<cidr> <revision>\\n`, then the block's JSON). The next holder
starts from it instead of from its own, possibly older, cached copy, so the
compare-and-swap that follows normally succeeds at the first try. The hint is only a
hint: every write still compares the block's revision and its bytes in etcd, so a
stale, missing or damaged hint costs a retry, never a wrong allocation. The bytes
matter because the file outlives etcd's history: after etcd is restored from a
snapshot (or rebuilt) the same revision can hold another block.

Best effort, as in Calico: when the directory or file cannot be used, IPAM goes on
without the lock (and says so once in the log).
"""
from __future__ import annotations

import fcntl
import logging
import os

from calico_net.ipam.block import IPNetwork, parse_cidr
from calico_net.ipam.keys import check_node_name

log = logging.getLogger(__name__)

MAX_HINT_BYTES = 1 << 20


class HostLock:
    """One node's lock file. Not thread-safe: one per IPAM object (flock excludes
    other open files, including another IPAM object's in the same process)."""

    def __init__(self, directory: str, node: str) -> None:
        self._fd: int | None = None
        # The node name is one file name component here: check_node_name refuses
        # "/", NUL, newline and the like (ValueError).
        self.path = os.path.join(directory, f"ipam-{check_node_name(node)}.lock")
        self._pid = 0
        self._held = False
        self._failed = False

    def _open(self) -> int | None:
        if self._fd is not None and self._pid == os.getpid():
            return self._fd
        # a descriptor inherited over fork shares the parent's lock: open our own
        self._fd = None
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._pid = os.getpid()
        except OSError as e:
            if not self._failed:
                log.warning("IPAM host lock %s unusable (%s): going on without it", self.path, e.strerror)
            self._failed = True
            return None
        return self._fd

    def acquire(self) -> bool:
        """Block until the lock is ours; False when there is no usable lock file."""
        fd = self._open()
        if fd is None:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:
            log.warning("IPAM host lock %s: %s: going on without it", self.path, e.strerror)
            return False
        self._held = True
        return True

    def release(self) -> None:
        if self._held and self._fd is not None:
            self._held = False
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def read_hint(self) -> tuple[IPNetwork, int, bytes] | None:
        """(block CIDR, mod revision, block JSON) written by the last holder, if any."""
        if not self._held or self._fd is None:
            return None
        try:
            data = os.pread(self._fd, MAX_HINT_BYTES, 0)
            header, _, body = data.partition(b"\n")
            cidr_text, rev_text = header.decode("ascii").split(" ")
            if not body:
                return None
            return parse_cidr(cidr_text), int(rev_text), body
        except (OSError, ValueError):
            return None  # empty (new) file, or damaged: no hint

    def write_hint(self, cidr: IPNetwork, revision: int, value: bytes) -> None:
        if not self._held or self._fd is None or len(value) > MAX_HINT_BYTES:
            return
        data = f"{cidr} {revision}\n".encode("ascii") + value
        try:
            os.pwrite(self._fd, data, 0)
            os.ftruncate(self._fd, len(data))
        except OSError as e:
            log.debug("IPAM host lock %s: cannot write the hint: %s", self.path, e.strerror)

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            self.release()
            os.close(self._fd)  # closing also drops the lock
        self._fd = None
        self._held = False

    def __del__(self) -> None:
        try:
            self.close()
        except OSError:
            pass
