"""Tiers in a host endpoint's forward (applyOnForward), pre-DNAT and untracked
(doNotTrack) chains, laid out as Felix's chainTypeForward / chainTypePreDNAT /
chainTypeUntracked (felix/rules/endpoints.go): the tiers in order with the pass bit
cleared per tier, an end-of-tier drop only in the forward chains (unless the tier's
defaultAction is Pass), ``notrack`` on an untracked Allow; and re-rendered when a
tier changes."""
from __future__ import annotations

from typing import Any

import pytest
from fakes import FakeNftRunner

from calico_net.agent.felix.chains import MARK_CLEAR_PASS, hep_chain_body, policy_chain
from calico_net.agent.felix.policy import FelixSettings, PolicyDataplane

NODE = "node1"
HEP = ("HostEndpoint", None, "h1")
CLEAR = "meta mark set meta mark & 0xfffcffff"
CLEAR_PASS = f"meta mark set meta mark & {MARK_CLEAR_PASS:#010x}"
ALLOWED = "meta mark & 0x10000 == 0x10000"


def hep() -> dict[str, Any]:
    return {"kind": "HostEndpoint", "metadata": {"name": "h1", "labels": {"h": "1"}},
            "spec": {"node": NODE, "interfaceName": "eth0", "expectedIPs": ["198.18.0.1"]}}


def gnp(name: str, tier: str | None = None, order: float | None = None, **flags: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": "has(h)", "types": ["Ingress"], "ingress": [{"action": "Allow"}],
                            **flags}
    if tier is not None:
        spec["tier"] = tier
    if order is not None:
        spec["order"] = order
    return {"kind": "GlobalNetworkPolicy", "metadata": {"name": name}, "spec": spec}


def tier(name: str, order: float, action: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"order": order}
    if action:
        spec["defaultAction"] = action
    return {"kind": "Tier", "metadata": {"name": name}, "spec": spec}


def _dp(*docs: dict[str, Any], settings: FelixSettings | None = None) -> PolicyDataplane:
    dp = PolicyDataplane(NODE, settings=settings, nft=FakeNftRunner())
    for d in (hep(), *docs):
        dp.update(d["kind"], d["metadata"]["name"], None, d)
    dp.apply()
    return dp


def pc(name: str) -> str:
    return policy_chain(("GlobalNetworkPolicy", None, name), "Ingress")


FLAGS = {"fwd": {"applyOnForward": True}, "pre": {"preDNAT": True, "applyOnForward": True},
         "raw": {"doNotTrack": True, "applyOnForward": True}}
FIELD = {"fwd": "fwd_in", "pre": "pre", "raw": "raw_in"}


@pytest.mark.parametrize("kind", ["fwd", "pre", "raw"])
def test_tiers_in_tier_order_with_felix_end_of_tier(kind: str) -> None:
    f = FLAGS[kind]
    # tier "sec" (order 10) before the default tier; "pass" (order 20, defaultAction Pass)
    dp = _dp(tier("sec", 10), tier("pass", 20, "Pass"),
             gnp("d1", None, 1, **f), gnp("sec.s2", "sec", 2, **f), gnp("sec.s1", "sec", 1, **f),
             gnp("pass.p", "pass", **f))
    chain = getattr(dp.hp.extra[HEP], FIELD[kind])
    body = list(dp.rs.chains[chain].rules)
    untrack = [f"{ALLOWED} notrack"] if kind == "raw" else []
    deny = ["meta mark & 0x20000 == 0 drop"] if kind == "fwd" else []

    def first(p: str) -> list[str]:
        return [f"jump {pc(p)}", *untrack, f"{ALLOWED} return"]

    def nxt(p: str) -> list[str]:
        return [f"meta mark & 0x20000 == 0 jump {pc(p)}", *untrack, f"{ALLOWED} return"]

    assert body == [CLEAR, *first("sec.s1"), *nxt("sec.s2"), *deny,
                    CLEAR_PASS, *first("pass.p"),                 # defaultAction Pass: no end of tier
                    CLEAR_PASS, *first("d1"), *deny]
    # the same layout as chains.hep_chain_body, nothing else (no profiles, no final drop)
    assert (chain, body) == hep_chain_body(kind, "Ingress", dp.tier_groups(
        dp.index.ordered_policies(HEP), "Ingress"))
    assert not any("cali-pr" in r for r in body)
    # the normal chains keep none of the pre-DNAT / untracked policies
    normal = dp.rs.chains[dp._programs[HEP].ingress].rules
    assert (pc("sec.s1") in " ".join(normal)) == (kind == "fwd")


def test_a_tier_change_rerenders_the_host_endpoint_chains() -> None:
    f = FLAGS["pre"]
    dp = _dp(tier("sec", 10), gnp("d1", None, 1, **f), gnp("sec.s1", "sec", 1, **f))
    before = list(dp.rs.chains[dp.hp.extra[HEP].pre].rules)
    assert before.index(f"jump {pc('sec.s1')}") < before.index(f"jump {pc('d1')}")
    # the tier now comes after the default tier (order 1000000)
    dp.update("Tier", "sec", None, tier("sec", 2_000_000))
    dp.apply()
    after = list(dp.rs.chains[dp.hp.extra[HEP].pre].rules)
    assert after.index(f"jump {pc('d1')}") < after.index(f"jump {pc('sec.s1')}")
    assert dp.hp.extra[HEP].pre in dp.rs.sets["cali-hep-pre"].elements['"eth0"']


def test_forward_end_of_tier_follows_the_deny_action() -> None:
    dp = _dp(tier("sec", 10), gnp("sec.s1", "sec", **FLAGS["fwd"]),
             settings=FelixSettings(filter_deny_action="Reject"))
    body = dp.rs.chains[dp.hp.extra[HEP].fwd_in].rules
    assert body[-1] == "meta mark & 0x20000 == 0 reject"
    # pre-DNAT / untracked chains have no end of tier whatever the action
    dp = _dp(tier("sec", 10), gnp("sec.s1", "sec", **FLAGS["pre"]),
             settings=FelixSettings(filter_deny_action="Reject"))
    assert not any(r.endswith(("reject", "drop")) for r in dp.rs.chains[dp.hp.extra[HEP].pre].rules)


def test_hep_chain_body_refuses_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match="not fwd, pre or raw"):
        hep_chain_body("normal", "Ingress", ())
