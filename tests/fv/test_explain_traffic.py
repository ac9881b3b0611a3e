"""FV: `calicoctl policy explain` agrees with real traffic through the real agent.

A stars-style scenario on the agent FV harness (tests/fv/conftest.py: real etcd,
real calico-node in a host netns, four workloads wired as the CNI plugin wires
them): three namespaces, namespace profiles, a GlobalNetworkPolicy with a Log, a
Pass and a Deny rule, namespaced NetworkPolicies (one on a named port through a
namespaceSelector, one whose rule selector is scoped to its namespace) and an
egress GlobalNetworkPolicy. For every ordered pair of workloads and each probed
port, explain's verdict (through the calicoctl command code, on the datastore)
must equal what a real TCP connect did; a denied connect only counts when, in the
same round, the host reached the same server on the same port.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import types

import pytest

pytestmark = pytest.mark.root

PROBE_TIMEOUT = 2.0
CONVERGE = 60
PORTS = (8080, 9090)

# role and namespace per harness workload (w1..w4), and its namespace profile
LAYOUT = {
    "w1": ("stars", {"role": "frontend"}),
    "w2": ("stars", {"role": "backend"}),
    "w3": ("client", {"role": "client"}),
    # a client in another namespace: "role == client" rules of stars must not pick it
    "w4": ("other", {"role": "client"}),
}


def _profile(name, ingress, egress):
    return {"apiVersion": "projectcalico.org/v3", "kind": "Profile", "metadata": {"name": name},
            "spec": {"ingress": ingress, "egress": egress}}


def _policy(kind, name, selector, order, types_, ingress=None, egress=None, namespace=None):
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    spec = {"selector": selector, "order": order, "types": types_}
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    return {"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": meta, "spec": spec}


ALLOW = [{"action": "Allow"}]
RESOURCES = [
    _profile("kns.stars", ALLOW, ALLOW),
    _profile("kns.client", ALLOW, ALLOW),
    _profile("kns.other", [], ALLOW),                 # nothing comes in unless a policy says so
    _policy("GlobalNetworkPolicy", "stars-gate", "projectcalico.org/namespace == 'stars'", 10, ["Ingress"],
            ingress=[{"action": "Log", "protocol": "TCP"},
                     {"action": "Pass", "source": {"notSelector": "role == 'client'"}},
                     {"action": "Deny", "protocol": "TCP", "destination": {"ports": [9090]}}]),
    _policy("GlobalNetworkPolicy", "other-egress", "projectcalico.org/namespace == 'other'", 5, ["Egress"],
            egress=[{"action": "Deny", "protocol": "TCP", "destination": {"ports": [9090]}},
                    {"action": "Allow"}]),
    _policy("NetworkPolicy", "backend", "role == 'backend'", 20, ["Ingress"], namespace="stars",
            ingress=[{"action": "Allow", "protocol": "TCP",
                      "source": {"namespaceSelector": "projectcalico.org/name == 'client'"},
                      "destination": {"ports": ["http"]}}]),
    _policy("NetworkPolicy", "frontend", "role == 'frontend'", 20, ["Ingress"], namespace="stars",
            ingress=[{"action": "Allow", "protocol": "TCP", "source": {"selector": "role == 'client'"}}]),
]


def _endpoints(L, workloads):
    docs = []
    for w in workloads:
        ns, labels = LAYOUT[w.name]
        d = L.wep(w, labels, [f"kns.{ns}"], ns=ns)
        if w.name == "w2":
            d["spec"]["ports"] = [{"name": "http", "protocol": "TCP", "port": 8080}]
        docs.append(d)
    return docs


def explain_cli(env, *argv):
    """`calicoctl policy explain ... -o json` through the command's own code, on the
    FV datastore (real etcd)."""
    from calico_net.cli.main import build_parser

    args = build_parser().parse_args(["policy", "explain", *argv, "-o", "json"])
    ctx = types.SimpleNamespace(datastore=env.ds, out=io.StringIO(), err=io.StringIO())
    assert args.func(args, ctx) == 0
    return json.loads(ctx.out.getvalue())


def probe_round(L, rounds):
    procs = [subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, str(L.FVTOOL), "probe",
                               str(PROBE_TIMEOUT), json.dumps([list(t) for t in targets])],
                              stdout=subprocess.PIPE, text=True) for ns, targets in rounds]
    out = []
    for p in procs:
        text, _ = p.communicate(timeout=60)
        out.append(json.loads(text))
    return out


def measured(L, workloads):
    """{(src, dst, port): connected} for every ordered pair and port, all at once; None
    if in the same round the host failed to reach any of the servers (then a failed
    connect would prove nothing)."""
    rounds = [(s.ns, [(f"{d.name}/{p}", d.ip, p) for d in workloads if d is not s for p in PORTS])
              for s in workloads]
    rounds.append((L.HOST_NS, [(f"{d.name}/{p}", d.ip, p) for d in workloads for p in PORTS]))
    *results, control = probe_round(L, rounds)
    if not all(control.values()):
        return None
    got = {}
    for s, res in zip(workloads, results):
        for label, ok in res.items():
            dst, port = label.split("/")
            got[(s.name, dst, int(port))] = ok
    return got


def _setup(L, env):
    wl = env.workloads
    env.ds.apply_all(RESOURCES)
    env.ds.apply_all(_endpoints(L, wl))
    L.wait_for(lambda: all(w.ip in L.our_routes() for w in wl), CONVERGE, "routes for every workload",
               env.agent)


def test_explain_matches_real_traffic(clean, fvlib):
    L, env = fvlib, clean
    wl = env.workloads
    _setup(L, env)

    predicted, reasons = {}, {}
    for s in wl:
        for d in wl:
            if d is s:
                continue
            for p in PORTS:
                r = explain_cli(env, "--from", s.wep_name, "--namespace", LAYOUT[s.name][0], "--to", d.ip,
                                "--protocol", "tcp", "--port", str(p))
                assert r["source"]["name"] == s.wep_name and r["destination"]["name"] == d.wep_name
                predicted[(s.name, d.name, p)] = r["verdict"] == "Allow"
                reasons[(s.name, d.name, p)] = r["decidedBy"]
    # the scenario exercises every path: both verdicts, a Pass to a profile, a
    # namespaced named-port allow, an egress deny, end of tier, a profile without rules
    why = set(reasons.values())
    assert any("Profile kns.stars rule 0" in x for x in why)          # after Pass
    assert any("NetworkPolicy stars/backend rule 0" in x for x in why)
    assert any(x.startswith("egress of") and "other-egress rule 0" in x for x in why)
    assert any("end of tier default" in x for x in why)
    assert any("GlobalNetworkPolicy stars-gate rule 2" in x for x in why)
    assert any("default deny" in x and "kns" not in x for x in why)
    assert 0 < sum(predicted.values()) < len(predicted)

    last = None

    def agrees():
        nonlocal last
        last = measured(L, wl)
        return last == predicted

    try:
        L.wait_for(agrees, CONVERGE, "real traffic to equal explain's verdicts", interval=0.2)
    except AssertionError:
        diff = {k: (predicted[k], last.get(k)) for k in predicted if last and last.get(k) != predicted[k]}
        pytest.fail(f"explain (predicted, measured) differ: {diff}; reasons "
                    f"{ {k: reasons[k] for k in diff} }; control ok: {last is not None}")

    # a second, fresh round must agree too (not a transient state of the agent)
    assert measured(L, wl) == predicted

    # the installed command line gives the same answer (text form)
    env_vars = {**os.environ, "ETCD_ENDPOINTS": env.etcd.endpoints}
    for k in ("ETCD_CA_CERT_FILE", "ETCD_CERT_FILE", "ETCD_KEY_FILE"):
        env_vars.pop(k, None)
    w3, w1 = wl[2], wl[0]
    out = subprocess.run([str(L.VENV_BIN / "calicoctl"), "policy", "explain", "--from", w3.ip, "--to", w1.ip,
                          "--port", "9090"], capture_output=True, text=True, env=env_vars, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Verdict:     Deny\n")
    assert "rule 2 MATCHED" in out.stdout and "tcp dport 9090 drop" in out.stdout


# (source, destination, port): one flow per kind of decision
TRACED = [("w1", "w2", 9090),     # Pass, then the profile allows
          ("w3", "w1", 9090),     # the GlobalNetworkPolicy's Deny rule (after its Log rule)
          ("w3", "w2", 8080),     # the namespaced policy's named-port Allow
          ("w4", "w1", 9090),     # the egress policy's Deny
          ("w3", "w1", 8080),     # end of tier: policies applied, none allowed
          ("w1", "w4", 8080)]     # a profile without ingress rules: default deny


def test_explain_names_the_rule_the_kernel_used(clean, fvlib):
    """For one flow per kind of decision, nftables' trace of a real connect through
    the agent's table ends in the chain and at the rule position explain names."""
    from calico_net.agent.felix.explain import Packet
    from calico_net.agent.felix.explain_live import compare, trace_flow

    L, env = fvlib, clean
    _setup(L, env)
    by = {w.name: w for w in env.workloads}
    prefix = ["ip", "netns", "exec", L.HOST_NS]
    for s, d, port in TRACED:
        src, dst = by[s], by[d]
        r = explain_cli(env, "--from", src.ip, "--to", dst.ip, "--port", str(port))
        want = r["verdict"] == "Allow"
        # the agent has programmed this flow's verdict (and the server is up) first
        L.wait_for(lambda: probe_round(L, [(src.ns, [("x", dst.ip, port)]),
                                           (L.HOST_NS, [("x", dst.ip, port)])]) == [{"x": want}, {"x": True}],
                   CONVERGE, f"{s} -> {d}:{port} {r['verdict']}")
        hits = trace_flow(Packet(src.ip, dst.ip, 6, port),
                          trigger=lambda: probe_round(L, [(src.ns, [("x", dst.ip, port)])], ),
                          wait=10, prefix=prefix)
        got = compare(r, hits, prefix)
        assert got["traced"], f"{s} -> {d}:{port}: no trace"
        assert got["agrees"], f"{s} -> {d}:{port}: explain {r['decidedBy']} at {got.get('explain')}, " \
                              f"kernel {got['kernel']}"

    # the command line's --live on the host: a connect sent while it traces
    w3, w1 = by["w3"], by["w1"]
    env_vars = {**os.environ, "ETCD_ENDPOINTS": env.etcd.endpoints}
    for k in ("ETCD_CA_CERT_FILE", "ETCD_CERT_FILE", "ETCD_KEY_FILE"):
        env_vars.pop(k, None)
    cmd = subprocess.Popen([*prefix, str(L.VENV_BIN / "calicoctl"), "policy", "explain", "--from", w3.ip, "--to",
                            w1.ip, "--port", "9090", "--live", "--live-wait", "4", "-o", "json"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_vars)
    try:
        L.wait_for(lambda: cmd.poll() is not None or probe_round(L, [(w3.ns, [("x", w1.ip, 9090)])], ) is None,
                   30, "calicoctl --live to finish", interval=0.2)
        out, err = cmd.communicate(timeout=30)
    finally:
        if cmd.poll() is None:
            cmd.kill()
            cmd.wait()
    assert cmd.returncode == 0, err
    body = json.loads(out)
    assert body["verdict"] == "Deny" and body["live"]["traced"] and body["live"]["agrees"], body["live"]
