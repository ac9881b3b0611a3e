"""The agent's snapshot read against a real etcd: over gRPC and through the JSON
gateway it delivers the same resources at the same revision."""
from __future__ import annotations

import queue

from calico_net.agent.syncer import Syncer
from calico_net.datastore import Datastore


class Sink:
    def __init__(self):
        self.q = queue.Queue()

    def on_snapshot(self, resources, revision):
        self.q.put((resources, revision))

    def on_update(self, key, res):
        pass

    def on_status(self, connected, reason):
        pass

    def on_bad_object(self, key, reason, new):
        pass


def test_snapshot_over_grpc_equals_the_gateways(etcd_client):
    ds = Datastore(etcd_client)
    ds.apply_all([{"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
                   "metadata": {"name": f"p{i:03d}"}, "spec": {"order": i, "selector": "all()"}}
                  for i in range(45)])
    etcd_client.put("/calico/resources/v3/projectcalico.org/globalnetworkpolicies/bad", "{not json")
    calls = {"pb": 0, "raw": 0}
    real_pb, real_raw = etcd_client.get_range_pb, etcd_client.get_range_raw

    def pb(*a, **kw):
        calls["pb"] += 1
        return real_pb(*a, **kw)

    def raw(*a, **kw):
        calls["raw"] += 1
        return real_raw(*a, **kw)

    etcd_client.get_range_pb, etcd_client.get_range_raw = pb, raw
    got = {}
    for use_grpc in (True, False):
        sink = Sink()
        s = Syncer(etcd_client, sink, page_size=8, use_grpc=use_grpc)
        s.snapshot()
        assert s.read_over == ("gRPC" if use_grpc else "the JSON gateway")
        got[use_grpc] = sink.q.get_nowait()
        assert len(s.bad) == 1
    # 46 keys: a first page of 2, then 6 of 8; each read all over gRPC or all
    # through the gateway (its first page too: get_range reads raw)
    assert calls["pb"] == calls["raw"] == 1 + 6
    (res_pb, rev_pb), (res_gw, rev_gw) = got[True], got[False]
    assert rev_pb == rev_gw and len(res_pb) == 45
    assert res_pb == res_gw
