"""Tiers in the agent: ordering (Felix's policy sorter), the endpoint chain layout
(Felix's rules/endpoints.go: pass bit cleared per tier, end-of-tier drop unless the
tier's defaultAction is Pass), re-rendering when a tier changes, staged policy never
programmed, and explain's walk over the same groups."""
from __future__ import annotations

from typing import Any

from fakes import FakeNftRunner

from calico_net.agent.felix.explain import Cluster, Packet, explain
from calico_net.agent.felix.index import PolicyIndex
from calico_net.agent.felix.policy import MARK_CLEAR_PASS, PolicyDataplane, policy_chain, profile_chain

NODE = "node1"
EP = ("WorkloadEndpoint", "ns1", "a")


def wep(name: str = "a", ip: str = "198.19.0.1", labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"kind": "WorkloadEndpoint", "metadata": {"name": name, "namespace": "ns1",
                                                      "labels": labels or {"app": "web"}},
            "spec": {"node": NODE, "interfaceName": "cali0000000000" + name, "ipNetworks": [f"{ip}/32"],
                     "profiles": ["open"]}}


def gnp(name: str, tier: str | None = None, order: float | None = None, ingress=None,
        selector: str = "app == 'web'", kind: str = "GlobalNetworkPolicy") -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": selector, "types": ["Ingress"],
                            "ingress": ingress if ingress is not None else [{"action": "Allow"}]}
    if tier is not None:
        spec["tier"] = tier
    if order is not None:
        spec["order"] = order
    return {"kind": kind, "metadata": {"name": name}, "spec": spec}


