"""A three-host cluster on two routed subnets, for the overlay (IP-in-IP / VXLAN) FV
tests and bench. Every name starts with ``cnfv-enc-<pid>-`` (the root-ns link: ``cnenc<pid>``);
:meth:`Cluster.teardown` removes all of it, :func:`cleanup_leftovers` what a killed
earlier run left.

    root ns  cnenc<pid> 198.18.160.1/24  (etcd listens here)
                 ║ veth
    …-rt         up0 198.18.160.2/24 (masquerade out of up0: the root ns needs no
                 │                    route to the host subnets)
                 ├ bra 198.18.161.1/24 (bridge, subnet A)   ├ brb 198.18.162.1/24 (bridge, subnet B)
            ╔════╩═══════════╗                           ║
    …-h1                 …-h2                       …-h3
    eth0 198.18.161.11   eth0 198.18.161.12         eth0 198.18.162.13
      ║ cali<11 hex>
    …-h1-w1         eth0 198.19.160.x/32 (IPAM address of a block affine to h1)

The router namespace knows only the connected host subnets and the uplink: no pod
routes, no default route, no BGP — pod traffic between the subnets only flows when
it is encapsulated (or a plain route happens to reach a host on the same subnet).

Each host is registered by the real start-up code (``python -m
calico_net.agent.startup``, ``IP=autodetect`` on eth0), runs the real agent
(``calico-node``: workload routes, policy, the overlay) and, when the test wants
BGP, its own confd and ``bird -f`` (bgp_util's patterns, reused by subclassing
:class:`bgp_util.Fabric`). Workloads are wired as the CNI plugin wires them; their
WorkloadEndpoints go to etcd so the agent programs their /32 routes and policy.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bgp_util as bu
from bgp_util import sh, stop_process, wait_for

# Names carry this run's PID, so two runs on one machine never tear down each other's
# namespaces; what a run whose process is gone left is removed at start. (A bench may
# set these module names to its own before building a Cluster: everything here reads
# them when it runs.)
RUN = os.getpid() % 100000
BASE = "cnfv-enc-"
PREFIX = f"{BASE}{RUN}-"
RT_NS = PREFIX + "rt"
ROOT_BASE = "cnenc"
ROOT_IF = f"{ROOT_BASE}{RUN}"
UPLINK = "198.18.160"
SUBNETS = {"a": "198.18.161", "b": "198.18.162"}
POOL_NAME = "enc-pool"
POOL_CIDR = "198.19.160.0/20"
PROFILE = "enc-allow"
PYTHON = sys.executable
VENV_BIN = bu.VENV_BIN
TOOL = Path("/tmp") / f"cnfv-enc-tool-{os.getpid()}.py"
SERVER_PORTS = (8080, 9090)

# serve: TCP listeners answering "ok <peer address>"; probe: TCP connects and pings
# in parallel (port 0 = ICMP echo); watch: one TCP connect after another for a while,
# printing "<unix time> <1|0>" per attempt (the recovery measurement).
TOOL_SOURCE = r"""
import json, socket, subprocess, sys, threading, time

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

