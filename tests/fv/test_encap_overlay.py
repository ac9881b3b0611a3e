"""Acceptance FV for the overlay (issue 17): IP-in-IP and VXLAN between three hosts on
two subnets joined by a router that knows only the host subnets (tests/fv/encap_util.py).

One cluster per module; the tests switch its one pool between modes (no restart of
anything), in file order: plain with BIRD, IP-in-IP with BIRD, policy over IP-in-IP,
IP-in-IP CrossSubnet; then the VXLAN backend (no BIRD anywhere): VXLAN Always, VXLAN
CrossSubnet, the IPIP -> VXLAN switch and the pool's deletion. Each test sets the
backend and the pool mode it needs first, so any one runs alone too.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

import bgp_util as bu
import encap_util as eu

pytestmark = [pytest.mark.root]

CONVERGE = 60      # hang guard for the agent/BIRD to converge on a loaded 2-core machine
RECOVERY_MAX = 5.0  # the bound for the IPIP -> VXLAN switch


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[eu.Cluster]:
    c = eu.Cluster(tmp_path_factory.mktemp("encfv"))
    try:
        c.setup(bgp=True)
        for h in c.hosts:
            c.add_pod(h, f"{h.name}-w1")
        c.wait_pod_routes(CONVERGE)
        yield c
    except BaseException:
        print(c.diag())
        raise
    finally:
        c.teardown()


def pod(c: eu.Cluster, host: str) -> eu.Pod:
    return c.host(host).pods[0]


def targets(dst: eu.Pod, *ports: int) -> list[tuple[str, str, int]]:
    return [(f"{dst.name}|{'icmp' if p == 0 else p}", dst.ip, p) for p in ports]


def gateway_routes(h: eu.EncHost) -> dict[str, dict]:
    """The agent's routes (protocol 80) that carry a gateway: the overlay's."""
    return {d: r for d, r in h.routes("80").items() if "gateway" in r}


def wait_overlay_routes(c: eu.Cluster, want: callable) -> None:
    """Wait until every host's overlay routes are exactly ``want(c, h)``."""
    def ok() -> bool:
        return all(simplify(gateway_routes(h)) == want(c, h) for h in c.hosts)
    bu.wait_for(ok, CONVERGE, "the overlay routes on every host", c.diag)


def simplify(routes: dict[str, dict]) -> dict[str, tuple[str, str, bool]]:
    return {d: (r.get("gateway", ""), r.get("dev", ""), "onlink" in r.get("flags", []))
            for d, r in routes.items()}


def ipip_routes(c: eu.Cluster, h: eu.EncHost, cross_subnet: bool = False) -> dict:
    out = {}
    for block, owner in c.remote_blocks(h).items():
        if cross_subnet and owner.subnet == h.subnet:
            out[block] = (owner.ip, "eth0", False)
        else:
            out[block] = (owner.ip, "tunl0", True)
    return out


def vxlan_routes(c: eu.Cluster, h: eu.EncHost, cross_subnet: bool = False) -> dict:
    out = {}
    for block, owner in c.remote_blocks(h).items():
        if cross_subnet and owner.subnet == h.subnet:
            out[block] = (owner.ip, "eth0", False)
        else:
            out[block] = (c.node(owner)["spec"].get("ipv4VXLANTunnelAddr"), "vxlan.calico", True)
    return out


# --------------------------------------------------------------- 1. plain pool


def test_plain_pool_crosses_no_subnet(cluster: eu.Cluster) -> None:
    """ipipMode/vxlanMode Never with the BIRD mesh: h1 <-> h2 (same subnet) pods talk
    over BIRD's routes; anything to or from h3 (other subnet) dies at the router."""
    c = cluster
    c.set_backend("bird")
    c.set_pool("Never", "Never")
    h1, h2, h3 = c.hosts
    p1, p2, p3 = pod(c, "h1"), pod(c, "h2"), pod(c, "h3")
    same = [p1, p2]
    c.wait_all_connected(CONVERGE, pods=same)
    # BIRD routes the same subnet in the kernel (gateway = the peer host itself).
    for h, o in ((h1, h2), (h2, h1)):
        routes = h.routes("bird")
        for block in c.blocks_of(o):
            assert routes.get(block, {}).get("gateway") == o.ip, (h.name, block, routes)
    # The agent makes no overlay route for a plain pool.
    assert not any(gateway_routes(h) for h in c.hosts), c.tables()

    # One round: every cross-subnet probe, and for every server probed, an allowed
    # probe to it (from its own host, or from the same-subnet pod).
    rounds = [
        (p1.ns, targets(p3, 8080, 0) + targets(p2, 8080, 0)),
        (p2.ns, targets(p3, 8080, 0) + targets(p1, 8080, 0)),
        (p3.ns, targets(p1, 8080, 0) + targets(p2, 8080, 0)),
        (h3.ns, targets(p3, 8080, 0)),
    ]
    r1, r2, r3, r_h3 = c.probe_round(rounds)
    # allowed (the controls)
    assert r1[f"{p2.name}|8080"] and r1[f"{p2.name}|icmp"], r1
    assert r2[f"{p1.name}|8080"] and r2[f"{p1.name}|icmp"], r2
    assert all(r_h3.values()), r_h3
    # denied: across the router
    assert not any(v for k, v in r1.items() if k.startswith(p3.name)), r1
    assert not any(v for k, v in r2.items() if k.startswith(p3.name)), r2
    assert not any(r3.values()), r3
