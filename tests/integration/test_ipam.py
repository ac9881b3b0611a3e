"""calico_net.ipam against the session's real etcd: affinity, claiming, borrowing,
strict affinity, disabled pools, nodeSelector, IPv6, exact release by handle, and the
revision guards that keep a cached pool view honest."""
from __future__ import annotations

import ipaddress
import json

import pytest

from calico_net.ipam import (
    IPAM,
    AddressInUseError,
    BlockNotEmptyError,
    NoPoolsError,
    NotInPoolError,
    PoolExhaustedError,
    keys,
)

ip = ipaddress.ip_address
net = ipaddress.ip_network


def pool(name, cidr, **spec):
    return {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": name},
            "spec": {"cidr": cidr, **spec}}


def node(name, **labels):
    return {"apiVersion": "projectcalico.org/v3", "kind": "Node",
            "metadata": {"name": name, "labels": labels}, "spec": {}}


@pytest.fixture
def ipam(etcd_client, datastore):
    return IPAM(etcd_client, datastore)


def raw(client, key):
    kv = client.get(key)
    return json.loads(kv.value) if kv else None


def test_first_assignment_claims_an_affine_block(ipam, datastore, etcd_client):
    datastore.create(pool("p", "198.19.0.0/24"))
    v4, v6 = ipam.auto_assign("calico.c1", "node-a")
    assert v6 == [] and len(v4) == 1 and v4[0] in net("198.19.0.0/24")
    block = raw(etcd_client, "/calico/ipam/v2/assignment/ipv4/block/198.19.0.0-26")
    assert block["affinity"] == "host:node-a"
    assert block["cidr"] == "198.19.0.0/26"
    assert block["allocations"][0] == 0 and block["allocations"][1] is None
    assert block["attributes"] == [{"handle_id": "calico.c1", "secondary": {"node": "node-a"}}]
    assert len(block["unallocated"]) == 63
    assert raw(etcd_client, "/calico/ipam/v2/host/node-a/ipv4/block/198.19.0.0-26") == {
        "state": "confirmed", "deleted": False}
    assert raw(etcd_client, "/calico/ipam/v2/handle/calico.c1") == {
        "block": {"198.19.0.0/26": 1}, "deleted": False}
    a = ipam.get_assignment(v4[0])
    assert a.handle_id == "calico.c1" and a.node == "node-a" and a.block_affinity == "node-a"
    assert ipam.get_assignment("198.19.0.200") is None


def test_full_block_claims_another_and_nodes_get_their_own(ipam, datastore):
    datastore.create(pool("p", "198.19.0.0/24", blockSize=28))
    a_ips = [ipam.auto_assign(f"a{i}", "node-a")[0][0] for i in range(20)]
    b_ips = [ipam.auto_assign(f"b{i}", "node-b")[0][0] for i in range(3)]
    assert len(set(a_ips + b_ips)) == 23
    hosts = {str(b.cidr): b.host for b in ipam.blocks()}
    assert list(hosts.values()).count("node-a") == 2
    assert list(hosts.values()).count("node-b") == 1
    for addr in a_ips:
        assert ipam.get_assignment(addr).block_affinity == "node-a"
    assert {str(a.cidr) for a in ipam.affinities("node-a")} == {c for c, h in hosts.items() if h == "node-a"}


def test_release_by_handle_is_exact_and_empty_block_keeps_affinity(ipam, datastore, etcd_client):
    datastore.create(pool("p", "198.19.0.0/24"))
    mine, _ = ipam.auto_assign("mine", "node-a", num_v4=3)
    other, _ = ipam.auto_assign("other", "node-a", num_v4=2)
    assert sorted(ipam.release_by_handle("mine")) == sorted(mine)
    assert etcd_client.get(keys.handle_key("mine")) is None
    for addr in mine:
        assert ipam.get_assignment(addr) is None
    for addr in other:
        assert ipam.get_assignment(addr).handle_id == "other"
    assert ipam.release_by_handle("mine") == []  # idempotent
    ipam.release_by_handle("other")
    [blk] = ipam.blocks()
    assert blk.empty and blk.host == "node-a"  # empty, still affine
    assert etcd_client.get(keys.affinity_key("node-a", blk.cidr)) is not None


def test_release_ips(ipam, datastore, etcd_client):
    datastore.create(pool("p", "198.19.0.0/24"))
    v4, _ = ipam.auto_assign("h", "node-a", num_v4=2)
    assert ipam.release_ips([v4[0], "198.19.0.250", "198.19.9.9"]) == [ip("198.19.0.250"), ip("198.19.9.9")]
    assert raw(etcd_client, keys.handle_key("h")) == {"block": {"198.19.0.0/26": 1}, "deleted": False}
    ipam.release_ips([v4[1]])
    assert etcd_client.get(keys.handle_key("h")) is None


