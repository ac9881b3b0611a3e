"""calico.net.bgp_status_info against real BIRDs: two network namespaces joined by a
veth pair (198.18.250.1/30 and .2/30), a BIRD in each with one BGP session to the
other, named as confd names mesh sessions. The module reads the first BIRD's control
socket from the host, as it would on a node. The target
(ansible_collections/calico/net/tests/integration/targets/bgp_status_info) waits for
the session, runs the reader four times and checks the session's description.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from playbook_runner import run_target

pytestmark = [pytest.mark.root, pytest.mark.slow]

BIRD_CONF = """\
router id 198.18.250.{me};
protocol device {{}}
protocol bgp Mesh_198_18_250_{peer} {{
  local 198.18.250.{me} as 64512;
  neighbor 198.18.250.{peer} as 64512;
  ipv4 {{ import all; export none; }};
}}
"""


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True)


@pytest.fixture
def bird_pair(tmp_path):
    bird = shutil.which("bird") or "/usr/sbin/bird"
    if not os.path.exists(bird):
        pytest.fail("bird is not installed (make test installs Debian's bird2)")
    tag = f"{os.getpid() % 100000}"
    namespaces = [f"cnm-bgpa-{tag}", f"cnm-bgpb-{tag}"]
    veths = [f"cnmb{tag}a", f"cnmb{tag}b"]
    pidfiles = [tmp_path / "bird1.pid", tmp_path / "bird2.pid"]
    # Clear leftovers of a killed run with the same names.
    for ns in namespaces:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    try:
        for ns in namespaces:
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", veths[0], "netns", namespaces[0], "type", "veth",
           "peer", "name", veths[1], "netns", namespaces[1])
        for i, (ns, veth) in enumerate(zip(namespaces, veths), 1):
            sh("ip", "-n", ns, "addr", "add", f"198.18.250.{i}/30", "dev", veth)
            sh("ip", "-n", ns, "link", "set", veth, "up")
            conf = tmp_path / f"bird{i}.conf"
            conf.write_text(BIRD_CONF.format(me=i, peer=3 - i))
            sh("ip", "netns", "exec", ns, bird, "-c", str(conf), "-s", str(tmp_path / f"bird{i}.ctl"),
               "-P", str(pidfiles[i - 1]))
        deadline = time.monotonic() + 10
        while not (tmp_path / "bird1.ctl").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        yield tmp_path / "bird1.ctl"
    finally:
        for pidfile in pidfiles:
            try:
                os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)
            except (OSError, ValueError):
                pass
        for ns in namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture
def clean_etcd(etcd):
    client = etcd.client()
    client.delete_prefix("/calico/")
    yield etcd
    client.delete_prefix("/calico/")
    client.close()


def test_bgp_status_info(bird_pair: Path, clean_etcd, tmp_path):
    run = run_target("bgp_status_info", clean_etcd.env(), tmp_path / "ansible",
                     extra_vars={"bird_socket": str(bird_pair)})
    assert run.returncode == 0, f"ansible-playbook failed for target bgp_status_info:\n{run.tail()}"
