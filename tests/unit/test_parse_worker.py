"""The first snapshot parsed with a helper process (calico_net.agent.parseworker):
whichever process parses a key, the syncer delivers the same resources, refuses
the same keys for the same reasons, and shares label sets as parse_kv does; a
worker that dies mid-snapshot costs nothing but time."""
from __future__ import annotations

import json
import time

import pytest

from calico_net.agent import parseworker
from calico_net.agent.parseworker import ParseWorker
from calico_net.agent.syncer import Syncer
from calico_net.datastore.errors import DatastoreUnavailable
from calico_net.datastore.etcd import KV
from calico_net.datastore.store import RESOURCE_PREFIX, resource_key

NODE = "node-a"


def wep(i: int, node: str, **spec) -> dict:
    doc = {"apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
           "metadata": {"name": f"{node}-k8s-pod{i}-eth0", "namespace": f"ns{i % 7}",
                        "labels": {"app": f"app{i % 13}", "role": f"r{i % 5}"}},
           "spec": {"node": node, "orchestrator": "k8s", "workload": f"pod{i}", "endpoint": "eth0",
                    "interfaceName": f"cali{i:011x}", "ipNetworks": [f"198.18.{i // 250}.{i % 250 + 1}/32"],
                    "profiles": [f"kns.ns{i % 7}"]}}
    doc["spec"].update(spec)
    return doc


def corpus() -> list[KV]:
    docs: list[dict] = [wep(i, f"node-{i % 40}") for i in range(9000)]     # another node's: the record path
    docs += [wep(9000 + i, NODE) for i in range(30)]                        # this node's
    docs += [wep(9100, "node-1", ipNetworks=["198.18.200.1/32", "198.18.200.2/32", "2001:db8::7/128"]),
             wep(9101, "node-1", ports=[{"name": "http", "protocol": "TCP", "port": 8080}]),
             wep(9102, "node-1", ipNetworks=["198.18.201.0/24"]),           # refused: not a host address
             wep(9103, "node-1", ipNetworks=["198.018.1.1/32"]),            # refused: not an address
             wep(9104, "node-1", serviceAccountName="builder"),
             wep(9106, "node-1", ipNetworks=["2001:DB8::8/128"])]               # valid, not canonical text
    bad_label = wep(9105, "node-1")
    bad_label["metadata"]["labels"] = {"app": "x" * 70}                     # a label value over 63
    docs.append(bad_label)
    docs += [{"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
              "metadata": {"name": f"pol-{p}"}, "spec": {"order": p, "selector": f"app == 'app{p}'"}}
             for p in range(20)]
    kvs = []
    for rev, d in enumerate(docs, 100):
        md = d["metadata"]
        kvs.append(KV(resource_key(d["kind"], md["name"], md.get("namespace")), json.dumps(d).encode(), rev, rev, 1))
    kvs.append(KV(RESOURCE_PREFIX + "workloadendpoints/ns1/broken", b"{not json", 50, 50, 1))
    kvs.append(KV(RESOURCE_PREFIX + "frobnicators/x", b"{}", 51, 51, 1))
    kvs.sort(key=lambda kv: kv.key)
    return kvs


class Client:
    def __init__(self, kvs, page=3000):
        self.kvs, self.page = kvs, page

    def read_prefix(self, prefix, page_size):
        return 999, iter([self.kvs[i:i + self.page] for i in range(0, len(self.kvs), self.page)])


class Sink:
    node_name = NODE

    def __init__(self):
        self.bad = []
        self.resources = None

    def known(self, key):
        return None

    def on_snapshot(self, resources, revision):
        self.resources = resources

    def on_status(self, connected, reason):
        pass

    def on_bad_object(self, key, reason, new):
        self.bad.append((key, reason, new))


def in_process(kvs):
    sink = Sink()
    Syncer(Client(kvs), sink, use_worker=False).snapshot()
    return sink


@pytest.fixture(scope="module")
def kvs():
    return corpus()


@pytest.fixture(scope="module")
def expected(kvs):
    return in_process(kvs)


def ready_worker() -> ParseWorker:
    worker = ParseWorker(NODE)
    deadline = time.monotonic() + 60                 # a hang guard
    while not worker.ready and worker.failed is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.ready, worker.failed
    return worker