def test_dual_stack_handle(ipam, datastore, etcd_client):
    datastore.create(pool("p4", "198.19.0.0/24"))
    datastore.create(pool("p6", "2001:2::/120"))
    v4, v6 = ipam.auto_assign("dual", "node-a", num_v4=1, num_v6=2)
    assert len(v4) == 1 and len(v6) == 2 and all(a in net("2001:2::/122") for a in v6)
    assert raw(etcd_client, keys.handle_key("dual"))["block"] == {"198.19.0.0/26": 1, "2001:2::/122": 2}
    assert raw(etcd_client, "/calico/ipam/v2/host/node-a/ipv6/block/2001:2::-122")["state"] == "confirmed"
    assert sorted(map(str, ipam.release_by_handle("dual"))) == sorted(map(str, v4 + v6))


def test_all_or_nothing_when_v6_has_no_pool(ipam, datastore):
    datastore.create(pool("p4", "198.19.0.0/24"))
    with pytest.raises(NoPoolsError, match="no IPv6 IPPool"):
        ipam.auto_assign("h", "node-a", num_v4=1, num_v6=1)
    assert sum(b.in_use for b in ipam.blocks()) == 0
    assert ipam.handles() == {}


def test_no_pool_at_all(ipam):
    with pytest.raises(NoPoolsError, match="no IPv4 IPPool is configured"):
        ipam.auto_assign("h", "node-a")


def test_exhausted_pool_leaks_nothing(ipam, datastore):
    datastore.create(pool("tiny", "198.19.9.0/30", blockSize=30))
    got = [ipam.auto_assign(f"h{i}", "node-a")[0][0] for i in range(3)]
    with pytest.raises(PoolExhaustedError, match="wanted 2, found 1"):
        ipam.auto_assign("greedy", "node-a", num_v4=2)
    assert sum(b.in_use for b in ipam.blocks()) == 3
    assert "greedy" not in ipam.handles()
    last, _ = ipam.auto_assign("last", "node-a")
    assert last[0] not in got
    with pytest.raises(PoolExhaustedError, match="no free IPv4 address"):
        ipam.auto_assign("one-too-many", "node-a")


def test_borrowing_only_when_no_free_block(ipam, datastore):
    datastore.create(pool("p", "198.19.0.0/25", blockSize=26))  # two blocks
    a, _ = ipam.auto_assign("a", "node-a")
    b, _ = ipam.auto_assign("b", "node-b")
    assert {x.host for x in ipam.blocks()} == {"node-a", "node-b"}
    c, _ = ipam.auto_assign("c", "node-c")  # no free block left: borrow
    got = ipam.get_assignment(c[0])
    assert got.block_affinity in ("node-a", "node-b")
    assert got.attributes["node"] == "node-c"
    assert ipam.affinities("node-c") == []
    usage = ipam.usage()[0]
    assert usage["in_use"] == 3 and usage["blocks_claimed"] == 2


def test_strict_affinity_never_borrows(ipam, datastore):
    datastore.create(pool("p", "198.19.0.0/25", blockSize=26))
    ipam.set_config(strict_affinity=True)
    assert ipam.get_config().strict_affinity
    ipam.auto_assign("a", "node-a")
    ipam.auto_assign("b", "node-b")
    assert all(b.strict_affinity for b in ipam.blocks())
    with pytest.raises(PoolExhaustedError, match="strict affinity"):
        ipam.auto_assign("c", "node-c")
    ipam.set_config(strict_affinity=False)
    # the blocks themselves were made strict: still no borrowing from them
    with pytest.raises(PoolExhaustedError):
        ipam.auto_assign("c", "node-c")


def test_disabled_pool_is_ignored_even_by_a_cached_client(ipam, datastore, etcd_client):
    datastore.create(pool("first", "198.19.0.0/24"))
    datastore.create(pool("second", "198.19.1.0/24"))
    v4, _ = ipam.auto_assign("h1", "node-a", pools_v4=["first"])
    assert v4[0] in net("198.19.0.0/24")
    doc = datastore.get("IPPool", "first")
    doc["spec"]["disabled"] = True
    datastore.apply(doc)
    # the same client still has "first" enabled in its cached view: the revision guard
    # makes the write fail, the view is re-read, and the address comes from "second"
    v4, _ = ipam.auto_assign("h2", "node-a")
    assert v4[0] in net("198.19.1.0/24")
    with pytest.raises(NoPoolsError, match="is disabled"):
        ipam.auto_assign("h3", "node-a", pools_v4=["first"])
    doc = datastore.get("IPPool", "second")
    doc["spec"]["disabled"] = True
    datastore.apply(doc)
    with pytest.raises(NoPoolsError, match="every IPv4 IPPool is disabled"):
        IPAM(etcd_client, datastore).auto_assign("h4", "node-a")


