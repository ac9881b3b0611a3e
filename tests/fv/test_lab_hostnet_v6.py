"""The IPv6 half of the lab's host networking (lab/hostnet.sh), on this host's real
routing table: the guard makes an address of the lab's v6 range (2001:db8::/32) that no
bridge holds unreachable at once, its forward rules let link-scope neighbour discovery
through (the nodes resolve each other across the bridge) and nothing else; `bridge`
gives a bridge a v6 gateway address and `check` then finds the nodes through it.
"""
from __future__ import annotations

import subprocess

import pytest

# the script's runner and a scratch bridge, shared with the IPv4 half
from test_lab_hostnet import bridge, hostnet  # noqa: F401 - `bridge` is a fixture

pytestmark = pytest.mark.root


def test_v6_guard_route_and_forward_rules() -> None:
    assert hostnet("guard").returncode == 0
    shown = subprocess.run(["ip", "-6", "route", "show", "type", "unreachable", "2001:db8::/32"],
                           capture_output=True, text=True, check=True).stdout
    assert "2001:db8::/32" in shown and "metric 4242" in shown, shown
    r = subprocess.run(["ip", "-6", "-o", "route", "get", "2001:db8:1ff::77"], capture_output=True, text=True)
    assert r.returncode != 0 and "No route to host" in r.stderr, (r.stdout, r.stderr)
    table = subprocess.run(["nft", "list", "table", "inet", "calico_lab_guard"],
                           capture_output=True, text=True, check=True).stdout
    assert "ip6 saddr 2001:db8::/32 ip6 daddr != { 2001:db8::/32, fe80::/10, ff02::/16 }" in table, table
    assert "ip6 daddr 2001:db8::/32 ip6 saddr != { ::, 2001:db8::/32, fe80::/10, ff02::/16 }" in table, table


def test_v6_bridge_address_and_check(bridge: str) -> None:
    r = hostnet("check", f"dev:{bridge}", "2001:db8:1fe::1/64", "2001:db8:1fe::11")
    assert r.returncode != 0 and bridge in r.stderr and "Fix: ip addr add 2001:db8:1fe::1/64" in r.stderr, r.stderr
    assert "no IPv6 address" in r.stderr, r.stderr
    subprocess.run(["ip", "addr", "add", "2001:db8:1fe::1/64", "dev", bridge, "nodad"], check=True)
    r = hostnet("check", f"dev:{bridge}", "2001:db8:1fe::1/64", "2001:db8:1fe::11", "2001:db8:1fe::12")
    assert r.returncode == 0, r.stderr
    # `bridge` refuses an address outside the lab's ranges, naming both
    r = hostnet("bridge", "no-such-network", "2001:db9::1/64")
    assert r.returncode != 0 and "198.18.0.0/15 or 2001:db8::/32" in r.stderr, r.stderr
