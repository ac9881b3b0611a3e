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

import json
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

from calico_net.datastore.errors import ResourceNotFound
from calico_net.datastore.store import resource_key
from calico_net.datastore.etcd import KV, EtcdClient, cmp_mod_revision, op_delete, op_get, op_put
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
from calico_net.ipam.pools import Pool, needs_node_labels, pool_for, pools_from_documents, select_pools

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 200


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


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
            doc = json.loads(kvs[0].value or b"{}")
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
    """

    def __init__(self, client: EtcdClient, datastore: Any = None, *, max_attempts: int = MAX_ATTEMPTS) -> None:
        if datastore is None:
            from calico_net.datastore.store import Datastore

            datastore = Datastore(client)
        self.client = client
        self.datastore = datastore
        self.max_attempts = max_attempts
        self._block_cache: dict[IPNetwork, tuple[bytes, int]] = {}
        self._affine_cache: dict[tuple[str, int], list[IPNetwork]] = {}
        self._last_block: dict[tuple[str, int], IPNetwork] = {}
        self._pool_cache: tuple[list[Pool], dict[str, int]] | None = None
        self._node_cache: dict[str, tuple[dict[str, str], int]] = {}

    # ------------------------------------------------------------------ config
    def get_config(self) -> IPAMConfig:
        kv = self.client.get(keys.CONFIG_KEY)
        return IPAMConfig.from_json(json.loads(kv.value)) if kv and kv.value else IPAMConfig()

    def set_config(self, *, strict_affinity: bool | None = None, auto_allocate_blocks: bool | None = None) -> IPAMConfig:
        for _ in range(self.max_attempts):
            kv = self.client.get(keys.CONFIG_KEY)
            cfg = IPAMConfig.from_json(json.loads(kv.value)) if kv and kv.value else IPAMConfig()
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

    def _view(self, node: str, fresh: bool) -> _View:
        """Pools and node labels: read now when `fresh` or not cached yet."""
        fresh = fresh or self._pool_cache is None
        if fresh:
            self.pools()
        pools, revs = self._pool_cache  # type: ignore[misc]
        if needs_node_labels(pools):
            labels, rev = self._read_node(node) if (fresh or node not in self._node_cache) else self._node_cache[node]
        else:
            labels, rev = {}, 0
        return _View(pools, revs, node, labels, rev, fresh)

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
        kv = self.client.get(keys.block_key(cidr))
        return self._cache_block(cidr, [kv] if kv else [])

    def _cache_block(self, cidr: IPNetwork, kvs: list[KV]) -> tuple[AllocationBlock | None, int]:
        if not kvs or not kvs[0].value:
            self._block_cache.pop(cidr, None)
            return None, 0
        self._block_cache[cidr] = (kvs[0].value, kvs[0].mod_revision)
        return AllocationBlock.from_json(json.loads(kvs[0].value)), kvs[0].mod_revision

    def _cached_block(self, cidr: IPNetwork) -> tuple[AllocationBlock | None, int]:
        hit = self._block_cache.get(cidr)
        if hit is None:
            return self._read_block(cidr)
        return AllocationBlock.from_json(json.loads(hit[0])), hit[1]

    def blocks(self, version: int | None = None) -> list[AllocationBlock]:
        """Every allocation block (of one IP version, or both)."""
        kvs, _ = self.client.get_prefix(keys.block_prefix(version))
        out = []
        for kv in kvs:
            if keys.parse_block_key(kv.key) is not None and kv.value:
                out.append(AllocationBlock.from_json(json.loads(kv.value)))
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
                state = json.loads(kv.value or b"{}").get("state", keys.AFFINITY_CONFIRMED)
            except ValueError:
                state = "invalid"
            out.append(Affinity(parsed[0], parsed[1], state, kv.mod_revision))
        return out

    def _affine_cidrs(self, node: str, version: int, refresh: bool) -> list[IPNetwork]:
        ck = (node, version)
        if refresh or ck not in self._affine_cache:
            self._affine_cache[ck] = sorted(
                (a.cidr for a in self.affinities(node, version) if a.state != keys.AFFINITY_PENDING_DELETION),
                key=lambda c: int(c.network_address),
            )
        return list(self._affine_cache[ck])

    def handles(self) -> dict[str, dict[str, int]]:
        """handle id -> {block cidr: address count}."""
        kvs, _ = self.client.get_prefix(keys.HANDLE_PREFIX)
        out = {}
        for kv in kvs:
            hid = keys.parse_handle_key(kv.key)
            if hid is not None:
                out[hid] = {str(k): int(v) for k, v in (json.loads(kv.value or b"{}").get("block") or {}).items()}
        return out

    def get_handle(self, handle_id: str) -> dict[str, int] | None:
        kv = self.client.get(keys.handle_key(keys.check_handle_id(handle_id)))
        if kv is None:
            return None
        return {str(k): int(v) for k, v in (json.loads(kv.value or b"{}").get("block") or {}).items()}

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
        blk, rev = self._cached_block(cidr) if use_cache else self._read_block(cidr)
        with_handle = handle is not None and handle_change is not None
        for attempt in range(self.max_attempts):
            result = change(blk)
            if blk is None or result is None:
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
                self._block_cache[cidr] = (value, txn.revision)
                if with_handle:
                    handle.rev = txn.revision if handle.live else 0  # type: ignore[union-attr]
                return result, blk
            # Someone else got in first: start again from what is there now. The handle
            # is reloaded too, so a retried increment is never counted twice.
            blk, rev = self._cache_block(cidr, txn.range_kvs(0))
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
        secondary = dict(attrs or {})
        secondary.setdefault(ATTR_NODE, node)
        fresh = False
        verified: set[IPNetwork] = set()  # affine blocks read fresh in this call and found full
        for _ in range(5):
            handle = _Handle(handle_id)  # optimistic: a new handle; corrected on conflict
            got: dict[int, list[IPAddress]] = {4: [], 6: []}
            try:
                view = self._view(node, fresh)
                for version, num, requested in ((4, num_v4, pools_v4), (6, num_v6, pools_v6)):
                    if num > 0:
                        pools = self._eligible_pools(view, version, requested)
                        self._auto_assign_version(handle, view, version, num, pools, secondary, got[version],
                                                  verified)
                return got[4], got[6]
            except (_StaleView, NoPoolsError, PoolExhaustedError) as e:
                self._undo(got[4] + got[6])
                if fresh and not isinstance(e, _StaleView):
                    raise
                fresh = True  # decide again on pools and labels read now
            except BaseException:
                self._undo(got[4] + got[6])
                raise
        raise IPAMConflictError("the IPPools kept changing during the assignment; try again")

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
        verified: set[IPNetwork],
    ) -> None:
        """Append `num` addresses to `got` (which the caller releases on failure).

        `verified` holds affine blocks this call already re-read and found full, so
        a retry on a fresh pool view does not read them again."""
        node = view.node

        def affine_to_node(blk: AllocationBlock) -> bool:
            return blk.host == node

        # 1. affine blocks: the cached view first, then a fresh one before claiming more.
        for refresh in (False, True):
            cidrs = [c for c in self._affine_cidrs(node, version, refresh) if pool_for(pools, c) is not None]
            last = self._last_block.get((node, version))
            if last in cidrs:
                cidrs.remove(last)
                cidrs.insert(0, last)
            for cidr in cidrs:
                if len(got) >= num:
                    return
                ips = self._assign_from(cidr, num - len(got), handle, secondary, affine_to_node,
                                        view.guards(pool_for(pools, cidr)),
                                        use_cache=not refresh or cidr in verified)
                if ips:
                    got += ips
                    self._last_block[(node, version)] = cidr
                elif refresh:
                    verified.add(cidr)
            if len(got) >= num:
                return
        if not view.fresh:
            raise _StaleView("claim")  # claim and borrow decide on pools read now

        # 2. claim new blocks.
        cfg = self.get_config()
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
                existing_all = self._block_cidrs(pool.version)
            existing = {c for c in existing_all if pool.contains(c)}
            if len(existing) >= block_count(pool.cidr, pool.block_size):
                continue
            for cidr in iter_blocks(pool.cidr, pool.block_size):
                if cidr in existing:
                    continue
                if self._create_affine_block(view.node, cidr, cfg, view.guards(pool)):
                    self._affine_cache.setdefault((view.node, cidr.version), []).append(cidr)
                    return pool, cidr
                existing.add(cidr)  # somebody else was quicker: try the next one
        return None

    def _create_affine_block(self, node: str, cidr: IPNetwork, cfg: IPAMConfig,
                             guards: Sequence[tuple[str, int]] = ()) -> bool:
        """Create a block affine to `node`, with its affinity key, in one transaction
        that requires both to be absent. False when either exists."""
        blk = AllocationBlock.new(cidr, node, strict_affinity=cfg.strict_affinity)
        bkey, akey = keys.block_key(cidr), keys.affinity_key(node, cidr)
        value = _dumps(blk.to_json())
        txn = self.client.txn(
            [cmp_mod_revision(bkey, 0), cmp_mod_revision(akey, 0)] + [cmp_mod_revision(k, r) for k, r in guards],
            [op_put(bkey, value), op_put(akey, _dumps({"state": keys.AFFINITY_CONFIRMED, "deleted": False}))],
            [op_get(k) for k, _ in guards],
        )
        if txn.succeeded:
            self._block_cache[cidr] = (value, txn.revision)
            log.info("node %s claimed block %s", node, cidr)
            return True
        for i, (gkey, grev) in enumerate(guards):
            kvs = txn.range_kvs(i)
            if (kvs[0].mod_revision if kvs else 0) != grev:
                raise _StaleView(gkey)
        return False

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
        view = self._view(node, fresh=True)
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
            compare = [cmp_mod_revision(bkey, rev)]
            success = [op_put(bkey, _dumps(blk.to_json()))]
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
                self._block_cache[cidr] = (_dumps(blk.to_json()), txn.revision)
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
                    self._block_cache[cidr] = (_dumps(blk.to_json()), txn.revision)  # type: ignore[union-attr]
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
