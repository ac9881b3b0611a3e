"""Assigning addresses: `auto_assign` (affine blocks, then a newly claimed block,
then borrowing from other nodes' blocks) and `assign_ip` (one given address), on the
read-modify-write core `_update_block` that moves a block and its handle together in
one compare-and-swap transaction.

How an address is found for `auto_assign(handle, node)`:

1. the node's affine blocks (`/calico/ipam/v2/host/<node>/...`) in the enabled pools
   that select the node and allow the intended use (Workload or Tunnel, see
   `pools.select_pools`), the block used last by this client first;
2. when they are full (checked again against fresh reads), claim a free block of an
   eligible pool: ONE transaction creates the block with `affinity: host:<node>` and the
   affinity key in state "confirmed", on condition that neither exists — so a block
   is claimed by exactly one node, and no half-claimed state is ever visible (Calico
   writes "pending" first because its Kubernetes backend has no multi-key transactions);
3. when the pools have no free block left: borrow a free address from another node's
   block — unless strict affinity is on (the IPAMConfiguration) or the block has
   `strictAffinity`.

The IPAMConfiguration's `maxBlocksPerHost` (0: no limit) stops step 2 once the node
holds that many blocks of the IP version; the assignment then fails without
borrowing, as Calico's does. The claim transaction requires that no affinity of the
node appeared since the count was taken, so racing processes of one node never claim
past the limit. Addresses an IPReservation covers are passed over in steps 1 and 3,
and blocks it covers whole are neither used nor claimed; `assign_ip` ignores
reservations, as Calico's AssignIP does, but under strict affinity it refuses an
address in another node's block, as Calico's does.
"""
from __future__ import annotations

import logging
from typing import AbstractSet, Any, Callable, Mapping, Sequence

from calico_net.datastore.etcd import (cmp_mod_revision, cmp_prefix_unchanged_since, cmp_value, op_get, op_get_prefix,
                                       op_put)
from calico_net.ipam import keys
from calico_net.ipam.block import (
    ATTR_NODE,
    AllocationBlock,
    IPAddress,
    IPNetwork,
    block_count,
    block_for_ip,
    iter_blocks,
    parse_ip,
)
from calico_net.ipam.errors import (
    AddressInUseError,
    AffinityMismatchError,
    BlockLimitError,
    IPAMConflictError,
    NoPoolsError,
    NotInPoolError,
    PoolExhaustedError,
)
from calico_net.ipam.pools import WORKLOAD, Pool, check_use, pool_for
from calico_net.ipam.records import (
    AFFINITY_VALUE,
    Guard,
    Handle,
    IPAMConfig,
    StaleView,
    View,
    backoff,
    broken_guard,
    dumps,
    parse_block_value,
)
from calico_net.ipam.release import IPAMRelease

log = logging.getLogger(__name__)



def _own_write(txn: Any, value: bytes, with_handle: bool, wrote_handle: bytes | None) -> bool:
    """The failed transaction's block (and handle) hold exactly what it wrote: it was
    ours, committed, and re-sent after its reply was lost. A block's JSON names its
    allocations and their handles, so no other writer leaves the same bytes."""
    cur = txn.range_kvs(0)
    if not cur or cur[0].value != value:
        return False
    if not with_handle:
        return True
    h = txn.range_kvs(1)
    return (h[0].value if h else None) == wrote_handle

