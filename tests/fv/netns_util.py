"""Network-namespace helpers for the policy dataplane FV tests (tests/fv/test_policy_dataplane.py).

Topology built by `PolicyTopology` (all names start with ``cnfv-pol-``):

    cnfv-pol-ext  eth0 198.18.223.2/24 ══ veth ══ ens-ext 198.18.223.1/24  cnfv-pol-host
                                                   cali<11 hex> ══ veth ══ eth0  cnfv-pol-wN
                                                                           198.19.0.N/32

Workloads are wired exactly as Calico's CNI plugin wires them: host side ``cali`` +
11 hex chars without an address, proxy_arp=1 on it, a /32 route to it; container
side ``eth0`` with a /32, ``169.254.1.1`` link route and ``default via 169.254.1.1
onlink``.  Forwarding is on in the host namespace, whose default route points at the
"external" namespace (which also gives proxy ARP a path to answer for 169.254.1.1).
Every namespace runs a tiny TCP server (ports 22, 8080 and 9090) that answers each
connection with the peer address it saw, so NAT can be checked too.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

PREFIX = "cnfv-pol-"
HOST_NS = PREFIX + "host"
EXT_NS = PREFIX + "ext"
EXT_NET = "198.18.223"
HOST_EXT_IF = "ens-ext"
SERVER_PORTS = (22, 8080, 9090)

TOOL_SOURCE = r"""
import json, os, socket, subprocess, sys, threading, time

def serve(ports):
    def loop(port):
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port)); s.listen(128)
        while True:
            c, addr = s.accept()
            try:
                c.sendall(("ok " + addr[0] + "\n").encode())
            except OSError:
                pass
            finally:
                c.close()
    for p in ports:
        threading.Thread(target=loop, args=(p,), daemon=True).start()
    print("ready", flush=True)
    while True:
        time.sleep(3600)

def tcp(ip, port, timeout):
    try:
        with socket.create_connection((ip, port), timeout=timeout) as c:
            c.settimeout(timeout)
            data = c.recv(64).decode()
            return data.split()[1] if data.startswith("ok ") else False
    except OSError:
        return False

