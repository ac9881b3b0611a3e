"""module_utils/etcd_cluster: membership calls wait out etcd's transient "unhealthy
cluster" refusal and pass every other error straight through (pure logic, a fake client)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # ansible_collections/ on the path

from ansible_collections.calico.net.plugins.module_utils import etcd_cluster  # noqa: E402
from calico_net.datastore.errors import DatastoreError  # noqa: E402


class FakeClient:
    def __init__(self, failures: list[Exception]) -> None:
        self.failures = list(failures)
        self.calls: list[tuple[str, dict]] = []

    def _call(self, path, body):
        self.calls.append((path, body))
        if self.failures:
            raise self.failures.pop(0)
        return {"member": {"ID": "255", "name": "", "peerURLs": body.get("peerURLs", [])}}

    def member_add(self, peer_urls, *, learner=False):
        return self._call("add", {"peerURLs": peer_urls, "learner": learner})

    def member_update(self, member_id, peer_urls):
        return self._call("update", {"ID": member_id, "peerURLs": peer_urls})

    def member_remove(self, member_id):
        return self._call("remove", {"ID": member_id})


@pytest.fixture(autouse=True)
def fast(monkeypatch):
    monkeypatch.setattr(etcd_cluster, "UNHEALTHY_STEP", 0.0)


def test_remove_retries_while_cluster_is_unhealthy():
    client = FakeClient([DatastoreError("etcd rejected the request: etcdserver: unhealthy cluster")] * 3)
    etcd_cluster.remove_member(client, "ff")
    assert len(client.calls) == 4
    assert client.calls[-1] == ("remove", {"ID": 255})


def test_add_returns_member_after_retry():
    client = FakeClient([DatastoreError("etcdserver: unhealthy cluster")])
    member = etcd_cluster.add_member(client, ["https://198.18.1.9:2380"])
    assert member["id"] == "ff" and member["peer_urls"] == ["https://198.18.1.9:2380"]
    assert len(client.calls) == 2


def test_other_errors_are_not_retried():
    client = FakeClient([DatastoreError("etcdserver: member not found")])
    with pytest.raises(DatastoreError, match="member not found"):
        etcd_cluster.remove_member(client, "ff")
    assert len(client.calls) == 1


def test_gives_up_after_the_wait(monkeypatch):
    monkeypatch.setattr(etcd_cluster, "UNHEALTHY_WAIT", 0.0)
    client = FakeClient([DatastoreError("etcdserver: unhealthy cluster")] * 5)
    with pytest.raises(DatastoreError, match="unhealthy cluster"):
        etcd_cluster.update_member(client, "ff", ["https://198.18.1.9:2380"])
    assert len(client.calls) == 1
