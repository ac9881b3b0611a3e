"""Helpers for the reliability drills of tests/fv/test_drills_etcd.py: an etcd of the
drills' own (restartable on the same port and data, and freezable with SIGSTOP), a
host namespace with the real agent, confd and BIRD in it, and dataplane snapshots.

Topology (every name starts with ``cnfv-drl-`` / ``cnfvdrl``):

    root ns  cnfvdrl0 198.18.184.1/24 (etcd listens here) ══ veth ══ eth0 198.18.184.2/24
                                                                cnfv-drl-host: calico-node,
                                                                confd, bird
                                        cali<11 hex> ══ veth ══ eth0 198.18.185.N/32 cnfv-drl-wN

The workload addresses come from IPAM (pool 198.18.185.0/24, /26 blocks affine to
the node), so confd renders a blackhole for the node's block and BIRD writes it.
Nothing here touches another run's namespaces: the drills run one at a time (their
names carry no PID) and `cleanup` removes only ``cnfv-drl-`` ones.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

VENV_BIN = Path(sys.executable).parent
PREFIX = "cnfv-drl-"
HOST_NS = PREFIX + "host"
ROOT_IF = "cnfvdrl0"
NET = "198.18.184"
ETCD_IP = f"{NET}.1"
HOST_IP = f"{NET}.2"
POOL = "198.18.185.0/24"
NODE = "drl-node"
HEALTH = f"http://{HOST_IP}:9099"
METRICS = f"http://{HOST_IP}:9091/metrics"


def sh(*cmd: str, ns: str | None = None, check: bool = True, input: str | None = None,
       timeout: float = 60) -> str:
    argv = (["ip", "netns", "exec", ns] if ns else []) + list(cmd)
    p = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr.strip()}")
    return p.stdout


def wait_for(cond: Callable[[], Any], timeout: float, what: str,
             extra: Callable[[], str] | None = None, interval: float = 0.05) -> Any:
    """Poll `cond` until it is truthy; `timeout` is a hang guard, never a speed check."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}"
                                 + (f"\n{extra()}" if extra else ""))
        time.sleep(interval)


