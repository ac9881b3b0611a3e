"""FV: the overlay's nft rules (policy.PolicyDataplane.set_encap_hosts) against the real
kernel: real IP-in-IP and VXLAN packets between network namespaces.

Topology (every name starts with ``cnfv-enp-``; the module fixture removes all of it,
and stops the processes it started by PID, also when a test fails):

    cnfv-enp-p1  eth0 198.18.176.11/24 ═╗                 ╔═ eth0 198.18.176.12/24  cnfv-enp-p2
                 vxlan.calico .139/25   ║     br0         ║  vxlan.calico .140/25
                                  cnfv-enp-host 198.18.176.1/24, table inet calico
                                        vxlan.calico 198.19.177.129/25 (VNI 4096, UDP 4789)
                                        cali<11 hex> ══ eth0 198.19.177.5/32  cnfv-enp-w1
                                                        vxlan.calico .141/25 (to p1)

VXLAN: real vxlan devices; the peers reach the host's VXLAN address only through them.
IP-in-IP: this kernel has no ipip driver (no tunl0), so the IP-in-IP endpoints are raw
protocol-4 sockets: ``echo`` in the host (and in p1) answers each IP-in-IP packet
(outer header, inner IPv4 header, a token) with one back, and ``probe`` sends one and
waits for the answer. The host's raw socket only sees what its input hook let through,
so the answer is the proof; the answer also makes the tunnel flow ESTABLISHED in
conntrack, as a real tunnel's traffic does.

Every "dropped" probe follows an "allowed" one to the same target, and each set change
is shown to take effect both ways (a peer added gets through, a peer removed is cut
off although its tunnel flow was established: the overlay rules come before the
conntrack accept).
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from calico_net.agent.felix.nft import NftRunner
from calico_net.agent.felix.policy import FelixSettings, PolicyDataplane

pytestmark = pytest.mark.root

PREFIX = "cnfv-enp-"
HOST, P1, P2, W1 = PREFIX + "host", PREFIX + "p1", PREFIX + "p2", PREFIX + "w1"
NODE = "fv-enp-node"
HOST_IP, P1_IP, P2_IP = "198.18.176.1", "198.18.176.11", "198.18.176.12"
HOST_VX, P1_VX, P2_VX = "198.19.177.129", "198.19.177.139", "198.19.177.140"
W1_IP, W1_VX = "198.19.177.5", "198.19.177.141"
W1_IFACE = "cali" + hashlib.sha1(W1.encode()).hexdigest()[:11]
VNI, PORT = 4096, 4789
TOOL_PATH = Path("/tmp") / f"cnfv-enp-tool-{os.getpid()}.py"

TOOL = r"""
import os, socket, struct, sys, time

def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff

def inner(src, dst, data):
    # an IPv4 header (protocol 253, for experiments) around `data`: what a tunnel carries
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(data), 0, 0, 64, 253, 0,
                    socket.inet_aton(src), socket.inet_aton(dst))
    return h[:10] + struct.pack("!H", csum(h)) + h[12:] + data

def split(packet):
    # raw IPv4 sockets hand over the outer header too
    ihl = (packet[0] & 15) * 4
    body = packet[ihl:]
    return socket.inet_ntoa(packet[12:16]), body[:20], body[20:]

def echo():
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 4)
    print("ready", flush=True)
    while True:
        packet, _ = s.recvfrom(65535)
        src, ih, data = split(packet)
        if len(ih) == 20 and data.startswith(b"REQ"):
            s.sendto(inner(socket.inet_ntoa(ih[16:20]), socket.inet_ntoa(ih[12:16]),
                           b"REP" + data[3:]), (src, 0))

def probe(dst, timeout):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 4)
    s.settimeout(0.2)
    token = os.urandom(8).hex().encode()
    s.sendto(inner("198.19.177.250", "198.19.177.251", b"REQ" + token), (dst, 0))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            packet, _ = s.recvfrom(65535)
        except socket.timeout:
            continue
        src, ih, data = split(packet)
        if src == dst and data == b"REP" + token:
            print("ok")
            return
    print("none")

