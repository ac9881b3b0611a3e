"""FV: FelixConfiguration mtuIfacePattern drives the workload MTU the real agent writes
(MTUFilePath, which the CNI plugin reads) — Felix's autodetection: the smallest MTU of
the up interfaces whose name matches the pattern.

The shared FV topology's host namespace has eth0 (MTU 1500, matched by Felix's default
pattern); this test adds a veth pair `cnt2mtu0` (MTU 1340) / `cnt2mtu1` (1500) there, which the
default pattern does not match.
"""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.root

L = None
CONVERGE = 60
V3 = "projectcalico.org/v3"
DUMMY = "cnt2mtu0"


@pytest.fixture(autouse=True, scope="module")
def _bind_helpers(fvlib):
    global L
    L = fvlib


@pytest.fixture
def dummy(fv):
    # a veth pair (no dummy module on every kernel); the peer keeps MTU 1500
    L.sh("ip", "link", "add", DUMMY, "mtu", "1340", "type", "veth", "peer", "name", "cnt2mtu1",
         ns=L.HOST_NS)
    L.sh("ip", "link", "set", DUMMY, "up", ns=L.HOST_NS)
    L.sh("ip", "link", "set", "cnt2mtu1", "up", ns=L.HOST_NS)
    try:
        yield DUMMY
    finally:
        L.sh("ip", "link", "del", DUMMY, ns=L.HOST_NS, check=False)


def felix(spec: dict) -> dict:
    return {"apiVersion": V3, "kind": "FelixConfiguration", "metadata": {"name": "default"}, "spec": spec}


def test_mtu_iface_pattern_drives_the_workload_mtu(clean, dummy):
    env = clean
    mtu_file = env.tmp / "mtu"

    def mtu() -> str:
        try:
            return mtu_file.read_text().strip()
        except OSError:
            return ""

    env.ds.apply_all([felix({"mtuIfacePattern": "^cnt2mtu0$"})])
    L.wait_for(lambda: mtu() == "1340", CONVERGE, f"workload MTU 1340 (file says {mtu()!r})", env.agent)
    # both interfaces match: the smallest wins
    env.ds.apply_all([felix({"mtuIfacePattern": "^(eth|cnt2mtu)"})])
    L.wait_for(lambda: "MTUIfacePattern changed to '^(eth|cnt2mtu)'" in env.agent.log_tail(400), CONVERGE,
               "the new pattern taken", env.agent)
    assert mtu() == "1340"
    # Felix's default pattern again (eth0 only)
    env.ds.apply_all([felix({})])
    L.wait_for(lambda: mtu() == "1500", CONVERGE, f"workload MTU 1500 (file says {mtu()!r})", env.agent)
