"""The cold-start recompute of the policy index (a large batch of new members, taken
in bulk per label set) against two oracles: the same members fed one at a time with
a recompute after each (the per-item path), and brute force (each rule selector
evaluated on each member's effective labels).  Later incremental changes must keep
both indexes in step."""
from __future__ import annotations

from collections import Counter

import pytest

from calico_net.agent.felix.index import PolicyIndex, SelectorMatcher
from test_felix_index import gns, profile

NODE = "node1"
N_REMOTE = 420          # > SelectorMatcher.BULK_ITEMS: the cold start takes the bulk path


def wep(name, ns, ips, labels, node="n2", profiles=(), ports=()):
    return {
        "kind": "WorkloadEndpoint",
        "metadata": {"name": name, "namespace": ns, "labels": dict(labels)},
        "spec": {"node": node, "orchestrator": "k8s", "interfaceName": f"cali{name[-11:]:>011}",
                 "ipNetworks": [ip if "/" in ip else (ip + ("/128" if ":" in ip else "/32"))
                                for ip in ips],
                 "profiles": list(profiles),
                 "ports": [{"name": n, "protocol": p, "port": port} for n, p, port in ports]},
    }


def hep(name, ips, labels, node=NODE, profiles=()):
    return {"kind": "HostEndpoint", "metadata": {"name": name, "labels": dict(labels)},
            "spec": {"node": node, "interfaceName": "eth0", "expectedIPs": list(ips),
                     "profiles": list(profiles)}}


def gnp(name, selector, ingress=(), egress=()):
    return {"kind": "GlobalNetworkPolicy", "metadata": {"name": name},
            "spec": {"selector": selector, "ingress": list(ingress), "egress": list(egress)}}


def np(name, ns, selector, ingress=()):
    return {"kind": "NetworkPolicy", "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": selector, "ingress": list(ingress)}}


def frm(sel, **extra):
    return {"action": "Allow", "source": {"selector": sel, **extra}}


def to_ports(sel, ports, proto="TCP"):
    return {"action": "Allow", "protocol": proto, "destination": {"selector": sel, "ports": ports}}


APPS = ["web", "db", "cache", "api"]


def remote(i, node="n2"):
    """An endpoint (remote unless `node` says otherwise) of a few label groups: one
    or two IPv4 addresses, some with IPv6, some with named ports, some with profiles."""
    ns = ("ns1", "ns2", "ns3")[i % 3]
    app = APPS[i % 4]
    labels = {"app": app}
    if i % 5 == 0:
        labels["tier"] = "fe"
    ips = [f"198.18.{i // 250}.{i % 250 + 1}"]
    if i % 7 == 0:
        ips.append(f"198.19.{200 + i // 250}.{i % 250}")
    if i % 11 == 0:
        ips.append(f"2001:db8::{i:x}")
    if i % 13 == 0:
        ips.append("198.19.250.1")        # an address given by several members
    ports = [("http", "TCP", 8080)] if app in ("web", "api") and i % 3 else ()
    if app == "db" and i % 2:
        ports = [("pg", "TCP", 5432), ("http", "UDP", 9090)]
    profs = (f"kns.{ns}",) + (("extra",) if i % 6 == 0 else ())
    return ("WorkloadEndpoint", f"r{i}", ns,
            wep(f"r{i}", ns, ips, labels, node=node, profiles=profs, ports=ports))


