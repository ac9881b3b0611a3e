"""Tests for the BIRD control-socket client (calico_net.agent.confd.birdctl).

Against a real BIRD 2: each daemon runs in the foreground inside its own empty network
namespace (``unshare --net``), so its BGP session to a non-existent 198.18.x neighbor
sends nothing anywhere; it is killed by PID at teardown. The root-only test at the end
runs two BIRDs with configurations from render.py in two namespaces joined by a veth
pair and checks that they peer and program each other's blocks.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from calico_net.agent.confd import birdctl
from calico_net.agent.confd.birdctl import (
    BirdControl,
    BirdCtlError,
    ReplyLine,
    _parse_protocols,
    address_from_name,
    bgp_sessions,
    configure,
    peer_type,
    show_protocols,
)

BIRD = shutil.which("bird") or "/usr/sbin/bird"
UNSHARE = shutil.which("unshare")
# bird2 and unshare are checked once for the session (tests/conftest.py); root for a
# private network namespace
needs_bird = pytest.mark.root

MINIMAL_CFG = """\
router id 198.18.0.11;
timeformat protocol iso long;
protocol device { scan time 10; }
protocol bgp Global_198_18_5_1 {
  description "BGPPeer tor (198.18.5.1)";
  local as 64512;
  neighbor 198.18.5.1 as 65001;
  multihop;
  connect retry time 3;
  ipv4 { import all; export none; };
}
"""

EXTRA_PROTOCOL = """
protocol bgp Node_198_18_5_2 {
  local as 64512;
  neighbor 198.18.5.2 as 65002;
  multihop;
  ipv4 { import none; export none; };
}
"""


@dataclass
class BirdDaemon:
    dir: Path
    config: Path
    socket: str
    proc: subprocess.Popen[bytes]


def _wait_for_socket(path: str, proc: subprocess.Popen[bytes], deadline_s: float = 20) -> None:
    """Readiness wait (not a speed assertion): BIRD accepts on its socket."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"bird exited with {proc.returncode}")
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(path)
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"bird did not open {path}")


@pytest.fixture
def bird_daemon() -> Iterator[BirdDaemon]:
    # A short directory: unix socket paths are limited to 108 bytes.
    d = Path(tempfile.mkdtemp(prefix="birdctl-"))
    cfg = d / "bird.cfg"
    cfg.write_text(MINIMAL_CFG)
    sock = str(d / "bird.ctl")
    proc = subprocess.Popen(
        [UNSHARE or "unshare", "--net", "--", BIRD, "-f", "-c", str(cfg), "-s", sock,
         "-P", str(d / "bird.pid")],
        stdout=subprocess.DEVNULL,
        stderr=open(d / "bird.log", "wb"),  # noqa: SIM115 — closed with the process
    )
    try:
        _wait_for_socket(sock, proc)
        yield BirdDaemon(d, cfg, sock, proc)
    finally:
        # unshare execs bird, so this PID is BIRD's own.
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------------ against a real BIRD


@needs_bird
def test_greeting_and_raw_command(bird_daemon: BirdDaemon) -> None:
    with BirdControl(bird_daemon.socket) as ctl:
        assert ctl.version and ctl.version.startswith("2.")
        reply = ctl.command("show status")
        assert reply[-1].code == 13  # "Daemon is up and running"
        assert any("Router ID is 198.18.0.11" in line.text for line in reply)
        with pytest.raises(BirdCtlError) as exc:
            ctl.command("show no-such-thing")
        assert exc.value.code is not None and exc.value.code >= 9000
        # The connection stays usable after an error reply.
        assert ctl.command("show status")[-1].code == 13


@needs_bird
def test_show_protocols(bird_daemon: BirdDaemon) -> None:
    protos = {p.name: p for p in show_protocols(bird_daemon.socket)}
    assert set(protos) == {"device1", "Global_198_18_5_1"}
    assert protos["device1"].proto == "Device" and protos["device1"].state == "up"
    bgp = protos["Global_198_18_5_1"]
    assert bgp.proto == "BGP"
    assert bgp.state == "start"  # the neighbor does not exist
    assert bgp.bgp_state in ("Idle", "Connect", "Active")
    assert bgp.info.startswith(bgp.bgp_state)
    assert bgp.neighbor_address == "198.18.5.1"
    assert bgp.neighbor_as == 65001 and bgp.local_as == 64512
    assert bgp.description == "BGPPeer tor (198.18.5.1)"
    assert bgp.peer_type == "global"
    assert bgp.channels["ipv4"]["Table"] == "master4"
    # "timeformat protocol iso long": date and time, one field.
    assert len(bgp.since.split()) == 2 and bgp.since[:2] == "20"


