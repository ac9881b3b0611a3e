"""calico_net.ipam against the session's real etcd: affinity, claiming, borrowing,
strict affinity, disabled pools, nodeSelector, IPv6, exact release by handle, the
revision guards that keep a cached pool view honest, IPReservations and the
IPAMConfiguration resource (strictAffinity, maxBlocksPerHost)."""
from __future__ import annotations

import ipaddress
import json

import pytest

from calico_net.ipam import (
    IPAM,
    AddressInUseError,
    AffinityMismatchError,
    BlockLimitError,
    BlockNotEmptyError,
    IPAMError,
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


def test_one_call_claims_several_blocks(ipam, datastore):
    datastore.create(pool("p", "198.19.0.0/24", blockSize=28))
    v4, _ = ipam.auto_assign("big", "node-a", num_v4=40)
    assert len(set(v4)) == 40
    blocks = ipam.blocks()
    assert len(blocks) == 3 and all(b.host == "node-a" for b in blocks)
    assert sum(ipam.get_handle("big").values()) == 40


def test_no_second_claim_when_the_node_just_got_a_block(datastore, etcd_client, etcd):
    # Two clients of one node both find its blocks full; the one that claims second
    # must use the block the first just claimed instead of claiming another.
    from calico_net.ipam.records import StaleView

    datastore.create(pool("p", "198.19.0.0/24", blockSize=28))
    one = IPAM(etcd_client, datastore)
    other_client = etcd.client()
    try:
        two = IPAM(other_client, datastore)
        for i in range(16):
            one.auto_assign(f"one{i}", "node-a")
        view = two._view("node-a", True, (4,), for_claim=True)  # sees one full block
        one.auto_assign("one16", "node-a")  # claims the second block
        pools = two._eligible_pools(view, 4, None)
        with pytest.raises(StaleView):
            two._claim_free_block(view, pools, view.config)
        # through the public call: the block `one` claimed is used, nothing new claimed
        assert two.auto_assign("two0", "node-a")[0][0] in net("198.19.0.16/28")
        assert len(two.blocks()) == 2
    finally:
        other_client.close()


def test_failed_write_leaves_no_phantom_allocation_in_the_cache(ipam, datastore, etcd_client):
    from calico_net.datastore.errors import DatastoreUnavailable

    datastore.create(pool("p", "198.19.0.0/24"))
    first = ipam.auto_assign("h1", "node-a")[0][0]
    real_txn = etcd_client.txn

    def broken(*a, **kw):
        raise DatastoreUnavailable("cannot reach etcd: simulated")

    etcd_client.txn = broken
    try:
        with pytest.raises(DatastoreUnavailable):
            ipam.auto_assign("h2", "node-a")
    finally:
        etcd_client.txn = real_txn
    third = ipam.auto_assign("h3", "node-a")[0][0]
    [blk] = ipam.blocks()
    assert blk.in_use == 2
    assert {a["handle_id"] for _, a in blk.allocated()} == {"h1", "h3"}
    assert set(ipam.handles()) == {"h1", "h3"}
    assert third != first


def test_new_client_reads_a_nodes_full_blocks_in_one_request(datastore, etcd_client):
    datastore.create(pool("p", "198.19.0.0/24", blockSize=28))
    warm = IPAM(etcd_client, datastore)
    for i in range(16 * 5):  # five full blocks
        warm.auto_assign(f"w{i}", "node-a")
    cold = IPAM(etcd_client, datastore)
    calls = []
    real_post = etcd_client._post

    def counting(path, body):
        calls.append(path)
        return real_post(path, body)

    etcd_client._post = counting
    try:
        got = cold.auto_assign("c0", "node-a")[0][0]
    finally:
        etcd_client._post = real_post
    assert got in net("198.19.0.80/28")  # a sixth block
    # fresh view; the five blocks in one read; fresh view for the claim; claim; assign
    assert len(calls) <= 5, calls


def test_steady_state_is_one_transaction_per_assignment(ipam, datastore, etcd_client):
    datastore.create(pool("p", "198.19.0.0/24"))
    ipam.auto_assign("s0", "node-a")
    calls = []
    real_post = etcd_client._post

    def counting(path, body):
        calls.append(path)
        return real_post(path, body)

    etcd_client._post = counting
    try:
        for i in range(1, 20):
            ipam.auto_assign(f"s{i}", "node-a")
    finally:
        etcd_client._post = real_post
    assert calls == ["kv/txn"] * 19


def _counting(client):
    stats = {"requests": 0, "lost": 0}
    real_post, real_txn = client._post, client.txn

    def post(path, body):
        stats["requests"] += 1
        return real_post(path, body)

    def txn(*a, **kw):
        r = real_txn(*a, **kw)
        stats["lost"] += 0 if r.succeeded else 1
        return r

    client._post, client.txn = post, txn
    return stats


def test_host_lock_hands_the_block_on_so_turns_do_not_conflict(datastore, etcd_client, etcd, tmp_path):
    datastore.create(pool("p", "198.19.0.0/24", blockSize=28))
    other_client = etcd.client()
    try:
        one = IPAM(etcd_client, datastore, host_lock_dir=str(tmp_path))
        two = IPAM(other_client, datastore, host_lock_dir=str(tmp_path))
        one.auto_assign("one-first", "node-a")
        two.auto_assign("two-first", "node-a")
        s1, s2 = _counting(etcd_client), _counting(other_client)
        seen = set()
        for i in range(20):  # take turns; 42 addresses fill two /28s and start a third
            seen.add(one.auto_assign(f"one{i}", "node-a")[0][0])
            seen.add(two.auto_assign(f"two{i}", "node-a")[0][0])
        assert len(seen) == 40
        assert s1["lost"] + s2["lost"] == 0  # each started from the block the other wrote
        # one transaction per assignment, plus a fresh view and the claim for each of
        # the two new blocks; the other client learns a new block from the hint
        assert s1["requests"] + s2["requests"] == 40 + 2 * 2
        assert len(one.blocks()) == 3
        assert sorted(h for h in one.handles()) == sorted(
            [f"one{i}" for i in range(20)] + [f"two{i}" for i in range(20)] + ["one-first", "two-first"])
        one.close()
        two.close()
    finally:
        other_client.close()


def test_without_host_lock_turns_conflict_but_stay_correct(datastore, etcd_client, etcd):
    datastore.create(pool("p", "198.19.0.0/24"))
    other_client = etcd.client()
    try:
        one, two = IPAM(etcd_client, datastore), IPAM(other_client, datastore)
        one.auto_assign("one-first", "node-a")
        two.auto_assign("two-first", "node-a")
        s1, s2 = _counting(etcd_client), _counting(other_client)
        for i in range(5):
            one.auto_assign(f"one{i}", "node-a")
            two.auto_assign(f"two{i}", "node-a")
        assert s1["lost"] + s2["lost"] == 10  # every turn starts from a stale copy, retried once
        [blk] = one.blocks()
        assert blk.in_use == 12
    finally:
        other_client.close()


def test_damaged_host_lock_hint_costs_nothing_but_a_retry(datastore, etcd_client, tmp_path):
    datastore.create(pool("p", "198.19.0.0/24"))
    one = IPAM(etcd_client, datastore, host_lock_dir=str(tmp_path))
    first = one.auto_assign("h1", "node-a")[0][0]
    lock_file = tmp_path / "ipam-node-a.lock"
    header, _, body = lock_file.read_bytes().partition(b"\n")
    cidr, rev = header.decode().split()
    # a hint claiming a newer revision with made-up content: the CAS refuses it
    forged = json.loads(body)
    forged["allocations"] = [None] * 64
    forged["unallocated"] = list(range(64))
    lock_file.write_bytes(f"{cidr} {int(rev) + 1000}\n".encode() + json.dumps(forged).encode())
    second = one.auto_assign("h2", "node-a")[0][0]
    assert second != first
    [blk] = one.blocks()
    assert blk.in_use == 2 and set(one.handles()) == {"h1", "h2"}
    one.close()


def test_hint_from_another_etcd_history_at_the_same_revision_is_refused(datastore, etcd_client, tmp_path):
    """The lock file outlives etcd's history (a restore from a snapshot goes on from
    the snapshot's revision): a hint naming the block's current revision with other
    contents must not be written back. It costs one failed compare."""
    datastore.create(pool("p", "198.19.0.0/24", blockSize=28))
    one = IPAM(etcd_client, datastore, host_lock_dir=str(tmp_path))
    first = one.auto_assign("h1", "node-a")[0][0]
    one.close()
    lock_file = tmp_path / "ipam-node-a.lock"
    header, _, body = lock_file.read_bytes().partition(b"\n")
    cidr, rev = header.decode().split()
    assert int(rev) == etcd_client.get(keys.block_key(ipaddress.ip_network(cidr))).mod_revision
    other = json.loads(body)  # what the same revision held in the other history
    other["attributes"].append({"handle_id": "ghost", "secondary": {"node": "node-a"}})
    ghost = len(other["attributes"]) - 1
    for ordinal in (5, 6, 7):
        other["allocations"][ordinal] = ghost
    other["unallocated"] = [o for o in other["unallocated"] if o not in (5, 6, 7)]
    lock_file.write_bytes(header + b"\n" + json.dumps(other).encode())
    two = IPAM(etcd_client, datastore, host_lock_dir=str(tmp_path))
    stats = _counting(etcd_client)
    second = two.auto_assign("h2", "node-a")[0][0]
    assert stats["lost"] == 1
    [blk] = two.blocks()
    assert sorted(str(ip) for ip, _ in blk.allocated()) == sorted(str(ip) for ip in (first, second))
    assert all(a.get("handle_id") != "ghost" for _, a in blk.allocated())
    two.close()


# --- IPReservation -------------------------------------------------------------------------

def reservation(name, *cidrs):
    return {"apiVersion": "projectcalico.org/v3", "kind": "IPReservation", "metadata": {"name": name},
            "spec": {"reservedCIDRs": list(cidrs)}}


def ipam_config(**spec):
    return {"apiVersion": "projectcalico.org/v3", "kind": "IPAMConfiguration",
            "metadata": {"name": "default"}, "spec": spec}


class CountingClient:
    """The etcd client, counting the requests made through it."""

    def __init__(self, client):
        self._client = client
        self.calls = 0

    def __getattr__(self, name):
        attr = getattr(self._client, name)
        if name in ("get", "get_prefix", "txn", "put", "delete", "delete_prefix"):
            def counted(*a, **kw):
                self.calls += 1
                return attr(*a, **kw)
            return counted
        return attr


def test_reserved_addresses_are_never_auto_assigned(ipam, datastore, etcd_client):
    datastore.create(pool("p", "198.19.0.0/26"))
    datastore.create(reservation("r", "198.19.0.0/30", "198.19.0.6", "198.19.0.9/32"))
    got = [ipam.auto_assign(f"h{i}", "node-a")[0][0] for i in range(10)]
    reserved = {ip("198.19.0.0"), ip("198.19.0.1"), ip("198.19.0.2"), ip("198.19.0.3"),
                ip("198.19.0.6"), ip("198.19.0.9")}
    assert not reserved & set(got)
    assert got[:3] == [ip("198.19.0.4"), ip("198.19.0.5"), ip("198.19.0.7")]
    # reserved addresses stay free, in their place: a reservation only blocks new allocations
    block = raw(etcd_client, "/calico/ipam/v2/assignment/ipv4/block/198.19.0.0-26")
    assert block["unallocated"][:5] == [0, 1, 2, 3, 6]
    assert all(block["allocations"][o] is None for o in (0, 1, 2, 3, 6, 9))


def test_a_block_reserved_whole_is_not_claimed(ipam, datastore):
    datastore.create(pool("p", "198.19.0.0/25"))
    datastore.create(reservation("r", "198.19.0.0/26"))
    v4, _ = ipam.auto_assign("h", "node-a")
    assert v4[0] in net("198.19.0.64/26")
    assert [str(b.cidr) for b in ipam.blocks()] == ["198.19.0.64/26"]
    ipam.release_by_handle("h")
    datastore.create(reservation("r2", "198.19.0.64/26"))
    with pytest.raises(PoolExhaustedError):
        ipam.auto_assign("h2", "node-b")
    assert [str(b.cidr) for b in ipam.blocks()] == ["198.19.0.64/26"]


def test_a_new_reservation_reaches_a_cached_client_with_no_extra_round_trip(datastore, etcd_client):
    counting = CountingClient(etcd_client)
    cached = IPAM(counting, datastore)
    datastore.create(pool("p", "198.19.0.0/26"))
    cached.auto_assign("h0", "node-a")
    # nothing changed: one transaction per allocation, reservations included
    for i in (1, 2):
        before = counting.calls
        v4, _ = cached.auto_assign(f"h{i}", "node-a")
        assert v4 == [ip(f"198.19.0.{i}")]
        assert counting.calls - before == 1
    # another client reserves the next addresses: the cached client's write is refused
    # and decided again on what the reservations say now
    datastore.create(reservation("r", "198.19.0.3", "198.19.0.4/31"))
    v4, _ = cached.auto_assign("h3", "node-a")
    assert v4 == [ip("198.19.0.6")]


def test_borrowing_skips_reserved_addresses(ipam, datastore):
    datastore.create(pool("p", "198.19.0.0/26"))
    ipam.auto_assign("a", "node-a")  # node-a holds the pool's only block
    datastore.create(reservation("r", "198.19.0.1/32", "198.19.0.2/31", "198.19.0.4/30"))
    v4, _ = ipam.auto_assign("b", "node-b")
    assert v4 == [ip("198.19.0.8")]
    assert ipam.get_assignment(v4[0]).block_affinity == "node-a"


def test_assign_ip_of_a_reserved_address_is_allowed_as_in_calico(ipam, datastore):
    datastore.create(pool("p", "198.19.0.0/26"))
    datastore.create(reservation("r", "198.19.0.5"))
    assert ipam.assign_ip("198.19.0.5", "h", "node-a") == ip("198.19.0.5")
    assert ipam.get_assignment("198.19.0.5").handle_id == "h"


def test_ipv6_reservations(ipam, datastore):
    datastore.create(pool("p6", "fd00:198:19::/120"))
    datastore.create(reservation("r", "fd00:198:19::/126"))
    _, v6 = ipam.auto_assign("h", "node-a", num_v4=0, num_v6=2)
    assert v6 == [ip("fd00:198:19::4"), ip("fd00:198:19::5")]


# --- IPAMConfiguration ---------------------------------------------------------------------

def test_ipam_configuration_resource_is_the_ipam_config(ipam, datastore):
    assert ipam.get_config().strict_affinity is False
    datastore.apply(ipam_config(strictAffinity=True, maxBlocksPerHost=2))
    cfg = ipam.get_config()
    assert (cfg.strict_affinity, cfg.auto_allocate_blocks, cfg.max_blocks_per_host) == (True, True, 2)
    # set_config changes the same resource, keeping its metadata
    before = datastore.get("IPAMConfiguration", "default")
    ipam.set_config(max_blocks_per_host=3)
    after = datastore.get("IPAMConfiguration", "default")
    assert after["spec"] == {"strictAffinity": True, "autoAllocateBlocks": True, "maxBlocksPerHost": 3}
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert ipam.get_config().max_blocks_per_host == 3


def test_set_config_refuses_what_calico_refuses(ipam, datastore):
    with pytest.raises(IPAMError, match="requires strict affinity"):
        ipam.set_config(max_blocks_per_host=2)
    with pytest.raises(IPAMError, match="cannot disable both"):
        ipam.set_config(auto_allocate_blocks=False)
    assert datastore.list("IPAMConfiguration")[0] == []


def test_strict_affinity_from_the_resource_never_borrows(ipam, datastore):
    datastore.create(pool("p", "198.19.0.0/26"))
    datastore.apply(ipam_config(strictAffinity=True))
    ipam.auto_assign("a", "node-a")
    with pytest.raises(PoolExhaustedError, match="strict affinity"):
        ipam.auto_assign("b", "node-b")


def test_assign_ip_in_another_nodes_block_under_strict_affinity(ipam, datastore):
    datastore.create(pool("p", "198.19.0.0/26"))
    ipam.auto_assign("a", "node-a")
    assert ipam.assign_ip("198.19.0.9", "b", "node-b") == ip("198.19.0.9")  # borrowing allowed
    datastore.apply(ipam_config(strictAffinity=True))
    with pytest.raises(AffinityMismatchError, match="affine to node 'node-a'"):
        ipam.assign_ip("198.19.0.10", "c", "node-b")
    assert ipam.get_assignment("198.19.0.10") is None
    assert ipam.assign_ip("198.19.0.11", "d", "node-a") == ip("198.19.0.11")


def test_max_blocks_per_host_stops_claims_and_borrowing(ipam, datastore):
    datastore.create(pool("p", "198.19.0.0/24", blockSize=28))
    datastore.apply(ipam_config(strictAffinity=False, maxBlocksPerHost=2))
    got = [ipam.auto_assign(f"a{i}", "node-a")[0][0] for i in range(32)]
    assert len(set(got)) == 32
    assert len(ipam.affinities("node-a")) == 2
    ipam.auto_assign("b", "node-b")  # other nodes' blocks have room: still not borrowed
    with pytest.raises(BlockLimitError, match='node "node-a" holds 2 IPv4 block'):
        ipam.auto_assign("a-more", "node-a")
    assert ipam.get_handle("a-more") is None
    assert len(ipam.affinities("node-a")) == 2
    ipam.release_by_handle("a0")
    assert ipam.auto_assign("a-again", "node-a")[0] == [got[0]]
    # 0: no limit
    datastore.apply(ipam_config(strictAffinity=False, maxBlocksPerHost=0))
    ipam.auto_assign("a-third", "node-a")
    assert len(ipam.affinities("node-a")) == 3


def test_max_blocks_per_host_counts_each_ip_version(ipam, datastore):
    datastore.create(pool("p", "198.19.0.0/24", blockSize=28))
    datastore.create(pool("p6", "fd00:198:19::/120", blockSize=124))
    datastore.apply(ipam_config(strictAffinity=True, maxBlocksPerHost=1))
    for i in range(16):
        ipam.auto_assign(f"h{i}", "node-a", num_v4=1, num_v6=1)
    with pytest.raises(BlockLimitError, match="IPv6"):
        ipam.auto_assign("h-more", "node-a", num_v4=0, num_v6=1)
    with pytest.raises(BlockLimitError, match="IPv4"):
        ipam.auto_assign("h-more", "node-a", num_v4=1, num_v6=0)

