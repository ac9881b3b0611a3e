"""BGP across hosts with real BIRD, real etcd and the real confd process per host.

One fabric per module (tests/fv/bgp_util.py): three host namespaces on a bridge in
198.18.0.0/24, each registered by the start-up code and running its own confd and
BIRD, a workload per host with an IPAM address from a block affine to that host, and
an external BIRD as a top-of-rack router (AS 65001). The tests run in file order and
each one puts the datastore back the way it found it.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

import bgp_util as bu

pytestmark = [pytest.mark.root]

CONVERGE = 60  # seconds: a generous deadline on a loaded 2-core CI machine


@pytest.fixture(scope="module")
def fabric(tmp_path_factory) -> Iterator[bu.Fabric]:
    import os

    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    f = bu.Fabric(tmp_path_factory.mktemp("bgpfv"), 3)
    try:
        f.setup()
        for h in f.hosts:
            f.add_workload(h)
        yield f
    except BaseException:
        print(f.diag())
        raise
    finally:
        f.teardown()


def mesh_names(f: bu.Fabric, h: bu.Host) -> set[str]:
    return {"Mesh_" + o.ip.replace(".", "_") for o in f.hosts if o is not h}


def all_blocks(f: bu.Fabric) -> set[str]:
    return set().union(*(f.blocks_of(h) for h in f.hosts))


def wait_full_mesh(f: bu.Fabric) -> None:
    bu.wait_for(lambda: all(mesh_names(f, h) <= h.established() for h in f.hosts),
                CONVERGE, "every mesh session Established", f.diag)


def wait_routes(f: bu.Fabric) -> None:
    """Every host has every other host's blocks as BIRD routes in its kernel."""
    def ok() -> bool:
        for h in f.hosts:
            others = set().union(*(f.blocks_of(o) for o in f.hosts if o is not h))
            if not others <= set(h.routes()):
                return False
        return True

    bu.wait_for(ok, CONVERGE, "every block routed on every other host", f.diag)


def wait_connectivity(f: bu.Fabric) -> None:
    bu.wait_for(lambda: not f.ping_matrix(), CONVERGE, "workloads reach each other",
                lambda: f"unreachable: {sorted(f.ping_matrix())}\n{f.diag()}")


def calicoctl_status(h: bu.Host) -> tuple[str, list[dict]]:
    cmd = [str(bu.VENV_BIN / "calicoctl"), "node", "status", "--bird-socket", h.sock]
    table = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True).stdout
    js = subprocess.run(cmd + ["-o", "json"], capture_output=True, text=True, timeout=30,
                        check=True).stdout
    return table, json.loads(js)


# ----------------------------------------------------------------------- mesh


def test_mesh_routes_and_workload_connectivity(fabric: bu.Fabric) -> None:
    f = fabric
    wait_full_mesh(f)
    wait_routes(f)
    # Block routes, not /32s, point at the owning host over the fabric.
    for h in f.hosts:
        routes = h.routes()
        for o in f.hosts:
            if o is h:
                continue
            for block in f.blocks_of(o):
                assert block.endswith("/26")
                assert routes[block].get("gateway") == o.ip, routes[block]
        # Its own blocks are blackholed locally by BIRD (workload /32s win).
        for block in f.blocks_of(h):
            assert routes[block].get("type") == "blackhole", routes[block]
        assert not [d for d in routes if d.endswith("/32")]
    wait_connectivity(f)


def test_node_registration_by_startup(fabric: bu.Fabric) -> None:
    for h in fabric.hosts:
        node = fabric.ds.get("Node", h.name)
        assert node["spec"]["bgp"]["ipv4Address"] == f"{h.ip}/24"
        assert (fabric.tmp / f"{h.name}-nodename").read_text() == h.name


def test_calicoctl_node_status_shows_established_mesh(fabric: bu.Fabric) -> None:
    f = fabric
    wait_full_mesh(f)
    for h in f.hosts:
        table, rows = calicoctl_status(h)
        peers = {r["peer_address"]: r for r in rows}
        for o in f.hosts:
            if o is h:
                continue
            assert peers[o.ip]["peer_type"] == "mesh"
            assert peers[o.ip]["info"].startswith("Established")
            line = next(ln for ln in table.splitlines() if f" {o.ip} " in ln)
            assert "node-to-node mesh" in line and "Established" in line, table


def test_confd_health_and_status(fabric: bu.Fabric) -> None:
    h = fabric.hosts[0]
    bu.wait_for(lambda: h.status().get("ready"), CONVERGE, "h1 confd ready", fabric.diag)
    code, body = h.http("/readiness")
    assert code == 200, body
    code, metrics = h.http("/metrics")
    assert code == 200
    assert "calico_confd_last_render_ok 1" in metrics
    st = h.status()
    assert st["config_sha256"] == hashlib.sha256(h.bird_cfg.read_bytes()).hexdigest()
    assert (h.bird_cfg.stat().st_mode & 0o777) == 0o640
