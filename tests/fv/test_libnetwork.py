"""Docker as the orchestrator: the `calico` network and `calico-ipam` IPAM drivers
(`calico-libnetwork`) under a real dockerd, with the real agent and a real etcd.

Topology (one per module, torn down even when tests fail):

    root ns ── cnln<pid> NET.1/24 ══ veth ══ eth0 NET.2/24 ── cnln-<pid> (netns)
              etcd on NET.1                                  calico-node, dockerd,
                                                             calico-libnetwork
                                                   cali<11hex> ══ veth ══ cali0 (containers)

dockerd runs inside the test's network namespace, so the host's own is never
touched, and in a mount namespace of its own in which the test's plugin directory
is bind-mounted on /run/docker/plugins (where Docker looks for plugin sockets), so
no other Docker on the machine sees this plugin. Its flags leave networking alone:
no bridge, no iptables, no forwarding or masquerade. The one image is busybox,
imported from a rootfs tar made here (no registry is reachable).

`DockerHost` is also used by bench/bench_libnetwork.py.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from etcd_server import start_etcd, stop_etcd  # noqa: E402

pytestmark = [pytest.mark.root, pytest.mark.slow]

VENV_BIN = Path(sys.executable).parent
NODE = "ln-node"
IMAGE = "cnln-busybox:1"
BUSYBOX_APPLETS = ("sh", "sleep", "ping", "ip", "cat", "nc", "true")


def sh(*cmd: str, check: bool = True, timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess:
    p = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()[-2000:]}")
    return p


def wait_for(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def _stop(proc: subprocess.Popen | None, timeout: float = 15) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class DockerHost:
    """A namespace with etcd beside it, the agent, dockerd and the plugin in it."""

    def __init__(self, net: str, pool: str, tag: str = "ln") -> None:
        run = os.getpid() % 100000
        self.net, self.pool = net, pool
        self.ns = f"cn{tag}-{run}"
        self.root_if = f"cn{tag}{run}"
        self.dir = Path(tempfile.mkdtemp(prefix=f"cn{tag}", dir="/tmp"))  # short: unix socket paths
        self.sock = self.dir / "docker.sock"
        self.plugins = self.dir / "plugins"
        self.etcd = None
        self.ds = None
        self.agent: subprocess.Popen | None = None
        self.dockerd: subprocess.Popen | None = None
        self.plugin: subprocess.Popen | None = None

    # --- set-up ---
    def plumb(self) -> None:
        """The host namespace on a veth to the root namespace, and an etcd there
        (`self.ds` a Datastore on it)."""
        sh("ip", "netns", "add", self.ns)
        self.nsrun("ip", "link", "set", "lo", "up")
        sh("ip", "link", "add", self.root_if, "type", "veth", "peer", "name", "eth0", "netns", self.ns)
        sh("ip", "addr", "add", f"{self.net}.1/24", "dev", self.root_if)
        sh("ip", "link", "set", self.root_if, "up")
        self.nsrun("ip", "addr", "add", f"{self.net}.2/24", "dev", "eth0")
        self.nsrun("ip", "link", "set", "eth0", "up")
        # a default route: proxy ARP answers 169.254.1.1 only when the host routes it elsewhere
        self.nsrun("ip", "route", "add", "default", "via", f"{self.net}.1")
        self.etcd = start_etcd(listen_host=f"{self.net}.1")
        from calico_net.datastore import Datastore
        from calico_net.datastore.etcd import EtcdClient, EtcdConfig

        self.ds = Datastore(EtcdClient(EtcdConfig(endpoints=[self.etcd.endpoints])))

    def start(self) -> "DockerHost":
        self.plumb()
        self.ds.create({"apiVersion": "projectcalico.org/v3", "kind": "Node", "metadata": {"name": NODE},
                        "spec": {}})
        self.ds.create({"apiVersion": "projectcalico.org/v3", "kind": "IPPool",
                        "metadata": {"name": "ln-pool"},
                        "spec": {"cidr": self.pool, "ipipMode": "Never", "vxlanMode": "Never",
                                 "natOutgoing": False, "blockSize": 28}})
        self.plugins.mkdir()
        self._start_agent()
        self._start_dockerd()
        self.start_plugin()
        self._import_image()
        return self

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "FELIX_", "DOCKER_"))}
        env.update({"NODENAME": NODE, "ETCD_ENDPOINTS": self.etcd.endpoints,
                    "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"})
        return env

    def nsrun(self, *cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        return sh("ip", "netns", "exec", self.ns, *cmd, check=check, timeout=timeout)

    def _start_agent(self) -> None:
        env = self.env()
        env.update({"FELIX_HEALTHHOST": "127.0.0.1", "FELIX_HEALTHPORT": "9099",
                    "FELIX_CONFIGFILE": str(self.dir / "felix.cfg"), "FELIX_MTUFILEPATH": str(self.dir / "mtu"),
                    "FELIX_ROUTEREFRESHINTERVAL": "2", "FELIX_IPTABLESREFRESHINTERVAL": "2",
                    # Calico's manifests for Docker hosts: containers may reach their host
                    "FELIX_DEFAULTENDPOINTTOHOSTACTION": "Accept"})
        log = open(self.dir / "agent.log", "a")
        self.agent = subprocess.Popen(["ip", "netns", "exec", self.ns, str(VENV_BIN / "calico-node")],
                                      env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: self.nsrun("python3", "-c", "import urllib.request as u; "
                                    "u.urlopen('http://127.0.0.1:9099/readiness', timeout=1)",
                                    check=False).returncode == 0, 30, "agent ready")

    def _start_dockerd(self) -> None:
        d = self.dir
        script = (f"mkdir -p /run/docker/plugins && mount --bind {self.plugins} /run/docker/plugins && "
                  f"exec dockerd --bridge=none --iptables=false --ip6tables=false --ip-forward=false "
                  f"--ip-masq=false --data-root {d}/data --exec-root {d}/exec --pidfile {d}/docker.pid "
                  f"-H unix://{self.sock} --log-level warn")
        log = open(d / "dockerd.log", "a")
        # nsenter, unshare and sh all exec: the PID held is dockerd's own. Not `ip netns
        # exec`: it mounts a fresh /sys, hiding the cgroup mounts dockerd needs.
        self.dockerd = subprocess.Popen(["nsenter", f"--net=/run/netns/{self.ns}", "unshare", "-m",
                                         "--propagation", "private", "sh", "-c", script],
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: self.dockerd.poll() is not None or self.docker("version", check=False).returncode == 0,
                 60, "dockerd up", interval=0.2)
        assert self.dockerd.poll() is None, (d / "dockerd.log").read_text()[-3000:]

    def start_plugin(self) -> None:
        env = self.env()
        env.update({"CALICO_LIBNETWORK_SOCKET": str(self.plugins / "calico.sock"),
                    "DOCKER_HOST": f"unix://{self.sock}", "FELIX_MTUFILEPATH": str(self.dir / "mtu"),
                    "CALICO_LIBNETWORK_LOCK_DIR": str(self.dir / "lock"), "ETCD_TIMEOUT": "2"})
        log = open(self.dir / "plugin.log", "a")
        self.plugin = subprocess.Popen(["ip", "netns", "exec", self.ns, str(VENV_BIN / "calico-libnetwork")],
                                       env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._plugin_answers, 15, "plugin answering Plugin.Activate")

    def _plugin_answers(self) -> bool:
        import http.client
        import socket

        s = socket.socket(socket.AF_UNIX)
        try:
            s.settimeout(2)
            s.connect(str(self.plugins / "calico.sock"))
            s.sendall(b"POST /Plugin.Activate HTTP/1.0\r\nContent-Length: 0\r\n\r\n")
            resp = http.client.HTTPResponse(s)
            resp.begin()
            return resp.status == 200 and json.loads(resp.read())["Implements"] == ["NetworkDriver", "IpamDriver"]
        except OSError:
            return False
        finally:
            s.close()

    def stop_plugin(self) -> None:
        _stop(self.plugin)

    def _import_image(self) -> None:
        tar = self.dir / "rootfs.tar"
        with tarfile.open(tar, "w") as t:
            for d in ("bin", "tmp", "proc", "sys", "dev", "etc"):
                info = tarfile.TarInfo(d)
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                t.addfile(info)
            t.add("/bin/busybox", "bin/busybox")
            for applet in BUSYBOX_APPLETS:
                info = tarfile.TarInfo(f"bin/{applet}")
                info.type, info.linkname = tarfile.SYMTYPE, "busybox"
                t.addfile(info)
        self.docker("import", str(tar), IMAGE)

    # --- use ---
    def docker(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        env = {"PATH": os.environ.get("PATH", ""), "DOCKER_CONFIG": str(self.dir / "cli"), "HOME": str(self.dir)}
        return sh("docker", "-H", f"unix://{self.sock}", *args, check=check, timeout=timeout, env=env)

    def run(self, name: str, network: str, labels: dict[str, str] | None = None) -> "Container":
        args = ["run", "-d", "--name", name, "--net", network]
        for k, v in (labels or {}).items():
            args += ["--label", f"{k}={v}"]
        cid = self.docker(*args, IMAGE, "sleep", "3600").stdout.strip()
        info = json.loads(self.docker("inspect", cid).stdout)[0]
        return Container(name, cid, info["State"]["Pid"], info["NetworkSettings"]["Networks"][network]["IPAddress"],
                         info["NetworkSettings"]["Networks"][network]["EndpointID"])

    def ping_from(self, c: "Container | None", ip: str, timeout: float = 1) -> bool:
        """One echo from a container (None: from the host namespace)."""
        if c is None:
            cmd = ["ip", "netns", "exec", self.ns]
        else:
            cmd = ["nsenter", "-t", str(c.pid), "-n"]
        return sh(*cmd, "ping", "-c1", "-W", str(timeout), ip, check=False, timeout=10).returncode == 0

    def weps(self) -> dict[str, dict[str, Any]]:
        docs, _ = self.ds.list("WorkloadEndpoint", "libnetwork")
        return {d["spec"]["endpoint"]: d for d in docs}

    def cali_links(self) -> list[str]:
        out = self.nsrun("ip", "-o", "link", "show").stdout
        return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()
                if line.split(":")[1].strip().startswith(("cali", "tmp"))]

    def log(self, what: str, n: int = 40) -> str:
        try:
            return "\n".join((self.dir / f"{what}.log").read_text().splitlines()[-n:])
        except OSError:
            return ""

    # --- tear-down ---
    def close(self) -> None:
        if self.dockerd is not None and self.dockerd.poll() is None:
            ids = self.docker("ps", "-aq", check=False).stdout.split()
            if ids:
                self.docker("rm", "-f", *ids, check=False, timeout=120)
        _stop(self.dockerd, 30)
        _stop(self.plugin)
        _stop(self.agent)
        for pid in sh("ip", "netns", "pids", self.ns, check=False).stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)   # a shim dockerd left behind
            except (ProcessLookupError, ValueError):
                pass
        sh("ip", "netns", "del", self.ns, check=False)
        sh("ip", "link", "del", self.root_if, check=False)
        if self.ds is not None:
            self.ds.client.close()
        if self.etcd is not None:
            stop_etcd(self.etcd)
        shutil.rmtree(self.dir, ignore_errors=True)


class Container:
    def __init__(self, name: str, cid: str, pid: int, ip: str, endpoint: str) -> None:
        self.name, self.cid, self.pid, self.ip, self.endpoint = name, cid, pid, ip, endpoint


# --------------------------------------------------------------------------------------

NET = "198.18.142"
POOL = "198.19.120.0/24"


@pytest.fixture(scope="module")
def host() -> Iterator[DockerHost]:
    assert shutil.which("dockerd"), "dockerd is missing: scripts/install-deps.sh installs docker.io"
    h = DockerHost(NET, POOL)
    try:
        yield h.start()
    finally:
        for what in ("plugin", "dockerd", "agent"):
            text = h.log(what)
            if text:
                print(f"---- {what} log (tail) ----\n{text}")
        h.close()


@pytest.fixture(scope="module")
def net(host) -> Iterator[dict[str, Any]]:
    host.docker("network", "create", "--driver", "calico", "--ipam-driver", "calico-ipam",
                "--subnet", POOL, "lnnet")
    state: dict[str, Any] = {"name": "lnnet", "containers": {}}
    yield state


def _labelled(host: DockerHost, c: Container) -> bool:
    w = host.weps().get(c.endpoint)
    return bool(w and w["spec"].get("containerID") == c.cid)


def test_containers_get_addresses_endpoints_and_talk(host, net):
    role = "org.projectcalico.label.role"
    c1 = host.run("c1", net["name"], {role: "client"})
    c2 = host.run("c2", net["name"], {role: "server", "tier": "web"})
    c3 = host.run("c3", net["name"])
    net["containers"].update(c1=c1, c2=c2, c3=c3)
    ips = {c.ip for c in (c1, c2, c3)}
    assert len(ips) == 3 and all(ip.startswith("198.19.120.") for ip in ips), ips
    for c in (c1, c2, c3):
        wait_for(lambda c=c: _labelled(host, c), 10, f"{c.name}'s endpoint labelled from the Docker API")
    weps = host.weps()
    w2 = weps[c2.endpoint]
    assert w2["spec"]["orchestrator"] == "libnetwork"
    assert w2["spec"]["ipNetworks"] == [f"{c2.ip}/32"]
    assert w2["spec"]["interfaceName"] == "cali" + c2.endpoint[:11]
    assert w2["metadata"]["labels"]["role"] == "server" and w2["metadata"]["labels"]["tier"] == "web"
    assert w2["spec"]["profiles"] == [f"libnetwork-{w2['metadata']['annotations']['org.projectcalico.label.network.ID'][:12]}"]
    # the container's side: Docker moved our veth in, with the gateway and its /32 route
    routes = sh("nsenter", "-t", str(c1.pid), "-n", "ip", "route").stdout
    assert "default via 169.254.1.1" in routes and "169.254.1.1 dev cali0" in routes, routes
    wait_for(lambda: host.ping_from(c1, c2.ip), 15, "c1 -> c2")
    assert host.ping_from(c2, c1.ip), "c2 -> c1"
    assert host.ping_from(c3, c2.ip), "c3 -> c2"
    assert host.ping_from(c1, f"{NET}.2"), "c1 -> its host"
    assert host.ping_from(c2, f"{NET}.2"), "c2 -> its host"


def test_policy_on_container_labels(host, net):
    c = net["containers"]
    host.ds.create({
        "apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
        "metadata": {"name": "ln-deny-client"},
        "spec": {"order": 10, "selector": "role == 'server'", "types": ["Ingress"],
                 "ingress": [{"action": "Deny", "source": {"selector": "role == 'client'"}},
                             {"action": "Pass"}]},
    })
    try:
        wait_for(lambda: not host.ping_from(c["c1"], c["c2"].ip, timeout=2), 30, "c1 -> c2 denied")
        assert host.ping_from(c["c3"], c["c2"].ip), "c3 -> c2 (same server) must still work"
        assert host.ping_from(c["c2"], c["c1"].ip), "the other direction, c2 -> c1, must still work"
    finally:
        host.ds.delete("GlobalNetworkPolicy", "ln-deny-client")
    wait_for(lambda: host.ping_from(c["c1"], c["c2"].ip, timeout=2), 30, "c1 -> c2 again without the policy")


def test_stop_and_start_leave_and_join_again(host, net):
    from calico_net.ipam import IPAM
    from calico_net.ipam.check import check

    c3 = net["containers"]["c3"]
    host.docker("stop", "-t", "0", "c3")
    wait_for(lambda: c3.endpoint not in host.weps(), 10, "c3's endpoint removed on stop")
    assert "cali" + c3.endpoint[:11] not in host.cali_links()
    report = check(IPAM(host.ds.client, host.ds))
    assert report.clean and report.allocations == 2, report.to_json()
    host.docker("start", "c3")
    info = json.loads(host.docker("inspect", "c3").stdout)[0]
    again = Container("c3", c3.cid, info["State"]["Pid"], info["NetworkSettings"]["Networks"][net["name"]]["IPAddress"],
                      info["NetworkSettings"]["Networks"][net["name"]]["EndpointID"])
    net["containers"]["c3"] = again
    wait_for(lambda: _labelled(host, again), 10, "c3's new endpoint labelled")
    wait_for(lambda: host.ping_from(again, net["containers"]["c2"].ip), 15, "c3 -> c2 after a restart")
    assert host.ping_from(net["containers"]["c1"], again.ip), "c1 -> c3 after a restart"
    report = check(IPAM(host.ds.client, host.ds))
    assert report.clean and report.allocations == 3 and report.endpoints == 3, report.to_json()


def test_plugin_restart_loses_nothing(host, net):
    host.stop_plugin()
    host.start_plugin()
    c4 = host.run("c4", net["name"], {"org.projectcalico.label.role": "client"})
    net["containers"]["c4"] = c4
    ips = [x.ip for x in net["containers"].values()]
    assert len(set(ips)) == len(ips), f"duplicate address after a plugin restart: {ips}"
    wait_for(lambda: _labelled(host, c4), 10, "c4 labelled")
    wait_for(lambda: host.ping_from(c4, net["containers"]["c3"].ip), 15, "c4 -> c3")
    assert host.ping_from(net["containers"]["c3"], c4.ip), "c3 -> c4"
    from calico_net.ipam import IPAM
    from calico_net.ipam.check import check

    assert len(host.weps()) == 4
    report = check(IPAM(host.ds.client, host.ds))
    assert report.clean and report.allocations == 4 and report.endpoints == 4, report.to_json()


def test_etcd_unreachable_gives_a_clear_error_and_makes_nothing(host, net):
    before_links = set(host.cali_links())
    before_weps = set(host.weps())
    host.etcd.proc.send_signal(signal.SIGSTOP)
    try:
        p = host.docker("run", "-d", "--name", "c-noetcd", "--net", net["name"], IMAGE, "sleep", "3600",
                        check=False, timeout=120)
    finally:
        host.etcd.proc.send_signal(signal.SIGCONT)
    assert p.returncode != 0
    assert "etcd is unreachable" in p.stderr, p.stderr
    host.docker("rm", "-f", "c-noetcd", check=False)
    assert set(host.cali_links()) == before_links
    assert set(host.weps()) == before_weps


def test_rm_releases_addresses_and_endpoints(host, net):
    from calico_net.ipam import IPAM
    from calico_net.ipam.check import check

    ipam = IPAM(host.ds.client, host.ds)
    assert check(ipam).allocations == 4
    names = list(net["containers"])
    host.docker("rm", "-f", *names, timeout=120)
    wait_for(lambda: not host.weps(), 10, "endpoints removed")
    assert host.cali_links() == []
    report = check(ipam)
    assert report.clean, report.to_json()
    assert report.allocations == 0
    host.docker("network", "rm", net["name"])
    profiles, _ = host.ds.list("Profile")
    assert not [p for p in profiles if p["metadata"]["name"].startswith("libnetwork-")]
