"""ClusterInformation "default" on real etcd: created at first start with Calico's
fields, never overwritten where Calico keeps a value, one winner among racing nodes,
and shown by `calicoctl version`."""
from __future__ import annotations

import re
import subprocess
import threading

from etcd_server import VENV_BIN

from calico_net import __version__
from calico_net.agent.startup import ensure_cluster_information


def _calicoctl_version(etcd) -> str:
    env = {"ETCD_ENDPOINTS": etcd.endpoints, "PATH": "/usr/bin:/bin"}
    p = subprocess.run([str(VENV_BIN / "calicoctl"), "version"], env=env, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_created_when_absent_and_shown_by_calicoctl_version(etcd, datastore) -> None:
    assert "Cluster Version:   unknown" in _calicoctl_version(etcd)
    doc = ensure_cluster_information(datastore, cluster_type="bgp")
    spec = doc["spec"]
    assert re.fullmatch(r"[0-9a-f]{32}", spec["clusterGUID"])
    assert spec["calicoVersion"] == f"v{__version__}"
    assert spec["datastoreReady"] is True and spec["clusterType"] == "bgp"
    assert datastore.get("ClusterInformation", "default")["spec"] == spec
    out = _calicoctl_version(etcd)
    assert f"Cluster Version:   v{__version__}" in out
    assert f"Cluster GUID:      {spec['clusterGUID']}" in out
    assert "Cluster Type:      bgp" in out


def test_present_one_keeps_guid_and_ready_flag(datastore) -> None:
    datastore.create({"apiVersion": "projectcalico.org/v3", "kind": "ClusterInformation",
                      "metadata": {"name": "default"},
                      "spec": {"clusterGUID": "0123456789abcdef0123456789abcdef", "calicoVersion": "v3.20.0",
                               "clusterType": "k8s,bgp", "datastoreReady": False}})
    spec = ensure_cluster_information(datastore, cluster_type="bgp,etcd")["spec"]
    assert spec == {"clusterGUID": "0123456789abcdef0123456789abcdef", "calicoVersion": f"v{__version__}",
                    "clusterType": "k8s,bgp,etcd", "datastoreReady": False}
    # nothing to change: nothing written
    rev = datastore.get("ClusterInformation", "default")["metadata"]["resourceVersion"]
    ensure_cluster_information(datastore, cluster_type="bgp")
    assert datastore.get("ClusterInformation", "default")["metadata"]["resourceVersion"] == rev


def test_racing_first_starts_agree_on_one_guid(etcd, datastore) -> None:
    from calico_net.datastore import Datastore

    results: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def node() -> None:
        client = etcd.client()
        try:
            barrier.wait(30)
            results.append(ensure_cluster_information(Datastore(client))["spec"]["clusterGUID"])
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
        finally:
            client.close()

    threads = [threading.Thread(target=node) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    stored = datastore.get("ClusterInformation", "default")["spec"]["clusterGUID"]
    assert results == [stored] * 6


def test_agent_records_it_once_etcd_answers(etcd, datastore) -> None:
    """The agent's start-up thread: etcd unreachable first (a closed port), retried
    until it answers; the agent's stop ends the retries."""
    from calico_net.agent.__main__ import record_cluster_information
    from calico_net.datastore.etcd import EtcdClient, EtcdConfig
    from etcd_server import free_port

    stopping = threading.Event()
    dead = EtcdClient(EtcdConfig(endpoints=[f"http://127.0.0.1:{free_port()}"]))
    try:
        stop_soon = threading.Timer(1.0, stopping.set)
        stop_soon.start()
        assert record_cluster_information(dead, stopping, first_delay=0.2) is False
    finally:
        dead.close()
    client = etcd.client()
    try:
        assert record_cluster_information(client, threading.Event()) is True
    finally:
        client.close()
    assert datastore.get("ClusterInformation", "default")["spec"]["calicoVersion"] == f"v{__version__}"
