"""Block affinities of a node: claiming blocks for it (`claim_affinity`), dropping
one affinity (`release_affinity`) and dropping all of them when the node goes
(`release_host_affinities`). The block and its affinity key change together in one
compare-and-swap transaction, so a block never shows half a claim.
"""
from __future__ import annotations

from typing import Any

from calico_net.datastore.etcd import cmp_mod_revision, op_delete, op_put
from calico_net.ipam import keys
from calico_net.ipam.assign import IPAMAssign
from calico_net.ipam.block import AllocationBlock, IPNetwork, iter_blocks, parse_cidr
from calico_net.ipam.errors import BlockNotEmptyError, IPAMConflictError, IPAMError, NotInPoolError
from calico_net.ipam.pools import pool_for
from calico_net.ipam.records import AFFINITY_VALUE, IPAMConfig, backoff, dumps


class IPAMAffinity(IPAMAssign):
    """The affinity part of `IPAM`."""

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
            if self._affinity_txn(
                node, cidr,
                [cmp_mod_revision(bkey, brev), cmp_mod_revision(akey, akv.mod_revision if akv else 0)],
                [op_put(bkey, dumps(blk.to_json())), op_put(akey, AFFINITY_VALUE)],
            ):
                return True
            backoff(attempt)
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
                    ops.append(op_put(bkey, dumps(blk.to_json())))
            if self._affinity_txn(node, net, compare, ops):
                return True
            backoff(attempt)
        raise IPAMConflictError(f"could not release {node}'s affinity to {net}: it kept changing; try again")

    def _affinity_txn(self, node: str, cidr: IPNetwork, compare: list[dict[str, Any]],
                      ops: list[dict[str, Any]]) -> bool:
        """Commit a change to a block and its affinity key for `node` when `compare`
        holds; what is cached about the block is dropped once it went through."""
        if not self.client.txn(compare, ops).succeeded:
            return False
        self._forget_affinity(node, cidr)
        return True

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