@needs_bird
def test_show_protocols_without_detail_and_with_pattern(bird_daemon: BirdDaemon) -> None:
    rows = show_protocols(bird_daemon.socket, detail=False)
    assert [p.name for p in rows] == ["device1", "Global_198_18_5_1"]
    assert all(p.details == {} for p in rows)
    only = show_protocols(bird_daemon.socket, pattern="Global_*")
    assert [p.name for p in only] == ["Global_198_18_5_1"]
    assert show_protocols(bird_daemon.socket, pattern="Mesh_*") == []


@needs_bird
def test_bgp_sessions(bird_daemon: BirdDaemon) -> None:
    [s] = bgp_sessions(bird_daemon.socket)
    assert s.name == "Global_198_18_5_1"
    assert s.peer_address == "198.18.5.1" and s.peer_type == "global"
    assert s.neighbor_as == 65001 and s.state == "start"
    assert "  " not in s.info


@needs_bird
def test_configure_reloads_changed_file(bird_daemon: BirdDaemon) -> None:
    result = configure(bird_daemon.socket)
    assert result.code == 3 and result.message == "Reconfigured"
    bird_daemon.config.write_text(MINIMAL_CFG + EXTRA_PROTOCOL)
    result = configure(bird_daemon.socket)
    assert result.code in (3, 4)
    names = [p.name for p in show_protocols(bird_daemon.socket, detail=False)]
    assert "Node_198_18_5_2" in names
    assert peer_type("Node_198_18_5_2") == "node"


@needs_bird
def test_configure_check_and_explicit_path(bird_daemon: BirdDaemon) -> None:
    other = bird_daemon.dir / "other.cfg"
    other.write_text(MINIMAL_CFG + EXTRA_PROTOCOL)
    assert configure(bird_daemon.socket, str(other), check_only=True).code == 20
    # A check changes nothing.
    assert "Node_198_18_5_2" not in [p.name for p in show_protocols(bird_daemon.socket)]
    assert configure(bird_daemon.socket, str(other)).code in (3, 4)
    assert "Node_198_18_5_2" in [p.name for p in show_protocols(bird_daemon.socket)]


@needs_bird
def test_configure_error_keeps_running_config(bird_daemon: BirdDaemon) -> None:
    bird_daemon.config.write_text(MINIMAL_CFG + "protocol bgp Broken {\n")
    with pytest.raises(BirdCtlError) as exc:
        configure(bird_daemon.socket)
    assert exc.value.code == 8002
    assert "syntax error" in str(exc.value)
    # BIRD still runs the previous configuration.
    names = [p.name for p in show_protocols(bird_daemon.socket)]
    assert names == ["device1", "Global_198_18_5_1"]
    with pytest.raises(BirdCtlError) as exc:
        configure(bird_daemon.socket, str(bird_daemon.dir / "missing.cfg"))
    assert exc.value.code == 8002


def test_connect_to_missing_socket_fails(tmp_path: Path) -> None:
    with pytest.raises(BirdCtlError, match="cannot connect"):
        show_protocols(str(tmp_path / "nope.ctl"))


def test_pattern_quoting_rejects_quotes() -> None:
    with pytest.raises(ValueError):
        birdctl._quote('a"b')


# ------------------------------------------------------------------ parsing (canned)


ESTABLISHED_REPLY = [
    ReplyLine(2002, "Name       Proto      Table      State  Since         Info"),
    ReplyLine(1002, "Mesh_198_18_0_12 BGP        ---        up     2024-05-01 10:11:12  Established   "),
    ReplyLine(1006, "  Description:    node-to-node mesh peer node-b"),
    ReplyLine(1006, "  BGP state:          Established"),
    ReplyLine(1006, "    Neighbor address: 198.18.0.12"),
    ReplyLine(1006, "    Neighbor AS:      64512"),
    ReplyLine(1006, "    Local AS:         64512"),
    ReplyLine(1006, "    Neighbor ID:      198.18.0.12"),
    ReplyLine(1006, "  Channel ipv4"),
    ReplyLine(1006, "    State:          UP"),
    ReplyLine(1006, "    Routes:         1 imported, 1 exported, 1 preferred"),
    ReplyLine(1006, ""),
    ReplyLine(1002, "RRClient_2001_db8__5_port_1790 BGP ---  start  10:11:12.123  Active        Socket: Connection refused"),
    ReplyLine(1002, "kernel_v4  Kernel     master4    up     2024-05-01  "),
    ReplyLine(0, ""),
]


def test_parse_protocols_canned() -> None:
    mesh, rr, kernel = _parse_protocols(ESTABLISHED_REPLY)
    assert (mesh.name, mesh.state, mesh.since, mesh.info) == (
        "Mesh_198_18_0_12", "up", "2024-05-01 10:11:12", "Established",
    )
    assert mesh.bgp_state == "Established" and mesh.details["Neighbor ID"] == "198.18.0.12"
    assert mesh.channels == {
        "ipv4": {"State": "UP", "Routes": "1 imported, 1 exported, 1 preferred"}
    }
    assert mesh.peer_type == "mesh"
    # to the second: BIRD's milliseconds move between two reads of the same state
    assert rr.since == "10:11:12" and rr.info == "Active        Socket: Connection refused"
    assert rr.neighbor_address == "2001:db8::5" and rr.peer_type == "reflector-client"
    assert (kernel.since, kernel.info, kernel.peer_type) == ("2024-05-01", "", None)


