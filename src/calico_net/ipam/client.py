"""Block IPAM on etcd with host affinity, as libcalico-go's lib/ipam does it.

How an address is found for `auto_assign(handle, node)`:

1. the node's affine blocks (`/calico/ipam/v2/host/<node>/...`) in the enabled pools
   that select the node, the block used last by this client first;
2. when they are full (checked again against fresh reads), claim a free block of an
   eligible pool: ONE transaction creates the block with `affinity: host:<node>` and the
   affinity key in state "confirmed", on condition that neither exists — so a block
   is claimed by exactly one node, and no half-claimed state is ever visible (Calico
   writes "pending" first because its Kubernetes backend has no multi-key transactions);
3. when the pools have no free block left: borrow a free address from another node's
   block — unless strict affinity is on (`/calico/ipam/v2/config`) or the block has
   `strictAffinity`.

Every write is a compare-and-swap on the etcd mod revision of each key it touches:
the block and the handle move together in one transaction. On a conflict the
transaction's failure branch returns the current values, and the change is recomputed
from them and retried (bounded; then `IPAMConflictError`). Block values read earlier
are cached per client, which only saves reads: a stale cache costs one failed
compare, never a wrong answer.

A handle (`/calico/ipam/v2/handle/<id>`) counts its addresses per block; the block's
attributes name the handle of every address, so `release_by_handle` frees exactly
that handle's addresses. A block that becomes empty keeps its affinity (as Calico).
"""
from __future__ import annotations

import logging
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import orjson

from calico_net.datastore.errors import ResourceNotFound
from calico_net.datastore.store import decode, kind_prefix, resource_key
from calico_net.datastore.etcd import (
    KV,
    EtcdClient,
    cmp_mod_revision,
    cmp_prefix_unchanged_since,
    op_delete,
    op_get,
    op_get_prefix,
    op_put,
)
from calico_net.ipam import keys
from calico_net.ipam.block import (
    ATTR_NODE,
    AllocationBlock,
    IPAddress,
    IPNetwork,
    block_count,
    block_for_ip,
    iter_blocks,
    parse_cidr,
    parse_ip,
)
from calico_net.ipam.errors import (
    AddressInUseError,
    BlockNotEmptyError,
    IPAMConflictError,
    IPAMError,
    NoPoolsError,
    NotInPoolError,
    PoolExhaustedError,
)
from calico_net.ipam.hostlock import HostLock
from calico_net.ipam.pools import Pool, needs_node_labels, pool_for, pools_from_documents, select_pools

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 200
# Blocks read together in one request: when a fresh view is taken, and when a client
# meets affine blocks it has not cached (a new CNI process on a node with many blocks).
# etcd's default --max-txn-ops is 128.
READ_BATCH = 16


def _dumps(doc: Any) -> bytes:
    """Compact JSON, as Calico stores it (orjson: blocks are rewritten on every change)."""
    return orjson.dumps(doc)


def _affine_from_kvs(kvs: list[KV], version: int) -> list[IPNetwork]:
    """Affine block CIDRs from a range of one node's affinity keys, in address order;
    affinities pending deletion are left out."""
    out = []
    for kv in kvs:
        parsed = keys.parse_affinity_key(kv.key)
        if parsed is None or parsed[1].version != version:
            continue
        try:
            state = orjson.loads(kv.value or b"{}").get("state", keys.AFFINITY_CONFIRMED)
        except ValueError:
            state = "invalid"
        if state != keys.AFFINITY_PENDING_DELETION:
            out.append(parsed[1])
    return sorted(out, key=lambda c: int(c.network_address))


def _parse_block(kvs: list[KV]) -> tuple[AllocationBlock | None, int]:
    """A block from a range result (empty: no block)."""
    if not kvs or not kvs[0].value:
        return None, 0
    return AllocationBlock.from_json(orjson.loads(kvs[0].value)), kvs[0].mod_revision


@dataclass
class IPAMConfig:
    """`/calico/ipam/v2/config`. A missing key means Calico's defaults."""

    strict_affinity: bool = False
    auto_allocate_blocks: bool = True

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> "IPAMConfig":
        return cls(
            strict_affinity=bool(doc.get("strict_affinity", False)),
            auto_allocate_blocks=bool(doc.get("auto_allocate_blocks", True)),
        )

    def to_json(self) -> dict[str, Any]:
        return {"strict_affinity": self.strict_affinity, "auto_allocate_blocks": self.auto_allocate_blocks}


@dataclass
class Assignment:
    """Who holds one address."""

    ip: IPAddress
    block: IPNetwork
    handle_id: str | None
    attributes: dict[str, str]
    block_affinity: str | None  # the node the block is affine to

    @property
    def node(self) -> str | None:
        return self.attributes.get(ATTR_NODE) or self.block_affinity


@dataclass
class Affinity:
    node: str
    cidr: IPNetwork
    state: str
    mod_revision: int


@dataclass
class _Handle:
    """A handle as this operation believes it is; `rev` 0 means absent."""

    handle_id: str
    blocks: dict[str, int] = field(default_factory=dict)
    rev: int = 0

    @property
    def key(self) -> str:
        return keys.handle_key(self.handle_id)

    def load(self, kvs: list[KV]) -> None:
        if kvs:
            doc = orjson.loads(kvs[0].value or b"{}")
            self.blocks = {str(k): int(v) for k, v in (doc.get("block") or {}).items()}
            self.rev = kvs[0].mod_revision
        else:
            self.blocks, self.rev = {}, 0

    def value(self) -> bytes:
        return _dumps({"block": self.blocks, "deleted": False})

    @property
    def live(self) -> bool:
        return any(v > 0 for v in self.blocks.values())

    def write_ops(self) -> list[dict[str, Any]]:
        """Put the handle, or delete it when it holds no address any more."""
        if self.live:
            return [op_put(self.key, self.value())]
        return [op_delete(self.key)] if self.rev else []


class _StaleView(Exception):
    """A pool or the node changed since the view an assignment was decided on."""


