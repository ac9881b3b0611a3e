"""FelixConfiguration nftablesFilterDenyAction: Drop (the default) or Reject, what a
Deny rule and the endpoint chains' end-of-tier and no-profile drops render to (Felix's
nftables RejectAction: a plain ``reject``); a change re-renders every chain that
holds the verdict; the agent's settings factory passes the value on."""
from __future__ import annotations

from typing import Any

import pytest
from fakes import FakeNftRunner

from calico_net.agent.felix.chains import endpoint_chain_body
from calico_net.agent.felix.policy import FelixSettings, PolicyDataplane, policy_chain

NODE = "node1"
EP = ("WorkloadEndpoint", "ns1", "a")
POL = ("GlobalNetworkPolicy", None, "sec.deny")


def docs() -> list[dict[str, Any]]:
    return [
        {"kind": "WorkloadEndpoint", "metadata": {"name": "a", "namespace": "ns1", "labels": {"app": "web"}},
         "spec": {"node": NODE, "interfaceName": "cali00000000a", "ipNetworks": ["198.19.0.1/32"],
                  "profiles": ["open"]}},
        {"kind": "Profile", "metadata": {"name": "open"}, "spec": {"ingress": [{"action": "Allow"}]}},
        {"kind": "Tier", "metadata": {"name": "sec"}, "spec": {"order": 10}},
        {"kind": "GlobalNetworkPolicy", "metadata": {"name": "sec.deny"},
         "spec": {"tier": "sec", "selector": "app == 'web'", "types": ["Ingress"],
                  "ingress": [{"action": "Deny", "protocol": "TCP", "destination": {"ports": [81]}}]}},
    ]


def _dp(action: str | None) -> PolicyDataplane:
    st = FelixSettings() if action is None else FelixSettings(filter_deny_action=action)
    dp = PolicyDataplane(NODE, settings=st, nft=FakeNftRunner())
    for d in docs():
        dp.update(d["kind"], d["metadata"]["name"], d["metadata"].get("namespace"), d)
    dp.apply()
    return dp


def _verdicts(dp: PolicyDataplane) -> tuple[list[str], list[str]]:
    pol = list(dp.rs.chains[policy_chain(POL, "Ingress")].rules)
    ep = list(dp.rs.chains[dp._programs[EP].ingress].rules)
    return pol, ep


@pytest.mark.parametrize("action,verdict", [(None, "drop"), ("Drop", "drop"), ("Reject", "reject"),
                                            ("reject", "reject")])
def test_deny_rule_end_of_tier_and_no_profile(action: str | None, verdict: str) -> None:
    pol, ep = _verdicts(_dp(action))
    assert len(pol) == 1 and pol[0].endswith(f"dport 81 {verdict}"), pol
    assert ep[-1] == verdict                                   # no profile allowed
    assert f"meta mark & 0x20000 == 0 {verdict}" in ep         # end of tier "sec"
    other = {"drop": "reject", "reject": "drop"}[verdict]
    assert not any(r.endswith(other) for r in pol + ep)


def test_a_change_rerenders_policy_and_endpoint_chains() -> None:
    dp = _dp("Drop")
    dp.set_settings(FelixSettings(filter_deny_action="Reject"))
    dp.apply()
    pol, ep = _verdicts(dp)
    assert pol[0].endswith("reject") and ep[-1] == "reject"
    assert not any(r.endswith("drop") for r in pol + ep)
    # the endpoint chain is the one chains.endpoint_chain_body lays out for Reject
    name, body = endpoint_chain_body("Ingress", dp.tier_groups(dp.index.ordered_policies(EP), "Ingress"),
                                     ("open",), "reject")
    assert dp._programs[EP].ingress == name and ep == body
    dp.set_settings(FelixSettings(filter_deny_action="Drop"))
    dp.apply()
    pol, ep = _verdicts(dp)
    assert pol[0].endswith("drop") and ep[-1] == "drop"


@pytest.mark.parametrize("bad", ["Accept", "", "DROP it"])
def test_settings_refuse_another_action(bad: str) -> None:
    with pytest.raises(ValueError, match="nftablesFilterDenyAction"):
        FelixSettings(filter_deny_action=bad)


def test_daemon_settings_pass_the_action() -> None:
    from calico_net.agent.config import Config
    from calico_net.agent.daemon import felix_settings

    config = Config("n1", env={"FELIX_NFTABLESFILTERDENYACTION": "Reject"}, config_file="")
    assert felix_settings(config, FelixSettings).filter_deny_action == "Reject"
