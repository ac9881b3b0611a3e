"""Drill: a 3-member etcd loses one member (SIGKILL) while `calicoctl apply` writes
1,000 documents (issue 21).

The cluster is the drill's own (`drill_util.EtcdCluster`: 127.0.0.61-63, data on
tmpfs); the session's etcd is not touched. The manifest is 1,000 GlobalNetworkSets.
The member lost is the leader at the time (the harder case: the survivors elect a
new one before anything commits). Two seams put the kill inside the apply:

* on the wire: calicoctl talks to the leader through `tcp_proxy.TripProxy`, which
  SIGKILLs it when three quarters of the apply's request bytes (measured once by a clean
  apply of the same shape: key reads first, then the write) have gone through -
  inside the write;
* at the commit: a watch on another member SIGKILLs the leader on the first
  committed document.

With calicoctl told only of the leader it exits non-zero naming etcd, or zero when
the commit and its reply beat the kill; either way the surviving quorum holds all
1,000 documents or none, never some; a re-run against the two survivors completes,
and the lost member restarted catches up. Told of all three, calicoctl re-sends to a live member and
the apply completes.

Protection checked: `Datastore.apply_all` writes the manifest in one transaction.
Written in parts of 100, the kill leaves 700 (on the wire) or 100 (at the commit)
of 1,000 behind, and the all-or-nothing assertions fail.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
import yaml

import drill_util as du
from tcp_proxy import TripProxy

pytestmark = pytest.mark.root

N_DOCS = 1000
VENV_BIN = Path(sys.executable).parent


def manifest(tag: str, path: Path) -> int:
    docs = [{"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkSet",
             "metadata": {"name": f"cnt6-{tag}-{i:04d}", "labels": {"drill": "cnt6", "tag": tag}},
             "spec": {"nets": [f"198.18.{200 + i // 250}.{i % 250}/32"]}}
            for i in range(N_DOCS)]
    path.write_text(yaml.safe_dump_all(docs))
    return path.stat().st_size


PREFIX = "/calico/resources/v3/projectcalico.org/globalnetworksets/"


def count(client, tag: str) -> int:
    """GlobalNetworkSets of this tag in etcd (a linearizable read of the quorum)."""
    kvs, _ = client.get_prefix(PREFIX + "cnt6-" + tag + "-")
    for kv in kvs:
        assert json.loads(kv.value)["metadata"]["labels"]["tag"] == tag
    return len(kvs)


def apply(endpoints: str, path: Path) -> subprocess.Popen:
    env = du.base_env_plain(endpoints)
    return subprocess.Popen([str(VENV_BIN / "calicoctl"), "apply", "-f", str(path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[du.EtcdCluster]:
    c = du.EtcdCluster()
    try:
        c.start_all()
        yield c
    finally:
        c.destroy()


@pytest.fixture
def whole(cluster) -> du.EtcdCluster:
    """All three members up (a previous drill's victim restarted)."""
    for m in cluster.members:
        if not m.running():
            cluster.start(m)
    for m in cluster.members:
        cluster.wait_healthy(m)
    return cluster


def _finish(proc: subprocess.Popen) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _check_all_or_nothing(cluster: du.EtcdCluster, victim: du.Member, tag: str, path: Path,
                          proc: subprocess.Popen, out: str, err: str, how: str) -> None:
    """The survivors hold all documents or none; a failure says etcd; a re-run against
    the survivors completes; the victim restarted catches up."""
    rest = [m for m in cluster.members if m is not victim]
    survivors = cluster.client(*rest)
    try:
        n = du.wait_for(lambda: _count_or_none(survivors, tag), 60, "the surviving quorum answers",
                        cluster.logs)[0]
        last = (err or out).strip().splitlines()[-1:]
        print(f"{victim.name} (the leader) SIGKILLed {how}; calicoctl rc {proc.returncode} "
              f"({last!r}); {n} of {N_DOCS} documents present")
        assert n in (0, N_DOCS), f"a partial apply: {n} of {N_DOCS} documents present\n{out}\n{err}"
        if proc.returncode == 0:
            assert n == N_DOCS, "calicoctl reported success but the documents are not there"
        else:
            assert "etcd" in err.lower(), f"the failure does not say what failed: {err!r}"
        rerun = subprocess.run([str(VENV_BIN / "calicoctl"), "apply", "-f", str(path)],
                               env=du.base_env_plain(cluster.endpoints(*rest)),
                               capture_output=True, text=True, timeout=120)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        assert count(survivors, tag) == N_DOCS
    finally:
        survivors.close()
    cluster.start(victim)
    cluster.wait_healthy(victim)
    c1 = cluster.client(victim)
    try:
        du.wait_for(lambda: (_count_or_none(c1, tag) or (None,))[0] == N_DOCS, 60,
                    "the restarted member catches up", cluster.logs)
    finally:
        c1.close()


@pytest.fixture(scope="module")
def request_bytes(cluster, tmp_path_factory) -> int:
    """What a clean apply of a 1,000-document manifest (new names) sends to etcd, in
    bytes: reads of the 1,000 keys first, then the one write. Three quarters of it
    is well inside the write."""
    m1 = cluster.members[0]
    path = tmp_path_factory.mktemp("cnt6") / "k.yaml"
    manifest("k", path)
    proxy = TripProxy((m1.ip, m1.client_port), 10**12, lambda: None)
    try:
        proc = apply(proxy.url, path)
        out, err = _finish(proc)
        assert proc.returncode == 0, out + err
        return proxy.sent
    finally:
        proxy.close()


def test_member_killed_with_the_apply_on_the_wire_is_all_or_nothing(whole, request_bytes, tmp_path):
    """calicoctl knows only the leader, which dies when three quarters of the apply's
    request bytes reached it: inside the write."""
    m1 = du.cluster_leader(whole)
    size = manifest("a", tmp_path / "a.yaml")
    proxy = TripProxy((m1.ip, m1.client_port), request_bytes * 3 // 4, lambda: whole.kill(m1))
    try:
        proc = apply(proxy.url, tmp_path / "a.yaml")
        out, err = _finish(proc)
        assert proxy.tripped.is_set(), f"the apply never sent {proxy.threshold} bytes: rc {proc.returncode}, {err}"
    finally:
        proxy.close()
    _check_all_or_nothing(whole, m1, "a", tmp_path / "a.yaml", proc, out, err,
                          f"after {proxy.sent} of {request_bytes} request bytes (manifest {size} bytes)")


def test_member_killed_at_the_commit_is_all_or_nothing(whole, tmp_path):
    """calicoctl knows only the leader, which dies the moment the first document is
    committed (seen by a watch on another member), before or after its reply left."""
    m1 = du.cluster_leader(whole)
    m2 = next(m for m in whole.members if m is not m1)
    path = tmp_path / "c.yaml"
    manifest("c", path)
    watcher = whole.client(m2)
    killer = du.KillOnFirstPut(watcher, PREFIX + "cnt6-c-", lambda: whole.kill(m1))
    try:
        proc = apply(whole.endpoints(m1), path)
        out, err = _finish(proc)
        assert killer.fired.wait(30), f"no document was ever committed: rc {proc.returncode}, {err}"
    finally:
        killer.close()
        watcher.close()
    assert killer.error is None, killer.error
    _check_all_or_nothing(whole, m1, "c", path, proc, out, err, "at the first committed document")


def test_member_killed_with_the_apply_on_the_wire_fails_over_and_completes(whole, request_bytes, tmp_path):
    """calicoctl knows all three, the leader (through the proxy) first: it dies inside
    the write, calicoctl re-sends to a live member and the apply completes."""
    m1 = du.cluster_leader(whole)
    m2, m3 = [m for m in whole.members if m is not m1]
    manifest("b", tmp_path / "b.yaml")
    proxy = TripProxy((m1.ip, m1.client_port), request_bytes * 3 // 4, lambda: whole.kill(m1))
    try:
        proc = apply(",".join([proxy.url, m2.client_url, m3.client_url]), tmp_path / "b.yaml")
        out, err = _finish(proc)
        assert proxy.tripped.is_set(), f"the apply never sent {proxy.threshold} bytes to m1: {err}"
    finally:
        proxy.close()
    survivors = whole.client(m2, m3)
    try:
        n = count(survivors, "b")
    finally:
        survivors.close()
    print(f"{m1.name} (the leader) SIGKILLed after {proxy.sent} request bytes; calicoctl rc {proc.returncode}; "
          f"{n} of {N_DOCS} documents present")
    assert proc.returncode == 0, f"the apply did not fail over to a live member:\n{out}\n{err}"
    assert n == N_DOCS


def _count_or_none(client, tag: str) -> tuple[int] | None:
    from calico_net.datastore.errors import DatastoreError

    try:
        return (count(client, tag),)
    except DatastoreError:
        return None