def watch(ip, port, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.time()
        ok = tcp(ip, port, 0.3)
        print("%.3f %d" % (t, 1 if ok else 0), flush=True)
        time.sleep(0.05)

if sys.argv[1] == "serve":
    serve([int(p) for p in sys.argv[2:]])
elif sys.argv[1] == "watch":
    watch(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
else:
    probe(float(sys.argv[2]), json.loads(sys.argv[3]))
"""


def _run_gone(run: str) -> bool:
    """Is the run that named things with ``run`` (its PID) over? Never ours."""
    if not run.isdigit() or int(run) == RUN:
        return False
    try:
        os.kill(int(run), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        return b"python" not in Path(f"/proc/{run}/cmdline").read_bytes()
    except OSError:
        return True


def cleanup_leftovers() -> None:
    """Remove our namespaces (and what still runs in them) and our root-ns link, and
    those of runs whose process is gone; never another live run's."""
    for line in sh("ip", "netns", "list", check=False).splitlines():
        name = line.split()[0] if line.strip() else ""
        left = name.startswith(BASE) and _run_gone(name[len(BASE):].split("-", 1)[0])
        if name.startswith(PREFIX) or left:
            for pid in sh("ip", "netns", "pids", name, check=False).split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            sh("ip", "netns", "del", name, check=False)
    for line in sh("ip", "-o", "link", "show", check=False).splitlines():
        parts = line.split(":")
        ifname = parts[1].strip().split("@")[0] if len(parts) > 1 else ""
        if ifname == ROOT_IF or (ifname.startswith(ROOT_BASE) and _run_gone(ifname[len(ROOT_BASE):])):
            sh("ip", "link", "del", ifname, check=False)


def kernel_has_link_kind(kind: str) -> bool:
    """Can this kernel make a ``kind`` device (``ipip``, ``vxlan``)? Tried in a scratch
    namespace, so nothing of the answer stays behind."""
    ns = PREFIX + "kindprobe"
    sh("ip", "netns", "add", ns)
    try:
        args = {"ipip": ["type", "ipip", "remote", "any"],
                "vxlan": ["type", "vxlan", "id", "1", "dstport", "4789"]}[kind]
        p = subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "add", "probe0", *args],
                           capture_output=True, text=True, timeout=30)
        return p.returncode == 0
    finally:
        sh("ip", "netns", "del", ns, check=False)


@dataclass
class Pod:
    """A workload: its namespace, IPAM address, host-side interface, server."""

    name: str          # e.g. "h1-w1"; also the pod label value
    host: EncHost
    ip: str
    ns: str
    iface: str
    handle: str
    server: subprocess.Popen | None = None

    @property
    def wep_name(self) -> str:
        return f"{self.host.name}-k8s-{self.name}-eth0"


@dataclass
class EncHost(bu.Host):
    """A host namespace on subnet "a" or "b", with its own agent."""

    subnet: str = "a"
    agent: subprocess.Popen | None = None
    pods: list[Pod] = field(default_factory=list)

    @property
    def ns(self) -> str:
        return PREFIX + self.name

    @property
    def ip(self) -> str:
        return f"{SUBNETS[self.subnet]}.{10 + self.index}"

    @property
    def gateway(self) -> str:
        return f"{SUBNETS[self.subnet]}.1"

    @property
    def agent_log(self) -> Path:
        return self.tmp / f"{self.name}-agent.log"

    @property
    def mtu_file(self) -> Path:
        return self.tmp / f"{self.name}-mtu"

    def agent_tail(self, n: int = 40) -> str:
        try:
            lines = self.agent_log.read_text(errors="replace").splitlines()[-n:]
        except OSError:
            lines = []
        return f"--- {self.name} agent log ---\n" + "\n".join(lines)

    def routes(self, proto: str = "bird") -> dict[str, dict[str, Any]]:
        return bu.kernel_routes(self.ns, proto)

    def route_table(self) -> str:
        return sh("ip", "route", "show", "table", "main", ns=self.ns, check=False)

    def link(self, name: str) -> dict[str, Any] | None:
        """`ip -d -j link show <name>` (None if there is no such device)."""
        out = sh("ip", "-d", "-j", "link", "show", name, ns=self.ns, check=False)
        links = json.loads(out or "[]")
        return links[0] if links else None

    def addrs(self, name: str) -> list[str]:
        """The device's IPv4 addresses (an IPv6 link-local one is the kernel's business)."""
        out = sh("ip", "-4", "-j", "addr", "show", "dev", name, ns=self.ns, check=False)
        return [a["local"] for link in json.loads(out or "[]") for a in link.get("addr_info", [])]

    def neighbours(self, dev: str) -> list[dict[str, Any]]:
        out = sh("ip", "-j", "neigh", "show", "dev", dev, ns=self.ns, check=False)
        return json.loads(out or "[]")

    def fdb(self, dev: str) -> list[dict[str, Any]]:
        out = sh("bridge", "-j", "fdb", "show", "dev", dev, ns=self.ns, check=False)
        return json.loads(out or "[]")

    def agent_ready(self) -> bool:
        code, _ = self.http("/readiness", port=9099)
        return code == 200

    def bird_running(self) -> bool:
        return self.bird is not None and self.bird.poll() is None


