"""What one `IPAM` object remembers between operations, and when it forgets it: the
six caches, the host lock that hands the block written last from one process of a
node to the next, and the methods that fill and invalidate them.

The caches only save reads. Every write compares the etcd mod revision of each key
it depends on, so a stale entry costs one failed compare, never a wrong answer. A
cached block is also compared by its bytes: a mod revision names a value only within
one etcd history, and a cache or a host lock hint can outlive that history (etcd
restored from a snapshot goes on from the snapshot's revision, so the same numbers
come round again with other contents; a cluster rebuilt from scratch does the same).

* `_block_cache` {block CIDR: (AllocationBlock, mod revision, stored bytes)}: parsed
  blocks with the exact value they were read or written as. An
  entry is taken out (`_take_block`) while a change is being made to it and put back
  (`_keep_block`) only with what etcd accepted or returned, so a change that fails
  half-way never leaves a block etcd does not have. Filled by batched reads of the
  node's affine blocks and by the host lock's hint (`_use_hint`); dropped for a block
  whose affinity this object changed, and for affine blocks a fresh view did not
  re-read.
* `_affine_cache` {(node, IP version): [block CIDR]}: a node's affine blocks in
  address order, read on first use. Replaced by every fresh view; extended by this
  object's own claims and by a hint naming a block another process just claimed;
  dropped when this object claims or releases an affinity outside an assignment.
* `_last_block` {(node, IP version): block CIDR}: the block an address came from
  last (here or, through the hint, in another process of the node), tried first next
  time so that one block fills before the next is touched.
* `_pool_cache` ([Pool], {pool name: mod revision}): the IPPools, replaced on every
  read of them (`pools()` and fresh views); a view decided on it is guarded by the
  pools' revisions.
* `_node_cache` {node: (labels, mod revision)}: a Node's labels, replaced on every
  read of the Node; consulted only when a pool has a nodeSelector.
* `_reservations` (`Reservations`): the IPReservations with the revision they were
  read at, replaced by every fresh view; an assignment decided on them requires that
  no reservation changed since, so a new reservation sends it to a fresh view.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import orjson

from calico_net.datastore.etcd import EtcdClient
from calico_net.ipam import keys
from calico_net.ipam.block import AllocationBlock, IPNetwork
from calico_net.ipam.hostlock import HostLock
from calico_net.ipam.pools import Pool
from calico_net.ipam.records import parse_block_value
from calico_net.ipam.reservations import Reservations


class IPAMCaches:
    """The caches of one `IPAM` object and its host locks (see the module docstring)."""

    client: EtcdClient

    def __init__(self, host_lock_dir: str | None) -> None:
        self._block_cache: dict[IPNetwork, tuple[AllocationBlock, int, bytes]] = {}
        self._affine_cache: dict[tuple[str, int], list[IPNetwork]] = {}
        self._last_block: dict[tuple[str, int], IPNetwork] = {}
        self._pool_cache: tuple[list[Pool], dict[str, int]] | None = None
        self._node_cache: dict[str, tuple[dict[str, str], int]] = {}
        self._reservations: Reservations | None = None
        self.host_lock_dir = host_lock_dir
        self._host_locks: dict[str, HostLock] = {}
        self._written: tuple[IPNetwork, int, bytes] | None = None  # the block written last

    # ------------------------------------------------------------------ blocks
    def _read_block(self, cidr: IPNetwork) -> tuple[AllocationBlock | None, int]:
        """The block as etcd has it now (a new object the caller may change)."""
        blk, rev, _ = self._read_block_value(cidr)
        return blk, rev

    def _read_block_value(self, cidr: IPNetwork) -> tuple[AllocationBlock | None, int, bytes]:
        """The block as etcd has it now, with its revision and stored bytes."""
        kv = self.client.get(keys.block_key(cidr))
        return parse_block_value([kv] if kv else [])

    def _take_block(self, cidr: IPNetwork, use_cache: bool) -> tuple[AllocationBlock | None, int, bytes]:
        """The cached block with its revision and stored bytes, taken out of the cache
        (the caller changes it and puts back what etcd accepted with `_keep_block`);
        read from etcd when not cached."""
        hit = self._block_cache.pop(cidr, None)
        if hit is not None and use_cache:
            return hit
        return self._read_block_value(cidr)

    def _keep_block(self, cidr: IPNetwork, blk: AllocationBlock | None, rev: int, value: bytes) -> None:
        """Cache a block etcd holds at `rev` as `value`; the caller must not change it
        afterwards."""
        if blk is None:
            self._block_cache.pop(cidr, None)
        else:
            self._block_cache[cidr] = (blk, rev, value)

    def _wrote(self, cidr: IPNetwork, blk: AllocationBlock, value: bytes, rev: int) -> None:
        """Record a block etcd accepted at `rev` (cached, and the host lock's next hint)."""
        self._keep_block(cidr, blk, rev, value)
        self._written = (cidr, rev, value)

    def _forget_affinity(self, node: str, cidr: IPNetwork) -> None:
        """Drop what is cached about a block whose affinity this object just changed."""
        self._block_cache.pop(cidr, None)
        self._affine_cache.pop((node, cidr.version), None)

    # ------------------------------------------------------------------ host lock
    @contextmanager
    def _node_lock(self, node: str) -> Iterator[None]:
        """Hold the node's host lock (when configured) and pass on the block written last."""
        if not self.host_lock_dir:
            yield
            return
        lock = self._host_locks.get(node)
        if lock is None:
            lock = self._host_locks[node] = HostLock(self.host_lock_dir, node)
        if not lock.acquire():
            yield
            return
        self._written = None
        try:
            hint = lock.read_hint()
            if hint is not None:
                self._use_hint(*hint)
            yield
        finally:
            if self._written is not None:
                lock.write_hint(*self._written)
                self._written = None
            lock.release()

    def _use_hint(self, cidr: IPNetwork, rev: int, value: bytes) -> None:
        """Take a block from the host lock's hint when it is newer than our copy."""
        have = self._block_cache.get(cidr)
        if have is not None and have[1] >= rev:
            return
        try:
            blk = AllocationBlock.from_json(orjson.loads(value))
        except (ValueError, KeyError, TypeError):
            return  # a damaged hint: ignore it
        if blk.cidr != cidr:
            return
        self._block_cache[cidr] = (blk, rev, value)
        host = blk.host
        if host is not None:
            # another process of the node may have just claimed it: no need for a fresh
            # view to find it (a claim still decides on one)
            affine = self._affine_cache.get((host, cidr.version))
            if affine is not None and cidr not in affine:
                affine.append(cidr)
                affine.sort(key=lambda c: int(c.network_address))
            self._last_block[(host, cidr.version)] = cidr

    def close(self) -> None:
        """Close the host lock files (the etcd client is the caller's)."""
        for lock in self._host_locks.values():
            lock.close()
        self._host_locks.clear()
