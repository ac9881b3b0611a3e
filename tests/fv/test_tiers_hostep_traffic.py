"""FV: tiers in a host endpoint's forward (applyOnForward), pre-DNAT and untracked
(doNotTrack) chains, enforced by PolicyDataplane in the real kernel.

Two outside namespaces behind a host namespace (all names ``cnt9-*``):

    cnt9-a  eth0 198.18.91.2/24 ══ veth ══ cnt9-ha 198.18.91.1/24 ─┐
    cnt9-b  eth0 198.18.92.2/24 ══ veth ══ cnt9-hb 198.18.92.1/24 ─┴ cnt9-host (forwarding)

A host endpoint on ``cnt9-ha``; ``cnt9-b`` serves TCP 7070, 8080 and 9090, and every
round connects from ``cnt9-a`` to all three through the host, so each denied port has
an allowed twin on the same server (8080 is allowed in every case).
The cases are the ones where tiers change the verdict: a Pass goes on to the next
tier's policies (it does not skip every later policy), and in the forward chains a
tier whose policies match nothing drops at its end (unless its defaultAction is Pass).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from calico_net.agent.felix.policy import FelixSettings, PolicyDataplane
from netns_util import TOOL_SOURCE, host_dataplane, serve_in, sh, stop_servers

pytestmark = pytest.mark.root

PREFIX = "cnt9-"
HOST_NS, A_NS, B_NS = PREFIX + "host", PREFIX + "a", PREFIX + "b"
B_IP = "198.18.92.2"
PORTS = (7070, 8080, 9090)
PROBE_TIMEOUT = 2.0
NODE = "cnt9-node"
SETTINGS = FelixSettings(interface_prefixes=("cnt9w",))


def _cleanup() -> None:
    for ns in (A_NS, B_NS, HOST_NS):
        for pid in sh("ip", "netns", "pids", ns, check=False).split():
            sh("kill", "-9", pid, check=False)
        sh("ip", "netns", "del", ns, check=False)


@pytest.fixture(scope="module")
def topo(tmp_path_factory) -> Iterator[Path]:
    tool = tmp_path_factory.mktemp("cnt9") / "tool.py"
    tool.write_text(TOOL_SOURCE)
    server = None
    _cleanup()
    try:
        sh("ip", "netns", "add", HOST_NS)
        sh("ip", "link", "set", "lo", "up", ns=HOST_NS)
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=HOST_NS)
        for ns, third in ((A_NS, 91), (B_NS, 92)):
            hif = "cnt9-h" + ns[-1]
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "set", "lo", "up", ns=ns)
            sh("ip", "link", "add", hif, "netns", HOST_NS, "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "addr", "add", f"198.18.{third}.1/24", "dev", hif, ns=HOST_NS)
            sh("ip", "link", "set", hif, "up", ns=HOST_NS)
            sh("ip", "addr", "add", f"198.18.{third}.2/24", "dev", "eth0", ns=ns)
            sh("ip", "link", "set", "eth0", "up", ns=ns)
            sh("ip", "route", "add", "default", "via", f"198.18.{third}.1", ns=ns)
        server = serve_in(B_NS, tool, PORTS)
        yield tool
    finally:
        stop_servers([server])
        _cleanup()


@pytest.fixture
def dp(topo: Path) -> Iterator[PolicyDataplane]:
    with host_dataplane(NODE, SETTINGS, HOST_NS) as d:
        yield d


def _measure(tool: Path) -> dict[int, bool]:
    """cnt9-a → cnt9-b on every port at once; 8080 (allowed in every case here) must
    connect, or the round proves nothing."""
    out = sh(sys.executable, str(tool), "probe", str(PROBE_TIMEOUT),
             json.dumps([[str(p), B_IP, p] for p in PORTS]), ns=A_NS)
    got = {int(p): bool(ok) for p, ok in json.loads(out).items()}
    assert got[8080], f"the allowed twin failed, the round proves nothing: {got}"
    return got


def _feed(dp: PolicyDataplane, docs: list[dict[str, Any]]) -> None:
    for d in docs:
        dp.update(d["kind"], d["metadata"]["name"], d["metadata"].get("namespace"), d)
    dp.apply()


HEP = {"apiVersion": "projectcalico.org/v3", "kind": "HostEndpoint",
       "metadata": {"name": "cnt9-ha", "labels": {"edge": "a"}},
       "spec": {"node": NODE, "interfaceName": "cnt9-ha", "expectedIPs": ["198.18.91.1"]}}


def _tier(name: str, order: float, action: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"order": order}
    if action:
        spec["defaultAction"] = action
    return {"apiVersion": "projectcalico.org/v3", "kind": "Tier", "metadata": {"name": name}, "spec": spec}


def _gnp(name: str, tier: str | None, ingress: list[dict[str, Any]], **flags: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": "edge == 'a'", "types": ["Ingress"], "ingress": ingress,
                            "applyOnForward": True, **flags}
    if tier:
        spec["tier"] = tier
    return {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
            "metadata": {"name": name}, "spec": spec}


def _tcp(action: str, port: int | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"action": action, "protocol": "TCP"}
    if port is not None:
        rule["destination"] = {"ports": [port]}
    return rule


def test_forward_chain_end_of_tier_then_pass(topo, dp):
    # sec: 8080 passes to the default tier, 9090 is denied, 7070 matches no rule of
    # the tier: its end drops it (the default tier's Allow is never reached)
    docs = [HEP, _tier("sec", 10),
            _gnp("sec.fwd", "sec", [_tcp("Pass", 8080), _tcp("Deny", 9090)]),
            _gnp("fwd-all", None, [_tcp("Allow")])]
    _feed(dp, docs)
    assert _measure(topo) == {7070: False, 8080: True, 9090: False}
    # the tier's defaultAction Pass: 7070 goes on to the default tier, which allows it
    _feed(dp, [_tier("sec", 10, "Pass")])
    assert _measure(topo) == {7070: True, 8080: True, 9090: False}


@pytest.mark.parametrize("flag", ["preDNAT", "doNotTrack"])
def test_pre_dnat_and_untracked_pass_goes_on_to_the_next_tier(topo, dp, flag):
    # sec passes 9090 on; the default tier denies it. 7070 and 8080 match no rule
    # anywhere: no end-of-tier drop here, the normal (forward) chains decide (none: allowed)
    docs = [HEP, _tier("sec", 10),
            _gnp("sec.p", "sec", [_tcp("Pass", 9090)], **{flag: True}),
            _gnp("deny-9090", None, [_tcp("Deny", 9090)], **{flag: True})]
    _feed(dp, docs)
    assert _measure(topo) == {7070: True, 8080: True, 9090: False}
    if flag == "preDNAT":
        # a sec Allow of 9090 instead decides before the default tier's Deny
        _feed(dp, [_gnp("sec.p", "sec", [_tcp("Allow", 9090)], preDNAT=True)])
        assert _measure(topo) == {7070: True, 8080: True, 9090: True}