def ping(ip, timeout):
    r = subprocess.run(["ping", "-n", "-q", "-c", "1", "-W", str(max(1, int(timeout))), ip],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return r.returncode == 0

def probe(timeout, targets):
    out = {}
    def one(label, ip, port):
        out[label] = ping(ip, timeout) if port == 0 else tcp(ip, port, timeout)
    ts = [threading.Thread(target=one, args=tuple(t)) for t in targets]
    for t in ts: t.start()
    for t in ts: t.join()
    print(json.dumps(out))

if sys.argv[1] == "serve":
    serve([int(p) for p in sys.argv[2:]])
else:
    probe(float(sys.argv[2]), json.loads(sys.argv[3]))
"""


def sh(*cmd: str, ns: str | None = None, check: bool = True, input: str | None = None,
       timeout: float = 60) -> str:
    argv = (["ip", "netns", "exec", ns] if ns else []) + list(cmd)
    proc = subprocess.run(argv, input=input, text=True, capture_output=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def _ours(name: str) -> bool:
    """Namespaces this topology makes: cnfv-pol-host, -ext and -w<N> (not the bench's)."""
    if not name.startswith(PREFIX):
        return False
    rest = name[len(PREFIX):]
    return rest in ("host", "ext") or (rest[:1] == "w" and rest[1:].isdigit())


def cleanup_leftovers() -> None:
    """Delete this topology's namespaces (possibly left by a killed run), killing the
    processes still inside them first."""
    for line in sh("ip", "netns", "list", check=False).splitlines():
        name = line.split()[0] if line.strip() else ""
        if not _ours(name):
            continue
        for pid in sh("ip", "netns", "pids", name, check=False).split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        sh("ip", "netns", "del", name, check=False)


def serve_in(ns: str, tool: Path, ports: Any) -> subprocess.Popen[str]:
    """The tool's TCP server on `ports` in namespace `ns`, once it says it listens."""
    p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, str(tool), "serve",
                          *map(str, ports)], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    if "ready" not in p.stdout.readline():
        p.kill()
        p.wait(timeout=10)
        raise RuntimeError(f"server in {ns} did not start")
    return p


def stop_servers(procs: Any) -> None:
    """Kill the servers `serve_in` started (None entries skipped) and reap them."""
    for p in procs:
        if p is None:
            continue
        if p.poll() is None:
            p.kill()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


@contextlib.contextmanager
def host_dataplane(node: str, settings: Any, host_ns: str) -> Iterator[Any]:
    """The agent's policy dataplane writing table inet calico in `host_ns`; the table
    is deleted afterwards."""
    from calico_net.agent.felix.nft import NftRunner
    from calico_net.agent.felix.policy import PolicyDataplane

    try:
        yield PolicyDataplane(node, settings, nft=NftRunner(netns=host_ns))
    finally:
        sh("nft", "delete", "table", "inet", "calico", ns=host_ns, check=False)


def iface_for(name: str) -> str:
    """Host-side interface name as Calico's CNI plugin makes it: cali + 11 hex."""
    return "cali" + hashlib.sha1(name.encode()).hexdigest()[:11]


def plumb_host(host_ns: str, ext: str, addr: str) -> None:
    """A host namespace `host_ns` that forwards, with a veth pair `ext`/`ext`+"p" whose
    `ext` end holds `addr` (CIDR) and carries the default route: proxy ARP answers for
    the workloads' gateway only when the host routes it elsewhere."""
    sh("ip", "netns", "add", host_ns)
    sh("ip", "link", "set", "lo", "up", ns=host_ns)
    sh("ip", "link", "add", ext, "type", "veth", "peer", "name", ext + "p", ns=host_ns)
    sh("ip", "addr", "add", addr, "dev", ext, ns=host_ns)
    for dev in (ext, ext + "p"):
        sh("ip", "link", "set", dev, "up", ns=host_ns)
    sh("ip", "route", "add", "default", "dev", ext, ns=host_ns)
    sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=host_ns)


def plumb_workload(host_ns: str, ns: str, iface: str, ip: str) -> None:
    """A workload namespace `ns` wired as Calico's CNI plugin wires one: a veth pair
    (`iface` in `host_ns`, eth0 in `ns`), `ip`/32 on eth0, the host's /32 route to it,
    proxy ARP on the host side, and the workload's default route through the link-local
    gateway 169.254.1.1 that proxy ARP answers for."""
    sh("ip", "netns", "add", ns)
    sh("ip", "link", "set", "lo", "up", ns=ns)
    sh("ip", "link", "add", iface, "netns", host_ns, "type", "veth",
       "peer", "name", "eth0", "netns", ns)
    sh("sysctl", "-qw", f"net.ipv4.conf.{iface}.proxy_arp=1", ns=host_ns)
    sh("sysctl", "-qw", f"net.ipv4.conf.{iface}.forwarding=1", ns=host_ns)
    sh("sysctl", "-qw", f"net.ipv4.neigh.{iface}.proxy_delay=0", ns=host_ns)
    sh("ip", "link", "set", iface, "up", ns=host_ns)
    sh("ip", "route", "add", f"{ip}/32", "dev", iface, ns=host_ns)
    sh("ip", "addr", "add", f"{ip}/32", "dev", "eth0", ns=ns)
    sh("ip", "link", "set", "eth0", "up", ns=ns)
    sh("ip", "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link", ns=ns)
    sh("ip", "route", "add", "default", "via", "169.254.1.1", "dev", "eth0", "onlink", ns=ns)


@dataclass
class Workload:
    name: str          # short name, also the WorkloadEndpoint name
    ip: str
    ns: str
    iface: str


