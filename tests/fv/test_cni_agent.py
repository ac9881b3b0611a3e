"""Workloads attached by the `calico` CNI plugin, with the real agent running.

Uses the agent FV environment of tests/fv/conftest.py (a host namespace
`cnfv-ag-host` running calico-node for node `fv-node`, etcd reachable from it). The
plugin is run inside that host namespace, as a runtime on that host would run it, and
attaches workloads in `cnfv-cni-*` namespaces. Two networks, `calico` and `other`,
each get the default profile the plugin creates (ingress only from endpoints of the
same network): a workload reaches another of its network, and nothing crosses between
networks until a policy allows it. Afterwards DEL leaves nothing behind.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

pytestmark = [pytest.mark.root, pytest.mark.slow]

VENV_BIN = Path(sys.executable).parent
PREFIX = "cnfv-cni-ag"
POOL = "198.19.80.0/24"
# Hang guard for what the agent has to do, not a speed check.
CONVERGE = 60


class Attached:
    def __init__(self, name: str, network: str, ns: str) -> None:
        self.name, self.network, self.ns = name, network, ns
        self.ip = ""
        self.iface = ""
        self.server: subprocess.Popen | None = None


@pytest.fixture
def attach(clean, fvlib, tmp_path) -> Iterator[Any]:
    env = clean
    made: list[Attached] = []

    def conf(network: str) -> dict[str, Any]:
        return {"cniVersion": "1.0.0", "name": network, "type": "calico",
                "etcd_endpoints": env.etcd.endpoints, "nodename": fvlib.NODE,
                "log_file_path": str(tmp_path / "cni.log"), "ipam": {"type": "calico-ipam"}}

    def run(command: str, w: Attached) -> tuple[int, Any]:
        penv = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": command,
                "CNI_CONTAINERID": f"agfv{w.name}", "CNI_NETNS": f"/var/run/netns/{w.ns}",
                "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni", "CNI_ARGS": f"K8S_POD_NAME={w.name}"}
        p = subprocess.run(["ip", "netns", "exec", fvlib.HOST_NS, str(VENV_BIN / "calico")],
                           input=json.dumps(conf(w.network)), env=penv, capture_output=True, text=True,
                           timeout=120)
        return p.returncode, (json.loads(p.stdout) if p.stdout.strip() else p.stderr)

    def add(name: str, network: str) -> Attached:
        w = Attached(name, network, f"{PREFIX}-{name}")
        subprocess.run(["ip", "netns", "del", w.ns], capture_output=True)
        subprocess.run(["ip", "netns", "add", w.ns], check=True)
        made.append(w)
        rc, res = run("ADD", w)
        assert rc == 0, res
        w.ip = res["ips"][0]["address"].split("/")[0]
        w.iface = res["interfaces"][0]["name"]
        w.server = subprocess.Popen(["ip", "netns", "exec", w.ns, sys.executable, str(fvlib.FVTOOL),
                                     "serve", "8080"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return w

    add.run = run  # type: ignore[attr-defined]
    add.made = made  # type: ignore[attr-defined]
    try:
        yield add
    finally:
        for w in made:
            if w.server is not None and w.server.poll() is None:
                w.server.kill()
                w.server.wait()
            run("DEL", w)
            subprocess.run(["ip", "netns", "del", w.ns], capture_output=True)


def reach(fvlib, src: Attached, dst: Attached) -> bool:
    probe_src = fvlib.Workload(src.name, src.ns, src.ip, src.iface)
    return fvlib.probe(probe_src, [("tcp", dst.ip, 8080)])["tcp"]


def denied(fvlib, src: Attached, dst: Attached) -> bool:
    """src -> dst:8080 fails while, in the same round, the host (host -> workload is
    always allowed, as in Calico) reaches the same server: a deny that counts, not a
    server that is down or a dataplane that passes nothing."""
    procs = [subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, str(fvlib.FVTOOL), "probe",
                               str(fvlib.PROBE_TIMEOUT), json.dumps([["tcp", dst.ip, 8080]])],
                              stdout=subprocess.PIPE, text=True)
             for ns in (src.ns, fvlib.HOST_NS)]
    got, control = (json.loads(p.communicate(timeout=60)[0])["tcp"] for p in procs)
    assert control, f"host -> {dst.name} failed: the server is down or unrouted, a deny would prove nothing"
    return not got


def test_attached_workloads_talk_within_their_network_only(attach, clean, fvlib):
    env = clean
    env.ds.create({"apiVersion": "projectcalico.org/v3", "kind": "IPPool",
                   "metadata": {"name": "cni-agent-pool"}, "spec": {"cidr": POOL}})
    a1, a2 = attach("a1", "calico"), attach("a2", "calico")
    b1 = attach("b1", "other")
    assert len({a1.ip, a2.ip, b1.ip}) == 3

    # the agent routes every attached address to its cali interface
    fvlib.wait_for(lambda: all(w.ip in fvlib.our_routes() for w in (a1, a2, b1)), CONVERGE,
                   "routes for the attached workloads", env.agent)
    fvlib.wait_for(lambda: reach(fvlib, a1, a2), CONVERGE, "a1 -> a2 (same network)", env.agent)
    assert reach(fvlib, a2, a1)
    assert denied(fvlib, b1, a2), "the calico profile must not admit the other network"
    assert denied(fvlib, a1, b1), "the other profile must not admit the calico network"

    # policy can open the way across networks
    env.ds.create({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
                   "metadata": {"name": "calico-to-other"},
                   "spec": {"order": 10, "selector": "has(other)", "types": ["Ingress"],
                            "ingress": [{"action": "Allow", "source": {"selector": "has(calico)"}}]}})
    fvlib.wait_for(lambda: reach(fvlib, a1, b1), CONVERGE, "a1 -> b1 after the policy", env.agent)
    assert denied(fvlib, b1, a1)

    # DEL: endpoint, address and interface go; the agent drops the route
    for w in (a1, a2, b1):
        if w.server is not None:
            w.server.kill()
            w.server.wait()
            w.server = None
        rc, out = attach.run("DEL", w)
        assert rc == 0, out
    assert env.ds.list("WorkloadEndpoint")[0] == []
    from calico_net.ipam import IPAM

    assert sum(b.in_use for b in IPAM(env.ds.client, env.ds).blocks()) == 0
    fvlib.wait_for(lambda: not any(w.ip in fvlib.our_routes() for w in (a1, a2, b1)), CONVERGE,
                   "routes removed", env.agent)
