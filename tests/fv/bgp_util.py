"""A multi-host BGP fabric in network namespaces, for the BGP FV tests and bench.

Topology (every name starts with ``cnfv-bgp-``; :meth:`Fabric.teardown` removes all of
it, and :func:`cleanup_leftovers` what a killed earlier run left):

    root ns  cnfvbgp0 198.18.224.1/24  (etcd listens here)
                 ║ veth
    cnfv-bgp-br  up0 198.18.224.2/24, br0 198.18.0.1/24 (bridge, forwarding, masquerade
                 ║                    out of up0 so the root ns needs no fabric route)
         ╔═══════╬══════════════╦══════════════════╗
    cnfv-bgp-h1  cnfv-bgp-h2  cnfv-bgp-h3       cnfv-bgp-tor         cnfv-bgp-ext2
    eth0 .11     eth0 .12     eth0 .13          eth0 .254            eth0 .253
    BIRD+confd   BIRD+confd   BIRD+confd        BIRD, AS 65001       BIRD, AS 65002
                                                ("top of rack")      (started on demand)
      ║ cali<11 hex>
    cnfv-bgp-h1-w1  eth0 198.19.x.y/32 (IPAM address of a block affine to h1)

The fabric lives in its own namespaces because the lab's podman network also uses
198.18.0.0/24 in the root namespace. Each host is registered by the real start-up
code (``python -m calico_net.agent.startup`` with ``IP=autodetect``), runs its own confd
process (``python -m calico_net.agent.confd``) and its own ``bird -f``; workloads are
wired as the CNI plugin and Felix wire them (host side ``cali…``, /32 route, proxy
ARP, container default route via 169.254.1.1 onlink), programmed here directly.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
VENV_BIN = Path(sys.executable).parent
PYTHON = sys.executable

PREFIX = "cnfv-bgp-"
BR_NS = PREFIX + "br"
TOR_NS = PREFIX + "tor"
EXT2_NS = PREFIX + "ext2"
ROOT_IF = "cnfvbgp0"
UPLINK = "198.18.224"
FABRIC = "198.18.0"
POOL_CIDR = "198.19.0.0/16"
TOR_IP = f"{FABRIC}.254"
EXT2_IP = f"{FABRIC}.253"
TOR_AS = 65001
EXT2_AS = 65002
CLUSTER_AS = 64512


def sh(*cmd: str, ns: str | None = None, check: bool = True, timeout: float = 30,
       **kw: Any) -> str:
    argv = (["ip", "netns", "exec", ns] if ns else []) + list(cmd)
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr.strip()}")
    return p.stdout


def wait_for(cond: Callable[[], Any], timeout: float, what: str,
             diag: Callable[[], str] | None = None, interval: float = 0.05) -> Any:
    """Poll ``cond`` until it returns something true; AssertionError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\n{diag()}" if diag else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {what}{extra}")
        time.sleep(interval)


def root_conftest() -> Any:
    """tests/etcd_server.py (start_etcd/stop_etcd), imported by path."""
    name = "etcd_server"
    if name in sys.modules:
        return sys.modules[name]
    tests_dir = str(REPO / "tests")
    if tests_dir not in sys.path:
        sys.path.insert(0, tests_dir)
    import etcd_server

    return etcd_server


def _kill_pids_in(ns: str) -> None:
    for pid in sh("ip", "netns", "pids", ns, check=False).split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def cleanup_leftovers() -> None:
    """Remove our namespaces (and what still runs in them) and our root-ns link."""
    for line in sh("ip", "netns", "list", check=False).splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(PREFIX):
            _kill_pids_in(name)
            sh("ip", "netns", "del", name, check=False)
    sh("ip", "link", "del", ROOT_IF, check=False)


def stop_process(proc: subprocess.Popen | None, grace: float = 10) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def iface_name(workload: str) -> str:
    return "cali" + hashlib.sha1(workload.encode()).hexdigest()[:11]


# ------------------------------------------------------------------ BIRD helpers


def kernel_routes(ns: str, proto: str = "bird") -> dict[str, dict[str, Any]]:
    """{dst: route} of the routes of ``proto`` in ``ns``'s main table."""
    out = sh("ip", "-j", "route", "show", "proto", proto, ns=ns, check=False)
    return {r["dst"]: r for r in json.loads(out or "[]")}