def test_deleted_pool_is_not_used_by_a_cached_client(ipam, datastore):
    datastore.create(pool("first", "198.19.0.0/24"))
    ipam.auto_assign("h1", "node-a")
    datastore.delete("IPPool", "first")
    datastore.create(pool("second", "198.19.1.0/24"))
    v4, _ = ipam.auto_assign("h2", "node-a")
    assert v4[0] in net("198.19.1.0/24")


def test_node_selector(ipam, datastore):
    datastore.create(pool("rack1", "198.19.1.0/24", nodeSelector="rack == 'r1'"))
    datastore.create(node("node-r1", rack="r1"))
    v4, _ = ipam.auto_assign("h1", "node-r1")
    assert v4[0] in net("198.19.1.0/24")
    # a node without a Node resource has no labels
    with pytest.raises(NoPoolsError, match='selects node "ghost"'):
        ipam.auto_assign("h2", "ghost")
    with pytest.raises(NoPoolsError, match="does not select node"):
        ipam.auto_assign("h2", "ghost", pools_v4=["rack1"])
    datastore.create(pool("everyone", "198.19.2.0/24"))
    v4, _ = ipam.auto_assign("h3", "ghost")
    assert v4[0] in net("198.19.2.0/24")
    # relabel the node: the cached view is guarded by the Node's revision
    n = datastore.get("Node", "node-r1")
    n["metadata"]["labels"] = {"rack": "r2"}
    datastore.apply(n)
    v4, _ = ipam.auto_assign("h4", "node-r1")
    assert v4[0] in net("198.19.2.0/24")


def test_assign_ip(ipam, datastore):
    datastore.create(pool("p", "198.19.0.0/24"))
    assert ipam.assign_ip("198.19.0.77", "fixed", "node-a") == ip("198.19.0.77")
    a = ipam.get_assignment("198.19.0.77")
    assert a.handle_id == "fixed" and a.block_affinity == "node-a"  # the block was claimed
    with pytest.raises(AddressInUseError, match="already assigned"):
        ipam.assign_ip("198.19.0.77", "other", "node-b")
    with pytest.raises(NotInPoolError):
        ipam.assign_ip("198.18.5.5", "x", "node-a")
    # auto-assignment on node-a now uses the claimed block, skipping .77
    v4, _ = ipam.auto_assign("auto", "node-a", num_v4=64 - 1)
    assert ip("198.19.0.77") not in v4 and len(set(v4)) == 63
    assert ipam.release_by_handle("fixed") == [ip("198.19.0.77")]


def test_affinity_claim_release_and_node_removal(ipam, datastore, etcd_client):
    datastore.create(pool("p", "198.19.0.0/24"))
    claimed, failed = ipam.claim_affinity("node-a", "198.19.0.0/25")
    assert claimed == [net("198.19.0.0/26"), net("198.19.0.64/26")] and failed == []
    claimed, failed = ipam.claim_affinity("node-b", "198.19.0.64/26")
    assert claimed == [] and failed == [net("198.19.0.64/26")]
    v4, _ = ipam.auto_assign("h", "node-a")
    holder = ipam.get_assignment(v4[0]).block
    with pytest.raises(BlockNotEmptyError):
        ipam.release_affinity("node-a", holder, must_be_empty=True)
    released = ipam.release_host_affinities("node-a")
    assert sorted(released) == [net("198.19.0.0/26"), net("198.19.0.64/26")]
    assert ipam.affinities("node-a") == []
    # the empty block is gone, the one in use stays without affinity
    blocks = {b.cidr: b for b in ipam.blocks()}
    assert list(blocks) == [holder] and blocks[holder].host is None
    assert ipam.get_assignment(v4[0]).handle_id == "h"
    # another node may adopt the unaffine block
    claimed, _ = ipam.claim_affinity("node-b", holder)
    assert claimed == [holder] and ipam.blocks()[0].host == "node-b"
    assert etcd_client.get(keys.affinity_key("node-b", holder)) is not None


def test_stale_cached_block_is_retried_not_overwritten(datastore, etcd_client, etcd):
    datastore.create(pool("p", "198.19.0.0/24"))
    one = IPAM(etcd_client, datastore)
    other_client = etcd.client()
    try:
        two = IPAM(other_client, datastore)
        seen = set()
        for i in range(10):  # both clients cache the same block and take turns
            seen.add(one.auto_assign(f"one{i}", "node-a")[0][0])
            seen.add(two.auto_assign(f"two{i}", "node-a")[0][0])
        assert len(seen) == 20
        [blk] = one.blocks()
        assert blk.in_use == 20
        handles = one.handles()
        assert len(handles) == 20 and all(h == {"198.19.0.0/26": 1} for h in handles.values())
    finally:
        other_client.close()
