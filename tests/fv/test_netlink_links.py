"""`Netlink.links_named` (ioctl look-ups by name) against the real kernel: the same
index and up flag as the full netlink dump, absent names and impossible names left
out. Runs in a network namespace of its own (root)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.root

PROBE = r"""
import json, sys
from calico_net.agent.felix.rtnetlink import Netlink
nl = Netlink()
names = json.loads(sys.argv[1])
full = {l.name: (l.index, l.up) for l in nl.links()}
named = {l.name: (l.index, l.up) for l in nl.links_named(names)}
print(json.dumps({"full": full, "named": named}))
"""


def test_links_named_matches_the_dump():
    ns = f"cnfv-nl-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        batch = ("tuntap add dev caliup0 mode tun\nlink set caliup0 up\n"
                 "tuntap add dev calidown0 mode tun\n"
                 "tuntap add dev calidel0 mode tun\nlink del calidel0\n")
        subprocess.run(["ip", "-n", ns, "-batch", "-"], input=batch, text=True, check=True)
        names = ["caliup0", "calidown0", "calidel0", "nosuch", "x" * 16, "", "lo"]
        out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", PROBE, json.dumps(names)],
                             capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        got = json.loads(out.stdout)
        full, named = got["full"], got["named"]
        assert set(named) == {"caliup0", "calidown0", "lo"}
        for name in named:
            assert named[name] == full[name], name
        assert named["caliup0"][1] is True and named["calidown0"][1] is False
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
