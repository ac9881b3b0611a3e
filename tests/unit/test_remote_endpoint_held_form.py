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
    assert m.values() == (("198.19.77.3",), (), (), (), ())


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


# --- the record made as the endpoint is read ---------------------------------------

def test_a_common_endpoint_comes_with_the_record_the_general_path_builds():
    variants = [
        wep(5),
        wep(6, ipNetworks=["198.19.77.6/32", "198.19.77.106/32"]),
        wep(7, ipNetworks=["2001:db8:19::7/128"]),
        wep(8, ipNetworks=["198.19.77.8/32", "2001:db8:19::8/128"],
            ports=[{"name": "http", "protocol": "TCP", "port": 80}], serviceAccountName="sa1"),
    ]
    for d in variants:
        r = parse_kv(kv(d, 3))
        key = ("WorkloadEndpoint", "ns1", d["metadata"]["name"])
        assert r.member is not None and r.member == records.member_for(key, r.doc), d
        assert r.member.key == key and r.member.node == "node-b"
    # the node's name is one string for all the endpoints of the node
    assert parse_kv(kv(wep(9), 3)).member.node is parse_kv(kv(wep(10), 3)).member.node


def test_other_address_forms_take_the_general_path():
    # a bare address, a network wider than a host, an IPv6 address not in canonical
    # text: no record is made as it is read; the daemon decodes and decides
    for nets in (["198.19.77.11"], ["2001:db8:19:0::11/128"], []):
        r = parse_kv(kv(wep(11, ipNetworks=nets), 3))
        assert r.member is None, nets


def _daemon(tmp_path):
    from calico_net.agent.config import Config
    from calico_net.agent.daemon import Daemon
    from calico_net.agent.felix.policy import PolicyDataplane
    from fakes import FakeKernel, FakeNftRunner, FakeSysctls
    from test_agent_daemon import NullSyncer

    policy = PolicyDataplane("node-a", nft=FakeNftRunner())
    cfg = Config("node-a", env={}, config_file=str(tmp_path / "none"))
    d = Daemon("node-a", cfg, None, policy=policy, route_backend=FakeKernel([]), sysctls=FakeSysctls(),
               watch_links=False, watch_tamper=False, syncer_factory=NullSyncer, coalesce=0.001)
    return d, policy


def test_the_daemon_dispatches_a_remote_endpoint_from_its_record_as_from_its_document(tmp_path):
    from calico_net.agent.encap.controller import EncapController

    docs = [wep(20), wep(21, ipNetworks=["2001:db8:19::21/128"]), wep(22, node="node-a"),
            wep(23, ipNetworks=["198.19.77.23"])]
    fast = {r_key: r for r_key, r in ((resource_key("WorkloadEndpoint", d["metadata"]["name"], "ns1"),
                                       parse_kv(kv(d, 5))) for d in docs)}
    assert [r.member is not None for r in fast.values()] == [True, True, True, False]
    # one the model would refuse, held as a document (the daemon refuses it too)
    wide = wep(24, ipNetworks=["198.19.77.0/24"])
    fast[resource_key("WorkloadEndpoint", wide["metadata"]["name"], "ns1")] = Resource(
        "WorkloadEndpoint", wide["metadata"]["name"], "ns1", wide, 5)
    slow = {k: r._replace(member=None) for k, r in fast.items()}
    got = []
    for resources in (fast, slow):
        d, policy = _daemon(tmp_path)
        for key, res in resources.items():
            d._dispatch(key, res)
        policy.index.recompute()
        got.append((dict(policy.index.members), dict(d.refused), set(d.cache)))
    assert got[0] == got[1]
    members, refused, _ = got[0]
    assert len(members) == 4 and list(refused) == [resource_key("WorkloadEndpoint", wide["metadata"]["name"], "ns1")]
    # the overlay keeps the same (node, addresses) either way
    from calico_net.agent.config import Config

    enc = EncapController("node-a", Config("node-a", env={"FELIX_MTUFILEPATH": str(tmp_path / "mtu")},
                                           config_file=str(tmp_path / "none")))
    key, res = next(iter(fast.items()))
    enc.remote_endpoint(key, res.member.node, res.member.addrs4, res.member.addrs6)
    by_record = dict(enc.endpoints)
    enc.resource("WorkloadEndpoint", key, res.doc["spec"])
    assert enc.endpoints == by_record == {key: ("node-b", ("198.19.77.20",))}
    assert by_record[key][1] is res.member.addrs4      # the record's own tuple, no copy


def test_another_nodes_endpoint_is_held_as_its_record_alone(tmp_path):
    remote, local = parse_kv(kv(wep(30), 4), local_node="node-a"), parse_kv(kv(wep(31, node="node-a"), 4),
                                                                           local_node="node-a")
    assert remote.member is not None and remote.doc is None and remote.raw is None
    assert local.member is not None and local.raw is not None and local.doc["spec"]["node"] == "node-a"
    # a bare address: no record, so the document is held whatever the node
    general = parse_kv(kv(wep(32, ipNetworks=["198.19.77.32"]), 4), local_node="node-a")
    assert general.member is None and general.raw is not None
    # the cold start's interface scan skips it without a document
    assert local_interfaces({"r": remote, "l": local}, "node-a") == [("cali00000000031", False)]
    # a resync at another revision: the same record is no change, another one is
    d, policy = _daemon(tmp_path)
    key = resource_key("WorkloadEndpoint", wep(30)["metadata"]["name"], "ns1")
    d._dispatch(key, remote)
    dispatched = []
    d._dispatch = lambda k, r: dispatched.append(k)
    d._resync({key: parse_kv(kv(wep(30), 9), local_node="node-a")}, 9)
    assert dispatched == []
    d._resync({key: parse_kv(kv(wep(30, ipNetworks=["198.19.77.130/32"]), 10), local_node="node-a")}, 10)
    assert dispatched == [key]
