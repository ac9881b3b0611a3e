"""Pool selection of calico_net.ipam.pools: versions, disabled, nodeSelector, requested,
intended use (allowedUses), and documents that are not usable pools (skipped)."""
from __future__ import annotations

import ipaddress
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calico_net.ipam.errors import NoPoolsError
from calico_net.ipam.pools import (
    POOL_KEY_PREFIX,
    Pool,
    PoolList,
    SkippedPool,
    needs_node_labels,
    pool_for,
    pools_from_documents,
    report_skipped,
    select_pools,
    skipped_value,
)


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
    Pool.from_document(doc("workload", "198.19.6.0/24", allowedUses=["Workload"])),
    Pool.from_document(doc("both", "198.19.7.0/24", allowedUses=["Tunnel", "Workload"])),
    Pool.from_document(doc("lb", "198.19.8.0/24", allowedUses=["LoadBalancer"])),
]


def test_defaults():
    p = Pool.from_document(doc("x", "198.19.0.0/16"))
    assert p.block_size == 26 and p.node_selector == "all()" and not p.disabled and p.selects_all
    assert Pool.from_document(doc("y", "2001:2::/64")).block_size == 122


def test_select_enabled_pools_of_version_in_name_order():
    chosen = select_pools(POOLS, 4, "n1", {})
    assert [p.name for p in chosen] == ["a-pool", "b-pool", "both", "workload"]
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
    ("tunnel", r'"tunnel" \(198.19.4.0/24\) is not for automatic Workload assignment \(allowedUses \[Tunnel\]\)'),
    ("manual", "not for automatic assignment \\(assignmentMode Manual\\)"),
    ("lb", r"not for automatic Workload assignment \(allowedUses \[LoadBalancer\]\)"),
])
def test_requested_pool_errors_are_explicit(want, msg):
    with pytest.raises(NoPoolsError, match=msg):
        select_pools(POOLS, 4, "n1", {}, [want])


def test_intended_use_picks_pools_by_allowed_uses():
    # unset allowedUses means Workload and Tunnel (Calico's default); Manual pools never
    tunnel = [p.name for p in select_pools(POOLS, 4, "n1", {}, use="Tunnel")]
    assert tunnel == ["a-pool", "b-pool", "both", "tunnel"]
    workload = [p.name for p in select_pools(POOLS, 4, "n1", {}, use="Workload")]
    assert workload == ["a-pool", "b-pool", "both", "workload"]
    assert select_pools(POOLS, 4, "n1", {}, ["tunnel"], use="Tunnel")[0].name == "tunnel"
    with pytest.raises(NoPoolsError, match=r'"workload" \(198.19.6.0/24\) is not for automatic Tunnel '
                                           r"assignment \(allowedUses \[Workload\]\)"):
        select_pools(POOLS, 4, "n1", {}, ["both", "workload"], use="Tunnel")
    with pytest.raises(ValueError, match="intended use"):
        select_pools(POOLS, 4, "n1", {}, use="LoadBalancer")


@pytest.mark.parametrize("spec,why", [
    ({"vxlanMode": "Always"}, "no spec.cidr"),
    ({"cidr": 7}, "spec.cidr is not a string"),
    ({"cidr": "198.19.9.0/33"}, "198.19.9.0/33"),
    ({"cidr": "198.19.9.0/24", "blockSize": "26"}, "blockSize"),
    ({"cidr": "198.19.9.0/24", "blockSize": 40}, "blockSize"),
    ({"cidr": "198.19.9.0/24", "disabled": "false"}, "spec.disabled is not a boolean"),
    ({"cidr": "198.19.9.0/24", "nodeSelector": "rack =="}, "nodeSelector does not parse"),
    ({"cidr": "198.19.9.0/24", "nodeSelector": ["all()"]}, "nodeSelector is not a string"),
    ({"cidr": "198.19.9.0/24", "allowedUses": "Tunnel"}, "allowedUses is not a list"),
    ({"cidr": "198.19.9.0/24", "assignmentMode": 1}, "assignmentMode is not a string"),
    ("not an object", "spec is not an object"),
])
def test_unusable_documents_are_refused_with_the_reason(spec, why):
    with pytest.raises(ValueError, match=why):
        Pool.from_document({"kind": "IPPool", "metadata": {"name": "bad"}, "spec": spec})


def test_unusable_pools_are_skipped_and_named_when_requested(caplog):
    docs = [doc("good", "198.19.0.0/24"),
            {"kind": "IPPool", "metadata": {"name": "no-cidr-unit"}, "spec": {"ipipMode": "Always"}},
            {"kind": "IPPool", "metadata": {}, "spec": {"cidr": "198.19.1.0/24"}}]
    with caplog.at_level(logging.WARNING, logger="calico_net.ipam.pools"):
        for _ in range(2):  # read again: not logged again
            undecodable = skipped_value(POOL_KEY_PREFIX + "garbage-unit\x1b[31m", "value is not JSON")
            pools = pools_from_documents(docs, [undecodable])
    assert isinstance(pools, PoolList) and [p.name for p in pools] == ["good"]
    assert sorted(pools.skipped) == ["", "garbage-unit\x1b[31m", "no-cidr-unit"]
    assert [p.name for p in select_pools(pools, 4, "n1", {})] == ["good"]
    with pytest.raises(NoPoolsError, match=r'requested pool "no-cidr-unit" cannot be used: IPPool key '
                                           r"/calico/\S+/ippools/no-cidr-unit is not a usable pool: "
                                           r"it has no spec.cidr"):
        select_pools(pools, 4, "n1", {}, ["no-cidr-unit"])
    with pytest.raises(NoPoolsError, match="does not exist"):
        select_pools(pools, 4, "n1", {}, ["nowhere"])
    lines = [r.getMessage() for r in caplog.records]
    assert sum("no-cidr-unit" in m for m in lines) == 1
    assert sum("garbage-unit" in m for m in lines) == 1
    assert sum("without a metadata.name" in m for m in lines) <= 1
    # the key came from etcd: it is shown escaped, never with a raw escape character
    assert not any("\x1b" in m for m in lines)
    assert any("garbage-unit\\x1b[31m" in m for m in lines)


def test_a_new_reason_for_the_same_key_is_logged(caplog):
    with caplog.at_level(logging.WARNING, logger="calico_net.ipam.pools"):
        report_skipped(SkippedPool(POOL_KEY_PREFIX + "flip-unit", "one"))
        report_skipped(SkippedPool(POOL_KEY_PREFIX + "flip-unit", "one"))
        report_skipped(SkippedPool(POOL_KEY_PREFIX + "flip-unit", "two"))
    assert [r.getMessage().rsplit(": ", 1)[1] for r in caplog.records] == ["one", "two"]


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
