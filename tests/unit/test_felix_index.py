"""Unit tests of the policy index (pure model) and of PolicyDataplane with a fake nft runner."""
from __future__ import annotations

import random

import pytest

from calico_net.agent.felix.index import PolicyIndex, SelectorMatcher
from fakes import FakeNftRunner
from calico_net.agent.felix.policy import FelixSettings, PolicyDataplane, policy_chain
from calico_net.agent.felix.rules import selector_hash
from calico_net.model.selector import parse_selector

NODE = "node1"


def wep(name, ns="ns1", ip="198.19.0.1", labels=None, node=NODE, iface=None, profiles=(),
        ports=()):
    return {
        "apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
        "metadata": {"name": name, "namespace": ns, "labels": dict(labels or {})},
        "spec": {"node": node, "orchestrator": "k8s", "interfaceName": iface or f"cali{abs(hash(name)) % 10**11:011d}",
                 "ipNetworks": [ip if "/" in ip else ip + "/32"], "profiles": list(profiles),
                 "ports": [{"name": n, "protocol": p, "port": port} for n, p, port in ports]},
    }


def hep(name, iface="eth0", ips=("198.18.0.1",), labels=None, node=NODE, profiles=()):
    return {"kind": "HostEndpoint", "metadata": {"name": name, "labels": dict(labels or {})},
            "spec": {"node": node, "interfaceName": iface, "expectedIPs": list(ips),
                     "profiles": list(profiles)}}


def gnp(name, selector="all()", order=None, ingress=(), egress=(), types=None, **extra):
    spec = {"selector": selector, "ingress": list(ingress), "egress": list(egress), **extra}
    if order is not None:
        spec["order"] = order
    if types is not None:
        spec["types"] = types
    return {"kind": "GlobalNetworkPolicy", "metadata": {"name": name}, "spec": spec}


def np(name, ns, selector="all()", order=None, ingress=(), egress=(), types=None):
    d = gnp(name, selector, order, ingress, egress, types)
    d["kind"] = "NetworkPolicy"
    d["metadata"]["namespace"] = ns
    return d


def profile(name, ingress=(), egress=(), labels=None):
    spec = {"ingress": list(ingress), "egress": list(egress)}
    if labels:
        spec["labelsToApply"] = labels
    return {"kind": "Profile", "metadata": {"name": name}, "spec": spec}


def gns(name, nets, labels):
    return {"kind": "GlobalNetworkSet", "metadata": {"name": name, "labels": labels},
            "spec": {"nets": nets}}


