"""Remote endpoints as the agent holds them at cluster scale: the JSON read
(`Resource.raw`, decoded on use), records parsed at the index's update, the cold
start's interface scan skipping other nodes' endpoints undecoded."""
from __future__ import annotations

import orjson

from calico_net.agent.felix import records
from calico_net.agent.felix.coldstart import local_interfaces
from calico_net.agent.felix.index import PolicyIndex
from calico_net.agent.syncer import Resource, parse_kv
from calico_net.datastore.etcd import KV
from calico_net.datastore.store import resource_key


def wep(i: int, node: str = "node-b", **spec: object) -> dict:
    return {"kind": "WorkloadEndpoint",
            "metadata": {"name": f"{node}-k8s-pod{i}-eth0", "namespace": "ns1", "labels": {"app": "web"}},
            "spec": {"node": node, "orchestrator": "k8s", "endpoint": "eth0", "pod": f"pod{i}",
                     "interfaceName": f"cali{i:011d}", "ipNetworks": [f"198.19.77.{i}/32"],
                     "profiles": ["kns.ns1"], **spec}}


def kv(doc: dict, rev: int) -> KV:
    md = doc["metadata"]
    return KV(resource_key(doc["kind"], md["name"], md["namespace"]), orjson.dumps(doc), rev, rev, 1)


def test_an_endpoint_is_held_as_the_value_read_and_decodes_to_the_validated_document():
    d = wep(1)
    r = parse_kv(kv(d, 7))
    # no parsed document kept: JSON without what the key says (kind, name, namespace)
    assert r.raw is not None and len(r.raw) < len(orjson.dumps(d))
    assert b"WorkloadEndpoint" not in r.raw and d["metadata"]["name"].encode() not in r.raw
    want = dict(d, apiVersion="projectcalico.org/v3")
    want["metadata"] = dict(d["metadata"], resourceVersion="7")
    assert r.doc == want and r.doc is not r.doc   # a new dict on each use
    assert (r.kind, r.name, r.namespace, r.revision) == ("WorkloadEndpoint", d["metadata"]["name"], "ns1", 7)
    # other kinds keep their parsed document
    gnp = {"kind": "GlobalNetworkPolicy", "metadata": {"name": "p"}, "spec": {"selector": "all()"}}
    g = parse_kv(KV(resource_key("GlobalNetworkPolicy", "p", None), orjson.dumps(gnp), 3, 3, 1))
    assert g.raw is None and g.doc is g.doc and g.doc["metadata"]["resourceVersion"] == "3"
    # a Resource made with a document (tests, other callers) holds that document
    made = Resource("WorkloadEndpoint", "x", "ns1", {"spec": {}}, 1)
    assert made.raw is None and made.doc == {"spec": {}}


def test_a_host_endpoint_keeps_whatever_namespace_its_document_has():
    hep = {"kind": "HostEndpoint", "metadata": {"name": "h1", "labels": {"a": "b"}},
           "spec": {"node": "n1", "interfaceName": "eth0", "expectedIPs": ["198.19.0.1"]}}
    r = parse_kv(KV(resource_key("HostEndpoint", "h1", None), orjson.dumps(hep), 9, 9, 1))
    assert r.raw is not None and r.namespace is None
    want = dict(hep, apiVersion="projectcalico.org/v3")
    want["metadata"] = dict(hep["metadata"], resourceVersion="9")
    assert r.doc == want


def test_a_bad_endpoint_is_still_refused_when_parsed():
    import pytest

    from calico_net.agent.syncer import BadObject

    with pytest.raises(BadObject):
        parse_kv(kv(wep(2, ipNetworks="not a list"), 4))


def test_the_index_waits_with_records_not_documents_and_a_bad_one_is_absent():
    idx = PolicyIndex("node1")
    ok, bad = wep(3), wep(4, ipNetworks=["198.19.0.0/16"])    # wider than a host address
    idx.update("WorkloadEndpoint", ok["metadata"]["name"], "ns1", ok)
    idx.update("WorkloadEndpoint", bad["metadata"]["name"], "ns1", bad)
    pending = list(idx._pending_members.values())
    assert isinstance(pending[0], records.Member) and pending[1] is None
    idx.recompute()
    key = ("WorkloadEndpoint", "ns1", ok["metadata"]["name"])
    assert set(idx.members) == {key}
    m = idx.members[key]
    assert m.key is next(iter([k for k in idx.members if k == key]))   # one key tuple
    assert m.values() is m.values() and m.addrs4 == ("198.19.77.3",)


def test_members_of_a_namespace_share_their_profile_tuple():
    a = records.member_from_doc("WorkloadEndpoint", "a", "ns1", wep(5))
    b = records.member_from_doc("WorkloadEndpoint", "b", "ns1", wep(6))
    assert a.profiles == ("kns.ns1",) and a.profiles is b.profiles


def test_cold_start_interface_scan_finds_local_endpoints_among_held_ones():
    res = {}
    for i, node in ((1, "n1"), (2, "n2"), (3, "n1"), (4, "n10")):
        k = kv(wep(i, node=node), i)
        res[k.key] = parse_kv(k)
    assert local_interfaces(res, "n1") == [("cali00000000001", False), ("cali00000000003", False)]
    assert local_interfaces(res, "n3") == []
