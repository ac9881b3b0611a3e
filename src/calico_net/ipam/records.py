"""The values IPAM works with and their etcd encodings: the IPAM config, an
assignment, an affinity, a handle, the view an assignment decides on and the guards
its writes carry, and the small readers that turn etcd key-values into them. No etcd
calls here.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple, Sequence

import orjson

from calico_net.datastore.etcd import (
    KV, cmp_mod_revision, cmp_prefix_unchanged_since, op_delete, op_get, op_get_prefix, op_put,
)
from calico_net.datastore.store import resource_key
from calico_net.ipam import keys
from calico_net.ipam.block import ATTR_NODE, AllocationBlock, IPAddress, IPNetwork
from calico_net.ipam.pools import Pool
from calico_net.ipam.reservations import RESERVATION_PREFIX, Reservations

MAX_ATTEMPTS = 200


def dumps(doc: Any) -> bytes:
    """Compact JSON, as Calico stores it (orjson: blocks are rewritten on every change)."""
    return orjson.dumps(doc)


def backoff(attempt: int, cap: int = 20) -> None:
    """Sleep a little, with jitter, once a compare-and-swap has lost a few times, so
    that writers racing for one key spread out instead of colliding again."""
    if attempt >= 3:
        time.sleep(random.uniform(0, 0.002 * min(attempt, cap)))


def affinity_state(value: bytes | None) -> str:
    """The state of an affinity key's value; a value that is not JSON is "invalid"."""
    try:
        return orjson.loads(value or b"{}").get("state", keys.AFFINITY_CONFIRMED)
    except ValueError:
        return "invalid"


AFFINITY_VALUE = dumps({"state": keys.AFFINITY_CONFIRMED, "deleted": False})


def affine_from_kvs(kvs: list[KV], version: int) -> list[IPNetwork]:
    """Affine block CIDRs from a range of one node's affinity keys, in address order;
    affinities pending deletion are left out."""
    out = []
    for kv in kvs:
        parsed = keys.parse_affinity_key(kv.key)
        if parsed is None or parsed[1].version != version:
            continue
        if affinity_state(kv.value) != keys.AFFINITY_PENDING_DELETION:
            out.append(parsed[1])
    return sorted(out, key=lambda c: int(c.network_address))


def parse_block(kvs: list[KV]) -> tuple[AllocationBlock | None, int]:
    """A block from a range result (empty: no block)."""
    blk, rev, _ = parse_block_value(kvs)
    return blk, rev


def parse_block_value(kvs: list[KV]) -> tuple[AllocationBlock | None, int, bytes]:
    """A block from a range result with its mod revision and the exact bytes etcd
    holds (what a later compare-and-swap compares; empty: no block)."""
    if not kvs or not kvs[0].value:
        return None, 0, b""
    return AllocationBlock.from_json(orjson.loads(kvs[0].value)), kvs[0].mod_revision, kvs[0].value


def handle_blocks(value: bytes | None) -> dict[str, int]:
    """A handle's value as {block cidr: address count}."""
    return {str(k): int(v) for k, v in (orjson.loads(value or b"{}").get("block") or {}).items()}


def pool_revisions(docs: list[dict[str, Any]]) -> dict[str, int]:
    """IPPool name -> the etcd mod revision of its key."""
    return {d["metadata"]["name"]: int(d["metadata"].get("resourceVersion") or 0) for d in docs}