def netset(name, ns, nets, labels):
    return {"kind": "NetworkSet", "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"nets": nets}}


def allow_from(sel, **extra):
    return {"action": "Allow", "source": {"selector": sel, **extra}}


def s4(idx: PolicyIndex, sel_text: str) -> set[str]:
    return idx.set_elements(f"s4_{selector_hash(parse_selector(sel_text))}")


def put(idx, kind, name, ns, doc):
    idx.update(kind, name, ns, doc)


# ---------------------------------------------------------------- local endpoints & order


def test_local_endpoints_and_policy_order():
    idx = PolicyIndex(NODE)
    put(idx, "WorkloadEndpoint", "a", "ns1", wep("a", labels={"app": "x"}))
    put(idx, "WorkloadEndpoint", "r", "ns1", wep("r", ip="198.19.1.1", node="other"))
    put(idx, "HostEndpoint", "h", None, hep("h", labels={"app": "x"}))
    put(idx, "GlobalNetworkPolicy", "zz", None, gnp("zz", "app == 'x'", order=1))
    put(idx, "GlobalNetworkPolicy", "aa", None, gnp("aa", "app == 'x'", order=1))
    put(idx, "GlobalNetworkPolicy", "first", None, gnp("first", "all()", order=0.5))
    put(idx, "GlobalNetworkPolicy", "noorder", None, gnp("noorder", "all()"))
    put(idx, "GlobalNetworkPolicy", "eg", None, gnp("eg", "all()", order=0, egress=[{"action": "Allow"}]))
    ch = idx.recompute()
    assert sorted(idx.local_endpoints()) == [("HostEndpoint", None, "h"), ("WorkloadEndpoint", "ns1", "a")]
    assert ch.endpoints == {("HostEndpoint", None, "h"), ("WorkloadEndpoint", "ns1", "a")}
    a = ("WorkloadEndpoint", "ns1", "a")
    assert [p.key[2] for p in idx.policies_for(a, "Ingress")] == ["first", "aa", "zz", "noorder"]
    # egress-only policy defaults to types [Egress] (Calico's documented default)
    assert [p.key[2] for p in idx.policies_for(a, "Egress")] == ["eg"]
    # GNP applies to host endpoints by label too
    assert [p.key[2] for p in idx.policies_for(("HostEndpoint", None, "h"), "Ingress")] == \
        ["first", "aa", "zz", "noorder"]


def test_network_policy_applies_only_in_its_namespace():
    idx = PolicyIndex(NODE)
    put(idx, "WorkloadEndpoint", "a", "ns1", wep("a", labels={"app": "x"}))
    put(idx, "WorkloadEndpoint", "b", "ns2", wep("b", ns="ns2", ip="198.19.0.2", labels={"app": "x"}))
    put(idx, "HostEndpoint", "h", None, hep("h", labels={"app": "x"}))
    put(idx, "NetworkPolicy", "p", "ns1", np("p", "ns1", "app == 'x'"))
    idx.recompute()
    assert [p.key for p in idx.policies_for(("WorkloadEndpoint", "ns1", "a"), "Ingress")] == \
        [("NetworkPolicy", "ns1", "p")]
    assert idx.policies_for(("WorkloadEndpoint", "ns2", "b"), "Ingress") == []
    assert idx.policies_for(("HostEndpoint", None, "h"), "Ingress") == []


def test_implicit_labels():
    idx = PolicyIndex(NODE)
    put(idx, "WorkloadEndpoint", "a", "ns1", wep("a"))
    put(idx, "GlobalNetworkPolicy", "p", None,
        gnp("p", "projectcalico.org/namespace == 'ns1' && projectcalico.org/orchestrator == 'k8s'"))
    idx.recompute()
    assert len(idx.policies_for(("WorkloadEndpoint", "ns1", "a"), "Ingress")) == 1


def sa_wep(name, sa, ip, ns="ns1", node=NODE):
    """An endpoint as Calico's pod conversion writes one with a service account: its
    serviceAccountName and the ksa.<namespace>.<name> profile."""
    d = wep(name, ns=ns, ip=ip, node=node, profiles=[f"kns.{ns}"] + ([f"ksa.{ns}.{sa}"] if sa else []))
    if sa:
        d["spec"]["serviceAccountName"] = sa
    return d


def sa_profile(ns, sa, labels):
    """The profile Calico derives from a service account: its labels and its name, pcsa.-prefixed."""
    return profile(f"ksa.{ns}.{sa}", labels={**{f"pcsa.{k}": v for k, v in labels.items()},
                                             "pcsa.projectcalico.org/name": sa})


def test_service_accounts_select_endpoints():
    idx = PolicyIndex(NODE)
    put(idx, "WorkloadEndpoint", "a", "ns1", sa_wep("a", "builder", "198.19.0.1"))
    put(idx, "WorkloadEndpoint", "b", "ns1", sa_wep("b", "runner", "198.19.0.2"))
    put(idx, "WorkloadEndpoint", "c", "ns1", sa_wep("c", None, "198.19.0.3"))
    put(idx, "WorkloadEndpoint", "r", "ns2", sa_wep("r", "builder", "198.19.1.1", ns="ns2", node="n2"))
    put(idx, "Profile", "ksa.ns1.builder", None, sa_profile("ns1", "builder", {"team": "ci"}))
    put(idx, "Profile", "ksa.ns1.runner", None, sa_profile("ns1", "runner", {"team": "ops"}))
    put(idx, "Profile", "ksa.ns2.builder", None, sa_profile("ns2", "builder", {"team": "ci"}))
    put(idx, "GlobalNetworkPolicy", "by-sa", None, gnp("by-sa", serviceAccountSelector="team == 'ci'"))
    put(idx, "GlobalNetworkPolicy", "any-sa", None, gnp("any-sa", serviceAccountSelector="all()"))
    put(idx, "NetworkPolicy", "np", "ns1", np("np", "ns1", ingress=[
        {"action": "Allow", "source": {"serviceAccounts": {"names": ["builder"]}}},
        {"action": "Allow", "source": {"serviceAccounts": {"selector": "team == 'ops'"}}},
        {"action": "Allow", "source": {"serviceAccounts": {"names": ["builder"]},
                                       "namespaceSelector": "all()"}},
    ]))
    idx.recompute()

    def applied(name):
        return [p.key[2] for p in idx.policies_for(("WorkloadEndpoint", "ns1", name), "Ingress")]

    assert (applied("a"), applied("b"), applied("c")) == (["any-sa", "by-sa", "np"], ["any-sa", "np"], ["np"])
    sa = "projectcalico.org/serviceaccount"
    assert s4(idx, f"{sa} in {{'builder'}} && projectcalico.org/namespace == 'ns1'") == {"198.19.0.1"}
    assert s4(idx, "pcsa.team == 'ops' && projectcalico.org/namespace == 'ns1'") == {"198.19.0.2"}
    assert s4(idx, f"{sa} in {{'builder'}} && has(projectcalico.org/namespace)") == \
        {"198.19.0.1", "198.19.1.1"}
    # the service account changes: one element moves, the policy follows
    put(idx, "WorkloadEndpoint", "c", "ns1", sa_wep("c", "builder", "198.19.0.3"))
    ch = idx.recompute()
    assert s4(idx, f"{sa} in {{'builder'}} && projectcalico.org/namespace == 'ns1'") == \
        {"198.19.0.1", "198.19.0.3"}
    assert ("WorkloadEndpoint", "ns1", "c") in ch.endpoints
    assert applied("c") == ["any-sa", "by-sa", "np"]


def test_service_account_label_needs_a_short_name():
    idx = PolicyIndex(NODE)
    put(idx, "WorkloadEndpoint", "a", "ns1", sa_wep("a", "x" * 63, "198.19.0.1"))
    put(idx, "WorkloadEndpoint", "b", "ns1", sa_wep("b", "y" * 62, "198.19.0.2"))
    put(idx, "GlobalNetworkPolicy", "p", None, gnp("p", "has(projectcalico.org/serviceaccount)"))
    idx.recompute()
    assert idx.policies_for(("WorkloadEndpoint", "ns1", "a"), "Ingress") == []
    assert len(idx.policies_for(("WorkloadEndpoint", "ns1", "b"), "Ingress")) == 1


# ---------------------------------------------------------------- rule selectors → sets


def test_rule_selector_sets_cluster_wide_with_network_sets():
    idx = PolicyIndex(NODE)
    put(idx, "WorkloadEndpoint", "a", "ns1", wep("a", ip="198.19.0.1", labels={"role": "fe"}))
    put(idx, "WorkloadEndpoint", "r", "ns2", wep("r", ns="ns2", ip="198.19.1.1", labels={"role": "fe"}, node="n2"))
    put(idx, "HostEndpoint", "h", None, hep("h", ips=["198.18.0.9"], labels={"role": "fe"}, node="n3"))
    put(idx, "GlobalNetworkSet", "g", None, gns("g", ["198.18.4.0/24", "198.18.5.5/32"], {"role": "fe"}))
    put(idx, "GlobalNetworkPolicy", "p", None, gnp("p", ingress=[allow_from("role == 'fe'")]))
    idx.recompute()
    assert s4(idx, "role == 'fe'") == {"198.19.0.1", "198.19.1.1", "198.18.0.9", "198.18.5.5"}
    h = selector_hash(parse_selector("role == 'fe'"))
    assert idx.set_elements(f"c4_{h}") == {"198.18.4.0/24"}
    assert idx.has_nets(parse_selector("role == 'fe'"), 4)
    assert not idx.has_nets(parse_selector("role == 'fe'"), 6)


def test_namespaced_rule_selector_only_matches_its_namespace():
    idx = PolicyIndex(NODE)
    put(idx, "WorkloadEndpoint", "a", "ns1", wep("a", ip="198.19.0.1", labels={"role": "fe"}))
    put(idx, "WorkloadEndpoint", "b", "ns2", wep("b", ns="ns2", ip="198.19.0.2", labels={"role": "fe"}))
    put(idx, "NetworkSet", "n1", "ns1", netset("n1", "ns1", ["198.18.7.7/32"], {"role": "fe"}))
    put(idx, "NetworkSet", "n2", "ns2", netset("n2", "ns2", ["198.18.8.8/32"], {"role": "fe"}))
    put(idx, "GlobalNetworkSet", "g", None, gns("g", ["198.18.9.9/32"], {"role": "fe"}))
    put(idx, "NetworkPolicy", "p", "ns1", np("p", "ns1", ingress=[allow_from("role == 'fe'")]))
    idx.recompute()
    assert s4(idx, "role == 'fe' && projectcalico.org/namespace == 'ns1'") == {"198.19.0.1", "198.18.7.7"}


def test_namespace_selector():
    idx = PolicyIndex(NODE)
    put(idx, "WorkloadEndpoint", "a", "ns1", wep("a", ip="198.19.0.1", labels={"role": "fe"}))
    put(idx, "WorkloadEndpoint", "b", "ns2", wep("b", ns="ns2", ip="198.19.0.2", labels={"role": "fe"}))
    put(idx, "WorkloadEndpoint", "c", "ns2", wep("c", ns="ns2", ip="198.19.0.3", labels={"role": "be"}))
    put(idx, "GlobalNetworkSet", "g", None, gns("g", ["198.18.9.9/32"], {"role": "fe"}))
    rule = {"action": "Allow", "source": {"namespaceSelector": "projectcalico.org/name == 'ns2'",
                                          "selector": "role == 'fe'"}}
    put(idx, "NetworkPolicy", "p", "ns1", np("p", "ns1", ingress=[rule]))
    rule2 = {"action": "Allow", "source": {"namespaceSelector": "global()"}}
    put(idx, "GlobalNetworkPolicy", "g2", None, gnp("g2", ingress=[rule2]))
    rule3 = {"action": "Allow", "source": {"namespaceSelector": "all()"}}
    put(idx, "GlobalNetworkPolicy", "g3", None, gnp("g3", ingress=[rule3]))
    idx.recompute()
    assert s4(idx, "role == 'fe' && pcns.projectcalico.org/name == 'ns2'") == {"198.19.0.2"}
    assert s4(idx, "global()") == {"198.18.9.9"}
    assert s4(idx, "has(projectcalico.org/namespace)") == {"198.19.0.1", "198.19.0.2", "198.19.0.3"}


def test_label_change_moves_endpoint_incrementally():
    idx = PolicyIndex(NODE)
    for i in range(20):
        put(idx, "WorkloadEndpoint", f"e{i}", "ns1", wep(f"e{i}", ip=f"198.19.0.{i + 1}", labels={"role": "be"}))
    put(idx, "GlobalNetworkPolicy", "p", None, gnp("p", ingress=[allow_from("role == 'fe'")]))
    idx.recompute()
    assert s4(idx, "role == 'fe'") == set()
    put(idx, "WorkloadEndpoint", "e3", "ns1", wep("e3", ip="198.19.0.4", labels={"role": "fe"}))
    ch = idx.recompute()
    name = "s4_" + selector_hash(parse_selector("role == 'fe'"))
    assert ch.elements == {name: {"198.19.0.4"}}
    assert ch.endpoints == {("WorkloadEndpoint", "ns1", "e3")}
    assert not ch.policies and not ch.sets
    assert s4(idx, "role == 'fe'") == {"198.19.0.4"}
    put(idx, "WorkloadEndpoint", "e3", "ns1", wep("e3", ip="198.19.0.4", labels={"role": "be"}))
    ch = idx.recompute()
    assert ch.elements == {name: {"198.19.0.4"}}
    assert s4(idx, "role == 'fe'") == set()


def test_ip_change_and_shared_addresses():
    idx = PolicyIndex(NODE)
    put(idx, "WorkloadEndpoint", "a", "ns1", wep("a", ip="198.19.0.1", labels={"r": "x"}))
    put(idx, "WorkloadEndpoint", "b", "ns1", wep("b", ip="198.19.0.1", labels={"r": "x"}))
    put(idx, "GlobalNetworkPolicy", "p", None, gnp("p", ingress=[allow_from("r == 'x'")]))
    idx.recompute()
    assert s4(idx, "r == 'x'") == {"198.19.0.1"}
    idx.update("WorkloadEndpoint", "a", "ns1", None)
    idx.recompute()
    assert s4(idx, "r == 'x'") == {"198.19.0.1"}      # b still has it
    put(idx, "WorkloadEndpoint", "b", "ns1", wep("b", ip="198.19.0.7", labels={"r": "x"}))
    ch = idx.recompute()
    assert s4(idx, "r == 'x'") == {"198.19.0.7"}
    assert list(ch.elements.values()) == [{"198.19.0.1", "198.19.0.7"}]


def test_shared_selector_one_set_refcounted():
    idx = PolicyIndex(NODE)
    put(idx, "WorkloadEndpoint", "a", "ns1", wep("a", labels={"r": "x"}))
    put(idx, "GlobalNetworkPolicy", "p1", None, gnp("p1", ingress=[allow_from("r == 'x'")]))
    put(idx, "GlobalNetworkPolicy", "p2", None, gnp("p2", egress=[{"action": "Deny", "destination": {"selector": "r=='x'"}}]))
    idx.recompute()
    names = [n for n in idx.all_set_names() if n.startswith("s")]
    assert len(names) == 1            # s4_ of the one selector (s6_ only once it has members)
    names.append(names[0].replace("s4_", "s6_"))
    idx.update("GlobalNetworkPolicy", "p1", None, None)
    ch = idx.recompute()
    assert not ch.sets
    assert s4(idx, "r == 'x'") == {"198.19.0.1"}
    idx.update("GlobalNetworkPolicy", "p2", None, None)
    ch = idx.recompute()
    assert ch.sets >= {names[0]}
    assert idx.all_set_names() == []


def test_profile_labels_to_apply():
    idx = PolicyIndex(NODE)
    put(idx, "WorkloadEndpoint", "a", "ns1", wep("a", labels={"own": "1", "team": "mine"}, profiles=["pr"]))
    put(idx, "Profile", "pr", None, profile("pr", labels={"team": "blue", "env": "prod"}))
    put(idx, "GlobalNetworkPolicy", "p", None, gnp("p", "env == 'prod'", ingress=[allow_from("env == 'prod' && team == 'mine'")]))
    idx.recompute()
    a = ("WorkloadEndpoint", "ns1", "a")
    assert [p.key[2] for p in idx.policies_for(a, "Ingress")] == ["p"]
    assert s4(idx, "env == 'prod' && team == 'mine'") == {"198.19.0.1"}   # own label wins
    put(idx, "Profile", "pr", None, profile("pr", labels={"env": "dev"}))
    ch = idx.recompute()
    assert idx.policies_for(a, "Ingress") == []
    assert a in ch.endpoints
    assert s4(idx, "env == 'prod' && team == 'mine'") == set()


def test_named_ports():
    idx = PolicyIndex(NODE)
    put(idx, "WorkloadEndpoint", "a", "ns1", wep("a", ip="198.19.0.1", labels={"r": "db"}, ports=[("pg", "TCP", 5432)]))
    put(idx, "WorkloadEndpoint", "b", "ns1", wep("b", ip="198.19.0.2", labels={"r": "db"}, ports=[("pg", "UDP", 5433)]))
    put(idx, "WorkloadEndpoint", "c", "ns1", wep("c", ip="198.19.0.3", labels={"r": "web"}, ports=[("pg", "TCP", 1)]))
    rule = {"action": "Allow", "protocol": "TCP", "destination": {"selector": "r == 'db'", "ports": ["pg", 80]}}
    put(idx, "GlobalNetworkPolicy", "p", None, gnp("p", egress=[rule]))
    idx.recompute()
    nsets = [n for n in idx.all_set_names() if n.startswith("n4_")]
    assert len(nsets) == 1
    assert idx.set_elements(nsets[0]) == {"198.19.0.1 . 5432"}
    put(idx, "WorkloadEndpoint", "a", "ns1", wep("a", ip="198.19.0.1", labels={"r": "db"}, ports=[("pg", "TCP", 6000)]))
    idx.recompute()
    assert idx.set_elements(nsets[0]) == {"198.19.0.1 . 6000"}


def test_ipv6_set_appearing_rerenders_policy():
    idx = PolicyIndex(NODE)
    put(idx, "GlobalNetworkPolicy", "p", None, gnp("p", ingress=[allow_from("r == 'x'")]))
    put(idx, "WorkloadEndpoint", "a", "ns1", wep("a", labels={"r": "x"}))
    idx.recompute()
    h = selector_hash(parse_selector("r == 'x'"))
    assert not idx.set_exists(f"s6_{h}")
    put(idx, "WorkloadEndpoint", "b", "ns1", wep("b", ip="2001:db8::2/128", labels={"r": "x"}))
    ch = idx.recompute()
    assert ("GlobalNetworkPolicy", None, "p") in ch.policies and f"s6_{h}" in ch.sets
    assert idx.set_elements(f"s6_{h}") == {"2001:db8::2"}
    idx.update("WorkloadEndpoint", "b", "ns1", None)
    ch = idx.recompute()
    assert ("GlobalNetworkPolicy", None, "p") in ch.policies and not idx.set_exists(f"s6_{h}")


def test_cidr_companion_set_appearing_rerenders_policy():
    idx = PolicyIndex(NODE)
    put(idx, "GlobalNetworkPolicy", "p", None, gnp("p", ingress=[allow_from("r == 'x'")]))
    idx.recompute()
    put(idx, "GlobalNetworkSet", "g", None, gns("g", ["198.18.0.0/16", "198.18.1.0/24"], {"r": "x"}))
    ch = idx.recompute()
    assert ("GlobalNetworkPolicy", None, "p") in ch.policies
    h = selector_hash(parse_selector("r == 'x'"))
    assert f"c4_{h}" in ch.sets
    assert idx.set_elements(f"c4_{h}") == {"198.18.0.0/16"}      # collapsed, no overlap
    idx.update("GlobalNetworkSet", "g", None, None)
    ch = idx.recompute()
    assert ("GlobalNetworkPolicy", None, "p") in ch.policies
    assert not idx.set_exists(f"c4_{h}")


def test_policy_selector_change_and_delete():
    idx = PolicyIndex(NODE)
    put(idx, "WorkloadEndpoint", "a", "ns1", wep("a", labels={"r": "x"}))
    put(idx, "WorkloadEndpoint", "b", "ns1", wep("b", ip="198.19.0.2", labels={"r": "y"}))
    put(idx, "GlobalNetworkPolicy", "p", None, gnp("p", "r == 'x'"))
    idx.recompute()
    put(idx, "GlobalNetworkPolicy", "p", None, gnp("p", "r == 'y'"))
    ch = idx.recompute()
    assert ch.endpoints == {("WorkloadEndpoint", "ns1", "a"), ("WorkloadEndpoint", "ns1", "b")}
    idx.update("GlobalNetworkPolicy", "p", None, None)
    ch = idx.recompute()
    assert ch.endpoints == {("WorkloadEndpoint", "ns1", "b")}
    assert ("GlobalNetworkPolicy", None, "p") in ch.policies


def _random_world(rng: random.Random, n_eps: int):
    labels = ["a", "b", "c"]
    docs = []
    for i in range(n_eps):
        lab = {k: rng.choice(["1", "2"]) for k in labels if rng.random() < 0.6}
        ns = rng.choice(["ns1", "ns2"])
        docs.append(("WorkloadEndpoint", f"e{i}", ns,
                     wep(f"e{i}", ns=ns, ip=f"198.19.{i // 200}.{i % 200 + 1}", labels=lab,
                         node=rng.choice([NODE, "n2"]))))
    sels = ["a == '1'", "b == '2' && !has(c)", "a in {'1','2'} || c == '1'", "all()", "!has(a)"]
    for j, s in enumerate(sels):
        docs.append(("GlobalNetworkPolicy", f"p{j}", None, gnp(f"p{j}", s, ingress=[allow_from(sels[-1 - j])])))
        docs.append(("NetworkPolicy", f"np{j}", "ns1", np(f"np{j}", "ns1", s, egress=[
            {"action": "Allow", "destination": {"selector": sels[j]}}])))
    return docs


def _snapshot(idx: PolicyIndex):
    sets = {n: idx.set_elements(n) for n in idx.all_set_names()}
    pols = {ep: ([p.key for p in idx.policies_for(ep, "Ingress")],
                 [p.key for p in idx.policies_for(ep, "Egress")]) for ep in idx.local_endpoints()}
    return sets, pols


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_incremental_equals_bulk(seed):
    """Applying random changes one at a time gives the same state as loading the end
    state at once (bulk path) — and as brute force evaluation."""
    rng = random.Random(seed)
    docs = _random_world(rng, 400)
    inc = PolicyIndex(NODE)
    for d in docs:
        inc.update(d[0], d[1], d[2], d[3])
    inc.recompute()      # bulk (> BULK_ITEMS)
    final = {(d[0], d[1], d[2]): d[3] for d in docs}
    ns_of = {d[1]: (d[0], d[1], d[2]) for d in docs if d[0] == "WorkloadEndpoint"}
    for step in range(60):
        i = rng.randrange(400)
        key = ns_of[f"e{i}"]
        if rng.random() < 0.15 and key in final:
            inc.update(key[0], key[1], key[2], None)
            final.pop(key)
            continue
        lab = {k: rng.choice(["1", "2"]) for k in "abc" if rng.random() < 0.6}
        d = wep(f"e{i}", ns=key[2], ip=f"198.19.{i // 200}.{i % 200 + 1}", labels=lab,
                node=rng.choice([NODE, "n2"]))
        inc.update(key[0], key[1], key[2], d)
        final[key] = d
        if step % 7 == 0:
            j = rng.randrange(5)
            sel = rng.choice(["a == '2'", "has(b)", "all()"])
            d = gnp(f"p{j}", sel, order=rng.randrange(3), ingress=[allow_from(sel)])
            inc.update("GlobalNetworkPolicy", f"p{j}", None, d)
            final[("GlobalNetworkPolicy", f"p{j}", None)] = d
        inc.recompute()
    bulk = PolicyIndex(NODE)
    for (kind, name, ns), d in final.items():
        bulk.update(kind, name, ns, d)
    bulk.recompute()
    assert _snapshot(inc) == _snapshot(bulk)
    # and the matcher agrees with brute-force evaluation
    for sel_key, members in inc.rule_matcher.members.items():
        assert members == inc.rule_matcher.index.select_brute_force(inc.rule_matcher.selectors[sel_key])


def test_selector_matcher_bulk_and_single_paths_agree():
    m = SelectorMatcher()
    m.set_selector("s", parse_selector("x == '1'"))
    for i in range(SelectorMatcher.BULK_ITEMS + 10):
        m.set_item(i, {"x": str(i % 2)})
    ch = m.recompute()
    assert m.members["s"] == {i for i in range(SelectorMatcher.BULK_ITEMS + 10) if i % 2 == 1}
    assert all(added for _, _, added in ch)
    m.set_item(1, {"x": "0"})
    assert m.recompute() == [("s", 1, False)]


# ---------------------------------------------------------------- dataplane with a fake runner


def _dp(settings=None):
    fake = FakeNftRunner()
    return PolicyDataplane(NODE, settings=settings, nft=fake), fake


def test_first_apply_is_one_full_transaction_then_incremental():
    dp, fake = _dp()
    dp.update("WorkloadEndpoint", "a", "ns1", wep("a", iface="cali0000000000a", labels={"r": "x"}))
    dp.update("Profile", "pr", None, profile("pr", ingress=[{"action": "Allow"}]))
    st = dp.apply()
    assert st.full and len(fake.scripts) == 1
    assert fake.scripts[0].startswith("add table inet calico\ndelete table inet calico\ntable inet calico {")
    assert dp.apply().skipped and len(fake.scripts) == 1
    # an endpoint with a chain combination that exists already: elements only, no chain
    dp.update("WorkloadEndpoint", "b", "ns1", wep("b", ip="198.19.0.2", iface="cali0000000000b"))
    st = dp.apply()
    assert not st.full and st.chains_written == 0
    script = fake.scripts[-1]
    assert "add chain" not in script and "add rule" not in script
    assert 'add element inet calico cali-wl-to { "cali0000000000b" : jump cali-tw-' in script
    assert dp.endpoint_count() == 2


def test_failed_incremental_falls_back_to_full_load():
    dp, fake = _dp()
    dp.update("WorkloadEndpoint", "a", "ns1", wep("a", iface="cali0000000000a"))
    dp.apply()
    dp.update("WorkloadEndpoint", "a", "ns1", None)
    fake.fail_next = 1
    st = dp.apply()
    assert st.full
    assert fake.scripts[-1].startswith("add table inet calico\ndelete table")
    assert "cali0000000000a" not in fake.scripts[-1]


def test_adopts_matching_live_table():
    dp, fake = _dp()
    dp.update("WorkloadEndpoint", "a", "ns1", wep("a", iface="cali0000000000a"))
    dp.apply()
    fp = dp.rs.fingerprint()
    dp2, fake2 = _dp()
    dp2.update("WorkloadEndpoint", "a", "ns1", wep("a", iface="cali0000000000a"))
    fake2.fingerprint = fp
    fake2.table = _table_json(dp)
    st = dp2.apply()
    assert st.adopted and fake2.scripts == []
    # different content: no adoption
    dp3, fake3 = _dp()
    dp3.update("WorkloadEndpoint", "a", "ns1", wep("a", iface="cali0000000000b"))
    fake3.fingerprint = fp
    assert dp3.apply().full


def _table_json(dp: PolicyDataplane):
    """What `nft -j list table` would show for what dp wrote (counts only matter)."""
    objs = []
    for name, c in dp.writer.written_chains.items():
        objs.append({"chain": {"name": name}})
        objs.extend({"rule": {"chain": name}} for _ in c.rules)
    for name, (_decl, is_map) in dp.writer.written_sets.items():
        objs.append({"map" if is_map else "set": {"name": name,
                                                   "elem": list(dp.writer.written_elems.get(name, {}))}})
    return {"nftables": objs}


def test_refresh_detects_flushed_table():
    dp, fake = _dp()
    dp.update("WorkloadEndpoint", "a", "ns1", wep("a", iface="cali0000000000a"))
    dp.apply()
    fake.table = _table_json(dp)
    assert dp.refresh() is False
    fake.table = {"nftables": [o for o in fake.table["nftables"] if "rule" not in o]}
    n = len(fake.scripts)
    assert dp.refresh() is True
    assert len(fake.scripts) == n + 1 and fake.scripts[-1].startswith("add table inet calico")
    fake.table = None
    assert dp.refresh() is True


def _chain_of(dp, mapname, iface):
    return dp.rs.sets[mapname].elements[f'"{iface}"'].split()[-1]


def test_endpoint_chain_order_pass_and_profiles():
    dp, fake = _dp()
    dp.update("WorkloadEndpoint", "a", "ns1", wep("a", iface="cali0000000000a", labels={"r": "x"}, profiles=["pr1", "pr2", "missing"]))
    dp.update("Profile", "pr1", None, profile("pr1", ingress=[{"action": "Pass"}]))
    dp.update("Profile", "pr2", None, profile("pr2", ingress=[{"action": "Allow"}]))
    dp.update("GlobalNetworkPolicy", "late", None, gnp("late", "r == 'x'", order=20, ingress=[{"action": "Deny"}]))
    dp.update("GlobalNetworkPolicy", "early", None, gnp("early", "r == 'x'", order=10, ingress=[{"action": "Pass", "protocol": "TCP"}]))
    dp.apply()
    chain = dp.rs.chains[_chain_of(dp, "cali-wl-to", "cali0000000000a")].rules
    early = policy_chain(("GlobalNetworkPolicy", None, "early"), "Ingress")
    late = policy_chain(("GlobalNetworkPolicy", None, "late"), "Ingress")
    assert chain == (
        "meta mark set meta mark & 0xfffcffff",
        f"jump {early}",
        "meta mark & 0x10000 == 0x10000 return",
        f"meta mark & 0x20000 == 0 jump {late}",
        "meta mark & 0x10000 == 0x10000 return",
        "meta mark & 0x20000 == 0 drop",
        "jump cali-pri-" + chain[6].split("cali-pri-")[1],
        "meta mark & 0x10000 == 0x10000 return",
        "jump cali-pri-" + chain[8].split("cali-pri-")[1],
        "meta mark & 0x10000 == 0x10000 return",
        "drop",
    )
    assert dp.rs.chains[early].rules == ("meta l4proto 6 meta mark set meta mark | 0x20000 return",)
    # Pass inside a profile just returns (next profile)
    assert dp.rs.chains[chain[6].split()[-1]].rules == ("return",)
    # egress: no policy has Egress type, so only the profiles (which have no egress rules)
    eg = dp.rs.chains[_chain_of(dp, "cali-wl-from", "cali0000000000a")].rules
    assert not any("cali-p" in r and "cali-pro" not in r for r in eg)
    assert eg[-1] == "drop"


def test_no_policy_no_profile_is_drop_and_unused_chains_are_deleted():
    dp, fake = _dp()
    dp.update("WorkloadEndpoint", "a", "ns1", wep("a", iface="cali0000000000a", labels={"r": "x"}))
    dp.update("GlobalNetworkPolicy", "p", None, gnp("p", "r == 'x'", ingress=[{"action": "Allow"}]))
    dp.apply()
    with_pol = _chain_of(dp, "cali-wl-to", "cali0000000000a")
    dp.update("GlobalNetworkPolicy", "p", None, None)
    dp.apply()
    bare = _chain_of(dp, "cali-wl-to", "cali0000000000a")
    assert dp.rs.chains[bare].rules == ("meta mark set meta mark & 0xfffcffff", "drop")
    assert with_pol not in dp.rs.chains
    script = fake.scripts[-1]
    assert f"delete chain inet calico {with_pol}" in script
    assert f"delete chain inet calico {policy_chain(('GlobalNetworkPolicy', None, 'p'), 'Ingress')}" in script
    # deletions come after the map element that referenced the chain was replaced
    assert script.index("cali-wl-to") < script.index(f"delete chain inet calico {with_pol}")


def test_host_endpoint_maps_and_failsafe_settings():
    st = FelixSettings(failsafe_inbound="tcp:22, udp:68", failsafe_outbound=[("udp", 53)],
                       default_endpoint_to_host_action="accept")
    dp, fake = _dp(st)
    dp.update("HostEndpoint", "h", None, hep("h", iface="ens3"))
    dp.apply()
    assert set(dp.rs.sets["cali-failsafe-in"].elements) == {"tcp . 22", "udp . 68"}
    assert set(dp.rs.sets["cali-failsafe-out"].elements) == {"udp . 53"}
    assert '"ens3"' in dp.rs.sets["cali-hep-in"].elements
    assert '"ens3"' in dp.rs.sets["cali-hep-ifaces"].elements
    inp = dp.rs.chains["cali-input"].rules
    fs = inp.index("iifname @cali-hep-ifaces meta l4proto . th dport @cali-failsafe-in accept")
    assert fs < inp.index("iifname vmap @cali-hep-in")
    assert 'iifname "cali*" accept' in inp
    with pytest.raises(ValueError):
        FelixSettings(default_endpoint_to_host_action="Reject")


def test_nat_outgoing_pools():
    dp, fake = _dp()
    dp.update("IPPool", "p1", None, {"kind": "IPPool", "metadata": {"name": "p1"},
                                     "spec": {"cidr": "198.19.0.0/16", "natOutgoing": True}})
    dp.update("IPPool", "p2", None, {"kind": "IPPool", "metadata": {"name": "p2"},
                                     "spec": {"cidr": "198.18.128.0/20"}})
    dp.apply()
    assert set(dp.rs.sets["cali-masq4"].elements) == {"198.19.0.0/16"}
    assert set(dp.rs.sets["cali-pools4"].elements) == {"198.19.0.0/16", "198.18.128.0/20"}
    assert "ip saddr @cali-masq4 ip daddr != @cali-pools4 masquerade" in \
        dp.rs.chains["cali-nat-postrouting"].rules
    dp.update("IPPool", "p1", None, None)
    dp.apply()
    assert "delete element inet calico cali-masq4 { 198.19.0.0/16 }" in fake.scripts[-1]


# ---------------------------------------------------------------- netlink fast path (fake)


def test_element_only_changes_take_the_netlink_path():
    fake = FakeNftRunner(fast_elements=True)
    dp = PolicyDataplane(NODE, nft=fake)
    dp.update("Profile", "pr", None, profile("pr", ingress=[{"action": "Allow"}]))
    dp.update("GlobalNetworkPolicy", "p", None, gnp("p", "r == 'x'", ingress=[allow_from("r == 'x'")]))
    dp.update("WorkloadEndpoint", "a", "ns1", wep("a", iface="cali0000000000a", labels={"r": "x"}, profiles=["pr"]))
    assert dp.apply().full
    dp.update("WorkloadEndpoint", "b", "ns1", wep("b", ip="198.19.0.2", iface="cali0000000000b",
                                                  labels={"r": "x"}, profiles=["pr"]))
    st = dp.apply()
    assert st.netlink and len(fake.scripts) == 1
    ops = fake.batches[-1]
    s4name = "s4_" + selector_hash(parse_selector("r == 'x'"))
    assert ("add", s4name, "type ipv4_addr", "198.19.0.2", None) in ops
    assert any(o[0] == "add" and o[1] == "cali-wl-to" and o[3] == '"cali0000000000b"'
               and o[4].startswith("jump cali-tw-") for o in ops)
    # the fingerprint moves with the content
    assert ops[0][:2] == ("delete", "cali-meta") and ops[-1][:2] == ("add", "cali-meta")
    assert ops[-1][3] == f'"{dp.rs.fingerprint()}"'
    # endpoint gone: still elements only; its now unused chain waits for the next nft run
    dp.update("WorkloadEndpoint", "a", "ns1", wep("a", iface="cali0000000000a", labels={"r": "y"}, profiles=["pr"]))
    st = dp.apply()          # a leaves the policy: new chain combination → nft
    assert not st.netlink
    dp.update("WorkloadEndpoint", "a", "ns1", None)
    st = dp.apply()
    assert st.netlink and dp._unused_chains
    unused = set(dp._unused_chains)
    dp.update("GlobalNetworkPolicy", "p", None, gnp("p", "r == 'x'", ingress=[allow_from("r == 'z'")]))
    st = dp.apply()          # nft runs anyway: garbage goes with it
    assert not st.netlink
    assert all(f"delete chain inet calico {c}" in fake.scripts[-1] for c in unused)


def test_netlink_failure_falls_back_to_nft():
    fake = FakeNftRunner(fast_elements=True)
    dp = PolicyDataplane(NODE, nft=fake)
    dp.update("WorkloadEndpoint", "a", "ns1", wep("a", iface="cali0000000000a"))
    dp.apply()
    dp.update("WorkloadEndpoint", "b", "ns1", wep("b", ip="198.19.0.2", iface="cali0000000000b"))
    fake.fail_fast_next = 1
    st = dp.apply()
    assert not st.netlink and not st.full
    assert 'add element inet calico cali-wl-to { "cali0000000000b"' in fake.scripts[-1]


def _over_placeholder(monkeypatch, split_min=3):
    """A dataplane with four endpoints over its placeholder table; verdict maps of
    `split_min` elements or more are split (None: the default)."""
    fake = FakeNftRunner(fast_elements=True)
    dp = PolicyDataplane(NODE, nft=fake)
    if split_min is not None:
        monkeypatch.setattr(type(dp.writer), "SPLIT_MAP_MIN", split_min)
    _many(dp, 4)
    dp.load_placeholder()
    return dp, fake


def _many(dp, n):
    dp.update("Profile", "pr", None, profile("pr", ingress=[{"action": "Allow"}]))
    for i in range(n):
        dp.update("WorkloadEndpoint", f"w{i}", "ns1", wep(f"w{i}", ip=f"198.19.0.{i + 1}",
                                                           iface=f"cali{i:011d}", profiles=["pr"]))


def test_full_load_over_the_placeholder_sends_big_verdict_maps_over_netlink(monkeypatch):
    dp, fake = _over_placeholder(monkeypatch)
    st = dp.apply()
    assert st.full and len(fake.scripts) == 2           # placeholder, then the table
    script = fake.scripts[-1]
    # the maps are declared empty in the table's transaction ...
    assert "map cali-wl-from { type ifname : verdict; }" in script
    assert "map cali-wl-to { type ifname : verdict; }" in script
    assert '"cali00000000000"' not in script
    # ... and so is the fingerprint set ...
    assert "set cali-meta { type ifname; }" in script
    # ... filled by one netlink batch, exactly with what the full script has
    assert len(fake.batches) == 1
    sent = {(o[1], o[3], o[4]) for o in fake.batches[0]}
    want = {(m, k, v) for m in ("cali-wl-from", "cali-wl-to") for k, v in dp.rs.sets[m].elements.items()}
    want.add(("cali-meta", f'"{dp.rs.fingerprint()}"', None))
    assert sent == want and len(want) == 9 and all(o[0] == "add" for o in fake.batches[0])
    assert dp.writer.check(_counts(dp)) == []
    # only over the placeholder: a later full load (a repair) has the maps in its
    # one transaction; only the fingerprint follows it, computed while nft loads
    dp.writer.write(dp.rs, full=True)
    assert '"cali00000000000"' in fake.scripts[-1] and "set cali-meta { type ifname; }" in fake.scripts[-1]
    assert fake.batches[1] == [("add", "cali-meta", "type ifname", f'"{dp.rs.fingerprint()}"', None)]
    assert dp.writer.check(_counts(dp)) == []


def _with_selector_policy(dp):
    dp.update("GlobalNetworkPolicy", "p", None, gnp("p", "all()", ingress=[allow_from("app == 'x'")]))
    for i in range(4):
        dp.update("WorkloadEndpoint", f"w{i}", "ns1", wep(f"w{i}", ip=f"198.19.0.{i + 1}", labels={"app": "x"},
                                                           iface=f"cali{i:011d}", profiles=["pr"]))
    return "s4_" + selector_hash(parse_selector("app == 'x'"))


def test_selector_sets_follow_with_the_maps_when_no_host_endpoint(monkeypatch):
    dp, fake = _over_placeholder(monkeypatch)
    s4 = _with_selector_policy(dp)
    assert dp.apply().full
    script = fake.scripts[-1]
    # declared empty in the table's transaction, filled by the maps' batch
    assert f"set {s4} {{ type ipv4_addr; }}" in script and "198.19.0.3" not in script
    sent = {(o[1], o[3]) for o in fake.batches[0]}
    assert {(s4, f"198.19.0.{i + 1}") for i in range(4)} <= sent
    assert dp.writer.check(_counts(dp)) == []
    # the nft fallback adds them too, in the one transaction with the maps
    dp2, fake2 = _over_placeholder(monkeypatch)
    _with_selector_policy(dp2)
    fake2.fail_fast_next = 1
    dp2.apply()
    assert f"add element inet calico {s4} {{ " in fake2.scripts[-1]
    assert "cali-wl-to" in fake2.scripts[-1] and fake2.batches == []
    assert dp2.writer.check(_counts(dp2)) == []


def test_selector_sets_stay_in_the_table_with_a_host_endpoint(monkeypatch):
    # A host endpoint's chains are live as soon as the table is: a rule of its
    # policy must not see an empty selector set, even for a moment.
    dp, fake = _over_placeholder(monkeypatch)
    s4 = _with_selector_policy(dp)
    dp.update("HostEndpoint", "h", None, hep("h", labels={"app": "x"}))
    assert dp.apply().full
    script = fake.scripts[-1]
    assert f"set {s4} {{ type ipv4_addr; }}" not in script and "198.19.0.3" in script
    assert all(o[1] != s4 for o in fake.batches[0])
    assert dp.writer.check(_counts(dp)) == []


def test_split_maps_fall_back_to_nft_when_netlink_fails(monkeypatch):
    dp, fake = _over_placeholder(monkeypatch)
    fake.fail_fast_next = 1
    st = dp.apply()
    assert st.full and fake.batches == []
    assert len(fake.scripts) == 3
    fill = fake.scripts[-1]
    for m in ("cali-wl-from", "cali-wl-to"):
        for k, v in dp.rs.sets[m].elements.items():
            assert f"{k} : {v}" in fill
    assert f'add element inet calico cali-meta {{ "{dp.rs.fingerprint()}" }}' in fill
    assert fill.count("add element inet calico") == 3
    # small maps (below SPLIT_MAP_MIN) stay in the one transaction
    monkeypatch.undo()
    dp2, fake2 = _over_placeholder(monkeypatch, split_min=None)
    dp2.apply()
    assert '"cali00000000000"' in fake2.scripts[-1]
    assert [[o[1] for o in b] for b in fake2.batches] == [["cali-meta"]]     # the fingerprint alone


def test_split_maps_encoding_failure_falls_back_to_nft(monkeypatch):
    # Any error while encoding the batch (here a KeyError) leaves the elements to nft.
    dp, fake = _over_placeholder(monkeypatch)

    def broken(ops):
        raise KeyError("verdict")

    monkeypatch.setattr(fake, "prepare", broken)
    assert dp.apply().full and fake.batches == []
    assert fake.scripts[-1].count("add element inet calico") == 3
    assert dp.writer.check(_counts(dp)) == []


def _counts(dp):
    chains = {n: len(c.rules) for n, c in dp.rs.chains.items()}
    sets = {n: len(s.elements) for n, s in dp.rs.sets.items()}
    sets["cali-meta"] = 1
    return chains, sets


def test_unusable_documents_are_skipped_not_fatal():
    dp, fake = _dp()
    dp.update("WorkloadEndpoint", "a", "ns1", wep("a", iface="cali0000000000a"))
    bad_iface = wep("b", ip="198.19.0.2", iface='bad"name-far-too-long')
    dp.update("WorkloadEndpoint", "b", "ns1", bad_iface)
    dp.update("GlobalNetworkPolicy", "broken", None, gnp("broken", "this is not a selector ((("))
    dp.update("GlobalNetworkPolicy", "ok", None, gnp("ok", ingress=[{"action": "Allow"}]))
    st = dp.apply()
    assert st.full
    assert dp.policy_count() == 1 and dp.endpoint_count() == 1
    assert "bad" not in fake.scripts[-1]


def test_selector_matcher_prefilter_agrees_with_brute_force():
    rng = random.Random(7)
    sels = ["a == '1'", "a in {'1', '2'}", "has(b)", "a == '1' && b == '2'", "!has(a)",
            "a == '1' || b == '1'", "a == '1' || !has(b)", "a != '1'", "c contains 'x'",
            "all()", "b not in {'1'} && a == '2'", "c starts with 'x' && has(a)"]
    m = SelectorMatcher()
    for i, t in enumerate(sels):
        m.set_selector(i, parse_selector(t))
    m.recompute()
    for step in range(400):
        item = rng.randrange(30)
        if rng.random() < 0.1:
            m.set_item(item, None)
        else:
            m.set_item(item, {k: rng.choice(["1", "2", "xy"]) for k in "abc" if rng.random() < 0.6})
        m.recompute()          # one item at a time: the prefiltered path
    for i, t in enumerate(sels):
        assert m.members[i] == m.index.select_brute_force(t), t
