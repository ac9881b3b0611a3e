"""The datastore watcher (calico_net.agent.syncer) against a scripted fake etcd."""
from __future__ import annotations

import json
import queue
import threading
import time

from calico_net.agent.syncer import Syncer, parse_kv, BadObject
from calico_net.datastore.errors import DatastoreUnavailable
from calico_net.datastore.etcd import KV, EtcdClient, EtcdConfig, WatchCompacted, WatchEvent
from calico_net.datastore.etcdpb import kv_pb2, rpc_pb2
from calico_net.datastore.store import RESOURCE_PREFIX

import pytest

P = RESOURCE_PREFIX


def gnp(name, order=1):
    return {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
            "metadata": {"name": name}, "spec": {"order": order, "selector": "all()"}}


def kv(key, value, rev):
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return KV(key, raw, rev, rev, 1)


class FakeWatch:
    def __init__(self, script):
        self.script = script
        self.cancelled = threading.Event()

    def __iter__(self):
        for item in self.script:
            if self.cancelled.is_set():
                return
            if isinstance(item, Exception):
                raise item
            yield item
        self.cancelled.wait(10)

    def cancel(self):
        self.cancelled.set()


class FakeClient:
    """The datastore reader (etcd.PrefixReader), scripted: each snapshot is one page."""

    def __init__(self):
        self.snapshots = []     # list of (kvs, rev) or Exception, consumed in order
        self.watches = []       # list of scripts
        self.watch_starts = []
        self.reachable = True

    def read_prefix(self, prefix, page_size):
        item = self.snapshots.pop(0) if len(self.snapshots) > 1 else self.snapshots[0]
        if isinstance(item, Exception):
            raise item
        kvs, revision = item
        return revision, iter((kvs,))

    def watch_prefix(self, prefix, start, *, read_timeout=None, coalesce=0.0):
        self.watch_starts.append(start)
        return FakeWatch(self.watches.pop(0) if self.watches else [])

    def revision(self):
        if not self.reachable:
            raise DatastoreUnavailable("down")
        return 1


class Sink:
    def __init__(self):
        self.q = queue.Queue()
        self.bad = []

    def known(self, key):
        return None

    def on_snapshot(self, resources, revision):
        self.q.put(("snapshot", resources, revision))

    def on_update(self, key, res):
        self.q.put(("update", key, res))

    def on_status(self, connected, reason):
        self.q.put(("status", connected))

    def on_bad_object(self, key, reason, new):
        self.bad.append((key, new))

    def next(self, what):
        while True:
            ev = self.q.get(timeout=60)   # a hang guard, not a speed check
            if ev[0] == what:
                return ev


def test_parse_kv_bad_objects():
    ok = parse_kv(kv(P + "globalnetworkpolicies/p1", gnp("p1"), 5))
    assert ok.kind == "GlobalNetworkPolicy" and ok.doc["metadata"]["resourceVersion"] == "5"
    cases = [
        (P + "globalnetworkpolicies/p1", b"{not json", "JSON"),
        (P + "frobnicators/x", gnp("x"), "unknown kind"),
        (P + "globalnetworkpolicies/p2", gnp("p1"), "does not match"),
        (P + "globalnetworkpolicies/p1", {**gnp("p1"), "spec": {"order": "high", "selector": "!!"}}, "GlobalNetworkPolicy"),
    ]
    for key, value, why in cases:
        with pytest.raises(BadObject, match=why):
            parse_kv(kv(key, value, 3))


class HoldingSink(Sink):
    """Holds what it was given, as the daemon does (`known` answers from it)."""

    def __init__(self):
        super().__init__()
        self.held = {}

    def known(self, key):
        return self.held.get(key)

    def on_snapshot(self, resources, revision):
        self.held = dict(resources)
        super().on_snapshot(resources, revision)


