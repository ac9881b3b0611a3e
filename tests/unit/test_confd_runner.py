"""Unit tests for confd's live half (calico_net.agent.confd.runner) with a fake etcd.

BIRD is replaced by injected ``validate``/``reload`` callables; the real ``bird -p``
and BIRD run in tests/fv/test_bgp_fabric.py.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from calico_net.agent.confd.render import BirdConfigError
from calico_net.agent.confd.runner import (
    BGPIndex,
    Confd,
    ConfdSettings,
    SecretReader,
    watched_prefixes,
)
from calico_net.datastore.errors import DatastoreUnavailable
from calico_net.datastore.etcd import KV, WatchCompacted, WatchEvent
from calico_net.datastore.store import RESOURCE_PREFIX

NODES = RESOURCE_PREFIX + "nodes/"
PEERS = RESOURCE_PREFIX + "bgppeers/"
POOLS = RESOURCE_PREFIX + "ippools/"
CONFIGS = RESOURCE_PREFIX + "bgpconfigurations/"


# ------------------------------------------------------------------ fake etcd


class FakeWatch:
    def __init__(self, store: FakeEtcd, prefix: str, start: int) -> None:
        self.store = store
        self.prefix = prefix
        self.start = start
        self.q: queue.Queue[Any] = queue.Queue()
        self.cancelled = False

    def __iter__(self) -> Iterator[list[WatchEvent]]:
        if self.start <= self.store.compacted:
            raise WatchCompacted(self.store.compacted)
        for ev in self.store.history:
            if ev.revision >= self.start and ev.kv.key.startswith(self.prefix):
                yield [ev]
        while True:
            item = self.q.get()
            if self.cancelled or item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield [item]

    def cancel(self) -> None:
        self.cancelled = True
        self.q.put(None)


class FakeEtcd:
    """Enough of EtcdClient for the watcher: ranges at a revision, watches, history."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.data: dict[str, KV] = {}
        self.rev = 1
        self.compacted = 0
        self.history: list[WatchEvent] = []
        self.watches: list[FakeWatch] = []
        self.snapshots = 0
        self.fail_reads = False

    def _emit(self, ev: WatchEvent) -> None:
        self.history.append(ev)
        for w in list(self.watches):
            if not w.cancelled and ev.kv.key.startswith(w.prefix) and ev.revision >= w.start:
                w.q.put(ev)

    def put(self, key: str, value: Any) -> int:
        raw = value if isinstance(value, bytes) else json.dumps(value).encode()
        with self.lock:
            self.rev += 1
            kv = KV(key, raw, self.rev, self.rev, 1)
            self.data[key] = kv
            self._emit(WatchEvent("PUT", kv, self.rev))
            return self.rev

    def delete(self, key: str) -> None:
        with self.lock:
            if key in self.data:
                self.rev += 1
                del self.data[key]
                self._emit(WatchEvent("DELETE", KV(key, b"", self.rev, 0, 0), self.rev))

    def get_prefix(self, prefix: str, *, revision: int | None = None) -> tuple[list[KV], int]:
        if self.fail_reads:
            raise DatastoreUnavailable("cannot reach etcd: fake outage")
        with self.lock:
            if revision is None:
                self.snapshots += 1
            return sorted((kv for k, kv in self.data.items() if k.startswith(prefix)),
                          key=lambda kv: kv.key), self.rev

    def revision(self) -> int:
        if self.fail_reads:
            raise DatastoreUnavailable("cannot reach etcd: fake outage")
        return self.rev

    def watch_prefix(self, prefix: str, start: int) -> FakeWatch:
        w = FakeWatch(self, prefix, start)
        with self.lock:
            self.watches.append(w)
        return w

    def break_watches(self, exc: BaseException) -> None:
        for w in list(self.watches):
            if not w.cancelled:
                w.q.put(exc)

    def compact(self) -> None:
        self.compacted = self.rev


# ------------------------------------------------------------------ resources


def node(name: str, ip: str, **bgp: Any) -> dict[str, Any]:
    return {"apiVersion": "projectcalico.org/v3", "kind": "Node", "metadata": {"name": name},
            "spec": {"bgp": {"ipv4Address": f"{ip}/24", **bgp}}}