@dataclass
class _View:
    """The pools and the node's labels an assignment decides on, with the etcd mod
    revisions of their keys. Writes that depend on them carry those revisions as
    compare conditions (a deleted key compares as revision 0), so a decision made on
    a cached view can never commit after the pool was disabled, deleted or narrowed
    by its nodeSelector, or after the node's labels changed."""

    pools: list[Pool]
    pool_revs: dict[str, int]
    node: str
    node_labels: dict[str, str]
    node_rev: int
    fresh: bool
    config: IPAMConfig | None = None  # read with a fresh view
    revision: int = 0  # the etcd revision a fresh view was read at
    block_cidrs: dict[int, set[IPNetwork]] = field(default_factory=dict)  # every block, when read with the view

    def guards(self, pool: Pool | None) -> list[tuple[str, int]]:
        if pool is None:
            return []
        out = [(resource_key("IPPool", pool.name), self.pool_revs.get(pool.name, 0))]
        if not pool.selects_all:
            out.append((resource_key("Node", self.node), self.node_rev))
        return out


class IPAM:
    """Calico-style IPAM on an `EtcdClient`; pools and nodes come from a `Datastore`.

    One instance may be used for many operations (it caches block values and the pool
    view, guarded as described above); it is not thread-safe.

    `host_lock_dir` (e.g. /var/run/calico) serialises `auto_assign` and `assign_ip` for
    one node between the processes of a host and hands the block written last from
    one to the next (see `calico_net.ipam.hostlock`), as Calico's CNI plugin does with
    its ipam.lock; without it, concurrent allocations for one node still come out
    right, but lose more compare-and-swaps to each other.
    """

    def __init__(self, client: EtcdClient, datastore: Any = None, *, max_attempts: int = MAX_ATTEMPTS,
                 host_lock_dir: str | None = None) -> None:
        if datastore is None:
            from calico_net.datastore.store import Datastore

            datastore = Datastore(client)
        self.client = client
        self.datastore = datastore
        self.max_attempts = max_attempts
        # Parsed blocks with their mod revision. An entry is taken out while a change
        # is being made to it and put back only with what etcd accepted (or returned),
        # so a change that fails half-way never leaves a block etcd does not have.
        self._block_cache: dict[IPNetwork, tuple[AllocationBlock, int]] = {}
        self._affine_cache: dict[tuple[str, int], list[IPNetwork]] = {}
        self._last_block: dict[tuple[str, int], IPNetwork] = {}
        self._pool_cache: tuple[list[Pool], dict[str, int]] | None = None
        self._node_cache: dict[str, tuple[dict[str, str], int]] = {}
        self.host_lock_dir = host_lock_dir
        self._host_locks: dict[str, HostLock] = {}
        self._written: tuple[IPNetwork, int, bytes] | None = None  # the block written last

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
        self._block_cache[cidr] = (blk, rev)
        host = blk.host
        if host is not None:
            # another process of the node may have just claimed it: no need for a fresh
            # view to find it (a claim still decides on one)
            affine = self._affine_cache.get((host, cidr.version))
            if affine is not None and cidr not in affine:
                affine.append(cidr)
                affine.sort(key=lambda c: int(c.network_address))
            self._last_block[(host, cidr.version)] = cidr

    def _wrote(self, cidr: IPNetwork, blk: AllocationBlock, value: bytes, rev: int) -> None:
        """Record a block etcd accepted at `rev` (cached, and the host lock's next hint)."""
        self._keep_block(cidr, blk, rev)
        self._written = (cidr, rev, value)

    def close(self) -> None:
        """Close the host lock files (the etcd client is the caller's)."""
        for lock in self._host_locks.values():
            lock.close()
        self._host_locks.clear()

    # ------------------------------------------------------------------ config
    def get_config(self) -> IPAMConfig:
        kv = self.client.get(keys.CONFIG_KEY)
        return IPAMConfig.from_json(orjson.loads(kv.value)) if kv and kv.value else IPAMConfig()

    def set_config(self, *, strict_affinity: bool | None = None, auto_allocate_blocks: bool | None = None) -> IPAMConfig:
        for _ in range(self.max_attempts):
            kv = self.client.get(keys.CONFIG_KEY)
            cfg = IPAMConfig.from_json(orjson.loads(kv.value)) if kv and kv.value else IPAMConfig()
            if strict_affinity is not None:
                cfg.strict_affinity = strict_affinity
            if auto_allocate_blocks is not None:
                cfg.auto_allocate_blocks = auto_allocate_blocks
            txn = self.client.txn(
                [cmp_mod_revision(keys.CONFIG_KEY, kv.mod_revision if kv else 0)],
                [op_put(keys.CONFIG_KEY, _dumps(cfg.to_json()))],
            )
            if txn.succeeded:
                return cfg
        raise IPAMConflictError("IPAM config kept changing underneath; try again")

    # ------------------------------------------------------------------ pools and nodes
    def pools(self) -> list[Pool]:
        """Every IPPool, read now."""
        docs, _ = self.datastore.list("IPPool")
        pools = pools_from_documents(docs)
        revs = {d["metadata"]["name"]: int(d["metadata"].get("resourceVersion") or 0) for d in docs}
        self._pool_cache = (pools, revs)
        return pools

    def node_labels(self, node: str) -> dict[str, str]:
        """The Node's labels, read now; a node without a Node resource has none."""
        return self._read_node(node)[0]

    def _read_node(self, node: str) -> tuple[dict[str, str], int]:
        try:
            doc = self.datastore.get("Node", node)
        except ResourceNotFound:
            found: tuple[dict[str, str], int] = ({}, 0)
        else:
            md = doc.get("metadata") or {}
            found = (dict(md.get("labels") or {}), int(md.get("resourceVersion") or 0))
        self._node_cache[node] = found
        return found

    def _view(self, node: str, fresh: bool, versions: Sequence[int] = (4, 6), *, for_claim: bool = False) -> _View:
        """Pools and node labels: from the cache, or read now (with the node's
        affinities and affine blocks, see `_fresh_view`) when `fresh` or not cached."""
        if fresh or self._pool_cache is None:
            return self._fresh_view(node, versions, for_claim)
        pools, revs = self._pool_cache
        if needs_node_labels(pools):
            labels, rev = self._node_cache[node] if node in self._node_cache else self._read_node(node)
        else:
            labels, rev = {}, 0
        return _View(pools, revs, node, labels, rev, False)

    def _fresh_view(self, node: str, versions: Sequence[int], for_claim: bool = False) -> _View:
        """Read, in ONE transaction (so at one revision): the IPPools, the Node, the IPAM
        config, the node's affinities of each version and the affine blocks this client
        has cached (the one used last first, at most READ_BATCH); `for_claim` adds the
        CIDR of every block (keys only). Every cache this touches is replaced; affine
        blocks not re-read are dropped from the cache, so after a fresh view nothing the
        node's assignment decides on is older than it."""
        ops = [op_get_prefix(kind_prefix("IPPool")), op_get(resource_key("Node", node)), op_get(keys.CONFIG_KEY)]
        for version in versions:
            ops.append(op_get_prefix(keys.host_prefix(node, version)))
        reread: list[IPNetwork] = []
        for version in versions:
            known = list(self._affine_cache.get((node, version), []))
            last = self._last_block.get((node, version))
            if last in known:
                known.remove(last)
                known.insert(0, last)
            reread += known
        reread = reread[:READ_BATCH]
        ops += [op_get(keys.block_key(c)) for c in reread]
        if for_claim:
            ops += [op_get_prefix(keys.block_prefix(v), keys_only=True) for v in versions]
        txn = self.client.txn([], ops)

        docs = [decode(kv) for kv in txn.range_kvs(0)]
        pools = pools_from_documents(docs)
        revs = {d["metadata"]["name"]: int(d["metadata"].get("resourceVersion") or 0) for d in docs}
        self._pool_cache = (pools, revs)
        node_kvs = txn.range_kvs(1)
        if node_kvs:
            md = decode(node_kvs[0]).get("metadata") or {}
            self._node_cache[node] = (dict(md.get("labels") or {}), node_kvs[0].mod_revision)
        else:
            self._node_cache[node] = ({}, 0)
        cfg_kvs = txn.range_kvs(2)
        cfg = IPAMConfig.from_json(orjson.loads(cfg_kvs[0].value)) if cfg_kvs and cfg_kvs[0].value else IPAMConfig()
        for i, version in enumerate(versions):
            affine = _affine_from_kvs(txn.range_kvs(3 + i), version)
            for old in self._affine_cache.get((node, version), []):
                self._block_cache.pop(old, None)
            self._affine_cache[(node, version)] = affine
        first = 3 + len(versions)
        for i, cidr in enumerate(reread):
            blk, rev = _parse_block(txn.range_kvs(first + i))
            if cidr in self._affine_cache.get((node, cidr.version), ()):
                self._keep_block(cidr, blk, rev)
        block_cidrs: dict[int, set[IPNetwork]] = {}
        if for_claim:
            first += len(reread)
            for i, version in enumerate(versions):
                found = (keys.parse_block_key(kv.key) for kv in txn.range_kvs(first + i))
                block_cidrs[version] = {c for c in found if c is not None}
        labels, node_rev = self._node_cache[node]
        if not needs_node_labels(pools):
            labels, node_rev = {}, 0
        return _View(pools, revs, node, labels, node_rev, True, cfg, txn.revision, block_cidrs)

    def _eligible_pools(self, view: _View, version: int, requested: Sequence[str] | None) -> list[Pool]:
        chosen = select_pools(view.pools, version, view.node, view.node_labels, requested)
        if not chosen:
            have = [p for p in view.pools if p.version == version]
            if not have:
                raise NoPoolsError(f"no IPv{version} IPPool is configured")
            if all(p.disabled for p in have):
                raise NoPoolsError(f"every IPv{version} IPPool is disabled")
            raise NoPoolsError(f'no enabled IPv{version} IPPool selects node "{view.node}"')
        return chosen

    # ------------------------------------------------------------------ reads
    def _read_block(self, cidr: IPNetwork) -> tuple[AllocationBlock | None, int]:
        """The block as etcd has it now (a new object the caller may change)."""
        kv = self.client.get(keys.block_key(cidr))
        return _parse_block([kv] if kv else [])

    def _take_block(self, cidr: IPNetwork, use_cache: bool) -> tuple[AllocationBlock | None, int]:
        """The cached block, taken out of the cache (the caller changes it and puts
        back what etcd accepted with `_keep_block`); read from etcd when not cached."""
        hit = self._block_cache.pop(cidr, None)
        if hit is not None and use_cache:
            return hit
        return self._read_block(cidr)

    def _keep_block(self, cidr: IPNetwork, blk: AllocationBlock | None, rev: int) -> None:
        """Cache a block etcd holds at `rev`; the caller must not change it afterwards."""
        if blk is None:
            self._block_cache.pop(cidr, None)
        else:
            self._block_cache[cidr] = (blk, rev)

    def blocks(self, version: int | None = None) -> list[AllocationBlock]:
        """Every allocation block (of one IP version, or both)."""
        kvs, _ = self.client.get_prefix(keys.block_prefix(version))
        out = []
        for kv in kvs:
            if keys.parse_block_key(kv.key) is not None and kv.value:
                out.append(AllocationBlock.from_json(orjson.loads(kv.value)))
        return out

    def _block_cidrs(self, version: int) -> set[IPNetwork]:
        kvs, _ = self.client.get_prefix(keys.block_prefix(version), keys_only=True)
        return {c for c in (keys.parse_block_key(kv.key) for kv in kvs) if c is not None}

    def affinities(self, node: str | None = None, version: int | None = None) -> list[Affinity]:
        kvs, _ = self.client.get_prefix(keys.host_prefix(node, version if node else None))
        out = []
        for kv in kvs:
            parsed = keys.parse_affinity_key(kv.key)
            if parsed is None or (version and parsed[1].version != version):
                continue
            try:
                state = orjson.loads(kv.value or b"{}").get("state", keys.AFFINITY_CONFIRMED)
            except ValueError:
                state = "invalid"
            out.append(Affinity(parsed[0], parsed[1], state, kv.mod_revision))
        return out

    def _affine_cidrs(self, node: str, version: int) -> list[IPNetwork]:
        """The node's affine blocks of one version, in address order (cached)."""
        ck = (node, version)
        if ck not in self._affine_cache:
            kvs, _ = self.client.get_prefix(keys.host_prefix(node, version))
            self._affine_cache[ck] = _affine_from_kvs(kvs, version)
        return list(self._affine_cache[ck])

    def _load_blocks(self, cidrs: Sequence[IPNetwork]) -> None:
        """Read blocks that are not cached, up to READ_BATCH in one transaction."""
        missing = [c for c in cidrs if c not in self._block_cache][:READ_BATCH]
        if len(missing) < 2:
            return  # one block: `_take_block` reads it as cheaply
        txn = self.client.txn([], [op_get(keys.block_key(c)) for c in missing])
        for i, cidr in enumerate(missing):
            blk, rev = _parse_block(txn.range_kvs(i))
            self._keep_block(cidr, blk, rev)

    def handles(self) -> dict[str, dict[str, int]]:
        """handle id -> {block cidr: address count}."""
        kvs, _ = self.client.get_prefix(keys.HANDLE_PREFIX)
        out = {}
        for kv in kvs:
            hid = keys.parse_handle_key(kv.key)
            if hid is not None:
                out[hid] = {str(k): int(v) for k, v in (orjson.loads(kv.value or b"{}").get("block") or {}).items()}
        return out

    def get_handle(self, handle_id: str) -> dict[str, int] | None:
        kv = self.client.get(keys.handle_key(keys.check_handle_id(handle_id)))
        if kv is None:
            return None
        return {str(k): int(v) for k, v in (orjson.loads(kv.value or b"{}").get("block") or {}).items()}

    def ips_by_handle(self, handle_id: str) -> list[IPAddress]:
        blocks = self.get_handle(handle_id) or {}
        out: list[IPAddress] = []
        for cidr in blocks:
            blk, _ = self._read_block(parse_cidr(cidr))
            if blk is not None:
                out.extend(blk.ips_for_handle(handle_id))
        return out

    def _find_block_cidr(self, ip: IPAddress) -> IPNetwork | None:
        """The CIDR of the existing block holding `ip`, if any."""
        for cidr in self._block_cidrs(ip.version):
            if ip in cidr:
                return cidr
        return None

    def get_assignment(self, ip: str | IPAddress) -> Assignment | None:
        addr = parse_ip(ip)
        cidr = self._find_block_cidr(addr)
        if cidr is None:
            return None
        blk, _ = self._read_block(cidr)
        if blk is None:
            return None
        attr = blk.attribute_of(addr)
        if attr is None:
            return None
        return Assignment(addr, blk.cidr, attr.get("handle_id"), dict(attr.get("secondary") or {}), blk.host)

    # ------------------------------------------------------------------ the CAS core
    def _update_block(
        self,
        cidr: IPNetwork,
        change: Callable[[AllocationBlock | None], Any],
        handle: _Handle | None = None,
        *,
        handle_change: Callable[[_Handle, Any], None] | None = None,
        guards: Sequence[tuple[str, int]] = (),
        use_cache: bool = True,
    ) -> tuple[Any, AllocationBlock | None]:
        """Read-modify-write one block (and optionally its handle) until it sticks.

        `change(block)` mutates the block and returns a result; returning None means
        "nothing to write" (no transaction is made). `handle_change(handle, result)`
        updates the handle to match; block and handle go in one transaction, which
        also requires every `(key, mod_revision)` of `guards` to be unchanged
        (`_StaleView` is raised when one of them changed).
        """
        bkey = keys.block_key(cidr)
        blk, rev = self._take_block(cidr, use_cache)
        with_handle = handle is not None and handle_change is not None
        for attempt in range(self.max_attempts):
            result = change(blk)
            if blk is None or result is None:  # nothing changed: the block is as etcd has it
                self._keep_block(cidr, blk, rev)
                return result, blk
            value = _dumps(blk.to_json())
            compare = [cmp_mod_revision(bkey, rev)]
            success = [op_put(bkey, value)]
            failure = [op_get(bkey)]
            if with_handle:
                handle_change(handle, result)  # type: ignore[misc]
                compare.append(cmp_mod_revision(handle.key, handle.rev))  # type: ignore[union-attr]
                success.extend(handle.write_ops())  # type: ignore[union-attr]
                failure.append(op_get(handle.key))  # type: ignore[union-attr]
            for gkey, grev in guards:
                compare.append(cmp_mod_revision(gkey, grev))
                failure.append(op_get(gkey))
            txn = self.client.txn(compare, success, failure)
            if txn.succeeded:
                self._wrote(cidr, blk, value, txn.revision)
                if with_handle:
                    handle.rev = txn.revision if handle.live else 0  # type: ignore[union-attr]
                return result, blk
            # Someone else got in first: start again from what is there now. The handle
            # is reloaded too, so a retried increment is never counted twice.
            blk, rev = _parse_block(txn.range_kvs(0))
            if with_handle:
                handle.load(txn.range_kvs(1))  # type: ignore[union-attr]
            first_guard = 2 if with_handle else 1
            for i, (gkey, grev) in enumerate(guards):
                kvs = txn.range_kvs(first_guard + i)
                if (kvs[0].mod_revision if kvs else 0) != grev:
                    raise _StaleView(gkey)
            if attempt >= 3:
                time.sleep(random.uniform(0, 0.002 * min(attempt, 20)))
        raise IPAMConflictError(f"block {cidr} kept changing underneath ({self.max_attempts} attempts); try again")

    # ------------------------------------------------------------------ assignment
    def auto_assign(
        self,
        handle_id: str,
        node: str,
        num_v4: int = 1,
        num_v6: int = 0,
        pools_v4: Sequence[str] | None = None,
        pools_v6: Sequence[str] | None = None,
        attrs: Mapping[str, str] | None = None,
    ) -> tuple[list[IPAddress], list[IPAddress]]:
        """Assign `num_v4` IPv4 and `num_v6` IPv6 addresses to a handle on a node.

        `pools_v4`/`pools_v6` restrict the pools (names or CIDRs). All or nothing: if
        any part fails, what was assigned is released again and the error raised.
        """
        keys.check_handle_id(handle_id)
        keys.check_node_name(node)
        with self._node_lock(node):
            return self._auto_assign(handle_id, node, num_v4, num_v6, pools_v4, pools_v6, attrs)

    def _auto_assign(
        self,
        handle_id: str,
        node: str,
        num_v4: int,
        num_v6: int,
        pools_v4: Sequence[str] | None,
        pools_v6: Sequence[str] | None,
        attrs: Mapping[str, str] | None,
    ) -> tuple[list[IPAddress], list[IPAddress]]:
        secondary = dict(attrs or {})
        secondary.setdefault(ATTR_NODE, node)
        fresh = for_claim = False
        versions = tuple(v for v, n in ((4, num_v4), (6, num_v6)) if n > 0)
        # A stale view is progress by someone else (another process of this node
        # claimed a block, or a pool/the node changed): decide again on a view read
        # now. Under contention that can take a few rounds, so back off with jitter.
        stale: list[str] = []
        for attempt in range(self.max_attempts):
            if attempt >= 3:
                time.sleep(random.uniform(0, 0.002 * min(attempt, 25)))
            handle = _Handle(handle_id)  # optimistic: a new handle; corrected on conflict
            got: dict[int, list[IPAddress]] = {4: [], 6: []}
            try:
                view = self._view(node, fresh, versions, for_claim=for_claim)
                for version, num, requested in ((4, num_v4, pools_v4), (6, num_v6, pools_v6)):
                    if num > 0:
                        pools = self._eligible_pools(view, version, requested)
                        self._auto_assign_version(handle, view, version, num, pools, secondary, got[version])
                return got[4], got[6]
            except (_StaleView, NoPoolsError, PoolExhaustedError) as e:
                self._undo(got[4] + got[6])
                if fresh and not isinstance(e, _StaleView):
                    raise
                fresh = True  # decide again on pools and labels read now
                for_claim = isinstance(e, _StaleView) and e.args[:1] == ("claim",)
                if isinstance(e, _StaleView):
                    stale.append(str(e.args[0]) if e.args else "?")
            except BaseException:
                self._undo(got[4] + got[6])
                raise
        what = ", ".join(sorted(set(stale))) or "?"
        raise IPAMConflictError(
            f"the IPPools, the node or its block affinities kept changing during the assignment "
            f"({self.max_attempts} attempts; last changed: {what}); try again")

    def _undo(self, ips: list[IPAddress]) -> None:
        if ips:
            try:
                self.release_ips(ips)
            except Exception:  # noqa: BLE001 - the caller reports the original error
                log.exception("could not release %s after a failed assignment", [str(i) for i in ips])

    def _auto_assign_version(
        self,
        handle: _Handle,
        view: _View,
        version: int,
        num: int,
        pools: list[Pool],
        secondary: dict[str, str],
        got: list[IPAddress],
    ) -> None:
        """Append `num` addresses to `got` (which the caller releases on failure).

        On a cached view, only the cached affine blocks are tried; when they are full
        (as far as the cache knows) `_StaleView` sends the caller back for a fresh
        view, which re-reads the affinities and blocks, before any block is claimed."""
        node = view.node

        def affine_to_node(blk: AllocationBlock) -> bool:
            return blk.host == node

        # 1. affine blocks, the one used last first.
        cidrs = [c for c in self._affine_cidrs(node, version) if pool_for(pools, c) is not None]
        last = self._last_block.get((node, version))
        if last in cidrs:
            cidrs.remove(last)
            cidrs.insert(0, last)
        for i, cidr in enumerate(cidrs):
            if len(got) >= num:
                return
            if cidr not in self._block_cache:
                self._load_blocks(cidrs[i:])
            ips = self._assign_from(cidr, num - len(got), handle, secondary, affine_to_node,
                                    view.guards(pool_for(pools, cidr)), use_cache=True)
            if ips:
                got += ips
                self._last_block[(node, version)] = cidr
        if len(got) >= num:
            return
        if not view.fresh:
            raise _StaleView("claim")  # claim and borrow decide on a view read now

        # 2. claim new blocks.
        cfg = view.config or self.get_config()
        while len(got) < num and cfg.auto_allocate_blocks:
            claimed = self._claim_free_block(view, pools, cfg)
            if claimed is None:
                break
            pool, cidr = claimed
            ips = self._assign_from(cidr, num - len(got), handle, secondary, affine_to_node,
                                    view.guards(pool), use_cache=True)
            got += ips
            self._last_block[(node, version)] = cidr

        # 3. borrow from other nodes' blocks when the pools have no free block left.
        if len(got) < num and not cfg.strict_affinity:
            self._borrow(view, version, num, pools, handle, secondary, got)
        if len(got) < num:
            names = ", ".join(f"{p.name} ({p.cidr})" for p in pools)
            why = (" (strict affinity is on: other nodes' blocks are not borrowed from)" if cfg.strict_affinity
                   else "" if cfg.auto_allocate_blocks else " (auto_allocate_blocks is off)")
            raise PoolExhaustedError(
                f'no free IPv{version} address left for node "{node}" in pool(s) {names}: '
                f"wanted {num}, found {len(got)}{why}"
            )

    def _assign_from(
        self,
        cidr: IPNetwork,
        num: int,
        handle: _Handle,
        secondary: dict[str, str],
        eligible: Callable[[AllocationBlock], bool],
        guards: Sequence[tuple[str, int]],
        *,
        use_cache: bool,
    ) -> list[IPAddress]:
        def change(blk: AllocationBlock | None):
            if blk is None or not eligible(blk) or blk.free == 0:
                return None
            return blk.assign(num, handle.handle_id, secondary) or None

        def handle_change(h: _Handle, ips: list[IPAddress]) -> None:
            h.blocks[str(cidr)] = h.blocks.get(str(cidr), 0) + len(ips)

        result, _ = self._update_block(cidr, change, handle, handle_change=handle_change,
                                       guards=guards, use_cache=use_cache)
        return list(result or [])

    def _claim_free_block(self, view: _View, pools: list[Pool], cfg: IPAMConfig) -> tuple[Pool, IPNetwork] | None:
        """Claim the first block of the pools that no node holds; None when none is left."""
        existing_all: set[IPNetwork] | None = None
        for pool in pools:
            if existing_all is None:
                existing_all = view.block_cidrs.get(pool.version)
                if existing_all is None:
                    existing_all = view.block_cidrs[pool.version] = self._block_cidrs(pool.version)
            existing = {c for c in existing_all if pool.contains(c)}
            if len(existing) >= block_count(pool.cidr, pool.block_size):
                continue
            for cidr in iter_blocks(pool.cidr, pool.block_size):
                if cidr in existing:
                    continue
                claimed_at = self._create_affine_block(view.node, cidr, cfg, view.guards(pool), view.revision)
                if claimed_at:
                    # our own new affinity is not news: later claims in this call compare from here
                    view.revision = max(view.revision, claimed_at)
                    self._affine_cache.setdefault((view.node, cidr.version), []).append(cidr)
                    existing_all.add(cidr)
                    return pool, cidr
                existing.add(cidr)  # somebody else was quicker: try the next one
                existing_all.add(cidr)
        return None

    def _create_affine_block(self, node: str, cidr: IPNetwork, cfg: IPAMConfig,
                             guards: Sequence[tuple[str, int]] = (), affinities_since: int = 0) -> int:
        """Create a block affine to `node`, with its affinity key, in one transaction
        that requires both to be absent. Returns the revision it was created at, 0 when
        the block or the affinity exists.

        With `affinities_since` (the revision of the view the claim was decided on) it
        also requires that no affinity of the node appeared since: when another
        process of the same node has just claimed a block, `_StaleView` sends the
        caller to use that block instead of claiming one more."""
        blk = AllocationBlock.new(cidr, node, strict_affinity=cfg.strict_affinity)
        bkey, akey = keys.block_key(cidr), keys.affinity_key(node, cidr)
        aprefix = keys.host_prefix(node, cidr.version)
        value = _dumps(blk.to_json())
        compare = [cmp_mod_revision(bkey, 0), cmp_mod_revision(akey, 0)] + [cmp_mod_revision(k, r) for k, r in guards]
        failure = [op_get(k) for k, _ in guards]
        if affinities_since:
            compare.append(cmp_prefix_unchanged_since(aprefix, affinities_since))
            failure.append(op_get_prefix(aprefix, keys_only=True))
        txn = self.client.txn(
            compare,
            [op_put(bkey, value), op_put(akey, _dumps({"state": keys.AFFINITY_CONFIRMED, "deleted": False}))],
            failure,
        )
        if txn.succeeded:
            self._wrote(cidr, blk, value, txn.revision)
            log.info("node %s claimed block %s", node, cidr)
            return txn.revision
        for i, (gkey, grev) in enumerate(guards):
            kvs = txn.range_kvs(i)
            if (kvs[0].mod_revision if kvs else 0) != grev:
                raise _StaleView(gkey)
        if affinities_since and any(kv.mod_revision > affinities_since for kv in txn.range_kvs(len(guards))):
            raise _StaleView("affinity")
        return 0

    def _borrow(self, view: _View, version: int, num: int, pools: list[Pool], handle: _Handle,
                secondary: dict[str, str], got: list[IPAddress]) -> None:
        node = view.node

        def borrowable(blk: AllocationBlock) -> bool:
            return not blk.strict_affinity and blk.host != node and pool_for(pools, blk.cidr) is not None

        for blk in self.blocks(version):
            if len(got) >= num:
                break
            if borrowable(blk) and blk.free:
                ips = self._assign_from(blk.cidr, num - len(got), handle, secondary, borrowable,
                                        view.guards(pool_for(pools, blk.cidr)), use_cache=False)
                if ips:
                    log.info("node %s borrowed %s from block %s (affine to %s)",
                             node, [str(i) for i in ips], blk.cidr, blk.host)
                    got += ips

    def assign_ip(self, ip: str | IPAddress, handle_id: str, node: str, attrs: Mapping[str, str] | None = None) -> IPAddress:
        """Assign one specific address. Its block is claimed for `node` when nobody holds it."""
        addr = parse_ip(ip)
        keys.check_handle_id(handle_id)
        keys.check_node_name(node)
        with self._node_lock(node):
            return self._assign_ip(addr, handle_id, node, attrs)

    def _assign_ip(self, addr: IPAddress, handle_id: str, node: str, attrs: Mapping[str, str] | None) -> IPAddress:
        view = self._view(node, fresh=True, versions=(addr.version,))
        pool = pool_for(view.pools, addr, enabled_only=True)
        if pool is None:
            raise NotInPoolError(f"{addr} is not in any enabled IPPool")
        cidr = self._find_block_cidr(addr) or block_for_ip(addr, pool.cidr, pool.block_size)
        secondary = dict(attrs or {})
        secondary.setdefault(ATTR_NODE, node)
        handle = _Handle(handle_id)
        kv = self.client.get(handle.key)
        handle.load([kv] if kv else [])
        cfg: IPAMConfig | None = None
        for _ in range(self.max_attempts):
            taken: list[dict[str, Any]] = []

            def change(blk: AllocationBlock | None):
                if blk is None:
                    return None
                attr = blk.attribute_of(addr)
                if attr is not None:
                    taken.append(attr)
                    return None
                blk.assign_ip(addr, handle_id, secondary)
                return [addr]

            def handle_change(h: _Handle, ips: list[IPAddress]) -> None:
                h.blocks[str(cidr)] = h.blocks.get(str(cidr), 0) + 1

            try:
                result, blk = self._update_block(cidr, change, handle, handle_change=handle_change,
                                                 guards=view.guards(pool), use_cache=False)
            except _StaleView:
                raise IPAMConflictError(f"IPPool {pool.name} changed while assigning {addr}; try again") from None
            if result:
                return addr
            if taken:
                raise AddressInUseError(f"{addr} is already assigned (handle {taken[0].get('handle_id')})")
            if blk is None:  # nobody holds the block yet: claim it for this node, then assign
                cfg = cfg or self.get_config()
                self._create_affine_block(node, cidr, cfg)
        raise IPAMConflictError(f"could not assign {addr}: block {cidr} kept changing; try again")

    # ------------------------------------------------------------------ release
    def release_ips(self, ips: Iterable[str | IPAddress]) -> list[IPAddress]:
        """Free addresses; returns those that were not allocated (nothing to do)."""
        addrs = list(dict.fromkeys(parse_ip(i) for i in ips))
        not_allocated: list[IPAddress] = []
        by_block: dict[IPNetwork, list[IPAddress]] = {}
        cidrs = {4: None, 6: None}
        for a in addrs:
            if cidrs[a.version] is None:
                cidrs[a.version] = self._block_cidrs(a.version)  # type: ignore[assignment]
            block = next((c for c in cidrs[a.version] if a in c), None)  # type: ignore[union-attr]
            if block is None:
                not_allocated.append(a)
            else:
                by_block.setdefault(block, []).append(a)
        for cidr, members in by_block.items():
            not_allocated += self._release_in_block(cidr, members)
        return not_allocated

    def _release_in_block(self, cidr: IPNetwork, members: list[IPAddress]) -> list[IPAddress]:
        bkey = keys.block_key(cidr)
        for attempt in range(self.max_attempts):
            blk, rev = self._read_block(cidr)
            if blk is None:
                return list(members)
            freed, not_allocated = blk.release(members)
            if not freed and len(not_allocated) == len(members):
                return not_allocated
            value = _dumps(blk.to_json())
            compare = [cmp_mod_revision(bkey, rev)]
            success = [op_put(bkey, value)]
            for hid, count in freed.items():
                h = _Handle(hid)
                kv = self.client.get(h.key)
                h.load([kv] if kv else [])
                left = h.blocks.get(str(cidr), 0) - count
                if left > 0:
                    h.blocks[str(cidr)] = left
                else:
                    h.blocks.pop(str(cidr), None)
                compare.append(cmp_mod_revision(h.key, h.rev))
                success.extend(h.write_ops())
            txn = self.client.txn(compare, success)
            if txn.succeeded:
                self._wrote(cidr, blk, value, txn.revision)
                return not_allocated
            if attempt >= 3:
                time.sleep(random.uniform(0, 0.002 * min(attempt, 20)))
        raise IPAMConflictError(f"could not release addresses in block {cidr}: it kept changing; try again")

    def release_by_handle(self, handle_id: str) -> list[IPAddress]:
        """Free every address of a handle and delete the handle. Idempotent: an unknown
        handle releases nothing."""
        keys.check_handle_id(handle_id)
        handle = _Handle(handle_id)
        kv = self.client.get(handle.key)
        handle.load([kv] if kv else [])
        released: list[IPAddress] = []
        for _ in range(self.max_attempts):
            if not handle.rev:
                return released
            pending = [c for c, n in handle.blocks.items()]
            if not pending:
                txn = self.client.txn([cmp_mod_revision(handle.key, handle.rev)], [op_delete(handle.key)], [op_get(handle.key)])
                if txn.succeeded:
                    return released
                handle.load(txn.range_kvs(0))
                continue
            cidr = parse_cidr(pending[0])
            released += self._release_handle_in_block(handle, cidr)
        raise IPAMConflictError(f'could not release handle "{handle_id}": it kept changing; try again')

    def _release_handle_in_block(self, handle: _Handle, cidr: IPNetwork) -> list[IPAddress]:
        bkey = keys.block_key(cidr)
        for attempt in range(self.max_attempts):
            blk, rev = self._read_block(cidr)
            ips = blk.ips_for_handle(handle.handle_id) if blk else []
            if blk is not None and ips:
                blk.release_handle(handle.handle_id)
            new_blocks = dict(handle.blocks)
            new_blocks.pop(str(cidr), None)
            after = _Handle(handle.handle_id, new_blocks, handle.rev)
            compare = [cmp_mod_revision(handle.key, handle.rev)]
            success = after.write_ops()
            if ips:
                compare.append(cmp_mod_revision(bkey, rev))
                success.append(op_put(bkey, _dumps(blk.to_json())))  # type: ignore[union-attr]
            txn = self.client.txn(compare, success, [op_get(handle.key)])
            if txn.succeeded:
                handle.blocks = new_blocks
                handle.rev = txn.revision if success and "request_put" in success[0] else 0
                if ips:
                    self._keep_block(cidr, blk, txn.revision)
                return ips
            handle.load(txn.range_kvs(0))
            if str(cidr) not in handle.blocks:
                return []
            if attempt >= 3:
                time.sleep(random.uniform(0, 0.002 * min(attempt, 20)))
        raise IPAMConflictError(f"could not release handle {handle.handle_id} in block {cidr}; try again")

    # ------------------------------------------------------------------ affinity
    def claim_affinity(self, node: str, cidr: str | IPNetwork) -> tuple[list[IPNetwork], list[IPNetwork]]:
        """Claim every block inside `cidr` for `node`. Returns (claimed, failed):
        blocks already affine to the node count as claimed; blocks of other nodes fail."""
        keys.check_node_name(node)
        net = parse_cidr(cidr)
        pools = self.pools()
        pool = pool_for(pools, net)
        if pool is None:
            raise NotInPoolError(f"{net} is not inside any IPPool")
        if net.prefixlen > pool.block_size:
            raise IPAMError(f"{net} is smaller than the pool's /{pool.block_size} blocks")
        cfg = self.get_config()
        claimed, failed = [], []
        for bc in iter_blocks(net, pool.block_size):
            if self._claim_one(node, bc, cfg):
                claimed.append(bc)
            else:
                failed.append(bc)
        return claimed, failed

    def _claim_one(self, node: str, cidr: IPNetwork, cfg: IPAMConfig) -> bool:
        """Make one block affine to `node`: create it, or adopt it when it has no
        affinity. False when another node holds it."""
        akey, bkey = keys.affinity_key(node, cidr), keys.block_key(cidr)
        affinity_value = _dumps({"state": keys.AFFINITY_CONFIRMED, "deleted": False})
        for attempt in range(self.max_attempts):
            blk, brev = self._read_block(cidr)
            akv = self.client.get(akey)
            if blk is None:
                blk = AllocationBlock.new(cidr, node, strict_affinity=cfg.strict_affinity)
            elif blk.host == node and akv is not None:
                return True
            elif blk.host not in (None, node):
                return False
            else:  # unaffine block, or our block whose affinity key went missing
                blk.affinity = f"host:{node}"
            txn = self.client.txn(
                [cmp_mod_revision(bkey, brev), cmp_mod_revision(akey, akv.mod_revision if akv else 0)],
                [op_put(bkey, _dumps(blk.to_json())), op_put(akey, affinity_value)],
            )
            if txn.succeeded:
                self._block_cache.pop(cidr, None)
                self._affine_cache.pop((node, cidr.version), None)
                return True
            if attempt >= 3:
                time.sleep(random.uniform(0, 0.002 * min(attempt, 20)))
        raise IPAMConflictError(f"could not claim {cidr} for {node}: it kept changing; try again")

    def release_affinity(self, node: str, cidr: str | IPNetwork, *, must_be_empty: bool = False) -> bool:
        """Drop `node`'s affinity to one block. An empty block is deleted; a block still
        holding addresses stays, with no affinity (others may then borrow from it or
        claim it). Returns False when the node had no such affinity."""
        net = parse_cidr(cidr)
        akey, bkey = keys.affinity_key(node, net), keys.block_key(net)
        for attempt in range(self.max_attempts):
            akv = self.client.get(akey)
            blk, brev = self._read_block(net)
            if akv is None and (blk is None or blk.host != node):
                return False
            compare, ops = [], []
            if akv is not None:
                compare.append(cmp_mod_revision(akey, akv.mod_revision))
                ops.append(op_delete(akey))
            if blk is not None and blk.host == node:
                compare.append(cmp_mod_revision(bkey, brev))
                if blk.empty:
                    ops.append(op_delete(bkey))
                else:
                    if must_be_empty:
                        raise BlockNotEmptyError(f"block {net} of node {node} still has {blk.in_use} address(es) in use")
                    blk.affinity = None
                    ops.append(op_put(bkey, _dumps(blk.to_json())))
            txn = self.client.txn(compare, ops)
            if txn.succeeded:
                self._block_cache.pop(net, None)
                self._affine_cache.pop((node, net.version), None)
                return True
            if attempt >= 3:
                time.sleep(random.uniform(0, 0.002 * min(attempt, 20)))
        raise IPAMConflictError(f"could not release {node}'s affinity to {net}: it kept changing; try again")

    def release_host_affinities(self, node: str, *, must_be_empty: bool = False) -> list[IPNetwork]:
        """Drop every block affinity of a node (when the node is removed). Returns the
        blocks released. Blocks whose affinity names the node but whose affinity key
        is missing are released too."""
        keys.check_node_name(node)
        cidrs = {a.cidr for a in self.affinities(node)}
        for blk in self.blocks():
            if blk.host == node:
                cidrs.add(blk.cidr)
        released = []
        for cidr in sorted(cidrs, key=lambda c: (c.version, int(c.network_address))):
            try:
                if self.release_affinity(node, cidr, must_be_empty=must_be_empty):
                    released.append(cidr)
            except BlockNotEmptyError:
                if must_be_empty:
                    continue
                raise
        return released

    # ------------------------------------------------------------------ reporting
    def usage(self) -> list[dict[str, Any]]:
        """Per pool: size, blocks, addresses in use, and the same per node."""
        pools = self.pools()
        blocks = self.blocks()
        out = []
        for pool in pools:
            mine = [b for b in blocks if pool_for(pools, b.cidr) == pool]
            per_node: dict[str, dict[str, int]] = {}
            for b in mine:
                n = per_node.setdefault(b.host or "", {"blocks": 0, "in_use": 0, "free": 0, "borrowed": 0})
                n["blocks"] += 1
                n["in_use"] += b.in_use
                n["free"] += b.free
                for _, attr in b.allocated():
                    holder = (attr.get("secondary") or {}).get(ATTR_NODE)
                    if holder and b.host and holder != b.host:
                        lender = per_node[b.host]
                        lender["borrowed"] += 1
            out.append({
                "name": pool.name,
                "cidr": str(pool.cidr),
                "block_size": pool.block_size,
                "disabled": pool.disabled,
                "node_selector": pool.node_selector,
                "addresses": pool.cidr.num_addresses,
                "blocks_total": block_count(pool.cidr, pool.block_size),
                "blocks_claimed": len(mine),
                "in_use": sum(b.in_use for b in mine),
                "free_in_blocks": sum(b.free for b in mine),
                "nodes": per_node,
            })
        return out
