"""What IPAM reads: the IPAM config, pools and node labels, the IPReservations,
the view an assignment decides on (cached, or read fresh in one transaction),
blocks, affinities and handles. Nothing here writes to etcd.
"""
from __future__ import annotations

import ipaddress
import logging
from typing import Any, Sequence

from calico_net.datastore.errors import BadStoredValue, ResourceNotFound
from calico_net.datastore.etcd import KV, key_bytes, op_get, op_get_prefix, show_key
from calico_net.datastore.store import decode, kind_prefix, resource_key
from calico_net.ipam import keys
from calico_net.ipam.block import AllocationBlock, IPAddress, IPNetwork, parse_cidr, parse_ip
from calico_net.ipam.caches import IPAMCaches
from calico_net.ipam.errors import NoPoolsError
from calico_net.ipam.pools import (
    WORKLOAD,
    Pool,
    SkippedPool,
    needs_node_labels,
    pools_from_documents,
    select_pools,
    skipped_pools,
    skipped_value,
)
from calico_net.ipam.records import (
    Affinity,
    Assignment,
    IPAMConfig,
    View,
    affine_from_kvs,
    affinity_state,
    handle_blocks,
    parse_block,
    parse_block_value,
    pool_revisions,
)
from calico_net.ipam.reservations import RESERVATION_PREFIX, Reservations

log = logging.getLogger(__name__)

# Blocks read together in one request: when a fresh view is taken, and when a client
# meets affine blocks it has not cached (a new CNI process on a node with many blocks).
# etcd's default --max-txn-ops is 128.
READ_BATCH = 16
# Keys counted in one transaction when looking for the blocks that hold addresses:
# etcd's default --max-txn-ops.
FIND_BATCH = 128

# The prefix lengths a block can have: the IPPool blockSize range (the model's
# BLOCK_SIZE_RANGE, Calico's too; not imported from there so that IPAM does not pull
# in pydantic).
BLOCK_PREFIXES = {4: range(20, 33), 6: range(116, 129)}


def op_count(key: str) -> dict[str, Any]:
    """A transaction operation saying whether `key` exists (its count, no value)."""
    return {"request_range": {"key": key_bytes(key), "count_only": True}}