def test_a_snapshot_from_a_restarted_history_reuses_nothing_held():
    key = P + "globalnetworkpolicies/a"
    c, sink = FakeClient(), HoldingSink()
    s = Syncer(c, sink)
    c.snapshots = [([kv(key, gnp("a", order=1), 50)], 100)]
    s.snapshot()
    # within one history the value held at the same mod revision is reused unparsed
    c.snapshots = [([kv(key, gnp("a", order=7), 50)], 120)]
    s.snapshot()
    assert sink.held[key].doc["spec"]["order"] == 1 and not s.history_reset
    # etcd restored from a snapshot: the revision went back, and revision 50 now
    # holds another value
    c.snapshots = [([kv(key, gnp("a", order=7), 50)], 60)]
    s.snapshot()
    assert s.history_reset and sink.held[key].doc["spec"]["order"] == 7
    # from there on, one history again
    c.snapshots = [([kv(key, gnp("a", order=7), 50)], 61)]
    s.snapshot()
    assert not s.history_reset


def test_snapshot_then_watch_from_next_revision_and_bad_data_once():
    c = FakeClient()
    good = kv(P + "globalnetworkpolicies/a", gnp("a"), 10)
    bad = kv(P + "globalnetworkpolicies/b", b"garbage", 11)
    c.snapshots = [([good, bad], 20)]
    c.watches = [[[WatchEvent("PUT", kv(P + "globalnetworkpolicies/c", gnp("c"), 21), 21),
                   WatchEvent("DELETE", KV(P + "globalnetworkpolicies/a", b"", 22, 0, 0), 22)],
                  DatastoreUnavailable("connection reset")]]
    sink = Sink()
    s = Syncer(c, sink, backoff_initial=0.01, probe_interval=60)
    s.start()
    try:
        _, res, rev = sink.next("snapshot")
        assert rev == 20 and list(res) == [P + "globalnetworkpolicies/a"]
        assert c.watch_starts == [21]
        _, key, r = sink.next("update")
        assert key.endswith("/c") and r.name == "c"
        _, key, r = sink.next("update")
        assert key.endswith("/a") and r is None
        assert sink.next("status") == ("status", False)
        _, res2, _ = sink.next("snapshot")   # the resync after the error
        assert sink.bad == [(P + "globalnetworkpolicies/b", True), (P + "globalnetworkpolicies/b", False)]
    finally:
        s.stop()


def test_compaction_and_outage_back_off_then_resync():
    c = FakeClient()
    good = kv(P + "globalnetworkpolicies/a", gnp("a"), 10)
    c.snapshots = [([good], 20), DatastoreUnavailable("refused"), DatastoreUnavailable("refused"), ([good], 30)]
    c.watches = [[WatchCompacted(25)]]
    sink = Sink()
    s = Syncer(c, sink, backoff_initial=0.01, backoff_max=0.05, probe_interval=60)
    s.start()
    try:
        sink.next("snapshot")
        assert sink.next("status") == ("status", False)
        _, res, rev = sink.next("snapshot")
        assert rev == 30 and list(res) == [good.key]
        assert s.snapshots == 2
    finally:
        s.stop()


def test_probe_notices_a_silent_dead_connection():
    c = FakeClient()
    c.snapshots = [([], 5)]
    c.watches = [[]]   # a watch that never says anything
    sink = Sink()
    s = Syncer(c, sink, backoff_initial=0.01, probe_interval=0.05)
    s.start()
    try:
        sink.next("snapshot")
        c.reachable = False
        assert sink.next("status") == ("status", False)
    finally:
        s.stop()


