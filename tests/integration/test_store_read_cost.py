"""What a write reads: `Datastore.apply_all` / `create_all` of N documents makes
etcd return those N keys and no others, however many unrelated keys share their
namespace directories (a real etcd; not timed: the keys in etcd's replies are
counted).

The counter is a subclass of the real client that looks at every reply etcd sends
(`_post` carries every unary call: ranges, paged ranges and transactions), so a
read that takes a whole directory, however it is issued, shows up in the count.

Addresses: 198.19.48.0/20.
"""
from __future__ import annotations

import ipaddress
from typing import Any

import orjson
import pytest

from calico_net.datastore import Datastore
from calico_net.datastore.errors import ResourceAlreadyExists, ResourceConflict, ResourceNotFound
from calico_net.datastore.etcd import EtcdClient, op_put
from calico_net.datastore.etcdpb import rpc_pb2 as pb
from calico_net.datastore.store import READ_BATCH, resource_key

NAMESPACES = [f"ns{i}" for i in range(4)]
UNRELATED_PER_NS = 500          # 2,000 endpoints nobody writes
NET = ipaddress.ip_network("198.19.48.0/20")


class KeyCountingClient(EtcdClient):
    """The real etcd client, recording the key of every KV etcd returns in a reply
    (plain ranges, and the ranges inside transactions) and the size of each read
    transaction."""

    def __init__(self, config) -> None:
        super().__init__(config)
        self.returned: list[str] = []
        self.read_txn_sizes: list[int] = []

    def _post(self, call: str, request: Any) -> Any:
        reply = super()._post(call, request)
        if isinstance(reply, pb.RangeResponse):
            self.returned += [kv.key.decode() for kv in reply.kvs]
        elif isinstance(reply, pb.TxnResponse):
            ranges = [r.response_range for r in reply.responses if r.WhichOneof("response") == "response_range"]
            if ranges:
                self.read_txn_sizes.append(len(ranges))
            for r in ranges:
                self.returned += [kv.key.decode() for kv in r.kvs]
        return reply

    def reset(self) -> None:
        self.returned.clear()
        self.read_txn_sizes.clear()


def wep(ns: str, name: str, index: int, labels: dict[str, str] | None = None) -> dict[str, Any]:
    ip = NET.network_address + index
    return {
        "apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
        "spec": {"node": "node-a", "orchestrator": "k8s", "pod": name, "endpoint": "eth0",
                 "interfaceName": f"cali{index:011d}", "ipNetworks": [f"{ip}/32"]},
    }


def wep_key(ns: str, name: str) -> str:
    return resource_key("WorkloadEndpoint", name, ns)


@pytest.fixture
def counting(etcd, etcd_client):
    """A Datastore over the counting client, with 2,000 unrelated endpoints put raw
    (in a few big transactions) into the namespaces the tests write to."""
    ops = []
    for n, ns in enumerate(NAMESPACES):
        for i in range(UNRELATED_PER_NS):
            name = f"node--a-k8s-other{i:04d}-eth0"
            ops.append(op_put(wep_key(ns, name), orjson.dumps(wep(ns, name, n * UNRELATED_PER_NS + i))))
    for start in range(0, len(ops), 1000):
        etcd_client.txn([], ops[start:start + 1000])
    client = KeyCountingClient(etcd_client.config)
    try:
        yield Datastore(client), client
    finally:
        client.close()


def test_apply_all_reads_only_the_keys_it_writes(counting):
    ds, client = counting
    # 40 documents, 10 per namespace: more than the old "few keys" cut-off of 8,
    # each namespace directory holding 500 other endpoints
    docs = [wep(ns, f"mine{i:02d}", 2000 + n * 10 + i) for n, ns in enumerate(NAMESPACES) for i in range(10)]
    wanted = sorted(wep_key(d["metadata"]["namespace"], d["metadata"]["name"]) for d in docs)

    client.reset()
    ds.apply_all(docs)
    assert client.returned == [], "nothing of these exists yet: etcd must return no key"

    # the update path: every key exists now and each one is returned once, no other
    client.reset()
    for d in docs:
        d["metadata"]["labels"] = {"round": "2"}
    out = ds.apply_all(docs)
    assert sorted(client.returned) == wanted
    assert client.read_txn_sizes == [len(docs)], "one read transaction of single-key ranges"
    assert all(o["metadata"]["labels"] == {"round": "2"} for o in out)
    # the update kept what the server keeps (uid) and took the new labels
    stored = ds.get("WorkloadEndpoint", "mine00", "ns0")
    assert stored["metadata"]["labels"] == {"round": "2"} and stored["metadata"]["uid"]

    # a mix of new and existing documents: only the existing keys come back
    client.reset()
    mixed = docs[:20] + [wep("ns3", f"new{i:02d}", 2100 + i) for i in range(20)]
    ds.apply_all(mixed)
    assert sorted(client.returned) == sorted(
        wep_key(d["metadata"]["namespace"], d["metadata"]["name"]) for d in docs[:20])


