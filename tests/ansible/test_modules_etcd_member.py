"""calico.net.etcd_member against a real, throw-away etcd cluster (not the session's
Calico datastore): m1 starts alone; the target's add phase adds a learner and removes
it, refuses a peer URL of another member, and adds m2; this driver then starts m2 with
the initial cluster the module returned (--initial-cluster-state existing), and the
remove phase removes m2 again.

The retry tests start a three-member cluster and stop m3, so that m1 - which has lost a
peer - refuses to add a voting member with "etcdserver: unhealthy cluster" (etcd's
strict reconfiguration check). With retries=2 the module fails after three refusals,
which m1's log counts, and the member list is unchanged; with a wide bound a thread
restarts m3 once m1 has logged a refusal to this run, and the module's retries carry
the add through. Every etcd started here is stopped by PID.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from playbook_runner import run_target

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Member:
    def __init__(self, name: str, tmp: Path) -> None:
        self.name = name
        self.client_url = f"http://127.0.0.1:{free_port()}"
        self.peer_url = f"http://127.0.0.1:{free_port()}"
        self.data_dir = tmp / name
        self.proc: subprocess.Popen | None = None

    def start(self, initial_cluster: str, state: str) -> None:
        etcd = shutil.which("etcd") or "/usr/bin/etcd"
        if not os.path.exists(etcd):
            pytest.fail("etcd is not installed (make test installs Debian's etcd-server)")
        log = open(self.data_dir.with_suffix(".log"), "w")
        self.proc = subprocess.Popen(
            [etcd, "--name", self.name, "--data-dir", str(self.data_dir),
             "--listen-client-urls", self.client_url, "--advertise-client-urls", self.client_url,
             "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
             "--initial-cluster", initial_cluster, "--initial-cluster-state", state,
             "--log-level", "warn", "--logger", "zap"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_healthy(self, timeout: float = 120) -> None:  # generous: CI machines may be loaded
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"etcd {self.name} exited: "
                                     f"{self.data_dir.with_suffix('.log').read_text()[-2000:]}")
            try:
                if requests.get(self.client_url + "/health", timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise AssertionError(f"etcd {self.name} did not become healthy in {timeout} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


    @property
    def log(self) -> Path:
        return self.data_dir.with_suffix(".log")

    def rejections(self) -> int:
        """Member-add requests this etcd refused (its warn log, one line each)."""
        return self.log.read_text(errors="replace").count("rejecting member add request")

    def active_peers(self) -> int:
        """Peers this etcd's raft transport counts as active (its /metrics gauge)."""
        text = requests.get(self.client_url + "/metrics", timeout=5).text
        return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
                   if line.startswith("etcd_network_active_peers{"))


def wait_for(what: str, check, timeout: float = 120) -> None:
    """Wait for a condition; the timeout is a hang guard."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout} s")
        time.sleep(0.2)


@pytest.fixture
def members(tmp_path):
    made = [Member(n, tmp_path / "etcd") for n in ("m1", "m2", "m3", "m4")]
    (tmp_path / "etcd").mkdir()
    try:
        yield made
    finally:
        for m in made:
            m.stop()


def test_etcd_member(members, etcd, tmp_path):
    m1, m2, m3, _ = members
    m1.start(f"m1={m1.peer_url}", "new")
    m1.wait_healthy()
    initial_file = tmp_path / "initial-cluster"
    extra = dict(etcd_member_endpoint=m1.client_url, m1_peer_url=m1.peer_url, m2_peer_url=m2.peer_url,
                 m3_peer_url=m3.peer_url, initial_cluster_file=str(initial_file))
    run = run_target("etcd_member", etcd.env(), tmp_path / "ansible", extra_vars=extra, tasks_from="add")
    assert run.returncode == 0, f"etcd_member add phase failed:\n{run.tail()}"

    m2.start(initial_file.read_text().strip(), "existing")
    m2.wait_healthy()
    m1.wait_healthy()

    # Right after m2 joined, etcd refuses to remove a voting member ("unhealthy
    # cluster", its strict reconfiguration check); the module waits that out itself.
    run = run_target("etcd_member", etcd.env(), tmp_path / "ansible", extra_vars=extra, tasks_from="remove")
    assert run.returncode == 0, f"etcd_member remove phase failed:\n{run.tail()}"
    # A removed member stops by itself.
    assert m2.proc is not None
    try:
        m2.proc.wait(120)
    except subprocess.TimeoutExpired:
        pytest.fail("m2 kept running 120 s after it was removed from the cluster")


def three_members_one_down(members) -> dict[str, str]:
    """m1, m2, m3 started together, then m3 stopped and m1 seeing it gone; the extra
    vars of the retry task files."""
    m1, m2, m3, m4 = members
    cluster = ",".join(f"{m.name}={m.peer_url}" for m in (m1, m2, m3))
    for m in (m1, m2, m3):
        m.start(cluster, "new")
    for m in (m1, m2, m3):
        m.wait_healthy()
    wait_for("m1 connected to m2 and m3", lambda: m1.active_peers() == 2)
    m3.stop()
    wait_for("m1 sees m3 gone", lambda: m1.active_peers() == 1)
    return dict(etcd_member_endpoint=m1.client_url, m4_peer_url=m4.peer_url)


def member_urls(m: Member) -> list[list[str]]:
    from calico_net.datastore.etcd import EtcdClient, EtcdConfig

    client = EtcdClient(EtcdConfig(endpoints=[m.client_url]))
    return sorted(sorted(x.get("peerURLs") or []) for x in client.members())


def test_unhealthy_cluster_bound_is_hit(members, etcd, tmp_path):
    m1, m2, m3, m4 = members
    extra = three_members_one_down(members)
    before = member_urls(m1)
    assert len(before) == 3
    refused_before = m1.rejections()
    run = run_target("etcd_member", etcd.env(), tmp_path / "ansible", extra_vars=extra, tasks_from="retry_refused")
    assert run.returncode == 0, f"etcd_member retry_refused phase failed:\n{run.tail()}"
    # etcd itself refused exactly retries + 1 times, and nothing changed.
    assert m1.rejections() - refused_before == 3, m1.log.read_text()[-3000:]
    assert member_urls(m1) == before


def test_unhealthy_cluster_is_retried_until_the_member_is_back(members, etcd, tmp_path):
    m1, m2, m3, m4 = members
    extra = three_members_one_down(members)
    refused_before = m1.rejections()
    cluster = ",".join(f"{m.name}={m.peer_url}" for m in (m1, m2, m3))
    errors: list[BaseException] = []

    def bring_m3_back() -> None:
        try:
            wait_for("m1 refused the module's add", lambda: m1.rejections() > refused_before, timeout=300)
            m3.start(cluster, "new")  # its data dir exists: the cluster flags are ignored
            m3.wait_healthy()
        except BaseException as e:  # reported by the test below
            errors.append(e)

    thread = threading.Thread(target=bring_m3_back, daemon=True)
    thread.start()
    try:
        run = run_target("etcd_member", etcd.env(), tmp_path / "ansible", extra_vars=extra, tasks_from="retry_add")
    finally:
        thread.join(360)
    assert not thread.is_alive(), "the thread restarting m3 did not finish"
    assert not errors, f"restarting m3: {errors[0]}"
    assert run.returncode == 0, f"etcd_member retry_add phase failed:\n{run.tail()}"
    assert m1.rejections() > refused_before  # the refusal really happened
    assert [m4.peer_url] in member_urls(m1)
