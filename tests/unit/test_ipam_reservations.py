"""Reservations without etcd: which ordinals of a block are reserved, whole-block
reservations, documents that do not parse, and `AllocationBlock.assign` passing over
reserved ordinals while leaving them free in their place."""
from __future__ import annotations

import ipaddress

import orjson

from calico_net.datastore.etcd import KV
from calico_net.ipam.block import AllocationBlock
from calico_net.ipam.records import IPAMConfig
from calico_net.ipam.reservations import RESERVATION_PREFIX, Reservations

net = ipaddress.ip_network


def kv(name: str, doc: object) -> KV:
    return KV(RESERVATION_PREFIX + name, orjson.dumps(doc), 5, 5, 1)


def reservations(*cidrs: str) -> Reservations:
    return Reservations.from_kvs([kv("r", {"spec": {"reservedCIDRs": list(cidrs)}})], 7)


def test_ordinals_a_reservation_covers() -> None:
    r = reservations("198.19.0.1", "198.19.0.8/30", "198.19.1.0/24", "fd00::2/127")
    assert r.revision == 7
    assert r.skipped(net("198.19.0.0/28")) == {1, 8, 9, 10, 11}
    assert r.skipped(net("198.19.0.16/28")) == frozenset()
    assert r.skipped(net("198.19.1.64/26")) == frozenset(range(64))
    assert r.covers(net("198.19.1.64/26")) and not r.covers(net("198.19.0.0/28"))
    assert r.skipped(net("fd00::/124")) == {2, 3}


def test_a_reservation_that_does_not_parse_reserves_nothing() -> None:
    r = Reservations.from_kvs([kv("bad", {"spec": {"reservedCIDRs": ["not-an-ip"]}}),
                               kv("odd", {"spec": "x"}),
                               kv("good", {"spec": {"reservedCIDRs": ["198.19.0.3"]}})], 1)
    assert r.skipped(net("198.19.0.0/28")) == {3}


def test_assign_passes_over_reserved_ordinals() -> None:
    blk = AllocationBlock.new(net("198.19.0.0/28"), "node-a")
    got = blk.assign(3, "h", {"node": "node-a"}, frozenset({0, 2, 3}))
    assert [str(a) for a in got] == ["198.19.0.1", "198.19.0.4", "198.19.0.5"]
    assert blk.unallocated[:3] == [0, 2, 3]  # still free, still first in line
    assert blk.free == 13
    assert blk.assign(20, "h2", None, frozenset(range(16))) == []
    assert len(blk.assign(20, "h2", None, frozenset({0, 2, 3}))) == 10
    assert sorted(blk.unallocated) == [0, 2, 3]


def test_ipam_config_from_the_resource_document() -> None:
    assert IPAMConfig.from_kvs([]) == IPAMConfig(False, True, 0)
    doc = {"kind": "IPAMConfiguration", "spec": {"strictAffinity": True, "maxBlocksPerHost": 4}}
    cfg = IPAMConfig.from_kvs([KV("k", orjson.dumps(doc), 1, 1, 1)])
    assert cfg == IPAMConfig(strict_affinity=True, auto_allocate_blocks=True, max_blocks_per_host=4)
    assert cfg.spec() == {"strictAffinity": True, "autoAllocateBlocks": True, "maxBlocksPerHost": 4}
