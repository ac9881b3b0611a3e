"""Block arithmetic and allocation logic of calico_net.ipam.block (no etcd)."""
from __future__ import annotations

import ipaddress
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calico_net.ipam import keys
from calico_net.ipam.block import (
    AllocationBlock,
    block_count,
    block_for_ip,
    cidr_from_key_part,
    cidr_key_part,
    iter_blocks,
    nth_block,
    parse_cidr,
    parse_ip,
)

net = ipaddress.ip_network
ip = ipaddress.ip_address


def test_block_math_v4():
    pool = net("198.19.0.0/24")
    assert block_count(pool, 26) == 4
    assert list(iter_blocks(pool, 26)) == [net(f"198.19.0.{i}/26") for i in (0, 64, 128, 192)]
    assert nth_block(pool, 26, 3) == net("198.19.0.192/26")
    assert block_for_ip(ip("198.19.0.130"), pool, 26) == net("198.19.0.128/26")
    # a pool smaller than a block is one block (validation refuses it; no crash here)
    assert block_count(net("198.19.0.0/28"), 26) == 1
    assert list(iter_blocks(net("198.19.0.0/28"), 26)) == [net("198.19.0.0/28")]


def test_block_math_v6():
    pool = net("2001:2::/120")
    assert block_count(pool, 122) == 4
    assert nth_block(pool, 122, 1) == net("2001:2::40/122")
    assert block_for_ip(ip("2001:2::ff"), pool, 122) == net("2001:2::c0/122")
    # huge pools are enumerated lazily, never materialised
    big = net("2001:2::/48")
    assert block_count(big, 122) == 1 << 74
    assert next(iter(iter_blocks(big, 122))) == net("2001:2::/122")


def test_key_parts_round_trip():
    for text, part in [("198.19.0.0/26", "198.19.0.0-26"), ("2001:2::40/122", "2001:2::40-122")]:
        assert cidr_key_part(net(text)) == part
        assert cidr_from_key_part(part) == net(text)


def test_keys_follow_calico_layout():
    b = net("198.19.0.0/26")
    assert keys.block_key(b) == "/calico/ipam/v2/assignment/ipv4/block/198.19.0.0-26"
    assert keys.affinity_key("node-1", b) == "/calico/ipam/v2/host/node-1/ipv4/block/198.19.0.0-26"
    assert keys.handle_key("calico.abc") == "/calico/ipam/v2/handle/calico.abc"
    v6 = net("2001:2::/122")
    assert keys.block_key(v6) == "/calico/ipam/v2/assignment/ipv6/block/2001:2::-122"
    assert keys.parse_block_key(keys.block_key(v6)) == v6
    assert keys.parse_affinity_key(keys.affinity_key("n", v6)) == ("n", v6)
    assert keys.parse_handle_key("/calico/ipam/v2/handle/x.y") == "x.y"
    assert keys.parse_block_key("/calico/ipam/v2/assignment/ipv4/block/garbage") is None
    with pytest.raises(ValueError):
        keys.check_handle_id("a/b")


def test_parse_helpers():
    assert parse_cidr("198.19.0.5/26") == net("198.19.0.0/26")
    assert parse_ip("198.19.0.5/32") == ip("198.19.0.5")


def test_new_block_json_is_calicos_shape():
    b = AllocationBlock.new(net("198.19.0.0/26"), "node-1")
    doc = b.to_json()
    assert doc["cidr"] == "198.19.0.0/26"
    assert doc["affinity"] == "host:node-1"
    assert doc["strictAffinity"] is False
    assert doc["allocations"] == [None] * 64
    assert doc["unallocated"] == list(range(64))
    assert doc["attributes"] == []
    assert doc["deleted"] is False
    assert "sequenceNumber" in doc
    # JSON round trip
    again = AllocationBlock.from_json(json.loads(json.dumps(doc)))
    assert again.to_json() == doc
    assert again.host == "node-1"


