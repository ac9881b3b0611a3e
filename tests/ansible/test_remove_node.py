"""calico.net.remove_node cleans the datastore through `calico.net.node state=absent`
(one code path with a real check mode), against the session's real etcd.

The inventory has two calico nodes: `localhost` (the remaining node the datastore is
cleaned from) and `gone` (the leaving host, unreachable: its own play is skipped as the
playbook allows). `--check --diff` must report what would go and change nothing; the
real run removes the node's endpoint, IPAM addresses, BGPPeer, per-node
FelixConfiguration and Node, and leaves the other node's alone.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from playbook_runner import COLLECTION, VENV_BIN, ansible_env

pytestmark = pytest.mark.slow

V3 = "projectcalico.org/v3"


def wep(node: str, ip: str) -> dict:
    return {"apiVersion": V3, "kind": "WorkloadEndpoint",
            "metadata": {"name": f"{node}-cni-w1-eth0", "namespace": "default"},
            "spec": {"node": node, "orchestrator": "cni", "workload": "w1", "containerID": "w1",
                     "endpoint": "eth0", "interfaceName": "cali0123456789a",
                     "ipNetworks": [f"{ip}/32"], "profiles": ["calico"]}}


@pytest.fixture
def two_nodes(datastore, etcd_client):
    from calico_net.ipam import IPAM

    datastore.create({"apiVersion": V3, "kind": "IPPool", "metadata": {"name": "pool"},
                      "spec": {"cidr": "198.19.216.0/24", "blockSize": 28}})
    ipam = IPAM(etcd_client, datastore)
    for node in ("gone", "stays"):
        datastore.create({"apiVersion": V3, "kind": "Node", "metadata": {"name": node}, "spec": {}})
        (ip,), _ = ipam.auto_assign(f"calico.{node}-w1", node)
        datastore.create(wep(node, str(ip)))
        datastore.create({"apiVersion": V3, "kind": "BGPPeer", "metadata": {"name": f"tor-{node}"},
                          "spec": {"node": node, "peerIP": "198.18.216.250", "asNumber": 64512}})
        datastore.create({"apiVersion": V3, "kind": "FelixConfiguration", "metadata": {"name": f"node.{node}"},
                          "spec": {"logSeverityScreen": "Debug"}})
    return ipam


def remove_node(tmp: Path, etcd, *check: str) -> subprocess.CompletedProcess:
    tmp.mkdir(parents=True, exist_ok=True)
    # `gone` refuses connections at once (port 1); localhost needs no sudo (root already).
    (tmp / "inventory.ini").write_text(
        "[calico_nodes]\n"
        f"localhost ansible_connection=local ansible_become=false calico_node_venv={Path(sys.executable).parent.parent}\n"
        "gone ansible_host=127.0.0.1 ansible_port=1 ansible_user=nobody\n"
        "[etcd]\nlocalhost\n")
    env = ansible_env(etcd.env(), tmp)
    return subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", str(tmp / "inventory.ini"),
                           str(COLLECTION / "playbooks" / "remove_node.yml"), "-e", "calico_remove_node=gone",
                           "--diff", *check], env=env, cwd=tmp, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=300)


def kinds_of(datastore, node: str) -> dict[str, list[str]]:
    out = {}
    for kind in ("WorkloadEndpoint", "BGPPeer", "FelixConfiguration", "Node"):
        names = [d["metadata"]["name"] for d in datastore.list(kind)[0]]
        out[kind] = sorted(n for n in names if node in n)
    return out


def test_remove_node_cleans_the_datastore_through_the_node_module(two_nodes, datastore, etcd_client, etcd, tmp_path):
    ipam = two_nodes
    before, _ = etcd_client.get_prefix("/calico/")
    run = remove_node(tmp_path / "check", etcd, "--check")
    assert run.returncode == 0, run.stdout[-4000:]
    assert "delete WorkloadEndpoint default/gone-cni-w1-eth0" in run.stdout, run.stdout[-4000:]
    assert "release IPAM handle calico.gone-w1" in run.stdout
    after, _ = etcd_client.get_prefix("/calico/")
    assert [(kv.key, kv.value) for kv in after] == [(kv.key, kv.value) for kv in before]

    run = remove_node(tmp_path / "real", etcd)
    assert run.returncode == 0, run.stdout[-4000:]
    assert kinds_of(datastore, "gone") == {"WorkloadEndpoint": [], "BGPPeer": [], "FelixConfiguration": [],
                                           "Node": []}
    assert ipam.affinities("gone") == []
    assert kinds_of(datastore, "stays") == {"WorkloadEndpoint": ["stays-cni-w1-eth0"], "BGPPeer": ["tor-stays"],
                                            "FelixConfiguration": ["node.stays"], "Node": ["stays"]}
    assert ipam.affinities("stays") != []

    run = remove_node(tmp_path / "again", etcd)
    assert run.returncode == 0, run.stdout[-4000:]
    assert "localhost                  : ok=" in run.stdout and "changed=0" in run.stdout.split("localhost ")[-1]
