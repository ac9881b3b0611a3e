"""Whole-agent FV: real calico-node in a host netns, real etcd, real traffic.

Four workloads (w1..w4) wired as the CNI plugin wires them; policy written to etcd;
connectivity checked with TCP connects and ICMP echoes between the namespaces.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.root

# The FV helpers (tests/fv/conftest.py), bound by the autouse fixture below.
matrix = our_routes = probe = wait_for = wep = None  # type: ignore[assignment]
Env = object


@pytest.fixture(autouse=True, scope="module")
def _bind_helpers(fvlib):
    global matrix, our_routes, probe, wait_for, wep
    matrix, our_routes, probe, wait_for, wep = fvlib.matrix, fvlib.our_routes, fvlib.probe, fvlib.wait_for, fvlib.wep


def gnp(name, selector, *, ingress=None, egress=None, order=100, types=None):
    spec = {"order": order, "selector": selector}
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    if types:
        spec["types"] = types
    return {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
            "metadata": {"name": name}, "spec": spec}


def put_endpoints(env: Env, labels: dict[str, dict[str, str]], profiles: dict[str, list[str]] | None = None):
    env.ds.apply_all([wep(w, labels.get(w.name, {}), (profiles or {}).get(w.name)) for w in env.workloads])
    wait_for(lambda: all(w.ip in our_routes() for w in env.workloads), 5, "routes for every workload", env.agent)


def settle(env: Env, expected: set, timeout: float = 5.0) -> set:
    """Poll the matrix until it equals `expected` (or time out and return the last)."""
    last = set()

    def check():
        nonlocal last
        last = matrix(env.workloads)
        return last == expected

    try:
        wait_for(check, timeout, "connectivity matrix", interval=0.1)
    except AssertionError:
        pass
    return last


ROLES = {"w1": {"role": "web"}, "w2": {"role": "web"}, "w3": {"role": "db"}, "w4": {"role": "other"}}

EGRESS_ALL = gnp("egress-all", "all()", egress=[{"action": "Allow"}], types=["Egress"])
DB_FROM_WEB = gnp("db-from-web", "role == 'db'", types=["Ingress"], ingress=[
    {"action": "Allow", "protocol": "TCP", "source": {"selector": "role == 'web'"}, "destination": {"ports": [8080]}},
    {"action": "Allow", "protocol": "ICMP", "source": {"selector": "role == 'web'"}},
])


def db_from_web_expected(web=("w1", "w2")) -> set:
    return {(w, "w3", p) for w in web for p in ("tcp", "icmp")}


def test_no_policy_no_profile_is_denied(clean: Env):
    put_endpoints(clean, ROLES)
    assert settle(clean, set()) == set()


def test_policies_allow_exactly_the_allowed_pairs(clean: Env):
    put_endpoints(clean, ROLES)
    clean.ds.apply_all([EGRESS_ALL, DB_FROM_WEB])
    assert settle(clean, db_from_web_expected()) == db_from_web_expected()
    w1, w3 = clean.workloads[0], clean.workloads[2]
    assert probe(w1, [("other-port", w3.ip, 9090)]) == {"other-port": False}


def test_profile_allows_when_no_policy_applies(clean: Env):
    prof = {"apiVersion": "projectcalico.org/v3", "kind": "Profile", "metadata": {"name": "open"},
            "spec": {"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}]}}
    clean.ds.apply(prof)
    put_endpoints(clean, ROLES, {"w1": ["open"], "w4": ["open"]})
    expected = {("w1", "w4", "tcp"), ("w1", "w4", "icmp"), ("w4", "w1", "tcp"), ("w4", "w1", "icmp")}
    assert settle(clean, expected) == expected


def test_label_change_moves_endpoint_within_a_second(clean: Env):
    put_endpoints(clean, ROLES)
    clean.ds.apply_all([EGRESS_ALL, DB_FROM_WEB])
    assert settle(clean, db_from_web_expected()) == db_from_web_expected()
    w3, w4 = clean.workloads[2], clean.workloads[3]
    clean.ds.apply(wep(w4, {"role": "web"}))
    wait_for(lambda: probe(w4, [("db", w3.ip, 8080)], timeout=0.2)["db"], 1.0, "w4 -> w3 allowed after relabel")
    clean.ds.apply(wep(w4, {"role": "other"}))
    wait_for(lambda: not probe(w4, [("db", w3.ip, 8080)], timeout=0.2)["db"], 1.0, "w4 -> w3 denied again")


def test_deleting_a_policy_reverts(clean: Env):
    put_endpoints(clean, ROLES)
    clean.ds.apply_all([EGRESS_ALL, DB_FROM_WEB])
    assert settle(clean, db_from_web_expected()) == db_from_web_expected()
    clean.ds.delete("GlobalNetworkPolicy", "db-from-web")
    w1, w3 = clean.workloads[0], clean.workloads[2]
    wait_for(lambda: not probe(w1, [("db", w3.ip, 8080)], timeout=0.2)["db"], 1.0, "w1 -> w3 denied after delete")
    assert settle(clean, set()) == set()


def test_host_endpoint_deny_all_keeps_failsafe_ssh_open(clean, fvlib):
    """A HostEndpoint on the host's eth0 with a deny-everything policy: the failsafe
    inbound port 22 still answers, any other port does not."""
    L = fvlib
    server = subprocess.Popen(["ip", "netns", "exec", L.HOST_NS, sys.executable, str(L.FVTOOL), "serve", "22", "8081"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    host_ip = f"{L.NET}.2"

    def reach() -> dict[str, bool]:
        arg = json.dumps([["ssh", host_ip, 22], ["other", host_ip, 8081]])
        return json.loads(L.sh(sys.executable, str(L.FVTOOL), "probe", "0.5", arg))

    try:
        wait_for(lambda: reach() == {"ssh": True, "other": True}, 5, "host ports open without a host endpoint")
        clean.ds.apply_all([
            {"apiVersion": "projectcalico.org/v3", "kind": "HostEndpoint",
             "metadata": {"name": f"{L.NODE}-eth0", "labels": {"hep": "eth0"}},
             "spec": {"node": L.NODE, "interfaceName": "eth0", "expectedIPs": [host_ip]}},
            gnp("deny-host", "hep == 'eth0'", types=["Ingress"], ingress=[{"action": "Deny"}]),
        ])
        wait_for(lambda: reach() == {"ssh": True, "other": False}, 5, "only the failsafe port open")
        clean.ds.delete("HostEndpoint", f"{L.NODE}-eth0")
        wait_for(lambda: reach() == {"ssh": True, "other": True}, 5, "host ports open again")
    finally:
        server.kill()
        server.wait()