def hold(seconds: float) -> None:
    """Keep a drill's condition (etcd cut off) for `seconds`: the length of the
    outage is part of the drill, it is not a wait for a state (those use wait_for)."""
    threading.Event().wait(seconds)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Etcd:
    """One etcd on ETCD_IP whose process the drills own: SIGSTOP/SIGCONT, stop and
    start again on the same port and data (the session's shared etcd is never
    touched)."""

    def __init__(self) -> None:
        self.port = _free_port(ETCD_IP)
        peer = f"http://127.0.0.1:{_free_port('127.0.0.1')}"
        self.data_dir = tempfile.mkdtemp(prefix="cnfv-drl-etcd-")   # after what can fail
        self.endpoints = f"http://{ETCD_IP}:{self.port}"
        self.argv = [shutil.which("etcd") or "/usr/bin/etcd", "--name", "drill",
                     "--data-dir", os.path.join(self.data_dir, "data"),
                     "--listen-client-urls", self.endpoints, "--advertise-client-urls", self.endpoints,
                     "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                     "--initial-cluster", f"drill={peer}", "--log-level", "warn", "--logger", "zap",
                     # as the etcd role configures it: a bulk create is one transaction
                     "--max-txn-ops", "20000", "--max-request-bytes", str(32 * 1024 * 1024)]
        self.proc: subprocess.Popen | None = None
        self.frozen = False

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        log = open(os.path.join(self.data_dir, "etcd.log"), "a")
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self.healthy, 30, "the drill etcd answers /health",
                 lambda: Path(self.data_dir, "etcd.log").read_text()[-2000:])

    def healthy(self) -> bool:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(self.endpoints + "/health", timeout=1) as r:
                return r.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def freeze(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        if self.proc is not None and self.frozen:
            self.proc.send_signal(signal.SIGCONT)
        self.frozen = False

    def stop(self) -> None:
        self.thaw()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def client(self):
        from calico_net.datastore.etcd import EtcdClient, EtcdConfig

        return EtcdClient(EtcdConfig(endpoints=[self.endpoints]))


def iface_name(workload: str) -> str:
    return "cali" + hashlib.sha1((PREFIX + workload).encode()).hexdigest()[:11]


@dataclass
class Workload:
    name: str
    ip: str

    @property
    def ns(self) -> str:
        return PREFIX + self.name

    @property
    def iface(self) -> str:
        return iface_name(self.name)

    def wep(self) -> dict[str, Any]:
        return {"apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
                "metadata": {"name": f"{NODE}-k8s-{self.name}-eth0", "namespace": "default",
                             "labels": {"projectcalico.org/namespace": "default",
                                        "projectcalico.org/orchestrator": "k8s", "app": self.name}},
                "spec": {"node": NODE, "orchestrator": "k8s", "workload": self.name, "endpoint": "eth0",
                         "interfaceName": self.iface, "ipNetworks": [f"{self.ip}/32"], "profiles": []}}


def add_workload(w: Workload) -> None:
    """The namespace and veth as the CNI plugin makes them (the agent routes it)."""
    sh("ip", "netns", "add", w.ns)
    sh("ip", "link", "set", "lo", "up", ns=w.ns)
    sh("ip", "link", "add", w.iface, "type", "veth", "peer", "name", "eth0", "netns", w.ns, ns=HOST_NS)
    sh("ip", "link", "set", w.iface, "up", ns=HOST_NS)
    sh("ip", "addr", "add", f"{w.ip}/32", "dev", "eth0", ns=w.ns)
    sh("ip", "link", "set", "eth0", "up", ns=w.ns)


def build_host() -> None:
    sh("ip", "netns", "add", HOST_NS)
    sh("ip", "link", "set", "lo", "up", ns=HOST_NS)
    sh("ip", "link", "add", ROOT_IF, "type", "veth", "peer", "name", "eth0", "netns", HOST_NS)
    sh("ip", "addr", "add", f"{ETCD_IP}/24", "dev", ROOT_IF)
    sh("ip", "link", "set", ROOT_IF, "up")
    sh("ip", "addr", "add", f"{HOST_IP}/24", "dev", "eth0", ns=HOST_NS)
    sh("ip", "link", "set", "eth0", "up", ns=HOST_NS)
    sh("ip", "route", "add", "default", "via", ETCD_IP, ns=HOST_NS)


def cleanup() -> None:
    """Remove every cnfv-drl- namespace (killing what runs in it) and the root veth."""
    for line in sh("ip", "netns", "list", check=False).splitlines():
        name = line.split()[0] if line.strip() else ""
        if not name.startswith(PREFIX):
            continue
        for pid in sh("ip", "netns", "pids", name, check=False).split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        sh("ip", "netns", "del", name, check=False)
    sh("ip", "link", "del", ROOT_IF, check=False)


def base_env(etcd: Etcd) -> dict[str, str]:
    env = dict(os.environ)
    for k in ("ETCD_CA_CERT_FILE", "ETCD_CERT_FILE", "ETCD_KEY_FILE", "IP", "IP6", "AS", "HOSTNAME"):
        env.pop(k, None)
    env.update({"NODENAME": NODE, "ETCD_ENDPOINTS": etcd.endpoints,
                "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"})
    return env


@dataclass
class Proc:
    """A process started in HOST_NS (`ip netns exec` execs it: the PID is its own)."""

    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        log = open(self.log_path, "a")
        log.write(f"==== start {time.strftime('%H:%M:%S')}\n")
        log.flush()
        self.proc = subprocess.Popen(["ip", "netns", "exec", HOST_NS, *self.argv], env=self.env,
                                     stdout=log, stderr=subprocess.STDOUT)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.running():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        if self.running():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, n: int = 60) -> str:
        try:
            return f"--- {self.log_path.name} ---\n" + "\n".join(self.log_path.read_text().splitlines()[-n:])
        except OSError:
            return ""


def agent_proc(etcd: Etcd, tmp: Path) -> Proc:
    env = base_env(etcd)
    env.update({
        "FELIX_HEALTHHOST": "0.0.0.0", "FELIX_HEALTHPORT": "9099",
        "FELIX_PROMETHEUSMETRICSENABLED": "true", "FELIX_PROMETHEUSMETRICSPORT": "9091",
        # the refreshes run all through a drill: a refresh that rewrote the dataplane
        # while the datastore is gone would show in the before/after comparison
        "FELIX_IPTABLESREFRESHINTERVAL": "2", "FELIX_ROUTEREFRESHINTERVAL": "2",
        "FELIX_LOGSEVERITYSCREEN": "Info", "FELIX_CONFIGFILE": str(tmp / "felix.cfg"),
    })
    return Proc([str(VENV_BIN / "calico-node")], env, tmp / "agent.log")


def confd_proc(etcd: Etcd, tmp: Path) -> Proc:
    env = base_env(etcd)
    env.update({
        "CALICO_BIRD_CONFIG": str(tmp / "bird.cfg"), "CALICO_BIRD_SOCKET": str(tmp / "bird.ctl"),
        "CALICO_CONFD_STATUS_FILE": str(tmp / "confd-status.json"),
        "CALICO_BGP_SECRETS_DIR": str(tmp / "secrets"), "CALICO_CONFD_HEALTHPORT": "9098",
    })
    return Proc([sys.executable, "-m", "calico_net.agent.confd"], env, tmp / "confd.log")