def tier(name: str, order: float | None = None, action: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if order is not None:
        spec["order"] = order
    if action is not None:
        spec["defaultAction"] = action
    return {"kind": "Tier", "metadata": {"name": name}, "spec": spec}


def feed(target: Any, *docs: dict[str, Any]) -> None:
    for d in docs:
        target.update(d["kind"], d["metadata"]["name"], d["metadata"].get("namespace"), d)


def groups(idx: PolicyIndex, ep=EP) -> list[tuple[str, float | None, str, list[str]]]:
    return [(t, o, a, [p.key[2] for p in pols]) for t, o, a, pols in idx.tier_groups(idx.ordered_policies(ep))]


def test_tiers_in_order_then_name_policies_in_order_within_each():
    idx = PolicyIndex(NODE)
    feed(idx, wep(), tier("zeta", 100), tier("alpha", 100), tier("first", 5, "Pass"),
         gnp("z1", "zeta"), gnp("a2", "alpha", order=2), gnp("a1", "alpha", order=1),
         gnp("d0", None, order=0), gnp("f", "first"), gnp("missing", "nowhere"),
         gnp("kb", "kube-baseline"), gnp("ka", "kube-admin"))
    idx.recompute()
    assert groups(idx) == [
        ("first", 5.0, "Pass", ["f"]),
        ("alpha", 100.0, "Deny", ["a1", "a2"]),
        ("zeta", 100.0, "Deny", ["z1"]),
        ("kube-admin", 1000.0, "Pass", ["ka"]),
        ("default", 1_000_000.0, "Deny", ["d0"]),          # built in, no Tier document
        ("kube-baseline", 10_000_000.0, "Pass", ["kb"]),
        ("nowhere", None, "Deny", ["missing"]),            # no Tier: after every tier that exists
    ]


def test_a_tier_without_order_is_stored_order_1000000_and_sorts_by_name_with_default():
    idx = PolicyIndex(NODE)
    feed(idx, wep(), tier("aaa"), tier("zzz"), gnp("p", "aaa"), gnp("q", "zzz"), gnp("d"))
    idx.recompute()
    assert [g[0] for g in groups(idx)] == ["aaa", "default", "zzz"]


def _chain(dp: PolicyDataplane, direction: str = "Ingress") -> list[str]:
    prog = dp._programs[EP]
    return list(dp.rs.chains[prog.ingress if direction == "Ingress" else prog.egress].rules)


def _dp(*docs: dict[str, Any]) -> PolicyDataplane:
    dp = PolicyDataplane(NODE, nft=FakeNftRunner())
    feed(dp, {"kind": "Profile", "metadata": {"name": "open"}, "spec": {"ingress": [{"action": "Allow"}]}},
         wep(), *docs)
    dp.apply()
    return dp


def test_endpoint_chain_layout_per_tier():
    dp = _dp(tier("sec", 100), tier("soft", 200, "Pass"), gnp("s1", "sec"), gnp("s2", "sec", order=5),
             gnp("x", "soft"), gnp("d"))
    pc = {n: policy_chain(("GlobalNetworkPolicy", None, n), "Ingress") for n in ("s1", "s2", "x", "d")}
    body = _chain(dp)
    clear_pass = f"meta mark set meta mark & {MARK_CLEAR_PASS:#010x}"
    ret = "meta mark & 0x10000 == 0x10000 return"
    drop = "meta mark & 0x20000 == 0 drop"
    assert body[1:] == [
        f"jump {pc['s2']}", ret, f"meta mark & 0x20000 == 0 jump {pc['s1']}", ret, drop,   # sec
        clear_pass, f"jump {pc['x']}", ret,                                           # soft: no drop
        clear_pass, f"jump {pc['d']}", ret, drop,                                     # default
        f"jump {profile_chain('open', 'Ingress')}", ret, "drop"]


def test_a_single_default_tier_keeps_the_untiered_layout():
    dp = _dp(gnp("d"))
    body = _chain(dp)
    assert f"{MARK_CLEAR_PASS:#010x}" not in " ".join(body)
    assert body[1:4] == [f"jump {policy_chain(('GlobalNetworkPolicy', None, 'd'), 'Ingress')}",
                         "meta mark & 0x10000 == 0x10000 return", "meta mark & 0x20000 == 0 drop"]


def test_tier_changes_rerender_the_endpoints_chains():
    dp = _dp(tier("sec", 100), gnp("s", "sec"), gnp("d"))
    before = _chain(dp)
    assert before.count("meta mark & 0x20000 == 0 drop") == 2
    feed(dp, tier("sec", 100, "Pass"))
    dp.apply()
    assert _chain(dp).count("meta mark & 0x20000 == 0 drop") == 1     # sec no longer drops
    feed(dp, tier("sec", 2_000_000))                                  # after default now
    dp.apply()
    d = policy_chain(("GlobalNetworkPolicy", None, "d"), "Ingress")
    s = policy_chain(("GlobalNetworkPolicy", None, "s"), "Ingress")
    body = _chain(dp)
    assert body.index(f"jump {d}") < body.index(f"jump {s}")
    # a policy moved to another tier with the same rules
    feed(dp, gnp("s"))
    dp.apply()
    assert f"{MARK_CLEAR_PASS:#010x}" not in " ".join(_chain(dp))


def test_staged_policy_is_never_programmed():
    dp = _dp(gnp("d"))
    before = _chain(dp)
    feed(dp, gnp("st", kind="StagedGlobalNetworkPolicy", ingress=[{"action": "Deny"}]),
         {"kind": "StagedNetworkPolicy", "metadata": {"name": "sn", "namespace": "ns1"},
          "spec": {"selector": "all()", "ingress": [{"action": "Deny"}]}},
         {"kind": "StagedKubernetesNetworkPolicy", "metadata": {"name": "sk", "namespace": "ns1"},
          "spec": {"podSelector": {}}})
    dp.apply()
    assert _chain(dp) == before and dp.policy_count() == 1


def _explain(*docs: dict[str, Any], port: int = 80) -> dict[str, Any]:
    cl = Cluster([{"kind": "Profile", "metadata": {"name": "open"},
                   "spec": {"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}]}},
                  wep("a", "198.19.0.1"), wep("b", "198.19.0.2", {"app": "client"}), *docs])
    m = cl.members()
    return explain(cl, m[("WorkloadEndpoint", "ns1", "b")], m[EP], Packet("198.19.0.2", "198.19.0.1", 6, port))


def test_explain_walks_the_tiers():
    deny80 = [{"action": "Deny", "protocol": "TCP", "destination": {"ports": [80]}}, {"action": "Pass"}]
    base = [tier("sec", 100), gnp("s", "sec", ingress=deny80), gnp("d")]
    r = _explain(*base)
    assert r["verdict"] == "Deny" and "s rule 0 (tier sec)" in r["decidedBy"]
    assert [t["name"] for t in r["tiers"]] == ["sec", "default"]
    step = r["steps"][-1]
    assert [t["name"] for t in step["tiers"]] == ["sec"] and step["policies"][0]["tier"] == "sec"
    r = _explain(*base, port=81)          # Pass: the default tier decides
    assert r["verdict"] == "Allow" and [t["result"] for t in r["steps"][-1]["tiers"]] == [
        "Pass (GlobalNetworkPolicy s)", "Allow"]
    # end of tier: Deny, or on with Pass
    nomatch = [{"action": "Allow", "protocol": "UDP"}]
    r = _explain(tier("sec", 100), gnp("s", "sec", ingress=nomatch))
    assert r["verdict"] == "Deny" and "end of tier sec" in r["decidedBy"]
    r = _explain(tier("sec", 100, "Pass"), gnp("s", "sec", ingress=nomatch))
    assert r["verdict"] == "Allow" and "Profile open" in r["decidedBy"]
    assert r["steps"][-1]["tiers"][0]["result"] == "end of tier: Pass"


def test_explain_names_the_endpoint_chain_and_the_drop_it_ends_in():
    """The end of a tier and the final default deny are located in the endpoint chain
    the dataplane writes (name and line), so `explain --live` compares them exactly."""
    nomatch = [{"action": "Allow", "protocol": "UDP"}]
    docs = [tier("sec", 100), tier("soft", 200, "Pass"), gnp("s", "sec", ingress=[{"action": "Pass"}]),
            gnp("x", "soft", ingress=nomatch), gnp("d", ingress=nomatch)]
    dp = _dp(*docs)
    r = _explain(*docs)
    step = r["steps"][-1]
    assert step["chain"] == dp._programs[EP].ingress
    body = dp.rs.chains[step["chain"]].rules
    assert "end of tier default" in r["decidedBy"]
    (pos,) = step["rule"]["positions"]
    assert body[pos] == "meta mark & 0x20000 == 0 drop" and body.index(body[pos]) < pos  # the 2nd one
