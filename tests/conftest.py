"""Shared fixtures: one real etcd for the whole test session.

`etcd` starts Debian's etcd on free loopback ports (raised --max-txn-ops so a whole
manifest fits one transaction, as our etcd role configures it) and stops it by PID.
`datastore` hands each test an empty keyspace on that etcd.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from typing import Iterator

import pytest

from etcd_server import REPO, VENV_BIN, EtcdServer, free_port, start_etcd, stop_etcd  # noqa: F401 (re-exported)


@pytest.fixture(scope="session")
def etcd() -> Iterator[EtcdServer]:
    server = start_etcd()
    try:
        yield server
    finally:
        stop_etcd(server)


@pytest.fixture(scope="session")
def bird_binary() -> str:
    """BIRD 2 for `bird -p` checks: installed by scripts/install-deps.sh, so missing is a
    failure, not a skip."""
    path = shutil.which("bird") or "/usr/sbin/bird"
    assert os.access(path, os.X_OK), "bird2 is not installed (scripts/install-deps.sh installs it)"
    return path


@pytest.fixture
def etcd_client(etcd):
    client = etcd.client()
    client.delete_prefix("/calico/")
    yield client
    client.close()


@pytest.fixture
def datastore(etcd_client):
    from calico_net.datastore import Datastore

    return Datastore(etcd_client)


@pytest.fixture
def parse_workers_started(monkeypatch) -> list:
    """The parse workers the agent's syncer starts from now on, in order (real ones:
    only counted)."""
    from calico_net.agent import syncer as syncer_mod

    started: list = []
    real = syncer_mod.ParseWorker

    def counted(node):
        worker = real(node)
        started.append(worker)
        return worker

    monkeypatch.setattr(syncer_mod, "ParseWorker", counted)
    return started


# What the suite runs for real; scripts/install-deps.sh installs all of it. A missing one
# stops the session at once (no test skips because the machine lacks something).
REQUIRED_PROGRAMS = {
    "etcd": "etcd-server", "etcdctl": "etcd-client", "bird": "bird2", "birdc": "bird2",
    "nft": "nftables", "ip": "iproute2", "ping": "iputils-ping", "nc": "netcat-openbsd",
    "podman": "podman", "unshare": "util-linux", "ssh": "openssh-client", "openssl": "openssl",
    "conntrack": "conntrack", "dockerd": "docker.io", "tcpdump": "tcpdump",
}
REQUIRED_FILES = {
    "/bin/busybox": "busybox-static", "/usr/lib/cni/host-local": "containernetworking-plugins",
}


def pytest_sessionstart(session):
    if os.geteuid() != 0:
        return  # unit tests only; root-marked tests are refused in collection below
    missing = sorted({pkg for prog, pkg in REQUIRED_PROGRAMS.items() if shutil.which(prog) is None}
                     | {pkg for path, pkg in REQUIRED_FILES.items() if not os.access(path, os.X_OK)})
    if missing:
        raise pytest.UsageError(f"missing packages: {' '.join(missing)} (scripts/install-deps.sh installs them)")
    # podman's host quirks (tests run containers), and the guard: tests put 198.18.0.0/15
    # addresses in this host's namespace, and the guard route keeps any packet for that
    # range on the machine even when a test's own route is gone. Idempotent, ~0.1 s.
    subprocess.run(["bash", str(REPO / "lab" / "bootstrap-host.sh")], check=True,
                   stdout=subprocess.DEVNULL)


def pytest_collection_modifyitems(config, items):
    if os.geteuid() != 0:
        needs_root = [item.nodeid for item in items if "root" in item.keywords]
        if needs_root:
            raise pytest.UsageError(
                f"{len(needs_root)} selected tests need root (network namespaces, nftables, "
                f"podman), e.g. {needs_root[0]}: run as root, or select tests/unit")
