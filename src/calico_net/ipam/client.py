"""`IPAM`: Calico-style block IPAM on etcd with host affinity, as libcalico-go's
lib/ipam does it. This module is the public face; the work is split by job:

* `caches`: the six caches one `IPAM` object keeps, and the host lock;
* `reads`: config, pools, node labels, reservations, the assignment's view, blocks,
  handles;
* `reservations`: which addresses and blocks the IPReservations keep from assignment;
* `release`: freeing addresses by address or by handle;
* `assign`: `auto_assign`, `assign_ip` and the compare-and-swap core;
* `affinity`: claiming and releasing blocks for a node, and a node's removal;
* `records`: the values these pass around and their etcd encodings.

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

from typing import Any

import orjson

from calico_net.datastore.etcd import EtcdClient, cmp_mod_revision, op_put
from calico_net.datastore.store import stored_value
from calico_net.ipam import keys
from calico_net.ipam.affinity import IPAMAffinity
from calico_net.ipam.block import ATTR_NODE, block_count
from calico_net.ipam.errors import IPAMConflictError, IPAMError
from calico_net.ipam.pools import pool_for
from calico_net.ipam.records import MAX_ATTEMPTS, Affinity, Assignment, IPAMConfig

__all__ = ["IPAM", "Affinity", "Assignment", "IPAMConfig"]


def _check_config(cfg: IPAMConfig) -> None:
    """Calico's SetIPAMConfig rules (calicoctl ipam configure refuses the same)."""
    if not cfg.strict_affinity and not cfg.auto_allocate_blocks:
        raise IPAMError("cannot disable both strict affinity and auto_allocate_blocks")
    if cfg.max_blocks_per_host < 0:
        raise IPAMError("maxBlocksPerHost must be 0 (no limit) or more")
    if cfg.max_blocks_per_host > 0 and not cfg.strict_affinity:
        raise IPAMError("maxBlocksPerHost requires strict affinity to be enabled")


class IPAM(IPAMAffinity):
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
        super().__init__(host_lock_dir)

    # ------------------------------------------------------------------ config
    def set_config(self, *, strict_affinity: bool | None = None, auto_allocate_blocks: bool | None = None,
                   max_blocks_per_host: int | None = None) -> IPAMConfig:
        """Change the IPAMConfiguration resource "default" (created when missing), with
        the rules of Calico's SetIPAMConfig; fields of the resource this does not set
        are kept."""
        for _ in range(self.max_attempts):
            kv = self.client.get(keys.CONFIG_KEY)
            doc = orjson.loads(kv.value) if kv and kv.value else {
                "apiVersion": "projectcalico.org/v3", "kind": "IPAMConfiguration", "metadata": {"name": "default"}}
            cfg = IPAMConfig.from_document(doc)
            if strict_affinity is not None:
                cfg.strict_affinity = strict_affinity
            if auto_allocate_blocks is not None:
                cfg.auto_allocate_blocks = auto_allocate_blocks
            if max_blocks_per_host is not None:
                cfg.max_blocks_per_host = max_blocks_per_host
            _check_config(cfg)
            doc["spec"] = {**(doc.get("spec") or {}), **cfg.spec()}
            txn = self.client.txn(
                [cmp_mod_revision(keys.CONFIG_KEY, kv.mod_revision if kv else 0)],
                [op_put(keys.CONFIG_KEY, stored_value(doc, doc))],
            )
            if txn.succeeded:
                return cfg
        raise IPAMConflictError("IPAM config kept changing underneath; try again")

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
