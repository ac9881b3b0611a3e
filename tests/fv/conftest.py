"""FV fixtures for the whole agent: a host netns, workload netns, etcd, the real agent.

Topology (one per test module, torn down even when tests fail):

    root ns ── cnag<pid> 198.18.X.1/24 ══ veth ══ eth0 198.18.X.2/24 ── cnfv-ag-<pid>-host
              etcd listens on 198.18.X.1                                    │ calico-node
                                                   cali<11hex> ══ veth ══ eth0 198.19.1.N/32
                                                                            cnfv-ag-<pid>-wN

Workloads are wired as the CNI plugin wires them: host side `cali` + 11 hex chars
(no address), container side `eth0` with a /32 and `default via 169.254.1.1 onlink`.
X is 200 + pid % 50: clear of the lab's 198.18.0.0/24 podman network, and two runs
on one machine (names carry the pytest PID) do not collide.
Each workload runs the small `FVTOOL_SOURCE` script's `serve` (TCP listeners on
8080 and 9090); connectivity is checked by its `probe` run in the source namespace
(TCP connect and ICMP echo to every target in parallel, `PROBE_TIMEOUT` each: long
enough that a starved machine cannot make an allowed connection look denied).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import requests

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
VENV_BIN = Path(sys.executable).parent
# Names carry this run's PID, so two runs on one machine (a developer's and a CI
# check, say) do not tear down each other's namespaces; leftovers of runs whose PID
# is gone are removed at start.
RUN = os.getpid() % 100000
BASE = "cnfv-ag-"
PREFIX = f"{BASE}{RUN}-"
ROOT_IF = f"cnag{RUN}"
NET = f"198.18.{200 + RUN % 50}"
HOST_NS = PREFIX + "host"
NODE = "fv-node"

FVTOOL_SOURCE = r"""
import json, os, socket, struct, sys, threading, time

def serve(ports):
    def loop(port):
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port)); s.listen(128)
        while True:
            c, _ = s.accept()
            try:
                c.sendall(b"ok\n")
            finally:
                c.close()
    for p in ports:
        threading.Thread(target=loop, args=(p,), daemon=True).start()
    while True:
        time.sleep(3600)

def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b)); s = (s >> 16) + (s & 0xFFFF); s += s >> 16
    return ~s & 0xFFFF

def icmp(ip, timeout):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.settimeout(timeout)
    ident = (os.getpid() ^ threading.get_ident()) & 0xFFFF
    hdr = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + b"calico-fv"
    pkt = struct.pack("!BBHHH", 8, 0, csum(hdr), ident, 1) + b"calico-fv"
    s.sendto(pkt, (ip, 0))
    end = time.monotonic() + timeout
    try:
        while time.monotonic() < end:
            s.settimeout(max(0.01, end - time.monotonic()))
            data, addr = s.recvfrom(2048)
            ihl = (data[0] & 15) * 4
            t, _, _, rid, _ = struct.unpack("!BBHHH", data[ihl:ihl + 8])
            if addr[0] == ip and t == 0 and rid == ident:
                return True
    except OSError:
        return False
    return False

def tcp(ip, port, timeout):
    try:
        with socket.create_connection((ip, port), timeout=timeout) as c:
            c.settimeout(timeout)
            return c.recv(3) == b"ok\n"
    except OSError:
        return False

def probe(timeout, targets):
    out = {}
    def one(lbl, ip, port):
        out[lbl] = icmp(ip, timeout) if port == 0 else tcp(ip, port, timeout)
    ts = [threading.Thread(target=one, args=tuple(t)) for t in targets]
    for t in ts: t.start()
    for t in ts: t.join()
    print(json.dumps(out))

if sys.argv[1] == "serve":
    serve([int(p) for p in sys.argv[2:]])
else:
    probe(float(sys.argv[2]), json.loads(sys.argv[3]))
