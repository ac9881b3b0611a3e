"""The host side of the lab's networks (lab/hostnet.sh), on this host's real routing table.

- the guard: with it in place (the session installs it, tests/conftest.py), an address in
  198.18.0.0/15 that no lab bridge or test interface holds is unreachable at once, never
  routed through the default route;
- the check run before the first SSH (lab/up.sh, molecule's create.yml): a bridge without
  the lab gateway address fails in seconds with a message naming the bridge, the missing
  address and the fix; with the address it passes;
- `bridge` gives a bridge the gateway address, idempotently.
"""
from __future__ import annotations

import subprocess
import uuid
from typing import Iterator

import pytest

from etcd_server import REPO

HOSTNET = REPO / "lab" / "hostnet.sh"
pytestmark = pytest.mark.root


def hostnet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(HOSTNET), *args], capture_output=True, text=True, timeout=30)


def route_get(ip: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "-o", "route", "get", ip], capture_output=True, text=True)


@pytest.fixture
def bridge() -> Iterator[str]:
    name = f"hnt{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True)
    subprocess.run(["ip", "link", "set", name, "up"], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "link", "del", name], capture_output=True)


def test_guard_makes_unheld_lab_addresses_unreachable() -> None:
    shown = subprocess.run(["ip", "route", "show", "type", "unreachable", "198.18.0.0/15"],
                           capture_output=True, text=True, check=True).stdout
    assert "198.18.0.0/15" in shown
    r = route_get("198.19.253.77")
    # no route that would carry the packet anywhere: not via a gateway, not out of a device
    assert r.returncode != 0 and "No route to host" in r.stderr, (r.stdout, r.stderr)
    assert " via " not in r.stdout and " dev " not in r.stdout, r.stdout
    # a forwarded packet between the lab range and anything else is dropped by the nft guard
    table = subprocess.run(["nft", "list", "table", "inet", "calico_lab_guard"],
                           capture_output=True, text=True, check=True).stdout
    assert "ip saddr 198.18.0.0/15 ip daddr != 198.18.0.0/15" in table and "drop" in table


def test_check_fails_fast_naming_bridge_address_and_fix(bridge: str) -> None:
    r = hostnet("check", f"dev:{bridge}", "198.18.254.1/24", "198.18.254.11")
    assert r.returncode != 0
    assert bridge in r.stderr and "198.18.254.1/24" in r.stderr and "Fix: ip addr add" in r.stderr, r.stderr
    assert "no IPv4 address" in r.stderr


def test_check_passes_with_the_gateway_address(bridge: str) -> None:
    subprocess.run(["ip", "addr", "add", "198.18.254.1/24", "dev", bridge], check=True)
    r = hostnet("check", f"dev:{bridge}", "198.18.254.1/24", "198.18.254.11", "198.18.254.12")
    assert r.returncode == 0, r.stderr
    assert f"dev {bridge}" in route_get("198.18.254.11").stdout


def test_check_refuses_a_route_through_another_device(bridge: str) -> None:
    """The address may sit on the wrong interface: the check is about the bridge it names."""
    other = f"hno{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "link", "add", other, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "link", "set", other, "up"], check=True)
        subprocess.run(["ip", "addr", "add", "198.18.254.1/24", "dev", other], check=True)
        r = hostnet("check", f"dev:{bridge}", "198.18.254.1/24", "198.18.254.11")
        assert r.returncode != 0 and f"dev {other}" in r.stderr, r.stderr
    finally:
        subprocess.run(["ip", "link", "del", other], capture_output=True)
