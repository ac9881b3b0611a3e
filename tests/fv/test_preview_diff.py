"""FV: `--check --diff` previews exactly the nftables change the agent then makes.

A real agent (calico-node) runs in its own host namespace against a real etcd,
with two workload endpoints on its node and one on another node. A playbook runs
the collection's global_network_policy module twice on a policy change: in check
mode with --diff, then for real. The check run's per-node preview (kernel form:
the lines ``nft list table inet calico`` prints) must name the changed policy
chain's rules and the new selector set, and the difference between the agent's
live table before and after the real run (handles and counters dropped) must
become exactly that preview.

`agent_node` (the harness: host namespace, etcd on the veth's root side, the
agent) is also used by test_node_verify's dataplane fingerprint test. Names start
with ``cnt3``; addresses are in 198.19.176.0/21.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

pytestmark = pytest.mark.root

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
VENV_BIN = Path(sys.executable).parent
RUN = os.getpid() % 100000
NS = f"cnt3-{RUN}-host"
ROOT_IF = f"cnt3r{RUN}"
NET = f"198.19.{176 + RUN % 8}"
NODE = "cnt3-node"
OTHER = "cnt3-other"
CONVERGE = 60
V3 = "projectcalico.org/v3"


def sh(*argv: str, ns: str | None = None, check: bool = True) -> str:
    full = (["ip", "netns", "exec", ns] if ns else []) + list(argv)
    p = subprocess.run(full, capture_output=True, text=True, timeout=60)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(full)}: {p.stderr.strip()}")
    return p.stdout


def wait_for(cond: Callable[[], Any], timeout: float, what: str, diag: Callable[[], str] = lambda: "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{diag()}")
        time.sleep(0.1)


def wep(name: str, node: str, ip: str, iface: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": V3, "kind": "WorkloadEndpoint",
            "metadata": {"name": name, "namespace": "default",
                         "labels": {"projectcalico.org/namespace": "default",
                                    "projectcalico.org/orchestrator": "k8s", **labels}},
            "spec": {"node": node, "orchestrator": "k8s", "workload": name, "endpoint": "eth0",
                     "interfaceName": iface, "ipNetworks": [f"{ip}/32"], "profiles": ["kns.default"]}}


def base_docs() -> list[dict[str, Any]]:
    """Two nodes, a profile, a pool, endpoints db (here) and web (here and on the other
    node), a policy on db."""
    return [
        {"apiVersion": V3, "kind": "Node", "metadata": {"name": NODE},
         "spec": {"bgp": {"ipv4Address": f"{NET}.2/24"}}},
        {"apiVersion": V3, "kind": "Node", "metadata": {"name": OTHER},
         "spec": {"bgp": {"ipv4Address": f"{NET}.3/24"}}},
        {"apiVersion": V3, "kind": "Profile", "metadata": {"name": "kns.default"},
         "spec": {"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}]}},
        {"apiVersion": V3, "kind": "IPPool", "metadata": {"name": "cnt3-pool"},
         "spec": {"cidr": "198.19.184.0/22", "natOutgoing": True}},
        wep("db", NODE, "198.19.184.1", "cali3db000001", {"role": "db"}),
        wep("web", NODE, "198.19.184.2", "cali3web00002", {"role": "web"}),
        wep("web-far", OTHER, "198.19.185.1", "cali3web00003", {"role": "web"}),
        {"apiVersion": V3, "kind": "GlobalNetworkPolicy", "metadata": {"name": "cnt3-db"},
         "spec": {"selector": "role == 'db'", "order": 10, "types": ["Ingress"],
                  "ingress": [{"action": "Allow", "protocol": "TCP", "destination": {"ports": [8080]}}]}},
    ]


@dataclass
class AgentNode:
    etcd: Any
    ds: Any
    proc: subprocess.Popen
    tmp: Path
    env: dict[str, str]

    def live_text(self) -> str:
        return sh("nft", "list", "table", "inet", "calico", ns=NS, check=False)

    def live(self) -> dict[str, tuple[str, ...]]:
        from calico_net.verify.dataplane import live_objects

        return live_objects(self.live_text())

    def expected(self) -> dict[str, tuple[str, ...]]:
        """What the agent's code renders from etcd for this node (no host config file)."""
        from calico_net.preview import read_snapshot
        from calico_net.preview.ruleset import canonical_listing, desired_dataplane, parse_listing

        dp = desired_dataplane(read_snapshot(self.ds), NODE, env={}, config_file="")
        return parse_listing(canonical_listing(dp.ruleset_text()))

    def log_tail(self) -> str:
        try:
            return "\n".join((self.tmp / "agent.log").read_text().splitlines()[-40:])
        except OSError:
            return ""

    def wait_converged(self) -> None:
        wait_for(lambda: self.live() == self.expected(), CONVERGE,
                 "the agent's live table to equal the table rendered from etcd",
                 lambda: f"live:\n{self.live_text()}\n--- agent log ---\n{self.log_tail()}")