class IPAMReads(IPAMCaches):
    """The reading half of `IPAM`."""

    datastore: Any

    # ------------------------------------------------------------------ config
    def get_config(self) -> IPAMConfig:
        kv = self.client.get(keys.CONFIG_KEY)
        return IPAMConfig.from_kvs([kv] if kv else [])

    # ------------------------------------------------------------------ pools and nodes
    def pools(self) -> list[Pool]:
        """Every usable IPPool, read now (an unusable one is logged once and skipped)."""
        kvs, _ = self.client.get_prefix(kind_prefix("IPPool"))
        return self._keep_pools(kvs)[0]

    def _keep_pools(self, kvs: Sequence[KV]) -> tuple[list[Pool], dict[str, int]]:
        """Pools from the IPPool keys with their revisions, cached. A key that does not
        decode or is not a usable pool is skipped, logged once with its key (see
        `pools.pools_from_documents`): one bad IPPool must not stop assignments from
        the others."""
        docs: list[dict[str, Any]] = []
        doc_keys: list[str] = []
        bad: list[SkippedPool] = []
        for kv in kvs:
            try:
                docs.append(decode(kv))
            except BadStoredValue as e:
                bad.append(skipped_value(e.key, e.reason))
                continue
            doc_keys.append(kv.key)
        pools = pools_from_documents(docs, bad, doc_keys)
        names = {p.name for p in pools}
        # revisions of the usable pools only: a skipped document may lack a name
        revs = pool_revisions([d for d in docs if d["metadata"].get("name") in names])
        self._pool_cache = (pools, revs)
        return self._pool_cache

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

    # ------------------------------------------------------------------ the view
    def _view(self, node: str, fresh: bool, versions: Sequence[int] = (4, 6), *, for_claim: bool = False) -> View:
        """Pools and node labels: from the cache, or read now (with the node's
        affinities and affine blocks, see `_fresh_view`) when `fresh` or not cached."""
        if fresh or self._pool_cache is None or self._reservations is None:
            return self._fresh_view(node, versions, for_claim)
        pools, revs = self._pool_cache
        if needs_node_labels(pools):
            labels, rev = self._node_cache[node] if node in self._node_cache else self._read_node(node)
        else:
            labels, rev = {}, 0
        return View(pools, revs, node, labels, rev, False, self._reservations)

    def _fresh_view(self, node: str, versions: Sequence[int], for_claim: bool = False) -> View:
        """Read, in ONE transaction (so at one revision): the IPPools, the Node, the IPAM
        config, the IPReservations, the node's affinities of each version and the affine blocks this client
        has cached (the one used last first, at most READ_BATCH); `for_claim` adds the
        CIDR of every block (keys only). Every cache this touches is replaced; affine
        blocks not re-read are dropped from the cache, so after a fresh view nothing the
        node's assignment decides on is older than it."""
        ops = [op_get_prefix(kind_prefix("IPPool")), op_get(resource_key("Node", node)), op_get(keys.CONFIG_KEY),
               op_get_prefix(RESERVATION_PREFIX)]
        for version in versions:
            ops.append(op_get_prefix(keys.host_prefix(node, version)))
        reread: list[IPNetwork] = []
        for version in versions:
            reread += self._last_first(node, version, list(self._affine_cache.get((node, version), [])))
        reread = reread[:READ_BATCH]
        ops += [op_get(keys.block_key(c)) for c in reread]
        if for_claim:
            ops += [op_get_prefix(keys.block_prefix(v), keys_only=True) for v in versions]
        txn = self.client.txn([], ops)

        pools, revs = self._keep_pools(txn.range_kvs(0))
        node_kvs = txn.range_kvs(1)
        if node_kvs:
            md = decode(node_kvs[0]).get("metadata") or {}
            self._node_cache[node] = (dict(md.get("labels") or {}), node_kvs[0].mod_revision)
        else:
            self._node_cache[node] = ({}, 0)
        cfg_kvs = txn.range_kvs(2)
        cfg = IPAMConfig.from_kvs(cfg_kvs)
        reservations = self._reservations = Reservations.from_kvs(txn.range_kvs(3), txn.revision)
        for i, version in enumerate(versions):
            affine = affine_from_kvs(txn.range_kvs(4 + i), version)
            for old in self._affine_cache.get((node, version), []):
                self._block_cache.pop(old, None)
            self._affine_cache[(node, version)] = affine
        first = 4 + len(versions)
        for i, cidr in enumerate(reread):
            blk, rev, stored = parse_block_value(txn.range_kvs(first + i))
            if cidr in self._affine_cache.get((node, cidr.version), ()):
                self._keep_block(cidr, blk, rev, stored)
        block_cidrs: dict[int, set[IPNetwork]] = {}
        if for_claim:
            first += len(reread)
            for i, version in enumerate(versions):
                found = (keys.parse_block_key(kv.key) for kv in txn.range_kvs(first + i))
                block_cidrs[version] = {c for c in found if c is not None}
        labels, node_rev = self._node_cache[node]
        if not needs_node_labels(pools):
            labels, node_rev = {}, 0
        return View(pools, revs, node, labels, node_rev, True, reservations, cfg,
                    cfg_kvs[0].mod_revision if cfg_kvs else 0, txn.revision, block_cidrs)

    def _last_first(self, node: str, version: int, cidrs: list[IPNetwork]) -> list[IPNetwork]:
        """`cidrs` with the block the node's last address came from moved to the front."""
        last = self._last_block.get((node, version))
        if last in cidrs:
            cidrs.remove(last)
            cidrs.insert(0, last)
        return cidrs

    def _eligible_pools(self, view: View, version: int, requested: Sequence[str] | None,
                        use: str = WORKLOAD) -> list[Pool]:
        chosen = select_pools(view.pools, version, view.node, view.node_labels, requested, use)
        if not chosen:
            skipped = skipped_pools(view.pools)
            also = (f" ({len(skipped)} IPPool(s) skipped as invalid: "
                    + "; ".join(s.describe() for s in list(skipped.values())[:3]) + ")") if skipped else ""
            have = [p for p in view.pools if p.version == version]
            if not have:
                raise NoPoolsError(f"no IPv{version} IPPool is configured{also}")
            if all(p.disabled for p in have):
                raise NoPoolsError(f"every IPv{version} IPPool is disabled{also}")
            if not any(p.allows(use) for p in have if not p.disabled):
                raise NoPoolsError(f"no enabled IPv{version} IPPool allows automatic {use} assignment "
                                   f"(allowedUses / assignmentMode){also}")
            raise NoPoolsError(f'no enabled IPv{version} IPPool for {use} addresses selects node '
                               f'"{view.node}"{also}')
        return chosen

    # ------------------------------------------------------------------ blocks
    def blocks(self, version: int | None = None,
               unreadable: list[tuple[str, str]] | None = None) -> list[AllocationBlock]:
        """Every allocation block (of one IP version, or both). A block key whose value
        cannot be read (not JSON, wrong shape) is logged and left out — one bad key
        must not stop every reader — and, when `unreadable` is given, listed there as
        (key, reason) for the caller to report."""
        kvs, _ = self.client.get_prefix(keys.block_prefix(version))
        out = []
        for kv in kvs:
            if keys.parse_block_key(kv.key) is None or not kv.value:
                continue
            try:
                blk = parse_block([kv])[0]
            except (ValueError, TypeError, KeyError, AttributeError) as e:
                reason = f"{e.__class__.__name__}: {str(e)[:200]}"
                log.warning("skipping IPAM block %s: unreadable value (%s)", show_key(kv.key), reason)
                if unreadable is not None:
                    unreadable.append((kv.key, reason))
                continue
            if blk is not None:
                out.append(blk)
        return out

    def _block_cidrs(self, version: int) -> set[IPNetwork]:
        kvs, _ = self.client.get_prefix(keys.block_prefix(version), keys_only=True)
        return {c for c in (keys.parse_block_key(kv.key) for kv in kvs) if c is not None}

    def _find_block_cidr(self, ip: IPAddress) -> IPNetwork | None:
        """The CIDR of the existing block holding `ip`, if any."""
        return self._find_block_cidrs([ip])[ip]

    def _find_block_cidrs(self, ips: Sequence[IPAddress]) -> dict[IPAddress, IPNetwork | None]:
        """The CIDR of the existing block holding each address (None: no block).

        Blocks are aligned to their size, so the only blocks that can hold an address
        are the one of each block size around it: those keys are counted (count-only
        single-key ranges, at most FIND_BATCH per transaction) instead of listing every
        block of the cluster, so finding a block costs the same with 10 or 100,000
        blocks. Should several exist (data no IPAM writes), the smallest wins."""
        around: dict[IPAddress, list[IPNetwork]] = {}
        wanted: dict[str, IPNetwork] = {}
        for ip in ips:
            nets = [ipaddress.ip_network((ip, p), strict=False) for p in reversed(BLOCK_PREFIXES[ip.version])]
            around[ip] = nets
            for net in nets:
                wanted.setdefault(keys.block_key(net), net)
        present: set[IPNetwork] = set()
        probe = list(wanted)
        for start in range(0, len(probe), FIND_BATCH):
            batch = probe[start:start + FIND_BATCH]
            txn = self.client.txn([], [op_count(k) for k in batch])
            present.update(wanted[k] for i, k in enumerate(batch) if txn.responses[i].response_range.count)
        return {ip: next((n for n in nets if n in present), None) for ip, nets in around.items()}

    def _load_blocks(self, cidrs: Sequence[IPNetwork]) -> None:
        """Read blocks that are not cached, up to READ_BATCH in one transaction."""
        missing = [c for c in cidrs if c not in self._block_cache][:READ_BATCH]
        if len(missing) < 2:
            return  # one block: `_take_block` reads it as cheaply
        txn = self.client.txn([], [op_get(keys.block_key(c)) for c in missing])
        for i, cidr in enumerate(missing):
            self._keep_block(cidr, *parse_block_value(txn.range_kvs(i)))

    # ------------------------------------------------------------------ affinities
    def affinities(self, node: str | None = None, version: int | None = None) -> list[Affinity]:
        kvs, _ = self.client.get_prefix(keys.host_prefix(node, version if node else None))
        out = []
        for kv in kvs:
            parsed = keys.parse_affinity_key(kv.key)
            if parsed is None or (version and parsed[1].version != version):
                continue
            out.append(Affinity(parsed[0], parsed[1], affinity_state(kv.value), kv.mod_revision))
        return out

    def _affine_cidrs(self, node: str, version: int) -> list[IPNetwork]:
        """The node's affine blocks of one version, in address order (cached)."""
        ck = (node, version)
        if ck not in self._affine_cache:
            kvs, _ = self.client.get_prefix(keys.host_prefix(node, version))
            self._affine_cache[ck] = affine_from_kvs(kvs, version)
        return list(self._affine_cache[ck])

    # ------------------------------------------------------------------ handles and addresses
    def handles(self) -> dict[str, dict[str, int]]:
        """handle id -> {block cidr: address count}."""
        kvs, _ = self.client.get_prefix(keys.HANDLE_PREFIX)
        out = {}
        for kv in kvs:
            hid = keys.parse_handle_key(kv.key)
            if hid is not None:
                out[hid] = handle_blocks(kv.value)
        return out

    def get_handle(self, handle_id: str) -> dict[str, int] | None:
        kv = self.client.get(keys.handle_key(keys.check_handle_id(handle_id)))
        if kv is None:
            return None
        return handle_blocks(kv.value)

    def ips_by_handle(self, handle_id: str) -> list[IPAddress]:
        blocks = self.get_handle(handle_id) or {}
        out: list[IPAddress] = []
        for cidr in blocks:
            blk, _ = self._read_block(parse_cidr(cidr))
            if blk is not None:
                out.extend(blk.ips_for_handle(handle_id))
        return out

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

