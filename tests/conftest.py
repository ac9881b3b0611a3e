"""Shared fixtures: one real etcd for the whole test session.

`etcd` starts Debian's etcd on free loopback ports (raised --max-txn-ops so a whole
manifest fits one transaction, as our etcd role configures it) and stops it by PID.
`datastore` hands each test an empty keyspace on that etcd.
"""
from __future__ import annotations

import os
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


def pytest_collection_modifyitems(config, items):
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="needs root (network namespaces, nftables)")
        for item in items:
            if "root" in item.keywords:
                item.add_marker(skip)
