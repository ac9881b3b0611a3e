"""Pool selection of calico_net.ipam.pools: versions, disabled, nodeSelector, requested."""
from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calico_net.ipam.errors import NoPoolsError
from calico_net.ipam.pools import Pool, needs_node_labels, pool_for, select_pools


def doc(name, cidr, **spec):
    return {"kind": "IPPool", "metadata": {"name": name}, "spec": {"cidr": cidr, **spec}}


POOLS = [
    Pool.from_document(doc("b-pool", "198.19.0.0/24")),
    Pool.from_document(doc("a-pool", "198.19.1.0/24", blockSize=28)),
    Pool.from_document(doc("off", "198.19.2.0/24", disabled=True)),
    Pool.from_document(doc("rack1", "198.19.3.0/24", nodeSelector="rack == 'r1'")),
    Pool.from_document(doc("v6", "2001:2::/64")),
    Pool.from_document(doc("tunnel", "198.19.4.0/24", allowedUses=["Tunnel"])),
    Pool.from_document(doc("manual", "198.19.5.0/24", assignmentMode="Manual")),
]


def test_defaults():
    p = Pool.from_document(doc("x", "198.19.0.0/16"))
    assert p.block_size == 26 and p.node_selector == "all()" and not p.disabled and p.selects_all
    assert Pool.from_document(doc("y", "2001:2::/64")).block_size == 122


def test_select_enabled_pools_of_version_in_name_order():
    chosen = select_pools(POOLS, 4, "n1", {})
    assert [p.name for p in chosen] == ["a-pool", "b-pool"]
    assert [p.name for p in select_pools(POOLS, 6, "n1", {})] == ["v6"]


def test_node_selector_uses_node_labels():
    assert "rack1" in [p.name for p in select_pools(POOLS, 4, "n1", {"rack": "r1"})]
    assert "rack1" not in [p.name for p in select_pools(POOLS, 4, "n1", {"rack": "r2"})]
    assert needs_node_labels(POOLS) and not needs_node_labels(POOLS[:2])


def test_requested_pools_by_name_or_cidr_in_given_order():
    chosen = select_pools(POOLS, 4, "n1", {}, ["198.19.0.0/24", "a-pool"])
    assert [p.name for p in chosen] == ["b-pool", "a-pool"]


@pytest.mark.parametrize("want,msg", [
    ("nope", "does not exist"),
    ("off", "is disabled"),
    ("v6", "is an IPv6 pool"),
    ("rack1", "does not select node"),
    ("tunnel", "not for automatic"),
    ("manual", "not for automatic"),
])
def test_requested_pool_errors_are_explicit(want, msg):
    with pytest.raises(NoPoolsError, match=msg):
        select_pools(POOLS, 4, "n1", {}, [want])


def test_pool_for_picks_the_containing_pool():
    assert pool_for(POOLS, ipaddress.ip_address("198.19.1.7")).name == "a-pool"
    assert pool_for(POOLS, ipaddress.ip_network("198.19.0.64/26")).name == "b-pool"
    assert pool_for(POOLS, ipaddress.ip_address("198.19.2.1"), enabled_only=True) is None
    assert pool_for(POOLS, ipaddress.ip_address("198.18.0.1")) is None


@settings(max_examples=400, deadline=None)
@given(
    version=st.sampled_from([4, 6]),
    pool_bits=st.integers(min_value=0, max_value=2**128 - 1),
    pool_len=st.integers(min_value=0, max_value=128),
    other_bits=st.integers(min_value=0, max_value=2**128 - 1),
    other_len=st.integers(min_value=0, max_value=128),
    near=st.booleans(),
)
def test_contains_agrees_with_ipaddress(version, pool_bits, pool_len, other_bits, other_len, near):
    net_t, addr_t, width = ((ipaddress.IPv4Network, ipaddress.IPv4Address, 32) if version == 4
                            else (ipaddress.IPv6Network, ipaddress.IPv6Address, 128))
    pool_len, other_len = pool_len % (width + 1), other_len % (width + 1)
    mask = (1 << width) - 1
    pool_net = net_t(((pool_bits & mask), pool_len), strict=False)
    if near:  # most random pairs are far apart: also try ones that share the pool's prefix
        other_bits = int(pool_net.network_address) | (other_bits & ((1 << (width - pool_len)) - 1))
    other_net = net_t(((other_bits & mask), other_len), strict=False)
    other_ip = addr_t(other_bits & mask)
    p = Pool("p", pool_net, max(pool_len, 26 if version == 4 else 122))
    assert p.contains(other_net) == other_net.subnet_of(pool_net)
    assert p.contains(other_ip) == (other_ip in pool_net)
    other_version = ipaddress.ip_network("2001:db8::/64") if version == 4 else ipaddress.ip_network("198.19.0.0/24")
    assert not p.contains(other_version)
    assert not p.contains(other_version.network_address)
