"""Remote endpoints at cluster scale: shared label sets (records, syncer parse path)
and a remote endpoint's change touching only the selector sets it enters or leaves."""
from __future__ import annotations

import gc

import orjson

from calico_net.agent.felix import records
from calico_net.agent.felix.index import PolicyIndex
from calico_net.agent.felix.rules import selector_hash
from calico_net.agent.syncer import parse_kv
from calico_net.datastore.etcd import KV
from calico_net.datastore.store import resource_key
from calico_net.model.selector import parse_selector

NODE = "node1"


def wep(i: int, labels: dict[str, str], node: str = "node-b") -> dict:
    return {"apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
            "metadata": {"name": f"{node}-k8s-pod{i}-eth0", "namespace": "ns1", "labels": dict(labels)},
            "spec": {"node": node, "orchestrator": "k8s", "endpoint": "eth0", "pod": f"pod{i}",
                     "interfaceName": f"cali{i:011d}", "ipNetworks": [f"198.19.77.{i}/32"],
                     "profiles": ["kns.ns1"]}}


def kv(doc: dict, rev: int) -> KV:
    md = doc["metadata"]
    return KV(resource_key(doc["kind"], md["name"], md["namespace"]), orjson.dumps(doc), rev, rev, 1)


def test_members_with_equal_labels_share_one_label_set():
    a = records.member_from_doc("WorkloadEndpoint", "a", "ns1", wep(1, {"app": "web", "role": "fe"}))
    b = records.member_from_doc("WorkloadEndpoint", "b", "ns1", wep(2, {"app": "web", "role": "fe"}))
    c = records.member_from_doc("WorkloadEndpoint", "c", "ns1", wep(3, {"app": "db", "role": "fe"}))
    assert a.own_labels is b.own_labels
    assert a.own_labels is not c.own_labels
    assert a.own_labels == {"app": "web", "role": "fe", "projectcalico.org/namespace": "ns1",
                            "pcns.projectcalico.org/name": "ns1", "projectcalico.org/orchestrator": "k8s"}
    assert c.own_labels["app"] == "db"


def test_a_label_set_nobody_holds_leaves_the_share_table():
    m = records.member_from_doc("WorkloadEndpoint", "x", "ns1", wep(9, {"only": "once-x9"}))
    key = tuple(m.own_labels.items())
    assert key in records._SHARED
    del m
    gc.collect()
    assert key not in records._SHARED


def test_unhashable_label_values_are_not_shared_and_do_not_fail():
    got = records.shared_labels({"a": ["not", "a", "string"]})   # type: ignore[dict-item]
    assert got == {"a": ["not", "a", "string"]}


def test_parsed_endpoint_documents_share_labels_and_equal_what_was_read():
    d1, d2 = wep(1, {"app": "web"}), wep(2, {"app": "web"})
    r1, r2 = parse_kv(kv(d1, 5)), parse_kv(kv(d2, 6))
    assert r1.doc["metadata"]["labels"] is r2.doc["metadata"]["labels"]
    assert r1.doc["spec"]["node"] is r2.doc["spec"]["node"]
    # the document is what etcd held (plus resourceVersion, as before)
    d1["metadata"]["resourceVersion"] = "5"
    assert orjson.loads(orjson.dumps(r1.doc)) == d1
    assert r1.doc == d1


