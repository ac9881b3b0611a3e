"""`calicoctl node status` against a real BIRD, run in its own network namespace
(`unshare --net`) so its BGP sessions to absent 198.18.x peers send nothing out."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

BIRD = shutil.which("bird") or "/usr/sbin/bird"
CONFIG = """
router id 198.18.0.11;
protocol device {}
protocol bgp Mesh_198_18_5_1 {
  local as 64512;
  neighbor 198.18.5.1 as 64512;
  ipv4 { import all; export none; };
}
protocol bgp Global_198_18_5_2 {
  local as 64512;
  neighbor 198.18.5.2 as 65002;
  ipv4 { import all; export none; };
}
"""

pytestmark = pytest.mark.root


@pytest.fixture
def bird(tmp_path):
    if not os.path.exists(BIRD):
        pytest.fail("bird2 is not installed")
    cfg = tmp_path / "bird.cfg"
    cfg.write_text(CONFIG)
    sock = tmp_path / "bird.ctl"
    proc = subprocess.Popen(["unshare", "--net", BIRD, "-f", "-c", str(cfg), "-s", str(sock)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30   # a hang guard, not a speed check
        while not sock.exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "BIRD did not create its socket"
            time.sleep(0.05)
        yield sock
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(*args):
    return subprocess.run([str(Path(sys.executable).parent / "calicoctl"), *args],
                          capture_output=True, text=True, timeout=30)


def test_node_status_lists_sessions_with_type(bird):
    proc = run("node", "status", "--bird-socket", str(bird))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    mesh = next(line for line in lines if "198.18.5.1" in line)
    glob = next(line for line in lines if "198.18.5.2" in line)
    assert "node-to-node mesh" in mesh and "global" in glob
    data = json.loads(run("node", "status", "--bird-socket", str(bird), "-o", "json").stdout)
    assert {s["peer_address"] for s in data} == {"198.18.5.1", "198.18.5.2"}
    assert all(s["state"] in ("start", "up") for s in data)


def test_node_status_without_bird_is_one_line():
    proc = run("node", "status", "--bird-socket", "/nonexistent/bird.ctl")
    assert proc.returncode == 1 and "BIRD is not running" in proc.stderr
