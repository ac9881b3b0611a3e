"""Whole-agent FV of the metrics: the felix_* figures scraped from a running
calico-node (prometheus_client's exposition on :9091) match the endpoint, policy,
profile, host and host-endpoint counts in etcd, and follow when those change.
Real calico-node, real etcd, real kernel (tests/fv/conftest.py's harness)."""
from __future__ import annotations

from typing import Any

import pytest
import requests

pytestmark = pytest.mark.root

# Hang guard for the agent catching up: not a speed check.
CONVERGE = 30
# Remote workload endpoints' addresses: only this test uses 198.19.217.0/24.
REMOTE_NET = "198.19.217"
V3 = "projectcalico.org/v3"

L: Any = None  # the FV helper module (tests/fv/conftest.py), bound below


@pytest.fixture(autouse=True, scope="module")
def _bind_helpers(fvlib):
    global L
    L = fvlib


def scrape(env) -> dict[str, float]:
    """Every unlabelled sample of /metrics, parsed by prometheus_client's parser."""
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(env.agent.metrics_url, timeout=2).text
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}


def node(name: str) -> dict:
    return {"apiVersion": V3, "kind": "Node", "metadata": {"name": name}, "spec": {}}


def remote_wep(i: int, host: str) -> dict:
    return {"apiVersion": V3, "kind": "WorkloadEndpoint",
            "metadata": {"name": f"{host}-k8s-r{i}-eth0", "namespace": "default",
                         "labels": {"projectcalico.org/namespace": "default", "role": "web"}},
            "spec": {"node": host, "orchestrator": "k8s", "workload": f"r{i}", "endpoint": "eth0",
                     "interfaceName": f"calir{i:09d}", "ipNetworks": [f"{REMOTE_NET}.{i}/32"]}}


def hep(name: str, host: str) -> dict:
    # on another host: this one's own interfaces stay unprotected by host policy
    return {"apiVersion": V3, "kind": "HostEndpoint", "metadata": {"name": name, "labels": {"hep": name}},
            "spec": {"node": host, "interfaceName": "eth1"}}


def profile(name: str) -> dict:
    return {"apiVersion": V3, "kind": "Profile", "metadata": {"name": name},
            "spec": {"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}]}}


def gnp(name: str, selector: str) -> dict:
    return {"apiVersion": V3, "kind": "GlobalNetworkPolicy", "metadata": {"name": name},
            "spec": {"selector": selector, "types": ["Ingress"], "ingress": [{"action": "Allow"}]}}


def np(name: str, selector: str) -> dict:
    return {"apiVersion": V3, "kind": "NetworkPolicy", "metadata": {"name": name, "namespace": "default"},
            "spec": {"selector": selector, "types": ["Ingress"], "ingress": [{"action": "Allow"}]}}


def wait_metrics(env, want: dict[str, float]) -> dict[str, float]:
    seen: dict[str, float] = {}

    def match() -> bool:
        seen.clear()
        seen.update(scrape(env))
        return all(seen.get(k) == v for k, v in want.items())
    L.wait_for(match, CONVERGE, f"metrics {want} (last scrape: "
               f"{ {k: seen.get(k) for k in want} })", env.agent, interval=0.2)
    return seen


def test_felix_metrics_match_the_datastore_and_follow_changes(clean):
    env = clean
    local = env.workloads[:3]                     # w1, w2 web; w3 db
    roles = ["web", "web", "db"]
    remote = [remote_wep(i, "fvm-host2") for i in range(1, 6)]
    env.ds.apply_all(
        [node(L.NODE), node("fvm-host2"), node("fvm-host3")]
        + [L.wep(w, {"role": r}) for w, r in zip(local, roles)] + remote
        + [hep("fvm-hep1", "fvm-host2"), hep("fvm-hep2", "fvm-host3")]
        + [profile("fvm-p1"), profile("fvm-p2")]
        + [gnp("fvm-web", "role == 'web'"), gnp("fvm-db", "role == 'db'"),
           np("fvm-all", "all()"), gnp("fvm-none", "role == 'nobody'")])
    got = wait_metrics(env, {
        "felix_active_local_endpoints": 3,
        "felix_cluster_num_hosts": 3,
        "felix_cluster_num_workload_endpoints": 8,
        "felix_cluster_num_host_endpoints": 2,
        "felix_cluster_num_policies": 4,
        "felix_cluster_num_profiles": 2,
        # fvm-web (w1, w2), fvm-db (w3), fvm-all (all three); fvm-none selects nothing
        # here and fvm-web's remote matches do not count on this host
        "felix_active_local_policies": 3,
        "felix_resync_state": 3,                  # Felix's InSync
    })
    assert got["felix_resyncs_started"] >= 1      # the first sync counts, as in Felix
    assert got["felix_int_dataplane_apply_time_seconds_count"] >= 1
    assert got["felix_int_dataplane_apply_time_seconds_sum"] > 0
    assert got["process_resident_memory_bytes"] > 1e6 and got["process_cpu_seconds_total"] > 0
    assert got["process_open_fds"] >= 3

    # change every count: a local endpoint, two remote ones, a host, a host endpoint,
    # the db policy (now no local policy selects w3 but fvm-all), one profile more
    env.ds.delete("WorkloadEndpoint", local[2].wep_name, "default")
    for r in remote[:2]:
        env.ds.delete("WorkloadEndpoint", r["metadata"]["name"], "default")
    env.ds.delete("Node", "fvm-host3")
    env.ds.delete("HostEndpoint", "fvm-hep2")
    env.ds.delete("GlobalNetworkPolicy", "fvm-db")
    env.ds.apply_all([profile("fvm-p3"), gnp("fvm-none", "role == 'web'")])
    wait_metrics(env, {
        "felix_active_local_endpoints": 2,
        "felix_cluster_num_hosts": 2,
        "felix_cluster_num_workload_endpoints": 5,
        "felix_cluster_num_host_endpoints": 1,
        "felix_cluster_num_policies": 3,
        "felix_cluster_num_profiles": 3,
        "felix_active_local_policies": 3,         # fvm-web, fvm-all, fvm-none (now web)
    })