def with_worker(kvs, worker, kill_after_submits=None):
    sink = Sink()
    syncer = Syncer(Client(kvs), sink)
    resources, present = {}, set()
    if kill_after_submits is not None:
        submit = worker.submit
        count = [0]

        def submit_then_kill(chunk):
            submit(chunk)
            count[0] += 1
            if count[0] == kill_after_submits:
                worker.proc.kill()
        worker.submit = submit_then_kill
    try:
        for page in Client(kvs).read_prefix("", 0)[1]:
            present.update(kv.key for kv in page)
            syncer._parse_page_with(worker, page, resources)
        syncer._finish_with(worker, resources, len(present))
    finally:
        worker.close()
    return syncer, sink, resources, present


def test_the_worker_and_this_process_give_the_same_resources(kvs, expected):
    syncer, sink, resources, present = with_worker(kvs, ready_worker())
    assert syncer.worker_keys >= parseworker.CHUNK            # the worker did parse chunks
    assert present == {kv.key for kv in kvs}
    assert resources == expected.resources
    assert sorted(sink.bad) == sorted(expected.bad) and len(sink.bad) == 5
    # records the worker built share their label sets and names as parse_kv's do
    held = [r for r in resources.values() if r.member is not None and r.doc is None]
    assert len(held) > 8000
    by_labels = {}
    for r in held:
        by_labels.setdefault(tuple(r.member.own_labels.items()), set()).add(id(r.member.own_labels))
    assert all(len(ids) == 1 for ids in by_labels.values())
    assert len({id(r.member.node) for r in held}) == len({r.member.node for r in held})
    # this node's endpoints, and the ones not of the common shape, keep their documents
    local = [r for r in resources.values() if r.kind == "WorkloadEndpoint" and r.member is not None
             and r.member.node == NODE]
    assert len(local) == 30 and all(r.raw is not None for r in local)


def test_a_worker_that_dies_mid_snapshot_costs_nothing_but_time(kvs, expected):
    worker = ready_worker()
    syncer, sink, resources, present = with_worker(kvs, worker, kill_after_submits=2)
    assert worker.failed is not None
    assert resources == expected.resources
    assert sorted(sink.bad) == sorted(expected.bad)


def test_only_a_long_first_snapshot_starts_a_worker(kvs, expected, parse_workers_started):
    started = parse_workers_started
    # short: parsed before a worker could be up, so none is started
    short = kvs[:2 * 3000]                     # two pages of the fake client
    sink = Sink()
    Syncer(Client(short), sink).snapshot()
    assert started == [] and sink.resources == in_process(short).resources
    # long: a worker from the third page on, for the first snapshot only
    sink = Sink()
    syncer = Syncer(Client(kvs), sink)
    syncer.snapshot()
    assert [w.local_node for w in started] == [NODE] and syncer._worker is None
    assert sink.resources == expected.resources and sorted(sink.bad) == sorted(expected.bad)
    syncer.snapshot()
    assert len(started) == 1


def test_chunk_parser_numbers_each_table_entry_once():
    parser = parseworker.ChunkParser(NODE)
    items = [(kv.key, kv.value, kv.mod_revision) for kv in corpus()[:4000]]
    first = parser.parse(items[:2000])
    second = parser.parse(items[2000:])
    labels = first[3] + second[3]
    assert len(labels) == len(set(labels)) == len(parser.labels)
    assert max(m[3] for m in first[0] + second[0]) == len(labels) - 1


class FailingClient(Client):
    """The first read breaks after its third page (etcd lost mid-snapshot)."""

    def __init__(self, kvs):
        super().__init__(kvs)
        self.reads = 0

    def read_prefix(self, prefix, page_size):
        self.reads += 1
        revision, pages = super().read_prefix(prefix, page_size)
        if self.reads > 1:
            return revision, pages

        def broken():
            for n, page in enumerate(pages):
                if n == 3:
                    raise DatastoreUnavailable("etcd lost mid-snapshot")
                yield page
        return revision, broken()


def test_a_read_that_fails_mid_snapshot_leaves_no_worker_and_the_next_one_is_whole(kvs, expected,
                                                                                    parse_workers_started):
    started = parse_workers_started
    sink = Sink()
    syncer = Syncer(FailingClient(kvs), sink)
    with pytest.raises(DatastoreUnavailable):
        syncer.snapshot()
    assert len(started) == 1 and started[0].proc.wait(timeout=30) == 0 and syncer._worker is None
    syncer.snapshot()
    assert len(started) == 2 and started[1].proc.wait(timeout=30) == 0
    assert sink.resources == expected.resources
    # each bad key reported (as new once, whichever attempt met it first) with its reason
    assert {(k, r) for k, r, _ in sink.bad} == {(k, r) for k, r, _ in expected.bad}
    assert sorted(k for k, _, new in sink.bad if new) == sorted(k for k, _, _ in expected.bad)