class IPAMAssign(IPAMRelease):
    """The assigning part of `IPAM`."""

    # ------------------------------------------------------------------ the CAS core
    def _update_block(
        self,
        cidr: IPNetwork,
        change: Callable[[AllocationBlock | None], Any],
        handle: Handle | None = None,
        *,
        handle_change: Callable[[Handle, Any], None] | None = None,
        guards: Sequence[Guard] = (),
        use_cache: bool = True,
    ) -> tuple[Any, AllocationBlock | None]:
        """Read-modify-write one block (and optionally its handle) until it sticks.

        `change(block)` mutates the block and returns a result; returning None means
        "nothing to write" (no transaction is made). `handle_change(handle, result)`
        updates the handle to match; block and handle go in one transaction, which
        also requires every guard of `guards` to hold (`StaleView` is raised when one
        of them broke).
        """
        bkey = keys.block_key(cidr)
        blk, rev, stored = self._take_block(cidr, use_cache)
        with_handle = handle is not None and handle_change is not None
        for attempt in range(self.max_attempts):
            result = change(blk)
            if blk is None or result is None:  # nothing changed: the block is as etcd has it
                self._keep_block(cidr, blk, rev, stored)
                return result, blk
            value = dumps(blk.to_json())
            # the revision and the bytes: a cached or hinted block may come from another
            # etcd history in which the same revision held something else
            compare = [cmp_mod_revision(bkey, rev), cmp_value(bkey, stored)]
            success = [op_put(bkey, value)]
            failure = [op_get(bkey)]
            if with_handle:
                handle_change(handle, result)  # type: ignore[misc]
                compare.append(cmp_mod_revision(handle.key, handle.rev))  # type: ignore[union-attr]
                success.extend(handle.write_ops())  # type: ignore[union-attr]
                failure.append(op_get(handle.key))  # type: ignore[union-attr]
            for guard in guards:
                compare.append(guard.compare())
                failure.append(guard.read())
            wrote_handle = handle.value() if with_handle and handle.live else None  # type: ignore[union-attr]
            txn = self.client.txn(compare, success, failure)
            if txn.succeeded:
                self._wrote(cidr, blk, value, txn.revision)
                if with_handle:
                    handle.rev = txn.revision if handle.live else 0  # type: ignore[union-attr]
                return result, blk
            if _own_write(txn, value, with_handle, wrote_handle):
                # Our write committed and its reply was lost: the client re-sent the
                # transaction to another endpoint, whose compare then failed. Taking
                # that for a conflict would assign a second address to the handle.
                blk, rev, _ = parse_block_value(txn.range_kvs(0))
                self._wrote(cidr, blk, value, rev)  # type: ignore[arg-type]
                if with_handle:
                    handle.load(txn.range_kvs(1))  # type: ignore[union-attr]
                return result, blk
            # Someone else got in first: start again from what is there now. The handle
            # is reloaded too, so a retried increment is never counted twice.
            blk, rev, stored = parse_block_value(txn.range_kvs(0))
            if with_handle:
                handle.load(txn.range_kvs(1))  # type: ignore[union-attr]
            broken_guard(guards, txn, 2 if with_handle else 1)
            backoff(attempt)
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
        intended_use: str = WORKLOAD,
    ) -> tuple[list[IPAddress], list[IPAddress]]:
        """Assign `num_v4` IPv4 and `num_v6` IPv6 addresses to a handle on a node.

        `pools_v4`/`pools_v6` restrict the pools (names or CIDRs). `intended_use` is
        Calico's IntendedUse: "Workload" (the CNI plugin, the default) or "Tunnel" (a
        node's tunnel address); only pools whose allowedUses has it (unset: both) are
        used. All or nothing: if any part fails, what was assigned is released again
        and the error raised.
        """
        keys.check_handle_id(handle_id)
        keys.check_node_name(node)
        check_use(intended_use)
        with self._node_lock(node):
            return self._auto_assign(handle_id, node, num_v4, num_v6, pools_v4, pools_v6, attrs, intended_use)

    def _auto_assign(
        self,
        handle_id: str,
        node: str,
        num_v4: int,
        num_v6: int,
        pools_v4: Sequence[str] | None,
        pools_v6: Sequence[str] | None,
        attrs: Mapping[str, str] | None,
        use: str,
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
            backoff(attempt, cap=25)
            handle = Handle(handle_id)  # optimistic: a new handle; corrected on conflict
            got: dict[int, list[IPAddress]] = {4: [], 6: []}
            try:
                view = self._view(node, fresh, versions, for_claim=for_claim)
                for version, num, requested in ((4, num_v4, pools_v4), (6, num_v6, pools_v6)):
                    if num > 0:
                        pools = self._eligible_pools(view, version, requested, use)
                        self._auto_assign_version(handle, view, version, num, pools, secondary, got[version])
                return got[4], got[6]
            except (StaleView, NoPoolsError, PoolExhaustedError) as e:
                self._undo(got[4] + got[6])
                if fresh and not isinstance(e, StaleView):
                    raise
                fresh = True  # decide again on pools and labels read now
                for_claim = isinstance(e, StaleView) and e.args[:1] == ("claim",)
                if isinstance(e, StaleView):
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
        handle: Handle,
        view: View,
        version: int,
        num: int,
        pools: list[Pool],
        secondary: dict[str, str],
        got: list[IPAddress],
    ) -> None:
        """Append `num` addresses to `got` (which the caller releases on failure).

        On a cached view, only the cached affine blocks are tried; when they are full
        (as far as the cache knows) `StaleView` sends the caller back for a fresh
        view, which re-reads the affinities and blocks, before any block is claimed."""
        node = view.node

        def affine_to_node(blk: AllocationBlock) -> bool:
            return blk.host == node

        # 1. affine blocks, the one used last first.
        reservations = view.reservations
        cidrs = self._last_first(node, version, [c for c in self._affine_cidrs(node, version)
                                                 if pool_for(pools, c) is not None and not reservations.covers(c)])
        for i, cidr in enumerate(cidrs):
            if len(got) >= num:
                return
            if cidr not in self._block_cache:
                self._load_blocks(cidrs[i:])
            ips = self._assign_from(cidr, num - len(got), handle, secondary, affine_to_node,
                                    view.guards(pool_for(pools, cidr)), reservations.skipped(cidr),
                                    use_cache=True)
            if ips:
                got += ips
                self._last_block[(node, version)] = cidr
        if len(got) >= num:
            return
        if not view.fresh:
            raise StaleView("claim")  # claim and borrow decide on a view read now

        # 2. claim new blocks, up to the node's block limit.
        cfg = view.config or self.get_config()
        limit = cfg.max_blocks_per_host
        while len(got) < num and cfg.auto_allocate_blocks:
            if limit and len(self._affine_cache.get((node, version), ())) >= limit:
                # as Calico: no borrowing once the limit is reached (the caller undoes `got`)
                raise BlockLimitError(
                    f'node "{node}" holds {limit} IPv{version} block(s), the maxBlocksPerHost '
                    f"limit of the IPAMConfiguration, and they are full; no block is borrowed")
            claimed = self._claim_free_block(view, pools, cfg)
            if claimed is None:
                break
            pool, cidr = claimed
            ips = self._assign_from(cidr, num - len(got), handle, secondary, affine_to_node,
                                    view.guards(pool), view.reservations.skipped(cidr), use_cache=True)
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
        handle: Handle,
        secondary: dict[str, str],
        eligible: Callable[[AllocationBlock], bool],
        guards: Sequence[Guard],
        skip: AbstractSet[int],
        *,
        use_cache: bool,
    ) -> list[IPAddress]:
        """Up to `num` addresses of one block, passing over the ordinals in `skip`."""
        def change(blk: AllocationBlock | None):
            if blk is None or not eligible(blk) or blk.free == 0:
                return None
            return blk.assign(num, handle.handle_id, secondary, skip) or None

        def handle_change(h: Handle, ips: list[IPAddress]) -> None:
            h.add(cidr, len(ips))

        result, _ = self._update_block(cidr, change, handle, handle_change=handle_change,
                                       guards=guards, use_cache=use_cache)
        return list(result or [])

    def _claim_free_block(self, view: View, pools: list[Pool], cfg: IPAMConfig) -> tuple[Pool, IPNetwork] | None:
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
                if cidr in existing or view.reservations.covers(cidr):
                    continue
                claimed_at = self._create_affine_block(view.node, cidr, cfg, view.claim_guards(pool), view.revision)
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
                             guards: Sequence[Guard] = (), affinities_since: int = 0) -> int:
        """Create a block affine to `node`, with its affinity key, in one transaction
        that requires both to be absent. Returns the revision it was created at, 0 when
        the block or the affinity exists.

        With `affinities_since` (the revision of the view the claim was decided on) it
        also requires that no affinity of the node appeared since: when another
        process of the same node has just claimed a block, `StaleView` sends the
        caller to use that block instead of claiming one more."""
        blk = AllocationBlock.new(cidr, node, strict_affinity=cfg.strict_affinity)
        bkey, akey = keys.block_key(cidr), keys.affinity_key(node, cidr)
        aprefix = keys.host_prefix(node, cidr.version)
        value = dumps(blk.to_json())
        compare = [cmp_mod_revision(bkey, 0), cmp_mod_revision(akey, 0)] + [g.compare() for g in guards]
        failure = [g.read() for g in guards]
        if affinities_since:
            compare.append(cmp_prefix_unchanged_since(aprefix, affinities_since))
            failure.append(op_get_prefix(aprefix, keys_only=True))
        txn = self.client.txn(
            compare,
            [op_put(bkey, value), op_put(akey, AFFINITY_VALUE)],
            failure,
        )
        if txn.succeeded:
            self._wrote(cidr, blk, value, txn.revision)
            log.info("node %s claimed block %s", node, cidr)
            return txn.revision
        broken_guard(guards, txn, 0)
        if affinities_since and any(kv.mod_revision > affinities_since for kv in txn.range_kvs(len(guards))):
            raise StaleView("affinity")
        return 0

    def _borrow(self, view: View, version: int, num: int, pools: list[Pool], handle: Handle,
                secondary: dict[str, str], got: list[IPAddress]) -> None:
        node = view.node
        reservations = view.reservations

        def borrowable(blk: AllocationBlock) -> bool:
            return not blk.strict_affinity and blk.host != node and pool_for(pools, blk.cidr) is not None

        for blk in self.blocks(version):
            if len(got) >= num:
                break
            if borrowable(blk) and blk.free and not reservations.covers(blk.cidr):
                ips = self._assign_from(blk.cidr, num - len(got), handle, secondary, borrowable,
                                        view.guards(pool_for(pools, blk.cidr)), reservations.skipped(blk.cidr),
                                        use_cache=False)
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
        handle = self._read_handle(handle_id)
        cfg = view.config or self.get_config()
        for _ in range(self.max_attempts):
            taken: list[dict[str, Any]] = []

            def change(blk: AllocationBlock | None):
                if blk is None:
                    return None
                if cfg.strict_affinity and blk.host not in (None, node):
                    raise AffinityMismatchError(
                        f"{addr} is in block {cidr}, affine to node {blk.host!r}, and strict affinity is on")
                attr = blk.attribute_of(addr)
                if attr is not None:
                    taken.append(attr)
                    return None
                blk.assign_ip(addr, handle_id, secondary)
                return [addr]

            def handle_change(h: Handle, ips: list[IPAddress]) -> None:
                h.add(cidr, 1)

            try:
                result, blk = self._update_block(cidr, change, handle, handle_change=handle_change,
                                                 guards=view.guards(pool, reserved=False), use_cache=False)
            except StaleView:
                raise IPAMConflictError(f"IPPool {pool.name} changed while assigning {addr}; try again") from None
            if result:
                return addr
            if taken:
                raise AddressInUseError(f"{addr} is already assigned (handle {taken[0].get('handle_id')})")
            if blk is None:  # nobody holds the block yet: claim it for this node, then assign
                self._create_affine_block(node, cidr, cfg)
        raise IPAMConflictError(f"could not assign {addr}: block {cidr} kept changing; try again")