def world(local_every=0):
    """(policies and profiles, members) of a mixed population (with `local_every`,
    every so many of the bulk endpoints are this node's)."""
    config = [
        ("Profile", "kns.ns1", None, profile("kns.ns1", labels={"env": "prod"})),
        ("Profile", "kns.ns2", None, profile("kns.ns2", labels={"env": "dev"})),
        ("Profile", "kns.ns3", None, profile("kns.ns3", labels={"env": "prod", "app": "shadow"})),
        ("Profile", "extra", None, profile("extra", labels={"team": "t1", "env": "stage"},
                                           ingress=[frm("team == 't1'")])),
        ("GlobalNetworkPolicy", "p-web", None, gnp("p-web", "app == 'web'", ingress=[
            frm("app == 'api'"), frm("env == 'prod' && has(tier)"),
            to_ports("app == 'db'", ["pg", 80]), to_ports("app in {'web','api'}", ["http"])])),
        ("GlobalNetworkPolicy", "p-all", None, gnp("p-all", "all()", ingress=[
            frm("role == 'gw'"), frm("!has(app)"), to_ports("app == 'db'", ["http"], "UDP")],
            egress=[{"action": "Allow", "destination": {"selector": "env == 'stage'"}}])),
        ("NetworkPolicy", "n-db", "ns1", np("n-db", "ns1", "app == 'db'", ingress=[
            frm("app == 'cache'"), frm("tier == 'fe'")])),
        ("GlobalNetworkPolicy", "p-shadow", None, gnp("p-shadow", "app == 'shadow'", ingress=[
            frm("app == 'shadow' || team == 't1'")])),
    ]
    members = [remote(i, NODE if local_every and i % local_every == 0 else "n2")
               for i in range(N_REMOTE)]
    members += [
        ("WorkloadEndpoint", "l1", "ns1", wep("l1", "ns1", ["198.19.99.1"], {"app": "web"},
                                              node=NODE, profiles=("kns.ns1",),
                                              ports=[("http", "TCP", 80)])),
        ("WorkloadEndpoint", "l2", "ns2", wep("l2", "ns2", ["198.19.99.2", "2001:db8::99"],
                                              {"app": "db", "tier": "fe"}, node=NODE,
                                              profiles=("kns.ns2", "extra"))),
        ("WorkloadEndpoint", "l3", "ns3", wep("l3", "ns3", ["198.19.99.3"], {}, node=NODE)),
        ("HostEndpoint", "h1", None, hep("h1", ["198.19.98.1"], {"role": "gw"})),
        ("HostEndpoint", "h2", None, hep("h2", ["198.19.98.2", "2001:db8:98::2"], {"role": "gw", "app": "api"},
                                         node="n3")),
        ("GlobalNetworkSet", "g1", None, gns("g1", ["198.18.128.0/17", "198.18.132.0/24",
                                                  "2001:db8:10::/64"], {"role": "gw"})),
        ("GlobalNetworkSet", "g2", None, gns("g2", ["198.19.0.0/16"], {"team": "t1"})),
        ("WorkloadEndpoint", "ghost", "ns1", None),     # deleted before it was ever seen
    ]
    return config, members


def put(idx, docs):
    for kind, name, ns, doc in docs:
        idx.update(kind, name, ns, doc)


def state(idx: PolicyIndex):
    """Everything the index keeps about sets and matches, comparable between indexes."""
    sets = idx.sets
    return {
        "counts": {n: dict(c) for n, c in sets.counts.items()},
        "names": sorted(idx.all_set_names()),
        "elements": {n: idx.set_elements(n) for n in idx.all_set_names()},
        "contributed": dict(sets.contributed),
        "rule_members": {k: set(v) for k, v in idx.rule_matcher.members.items()},
        "rule_matches": {k: set(v) for k, v in idx.rule_matcher.matches.items() if v},
        "policy_members": {k: set(v) for k, v in idx.policy_matcher.members.items()},
        "policy_matches": {k: set(v) for k, v in idx.policy_matcher.matches.items() if v},
        "profile_members": {k: set(v) for k, v in idx.profile_members.items()},
        "local": set(idx.local_keys),
        "policies": {ep: [p.key for p in idx.ordered_policies(ep)] for ep in idx.local_endpoints()},
    }


def brute_force_counts(idx: PolicyIndex):
    """The address and CIDR sets of every selector used for addresses, from each
    member's effective labels (own labels over its profiles' labelsToApply, earlier
    profiles first) evaluated directly."""
    out = {}
    for use in idx.sets.uses.values():
        if not use.addr_users:
            continue
        c = {f"{k}{f}_{use.h}": Counter() for k in "sc" for f in (4, 6)}
        for m in idx.members.values():
            labels = {}
            for p in reversed(m.profiles):
                if p in idx.profiles:
                    labels.update(idx.profiles[p].labels_to_apply)
            labels.update(m.own_labels)
            if not use.sel.evaluate(labels):
                continue
            c[use.s4].update(m.addrs4)
            c[use.s6].update(m.addrs6)
            c[use.c4].update(m.nets4)
            c[use.c6].update(m.nets6)
        for name, cnt in c.items():
            if cnt or name[0] == "s":
                out[name] = dict(cnt)
    return out


def addr_counts(idx: PolicyIndex):
    return {n: dict(c) for n, c in idx.sets.counts.items() if n[0] in "sc"}


def changes(ch):
    return (ch.policies, ch.profiles, ch.endpoints, ch.sets, ch.elements, ch.cidr_sets)


def merge(total, ch):
    for a, b in zip(total, changes(ch)):
        if isinstance(a, dict):
            for k, v in b.items():
                a.setdefault(k, set()).update(v)
        else:
            a.update(b)


def cold_and_one_by_one(local_every=0):
    config, members = world(local_every)
    cold = PolicyIndex(NODE)
    put(cold, config + members)
    ch_cold = cold.recompute()
    assert len(members) > SelectorMatcher.BULK_ITEMS
    one = PolicyIndex(NODE)
    put(one, config)
    total = (set(), set(), set(), set(), {}, set())
    merge(total, one.recompute())
    for d in members:
        put(one, [d])
        merge(total, one.recompute())
    return cold, ch_cold, one, total


