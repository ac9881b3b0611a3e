"""Keys that are not UTF-8 and values that are not JSON objects, written into a real
etcd with etcdctl (bytes, as anyone with etcd access can write them): the agent's
syncer (snapshot over gRPC, over the JSON gateway, and its watch), confd and
calicoctl skip each one — logged once with the key escaped, counted — and go on with
the rest; a later valid change is still seen.
"""
from __future__ import annotations

import logging
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from calico_net.agent.confd.runner import Confd, ConfdSettings
from calico_net.agent.syncer import Syncer
from calico_net.datastore import Datastore

P = "/calico/resources/v3/projectcalico.org/"
GNPS = P + "globalnetworkpolicies/"
NODES = P + "nodes/"
PEERS = P + "bgppeers/"
CALICOCTL = str(Path(sys.executable).parent / "calicoctl")

# Sorts right after p003: with page_size 4 (a first page of 1, then one of 4) it is
# the last key of the second page, so the next page is asked for from its raw bytes.
BAD_KEY = GNPS.encode() + b"p003\xff"
NOT_JSON = GNPS + "zz-not-json"
NOT_OBJECT = GNPS + "zz-array"


def as_str(key: bytes) -> str:
    """A key as the datastore layer reads it (bytes that are not UTF-8 kept)."""
    return key.decode("utf-8", "surrogateescape")