def test_names_to_types_and_addresses() -> None:
    assert peer_type("Mesh_198_18_0_12") == "mesh"
    assert peer_type("Global_198_18_1_1") == "global"
    assert peer_type("RR_198_18_0_2") == "reflector"
    assert peer_type("RRClient_198_18_0_21") == "reflector-client"
    assert peer_type("device1") is None
    assert address_from_name("Node_198_18_0_9_port_1790") == "198.18.0.9"
    assert address_from_name("Mesh_2001_db8_18__12") == "2001:db8:18::12"
    assert address_from_name("kernel_v4") is None


# ------------------------------------------------------------------ two rendered BIRDs


@pytest.fixture
def two_namespaces() -> Iterator[tuple[str, str]]:
    tag = f"{os.getpid() % 100000}"
    names = (f"cnbctl-a-{tag}", f"cnbctl-b-{tag}")
    for ns in names:  # leftovers of a killed run with the same PID
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    try:
        for ns in names:
            ip("netns", "add", ns)
        ip("link", "add", "cnbA", "netns", names[0], "type", "veth", "peer", "name", "cnbB",
           "netns", names[1])
        for ns, dev, addr in ((names[0], "cnbA", "198.18.0.11/24"),
                              (names[1], "cnbB", "198.18.0.12/24")):
            ip("-n", ns, "addr", "add", addr, "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        yield names
    finally:
        for ns in names:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


@pytest.mark.root
@pytest.mark.slow
def test_rendered_configs_peer_and_program_blocks(two_namespaces: tuple[str, str]) -> None:
    from calico_net.agent.confd.render import render_bird_config, validate_bird_config

    def res(kind: str, name: str, spec: dict) -> dict:
        return {"apiVersion": "projectcalico.org/v3", "kind": kind,
                "metadata": {"name": name}, "spec": spec}

    nodes = [res("Node", "node-a", {"bgp": {"ipv4Address": "198.18.0.11/24"}}),
             res("Node", "node-b", {"bgp": {"ipv4Address": "198.18.0.12/24"}})]
    pools = [res("IPPool", "p", {"cidr": "198.19.0.0/16"})]
    blocks = {"node-a": "198.19.1.0/26", "node-b": "198.19.2.0/26"}
    ns_a, ns_b = two_namespaces
    d = Path(tempfile.mkdtemp(prefix="birdctl2-"))
    procs: list[subprocess.Popen[bytes]] = []

    def ns_routes(ns: str) -> str:
        return subprocess.run(["ip", "-n", ns, "route"], check=True, capture_output=True,
                              text=True).stdout

    try:
        # A workload route on node-a, as Felix would program it (its own protocol
        # number): it must stay local and never be exported.
        subprocess.run(["ip", "-n", ns_a, "route", "add", "198.19.1.5/32", "dev", "lo",
                        "proto", "99"], check=True)
        for name, ns in (("node-a", ns_a), ("node-b", ns_b)):
            text = render_bird_config(name, nodes, [], [], pools, [blocks[name]])
            validate_bird_config(text, bird_binary=BIRD)
            cfg = d / f"{name}.cfg"
            cfg.write_text(text)
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, BIRD, "-f", "-c", str(cfg), "-s",
                 str(d / f"{name}.ctl"), "-P", str(d / f"{name}.pid")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            procs.append(proc)
            _wait_for_socket(str(d / f"{name}.ctl"), proc)

        # Deadline for convergence, not a speed check (that is bench/'s job).
        end = time.monotonic() + 60
        while time.monotonic() < end and "198.19.1.0/26" not in ns_routes(ns_b):
            time.sleep(0.2)
        routes_b = ns_routes(ns_b)
        assert "198.19.1.0/26 via 198.18.0.11 dev cnbB proto bird" in routes_b
        assert "blackhole 198.19.2.0/26 proto bird" in routes_b
        assert "198.19.1.5" not in routes_b  # the workload /32 was not exported
        assert "198.19.2.0/26 via 198.18.0.12" in ns_routes(ns_a)

        [s] = bgp_sessions(str(d / "node-b.ctl"))
        assert (s.name, s.peer_type, s.peer_address, s.state, s.info) == (
            "Mesh_198_18_0_11", "mesh", "198.18.0.11", "up", "Established",
        )
        [p] = show_protocols(str(d / "node-b.ctl"), pattern="Mesh_*")
        assert p.channels["ipv4"]["Routes"].startswith("1 imported, 1 exported")
    finally:
        for proc in procs:  # `ip netns exec` execs bird: the PID is BIRD's
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        shutil.rmtree(d, ignore_errors=True)