@pytest.mark.parametrize("local_every", [0, 1])
def test_cold_start_equals_members_one_at_a_time(local_every):
    """(all local: the policy selectors take the bulk path too)"""
    cold, ch_cold, one, total = cold_and_one_by_one(local_every)
    assert (len(cold.local_keys) > SelectorMatcher.BULK_ITEMS) == bool(local_every)
    assert state(cold) == state(one)
    assert addr_counts(cold) == brute_force_counts(cold)
    # only additions: what the cold start reports is what the single steps reported
    assert changes(ch_cold) == total
    # the population is the mixed one it claims to be
    counts = cold.sets.counts
    assert any(n.startswith("s6_") and c for n, c in counts.items())
    assert any(n.startswith("n4_") and c for n, c in counts.items())
    assert any(n.startswith("n6_") for n in counts)
    assert any(n.startswith("c4_") and c for n, c in counts.items())
    assert any(n.startswith("c6_") and c for n, c in counts.items())
    assert any(v > 1 for n, c in counts.items() if n.startswith("s4_") for v in c.values())
    assert len({m.own_labels.get("app") for m in cold.members.values()}) >= 4
    # members that share a label set share one match set
    ms = cold.rule_matcher.matches_of
    assert ms(("WorkloadEndpoint", "ns1", "r12")) is ms(("WorkloadEndpoint", "ns1", "r24"))


def later_steps():
    """Batches of changes applied after the cold start, each followed by a recompute."""
    return [
        # label change (one member into another group)
        [remote(4)[:3] + (wep("r4", "ns2", ["198.19.100.4"], {"app": "db"}, profiles=("kns.ns2",)),)],
        # address change, one to two addresses and IPv6
        [remote(8)[:3] + (wep("r8", "ns3", ["198.19.100.9", "198.19.100.10", "2001:db8::8:8"],
                               {"app": "web"}, profiles=("kns.ns3",),
                               ports=[("http", "TCP", 81)]),)],
        # member deleted (shared address, IPv6)
        [("WorkloadEndpoint", "r0", "ns1", None), ("WorkloadEndpoint", "r143", "ns2", None)],
        # a profile's labelsToApply change (many members relabelled at once)
        [("Profile", "kns.ns2", None, profile("kns.ns2", labels={"env": "prod"}))],
        # policy selector change, a new named port usage
        [("GlobalNetworkPolicy", "p-web", None, gnp("p-web", "app == 'api'", ingress=[
            frm("app == 'web'"), to_ports("app == 'db'", ["pg", "http"], "UDP")]))],
        # named port change on a member
        [remote(1)[:3] + (wep("r1", "ns2", ["198.19.100.1"], {"app": "db"}, profiles=("kns.ns2",),
                               ports=[("pg", "TCP", 6543)]),)],
        # network set CIDRs change, then gone
        [("GlobalNetworkSet", "g1", None, gns("g1", ["198.18.128.0/24", "2001:db8:11::/64"], {"role": "gw"}))],
        [("GlobalNetworkSet", "g1", None, None)],
        # host endpoint relabelled, local endpoint removed
        [("HostEndpoint", "h1", None, hep("h1", ["198.19.98.1", "198.19.98.11"], {"app": "cache"})),
         ("WorkloadEndpoint", "l2", "ns2", None)],
        # many members relabelled at once (> BULK_ITEMS: the bulk path again)
        # (some keep an address other members give too)
        [remote(i)[:3] + (wep(f"r{i}", remote(i)[2],
                              [f"198.18.{i // 250}.{i % 250 + 1}"] + (["198.19.250.1"] if i % 13 == 0 else []),
                              {"app": APPS[(i + 1) % 4]}, profiles=(f"kns.{remote(i)[2]}",)),)
         for i in range(20, 20 + SelectorMatcher.BULK_ITEMS + 30)],
        # a profile deleted, a policy deleted
        [("Profile", "extra", None, None), ("NetworkPolicy", "n-db", "ns1", None)],
        # and a new member in a new label group
        [("WorkloadEndpoint", "z1", "ns9", wep("z1", "ns9", ["198.19.77.1", "2001:db8:77::1"],
                                               {"app": "web", "tier": "fe"},
                                               ports=[("http", "TCP", 8081)]))],
    ]


@pytest.mark.parametrize("local_every", [0, 2])
def test_incremental_changes_after_cold_start_agree(local_every):
    cold, _, one, _ = cold_and_one_by_one(local_every)
    for docs in later_steps():
        put(cold, docs)
        put(one, docs)
        a, b = cold.recompute(), one.recompute()
        assert changes(a) == changes(b)
        assert state(cold) == state(one)
        assert addr_counts(cold) == brute_force_counts(cold)