@contextlib.contextmanager
def agent_node(tmp: Path, docs: list[dict[str, Any]], links: tuple[str, ...] = ()) -> Iterator[AgentNode]:
    """The host namespace with `links` (up veth interfaces), etcd holding `docs`,
    and the agent running and converged; all removed afterwards."""
    sys.path.insert(0, str(HERE.parent))
    from etcd_server import start_etcd, stop_etcd

    from calico_net.datastore import Datastore
    from calico_net.datastore.etcd import EtcdClient, EtcdConfig

    etcd = proc = None
    try:
        sh("ip", "netns", "add", NS)
        sh("ip", "link", "set", "lo", "up", ns=NS)
        sh("ip", "link", "add", ROOT_IF, "type", "veth", "peer", "name", "eth0", "netns", NS)
        sh("ip", "addr", "add", f"{NET}.1/24", "dev", ROOT_IF)
        sh("ip", "link", "set", ROOT_IF, "up")
        sh("ip", "addr", "add", f"{NET}.2/24", "dev", "eth0", ns=NS)
        sh("ip", "link", "set", "eth0", "up", ns=NS)
        for name in links:
            sh("ip", "link", "add", name, "type", "veth", "peer", "name", name + "p", ns=NS)
            sh("ip", "link", "set", name + "p", "up", ns=NS)
            sh("ip", "link", "set", name, "up", ns=NS)
        etcd = start_etcd(listen_host=f"{NET}.1")
        ds = Datastore(EtcdClient(EtcdConfig(endpoints=[etcd.endpoints])))
        ds.apply_all(docs)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "FELIX_", "CALICO_"))}
        env.update({"NODENAME": NODE, "ETCD_ENDPOINTS": etcd.endpoints,
                    "FELIX_HEALTHHOST": "127.0.0.1", "FELIX_HEALTHPORT": "9099",
                    "FELIX_ROUTEREFRESHINTERVAL": "2", "FELIX_IPTABLESREFRESHINTERVAL": "2",
                    "FELIX_CONFIGFILE": str(tmp / "felix.cfg"), "FELIX_MTUFILEPATH": str(tmp / "mtu"),
                    "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"})
        log = open(tmp / "agent.log", "a")
        proc = subprocess.Popen(["ip", "netns", "exec", NS, str(VENV_BIN / "calico-node")], env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        node = AgentNode(etcd, ds, proc, tmp, env)
        node.wait_converged()
        yield node
    finally:
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if etcd is not None:
            stop_etcd(etcd)
        sh("ip", "netns", "del", NS, check=False)
        sh("ip", "link", "del", ROOT_IF, check=False)


PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: the policy change, previewed
      calico.net.global_network_policy: &change
        name: cnt3-db
        selector: role == 'db'
        order: 10
        types: [Ingress]
        ingress:
          - action: Allow
            protocol: TCP
            source: {selector: role == 'web'}
            destination: {ports: [9090]}
        etcd_endpoints: ["%(etcd)s"]
      check_mode: true
      register: checked
    - name: the policy change, for real
      calico.net.global_network_policy: *change
      register: real
    - name: both results
      ansible.builtin.copy:
        content: "{{ {'checked': checked, 'real': real} | to_json }}"
        dest: "%(out)s"
"""


def run_playbook(node: AgentNode) -> tuple[dict[str, Any], str]:
    out = node.tmp / "results.json"
    book = node.tmp / "preview.yml"
    book.write_text(PLAYBOOK % {"etcd": node.etcd.endpoints, "out": out})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_",))}
    env.update(ANSIBLE_COLLECTIONS_PATH=str(REPO), ANSIBLE_LOCAL_TEMP=str(node.tmp / "ansible-tmp"),
               ANSIBLE_NOCOLOR="1", CALICO_NET_PREVIEW_FORM="kernel")
    p = subprocess.run([str(VENV_BIN / "ansible-playbook"), "--diff", "-i", "localhost,", "-c", "local",
                        "-e", f"ansible_python_interpreter={sys.executable}", str(book)],
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    return json.loads(out.read_text()), p.stdout


def test_check_diff_preview_is_the_live_change(tmp_path):
    from calico_net.preview import diff_objects

    with agent_node(tmp_path, base_docs()) as node:
        before = node.live()
        results, stdout = run_playbook(node)
        checked, real = results["checked"], results["real"]
        assert checked["changed"] and real["changed"]
        # the same preview in check mode and for real (both made before anything is written)
        assert checked["diff"] == real["diff"] and checked["preview"] == real["preview"]
        previews = {p["node"]: p for p in checked["preview"]}
        assert set(previews) == {NODE, OTHER}           # every node programs every policy
        mine = previews[NODE]["nftables"]
        assert mine["form"] == "kernel" and "bird" not in previews[NODE]
        by_name = {o["name"]: o for o in mine["objects"]}
        chain = next(o for n, o in by_name.items() if n.startswith("chain cali-pi-"))
        assert chain["state"] == "changed"
        assert chain["removed"] == ["tcp dport 8080 meta mark set meta mark | 0x00010000 return"]
        (added,) = chain["added"]
        assert "ip saddr @s4_" in added and "tcp dport 9090" in added
        new_set = next(o for n, o in by_name.items() if n.startswith("set s4_"))
        assert new_set["state"] == "added" and {"198.19.184.2", "198.19.185.1"} <= set(new_set["added"])
        # Ansible printed it with the resource diff
        assert f"=== node {NODE}: nftables change" in stdout and ("+" + added) in stdout, stdout[-3000:]

        last: list[Any] = []

        def live_change_is_preview() -> bool:
            got = [c.to_json() for c in diff_objects(before, node.live())]
            last[:] = got
            return got == mine["objects"]

        wait_for(live_change_is_preview, CONVERGE, "the live table's change to equal the preview",
                 lambda: f"live change: {json.dumps(last, indent=1)}\npreview: {json.dumps(mine['objects'], indent=1)}"
                         f"\n--- agent log ---\n{node.log_tail()}")
        # and it stays so: the agent is done, the live table is what etcd now says
        node.wait_converged()
        assert [c.to_json() for c in diff_objects(before, node.live())] == mine["objects"]
