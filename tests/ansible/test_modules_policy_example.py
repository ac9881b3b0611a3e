"""playbooks/policy_example.yml against the real agent, checked with real traffic.

Uses the whole-agent FV environment of tests/fv/conftest.py (loaded by path; its
fixtures `fv` and `clean` are re-exported here): a host namespace running calico-node
for node `fv-node`, etcd, and four workloads w1..w4 wired as the CNI plugin wires them.
w1, w2 and w3 become the application's frontend, backend and database (namespace
`shop`); w4 stands outside it as the client and as the DNS server (it has an allow-all
profile). The playbook is applied with ansible-playbook (check mode first, then for
real, then again to show no change), and every TCP connection between the workloads on
the ports the policy talks about is tried: exactly the declared ones must connect.
"""
from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys

import pytest

from playbook_runner import COLLECTION, REPO, run_playbook

pytestmark = [pytest.mark.root, pytest.mark.slow]


def _load_fv_conftest():
    name = "_calico_fv_conftest_for_ansible"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "tests" / "fv" / "conftest.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


FV = _load_fv_conftest()
fv = FV.fv          # re-exported fixtures
clean = FV.clean

PLAYBOOK = COLLECTION / "playbooks" / "policy_example.yml"
PORTS = (53, 80, 443, 5432, 8080, 9090)
ROLES = {"w1": "frontend", "w2": "backend", "w3": "database"}
# (source, destination, port) that the policy declares; nothing else may connect.
EXPECTED = {
    ("w4", "w1", 80), ("w4", "w1", 443),          # clients -> frontend
    ("w1", "w2", 8080),                           # frontend -> backend
    ("w2", "w3", 5432),                           # backend -> database
    ("w1", "w4", 53), ("w2", "w4", 53), ("w3", "w4", 53),  # DNS from every tier
}


def tcp_matrix(workloads) -> set[tuple[str, str, int]]:
    procs = []
    for src in workloads:
        targets = [[f"{dst.name}/{port}", dst.ip, port] for dst in workloads if dst is not src for port in PORTS]
        procs.append((src, subprocess.Popen(["ip", "netns", "exec", src.ns, sys.executable, str(FV.FVTOOL),
                                             "probe", "0.5", json.dumps(targets)], stdout=subprocess.PIPE, text=True)))
    ok = set()
    for src, p in procs:
        out, _ = p.communicate(timeout=30)
        for label, reachable in json.loads(out).items():
            if reachable:
                dst, port = label.split("/")
                ok.add((src.name, dst, int(port)))
    return ok


def recap(output: str) -> dict[str, int]:
    m = re.search(r"localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", output)
    assert m, output[-2000:]
    return dict(ok=int(m[1]), changed=int(m[2]), unreachable=int(m[3]), failed=int(m[4]))


@pytest.fixture
def servers(clean):
    """Listeners on the policy's ports in every workload (8080 and 9090 already run)."""
    procs = [subprocess.Popen(["ip", "netns", "exec", w.ns, sys.executable, str(FV.FVTOOL), "serve",
                               "53", "80", "443", "5432"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for w in clean.workloads]
    try:
        yield clean
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_policy_example_gives_exactly_the_declared_connectivity(servers, tmp_path):
    env = servers
    w = {x.name: x for x in env.workloads}
    env.ds.apply({"apiVersion": "projectcalico.org/v3", "kind": "Profile", "metadata": {"name": "outside"},
                  "spec": {"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}]}})
    env.ds.apply_all([FV.wep(w[name], {"tier": tier, "app": "shop"}, ns="shop") for name, tier in ROLES.items()]
                     + [FV.wep(w["w4"], {"role": "client"}, profiles=["outside"], ns="outside")])
    FV.wait_for(lambda: all(x.ip in FV.our_routes() for x in env.workloads), 10, "routes", env.agent)

    extra = {"policy_example_etcd_endpoints": env.etcd.endpoints,
             "policy_example_dns_nets": [f"{w['w4'].ip}/32"],
             "policy_example_client_nets": ["198.18.0.0/15"]}
    penv = FV.os.environ.copy()
    penv.pop("ETCD_ENDPOINTS", None)

    check = run_playbook(PLAYBOOK, penv, tmp_path / "check", extra_vars=extra, check=True)
    assert check.returncode == 0, check.tail()
    assert recap(check.output)["changed"] == 6, check.tail()
    docs, _rev = env.ds.list("NetworkPolicy")
    assert docs == [], "check mode wrote policy"

    real = run_playbook(PLAYBOOK, penv, tmp_path / "real", extra_vars=extra)
    assert real.returncode == 0, real.tail()
    assert recap(real.output)["changed"] == 6, real.tail()

    last: set = set()

    def settled() -> bool:
        nonlocal last
        last = tcp_matrix(env.workloads)
        return last == EXPECTED

    try:
        FV.wait_for(settled, 20, "the declared connectivity", interval=0.2)
    except AssertionError:
        pass
    assert last == EXPECTED, (f"unexpected connections: {sorted(last - EXPECTED)}; "
                              f"missing: {sorted(EXPECTED - last)}\n--- agent log ---\n{env.agent.log_tail()}")

    again = run_playbook(PLAYBOOK, penv, tmp_path / "again", extra_vars=extra)
    assert again.returncode == 0, again.tail()
    assert recap(again.output)["changed"] == 0, again.tail()

    removed = run_playbook(PLAYBOOK, penv, tmp_path / "absent", extra_vars=dict(extra, policy_example_state="absent"))
    assert removed.returncode == 0, removed.tail()
    assert recap(removed.output)["changed"] == 6, removed.tail()
    assert env.ds.list("NetworkPolicy")[0] == [] and env.ds.list("GlobalNetworkPolicy")[0] == []
