"""etcd restored from a snapshot (`etcdctl snapshot restore`, as the etcd role's
restore does) goes on from the snapshot's revision, so revision numbers come round
again with other values. The agent's syncer reuses what it holds for a key at the
same mod revision; after a restore it must not. A real etcd, a real snapshot and
restore, the real syncer and client: the key a policy lives under is written again
after the restore so that it lands on the very revision the agent last saw it at,
with another value."""
from __future__ import annotations

import os
import queue
import shutil
import subprocess
import time

from etcd_server import EtcdServer, free_port, start_etcd, stop_etcd, stop_process

from calico_net.agent.syncer import Syncer
from calico_net.datastore.etcd import EtcdClient, EtcdConfig
from calico_net.datastore.store import RESOURCE_PREFIX

KEY = RESOURCE_PREFIX + "globalnetworkpolicies/restored"
FILLER = "/calico-test-restore/filler"   # outside the agent's prefix: only moves the revision


def gnp(order: int) -> str:
    return ('{"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy", '
            f'"metadata": {{"name": "restored"}}, "spec": {{"order": {order}, "selector": "all()"}}}}')


class HoldingSink:
    """Holds what it was given, as the daemon does (`known` answers from it)."""

    def __init__(self) -> None:
        self.held: dict = {}
        self.snapshots: queue.Queue = queue.Queue()

    def known(self, key):
        return self.held.get(key)

    def on_snapshot(self, resources, revision):
        self.held = dict(resources)
        self.snapshots.put(revision)

    def on_update(self, key, res):
        if res is None:
            self.held.pop(key, None)
        else:
            self.held[key] = res

    def on_status(self, connected, reason):
        pass

    def on_bad_object(self, key, reason, new):
        pass


def _run(server: EtcdServer, args: list[str]) -> EtcdServer:
    """etcd again with `args` (the first start's, maybe with other client URLs)."""
    log = open(os.path.join(server.data_dir, "etcd-again.log"), "a")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = args[args.index("--listen-client-urls") + 1]
    again = EtcdServer(url, server.data_dir, proc)
    client = again.client()
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, open(os.path.join(server.data_dir, "etcd-again.log")).read()[-2000:]
            try:
                client.revision()
                return again
            except Exception:  # noqa: BLE001 - not up yet
                assert time.monotonic() < deadline, "the restored etcd did not answer in 30 s"
                time.sleep(0.1)
    finally:
        client.close()


def _put_at(client: EtcdClient, revision: int) -> None:
    """Move the revision with filler puts to just below `revision`, then put KEY there."""
    while client.revision() < revision - 1:
        client.put(FILLER, "x")
    assert client.revision() == revision - 1
    client.put(KEY, gnp(3))


def test_syncer_reuses_nothing_after_etcd_is_restored_from_a_snapshot(tmp_path):
    server = start_etcd()
    args = list(server.proc.args)
    procs = [server.proc]
    client = server.client()
    env = {**os.environ, "ETCDCTL_API": "3"}
    syncer = None
    try:
        client.put(KEY, gnp(1))
        snap = tmp_path / "snap.db"
        subprocess.run(["etcdctl", f"--endpoints={server.endpoints}", "snapshot", "save", str(snap)],
                       env=env, check=True, capture_output=True)
        for _ in range(5):
            client.put(FILLER, "x")
        client.put(KEY, gnp(2))
        seen_at = client.get(KEY).mod_revision
        for _ in range(20):            # the history goes on past it
            client.put(FILLER, "x")
        sink = HoldingSink()
        syncer = Syncer(EtcdClient(EtcdConfig(endpoints=[server.endpoints])), sink,
                        backoff_initial=0.05, backoff_max=0.2, probe_interval=0.5)
        syncer.start()
        sink.snapshots.get(timeout=60)
        assert sink.held[KEY].doc["spec"]["order"] == 2
        before = syncer.revision
        assert before > seen_at

        # restore: stop, rebuild the data directory from the snapshot, and bring the
        # revision to `seen_at` with KEY written there again, other contents, while
        # the agent cannot reach this etcd (another client port)
        client.close()
        stop_process(server.proc)
        data = args[args.index("--data-dir") + 1]
        shutil.move(data, data + ".before-restore")
        peer = args[args.index("--initial-advertise-peer-urls") + 1]
        subprocess.run(["etcdctl", "snapshot", "restore", str(snap), "--data-dir", data, "--name", "test",
                        "--initial-cluster", f"test={peer}", "--initial-advertise-peer-urls", peer],
                       env=env, check=True, capture_output=True)
        aside = list(args)
        other = f"http://127.0.0.1:{free_port()}"
        for flag in ("--listen-client-urls", "--advertise-client-urls"):
            aside[aside.index(flag) + 1] = other
        restored = _run(server, aside)
        procs.append(restored.proc)
        client = restored.client()
        assert client.revision() < seen_at
        _put_at(client, seen_at)
        assert client.get(KEY).mod_revision == seen_at     # the same key at the same revision
        client.close()
        stop_process(restored.proc)

        # back at the agent's address
        back = _run(server, args)
        procs.append(back.proc)
        client = back.client()
        deadline = time.monotonic() + 60
        while True:
            rev = sink.snapshots.get(timeout=max(0.1, deadline - time.monotonic()))
            if rev == seen_at:
                break
        assert sink.held[KEY].doc["spec"]["order"] == 3
        assert syncer.history_reset
    finally:
        if syncer is not None:
            syncer.stop()
        client.close()
        for p in procs:
            stop_process(p)
        stop_etcd(server)
        shutil.rmtree(server.data_dir, ignore_errors=True)