@dataclass
class IPAMConfig:
    """The IPAMConfiguration resource "default" (`keys.CONFIG_KEY`), the one place the
    IPAM configuration lives: `calicoctl apply` of the resource and `set_config` write
    it, IPAM reads it. A missing key means Calico's defaults."""

    strict_affinity: bool = False
    auto_allocate_blocks: bool = True
    max_blocks_per_host: int = 0  # 0: no limit

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> "IPAMConfig":
        spec = doc.get("spec") or {}
        return cls(
            strict_affinity=bool(spec.get("strictAffinity", False)),
            auto_allocate_blocks=bool(spec.get("autoAllocateBlocks", True)),
            max_blocks_per_host=int(spec.get("maxBlocksPerHost") or 0),
        )

    @classmethod
    def from_kvs(cls, kvs: list[KV]) -> "IPAMConfig":
        """The config from a range result of its key (empty: the defaults)."""
        return cls.from_document(orjson.loads(kvs[0].value)) if kvs and kvs[0].value else cls()

    def spec(self) -> dict[str, Any]:
        """The resource's spec, with Calico's field names."""
        return {"strictAffinity": self.strict_affinity, "autoAllocateBlocks": self.auto_allocate_blocks,
                "maxBlocksPerHost": self.max_blocks_per_host}


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
class Handle:
    """A handle as this operation believes it is; `rev` 0 means absent."""

    handle_id: str
    blocks: dict[str, int] = field(default_factory=dict)
    rev: int = 0

    @property
    def key(self) -> str:
        return keys.handle_key(self.handle_id)

    def load(self, kvs: list[KV]) -> None:
        if kvs:
            self.blocks = handle_blocks(kvs[0].value)
            self.rev = kvs[0].mod_revision
        else:
            self.blocks, self.rev = {}, 0

    def value(self) -> bytes:
        return dumps({"block": self.blocks, "deleted": False})

    @property
    def live(self) -> bool:
        return any(v > 0 for v in self.blocks.values())

    def add(self, cidr: IPNetwork, count: int) -> None:
        """Count `count` more addresses in block `cidr`."""
        self.blocks[str(cidr)] = self.blocks.get(str(cidr), 0) + count

    def write_ops(self) -> list[dict[str, Any]]:
        """Put the handle, or delete it when it holds no address any more."""
        if self.live:
            return [op_put(self.key, self.value())]
        return [op_delete(self.key)] if self.rev else []


class StaleView(Exception):
    """A pool, the node or a reservation changed since the view an assignment was decided on."""


class Guard(NamedTuple):
    """A write's condition on what its decision read: the key `key` still has etcd mod
    revision `rev` (0: still absent), or, with `prefix`, no key under `key` was created
    or changed after revision `rev`."""

    key: str
    rev: int
    prefix: bool = False

    def compare(self) -> dict[str, Any]:
        return cmp_prefix_unchanged_since(self.key, self.rev) if self.prefix else cmp_mod_revision(self.key, self.rev)

    def read(self) -> dict[str, Any]:
        """The read that tells, after a failed write, whether this guard failed."""
        return op_get_prefix(self.key, keys_only=True) if self.prefix else op_get(self.key)

    def broken(self, kvs: list[KV]) -> bool:
        if self.prefix:
            return any(kv.mod_revision > self.rev for kv in kvs)
        return (kvs[0].mod_revision if kvs else 0) != self.rev


def broken_guard(guards: Sequence[Guard], txn: Any, first: int) -> None:
    """Raise `StaleView` naming the first guard a failed transaction broke; the guards'
    reads are its failure results from index `first` on."""
    for i, guard in enumerate(guards):
        if guard.broken(txn.range_kvs(first + i)):
            raise StaleView(guard.key)


@dataclass
class View:
    """The pools, the node's labels and the IPReservations an assignment decides on,
    with the etcd revisions they were read at. Writes that depend on them carry those
    revisions as compare conditions (a deleted key compares as revision 0), so a
    decision made on a cached view can never commit after the pool was disabled,
    deleted or narrowed by its nodeSelector, after the node's labels changed, or after
    a reservation was made or changed."""

    pools: list[Pool]
    pool_revs: dict[str, int]
    node: str
    node_labels: dict[str, str]
    node_rev: int
    fresh: bool
    reservations: Reservations
    config: IPAMConfig | None = None  # read with a fresh view
    config_rev: int = 0  # the mod revision of the IPAMConfiguration, with `config`
    revision: int = 0  # the etcd revision a fresh view was read at
    block_cidrs: dict[int, set[IPNetwork]] = field(default_factory=dict)  # every block, when read with the view

    def guards(self, pool: Pool | None, *, reserved: bool = True) -> list[Guard]:
        if pool is None:
            return []
        out = [Guard(resource_key("IPPool", pool.name), self.pool_revs.get(pool.name, 0))]
        if not pool.selects_all:
            out.append(Guard(resource_key("Node", self.node), self.node_rev))
        if reserved:
            out.append(Guard(RESERVATION_PREFIX, self.reservations.revision, prefix=True))
        return out

    def claim_guards(self, pool: Pool) -> list[Guard]:
        """A claim's guards: also the IPAMConfiguration its block limit was read from."""
        return [*self.guards(pool), Guard(keys.CONFIG_KEY, self.config_rev)]
