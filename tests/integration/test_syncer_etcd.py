"""The agent's snapshot read against a real etcd: read in pages or in one read it
delivers the same resources at the same revision."""
from __future__ import annotations

import queue

from calico_net.agent.syncer import Syncer
from calico_net.datastore import Datastore


class Sink:
    def __init__(self):
        self.q = queue.Queue()

    def known(self, key):
        return None

    def on_snapshot(self, resources, revision):
        self.q.put((resources, revision))

    def on_update(self, key, res):
        pass

    def on_status(self, connected, reason):
        pass

    def on_bad_object(self, key, reason, new):
        pass


def test_paged_snapshot_equals_one_read(etcd_client):
    ds = Datastore(etcd_client)
    ds.apply_all([{"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
                   "metadata": {"name": f"p{i:03d}"}, "spec": {"order": i, "selector": "all()"}}
                  for i in range(45)])
    etcd_client.put("/calico/resources/v3/projectcalico.org/globalnetworkpolicies/bad", "{not json")
    calls = []
    real = etcd_client._post

    def post(call, request):
        calls.append((call, request.limit, request.revision))
        return real(call, request)

    etcd_client._post = post
    got = {}
    for page_size in (8, 0):
        sink = Sink()
        s = Syncer(etcd_client, sink, page_size=page_size)
        s.snapshot()
        got[page_size] = sink.q.get_nowait()
        assert len(s.bad) == 1
    etcd_client._post = real
    # 46 keys: a first page of 2, then pages of 8, 16 and 32 at the first page's
    # revision (each twice the one before); then one read
    (res_paged, rev_paged), (res_one, rev_one) = got[8], got[0]
    assert [c[:2] for c in calls] == [("kv/range", n) for n in (2, 8, 16, 32, 0)]
    assert all(c[2] == rev_paged for c in calls[1:4])
    assert rev_paged == rev_one and len(res_paged) == 45
    assert res_paged == res_one