def etcdctl(etcd, *args: str | bytes) -> None:
    env = {**os.environ, "ETCDCTL_API": "3"}
    proc = subprocess.run(["etcdctl", f"--endpoints={etcd.endpoints}", *args], env=env,
                          capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


def gnp(name: str, order: int) -> dict[str, Any]:
    return {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
            "metadata": {"name": name}, "spec": {"order": order, "selector": "all()"}}


def seed_gnps(etcd, etcd_client) -> list[str]:
    names = [f"p{i:03d}" for i in range(10)]
    Datastore(etcd_client).apply_all([gnp(n, i) for i, n in enumerate(names)])
    etcdctl(etcd, "put", BAD_KEY, b'{"kind": "GlobalNetworkPolicy"}')
    etcdctl(etcd, "put", NOT_JSON, "{not json")
    etcdctl(etcd, "put", NOT_OBJECT, "[1, 2]")
    return names


def wait(cond, timeout: float = 15, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Sink:
    def __init__(self) -> None:
        self.snapshots: queue.Queue[Any] = queue.Queue()
        self.updates: list[tuple[str, Any]] = []
        self.bad: list[tuple[str, str, bool]] = []
        self.status: list[bool] = []

    def known(self, key):
        return None

    def on_snapshot(self, resources, revision):
        self.snapshots.put((resources, revision))

    def on_update(self, key, resource):
        self.updates.append((key, resource))

    def on_status(self, connected, reason):
        self.status.append(connected)

    def on_bad_object(self, key, reason, new):
        self.bad.append((key, reason, new))


def test_syncer_skips_undecodable_keys_and_keeps_syncing(etcd, etcd_client, caplog):
    names = seed_gnps(etcd, etcd_client)
    caplog.set_level(logging.WARNING, logger="calico_net.agent.syncer")
    sink = Sink()
    s = Syncer(etcd_client, sink, page_size=4, backoff_initial=0.05, probe_interval=0.5)
    s.start()
    try:
        resources, _ = sink.snapshots.get(timeout=15)
        # the snapshot holds every valid key, the bad ones are skipped and counted
        assert sorted(resources) == [GNPS + n for n in names]
        reasons = {k: r for k, r, new in sink.bad if new}
        assert set(reasons) == {as_str(BAD_KEY), NOT_JSON, NOT_OBJECT}
        assert reasons[as_str(BAD_KEY)] == "key is not valid UTF-8"
        assert reasons[NOT_JSON].startswith("value is not JSON")
        assert reasons[NOT_OBJECT] == "value is not a JSON object"
        assert set(s.bad) == set(reasons)
        # logged with the key escaped: the byte as \xff, nothing unprintable
        logged = [r.getMessage() for r in caplog.records if "skipping bad datastore object" in r.getMessage()]
        assert any(GNPS + "p003\\xff (revision" in m for m in logged), logged
        assert all(m.isprintable() for m in logged)

        # while the watch runs: more bad keys, then a valid change, which is seen
        etcdctl(etcd, "put", GNPS.encode() + b"w\xfe\xfd", b"{}")
        etcdctl(etcd, "put", GNPS + "w-not-json", "\x01\x02")
        Datastore(etcd_client).apply(gnp("p100", 100))
        wait(lambda: any(k == GNPS + "p100" and r is not None for k, r in sink.updates),
             what="the valid change after the bad keys")
        later = {k for k, _, new in sink.bad if new}
        assert {as_str(GNPS.encode() + b"w\xfe\xfd"), GNPS + "w-not-json"} <= later
        # a bad key is a deletion for the consumer, never a resource
        assert (as_str(GNPS.encode() + b"w\xfe\xfd"), None) in sink.updates
        # one snapshot, never disconnected: the bad keys broke neither read
        assert s.snapshots == 1 and sink.status == [True]
    finally:
        s.stop()


def ctl(etcd, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([CALICOCTL, *args], input=stdin, capture_output=True, text=True,
                          env=etcd.env(), timeout=60)


def errors_of(proc: subprocess.CompletedProcess) -> list[str]:
    """stderr without the plaintext-etcd warning (the test etcd is http://)."""
    return [line for line in proc.stderr.splitlines()
            if not line.startswith("WARNING calico_net.datastore.transport:")]


def test_calicoctl_get_lists_the_rest_and_names_the_bad_keys(etcd, etcd_client):
    names = seed_gnps(etcd, etcd_client)
    proc = ctl(etcd, "get", "gnp")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[0] == "NAME"
    assert [line.split()[0] for line in lines[1:]] == names          # the valid ones
    err = errors_of(proc)
    assert "Traceback" not in proc.stderr
    assert f"calicoctl: warning: skipped etcd key {GNPS}p003\\xff: key is not valid UTF-8" in err
    assert any(line.startswith(f"calicoctl: warning: skipped etcd key {NOT_JSON}: value is not JSON")
               for line in err), err
    assert f"calicoctl: warning: skipped etcd key {NOT_OBJECT}: value is not a JSON object" in err
    assert err[-1] == "calicoctl: warning: 3 GlobalNetworkPolicy keys in etcd skipped"

    proc = ctl(etcd, "get", "gnp", "-o", "yaml")
    assert proc.returncode == 0, proc.stderr
    assert [d["metadata"]["name"] for d in yaml.safe_load(proc.stdout)["items"]] == names

    # asked for by name, a bad value is an error naming its key, on one line
    proc = ctl(etcd, "get", "gnp", "zz-not-json")
    assert proc.returncode == 1
    err = errors_of(proc)
    assert len(err) == 1 and err[0].startswith(f"calicoctl: etcd key {NOT_JSON}: value is not JSON"), err

    # and it can be put right: apply writes over it, delete removes it
    proc = ctl(etcd, "apply", "-f", "-", stdin=yaml.safe_dump(gnp("zz-not-json", 5)))
    assert proc.returncode == 0, proc.stderr
    assert ctl(etcd, "delete", "gnp", "zz-array").returncode == 0
    proc = ctl(etcd, "get", "gnp")
    assert proc.returncode == 0 and "zz-not-json" in proc.stdout.split()
    assert errors_of(proc) == [f"calicoctl: warning: skipped etcd key {GNPS}p003\\xff: key is not valid UTF-8"]


def test_confd_skips_them_and_keeps_rendering(etcd, etcd_client, tmp_path):
    """confd's reader (the real Confd with its Watcher on a real etcd, bird.cfg checked
    by the real `bird -p`; only the reload, which needs a running BIRD, is a stub)."""
    ds = Datastore(etcd_client)
    for name, ip in (("h1", "198.18.0.11"), ("h2", "198.18.0.12")):
        ds.apply({"apiVersion": "projectcalico.org/v3", "kind": "Node", "metadata": {"name": name},
                  "spec": {"bgp": {"ipv4Address": f"{ip}/24"}}})
    etcdctl(etcd, "put", NODES.encode() + b"h9\xff", b'{"kind": "Node"}')
    etcdctl(etcd, "put", PEERS + "not-json", "{")
    etcdctl(etcd, "put", b"/calico/ipam/v2/host/h1/ipv4/block/198.19.0.64-26\xc3", b"{}")
    settings = ConfdSettings(
        node_name="h1", bird_config=str(tmp_path / "bird.cfg"), bird_socket=str(tmp_path / "bird.ctl"),
        secrets_dir=str(tmp_path / "secrets"), status_file=str(tmp_path / "status.json"),
        health_enabled=False, coalesce=0.01, coalesce_max=0.1, backoff_initial=0.05,
        backoff_max=0.2, probe_interval=0.5)
    reloads: list[int] = []
    confd = Confd(settings, etcd_client, reload=lambda: reloads.append(1))
    cfg = Path(settings.bird_config)
    t = threading.Thread(target=confd.run, daemon=True)
    t.start()
    try:
        wait(lambda: cfg.exists() and "198.18.0.12" in cfg.read_text(), what="first bird.cfg")
        assert set(confd.index.bad) == {
            as_str(NODES.encode() + b"h9\xff"), PEERS + "not-json",
            as_str(b"/calico/ipam/v2/host/h1/ipv4/block/198.19.0.64-26\xc3")}
        assert confd.index.bad[as_str(NODES.encode() + b"h9\xff")][1] == "key is not valid UTF-8"
        # while watching: another bad key, then a valid change — rendered
        etcdctl(etcd, "put", PEERS.encode() + b"p\xff", b"{}")
        ds.apply({"apiVersion": "projectcalico.org/v3", "kind": "Node", "metadata": {"name": "h3"},
                  "spec": {"bgp": {"ipv4Address": "198.18.0.13/24"}}})
        wait(lambda: "198.18.0.13" in cfg.read_text(), what="bird.cfg with the new node")
        assert as_str(PEERS.encode() + b"p\xff") in confd.index.bad
        assert confd.metrics.skipped.value >= 4
        assert confd.watcher.snapshots == 1 and confd.watcher.connected
        assert reloads
    finally:
        confd.stop()
        t.join(10)
    assert not t.is_alive()


def test_calicoctl_table_never_prints_control_characters_from_etcd(etcd, etcd_client):
    # written straight into etcd (calicoctl would refuse it): a selector with ANSI escapes
    value = ('{"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy", '
             '"metadata": {"name": "ansi"}, "spec": {"order": 1, "selector": "\\u001b[2J\\u001b]0;x\\u0007"}}')
    etcdctl(etcd, "put", GNPS + "ansi", value)
    proc = ctl(etcd, "get", "gnp", "-o", "wide")
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout and "\x07" not in proc.stdout
    assert "\\x1b[2J\\x1b]0;x\\x07" in proc.stdout
