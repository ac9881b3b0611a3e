"""Allocation blocks: the unit of IPAM, pure data and arithmetic (no I/O).

A pool is cut into blocks of `blockSize` (/26 for IPv4, /122 for IPv6 by default).
Each block is one etcd value in libcalico-go's `AllocationBlock` JSON:

    {"cidr": "198.19.0.0/26", "affinity": "host:node-1", "strictAffinity": false,
     "allocations": [0, null, ...],      # one entry per address: attribute index or null
     "unallocated": [1, 2, ...],         # free ordinals, in the order they are handed out
     "attributes": [{"handle_id": "calico.abc", "secondary": {"node": "node-1"}}],
     "deleted": false, "sequenceNumber": 7, "sequenceNumberForAllocation": {"0": 6}}

Addresses are handed out from the front of `unallocated` and returned to its back
(as Calico does), so a just-released address is not reused at once. Attributes are
shared by every address of the same handle and compacted when no address uses them.

`AllocationBlock` mutates in memory; `calico_net.ipam.assign` and `.release` write it back
with a compare-and-swap. Everything here is unit-tested without etcd.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from itertools import islice
from typing import AbstractSet, Any, Iterator, Mapping, Union

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

DEFAULT_BLOCK_SIZE = {4: 26, 6: 122}
# Attribute keys Calico's clients put in `secondary`.
ATTR_NODE = "node"
ATTR_NAMESPACE = "namespace"
ATTR_POD = "pod"
ATTR_TYPE = "type"
# Only this many blocks are enumerated when looking for a free one in a huge (IPv6) pool.
MAX_BLOCK_SCAN = 1 << 20


def parse_cidr(text: str | IPNetwork) -> IPNetwork:
    """A network from text; host bits are masked off ("198.19.0.5/26" -> 198.19.0.0/26)."""
    if isinstance(text, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return text
    return ipaddress.ip_network(str(text).strip(), strict=False)


def parse_ip(text: str | IPAddress) -> IPAddress:
    if isinstance(text, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return text
    value = str(text).strip()
    if "/" in value:  # "198.19.0.5/32" is accepted where an address is meant
        value = value.split("/", 1)[0]
    return ipaddress.ip_address(value)


def block_count(pool_cidr: IPNetwork, block_size: int) -> int:
    """How many blocks of /block_size fit in the pool."""
    if block_size < pool_cidr.prefixlen:
        # A pool smaller than a block is one block (the pool) — Calico refuses such
        # pools in validation; we degrade gracefully instead of dividing by zero.
        return 1
    return 1 << (block_size - pool_cidr.prefixlen)


def nth_block(pool_cidr: IPNetwork, block_size: int, n: int) -> IPNetwork:
    size = max(block_size, pool_cidr.prefixlen)
    base = int(pool_cidr.network_address) + (n << (pool_cidr.max_prefixlen - size))
    return ipaddress.ip_network((base, size))


def iter_blocks(pool_cidr: IPNetwork, block_size: int, limit: int = MAX_BLOCK_SCAN) -> Iterator[IPNetwork]:
    """Block CIDRs of a pool in address order (at most `limit` of them)."""
    for n in range(min(block_count(pool_cidr, block_size), limit)):
        yield nth_block(pool_cidr, block_size, n)


def block_for_ip(ip: IPAddress, pool_cidr: IPNetwork, block_size: int) -> IPNetwork:
    """The block CIDR (of this pool's block size) that holds `ip`."""
    size = max(block_size, pool_cidr.prefixlen)
    return ipaddress.ip_network((int(ip), size), strict=False)


def cidr_key_part(cidr: IPNetwork) -> str:
    """"198.19.0.0/26" -> "198.19.0.0-26", as Calico names block keys."""
    return str(cidr).replace("/", "-", 1)


def cidr_from_key_part(part: str) -> IPNetwork:
    head, _, tail = part.rpartition("-")
    return ipaddress.ip_network(f"{head}/{tail}")


@dataclass
class AllocationBlock:
    cidr: IPNetwork
    affinity: str | None = None
    strict_affinity: bool = False
    allocations: list[int | None] = field(default_factory=list)
    unallocated: list[int] = field(default_factory=list)
    attributes: list[dict[str, Any]] = field(default_factory=list)
    deleted: bool = False
    sequence_number: int = 0
    sequence_for_allocation: dict[str, int] = field(default_factory=dict)

    # --- construction and JSON ---
    @classmethod
    def new(cls, cidr: IPNetwork, host: str | None, strict_affinity: bool = False) -> "AllocationBlock":
        n = cidr.num_addresses
        return cls(
            cidr=cidr,
            affinity=f"host:{host}" if host else None,
            strict_affinity=strict_affinity,
            allocations=[None] * n,
            unallocated=list(range(n)),
        )

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> "AllocationBlock":
        cidr = parse_cidr(doc["cidr"])
        affinity = doc.get("affinity")
        if affinity is None and doc.get("hostAffinity"):  # Calico's deprecated spelling
            affinity = f"host:{doc['hostAffinity']}"
        allocations = list(doc.get("allocations") or [])
        n = cidr.num_addresses
        if len(allocations) != n:
            raise ValueError(f"block {cidr}: {len(allocations)} allocation slots, expected {n}")
        return cls(
            cidr=cidr,
            affinity=affinity,
            strict_affinity=bool(doc.get("strictAffinity", False)),
            allocations=allocations,
            unallocated=list(doc.get("unallocated") or []),
            attributes=[
                {"handle_id": a.get("handle_id"), "secondary": dict(a.get("secondary") or {})}
                for a in (doc.get("attributes") or [])
            ],
            deleted=bool(doc.get("deleted", False)),
            sequence_number=int(doc.get("sequenceNumber", 0) or 0),
            sequence_for_allocation={
                str(k): int(v) for k, v in (doc.get("sequenceNumberForAllocation") or {}).items()
            },
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "cidr": str(self.cidr),
            "affinity": self.affinity,
            "strictAffinity": self.strict_affinity,
            "allocations": self.allocations,
            "unallocated": self.unallocated,
            "attributes": self.attributes,
            "deleted": self.deleted,
            "sequenceNumber": self.sequence_number,
            "sequenceNumberForAllocation": self.sequence_for_allocation,
        }

    # --- reading ---
    @property
    def host(self) -> str | None:
        """The node this block is affine to, or None."""
        if self.affinity and self.affinity.startswith("host:"):
            return self.affinity[len("host:"):]
        return None

    @property
    def size(self) -> int:
        return len(self.allocations)

    @property
    def free(self) -> int:
        return len(self.unallocated)

    @property
    def in_use(self) -> int:
        return self.size - self.free

    @property
    def empty(self) -> bool:
        return self.free == self.size

    def contains(self, ip: IPAddress) -> bool:
        return ip.version == self.cidr.version and ip in self.cidr

    def ordinal(self, ip: IPAddress) -> int:
        if not self.contains(ip):
            raise ValueError(f"{ip} is not in block {self.cidr}")
        return int(ip) - int(self.cidr.network_address)

    def ip_at(self, ordinal: int) -> IPAddress:
        return ipaddress.ip_address(int(self.cidr.network_address) + ordinal)

    def attribute_of(self, ip: IPAddress) -> dict[str, Any] | None:
        """The attribute record of an allocated address, None when the address is free."""
        idx = self.allocations[self.ordinal(ip)]
        if idx is None:
            return None
        if idx >= len(self.attributes):
            return {"handle_id": None, "secondary": {}}
        return self.attributes[idx]

    def allocated(self) -> Iterator[tuple[IPAddress, dict[str, Any]]]:
        """(address, attribute record) for every allocated address."""
        for ordinal, idx in enumerate(self.allocations):
            if idx is None:
                continue
            attr = self.attributes[idx] if idx < len(self.attributes) else {"handle_id": None, "secondary": {}}
            yield self.ip_at(ordinal), attr

    def ips_for_handle(self, handle_id: str) -> list[IPAddress]:
        return [ip for ip, attr in self.allocated() if attr.get("handle_id") == handle_id]

    def handle_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, attr in self.allocated():
            h = attr.get("handle_id")
            if h:
                counts[h] = counts.get(h, 0) + 1
        return counts

    # --- changing ---
    def _bump(self) -> int:
        self.sequence_number += 1
        return self.sequence_number

    def _attribute_index(self, handle_id: str | None, secondary: Mapping[str, str] | None) -> int:
        want = {"handle_id": handle_id, "secondary": dict(secondary or {})}
        for i, attr in enumerate(self.attributes):
            if attr.get("handle_id") == want["handle_id"] and (attr.get("secondary") or {}) == want["secondary"]:
                return i
        self.attributes.append(want)
        return len(self.attributes) - 1

    def assign(self, num: int, handle_id: str | None, secondary: Mapping[str, str] | None = None,
               skip: AbstractSet[int] = frozenset()) -> list[IPAddress]:
        """Take up to `num` free addresses (fewer when the block runs out), passing over
        the ordinals in `skip` (reserved addresses), which stay free in their place."""
        if skip:
            take = list(islice((o for o in self.unallocated if o not in skip), num))
        else:
            take = self.unallocated[:num]
        if not take:
            return []
        idx = self._attribute_index(handle_id, secondary)
        seq = self._bump()
        for ordinal in take:
            self.allocations[ordinal] = idx
            self.sequence_for_allocation[str(ordinal)] = seq
        if skip:
            taken = set(take)
            self.unallocated = [o for o in self.unallocated if o not in taken]
        else:
            del self.unallocated[: len(take)]
        return [self.ip_at(o) for o in take]

    def assign_ip(self, ip: IPAddress, handle_id: str | None, secondary: Mapping[str, str] | None = None) -> None:
        """Take one specific address; ValueError when it is already in use."""
        ordinal = self.ordinal(ip)
        if self.allocations[ordinal] is not None:
            raise ValueError(f"{ip} is already assigned in block {self.cidr}")
        idx = self._attribute_index(handle_id, secondary)
        seq = self._bump()
        self.allocations[ordinal] = idx
        self.sequence_for_allocation[str(ordinal)] = seq
        try:
            self.unallocated.remove(ordinal)
        except ValueError:
            pass  # a hand-edited block missing the ordinal: the allocation still holds

    def release(self, ips: list[IPAddress]) -> tuple[dict[str, int], list[IPAddress]]:
        """Free addresses. Returns ({handle_id: addresses freed}, addresses not allocated)."""
        freed: dict[str, int] = {}
        not_allocated: list[IPAddress] = []
        ordinals = []
        for ip in ips:
            ordinal = self.ordinal(ip)
            idx = self.allocations[ordinal]
            if idx is None:
                not_allocated.append(ip)
                continue
            handle = self.attributes[idx].get("handle_id") if idx < len(self.attributes) else None
            if handle:
                freed[handle] = freed.get(handle, 0) + 1
            ordinals.append(ordinal)
        if ordinals:
            self._free_ordinals(ordinals)
        return freed, not_allocated

    def release_handle(self, handle_id: str) -> int:
        """Free every address of a handle; returns how many were freed."""
        ordinals = [
            o for o, idx in enumerate(self.allocations)
            if idx is not None and idx < len(self.attributes) and self.attributes[idx].get("handle_id") == handle_id
        ]
        if ordinals:
            self._free_ordinals(ordinals)
        return len(ordinals)

    def _free_ordinals(self, ordinals: list[int]) -> None:
        self._bump()
        for o in ordinals:
            self.allocations[o] = None
            self.sequence_for_allocation.pop(str(o), None)
            self.unallocated.append(o)
        self._compact_attributes()

    def _compact_attributes(self) -> None:
        """Drop attribute records no address refers to and renumber the rest."""
        used = sorted({idx for idx in self.allocations if idx is not None})
        if used == list(range(len(self.attributes))):
            return
        remap = {old: new for new, old in enumerate(used)}
        self.attributes = [self.attributes[old] for old in used if old < len(self.attributes)]
        self.allocations = [None if idx is None else remap[idx] for idx in self.allocations]