"""
FVTOOL = Path("/tmp") / f"calico-fvtool-{os.getpid()}.py"


def _write_fvtool() -> None:
    FVTOOL.write_text(FVTOOL_SOURCE)


def _root_conftest():
    """tests/conftest.py as a module (for start_etcd/stop_etcd), loaded by path:
    both conftests are named `conftest`, so a plain import could find either."""
    name = "_calico_root_conftest"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "tests" / "conftest.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def sh(*cmd: str, check: bool = True, ns: str | None = None, timeout: float = 30, **kw: Any) -> str:
    argv = (["ip", "netns", "exec", ns] if ns else []) + list(cmd)
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr.strip()}")
    return p.stdout


def _run_alive(run: str) -> bool:
    """Is the FV run that named things with `run` (its PID) still going?"""
    if not run.isdigit():
        return True    # not named by this scheme: not ours to judge
    if int(run) == RUN:
        return False
    try:
        os.kill(int(run), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{run}/cmdline").read_bytes() if Path(f"/proc/{run}/cmdline").exists() else b""
    return b"pytest" in cmdline


def cleanup_leftovers(only_ours: bool = False) -> None:
    """Remove namespaces and links this run made, and those a killed earlier run
    left (`cnfv-ag-<pid>-*` whose pid is gone); never another live run's."""
    out = sh("ip", "netns", "list", check=False)
    for line in out.splitlines():
        name = line.split()[0] if line.strip() else ""
        if not name.startswith(BASE):
            continue
        run = name[len(BASE):].split("-", 1)[0]
        if name.startswith(PREFIX) or (not only_ours and not _run_alive(run)):
            for pid in sh("ip", "netns", "pids", name, check=False).split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            sh("ip", "netns", "del", name, check=False)
    links = sh("ip", "-o", "link", "show", check=False)
    for line in links.splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            ifname = parts[1].strip().split("@")[0]
            if ifname.startswith("cnag") and (ifname == ROOT_IF or (not only_ours and not _run_alive(ifname[4:]))):
                sh("ip", "link", "del", ifname, check=False)


def iface_name(workload: str) -> str:
    return "cali" + hashlib.sha1(workload.encode()).hexdigest()[:11]


@dataclass
class Workload:
    name: str          # short name, e.g. "w1"
    ns: str
    ip: str
    iface: str         # host-side cali interface
    server: subprocess.Popen | None = None

    @property
    def wep_name(self) -> str:
        return f"{NODE}-k8s-{self.name}-eth0"


def add_workload(name: str, ip: str, *, create_iface: bool = True) -> Workload:
    w = Workload(name, PREFIX + name, ip, iface_name(name))
    sh("ip", "netns", "add", w.ns)
    sh("ip", "link", "set", "lo", "up", ns=w.ns)
    if create_iface:
        wire_workload(w)
    return w