def bird_proc(tmp: Path) -> Proc:
    return Proc(["bird", "-f", "-c", str(tmp / "bird.cfg"), "-s", str(tmp / "bird.ctl")], dict(os.environ), tmp / "bird.log")


def readiness() -> tuple[int, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(HEALTH + "/readiness", timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return 0, str(e)


def metric(name: str) -> float | None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(METRICS, timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def confd_status(tmp: Path) -> dict[str, Any]:
    try:
        return json.loads((tmp / "confd-status.json").read_text())
    except (OSError, ValueError):
        return {}


def agent_routes() -> list[str]:
    """The agent's routes (protocol 80), one line each, sorted."""
    return sorted(sh("ip", "route", "show", "proto", "80", ns=HOST_NS).splitlines())


def bird_routes() -> list[str]:
    return sorted(sh("ip", "route", "show", "proto", "bird", ns=HOST_NS).splitlines())


def ruleset(handles: bool = True) -> str:
    """table inet calico as nft lists it ("" when absent); with handles, a rule or
    set rewritten with the same text still shows as a change."""
    # without handles, stateless (-s): counters differ between two agents' runs
    args = ["nft", "-a", "list", "table", "inet", "calico"] if handles else ["nft", "-s", "list", "table", "inet", "calico"]
    return sh(*args, ns=HOST_NS, check=False)


def placeholder_rules(listing: str) -> list[str]:
    """The placeholder table's own rules in chain cali-forward (`base_chains.
    placeholder_script`: drop every new connection of a workload interface) still
    in a listing. The real cali-forward sends those interfaces to their chains and
    never has them, so any left means the placeholder was kept or the real table
    was loaded on top of it rather than replacing it."""
    marks = ('iifname "cali*" drop', 'oifname "cali*" drop')
    out, chain = [], ""
    for raw in listing.splitlines():
        line = raw.strip()
        if line.startswith("chain "):
            chain = line.split()[1]
        elif chain == "cali-forward" and line in marks:
            out.append(line)
    return out


def table_exists() -> bool:
    return "table inet calico" in sh("nft", "list", "tables", ns=HOST_NS, check=False)


@dataclass
class Dataplane:
    """What the drills compare before and after: the agent's routes, its ruleset (with
    handles), BIRD's routes and the config confd rendered for BIRD."""

    routes: list[str]
    nft: str
    bird: list[str] = field(default_factory=list)
    bird_cfg: str = ""

    @classmethod
    def read(cls, tmp: Path | None = None) -> "Dataplane":
        cfg = ""
        if tmp is not None and (tmp / "bird.cfg").exists():
            cfg = (tmp / "bird.cfg").read_text()
        return cls(agent_routes(), ruleset(), bird_routes(), cfg)


# ----------------------------------------------------------------- a 3-member etcd


def ss_bytes_received(ip: str, port: int) -> int:
    """Bytes the listening side at ip:port has received on its established client
    connections (kernel counters, `ss -ti`): how far a client's request got."""
    out = sh("ss", "-tinH", "state", "established", f"( sport = :{port} )", check=False)
    total = 0
    for tok in out.split():
        if tok.startswith("bytes_received:"):
            total += int(tok.split(":", 1)[1])
    return total


@dataclass
class Member:
    name: str
    ip: str
    client_port: int
    peer_port: int
    data_dir: str
    proc: subprocess.Popen | None = None

    @property
    def client_url(self) -> str:
        return f"http://{self.ip}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.ip}:{self.peer_port}"

    def healthy(self) -> bool:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(self.client_url + "/health", timeout=1) as r:
                return r.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 30) -> str:
        try:
            lines = Path(self.data_dir, "etcd.log").read_text().splitlines()[-n:]
        except OSError:
            lines = []
        return f"--- etcd {self.name} ---\n" + "\n".join(lines)


class EtcdCluster:
    """Three etcd members of the drill's own on 127.0.0.61-63 (data on tmpfs when
    there is one), each SIGKILLable and restartable on its ports and data. Short
    heartbeat/election timers, so a lost leader is replaced in about a second."""

    IPS = ("127.0.0.61", "127.0.0.62", "127.0.0.63")

    def __init__(self) -> None:
        base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        self.root = tempfile.mkdtemp(prefix="cnt6-etcd-", dir=base)
        self.members = [Member(f"m{i + 1}", ip, _free_port(ip), _free_port(ip),
                               os.path.join(self.root, f"m{i + 1}"))
                        for i, ip in enumerate(self.IPS)]
        for m in self.members:
            os.makedirs(m.data_dir)
        self.initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    def start(self, m: Member) -> None:
        assert not m.running()
        log = open(os.path.join(m.data_dir, "etcd.log"), "a")
        m.proc = subprocess.Popen(
            [shutil.which("etcd") or "/usr/bin/etcd", "--name", m.name,
             "--data-dir", os.path.join(m.data_dir, "data"),
             "--listen-client-urls", m.client_url, "--advertise-client-urls", m.client_url,
             "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
             "--initial-cluster", self.initial, "--initial-cluster-state", "new",
             "--initial-cluster-token", os.path.basename(self.root),
             "--heartbeat-interval", "100", "--election-timeout", "1000",
             "--max-txn-ops", "20000", "--max-request-bytes", str(32 * 1024 * 1024),
             "--log-level", "warn", "--logger", "zap"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def start_all(self) -> None:
        for m in self.members:
            self.start(m)
        for m in self.members:
            self.wait_healthy(m)

    def wait_healthy(self, m: Member, timeout: float = 60) -> None:
        wait_for(m.healthy, timeout, f"etcd {m.name} healthy", lambda: self.logs())

    def kill(self, m: Member) -> None:
        """SIGKILL: the member is lost, no goodbye to peers or clients."""
        if m.running():
            assert m.proc is not None
            m.proc.kill()
            m.proc.wait()

    def endpoints(self, *ms: Member) -> str:
        return ",".join(m.client_url for m in (ms or self.members))

    def client(self, *ms: Member):
        from calico_net.datastore.etcd import EtcdClient, EtcdConfig

        return EtcdClient(EtcdConfig(endpoints=[m.client_url for m in (ms or self.members)]))

    def logs(self) -> str:
        return "\n".join(m.log_tail() for m in self.members)

    def destroy(self) -> None:
        for m in self.members:
            if m.running():
                assert m.proc is not None
                m.proc.send_signal(signal.SIGTERM)
                try:
                    m.proc.wait(10)
                except subprocess.TimeoutExpired:
                    m.proc.kill()
                    m.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def base_env_plain(endpoints: str) -> dict[str, str]:
    """Environment for calicoctl against `endpoints` (plain http, no node identity)."""
    env = dict(os.environ)
    for k in ("ETCD_CA_CERT_FILE", "ETCD_CERT_FILE", "ETCD_KEY_FILE", "NODENAME", "HOSTNAME"):
        env.pop(k, None)
    env.update({"ETCD_ENDPOINTS": endpoints, "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"})
    return env


class KillOnFirstPut:
    """Watches `prefix` through `watch_client` (a member that survives) and calls
    `kill()` on the first PUT: the moment the first of a write's keys is committed."""

    def __init__(self, watch_client, prefix: str, kill: Callable[[], None]) -> None:
        self._watch = watch_client.watch_prefix(prefix, watch_client.revision() + 1)
        self._kill = kill
        self.fired = threading.Event()
        self.error: BaseException | None = None
        threading.Thread(target=self._run, name="cnt6-kill-on-put", daemon=True).start()

    def _run(self) -> None:
        try:
            for events in self._watch:
                if any(e.type == "PUT" for e in events):
                    self._kill()
                    self.fired.set()
                    return
        except BaseException as e:  # noqa: BLE001 - the test reports it
            if not self.fired.is_set():
                self.error = e

    def close(self) -> None:
        self._watch.cancel()


# ------------------------------------------------------------ a BGP fabric of cnt6 names


def cnt6_fabric_module():
    """tests/fv/bgp_util.py loaded as a module of its own whose names are the drills'
    (namespaces ``cnt6-*``, root link ``cnt6bgp0`` 198.18.226.1/24), so a BIRD drill
    never removes or collides with the fabric of the BGP FV tests (``cnfv-bgp-*``).
    Inside the namespaces the addresses are the FV fabric's (they are isolated)."""
    import importlib.util

    name = "cnt6_bgp_util"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("bgp_util.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    mod.PREFIX = "cnt6-"
    mod.BR_NS = "cnt6-br"
    mod.TOR_NS = "cnt6-tor"
    mod.EXT2_NS = "cnt6-ext2"
    mod.ROOT_IF = "cnt6bgp0"
    mod.UPLINK = "198.18.226"
    return mod


def cluster_leader(cluster: EtcdCluster) -> Member:
    """The member that leads the cluster now (asked of the first healthy one)."""
    by_id: dict[str, Member] = {}
    for m in cluster.members:
        c = cluster.client(m)
        try:
            for info in c.member_list():
                if info.get("name"):
                    by_id[str(info["ID"])] = next(x for x in cluster.members if x.name == info["name"])
            leader = str(c.status()["leader"])
        except Exception:  # noqa: BLE001 - a member down: ask the next
            continue
        finally:
            c.close()
        return by_id[leader]
    raise AssertionError("no member answers: " + cluster.logs())