if sys.argv[1] == "echo":
    echo()
else:
    probe(sys.argv[2], float(sys.argv[3]))
"""


def sh(*cmd: str, ns: str | None = None, check: bool = True) -> str:
    argv = (["ip", "netns", "exec", ns] if ns else []) + list(cmd)
    proc = subprocess.run(argv, text=True, capture_output=True, timeout=60)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def cleanup() -> None:
    """Delete our namespaces (and so every interface in them)."""
    for line in sh("ip", "netns", "list", check=False).splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(PREFIX):
            sh("ip", "netns", "del", name, check=False)


def _peer(ns: str, ip: str, vx: str) -> None:
    """A peer host on br0 with a VXLAN path to the host only."""
    sh("ip", "-n", HOST, "link", "add", "v" + ns[-2:], "type", "veth", "peer", "name", "eth0",
       "netns", ns)
    sh("ip", "-n", HOST, "link", "set", "v" + ns[-2:], "master", "br0", "up")
    sh("ip", "addr", "add", f"{ip}/24", "dev", "eth0", ns=ns)
    sh("ip", "link", "set", "eth0", "up", ns=ns)
    sh("ip", "route", "add", f"{W1_IP}/32", "via", HOST_IP, "dev", "eth0", ns=ns)
    sh("ip", "link", "add", "vxlan.calico", "type", "vxlan", "id", str(VNI), "dstport", str(PORT),
       "local", ip, "dev", "eth0", ns=ns)
    sh("ip", "addr", "add", f"{vx}/25", "dev", "vxlan.calico", ns=ns)
    sh("ip", "link", "set", "vxlan.calico", "up", ns=ns)
    sh("bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "vxlan.calico", "dst", HOST_IP, ns=ns)
    sh("bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "vxlan.calico", "dst", ip, ns=HOST)


def build() -> None:
    cleanup()
    for ns in (HOST, P1, P2, W1):
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "set", "lo", "up", ns=ns)
    sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=HOST)
    sh("ip", "link", "add", "br0", "type", "bridge", ns=HOST)
    sh("ip", "addr", "add", f"{HOST_IP}/24", "dev", "br0", ns=HOST)
    sh("ip", "link", "set", "br0", "up", ns=HOST)
    sh("ip", "link", "add", "vxlan.calico", "type", "vxlan", "id", str(VNI), "dstport", str(PORT),
       "local", HOST_IP, "dev", "br0", ns=HOST)
    sh("ip", "addr", "add", f"{HOST_VX}/25", "dev", "vxlan.calico", ns=HOST)
    sh("ip", "link", "set", "vxlan.calico", "up", ns=HOST)
    _peer(P1, P1_IP, P1_VX)
    _peer(P2, P2_IP, P2_VX)
    # the workload, wired as Calico's CNI plugin wires it
    sh("ip", "-n", HOST, "link", "add", W1_IFACE, "type", "veth", "peer", "name", "eth0",
       "netns", W1)
    sh("sysctl", "-qw", f"net.ipv4.conf.{W1_IFACE}.proxy_arp=1", ns=HOST)
    sh("sysctl", "-qw", f"net.ipv4.neigh.{W1_IFACE}.proxy_delay=0", ns=HOST)
    sh("ip", "link", "set", W1_IFACE, "up", ns=HOST)
    sh("ip", "route", "add", f"{W1_IP}/32", "dev", W1_IFACE, ns=HOST)
    # proxy ARP answers for 169.254.1.1 only with a route to it out of another
    # interface (a Calico host has its default route for that)
    sh("ip", "route", "add", "169.254.1.1/32", "dev", "br0", ns=HOST)
    sh("ip", "addr", "add", f"{W1_IP}/32", "dev", "eth0", ns=W1)
    sh("ip", "link", "set", "eth0", "up", ns=W1)
    sh("ip", "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link", ns=W1)
    sh("ip", "route", "add", "default", "via", "169.254.1.1", "dev", "eth0", "onlink", ns=W1)
    # a VXLAN tunnel the workload builds to p1 (over its eth0, through the host)
    sh("ip", "link", "add", "vxlan.calico", "type", "vxlan", "id", str(VNI), "dstport", str(PORT),
       "local", W1_IP, "dev", "eth0", ns=W1)
    sh("ip", "addr", "add", f"{W1_VX}/25", "dev", "vxlan.calico", ns=W1)
    sh("ip", "link", "set", "vxlan.calico", "up", ns=W1)
    sh("bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "vxlan.calico", "dst", P1_IP, ns=W1)
    sh("bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "vxlan.calico", "dst", W1_IP, ns=P1)


@pytest.fixture(scope="module")
def topo() -> Iterator[None]:
    TOOL_PATH.write_text(TOOL)
    procs: list[subprocess.Popen] = []
    try:
        build()
        for ns in (HOST, P1):
            p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, str(TOOL_PATH), "echo"],
                                 stdout=subprocess.PIPE, text=True)
            procs.append(p)
            assert p.stdout is not None and "ready" in p.stdout.readline(), f"echo in {ns}"
        yield
    finally:
        for p in procs:
            if p.poll() is None:
                os.kill(p.pid, 9)
            p.wait(timeout=10)
        cleanup()
        TOOL_PATH.unlink(missing_ok=True)


def make_dp(settings: FelixSettings | None = None) -> PolicyDataplane:
    d = PolicyDataplane(NODE, settings=settings, nft=NftRunner(netns=HOST))
    # w1 may talk to anyone: only the overlay rules can stop its packets
    d.update("Profile", "allow-all", None, {
        "kind": "Profile", "metadata": {"name": "allow-all"},
        "spec": {"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}]}})
    d.update("WorkloadEndpoint", "w1", "fv", {
        "apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
        "metadata": {"name": "w1", "namespace": "fv"},
        "spec": {"node": NODE, "orchestrator": "cni", "workload": "w1", "endpoint": "eth0",
                 "interfaceName": W1_IFACE, "ipNetworks": [f"{W1_IP}/32"],
                 "profiles": ["allow-all"]}})
    return d


@pytest.fixture
def dp(topo) -> Iterator[PolicyDataplane]:
    d = make_dp()
    yield d
    sh("nft", "delete", "table", "inet", "calico", ns=HOST, check=False)
    sh("conntrack", "-F", ns=HOST, check=False)


def pings(ns: str, ip: str) -> bool:
    """One round of pings (a reply within 2 s)."""
    return subprocess.run(["ip", "netns", "exec", ns, "ping", "-n", "-q", "-c", "3", "-i", "0.2",
                           "-w", "2", ip], capture_output=True, timeout=30).returncode == 0


def ipip_answered(ns: str, ip: str) -> bool:
    """An IP-in-IP packet from `ns` to `ip` gets an IP-in-IP answer within 1.5 s."""
    out = sh(sys.executable, str(TOOL_PATH), "probe", ip, "1.5", ns=ns)
    return out.strip() == "ok"


def allowed(ns: str, ip: str, ipip: bool = False, timeout: float = 15.0) -> None:
    """`ns` gets answers from `ip` (retried while neighbours resolve; the timeout is a
    hang guard)."""
    deadline = time.monotonic() + timeout
    while not (ipip_answered(ns, ip) if ipip else pings(ns, ip)):
        assert time.monotonic() < deadline, f"{ns} -> {ip}: no answer in {timeout}s"


def dropped(ns: str, ip: str, ipip: bool = False) -> None:
    answered = ipip_answered(ns, ip) or ipip_answered(ns, ip) if ipip else pings(ns, ip)
    assert not answered, f"{ns} -> {ip}: answered, should be dropped"


def test_ipip_only_from_hosts_in_the_set(dp):
    dp.set_encap_hosts(frozenset({P1_IP}), None, PORT)
    assert dp.apply().full
    allowed(P1, HOST_IP, ipip=True)
    dropped(P2, HOST_IP, ipip=True)
    allowed(P2, HOST_IP)                # p2 itself reaches the host: only IP-in-IP is cut
    # p2 joins: an element change (netlink, no nft run), and it gets through
    dp.set_encap_hosts(frozenset({P1_IP, P2_IP}), None, PORT)
    st = dp.apply()
    assert st.netlink and st.chains_written == 0
    allowed(P2, HOST_IP, ipip=True)
    allowed(P1, HOST_IP, ipip=True)
    # p1 leaves: cut off although its tunnel flow is established in conntrack
    # (a protocol-4 entry that has seen the reply: `ct state established` matches it)
    flows = [f for f in sh("conntrack", "-L", "-s", P1_IP, ns=HOST).splitlines()
             if f.split()[:2] == ["unknown", "4"]]
    assert flows and "UNREPLIED" not in flows[0], flows
    dp.set_encap_hosts(frozenset({P2_IP}), None, PORT)
    assert dp.apply().netlink
    allowed(P2, HOST_IP, ipip=True)
    dropped(P1, HOST_IP, ipip=True)
    # IP-in-IP no longer in use: no overlay rules at all, nothing stops it
    dp.set_encap_hosts(None, None, PORT)
    dp.apply()
    assert "cali-ipip-hosts4" not in sh("nft", "list", "table", "inet", "calico", ns=HOST)
    allowed(P1, HOST_IP, ipip=True)


def test_vxlan_only_from_hosts_in_the_set(dp):
    dp.set_encap_hosts(None, frozenset({P1_IP}), PORT)
    dp.apply()
    allowed(P1, HOST_VX)
    dropped(P2, HOST_VX)
    allowed(P2, HOST_IP)
    dp.set_encap_hosts(None, frozenset({P1_IP, P2_IP}), PORT)
    assert dp.apply().netlink
    allowed(P2, HOST_VX)
    dp.set_encap_hosts(None, frozenset({P2_IP}), PORT)
    assert dp.apply().netlink
    allowed(P2, HOST_VX)
    dropped(P1, HOST_VX)
    # the VXLAN set says nothing about IP-in-IP, which is not in use here
    allowed(P1, HOST_IP, ipip=True)


def test_both_overlays_keep_their_own_sets(dp):
    dp.set_encap_hosts(frozenset({P1_IP}), frozenset({P2_IP}), PORT)
    dp.apply()
    allowed(P1, HOST_IP, ipip=True)
    dropped(P2, HOST_IP, ipip=True)
    allowed(P2, HOST_VX)
    dropped(P1, HOST_VX)


def test_workload_ipip_dropped_unless_allowed(dp):
    dp.set_encap_hosts(frozenset({P1_IP, P2_IP}), None, PORT)
    dp.apply()
    # to the same peer: plain packets pass (the profile allows all), IP-in-IP not
    allowed(W1, P1_IP)
    dropped(W1, P1_IP, ipip=True)
    dp.set_settings(FelixSettings(allow_ipip_from_workloads=True))
    dp.apply()
    allowed(W1, P1_IP, ipip=True)


def test_workload_ipip_passes_while_ipip_is_not_in_use(dp):
    dp.apply()
    allowed(W1, P1_IP, ipip=True)
    # the same dataplane drops it once IP-in-IP is in use
    dp.set_encap_hosts(frozenset({P1_IP}), None, PORT)
    dp.apply()
    sh("conntrack", "-F", ns=HOST)      # the flow above is established: forget it
    allowed(W1, P1_IP)
    dropped(W1, P1_IP, ipip=True)


def test_workload_vxlan_dropped_unless_allowed(dp):
    dp.set_encap_hosts(None, frozenset({P1_IP, P2_IP}), PORT)
    dp.apply()
    allowed(W1, P1_IP)
    dropped(W1, P1_VX)
    dp.set_settings(FelixSettings(allow_vxlan_from_workloads=True))
    dp.apply()
    allowed(W1, P1_VX)
    # the IP-in-IP flag is another one
    dp.set_settings(FelixSettings(allow_ipip_from_workloads=True))
    dp.apply()
    sh("conntrack", "-F", ns=HOST)
    dropped(W1, P1_VX)