def wait_for(cond, timeout, what):
    """Poll `cond` until true; the timeout is a hang guard, not a speed check."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


class RecordingStop(threading.Event):
    """The syncer's stop event, recording the first `n` backoffs it asks to wait
    for and returning at once (the backoff schedule is checked, not the clock);
    after those it waits for the stop itself."""

    def __init__(self, n):
        super().__init__()
        self.n = n
        self.waits = []

    def wait(self, timeout=None):
        if timeout is not None and not self.is_set() and len(self.waits) < self.n:
            self.waits.append(timeout)
            return super().wait(0)
        return super().wait()


def test_backoff_is_capped_and_cheap():
    c = FakeClient()
    c.snapshots = [DatastoreUnavailable("refused")]
    sink = Sink()
    s = Syncer(c, sink, backoff_initial=0.01, backoff_max=0.1, probe_interval=60)
    s._stop = stop = RecordingStop(10)
    calls = []
    orig = c.read_prefix

    def counting(prefix, page_size):
        calls.append(prefix)
        return orig(prefix, page_size)

    c.read_prefix = counting
    s.start()
    wait_for(lambda: len(stop.waits) >= 10, 30, "10 backoff waits")
    s.stop()
    waits = list(stop.waits)
    # Every failed attempt is followed by a backoff wait (no retry without one: a
    # dead etcd costs next to nothing) ...
    assert len(waits) == 10 and len(calls) == 11, (len(calls), waits)
    # ... that doubles from backoff_initial and is capped at backoff_max, jittered
    # to 0.5x..1x of the nominal delay.
    nominal = [min(0.1, 0.01 * 2 ** i) for i in range(10)]
    for i, (w, n) in enumerate(zip(waits, nominal)):
        assert 0.5 * n <= w <= n, (i, w, n, waits)
    assert nominal[-1] == 0.1 and max(waits) <= 0.1


class PagedClient(EtcdClient):
    """The real client's paged read (`EtcdClient.read_prefix`) over a fake etcd with
    a revision history: a write between two pages must not show in a snapshot read
    at revision R. The watch and the probe are FakeClient's."""

    watch_prefix = FakeClient.watch_prefix
    revision = FakeClient.revision

    def __init__(self, keys):
        super().__init__(EtcdConfig(endpoints=["https://etcd.invalid:2379"]))
        self.watches = []
        self.watch_starts = []
        self.reachable = True
        self.rev = 100
        self.history = {k: [(self.rev, v)] for k, v in keys.items()}   # key -> [(rev, value|None)]
        self.calls = []          # (start, revision, limit)
        self.fail_at = None      # page number whose read raises
        self.after_first = None  # called after the first page is served

    def put(self, key, value):
        self.rev += 1
        self.history.setdefault(key, []).append((self.rev, value))

    def delete(self, key):
        self.rev += 1
        self.history[key].append((self.rev, None))

    def _post(self, call, request):
        assert call == "kv/range"
        key, range_end, limit = request.key, request.range_end, request.limit
        revision = request.revision or None
        self.calls.append((key, revision, limit))
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise DatastoreUnavailable("connection reset mid-snapshot")
        at = revision or self.rev
        out = []
        for k in sorted(self.history):
            if not (key <= k.encode() < range_end):
                continue
            vals = [(r, v) for r, v in self.history[k] if r <= at]
            if vals and vals[-1][1] is not None:
                out.append(kv(k, vals[-1][1], vals[-1][0]))
        more = bool(limit) and len(out) > limit
        page = out[:limit] if limit else out
        header = self.rev
        if len(self.calls) == 1 and self.after_first is not None:
            self.after_first()
        return rpc_pb2.RangeResponse(
            header=rpc_pb2.ResponseHeader(revision=header), more=more, count=len(out),
            kvs=[kv_pb2.KeyValue(key=x.key.encode(), value=x.value, mod_revision=x.mod_revision,
                                 create_revision=x.create_revision, version=x.version) for x in page])


def test_paged_snapshot_is_one_revision_and_watches_from_next():
    names = [f"p{i:03d}" for i in range(57)]
    c = PagedClient({P + f"globalnetworkpolicies/{n}": gnp(n) for n in names})
    late = P + "globalnetworkpolicies/p050"

    def write_meanwhile():
        # after R is fixed: a change, a deletion and a new key, all past R
        c.put(late, gnp("p050", order=99))
        c.delete(P + "globalnetworkpolicies/p056")
        c.put(P + "globalnetworkpolicies/p999", gnp("p999"))

    c.after_first = write_meanwhile
    c.watches = [[]]
    sink = Sink()
    s = Syncer(c, sink, backoff_initial=0.01, probe_interval=60, page_size=8)
    s.start()
    try:
        _, res, rev = sink.next("snapshot")
        assert rev == 100
        assert sorted(res) == sorted(P + f"globalnetworkpolicies/{n}" for n in names)
        assert res[late].doc["spec"]["order"] == 1          # the value at R, not the later one
        assert c.watch_starts == [101]
        # first page small and at the current revision; the rest at R, in order, each
        # starting right after the previous page's last key, each twice the one before
        assert c.calls[0] == (P.encode(), None, 2)
        assert [(r, lim) for _, r, lim in c.calls[1:]] == [(100, 8), (100, 16), (100, 32)]
        assert c.calls[1][0] == (P + "globalnetworkpolicies/p001").encode() + b"\0"
    finally:
        s.stop()


