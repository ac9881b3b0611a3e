"""calico.net.etcd_member against a real, throw-away etcd cluster (not the session's
Calico datastore): m1 starts alone; the target's add phase adds a learner and removes
it, refuses a peer URL of another member, and adds m2; this driver then starts m2 with
the initial cluster the module returned (--initial-cluster-state existing), and the
remove phase removes m2 again. Every etcd started here is stopped by PID.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
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


@pytest.fixture
def members(tmp_path):
    made = [Member(n, tmp_path / "etcd") for n in ("m1", "m2", "m3")]
    (tmp_path / "etcd").mkdir()
    try:
        yield made
    finally:
        for m in made:
            m.stop()


def test_etcd_member(members, etcd, tmp_path):
    m1, m2, m3 = members
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
