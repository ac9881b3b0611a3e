"""Deleting a Node takes its endpoints, IPAM state, BGP peers and per-node config along
(calicoctl delete node, calico_net.nodecleanup), and leaves every other node's alone."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from calico_net.datastore.errors import ResourceNotFound
from calico_net.ipam import IPAM
from calico_net.nodecleanup import clean_node, plan_node_cleanup

V3 = "projectcalico.org/v3"


def wep(node: str, workload: str, ip: str) -> dict:
    return {"apiVersion": V3, "kind": "WorkloadEndpoint",
            "metadata": {"name": f"{node}-cni-{workload}-eth0", "namespace": "default"},
            "spec": {"node": node, "orchestrator": "cni", "workload": workload, "containerID": workload,
                     "endpoint": "eth0", "interfaceName": "cali0123456789a",
                     "ipNetworks": [f"{ip}/32"], "profiles": ["calico"]}}


@pytest.fixture
def two_nodes(datastore, etcd_client):
    datastore.create({"apiVersion": V3, "kind": "IPPool", "metadata": {"name": "pool"},
                      "spec": {"cidr": "198.19.0.0/24", "blockSize": 28}})
    ipam = IPAM(etcd_client, datastore)
    ips = {}
    for node in ("gone", "stays"):
        datastore.create({"apiVersion": V3, "kind": "Node", "metadata": {"name": node}, "spec": {}})
        (ip,), _ = ipam.auto_assign(f"calico.{node}-w1", node)
        ips[node] = str(ip)
        datastore.create(wep(node, "w1", str(ip)))
        datastore.create({"apiVersion": V3, "kind": "BGPPeer", "metadata": {"name": f"tor-{node}"},
                          "spec": {"node": node, "peerIP": "198.18.0.250", "asNumber": 64512}})
        datastore.create({"apiVersion": V3, "kind": "FelixConfiguration", "metadata": {"name": f"node.{node}"},
                          "spec": {"logSeverityScreen": "Debug"}})
    (second,), _ = ipam.auto_assign("calico.gone-w2", "gone")  # allocated, no endpoint yet
    ips["second"] = str(second)
    return ipam, ips


def state_of(datastore, ipam, node):
    weps = [w for w in datastore.list("WorkloadEndpoint")[0] if w["spec"]["node"] == node]
    peers = [p for p in datastore.list("BGPPeer")[0] if p["spec"].get("node") == node]
    addrs = [ip for b in ipam.blocks() for ip, a in b.allocated() if (a.get("secondary") or {}).get("node") == node]
    return weps, peers, addrs, ipam.affinities(node)


def test_plan_changes_nothing_and_clean_removes_only_that_node(two_nodes, datastore, etcd_client):
    ipam, ips = two_nodes
    before, _ = etcd_client.get_prefix("/calico/")
    plan = plan_node_cleanup("gone", etcd_client, datastore)
    assert "delete WorkloadEndpoint default/gone-cni-w1-eth0" in plan
    assert "release IPAM handle calico.gone-w1" in plan
    assert "release IPAM handle calico.gone-w2" in plan and "delete Node gone" in plan
    assert "delete BGPPeer tor-gone" in plan and "delete FelixConfiguration node.gone" in plan
    after, _ = etcd_client.get_prefix("/calico/")
    assert [(kv.key, kv.mod_revision) for kv in before] == [(kv.key, kv.mod_revision) for kv in after]

    assert clean_node("gone", etcd_client, datastore) == plan
    weps, peers, addrs, affinities = state_of(datastore, ipam, "gone")
    assert (weps, peers, addrs, affinities) == ([], [], [], [])
    for kind, name in (("Node", "gone"), ("FelixConfiguration", "node.gone")):
        with pytest.raises(ResourceNotFound):
            datastore.get(kind, name)
    # the other node keeps everything
    weps, peers, addrs, affinities = state_of(datastore, ipam, "stays")
    assert len(weps) == 1 and len(peers) == 1 and [str(a) for a in addrs] == [ips["stays"]] and affinities
    datastore.get("FelixConfiguration", "node.stays")
    # repeating it finds nothing to do
    assert clean_node("gone", etcd_client, datastore) == []


def test_calicoctl_delete_node_cleans_up(two_nodes, etcd, datastore):
    ipam, _ = two_nodes
    calicoctl = str(Path(sys.executable).parent / "calicoctl")
    run = subprocess.run([calicoctl, "delete", "node", "gone"], capture_output=True, text=True,
                         env=etcd.env(), timeout=60)
    assert run.returncode == 0, run.stderr
    assert "Successfully deleted 1 'Node' resource(s)" in run.stdout
    assert "node gone: release IPAM handle calico.gone-w1" in run.stdout
    assert state_of(datastore, ipam, "gone") == ([], [], [], [])
    assert len(state_of(datastore, ipam, "stays")[0]) == 1
    again = subprocess.run([calicoctl, "delete", "node", "gone"], capture_output=True, text=True,
                           env=etcd.env(), timeout=60)
    assert again.returncode != 0 and "gone" in again.stderr