def sessions(sock: str) -> dict[str, Any]:
    """{protocol name: BGPSession} from a BIRD control socket ({} if BIRD is down)."""
    from calico_net.agent.confd.birdctl import BirdCtlError, bgp_sessions

    try:
        return {s.name: s for s in bgp_sessions(sock, timeout=5)}
    except (BirdCtlError, OSError):
        return {}


def established(sock: str) -> set[str]:
    return {n for n, s in sessions(sock).items() if s.info.startswith("Established")}


# ---------------------------------------------------------------------- hosts


@dataclass
class Workload:
    name: str
    host: Host
    ip: str
    ns: str
    iface: str


@dataclass
class Host:
    name: str  # the Node name, e.g. "h1"
    index: int
    tmp: Path
    confd: subprocess.Popen | None = None
    bird: subprocess.Popen | None = None
    confd_env: dict[str, str] = field(default_factory=dict)
    workloads: list[Workload] = field(default_factory=list)

    @property
    def ns(self) -> str:
        return PREFIX + self.name

    @property
    def ip(self) -> str:
        return f"{FABRIC}.{10 + self.index}"

    @property
    def bird_cfg(self) -> Path:
        return self.tmp / f"{self.name}-bird.cfg"

    @property
    def sock(self) -> str:
        return str(self.tmp / f"{self.name}-bird.ctl")

    @property
    def status_file(self) -> Path:
        return self.tmp / f"{self.name}-confd-status.json"

    @property
    def confd_log(self) -> Path:
        return self.tmp / f"{self.name}-confd.log"

    @property
    def bird_log(self) -> Path:
        return self.tmp / f"{self.name}-bird.log"

    def status(self) -> dict[str, Any]:
        try:
            return json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            return {}

    def routes(self) -> dict[str, dict[str, Any]]:
        return kernel_routes(self.ns)

    def sessions(self) -> dict[str, Any]:
        return sessions(self.sock)

    def established(self) -> set[str]:
        return established(self.sock)

    def http(self, path: str, port: int = 9098) -> tuple[int, str]:
        """GET 127.0.0.1:<port><path> inside the host namespace (confd's health)."""
        p = subprocess.run(
            ["ip", "netns", "exec", self.ns, "curl", "-s", "-m", "3", "-w", "\n%{http_code}",
             f"http://127.0.0.1:{port}{path}"],
            capture_output=True, text=True, timeout=10)
        body, _, code = p.stdout.rpartition("\n")
        return int(code or 0), body

    def log_tail(self, n: int = 40) -> str:
        parts = []
        for label, path in (("confd", self.confd_log), ("bird", self.bird_log)):
            try:
                lines = path.read_text(errors="replace").splitlines()[-n:]
            except OSError:
                lines = []
            parts.append(f"--- {self.name} {label} log ---\n" + "\n".join(lines))
        return "\n".join(parts)