def test_remote_label_change_touches_only_the_sets_it_enters_or_leaves():
    idx = PolicyIndex(NODE)
    for k in range(3):
        idx.update("GlobalNetworkPolicy", f"p{k}", None, {
            "kind": "GlobalNetworkPolicy", "metadata": {"name": f"p{k}"},
            "spec": {"selector": "all()", "ingress": [{"action": "Allow", "source": {"selector": f"role == 'r{k}'"}}]}})
    local = wep(200, {"role": "r0"}, node=NODE)
    idx.update("WorkloadEndpoint", local["metadata"]["name"], "ns1", local)
    for i in range(1, 31):
        d = wep(i, {"role": f"r{i % 3}"})
        idx.update("WorkloadEndpoint", d["metadata"]["name"], "ns1", d)
    idx.recompute()
    name = {k: f"s4_{selector_hash(parse_selector(f'role == {chr(39)}r{k}{chr(39)}'))}" for k in range(3)}
    assert "198.19.77.4" in idx.set_elements(name[1])

    d = wep(4, {"role": "r2"})          # r1 -> r2
    idx.update("WorkloadEndpoint", d["metadata"]["name"], "ns1", d)
    ch = idx.recompute()
    assert ch.elements == {name[1]: {"198.19.77.4"}, name[2]: {"198.19.77.4"}}
    assert not ch.policies and not ch.profiles and not ch.endpoints and not ch.sets
    assert "198.19.77.4" not in idx.set_elements(name[1])
    assert "198.19.77.4" in idx.set_elements(name[2])
    assert "198.19.77.4" not in idx.set_elements(name[0])

    # a label no selector reads: at most the one set it stays in is looked at again
    # (its contribution is retracted and re-added), its contents unchanged
    before = {k: idx.set_elements(n) for k, n in name.items()}
    d = wep(4, {"role": "r2", "other": "x"})
    idx.update("WorkloadEndpoint", d["metadata"]["name"], "ns1", d)
    ch = idx.recompute()
    assert set(ch.elements) <= {name[2]}
    assert not ch.policies and not ch.profiles and not ch.endpoints and not ch.sets
    assert {k: idx.set_elements(n) for k, n in name.items()} == before


def test_grouped_labels_index_each_distinct_label_set_once_and_select_like_a_label_index():
    import random

    from calico_net.agent.felix.selector_matcher import GroupedLabels
    from calico_net.model.selector import LabelIndex

    rnd = random.Random(22)
    grouped, plain = GroupedLabels(), LabelIndex()
    sels = [parse_selector(t) for t in ("app == 'a1'", "has(role)", "app != 'a2'", "role in {'r0', 'r1'}",
                                        "!has(app) || role == 'r2'", "all()")]
    for step in range(3000):
        item = rnd.randrange(400)
        if rnd.random() < 0.1:
            grouped.remove(item)
            plain.remove(item)
            continue
        labels = {"app": f"a{rnd.randrange(4)}"} if rnd.random() < 0.9 else {}
        if rnd.random() < 0.7:
            labels["role"] = f"r{rnd.randrange(3)}"
        grouped.add(item, labels)
        plain.add(item, labels)
        if step % 250 == 0:
            for sel in sels:
                assert grouped.select(sel) == plain.select(sel), sel
    for sel in sels:
        assert grouped.select(sel) == plain.select(sel) == grouped.select_brute_force(sel)
    assert len(grouped) == len(plain)
    assert all(grouped.labels(i) == plain.labels(i) for i in plain)
    # at most 4 apps (or none) x 3 roles (or none): the label sets, not the 400 items
    assert len(grouped.sets) <= 20 < len(grouped)
    for i in list(plain):
        grouped.remove(i)
    assert len(grouped.sets) == 0 and not grouped.select(parse_selector("all()"))


def test_items_that_match_alike_share_one_match_set():
    idx = PolicyIndex(NODE)
    for k in range(2):
        idx.update("GlobalNetworkPolicy", f"p{k}", None, {
            "kind": "GlobalNetworkPolicy", "metadata": {"name": f"p{k}"},
            "spec": {"selector": "all()", "ingress": [{"action": "Allow", "source": {"selector": f"role == 'r{k}'"}}]}})
    docs = [wep(i, {"role": "r0"}) for i in range(1, 4)]
    for d in docs:
        idx.update("WorkloadEndpoint", d["metadata"]["name"], "ns1", d)
    idx.recompute()
    m = idx.rule_matcher
    keys = [("WorkloadEndpoint", "ns1", d["metadata"]["name"]) for d in docs]
    assert len(m.matches_of(keys[0])) == 1
    assert m.matches_of(keys[0]) is m.matches_of(keys[1]) is m.matches_of(keys[2])
    d = wep(2, {"role": "r1"})          # one moves: its own (shared) set, the others' unchanged
    idx.update("WorkloadEndpoint", d["metadata"]["name"], "ns1", d)
    idx.recompute()
    assert m.matches_of(keys[0]) is m.matches_of(keys[2])
    assert m.matches_of(keys[1]) != m.matches_of(keys[0]) and len(m.matches_of(keys[1])) == 1