def test_paged_snapshot_error_mid_read_delivers_nothing_then_resyncs():
    c = PagedClient({P + f"globalnetworkpolicies/p{i}": gnp(f"p{i}") for i in range(30)})
    c.fail_at = 3
    c.watches = [[]]
    sink = Sink()
    s = Syncer(c, sink, backoff_initial=0.01, probe_interval=60, page_size=8)
    s.start()
    try:
        _, res, rev = sink.next("snapshot")    # only the retry's complete snapshot arrives
        assert len(res) == 30 and rev == 100
        assert s.snapshots == 1
        assert [ev for ev in list(sink.q.queue) if ev[0] == "snapshot"] == []
    finally:
        s.stop()


def test_paged_snapshot_small_prefix_is_one_read():
    c = PagedClient({P + "globalnetworkpolicies/a": gnp("a")})
    c.watches = [[]]
    sink = Sink()
    s = Syncer(c, sink, probe_interval=60, page_size=8)
    s.start()
    try:
        _, res, rev = sink.next("snapshot")
        assert list(res) == [P + "globalnetworkpolicies/a"] and len(c.calls) == 1
    finally:
        s.stop()


def test_pages_read_ahead_at_one_revision():
    names = [f"p{i:03d}" for i in range(30)]
    c = PagedClient({P + f"globalnetworkpolicies/{n}": gnp(n) for n in names})
    c.watches = [[]]
    sink = Sink()
    s = Syncer(c, sink, backoff_initial=0.01, probe_interval=60, page_size=8)
    s.start()
    try:
        _, res, rev = sink.next("snapshot")
        assert sorted(res) == sorted(P + f"globalnetworkpolicies/{n}" for n in names) and rev == 100
        assert res[P + "globalnetworkpolicies/p007"].doc["spec"]["order"] == 1
        assert [lim for _, _, lim in c.calls] == [2, 8, 16, 32]
        assert c.calls[1][0] == (P + "globalnetworkpolicies/p001").encode() + b"\0"
        assert all(r == 100 for _, r, _ in c.calls[1:])
    finally:
        s.stop()


def test_page_size_zero_is_one_read_of_the_whole_prefix():
    c = PagedClient({P + f"globalnetworkpolicies/p{i}": gnp(f"p{i}") for i in range(30)})
    c.watches = [[]]
    sink = Sink()
    s = Syncer(c, sink, probe_interval=60, page_size=0)
    assert s.snapshot() == 100
    _, res, _ = sink.next("snapshot")
    assert len(res) == 30 and c.calls == [(P.encode(), None, 0)]


BAD_UTF8 = (P + "globalnetworkpolicies/").encode() + b"bad\xff\x1b[31m"


def test_parse_kv_key_not_utf8_is_a_bad_object():
    key = BAD_UTF8.decode("utf-8", "surrogateescape")      # as the datastore layer reads it
    with pytest.raises(BadObject, match="key is not valid UTF-8"):
        parse_kv(kv(key, gnp("bad"), 3))
    # a non-ASCII key that is UTF-8 is judged like any other (here: a name mismatch)
    with pytest.raises(BadObject, match="does not match"):
        parse_kv(kv(P + "globalnetworkpolicies/caf\u00e9", gnp("cafe"), 3))