def pool(name: str = "pool", cidr: str = "198.19.0.0/16") -> dict[str, Any]:
    return {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": name},
            "spec": {"cidr": cidr, "blockSize": 26}}


def peer(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "projectcalico.org/v3", "kind": "BGPPeer", "metadata": {"name": name},
            "spec": spec}


def affinity_key(node_name: str, cidr: str) -> str:
    return f"/calico/ipam/v2/host/{node_name}/ipv4/block/{cidr.replace('/', '-')}"


def seed(etcd: FakeEtcd) -> None:
    etcd.put(NODES + "h1", node("h1", "198.18.0.11"))
    etcd.put(NODES + "h2", node("h2", "198.18.0.12"))
    etcd.put(POOLS + "pool", pool())
    etcd.put(affinity_key("h1", "198.19.0.0/26"), {"state": "confirmed", "deleted": False})


# ------------------------------------------------------------------ fixtures


class FakeBird:
    def __init__(self) -> None:
        self.validated: list[str] = []
        self.reloads = 0
        self.reject: str | None = None  # substring that makes validate fail
        self.reload_error: Exception | None = None
        self.gate: threading.Event | None = None  # when set up, validate waits for it
        self.in_validate = threading.Event()

    def validate(self, text: str) -> None:
        self.validated.append(text)
        if self.gate is not None:
            self.in_validate.set()
            assert self.gate.wait(60), "validate gate never opened"
        if self.reject and self.reject in text:
            raise BirdConfigError(f"bird: bird.cfg:1:1 rejected because of {self.reject}", 1)

    def reload(self) -> None:
        if self.reload_error is not None:
            raise self.reload_error
        self.reloads += 1


def settings(tmp_path: Path, **kw: Any) -> ConfdSettings:
    base = dict(
        node_name="h1", bird_config=str(tmp_path / "bird.cfg"),
        bird_socket=str(tmp_path / "bird.ctl"), secrets_dir=str(tmp_path / "secrets"),
        status_file=str(tmp_path / "status.json"), health_enabled=False,
        coalesce=0.01, coalesce_max=0.1, refresh_interval=30, reload_retry=0.05,
        backoff_initial=0.01, backoff_max=0.05, probe_interval=0.2,
    )
    base.update(kw)
    return ConfdSettings(**base)


def make(tmp_path: Path, etcd: FakeEtcd | None = None, **kw: Any) -> tuple[Confd, FakeBird]:
    bird = FakeBird()
    confd = Confd(settings(tmp_path, **kw), etcd or FakeEtcd(), validate=bird.validate,
                  reload=bird.reload)
    return confd, bird


