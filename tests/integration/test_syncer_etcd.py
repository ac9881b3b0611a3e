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


class NodeSink(Sink):
    node_name = "node-a"


def test_a_big_first_snapshot_is_parsed_with_the_worker_to_the_same_resources(etcd_client, parse_workers_started):
    # 30,000 endpoints of other nodes and 50 of this one, read from a real etcd by
    # the real client: the parse worker takes part (started at the third page) and
    # the resources are those of a read parsed in this process alone
    import orjson

    from calico_net.datastore.etcd import op_put
    from calico_net.datastore.store import resource_key

    def wep(i, node):
        return {"apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
                "metadata": {"name": f"{node}-k8s-pod{i}-eth0", "namespace": f"ns{i % 9}",
                             "labels": {"app": f"a{i % 40}"}},
                "spec": {"node": node, "orchestrator": "k8s", "endpoint": "eth0",
                         "interfaceName": f"cali{i:011x}", "ipNetworks": [f"198.18.{i // 250}.{i % 250 + 1}/32"],
                         "profiles": [f"kns.ns{i % 9}"]}}
    docs = [wep(i, f"node-{i % 300}") for i in range(30000)] + [wep(30000 + i, "node-a") for i in range(50)]
    for start in range(0, len(docs), 5000):
        etcd_client.txn([], [op_put(resource_key("WorkloadEndpoint", d["metadata"]["name"],
                                                 d["metadata"]["namespace"]), orjson.dumps(d))
                             for d in docs[start:start + 5000]])
    etcd_client.put("/calico/resources/v3/projectcalico.org/workloadendpoints/ns1/broken", "{not json")
    started = parse_workers_started
    with_worker, alone = NodeSink(), NodeSink()
    syncer = Syncer(etcd_client, with_worker)
    syncer.snapshot()
    Syncer(etcd_client, alone, use_worker=False).snapshot()
    (got, rev1), (want, rev2) = with_worker.q.get(timeout=60), alone.q.get(timeout=60)
    assert len(started) == 1 and started[0].proc.wait(timeout=30) == 0     # started, and ends
    assert rev1 == rev2 and len(got) == 30050
    assert got == want
    assert "/calico/resources/v3/projectcalico.org/workloadendpoints/ns1/broken" in syncer.bad