def test_bad_keys_in_snapshot_and_watch_are_skipped_logged_escaped_and_counted(caplog):
    key = BAD_UTF8.decode("utf-8", "surrogateescape")
    c = FakeClient()
    good = kv(P + "globalnetworkpolicies/a", gnp("a"), 10)
    c.snapshots = [([kv(key, gnp("bad"), 9), good, kv(P + "globalnetworkpolicies/n", b"[1]", 11)], 20)]
    later_bad = (P + "globalnetworkpolicies/").encode() + b"w\xfe"
    c.watches = [[[WatchEvent("PUT", kv(later_bad.decode("utf-8", "surrogateescape"), b"\x00", 21), 21)],
                  [WatchEvent("PUT", kv(P + "globalnetworkpolicies/c", gnp("c"), 22), 22)]]]
    sink = Sink()
    s = Syncer(c, sink, backoff_initial=0.01, probe_interval=60)
    s.start()
    try:
        _, res, rev = sink.next("snapshot")
        assert list(res) == [P + "globalnetworkpolicies/a"]
        _, k, r = sink.next("update")            # the bad key: a deletion for the consumer
        assert k == later_bad.decode("utf-8", "surrogateescape") and r is None
        _, k, r = sink.next("update")            # the watch goes on
        assert k.endswith("/c") and r.name == "c"
        assert [k for k, new in sink.bad if new] == [key, P + "globalnetworkpolicies/n",
                                                     later_bad.decode("utf-8", "surrogateescape")]
        assert s.snapshots == 1 and s.connected
    finally:
        s.stop()
    logged = [r.getMessage() for r in caplog.records if "skipping bad datastore object" in r.getMessage()]
    assert len(logged) == 3 and all(m.isprintable() for m in logged)
    assert any("globalnetworkpolicies/bad\\xff\\x1b[31m (revision 9): key is not valid UTF-8" in m
               for m in logged), logged


def test_a_resync_reuses_what_the_consumer_holds_and_validates_only_the_rest():
    # The documents are held once, by the consumer: the syncer asks it (`known`)
    # and validates only keys it does not hold at that mod revision.
    held = kv(P + "globalnetworkpolicies/held", gnp("held"), 10)
    moved = kv(P + "globalnetworkpolicies/moved", gnp("moved"), 12)
    new = kv(P + "globalnetworkpolicies/new", gnp("new"), 13)
    validated = []

    def validate(doc):
        validated.append(doc["metadata"]["name"])
        return doc

    first = {key: parse_kv(x) for key, x in ((held.key, held), (moved.key, kv(moved.key, gnp("moved"), 11)))}

    class Holding(Sink):
        def known(self, key):
            return first.get(key)

    c = FakeClient()
    c.snapshots = [([held, moved, new], 20)]
    sink = Holding()
    s = Syncer(c, sink, validate=validate, probe_interval=60, page_size=0)
    assert s.snapshot() == 20
    _, res, _ = sink.next("snapshot")
    assert sorted(validated) == ["moved", "new"]
    assert res[held.key] is first[held.key]            # the consumer's own object, not a copy
    assert res[moved.key].revision == 12 and res[new.key].revision == 13


class ReasonSink(Sink):
    def on_status(self, connected, reason):
        self.q.put(("status", connected, reason))


def test_started_while_etcd_is_down_says_why():
    """The first status is news even when it is "not connected" again: an agent
    started while etcd is down reports the reason instead of staying silent."""
    c = FakeClient()
    c.snapshots = [DatastoreUnavailable("connection refused")]
    sink = ReasonSink()
    s = Syncer(c, sink, backoff_initial=0.01, backoff_max=0.05, probe_interval=60)
    s.start()
    try:
        _, connected, reason = sink.next("status")
        assert connected is False and "connection refused" in reason
    finally:
        s.stop()


def test_a_probe_failure_is_the_reason_given():
    c = FakeClient()
    c.snapshots = [([], 5)]
    c.watches = [[]]
    sink = ReasonSink()
    s = Syncer(c, sink, backoff_initial=0.01, probe_interval=0.05)
    s.start()
    try:
        sink.next("snapshot")
        c.reachable = False
        _, connected, reason = sink.next("status")
        assert connected is False and "did not answer" in reason, reason
    finally:
        s.stop()