def wait(cond, timeout: float = 60, what: str = "condition") -> Any:
    """Poll `cond` until true; the timeout is a hang guard, not a speed check."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Confd, FakeBird, FakeEtcd]]:
    etcd = FakeEtcd()
    seed(etcd)
    confd, bird = make(tmp_path, etcd)
    t = threading.Thread(target=confd.run, daemon=True)
    t.start()
    try:
        yield confd, bird, etcd
    finally:
        confd.stop()
        t.join(10)
        assert not t.is_alive()


def cfg_text(confd: Confd) -> str:
    try:
        return Path(confd.settings.bird_config).read_text()
    except FileNotFoundError:
        return ""


# ------------------------------------------------------------------ the index


def kv(key: str, value: Any, rev: int = 5) -> KV:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return KV(key, raw, rev, rev, 1)


def test_watched_prefixes() -> None:
    assert watched_prefixes("h1") == [
        NODES, CONFIGS, PEERS, POOLS, "/calico/resources/v3/projectcalico.org/bgpfilters/",
        "/calico/ipam/v2/host/h1/"]


def test_index_snapshot_events_and_render_input() -> None:
    idx = BGPIndex("h1")
    assert idx.load([kv(NODES + "h1", node("h1", "198.18.0.11")), kv(POOLS + "pool", pool()),
                     kv(affinity_key("h1", "198.19.0.64/26"), {"state": "confirmed"}),
                     kv(affinity_key("h1", "198.19.0.0/26"), {"state": "pending"})], 7)
    inp = idx.render_input()
    assert [n["metadata"]["name"] for n in inp.nodes] == ["h1"]
    assert inp.blocks == ["198.19.0.0/26", "198.19.0.64/26"]
    assert inp.revision == 7
    # The same snapshot again changes nothing.
    assert not idx.load([kv(NODES + "h1", node("h1", "198.18.0.11")), kv(POOLS + "pool", pool()),
                         kv(affinity_key("h1", "198.19.0.64/26"), {"state": "confirmed"}),
                         kv(affinity_key("h1", "198.19.0.0/26"), {"state": "pending"})], 8)
    # An affinity being released is no longer exported.
    assert idx.apply("PUT", kv(affinity_key("h1", "198.19.0.64/26"),
                               {"state": "pendingDeletion"}, 9))
    assert idx.render_input().blocks == ["198.19.0.0/26"]
    assert idx.apply("DELETE", kv(affinity_key("h1", "198.19.0.0/26"), b"", 10))
    assert idx.render_input().blocks == []
    assert not idx.apply("DELETE", kv(NODES + "nobody", b"", 11))


def test_index_snapshot_from_a_restarted_history_is_parsed_afresh() -> None:
    """A mod revision names one value within one etcd history only: after a restore
    from a snapshot the same revision comes round again with other contents."""
    idx = BGPIndex("h1")
    idx.load([kv(NODES + "h2", node("h2", "198.18.0.12"), 40)], 50)
    assert idx.apply("PUT", kv(NODES + "h3", node("h3", "198.18.0.13"), 60))
    # within the history: the same key at the same revision is the value held
    assert not idx.load([kv(NODES + "h2", node("h2", "198.18.0.99"), 40),
                         kv(NODES + "h3", node("h3", "198.18.0.13"), 60)], 70)
    assert [n["spec"]["bgp"]["ipv4Address"] for n in idx.render_input().nodes] == ["198.18.0.12/24", "198.18.0.13/24"]
    # the revision went back (70 -> 55): the same revision 40 now holds another value
    assert idx.load([kv(NODES + "h2", node("h2", "198.18.0.99"), 40)], 55)
    assert [n["spec"]["bgp"]["ipv4Address"] for n in idx.render_input().nodes] == ["198.18.0.99/24"]


def test_index_bad_values_logged_once_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []
    idx = BGPIndex("h1", on_bad=lambda k, r: seen.append(k))
    good = node("h2", "198.18.0.12")
    idx.load([kv(NODES + "h2", good, 3)], 3)
    caplog.set_level(logging.WARNING)
    # h2 turns bad: it drops out (not kept at its old value), logged once.
    assert idx.apply("PUT", kv(NODES + "h2", b"{not json", 4))
    assert idx.render_input().nodes == []
    idx.load([kv(NODES + "h2", b"{not json", 4)], 5)  # a resync sees it again: no new log
    invalid = node("h3", "198.18.0.13")
    invalid["spec"]["bgp"]["asNumber"] = "not-an-as"
    assert not idx.apply("PUT", kv(NODES + "h3", invalid, 6))
    assert not idx.apply("PUT", kv(NODES + "h4", {**node("h4", "198.18.0.14"), "kind": "IPPool"}, 7))
    assert not idx.apply("PUT", kv(affinity_key("h1", "198.19.0.0/26"), b"[1]", 8))
    assert seen == [NODES + "h2", NODES + "h3", NODES + "h4", affinity_key("h1", "198.19.0.0/26")]
    assert len([r for r in caplog.records if "skipping bad datastore value" in r.message]) == 4
    assert set(idx.bad) == set(seen)
    # Fixed again: back in, no longer bad.
    assert idx.apply("PUT", kv(NODES + "h2", good, 9))
    assert NODES + "h2" not in idx.bad


# ------------------------------------------------------------------ one step


def loaded(tmp_path: Path, etcd: FakeEtcd | None = None, **kw: Any) -> tuple[Confd, FakeBird, FakeEtcd]:
    etcd = etcd or FakeEtcd()
    if not etcd.data:
        seed(etcd)
    confd, bird = make(tmp_path, etcd, **kw)
    confd.watcher.snapshot()
    return confd, bird, etcd


def test_step_writes_validates_and_reloads_only_on_change(tmp_path: Path) -> None:
    confd, bird, etcd = loaded(tmp_path)
    confd.step()
    text = cfg_text(confd)
    assert "protocol bgp Mesh_198_18_0_12" in text
    assert "route 198.19.0.0/26 blackhole;" in text
    assert (Path(confd.settings.bird_config).stat().st_mode & 0o777) == 0o640
    assert bird.reloads == 1 and len(bird.validated) == 1
    status = json.loads(Path(confd.settings.status_file).read_text())
    assert status["state"] == "ok" and status["ready"] is True
    assert status["config_sha256"]
    # Nothing changed: no validation, no write, no reload.
    mtime = Path(confd.settings.bird_config).stat().st_mtime_ns
    confd.step()
    assert bird.reloads == 1 and len(bird.validated) == 1
    assert Path(confd.settings.bird_config).stat().st_mtime_ns == mtime
    # A new block: new bytes, one reload.
    confd.index.apply("PUT", kv(affinity_key("h1", "198.19.0.64/26"), {"state": "confirmed"}, 50))
    confd.step()
    assert "route 198.19.0.64/26 blackhole;" in cfg_text(confd)
    assert bird.reloads == 2
    assert confd.metrics.config_writes.value == 2


def test_rejected_render_keeps_last_good_config(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    confd, bird, etcd = loaded(tmp_path)
    confd.step()
    good = cfg_text(confd)
    bird.reject = "Global_198_18_0_254"
    confd.index.apply("PUT", kv(PEERS + "tor", peer("tor", peerIP="198.18.0.254", asNumber=65001), 60))
    caplog.set_level(logging.ERROR)
    for _ in range(3):
        confd.step()
    assert cfg_text(confd) == good
    assert bird.reloads == 1
    assert confd.status.state == "rejected"
    assert "rejected because of" in confd.status.error
    ok, why = confd.status.ready()
    assert not ok and "rejected" in why
    assert confd.metrics.validation_failures.value == 1  # the same render is not re-validated
    assert confd.metrics.last_render_ok.value == 0
    assert len([r for r in caplog.records if "rejected the rendered config" in r.message]) == 1
    status = json.loads(Path(confd.settings.status_file).read_text())
    assert status["state"] == "rejected" and status["rejected_sha256"]
    # Another change while broken is still judged as a whole: still rejected.
    confd.index.apply("PUT", kv(affinity_key("h1", "198.19.0.64/26"), {"state": "confirmed"}, 61))
    confd.step()
    assert cfg_text(confd) == good and confd.metrics.validation_failures.value == 2
    assert len(bird.validated) == 3
    # BIRD's verdict on a text is final: the same render is not validated again...
    bird.reject = None
    confd.step()
    assert cfg_text(confd) == good and confd.metrics.validation_failures.value == 2
    # ...but any change is, and a good one goes in and BIRD is told.
    confd.index.apply("DELETE", kv(affinity_key("h1", "198.19.0.64/26"), b"", 62))
    confd.step()
    assert len(bird.validated) == 4
    assert "Global_198_18_0_254" in cfg_text(confd)
    assert confd.status.state == "ok" and bird.reloads == 2
    assert confd.metrics.last_render_ok.value == 1


def test_back_to_the_running_config_clears_the_rejection(tmp_path: Path) -> None:
    confd, bird, etcd = loaded(tmp_path)
    confd.step()
    bird.reject = "Global_"
    confd.index.apply("PUT", kv(PEERS + "bad", peer("bad", peerIP="198.18.0.250", asNumber=65001), 70))
    confd.step()
    assert confd.status.state == "rejected"
    confd.index.apply("DELETE", kv(PEERS + "bad", b"", 71))
    confd.step()
    assert confd.status.state == "ok" and bird.reloads == 1  # same bytes: no reload


def test_render_error_keeps_file_and_reports(tmp_path: Path) -> None:
    etcd = FakeEtcd()
    etcd.put(NODES + "h2", node("h2", "198.18.0.12"))  # no Node h1 yet
    confd, bird, _ = loaded(tmp_path, etcd)
    confd.step()
    assert not Path(confd.settings.bird_config).exists()
    assert confd.status.state == "render-error" and "not found" in confd.status.error
    assert confd.metrics.render_errors.value == 1 and bird.reloads == 0
    confd.index.apply("PUT", kv(NODES + "h1", node("h1", "198.18.0.11"), 80))
    confd.step()
    assert confd.status.state == "ok" and bird.reloads == 1


def test_reload_failure_is_retried(tmp_path: Path) -> None:
    from calico_net.agent.confd.birdctl import BirdCtlError

    confd, bird, _ = loaded(tmp_path)
    bird.reload_error = BirdCtlError("cannot connect to BIRD")
    confd.step()
    assert confd.reload_pending and confd.metrics.reload_failures.value == 1
    assert "BIRD has not taken" in confd.status.ready()[1] or not confd.status.ready()[0]
    bird.reload_error = None
    wait(lambda: time.monotonic() >= confd.next_reload_try, what="the reload retry time")
    confd.step()  # same text: only the pending reload happens
    assert not confd.reload_pending and bird.reloads == 1 and confd.status.bird_reloaded


def test_existing_file_with_same_bytes_is_not_rewritten_but_bird_is_told(tmp_path: Path) -> None:
    confd, bird, etcd = loaded(tmp_path)
    confd.step()
    mtime = Path(confd.settings.bird_config).stat().st_mtime_ns
    # A restarted confd renders the same bytes: no write, one configure for safety.
    again, bird2 = make(tmp_path, etcd)
    again.watcher.snapshot()
    again.step()
    assert Path(again.settings.bird_config).stat().st_mtime_ns == mtime
    assert again.metrics.config_writes.value == 0 and bird2.reloads == 1


def test_passwords_from_secret_files_never_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    secret = tmp_path / "secrets" / "bgp" / "tor"
    secret.parent.mkdir(parents=True)
    secret.write_text("s3cret-Value\n")
    confd, bird, etcd = loaded(tmp_path)
    caplog.set_level(logging.DEBUG)
    confd.index.apply("PUT", kv(PEERS + "tor", peer(
        "tor", peerIP="198.18.0.254", asNumber=65001,
        password={"secretKeyRef": {"name": "bgp", "key": "tor"}}), 90))
    confd.step()
    assert 'password "s3cret-Value";' in cfg_text(confd)
    assert "s3cret-Value" not in caplog.text
    assert "s3cret-Value" not in Path(confd.settings.status_file).read_text()


def test_secret_reader(tmp_path: Path) -> None:
    (tmp_path / "s" / "k").parent.mkdir()
    (tmp_path / "s" / "k").write_text("from-file")
    env = {SecretReader.env_name("other-secret", "pw.key"): "from-env"}
    assert SecretReader.env_name("other-secret", "pw.key") == "CALICO_BGP_PASSWORD_OTHER_SECRET_PW_KEY"
    r = SecretReader(str(tmp_path), env)
    assert r({"name": "s", "key": "k"}) == "from-file"
    assert r({"name": "other-secret", "key": "pw.key"}) == "from-env"
    assert r({"name": "missing", "key": "k"}) is None
    assert r({"name": "..", "key": "k"}) is None
    assert r({"name": "s/../s", "key": "k"}) is None


def test_settings_from_env() -> None:
    s = ConfdSettings.from_env({
        "NODENAME": "n1", "CALICO_BIRD_CONFIG": "/x/bird.cfg", "CALICO_BIRD_SOCKET": "/x/b.ctl",
        "CALICO_BGP_SECRETS_DIR": "/x/secrets", "CALICO_CONFD_HEALTHPORT": "9999",
        "CALICO_CONFD_STATUS_FILE": "", "CALICO_ROUTER_ID": "hash",
    })
    assert (s.node_name, s.bird_config, s.bird_socket, s.secrets_dir, s.health_port) == (
        "n1", "/x/bird.cfg", "/x/b.ctl", "/x/secrets", 9999)
    assert s.status_file is None and s.options.router_id == "hash"
    d = ConfdSettings.from_env({"NODENAME": "n1"})
    assert d.bird_config == "/etc/calico/confd/config/bird.cfg"
    assert d.bird_socket == "/var/run/calico/bird.ctl"
    assert d.health_port == 9098 and d.health_host == "127.0.0.1"


# ------------------------------------------------------------------ the running loop


def test_run_follows_the_watch_and_coalesces(running) -> None:
    confd, bird, etcd = running
    wait(lambda: "Mesh_198_18_0_12" in cfg_text(confd), what="first render")
    wait(lambda: confd.status.ready()[0], what="ready")
    renders = confd.metrics.renders.value
    # A burst of 30 changes arriving while a render is under way renders once more
    # after it, not 30 times. The render is held in validate until the whole burst
    # is in the index, so the count does not depend on how fast the machine is.
    bird.gate = threading.Event()
    etcd.put(NODES + "n0", node("n0", "198.18.1.1"))
    wait(bird.in_validate.is_set, 60, "a render under way")
    for i in range(1, 30):
        etcd.put(NODES + f"n{i}", node(f"n{i}", f"198.18.1.{i + 1}"))
    wait(lambda: "198.18.1.30" in str(confd.index.render_input().nodes), 60, "the burst in the index")
    bird.gate.set()
    wait(lambda: "Mesh_198_18_1_30" in cfg_text(confd), 60, "burst rendered")
    assert confd.metrics.renders.value - renders == 2
    bird.gate = None
    etcd.delete(NODES + "h2")
    wait(lambda: "Mesh_198_18_0_12" not in cfg_text(confd), what="deletion rendered")


def test_run_resyncs_after_compaction_and_outage(running) -> None:
    confd, bird, etcd = running
    wait(lambda: confd.status.ready()[0], what="ready")
    snaps = etcd.snapshots
    # Compaction: the watch breaks, a fresh snapshot is taken at once.
    etcd.compact()
    etcd.break_watches(WatchCompacted(etcd.rev))
    wait(lambda: etcd.snapshots > snaps, what="resync after compaction")
    wait(lambda: confd.metrics.resyncs.value >= 1, what="resync counted")
    # A change made while the watch was down is picked up by the snapshot.
    etcd.fail_reads = True
    etcd.break_watches(DatastoreUnavailable("connection lost"))
    wait(lambda: not confd.status.datastore_connected, what="datastore lost")
    assert "datastore lost" in confd.status.ready()[1]
    etcd.put(PEERS + "tor", peer("tor", peerIP="198.18.0.254", asNumber=65001))
    etcd.fail_reads = False
    wait(lambda: "Global_198_18_0_254" in cfg_text(confd), what="change seen after the outage")
    wait(lambda: confd.status.ready()[0], what="ready again")


def test_health_endpoints(tmp_path: Path) -> None:
    etcd = FakeEtcd()
    seed(etcd)
    confd, bird = make(tmp_path, etcd, health_enabled=True, health_port=0)
    t = threading.Thread(target=confd.run, daemon=True)
    t.start()
    try:
        wait(lambda: confd.health_port, what="health server")
        base = f"http://127.0.0.1:{confd.health_port}"
        wait(lambda: requests.get(base + "/readiness", timeout=2).status_code == 200,
             what="readiness 200")
        assert requests.get(base + "/liveness", timeout=2).status_code == 200
        metrics = requests.get(base + "/metrics", timeout=2).text
        assert "calico_confd_bird_reloads_total 1" in metrics
        assert requests.get(base + "/status", timeout=2).json()["state"] == "ok"
        bird.reject = "Global_"
        etcd.put(PEERS + "x", peer("x", peerIP="198.18.0.250", asNumber=65001))
        wait(lambda: requests.get(base + "/readiness", timeout=2).status_code == 503,
             what="readiness 503 on a rejected render")
        assert "rejected" in requests.get(base + "/readiness", timeout=2).text
        assert requests.get(base + "/nope", timeout=2).status_code == 404
    finally:
        confd.stop()
        t.join(10)


def test_validator_that_cannot_run_is_retried(tmp_path: Path) -> None:
    confd, bird, _ = loaded(tmp_path)
    calls = []

    def flaky(text: str) -> None:
        calls.append(text)
        if len(calls) == 1:
            raise TimeoutError("bird -p timed out")

    confd.validate = flaky
    confd.step()
    assert confd.status.state == "rejected" and "cannot run bird -p" in confd.status.error
    assert not Path(confd.settings.bird_config).exists()
    confd.step()  # same text, but it was never judged: validated again, and installed
    assert len(calls) == 2 and confd.status.state == "ok" and bird.reloads == 1


@pytest.mark.parametrize("name", ["a/b", "..", "n1\n", "n\x00"])
def test_settings_refuse_a_node_name_that_is_not_one_key_component(name: str) -> None:
    with pytest.raises(ValueError, match="node name"):
        ConfdSettings.from_env({"NODENAME": name})