def wire_workload(w: Workload) -> None:
    """What the CNI plugin does on ADD."""
    sh("ip", "link", "add", w.iface, "type", "veth", "peer", "name", "eth0", "netns", w.ns, ns=HOST_NS)
    sh("ip", "link", "set", w.iface, "up", ns=HOST_NS)
    sh("ip", "addr", "add", f"{w.ip}/32", "dev", "eth0", ns=w.ns)
    sh("ip", "link", "set", "eth0", "up", ns=w.ns)
    sh("ip", "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link", ns=w.ns)
    sh("ip", "route", "add", "default", "via", "169.254.1.1", "dev", "eth0", "onlink", ns=w.ns)
    w.server = subprocess.Popen(["ip", "netns", "exec", w.ns, sys.executable, str(FVTOOL), "serve", "8080", "9090"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wep(w: Workload, labels: dict[str, str] | None = None, profiles: list[str] | None = None,
        ns: str = "default", node: str = NODE) -> dict[str, Any]:
    lab = {"projectcalico.org/namespace": ns, "projectcalico.org/orchestrator": "k8s", **(labels or {})}
    return {
        "apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
        "metadata": {"name": w.wep_name, "namespace": ns, "labels": lab},
        "spec": {"node": node, "orchestrator": "k8s", "workload": w.name, "endpoint": "eth0",
                 "interfaceName": w.iface, "ipNetworks": [f"{w.ip}/32"], "profiles": profiles or []},
    }


@dataclass
class Agent:
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen | None = None
    health_url: str = f"http://{NET}.2:9099"
    metrics_url: str = f"http://{NET}.2:9091/metrics"

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        log = open(self.log_path, "a")
        log.write(f"==== agent start {time.strftime('%H:%M:%S')}\n")
        log.flush()
        # `ip netns exec` execs the agent: the PID we hold is the agent's own.
        self.proc = subprocess.Popen(["ip", "netns", "exec", HOST_NS, str(VENV_BIN / "calico-node")],
                                     env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def readiness(self) -> tuple[int, str]:
        try:
            r = requests.get(self.health_url + "/readiness", timeout=2)
            return r.status_code, r.text
        except requests.RequestException as e:
            return 0, str(e)

    def metric(self, name: str) -> float:
        text = requests.get(self.metrics_url, timeout=2).text
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise KeyError(name)

    def wait_ready(self, timeout: float = 30) -> None:
        wait_for(lambda: self.readiness()[0] == 200, timeout, f"agent ready ({self.readiness()})", self)

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-n:])
        except OSError:
            return ""

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks   # utime + stime


def wait_for(cond: Callable[[], Any], timeout: float, what: str, agent: Agent | None = None,
             interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            extra = f"\n--- agent log ---\n{agent.log_tail()}" if agent else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {what}{extra}")
        time.sleep(interval)


# Per-target probe timeout, seconds. A deny is only as good as this: at 0.5 s a
# loaded 2-core machine could fail an allowed connect and pass a "denied" check.
# Targets are probed in parallel, so a round takes about this long, not n times it.
PROBE_TIMEOUT = 2.0


def probe(src: Workload, targets: list[tuple[str, str, int]], timeout: float = PROBE_TIMEOUT) -> dict[str, bool]:
    """targets: (label, ip, port); port 0 = ICMP echo. Returns {label: reachable}."""
    arg = json.dumps([[lbl, ip, port] for lbl, ip, port in targets])
    out = sh(sys.executable, str(FVTOOL), "probe", str(timeout), arg, ns=src.ns)
    return json.loads(out)


def matrix(workloads: list[Workload], port: int = 8080) -> set[tuple[str, str, str]]:
    """Every (src, dst, 'tcp'|'icmp') that connects, probing all pairs in parallel."""
    procs = []
    for src in workloads:
        targets = []
        for dst in workloads:
            if dst is src:
                continue
            targets.append((f"{dst.name}/tcp", dst.ip, port))
            targets.append((f"{dst.name}/icmp", dst.ip, 0))
        arg = json.dumps([[a, b, c] for a, b, c in targets])
        procs.append((src, subprocess.Popen(["ip", "netns", "exec", src.ns, sys.executable, str(FVTOOL), "probe",
                                             str(PROBE_TIMEOUT), arg], stdout=subprocess.PIPE, text=True)))
    ok = set()
    for src, p in procs:
        out, _ = p.communicate(timeout=20)
        for label, reachable in json.loads(out).items():
            if reachable:
                dst, proto = label.split("/")
                ok.add((src.name, dst, proto))
    return ok


def our_routes() -> dict[str, str]:
    """{dst: dev} of the agent's routes (protocol 80) in the host namespace."""
    out = sh("ip", "-j", "route", "show", "proto", "80", ns=HOST_NS)
    return {r["dst"]: r.get("dev", "") for r in json.loads(out or "[]")}


def nft_ruleset() -> str:
    return sh("nft", "-a", "list", "table", "inet", "calico", ns=HOST_NS, check=False)


@dataclass
class Env:
    etcd: Any
    ds: Any
    agent: Agent
    workloads: list[Workload] = field(default_factory=list)
    tmp: Path = Path("/tmp")


@pytest.fixture(scope="module")
def fv(tmp_path_factory) -> Iterator[Env]:
    rc = _root_conftest()
    cleanup_leftovers()
    _write_fvtool()
    tmp = tmp_path_factory.mktemp("agentfv")
    etcd = None
    workloads: list[Workload] = []
    agent = None
    try:
        sh("ip", "netns", "add", HOST_NS)
        sh("ip", "link", "set", "lo", "up", ns=HOST_NS)
        sh("ip", "link", "add", ROOT_IF, "type", "veth", "peer", "name", "eth0", "netns", HOST_NS)
        sh("ip", "addr", "add", f"{NET}.1/24", "dev", ROOT_IF)
        sh("ip", "link", "set", ROOT_IF, "up")
        sh("ip", "addr", "add", f"{NET}.2/24", "dev", "eth0", ns=HOST_NS)
        sh("ip", "link", "set", "eth0", "up", ns=HOST_NS)
        # A default route makes proxy ARP answer for 169.254.1.1 (it answers for
        # addresses routed out of another interface), as on a real host.
        sh("ip", "route", "add", "default", "via", f"{NET}.1", ns=HOST_NS)
        etcd = rc.start_etcd(listen_host=f"{NET}.1")
        from calico_net.datastore import Datastore
        from calico_net.datastore.etcd import EtcdClient, EtcdConfig

        ds = Datastore(EtcdClient(EtcdConfig(endpoints=[etcd.endpoints])))
        for i in range(1, 5):
            workloads.append(add_workload(f"w{i}", f"198.19.1.{i}"))
        env = dict(os.environ)
        env.update({
            "NODENAME": NODE, "ETCD_ENDPOINTS": etcd.endpoints,
            "FELIX_HEALTHHOST": "0.0.0.0", "FELIX_HEALTHPORT": "9099",
            "FELIX_PROMETHEUSMETRICSENABLED": "true", "FELIX_PROMETHEUSMETRICSPORT": "9091",
            "FELIX_IPTABLESREFRESHINTERVAL": "2", "FELIX_ROUTEREFRESHINTERVAL": "2",
            "FELIX_LOGSEVERITYSCREEN": "Info", "FELIX_CONFIGFILE": str(tmp / "felix.cfg"),
            # the agent writes the workload MTU for the CNI plugin; never the host's file
            "FELIX_MTUFILEPATH": str(tmp / "mtu"),
            "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
        })
        for k in ("ETCD_CA_CERT_FILE", "ETCD_CERT_FILE", "ETCD_KEY_FILE"):
            env.pop(k, None)
        agent = Agent(env, tmp / "agent.log")
        agent.start()
        agent.wait_ready()
        yield Env(etcd, ds, agent, workloads, tmp)
    finally:
        if agent is not None:
            agent.stop()
            log = agent.log_tail(200)
            if log:
                print("---- agent log (tail) ----\n" + log)
        for w in workloads:
            if w.server is not None and w.server.poll() is None:
                w.server.kill()
                w.server.wait()
        if etcd is not None:
            rc.stop_etcd(etcd)
        cleanup_leftovers(only_ours=True)
        FVTOOL.unlink(missing_ok=True)


@pytest.fixture
def clean(fv: Env) -> Iterator[Env]:
    """Each test starts with no resources in etcd and the agent running and ready."""
    fv.ds.client.delete_prefix("/calico/")
    if fv.agent.proc is None or fv.agent.proc.poll() is not None:
        fv.agent.start()
    fv.agent.wait_ready()
    yield fv
    fv.ds.client.delete_prefix("/calico/")


@pytest.fixture(scope="session")
def fvlib():
    """This module, for test modules: `from conftest import ...` could pick up another
    directory's conftest (they share the module name), a fixture cannot."""
    return sys.modules[__name__]
