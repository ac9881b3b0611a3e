"""FV: FelixConfiguration natOutgoingAddress and natPortRange on the real agent.

The shared FV topology (tests/fv/conftest.py): the agent in its host namespace, w1 in
a natOutgoing IPPool (198.19.1.0/24). The destination is outside the pools: a TCP
listener this test opens in the root namespace on the host link's far end (NET.1),
which records the source address and port each connection arrives from. The NAT
address NET.77 is put on the host namespace's eth0, so the root namespace's replies to
it reach the host namespace (where conntrack undoes the SNAT). Checked: the rule in
`nft list table inet calico`, the conntrack entry in the host namespace (reply tuple),
and what the destination saw; then the FelixConfiguration changes and all three follow.
"""
from __future__ import annotations

import re
import socket
import sys
import threading

import pytest

pytestmark = pytest.mark.root

L = None  # the FV helper module (tests/fv/conftest.py), bound below
CONVERGE = 60   # hang guard for the agent's work, not a speed check
V3 = "projectcalico.org/v3"


@pytest.fixture(autouse=True, scope="module")
def _bind_helpers(fvlib):
    global L
    L = fvlib


class Listener:
    """A TCP server in the root namespace: the peer (address, port) of each connection."""

    def __init__(self, host: str) -> None:
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.peers: list[tuple[str, int]] = []
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            try:
                c, peer = self.sock.accept()
            except OSError:
                return
            self.peers.append(peer)
            try:
                c.sendall(b"ok\n")
            finally:
                c.close()

    def close(self) -> None:
        self.sock.close()


class UdpEcho:
    """A UDP echo in the root namespace: the peer (address, port) of each datagram."""

    def __init__(self, host: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.port = self.sock.getsockname()[1]
        self.peers: list[tuple[str, int]] = []
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(64)
            except OSError:
                return
            self.peers.append(peer)
            self.sock.sendto(data, peer)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener(fv):
    lst = Listener(f"{L.NET}.1")
    lst.udp = UdpEcho(f"{L.NET}.1")
    L.sh("ip", "addr", "add", f"{L.NET}.77/32", "dev", "eth0", ns=L.HOST_NS)
    try:
        yield lst
    finally:
        lst.close()
        lst.udp.close()
        L.sh("ip", "addr", "del", f"{L.NET}.77/32", "dev", "eth0", ns=L.HOST_NS, check=False)
        L.sh("conntrack", "-F", ns=L.HOST_NS, check=False)


CONNECT = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
print(s.recv(16).decode().strip(), s.getsockname()[1])
"""


def connect(w, host: str, port: int) -> int:
    """Connect from workload `w`; returns the workload's own source port."""
    out = L.sh(sys.executable, "-c", CONNECT, host, str(port), ns=w.ns).split()
    assert out[0] == "ok", out
    return int(out[1])


UDP_SEND = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(10)
s.sendto(b"hi", (sys.argv[1], int(sys.argv[2])))
print(s.recv(16).decode(), s.getsockname()[1])
"""


def udp_exchange(w, host: str, port: int) -> int:
    """One datagram from workload `w` and its echo; returns w's source port."""
    out = L.sh(sys.executable, "-c", UDP_SEND, host, str(port), ns=w.ns).split()
    assert out[0] == "hi", out
    return int(out[1])


def conntrack_reply(w, dst: str, port: int, sport: int, proto: str = "tcp") -> tuple[str, int]:
    """The reply tuple's destination (address, port) of w's flow: the SNATed source."""
    out = L.sh("conntrack", "-L", "-p", proto, "-s", w.ip, "-d", dst, "--dport", str(port),
               "--sport", str(sport), ns=L.HOST_NS)
    line = next(x for x in out.splitlines() if f"dport={port}" in x)
    reply = line.split(f"dport={port}", 1)[1]      # the second (reply) tuple
    m = re.search(r"dst=(\S+) sport=\d+ dport=(\d+)", reply)
    assert m, line
    return m.group(1), int(m.group(2))


def felix(spec: dict) -> dict:
    return {"apiVersion": V3, "kind": "FelixConfiguration", "metadata": {"name": "default"}, "spec": spec}


def nat_chain() -> str:
    text = L.sh("nft", "list", "chain", "inet", "calico", "cali-nat-postrouting", ns=L.HOST_NS, check=False)
    return text


def test_nat_outgoing_address_and_port_range_follow_felix_configuration(clean, listener):
    env = clean
    w1 = env.workloads[0]
    net = L.NET
    # the real agent records ClusterInformation default when it starts (from a thread
    # of its own; tests/integration/test_cluster_information.py checks the document)
    L.wait_for(lambda: "ClusterInformation default created" in env.agent.log_tail(2000), CONVERGE,
               "ClusterInformation recorded at the agent's start", env.agent)
    env.ds.apply_all([
        {"apiVersion": V3, "kind": "IPPool", "metadata": {"name": "nat-pool"},
         "spec": {"cidr": "198.19.1.0/24", "natOutgoing": True}},
        {"apiVersion": V3, "kind": "Profile", "metadata": {"name": "open"},
         "spec": {"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}]}},
        felix({"natOutgoingAddress": f"{net}.77", "natPortRange": "40000:40099"}),
        L.wep(w1, profiles=["open"]),
    ])
    L.wait_for(lambda: w1.ip in L.our_routes(), CONVERGE, "w1's route", env.agent)
    L.wait_for(lambda: f"snat ip to {net}.77:40000-40099" in nat_chain(), CONVERGE,
               "SNAT with the port range in cali-nat-postrouting", env.agent)
    chain = nat_chain()
    for proto in ("tcp", "udp"):
        assert (f"ip saddr @cali-masq4 ip daddr != @cali-pools4 meta l4proto {proto} "
                f"snat ip to {net}.77:40000-40099") in chain
    assert f"ip saddr @cali-masq4 ip daddr != @cali-pools4 snat ip to {net}.77\n" in chain

    sport = connect(w1, f"{net}.1", listener.port)
    addr, port = listener.peers[-1]
    assert addr == f"{net}.77" and 40000 <= port <= 40099, listener.peers
    assert conntrack_reply(w1, f"{net}.1", listener.port, sport) == (addr, port)
    # UDP takes the range too
    sport = udp_exchange(w1, f"{net}.1", listener.udp.port)
    addr, port = listener.udp.peers[-1]
    assert addr == f"{net}.77" and 40000 <= port <= 40099, listener.udp.peers
    assert conntrack_reply(w1, f"{net}.1", listener.udp.port, sport, "udp") == (addr, port)

    # the FelixConfiguration changes: masquerade (the host's own address) to another range
    env.ds.apply_all([felix({"natPortRange": "41000:41009"})])
    L.wait_for(lambda: "masquerade to :41000-41009" in nat_chain(), CONVERGE,
               "masquerade with the new port range", env.agent)
    assert "snat" not in nat_chain()
    sport = connect(w1, f"{net}.1", listener.port)
    addr, port = listener.peers[-1]
    assert addr == f"{net}.2" and 41000 <= port <= 41009, listener.peers
    assert conntrack_reply(w1, f"{net}.1", listener.port, sport) == (addr, port)

    # and with neither: plain masquerade, any port
    env.ds.apply_all([felix({})])
    L.wait_for(lambda: "masquerade to" not in nat_chain() and "masquerade" in nat_chain(), CONVERGE,
               "plain masquerade", env.agent)
    connect(w1, f"{net}.1", listener.port)
    assert listener.peers[-1][0] == f"{net}.2"