class Fabric:
    """The namespaces, etcd, and per host confd + BIRD; see the module docstring."""

    def __init__(self, tmp: Path, n_hosts: int = 3, *, bfd: bool = False) -> None:
        self.tmp = tmp
        self.hosts = [Host(f"h{i}", i, tmp) for i in range(1, n_hosts + 1)]
        self.bfd = bfd
        self.etcd: Any = None
        self.client: Any = None
        self.ds: Any = None
        self.ipam: Any = None
        self.tor: subprocess.Popen | None = None
        self.tor_sock = str(tmp / "tor-bird.ctl")
        self.tor_cfg = tmp / "tor-bird.cfg"
        self.tor_log = tmp / "tor-bird.log"
        self.ext2: subprocess.Popen | None = None
        self.ext2_sock = str(tmp / "ext2-bird.ctl")
        self._workload_seq = 0

    # -- build

    def setup(self) -> Fabric:
        cleanup_leftovers()
        self._network()
        rc = root_conftest()
        # etcd's data on tmpfs when there is one: its fsyncs otherwise dominate on a
        # busy shared disk (request timeouts seen at load 20 on 2 cores).
        saved = tempfile.tempdir
        if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
            tempfile.tempdir = "/dev/shm"
        try:
            self.etcd = rc.start_etcd(listen_host=f"{UPLINK}.1")
        finally:
            tempfile.tempdir = saved
        from calico_net.datastore import Datastore
        from calico_net.datastore.etcd import EtcdClient, EtcdConfig
        from calico_net.ipam import IPAM

        self.client = EtcdClient(EtcdConfig(endpoints=[self.etcd.endpoints]))
        self.ds = Datastore(self.client)
        self.ipam = IPAM(self.client, self.ds)
        self.ds.create({
            "apiVersion": "projectcalico.org/v3", "kind": "IPPool",
            "metadata": {"name": "fv-pool"},
            "spec": {"cidr": POOL_CIDR, "blockSize": 26, "natOutgoing": False},
        })
        cfg: dict[str, Any] = {
            "apiVersion": "projectcalico.org/v3", "kind": "BGPConfiguration",
            "metadata": {"name": "default"},
            "spec": {"nodeToNodeMeshEnabled": True, "asNumber": CLUSTER_AS},
        }
        if self.bfd:
            cfg["metadata"]["annotations"] = {"calico-net.io/bfd": "true"}
        self.ds.create(cfg)
        for h in self.hosts:
            self.register(h)
        for h in self.hosts:
            self.start_confd(h)
        for h in self.hosts:
            self.start_bird(h)
        return self

    def _network(self) -> None:
        sh("ip", "netns", "add", BR_NS)
        sh("ip", "link", "set", "lo", "up", ns=BR_NS)
        sh("ip", "link", "add", "br0", "type", "bridge", ns=BR_NS)
        sh("ip", "addr", "add", f"{FABRIC}.1/24", "dev", "br0", ns=BR_NS)
        sh("ip", "link", "set", "br0", "up", ns=BR_NS)
        sh("ip", "link", "add", ROOT_IF, "type", "veth", "peer", "name", "up0", "netns", BR_NS)
        sh("ip", "addr", "add", f"{UPLINK}.1/24", "dev", ROOT_IF)
        sh("ip", "link", "set", ROOT_IF, "up")
        sh("ip", "addr", "add", f"{UPLINK}.2/24", "dev", "up0", ns=BR_NS)
        sh("ip", "link", "set", "up0", "up", ns=BR_NS)
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=BR_NS)
        sh("nft", "-f", "-", ns=BR_NS, input=(
            "table ip cnfv_bgp_nat {\n"
            "  chain post { type nat hook postrouting priority 100; "
            'oifname "up0" masquerade; }\n}\n'))
        for h in self.hosts:
            self._attach(h.ns, h.name, [f"{h.ip}/24"])
            sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=h.ns)
        self._attach(TOR_NS, "tor", [f"{TOR_IP}/24"])

    def _attach(self, ns: str, port: str, addrs: list[str]) -> None:
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "set", "lo", "up", ns=ns)
        sh("ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns,
           ns=BR_NS)
        sh("ip", "link", "set", port, "master", "br0", ns=BR_NS)
        sh("ip", "link", "set", port, "up", ns=BR_NS)
        for a in addrs:
            sh("ip", "addr", "add", a, "dev", "eth0", ns=ns)
        sh("ip", "link", "set", "eth0", "up", ns=ns)
        sh("ip", "route", "add", "default", "via", f"{FABRIC}.1", ns=ns)

    def base_env(self) -> dict[str, str]:
        env = dict(os.environ)
        for k in ("ETCD_CA_CERT_FILE", "ETCD_CERT_FILE", "ETCD_KEY_FILE", "IP", "IP6",
                  "AS", "IP_AUTODETECTION_METHOD", "HOSTNAME"):
            env.pop(k, None)
        env["ETCD_ENDPOINTS"] = self.etcd.endpoints
        env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
        return env

    def register(self, h: Host, **extra: str) -> None:
        """Run the real start-up code in the host's namespace."""
        env = self.base_env()
        env.update({"NODENAME": h.name, "IP": "autodetect",
                    "IP_AUTODETECTION_METHOD": "first-found",
                    "CALICO_NODENAME_FILE": str(self.tmp / f"{h.name}-nodename")})
        env.update(extra)
        p = subprocess.run(["ip", "netns", "exec", h.ns, PYTHON, "-m",
                            "calico_net.agent.startup"], env=env, capture_output=True,
                           text=True, timeout=60)
        if p.returncode != 0:
            raise RuntimeError(f"startup for {h.name} failed: {p.stderr}")

    def start_confd(self, h: Host, **extra: str) -> None:
        assert h.confd is None or h.confd.poll() is not None
        env = self.base_env()
        env.update({
            "NODENAME": h.name,
            "CALICO_BIRD_CONFIG": str(h.bird_cfg),
            "CALICO_BIRD_SOCKET": h.sock,
            "CALICO_CONFD_STATUS_FILE": str(h.status_file),
            "CALICO_BGP_SECRETS_DIR": str(self.tmp / "secrets"),
            "CALICO_CONFD_HEALTHPORT": "9098",
        })
        env.update(extra)
        h.confd_env = env
        log = open(h.confd_log, "a")
        # `ip netns exec` execs the command: the PID we hold is confd's own.
        h.confd = subprocess.Popen(
            ["ip", "netns", "exec", h.ns, PYTHON, "-m", "calico_net.agent.confd"],
            env=env, stdout=log, stderr=subprocess.STDOUT)

    def start_bird(self, h: Host) -> None:
        assert h.bird is None or h.bird.poll() is not None
        wait_for(h.bird_cfg.exists, 30, f"{h.name}: confd writes bird.cfg",
                 lambda: h.log_tail())
        log = open(h.bird_log, "a")
        h.bird = subprocess.Popen(
            ["ip", "netns", "exec", h.ns, "bird", "-f", "-c", str(h.bird_cfg), "-s", h.sock],
            stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: _bird_answers(h.sock), 15, f"{h.name}: BIRD control socket",
                 lambda: h.log_tail())

    def kill_bird(self, h: Host) -> None:
        """SIGKILL this host's BIRD (ours, by PID) — a crash, not a clean stop."""
        if h.bird is not None and h.bird.poll() is None:
            h.bird.kill()
            h.bird.wait()
        try:
            os.unlink(h.sock)
        except FileNotFoundError:
            pass

    # -- workloads

    def add_workload(self, h: Host, name: str | None = None) -> Workload:
        """An IPAM address from a block affine to ``h``, wired like CNI + Felix do."""
        self._workload_seq += 1
        name = name or f"w{self._workload_seq}"
        v4, _ = self.ipam.auto_assign(f"fv-{h.name}-{name}", h.name, num_v4=1)
        ip = str(v4[0])
        wns = f"{h.ns}-{name}"
        iface = iface_name(f"{h.name}-{name}")
        sh("ip", "netns", "add", wns)
        sh("ip", "link", "set", "lo", "up", ns=wns)
        sh("ip", "link", "add", iface, "type", "veth", "peer", "name", "eth0", "netns", wns,
           ns=h.ns)
        sh("sysctl", "-qw", f"net.ipv4.conf.{iface}.proxy_arp=1", ns=h.ns)
        sh("sysctl", "-qw", f"net.ipv4.neigh.{iface}.proxy_delay=0", ns=h.ns)
        sh("ip", "link", "set", iface, "up", ns=h.ns)
        sh("ip", "route", "add", f"{ip}/32", "dev", iface, "proto", "static", ns=h.ns)
        sh("ip", "addr", "add", f"{ip}/32", "dev", "eth0", ns=wns)
        sh("ip", "link", "set", "eth0", "up", ns=wns)
        sh("ip", "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link", ns=wns)
        sh("ip", "route", "add", "default", "via", "169.254.1.1", "dev", "eth0", "onlink",
           ns=wns)
        w = Workload(name, h, ip, wns, iface)
        h.workloads.append(w)
        return w

    def ping(self, src: Workload, dst_ip: str, timeout_s: int = 1) -> bool:
        p = subprocess.run(["ip", "netns", "exec", src.ns, "ping", "-n", "-q", "-c", "1",
                            "-W", str(timeout_s), dst_ip], capture_output=True, timeout=15)
        return p.returncode == 0

    def ping_matrix(self, workloads: Iterable[Workload] | None = None) -> set[tuple[str, str]]:
        """(src, dst) pairs of workloads on different hosts that do NOT answer."""
        ws = list(workloads) if workloads is not None else [
            w for h in self.hosts for w in h.workloads]
        procs = []
        for src in ws:
            for dst in ws:
                if src.host is dst.host:
                    continue
                procs.append((src, dst, subprocess.Popen(
                    ["ip", "netns", "exec", src.ns, "ping", "-n", "-q", "-c", "1", "-W", "1",
                     dst.ip], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
        failed = set()
        for src, dst, p in procs:
            if p.wait(15) != 0:
                failed.add((f"{src.host.name}/{src.name}", f"{dst.host.name}/{dst.name}"))
        return failed

    def blocks_of(self, h: Host) -> set[str]:
        return {str(a.cidr) for a in self.ipam.affinities(h.name, 4)}

    # -- the external "top of rack" router

    @staticmethod
    def router_config(router_ip: str, asn: int, peers: list[Host]) -> str:
        """An external router: peers with ``peers``, installs what they advertise."""
        sessions = "\n".join(
            f"protocol bgp host_{h.name} from hosts {{ neighbor {h.ip} as {CLUSTER_AS}; }}"
            for h in peers)
        return f"""
router id {router_ip};
log stderr all;
protocol device {{ scan time 10; }}
protocol direct {{ ipv4; interface "eth0"; }}
# Install what the hosts advertise, so the test can read it from the kernel too.
protocol kernel {{ ipv4 {{ import none; export where source = RTS_BGP; }}; merge paths on; }}
template bgp hosts {{
  local {router_ip} as {asn};
  connect delay time 1; connect retry time 3; error wait time 1, 10;
  ipv4 {{ import all; export none; }};
}}
{sessions}
"""

    def _start_router(self, ns: str, name: str, config: str) -> subprocess.Popen:
        cfg = self.tmp / f"{name}-bird.cfg"
        cfg.write_text(config)
        sock = str(self.tmp / f"{name}-bird.ctl")
        log = open(self.tmp / f"{name}-bird.log", "a")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "bird", "-f", "-c", str(cfg), "-s", sock],
            stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: _bird_answers(sock), 15, f"{name} BIRD control socket")
        return proc

    def start_tor(self) -> None:
        """The top-of-rack router (AS 65001), peering with every host."""
        self.tor = self._start_router(TOR_NS, "tor", self.router_config(TOR_IP, TOR_AS, self.hosts))

    def start_ext2(self) -> None:
        """A second external router (AS 65002) at .253 that peers with h1 only."""
        if self.ext2 is not None and self.ext2.poll() is None:
            return
        if EXT2_NS not in sh("ip", "netns", "list"):
            self._attach(EXT2_NS, "ext2", [f"{EXT2_IP}/24"])
        self.ext2 = self._start_router(EXT2_NS, "ext2",
                                       self.router_config(EXT2_IP, EXT2_AS, self.hosts[:1]))

    def tor_routes(self) -> dict[str, dict[str, Any]]:
        return kernel_routes(TOR_NS)

    # -- datastore helpers

    def apply(self, doc: dict[str, Any]) -> dict[str, Any]:
        return self.ds.apply(doc)

    def delete(self, kind: str, name: str) -> None:
        from calico_net.datastore import ResourceNotFound

        try:
            self.ds.delete(kind, name)
        except ResourceNotFound:
            pass

    def update_node(self, h: Host, change: Callable[[dict[str, Any]], None]) -> None:
        from calico_net.datastore import ResourceConflict

        for _ in range(10):
            doc = self.ds.get("Node", h.name)
            change(doc)
            try:
                self.ds.replace(doc)
                return
            except ResourceConflict:
                continue
        raise AssertionError(f"could not update Node {h.name}")

    def diag(self) -> str:
        out = []
        for h in self.hosts:
            out.append(f"=== {h.name}: status {h.status()}")
            out.append(f"sessions: {[(n, s.info) for n, s in h.sessions().items()]}")
            out.append(f"routes: {sorted(h.routes())}")
            out.append(h.log_tail(20))
        return "\n".join(out)

    # -- teardown

    def teardown(self) -> None:
        for h in self.hosts:
            stop_process(h.confd)
        for h in self.hosts:
            stop_process(h.bird)
        stop_process(self.tor)
        stop_process(self.ext2)
        if self.client is not None:
            self.client.close()
        if self.etcd is not None:
            root_conftest().stop_etcd(self.etcd)
        cleanup_leftovers()


def _bird_answers(sock: str) -> bool:
    from calico_net.agent.confd.birdctl import BirdControl, BirdCtlError

    if not os.path.exists(sock):
        return False
    try:
        with BirdControl(sock, timeout=2):
            return True
    except (BirdCtlError, OSError):
        return False