def test_assign_in_order_and_release_to_the_back():
    b = AllocationBlock.new(net("198.19.0.0/29"), "n")
    got = b.assign(3, "h1", {"node": "n"})
    assert got == [ip("198.19.0.0"), ip("198.19.0.1"), ip("198.19.0.2")]
    assert b.in_use == 3 and b.free == 5
    assert b.attributes == [{"handle_id": "h1", "secondary": {"node": "n"}}]
    assert b.allocations[:4] == [0, 0, 0, None]
    freed, missing = b.release([ip("198.19.0.1")])
    assert freed == {"h1": 1} and missing == []
    # released ordinal goes to the back: the next assignment does not reuse it
    assert b.unallocated[-1] == 1
    assert b.assign(1, "h2") == [ip("198.19.0.3")]


def test_attributes_are_shared_and_compacted():
    b = AllocationBlock.new(net("198.19.0.0/29"), "n")
    b.assign(2, "h1", {"node": "n"})
    b.assign(1, "h2", {"node": "n"})
    b.assign(1, "h1", {"node": "n"})  # same attributes as the first: reused
    assert len(b.attributes) == 2
    assert b.allocations[:4] == [0, 0, 1, 0]
    assert b.release_handle("h1") == 3
    # h1's attribute record is gone, h2's renumbered to 0
    assert b.attributes == [{"handle_id": "h2", "secondary": {"node": "n"}}]
    assert b.allocations[2] == 0
    assert b.ips_for_handle("h2") == [ip("198.19.0.2")]
    assert b.handle_counts() == {"h2": 1}


def test_release_reports_unallocated_addresses():
    b = AllocationBlock.new(net("198.19.0.0/29"), "n")
    b.assign(1, "h")
    freed, missing = b.release([ip("198.19.0.0"), ip("198.19.0.5")])
    assert freed == {"h": 1}
    assert missing == [ip("198.19.0.5")]
    assert b.empty


def test_assign_specific_ip():
    b = AllocationBlock.new(net("198.19.0.0/29"), "n")
    b.assign_ip(ip("198.19.0.4"), "h")
    assert b.attribute_of(ip("198.19.0.4"))["handle_id"] == "h"
    assert 4 not in b.unallocated
    with pytest.raises(ValueError, match="already assigned"):
        b.assign_ip(ip("198.19.0.4"), "other")
    with pytest.raises(ValueError, match="not in block"):
        b.assign_ip(ip("198.19.1.4"), "other")


def test_full_block_assigns_nothing():
    b = AllocationBlock.new(net("198.19.0.0/30"), "n")
    assert len(b.assign(10, "h")) == 4
    assert b.assign(1, "h2") == []


def test_wrong_size_block_json_is_refused():
    doc = AllocationBlock.new(net("198.19.0.0/30"), "n").to_json()
    doc["allocations"] = doc["allocations"][:2]
    with pytest.raises(ValueError, match="allocation slots"):
        AllocationBlock.from_json(doc)


def test_calico_deprecated_host_affinity_is_read():
    doc = AllocationBlock.new(net("198.19.0.0/30"), None).to_json()
    doc.pop("affinity")
    doc["hostAffinity"] = "old-node"
    assert AllocationBlock.from_json(doc).host == "old-node"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["assign", "release", "release_handle"]),
                          st.integers(0, 5), st.integers(0, 63)), max_size=60))
def test_block_invariants_hold_under_any_sequence(ops):
    """Whatever happens, every ordinal is either allocated or in `unallocated`,
    exactly once, and attribute indexes stay valid."""
    b = AllocationBlock.new(net("198.19.0.0/26"), "n")
    for op, handle_no, ordinal in ops:
        if op == "assign":
            b.assign(1 + ordinal % 4, f"h{handle_no}", {"node": "n"})
        elif op == "release":
            b.release([b.ip_at(ordinal)])
        else:
            b.release_handle(f"h{handle_no}")
        allocated = {o for o, a in enumerate(b.allocations) if a is not None}
        assert len(b.unallocated) == len(set(b.unallocated))
        assert allocated.isdisjoint(b.unallocated)
        assert allocated | set(b.unallocated) == set(range(64))
        assert all(a is None or a < len(b.attributes) for a in b.allocations)
        assert {a for a in b.allocations if a is not None} == set(range(len(b.attributes)))
        assert sum(b.handle_counts().values()) == b.in_use