@dataclass
class PolicyTopology:
    n_workloads: int = 4
    workloads: list[Workload] = field(default_factory=list)
    procs: list[subprocess.Popen] = field(default_factory=list)
    tool: Path = field(default_factory=lambda: Path("/tmp") / f"cnfv-pol-tool-{os.getpid()}.py")

    def build(self) -> None:
        cleanup_leftovers()
        self.tool.write_text(TOOL_SOURCE)
        sh("ip", "netns", "add", HOST_NS)
        sh("ip", "netns", "add", EXT_NS)
        for ns in (HOST_NS, EXT_NS):
            sh("ip", "link", "set", "lo", "up", ns=ns)
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=HOST_NS)
        sh("ip", "link", "add", HOST_EXT_IF, "netns", HOST_NS, "type", "veth",
           "peer", "name", "eth0", "netns", EXT_NS)
        sh("ip", "addr", "add", f"{EXT_NET}.1/24", "dev", HOST_EXT_IF, ns=HOST_NS)
        sh("ip", "link", "set", HOST_EXT_IF, "up", ns=HOST_NS)
        sh("ip", "route", "add", "default", "via", f"{EXT_NET}.2", ns=HOST_NS)
        sh("ip", "addr", "add", f"{EXT_NET}.2/24", "dev", "eth0", ns=EXT_NS)
        sh("ip", "link", "set", "eth0", "up", ns=EXT_NS)
        for i in range(1, self.n_workloads + 1):
            self.workloads.append(self._add_workload(f"w{i}", f"198.19.0.{i}"))
        for ns in [EXT_NS, HOST_NS] + [w.ns for w in self.workloads]:
            self._serve(ns)

    def _add_workload(self, name: str, ip: str) -> Workload:
        ns = PREFIX + name
        iface = iface_for(ns)
        plumb_workload(HOST_NS, ns, iface, ip)
        return Workload(name, ip, ns, iface)

    def _serve(self, ns: str) -> None:
        self.procs.append(serve_in(ns, self.tool, SERVER_PORTS))

    def teardown(self) -> None:
        stop_servers(self.procs)
        self.procs.clear()
        cleanup_leftovers()
        try:
            self.tool.unlink()
        except FileNotFoundError:
            pass

    # -- traffic ---------------------------------------------------------------

    def probe(self, src_ns: str, targets: list[tuple[str, str, int]], timeout: float = 1.0) -> dict[str, Any]:
        """Run connection attempts in parallel from `src_ns`: (label, ip, port); port 0 = ping.
        TCP results are the source address the server saw (str) or False."""
        out = sh(sys.executable, str(self.tool), "probe", str(timeout), json.dumps(targets),
                 ns=src_ns, timeout=60)
        return json.loads(out)

    def tcp_matrix(self, port: int = 8080) -> set[tuple[str, str]]:
        """All (src, dst) workload pairs whose TCP connection to `port` succeeds."""
        return self._matrix(port)

    def ping_matrix(self) -> set[tuple[str, str]]:
        """All (src, dst) workload pairs whose ping is answered."""
        return self._matrix(0)

    def _matrix(self, port: int, timeout: float = 1.0) -> set[tuple[str, str]]:
        # one probe process per source namespace, all running at once
        procs = []
        for src in self.workloads:
            targets = [(dst.name, dst.ip, port) for dst in self.workloads if dst is not src]
            procs.append((src, subprocess.Popen(
                ["ip", "netns", "exec", src.ns, sys.executable, str(self.tool), "probe",
                 str(timeout), json.dumps(targets)], stdout=subprocess.PIPE, text=True)))
        ok: set[tuple[str, str]] = set()
        for src, p in procs:
            out, _ = p.communicate(timeout=60)
            if p.returncode != 0:
                raise RuntimeError(f"probe from {src.ns} failed")
            for dst, res in json.loads(out).items():
                if res:
                    ok.add((src.name, dst))
        return ok

    def by_name(self, name: str) -> Workload:
        return next(w for w in self.workloads if w.name == name)
