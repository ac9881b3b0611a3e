"""The values IPAM works with and their etcd encodings: the IPAM config, an
assignment, an affinity, a handle, the pool/node view an assignment decides on, and
the small readers that turn etcd key-values into them. No etcd calls here.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import orjson

from calico_net.datastore.etcd import KV, op_delete, op_put
from calico_net.datastore.store import resource_key
from calico_net.ipam import keys
from calico_net.ipam.block import ATTR_NODE, AllocationBlock, IPAddress, IPNetwork
from calico_net.ipam.pools import Pool

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
    if not kvs or not kvs[0].value:
        return None, 0
    return AllocationBlock.from_json(orjson.loads(kvs[0].value)), kvs[0].mod_revision


def handle_blocks(value: bytes | None) -> dict[str, int]:
    """A handle's value as {block cidr: address count}."""
    return {str(k): int(v) for k, v in (orjson.loads(value or b"{}").get("block") or {}).items()}


def pool_revisions(docs: list[dict[str, Any]]) -> dict[str, int]:
    """IPPool name -> the etcd mod revision of its key."""
    return {d["metadata"]["name"]: int(d["metadata"].get("resourceVersion") or 0) for d in docs}


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

    @classmethod
    def from_kvs(cls, kvs: list[KV]) -> "IPAMConfig":
        """The config from a range result of its key (empty: the defaults)."""
        return cls.from_json(orjson.loads(kvs[0].value)) if kvs and kvs[0].value else cls()

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
    """A pool or the node changed since the view an assignment was decided on."""


@dataclass
class View:
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
