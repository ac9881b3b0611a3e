"""module_utils/etcd_cluster: membership calls retry etcd's transient "unhealthy
cluster" / "not enough started members" refusal a bounded number of times and pass every
other error straight through (pure logic, a fake client; the real-cluster tests are in
tests/ansible/test_modules_etcd_member.py)."""
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


def fast(retries: int = etcd_cluster.RETRIES) -> etcd_cluster.Retry:
    waits: list[float] = []
    retry = etcd_cluster.Retry(retries, 1.0, sleep=waits.append)
    retry.waits = waits
    return retry


def test_remove_retries_while_cluster_is_unhealthy():
    client = FakeClient([DatastoreError("etcd rejected the request: etcdserver: unhealthy cluster")] * 3)
    retry = fast()
    etcd_cluster.remove_member(client, "ff", retry=retry)
    assert len(client.calls) == 4
    assert client.calls[-1] == ("remove", {"ID": 255})
    assert retry.retried == 3 and retry.waits == [1.0, 2.0, 4.0]


def test_add_returns_member_after_retry():
    client = FakeClient([DatastoreError("etcdserver: unhealthy cluster")])
    member = etcd_cluster.add_member(client, ["https://198.18.1.9:2380"], retry=fast())
    assert member["id"] == "ff" and member["peer_urls"] == ["https://198.18.1.9:2380"]
    assert len(client.calls) == 2


def test_other_errors_are_not_retried():
    client = FakeClient([DatastoreError("etcdserver: member not found")])
    with pytest.raises(DatastoreError, match="member not found"):
        etcd_cluster.remove_member(client, "ff", retry=fast())
    assert len(client.calls) == 1


def test_not_enough_started_members_is_retried():
    client = FakeClient([DatastoreError("etcdserver: re-configuration failed due to not enough started members")])
    etcd_cluster.remove_member(client, "ff", retry=fast())
    assert len(client.calls) == 2


def test_gives_up_after_the_bound():
    client = FakeClient([DatastoreError("etcdserver: unhealthy cluster")] * 5)
    retry = fast(retries=2)
    with pytest.raises(etcd_cluster.ModuleError, match="refused to update the member ff 3 times.*unhealthy cluster"):
        etcd_cluster.update_member(client, "ff", ["https://198.18.1.9:2380"], retry=retry)
    assert len(client.calls) == 3 and retry.waits == [1.0, 2.0]


def test_wait_is_bounded():
    assert [etcd_cluster.Retry(10, 1.0).wait(n) for n in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert etcd_cluster.Retry(3, 30.0).wait(2) == 30.0


def test_message_quotes_etcds_words():
    client = FakeClient([DatastoreError("cannot reach etcd: http://127.0.0.1:2379: HTTP 503 etcdserver: unhealthy cluster"),
                         DatastoreError("etcd rejected the request: etcdserver: re-configuration failed due to "
                                        "not enough started members")])
    with pytest.raises(etcd_cluster.ModuleError) as e:
        etcd_cluster.remove_member(client, "ff", retry=fast(retries=1))
    assert "(retries=1): etcdserver: re-configuration failed due to not enough started members. " in str(e.value)
    assert e.value.extra["attempts"] == 2
    assert etcd_cluster.Retry(1000, 1.0).wait(999) == 10.0
