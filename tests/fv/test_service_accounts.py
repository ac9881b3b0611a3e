"""Whole-agent FV of service-account policy: real calico-node in a host netns, real
etcd, real TCP traffic between the workload namespaces of test_agent_policy.

Workloads carry their service account as Calico writes it: `serviceAccountName` on
the endpoint and the `ksa.<namespace>.<name>` profile, whose labelsToApply are the
account's labels `pcsa.`-prefixed. w1 runs as "builder" (team ci), w2 as "runner"
(team ops), w3 and w4 have none. Every probe runs in one round with the host
reaching the same server, so a denied probe only counts while that server is up.
"""
from __future__ import annotations

import pytest

import test_agent_policy as ap
from test_agent_policy import _bind_helpers  # noqa: F401  (autouse: binds ap's helpers)

pytestmark = pytest.mark.root

NS = "default"
ACCOUNTS = {"w1": ("builder", {"team": "ci"}), "w2": ("runner", {"team": "ops"})}
ROLES = {"w1": {"role": "client"}, "w2": {"role": "client"}, "w3": {"role": "client"},
         "w4": {"role": "server"}}


def sa_profile(name: str, labels: dict[str, str]) -> dict:
    """The profile Calico derives from a service account."""
    return {"apiVersion": "projectcalico.org/v3", "kind": "Profile",
            "metadata": {"name": f"ksa.{NS}.{name}"},
            "spec": {"labelsToApply": {**{f"pcsa.{k}": v for k, v in labels.items()},
                                       "pcsa.projectcalico.org/name": name}}}


def put_workloads(env) -> None:
    env.ds.apply_all([sa_profile(sa, labels) for sa, labels in ACCOUNTS.values()])
    docs = []
    for w in env.workloads:
        sa = ACCOUNTS.get(w.name, (None, None))[0]
        d = ap.wep(w, ROLES[w.name], [f"ksa.{NS}.{sa}"] if sa else None, ns=NS)
        if sa:
            d["spec"]["serviceAccountName"] = sa
        docs.append(d)
    env.ds.apply_all(docs)
    ap.wait_for(lambda: all(w.ip in ap.our_routes() for w in env.workloads), ap.CONVERGE,
                "routes for every workload", env.agent)


def outcome(env, probes: list[tuple[str, str, int]]) -> dict | None:
    """{(src, dst, port): connected} for TCP probes, all in one round with the host
    connecting to every (dst, port) probed; None when a host control failed (the
    server is not up or not routed, so a deny would prove nothing)."""
    by_name = {w.name: w for w in env.workloads}
    rounds: dict[str, list] = {}
    for src, dst, port in probes:
        rounds.setdefault(by_name[src].ns, []).append((f"{src}>{dst}:{port}", by_name[dst].ip, port))
    controls = sorted({(dst, port) for _, dst, port in probes})
    *results, control = ap.probe_round(list(rounds.items()) + [
        (ap.L.HOST_NS, [(f"{d}:{p}", by_name[d].ip, p) for d, p in controls])])
    if not all(control.values()):
        return None
    got = {}
    for res in results:
        for label, ok in res.items():
            src, rest = label.split(">")
            dst, port = rest.split(":")
            got[(src, dst, int(port))] = ok
    return got


def settle(env, expected: dict) -> dict | None:
    """Poll `outcome` until it equals `expected`; the last result for the assertion."""
    last = None

    def check():
        nonlocal last
        last = outcome(env, list(expected))
        return last == expected

    try:
        ap.wait_for(check, ap.CONVERGE, "service-account connectivity", interval=0.1)
    except AssertionError:
        pass
    return last


def open_clients(order: int = 200) -> dict:
    """Clients (w1..w3) accept and send anything, so only the server's policy decides."""
    return ap.gnp("clients-open", "role == 'client'", order=order, types=["Ingress", "Egress"],
                  ingress=[{"action": "Allow"}], egress=[{"action": "Allow"}])


def server_policy(match: dict) -> dict:
    """The server (w4) accepts TCP from, and connects over TCP to, the endpoints whose
    service account matches `match`."""
    return ap.gnp("server-by-sa", "role == 'server'", types=["Ingress", "Egress"],
                  ingress=[{"action": "Allow", "protocol": "TCP", "source": {"serviceAccounts": match}}],
                  egress=[{"action": "Allow", "protocol": "TCP", "destination": {"serviceAccounts": match}}])


def both_ways(allowed: set[str]) -> dict:
    """Expected: each client <-> w4 on 8080, allowed exactly for the clients in `allowed`."""
    exp = {}
    for c in ("w1", "w2", "w3"):
        exp[(c, "w4", 8080)] = c in allowed
        exp[("w4", c, 8080)] = c in allowed
    return exp


def test_rule_service_account_names(clean):
    put_workloads(clean)
    clean.ds.apply_all([open_clients(), server_policy({"names": ["builder"]})])
    expected = both_ways({"w1"})
    assert settle(clean, expected) == expected


def test_rule_service_account_selector(clean):
    put_workloads(clean)
    clean.ds.apply_all([open_clients(), server_policy({"selector": "team == 'ops'"})])
    expected = both_ways({"w2"})
    assert settle(clean, expected) == expected
    # the account's labels change (its profile): the endpoints follow
    clean.ds.apply(sa_profile("builder", {"team": "ops"}))
    expected = both_ways({"w1", "w2"})
    assert settle(clean, expected) == expected


def test_service_account_selector_narrows_the_policy(clean):
    """A policy for the endpoints whose account is in team ops (w2) denies TCP 8080 in
    and out; everything else is open. w2's 9090 stays reachable (same server), and
    the endpoints with another account or none are untouched on 8080."""
    put_workloads(clean)
    open_all = ap.gnp("all-open", "all()", order=200, types=["Ingress", "Egress"],
                      ingress=[{"action": "Allow"}], egress=[{"action": "Allow"}])
    deny_ops = ap.gnp("ops-no-8080", "all()", order=100, types=["Ingress", "Egress"],
                      ingress=[{"action": "Deny", "protocol": "TCP", "destination": {"ports": [8080]}}],
                      egress=[{"action": "Deny", "protocol": "TCP", "destination": {"ports": [8080]}}])
    deny_ops["spec"]["serviceAccountSelector"] = "team == 'ops'"
    clean.ds.apply_all([open_all, deny_ops])
    expected = {}
    for src, dst in (("w1", "w2"), ("w3", "w2"), ("w2", "w1"), ("w2", "w4")):
        expected[(src, dst, 8080)] = False
        expected[(src, dst, 9090)] = True
    for src, dst in (("w3", "w1"), ("w1", "w4"), ("w4", "w3"), ("w4", "w1")):
        expected[(src, dst, 8080)] = True
    assert settle(clean, expected) == expected
    # "all()": every endpoint with a service account (w1 and w2), none without
    deny_ops["spec"]["serviceAccountSelector"] = "all()"
    clean.ds.apply(deny_ops)
    expected = {("w3", "w1", 8080): False, ("w3", "w1", 9090): True,
                ("w3", "w2", 8080): False, ("w4", "w3", 8080): True,
                ("w3", "w4", 8080): True}
    assert settle(clean, expected) == expected