def test_large_writes_read_in_batches_etcd_accepts(counting):
    """300 documents: the reads go in transactions of at most READ_BATCH ranges (etcd's
    default --max-txn-ops is 128), every key once."""
    ds, client = counting
    docs = [wep(NAMESPACES[i % 4], f"big{i:03d}", 2200 + i) for i in range(300)]
    ds.apply_all(docs)
    client.reset()
    ds.apply_all(docs)
    assert len(client.returned) == 300 and len(set(client.returned)) == 300
    assert client.read_txn_sizes == [READ_BATCH, READ_BATCH, 300 - 2 * READ_BATCH]


def test_create_all_reads_only_its_keys_and_keeps_its_semantics(counting):
    ds, client = counting
    docs = [wep(ns, f"c{i:02d}", 2600 + n * 12 + i) for n, ns in enumerate(NAMESPACES) for i in range(12)]
    client.reset()
    created = ds.create_all(docs)
    assert len(created) == len(docs) and client.returned == []

    # creating them again: refused, nothing written, and the read returned just them
    client.reset()
    with pytest.raises(ResourceAlreadyExists, match="and 47 more"):
        ds.create_all(docs + [wep("ns0", "c-extra", 2700)])
    assert set(client.returned) == {wep_key(d["metadata"]["namespace"], d["metadata"]["name"]) for d in docs}
    with pytest.raises(ResourceNotFound):
        ds.get("WorkloadEndpoint", "c-extra", "ns0")

    # skip_exists: the existing ones are left alone, the new one is created
    client.reset()
    made = ds.create_all(docs + [wep("ns0", "c-extra", 2700)], skip_exists=True)
    assert [d["metadata"]["name"] for d in made] == ["c-extra"]
    assert len(client.returned) == len(docs)


def test_cas_revisions_from_the_batched_read_still_guard_the_write(counting, etcd_client):
    """The revisions read for the write are the ones compared: a stale resourceVersion
    fails the whole manifest, and a current one lands."""
    ds, client = counting
    docs = [wep("ns1", f"v{i:02d}", 2800 + i) for i in range(12)]
    first = ds.apply_all(docs)
    stale = [dict(d, metadata={**d["metadata"], "resourceVersion": f["metadata"]["resourceVersion"]})
             for d, f in zip(docs, first)]
    # someone else changes one of them
    other = wep("ns1", "v05", 2805, {"changed": "elsewhere"})
    etcd_client.put(wep_key("ns1", "v05"), orjson.dumps(other))
    with pytest.raises(ResourceConflict, match="v05"):
        ds.apply_all(stale)
    assert ds.get("WorkloadEndpoint", "v05", "ns1")["metadata"]["labels"] == {"changed": "elsewhere"}
    # the same manifest without the stale version lands, over the other writer's value
    fresh = [dict(d, metadata={k: v for k, v in d["metadata"].items() if k != "resourceVersion"}) for d in stale]
    ds.apply_all(fresh)
    assert ds.get("WorkloadEndpoint", "v05", "ns1")["metadata"]["labels"] == {}


# --- IPAM: finding the block that holds an address -------------------------------------

def test_finding_an_addresses_block_reads_no_other_block(etcd_client):
    """`assign_ip` of a given address, `get_assignment` and `release_ips` find its block by counting
    the few keys it can have (one per block size), not by listing every block key:
    512 unrelated block keys are never returned."""
    from calico_net.ipam.client import IPAM
    from calico_net.ipam.reads import BLOCK_PREFIXES

    from calico_net.model.resources.pools import BLOCK_SIZE_RANGE

    # the IPAM side keeps its own copy of the pool block sizes: they must agree
    assert {v: (r.start, r.stop - 1) for v, r in BLOCK_PREFIXES.items()} == BLOCK_SIZE_RANGE

    Datastore(etcd_client).create({"apiVersion": "projectcalico.org/v3", "kind": "IPPool",
                                   "metadata": {"name": "p"}, "spec": {"cidr": "198.19.48.0/21"}})
    others = [f"/calico/ipam/v2/assignment/ipv4/block/{net.network_address}-30"
              for net in ipaddress.ip_network("198.19.56.0/21").subnets(new_prefix=30)]
    etcd_client.txn([], [op_put(k, b"{}") for k in others])
    client = KeyCountingClient(etcd_client.config)
    try:
        ipam = IPAM(client, Datastore(client))
        got = ipam.assign_ip("198.19.48.5", "h.one", "node-a")
        assert str(got) == "198.19.48.5"
        assert not set(client.returned) & set(others)
        client.reset()
        found = ipam.get_assignment("198.19.48.5")
        assert found is not None and str(found.block) == "198.19.48.0/26" and found.handle_id == "h.one"
        assert client.returned == ["/calico/ipam/v2/assignment/ipv4/block/198.19.48.0-26"]
        client.reset()
        assert ipam.get_assignment("198.19.49.5") is None     # no block there yet
        assert client.returned == []
        # releasing reads the address's own block only (not the block list)
        client.reset()
        assert ipam.release_ips(["198.19.48.5", "198.19.49.5"]) == [ipaddress.ip_address("198.19.49.5")]
        assert not set(client.returned) & set(others)
        assert ipam.get_assignment("198.19.48.5") is None
        # an address inside one of the unrelated blocks: that block is found, nothing else read
        assert ipam._find_block_cidrs([ipaddress.ip_address("198.19.56.6")]) == {
            ipaddress.ip_address("198.19.56.6"): ipaddress.ip_network("198.19.56.4/30")}
    finally:
        client.close()