class Cluster(bu.Fabric):
    """Namespaces, etcd, one agent per host, and confd + BIRD when asked for."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp, 0)
        self.hosts: list[EncHost] = [EncHost("h1", 1, tmp, subnet="a"),
                                     EncHost("h2", 2, tmp, subnet="a"),
                                     EncHost("h3", 3, tmp, subnet="b")]
        self.backend = "bird"

    def host(self, name: str) -> EncHost:
        return next(h for h in self.hosts if h.name == name)

    # -- build

    def setup(self, *, bgp: bool = True) -> Cluster:  # type: ignore[override]
        cleanup_leftovers()
        TOOL.write_text(TOOL_SOURCE)
        self._network()
        rc = bu.root_conftest()
        # etcd's data on tmpfs when there is one (its fsyncs dominate on a busy disk).
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
        self.ds.create(pool_doc("Never", "Never"))
        self.ds.create({
            "apiVersion": "projectcalico.org/v3", "kind": "BGPConfiguration",
            "metadata": {"name": "default"},
            "spec": {"nodeToNodeMeshEnabled": True, "asNumber": bu.CLUSTER_AS},
        })
        # Every pod gets this profile: without policy or profile Calico drops.
        self.ds.create({
            "apiVersion": "projectcalico.org/v3", "kind": "Profile",
            "metadata": {"name": PROFILE},
            "spec": {"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}]},
        })
        self.backend = "bird" if bgp else "vxlan"
        for h in self.hosts:
            self.register(h)
        for h in self.hosts:
            self.start_agent(h)
        if bgp:
            self.start_bgp()
        for h in self.hosts:
            wait_for(h.agent_ready, 60, f"{h.name}: agent ready", self.diag)
        return self

    @functools.cached_property
    def has_ipip(self) -> bool:
        """The kernel can make IP-in-IP devices (CONFIG_NET_IPIP)."""
        return kernel_has_link_kind("ipip")

    def _network(self) -> None:
        sh("ip", "netns", "add", RT_NS)
        sh("ip", "link", "set", "lo", "up", ns=RT_NS)
        sh("ip", "link", "add", ROOT_IF, "type", "veth", "peer", "name", "up0", "netns", RT_NS)
        sh("ip", "addr", "add", f"{UPLINK}.1/24", "dev", ROOT_IF)
        sh("ip", "link", "set", ROOT_IF, "up")
        sh("ip", "addr", "add", f"{UPLINK}.2/24", "dev", "up0", ns=RT_NS)
        sh("ip", "link", "set", "up0", "up", ns=RT_NS)
        for sub, net in SUBNETS.items():
            br = f"br{sub}"
            sh("ip", "link", "add", br, "type", "bridge", ns=RT_NS)
            sh("ip", "addr", "add", f"{net}.1/24", "dev", br, ns=RT_NS)
            sh("ip", "link", "set", br, "up", ns=RT_NS)
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=RT_NS)
        sh("nft", "-f", "-", ns=RT_NS, input=(
            "table ip cnfv_enc_nat {\n"
            "  chain post { type nat hook postrouting priority 100; "
            'oifname "up0" masquerade; }\n}\n'))
        for h in self.hosts:
            sh("ip", "netns", "add", h.ns)
            sh("ip", "link", "set", "lo", "up", ns=h.ns)
            port = f"p-{h.name}"
            sh("ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", h.ns,
               ns=RT_NS)
            sh("ip", "link", "set", port, "master", f"br{h.subnet}", ns=RT_NS)
            sh("ip", "link", "set", port, "up", ns=RT_NS)
            sh("ip", "addr", "add", f"{h.ip}/24", "dev", "eth0", ns=h.ns)
            sh("ip", "link", "set", "eth0", "up", ns=h.ns)
            # A default route also lets proxy ARP answer for 169.254.1.1 (it answers
            # for addresses routed out of another interface), as on a real host.
            sh("ip", "route", "add", "default", "via", h.gateway, ns=h.ns)
            sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=h.ns)
            if not self.has_ipip:
                # No ipip driver in this kernel: a tun device named tunl0 stands in for
                # the fallback device, so the agent's IP-in-IP programming (address,
                # routes via tunl0 onlink) is still exercised; it encapsulates nothing.
                sh("ip", "tuntap", "add", "dev", "tunl0", "mode", "tun", ns=h.ns)

    def register(self, h: bu.Host, **extra: str) -> None:
        """The real start-up code in the host's namespace (tunnel addresses too)."""
        env = self.base_env()
        env.update({"NODENAME": h.name, "IP": "autodetect",
                    "IP_AUTODETECTION_METHOD": "interface=eth0",
                    "CALICO_NETWORKING_BACKEND": self.backend,
                    "CALICO_NODENAME_FILE": str(self.tmp / f"{h.name}-nodename")})
        env.update(extra)
        p = subprocess.run(["ip", "netns", "exec", h.ns, PYTHON, "-m",
                            "calico_net.agent.startup"], env=env, capture_output=True,
                           text=True, timeout=60)
        if p.returncode != 0:
            raise RuntimeError(f"startup for {h.name} failed: {p.stderr}")

    def agent_env(self, h: EncHost) -> dict[str, str]:
        env = self.base_env()
        env.update({
            "NODENAME": h.name,
            "FELIX_HEALTHHOST": "127.0.0.1", "FELIX_HEALTHPORT": "9099",
            "FELIX_IPTABLESREFRESHINTERVAL": "5", "FELIX_ROUTEREFRESHINTERVAL": "5",
            "FELIX_LOGSEVERITYSCREEN": "Info",
            "FELIX_CONFIGFILE": str(self.tmp / f"{h.name}-felix.cfg"),
            # never the real /var/lib/calico/mtu
            "FELIX_MTUFILEPATH": str(h.mtu_file),
        })
        return env

    def start_agent(self, h: EncHost) -> None:
        assert h.agent is None or h.agent.poll() is not None
        log = open(h.agent_log, "a")
        log.write(f"==== agent start {time.strftime('%H:%M:%S')}\n")
        log.flush()
        # `ip netns exec` execs the agent: the PID we hold is the agent's own.
        h.agent = subprocess.Popen(["ip", "netns", "exec", h.ns, str(VENV_BIN / "calico-node")],
                                   env=self.agent_env(h), stdout=log, stderr=subprocess.STDOUT)

    # -- BGP on / off

    def start_bgp(self) -> None:
        """confd + BIRD on every host, and wait for the full mesh."""
        for h in self.hosts:
            if h.confd is None or h.confd.poll() is not None:
                h.bird_cfg.unlink(missing_ok=True)
                self.start_confd(h)
        for h in self.hosts:
            if not h.bird_running():
                self.start_bird(h)
        wait_for(self.mesh_up, 60, "every BGP mesh session Established", self.diag)

    def mesh_up(self) -> bool:
        for h in self.hosts:
            want = {"Mesh_" + o.ip.replace(".", "_") for o in self.hosts if o is not h}
            if not want <= h.established():
                return False
        return True

    def stop_bgp(self) -> None:
        """Stop BIRD and confd everywhere, and remove BIRD's routes: Calico's kernel
        protocol is `persist` (BIRD leaves its routes when it stops), and the VXLAN
        backend's hosts must look like hosts that never ran BIRD."""
        for h in self.hosts:
            stop_process(h.bird)
            stop_process(h.confd)
            sh("ip", "route", "flush", "proto", "bird", ns=h.ns, check=False)
        wait_for(lambda: not any(h.routes("bird") for h in self.hosts), 30,
                 "no BIRD route left after BIRD stopped", self.diag)

    def set_backend(self, backend: str) -> None:
        """Calico's CALICO_NETWORKING_BACKEND: "bird" runs confd + BIRD; "vxlan" runs
        neither. Every host's start-up runs again with it, as a restart of the
        calico/node container would (the agent itself keeps running)."""
        if backend == self.backend:
            return
        if backend == "bird":
            self.backend = backend
            for h in self.hosts:
                self.register(h)
            self.start_bgp()
        else:
            self.stop_bgp()
            self.backend = backend
            for h in self.hosts:
                self.register(h)

    # -- the pool

    def set_pool(self, ipip: str = "Never", vxlan: str = "Never") -> None:
        """Switch the one pool's modes in place (no restart of anything)."""
        from calico_net.datastore import ResourceConflict, ResourceNotFound

        for _ in range(10):
            try:
                doc = self.ds.get("IPPool", POOL_NAME)
            except ResourceNotFound:
                self.ds.create(pool_doc(ipip, vxlan))
                return
            doc["spec"]["ipipMode"] = ipip
            doc["spec"]["vxlanMode"] = vxlan
            try:
                self.ds.replace(doc)
                return
            except ResourceConflict:
                continue
        raise AssertionError("could not update the pool")

    def node(self, h: bu.Host) -> dict[str, Any]:
        return self.ds.get("Node", h.name)

    # -- pods

    def add_pod(self, h: EncHost, name: str | None = None,
                labels: dict[str, str] | None = None, pools: list[str] | None = None) -> Pod:
        """An IPAM address from a block affine to ``h`` (or borrowed, when ``pools``
        has none free and strict affinity is off), wired like the CNI plugin, its
        WorkloadEndpoint in etcd (the agent then routes it and applies policy)."""
        self._workload_seq += 1
        name = name or f"{h.name}-w{self._workload_seq}"
        handle = f"enc-{name}"
        v4, _ = self.ipam.auto_assign(handle, h.name, num_v4=1, pools_v4=pools)
        ip = str(v4[0])
        ns = f"{h.ns}-{name.split('-', 1)[-1]}"
        iface = bu.iface_name(ns)
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "set", "lo", "up", ns=ns)
        sh("ip", "link", "add", iface, "type", "veth", "peer", "name", "eth0", "netns", ns,
           ns=h.ns)
        sh("ip", "link", "set", iface, "up", ns=h.ns)
        sh("ip", "addr", "add", f"{ip}/32", "dev", "eth0", ns=ns)
        sh("ip", "link", "set", "eth0", "up", ns=ns)
        sh("ip", "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link", ns=ns)
        sh("ip", "route", "add", "default", "via", "169.254.1.1", "dev", "eth0", "onlink", ns=ns)
        pod = Pod(name, h, ip, ns, iface, handle)
        pod.server = subprocess.Popen(
            ["ip", "netns", "exec", ns, PYTHON, str(TOOL), "serve", *map(str, SERVER_PORTS)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert pod.server.stdout is not None
        if "ready" not in pod.server.stdout.readline():
            raise RuntimeError(f"server in {ns} did not start")
        self.ds.apply(wep_doc(pod, labels))
        h.pods.append(pod)
        return pod

    def remove_pod(self, pod: Pod) -> None:
        """What the CNI plugin does on DEL: endpoint, address, interface gone."""
        from calico_net.datastore import ResourceNotFound

        with contextlib.suppress(ResourceNotFound):
            self.ds.delete("WorkloadEndpoint", pod.wep_name, "default")
        self.ipam.release_by_handle(pod.handle)
        stop_process(pod.server, grace=2)
        sh("ip", "netns", "del", pod.ns, check=False)
        pod.host.pods.remove(pod)

    def pods(self) -> list[Pod]:
        return [p for h in self.hosts for p in h.pods]

    def wait_pod_routes(self, timeout: float = 60) -> None:
        """Every pod's /32 route (the agent's, protocol 80) on its host."""
        wait_for(lambda: all(p.ip in p.host.routes("80") for p in self.pods()), timeout,
                 "the agent's /32 route for every pod", self.diag)

    # -- traffic

    def probe(self, src: Pod, targets: list[tuple[str, str, int]],
              timeout: float = 1.0) -> dict[str, Any]:
        """(label, ip, port) from ``src``'s namespace all at once; port 0 = ICMP echo.
        TCP results are the source address the server saw, or False."""
        out = sh(PYTHON, str(TOOL), "probe", str(timeout), json.dumps(targets), ns=src.ns,
                 timeout=60)
        return json.loads(out)

    def matrix(self, pods: list[Pod] | None = None, port: int = 8080,
               timeout: float = 1.0) -> dict[tuple[str, str, str], Any]:
        """{(src, dst, "tcp"|"icmp"): result} for every ordered pair of pods, all
        sources probing at once."""
        ps = pods if pods is not None else self.pods()
        procs = []
        for src in ps:
            targets = [[f"{d.name}|{proto}", d.ip, pt] for d in ps if d is not src
                       for proto, pt in (("tcp", port), ("icmp", 0))]
            procs.append((src, subprocess.Popen(
                ["ip", "netns", "exec", src.ns, PYTHON, str(TOOL), "probe", str(timeout),
                 json.dumps(targets)], stdout=subprocess.PIPE, text=True)))
        out: dict[tuple[str, str, str], Any] = {}
        for src, p in procs:
            text, _ = p.communicate(timeout=60)
            for label, res in json.loads(text).items():
                dst, proto = label.split("|")
                out[(src.name, dst, proto)] = res
        return out

    def probe_round(self, rounds: list[tuple[str, list[tuple[str, str, int]]]],
                    timeout: float = 1.0) -> list[dict[str, Any]]:
        """One probe per (netns, [(label, ip, port)]), all at once; port 0 = ICMP echo.
        A host namespace may be a source too (host -> its own pods is always allowed,
        the control for a denied probe from elsewhere)."""
        procs = [subprocess.Popen(["ip", "netns", "exec", ns, PYTHON, str(TOOL), "probe", str(timeout),
                                   json.dumps([list(t) for t in targets])], stdout=subprocess.PIPE, text=True)
                 for ns, targets in rounds]
        out = []
        for p in procs:
            text, _ = p.communicate(timeout=60)
            out.append(json.loads(text))
        return out

    def failing(self, pods: list[Pod] | None = None, port: int = 8080) -> list[tuple[str, str, str]]:
        return sorted(k for k, v in self.matrix(pods, port).items() if not v)

    def wait_all_connected(self, timeout: float = 30, pods: list[Pod] | None = None) -> float:
        """Poll the full matrix (TCP and ICMP) until every pair connects; seconds taken."""
        t0 = time.monotonic()
        last: list[Any] = []

        def ok() -> bool:
            last[:] = self.failing(pods)
            return not last
        wait_for(ok, timeout, "every pod reaching every pod (TCP and ICMP)",
                 lambda: f"failing: {last}\n{self.diag()}", interval=0.2)
        return time.monotonic() - t0

    def watch(self, src: Pod, dst_ip: str, seconds: float, port: int = 8080) -> subprocess.Popen:
        """Start one TCP connect after another from ``src`` (see TOOL_SOURCE's watch)."""
        return subprocess.Popen(
            ["ip", "netns", "exec", src.ns, PYTHON, "-u", str(TOOL), "watch", dst_ip, str(port),
             str(seconds)], stdout=subprocess.PIPE, text=True)

    @contextlib.contextmanager
    def capture(self, h: EncHost, iface: str = "eth0") -> Iterator[Path]:
        """tcpdump on ``h``'s ``iface`` into a pcap for the duration of the block."""
        pcap = self.tmp / f"{h.name}-{iface}-{time.monotonic_ns()}.pcap"
        proc = subprocess.Popen(
            # -Z root: tcpdump otherwise drops to its own user before opening the file,
            # and pytest's tmp dir is root's alone. --immediate-mode: with -w, packets
            # otherwise wait in the kernel's ring for a buffer timeout and a stop
            # before it loses them.
            ["ip", "netns", "exec", h.ns, "tcpdump", "-Z", "root", "--immediate-mode", "-i", iface, "-n", "-U",
             "-s", "128", "-w", str(pcap)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stderr is not None
            line = proc.stderr.readline()   # "tcpdump: listening on eth0, ..."
            if "listening" not in line:
                raise RuntimeError(f"tcpdump did not start: {line}")
            yield pcap
        finally:
            # the probes are answered, so their packets crossed the interface; tcpdump
            # writes each at once (-U, --immediate-mode) and flushes on SIGINT
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if not pcap.exists():
                raise RuntimeError(f"tcpdump wrote no {pcap}: {proc.stderr.read() if proc.stderr else ''}")

    @staticmethod
    def pcap_lines(pcap: Path, bpf: str) -> list[str]:
        p = subprocess.run(["tcpdump", "-r", str(pcap), "-n", bpf], capture_output=True,
                           text=True, timeout=30)
        if p.returncode != 0:
            raise RuntimeError(f"tcpdump -r {pcap} '{bpf}': {p.stderr.strip()}")
        return [line for line in p.stdout.splitlines() if line.strip()]

    # -- helpers for the checks

    def remote_blocks(self, h: EncHost) -> dict[str, EncHost]:
        """{block CIDR: owner} of the blocks affine to the other hosts."""
        return {b: o for o in self.hosts if o is not h for b in self.blocks_of(o)}

    def tables(self) -> str:
        """Every host's main route table, tunnel devices and Node tunnel fields."""
        out = []
        for h in self.hosts:
            out.append(f"=== {h.name} ({h.ip}) ip route:\n{h.route_table().rstrip()}")
            for dev in ("tunl0", "vxlan.calico"):
                if h.link(dev) is not None:
                    out.append(f"  {dev}: addrs {h.addrs(dev)}")
        return "\n".join(out)

    def diag(self) -> str:
        out = [self.tables()]
        for h in self.hosts:
            try:
                spec = self.node(h).get("spec", {})
            except Exception as e:  # noqa: BLE001 - diagnostics only
                spec = {"error": str(e)}
            out.append(f"=== {h.name} Node spec: {json.dumps(spec)}")
            out.append(f"sessions: {[(n, s.info) for n, s in h.sessions().items()]}")
            out.append(h.agent_tail(25))
            if h.confd is not None:
                out.append(h.log_tail(10))
        return "\n".join(out)

    # -- teardown

    def teardown(self) -> None:
        for p in self.pods():
            stop_process(p.server, grace=1)
        for h in self.hosts:
            stop_process(h.agent)
            stop_process(h.bird)
            stop_process(h.confd)
        if self.client is not None:
            self.client.close()
        if self.etcd is not None:
            bu.root_conftest().stop_etcd(self.etcd)
        cleanup_leftovers()
        TOOL.unlink(missing_ok=True)


def pool_doc(ipip: str, vxlan: str, name: str = POOL_NAME, cidr: str = POOL_CIDR) -> dict[str, Any]:
    return {"apiVersion": "projectcalico.org/v3", "kind": "IPPool",
            "metadata": {"name": name},
            "spec": {"cidr": cidr, "blockSize": 26, "natOutgoing": False,
                     "ipipMode": ipip, "vxlanMode": vxlan}}


def wep_doc(pod: Pod, labels: dict[str, str] | None = None) -> dict[str, Any]:
    lab = {"projectcalico.org/namespace": "default", "projectcalico.org/orchestrator": "k8s",
           "pod": pod.name, "host": pod.host.name, **(labels or {})}
    return {
        "apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
        "metadata": {"name": pod.wep_name, "namespace": "default", "labels": lab},
        "spec": {"node": pod.host.name, "orchestrator": "k8s", "workload": pod.name,
                 "endpoint": "eth0", "interfaceName": pod.iface,
                 "ipNetworks": [f"{pod.ip}/32"], "profiles": [PROFILE]},
    }


def in_pool(cidr: str, pool: str = POOL_CIDR) -> bool:
    return ipaddress.ip_network(cidr, strict=False).subnet_of(ipaddress.ip_network(pool))
