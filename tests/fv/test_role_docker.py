"""The calico.net.calico_node role on a Docker host, and the calico/node image's
libnetwork mode.

The whole role (not selected task files) runs with ansible-playbook, connection local,
inside a network namespace made for the test, against a dockerd the test starts in the
same namespace (tests/fv/test_libnetwork.py's DockerHost: no bridge, no iptables, its
own data root, socket and /run/docker/plugins). Every host path the role writes is
pointed at the test's directory (sysctl.d file, tmpfiles file, calico's run/lib/log/
config directories, CNI and BGP-secret directories), and the sysctl it applies is the
namespace's own, so nothing of the host's /etc or network is touched. The image is the
one the suite builds once (test_lab_images' session fixture), handed to the role as
an archive (`podman save`), which calico.net.node_container loads into this dockerd.

Shown: calico/node runs under docker with the role's capability set and not
privileged; the plugin container runs the image in its `libnetwork` mode; `docker
network create --driver calico --ipam-driver calico-ipam` works and a container on it
gets a pool address, its WorkloadEndpoint (with its container id, read through the
mounted Docker socket) and a route the containerised agent programmed, and answers a
ping from the host; a second run of the role changes nothing; `tasks_from: remove`
removes both containers.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from test_lab_images import CALICO_NODE_IMAGE, SUPERVISOR, calico_node_image  # noqa: E402,F401
from test_libnetwork import IMAGE, DockerHost, wait_for  # noqa: E402

REPO = HERE.parents[1]
VENV_BIN = Path(sys.executable).parent
NET = "198.18.145"
POOL = "198.19.125.0/24"
NODE = "cnt5-node"
CAPS = ["NET_ADMIN", "NET_RAW", "SYS_ADMIN", "SYS_MODULE"]


# --- the image's libnetwork mode, under its supervisor (no root, no image) ----------------


def _supervise(tmp: Path, argv: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, Path]:
    """The image's supervisor with `echo`-like fake programs that record their start."""
    rec = tmp / "started"
    fake = f"{sys.executable} -c \"import sys,time; open(sys.argv[1],'a').write(sys.argv[2]+'\\n'); time.sleep(60)\""
    full = {k: v for k, v in os.environ.items() if not k.startswith("CALICO_")}
    full.update({"CALICO_AGENT_CMD": f"{fake} {rec} agent", "CALICO_LIBNETWORK_CMD": f"{fake} {rec} libnetwork",
                 "CALICO_CONFD_CMD": f"{fake} {rec} confd", "CALICO_NETWORKING_BACKEND": "none",
                 "CALICO_SUPERVISOR_GRACE": "5"})
    full.update(env)
    proc = subprocess.Popen([sys.executable, str(SUPERVISOR), *argv], env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, rec


def _started(rec: Path) -> list[str]:
    return sorted(rec.read_text().split()) if rec.exists() else []


def _stop_supervisor(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    return out


@pytest.mark.parametrize("argv, env, want", [
    (["libnetwork"], {}, ["libnetwork"]),                                    # the plugin container
    ([], {"CALICO_LIBNETWORK_ENABLED": "true"}, ["agent", "libnetwork"]),    # beside the agent
    ([], {}, ["agent"]),                                                     # the default: unchanged
    ([], {"CALICO_LIBNETWORK_ENABLED": "False"}, ["agent"]),
])
def test_cnt5_supervisor_libnetwork_mode(tmp_path: Path, argv: list[str], env: dict[str, str],
                                         want: list[str]) -> None:
    proc, rec = _supervise(tmp_path, argv, env)
    try:
        wait_for(lambda: len(_started(rec)) >= len(want) or proc.poll() is not None, 30, f"{want} started")
        # the supervisor stays up (it supervises; it did not exec the plugin and exit)
        assert proc.poll() is None
    finally:
        out = _stop_supervisor(proc)
    assert _started(rec) == want, out
    assert proc.returncode == 0, out


def test_cnt5_supervisor_refuses_a_bad_libnetwork_switch(tmp_path: Path) -> None:
    proc, rec = _supervise(tmp_path, [], {"CALICO_LIBNETWORK_ENABLED": "perhaps"})
    out = proc.communicate(timeout=30)[0]
    assert proc.returncode == 2, out
    assert "CALICO_LIBNETWORK_ENABLED='perhaps' is not true or false" in out
    assert _started(rec) == []


# --- the role on a Docker host --------------------------------------------------------------


class RoleHost(DockerHost):
    """DockerHost's namespace, etcd and dockerd, without the host-process agent and plugin:
    the role runs those as containers. Docker's data root and the image archive are in
    /dev/shm: loading the 270 MB image there takes 5 s, on this machine's disk 11 s."""

    def __init__(self, net: str, pool: str, tag: str) -> None:
        super().__init__(net, pool, tag)
        self.shm = Path(tempfile.mkdtemp(prefix=f"cn{tag}", dir="/dev/shm"))
        (self.dir / "data").symlink_to(self.shm)

    def close(self) -> None:
        try:
            super().close()
        finally:
            shutil.rmtree(self.shm, ignore_errors=True)

    def start(self) -> "RoleHost":
        self.plumb()
        self.ds.create({"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "cnt5-pool"},
                        "spec": {"cidr": self.pool, "ipipMode": "Never", "vxlanMode": "Never",
                                 "natOutgoing": False, "blockSize": 28}})
        self.plugins.mkdir()
        self._start_dockerd()
        self._import_image()
        return self

    def inspect(self, name: str) -> dict[str, Any] | None:
        p = self.docker("inspect", "--type", "container", name, check=False)
        return json.loads(p.stdout)[0] if p.returncode == 0 else None


PLAYBOOK = """\
- name: calico.net.calico_node on a Docker host (test)
  hosts: localhost
  connection: local
  gather_facts: false
  environment:
    DOCKER_HOST: "{{ cnt5_docker_host }}"
    DOCKER_CONFIG: "{{ cnt5_dir }}/cli"
  tasks:
    - name: The role
      ansible.builtin.include_role:
        name: calico.net.calico_node
        tasks_from: "{{ cnt5_entry }}"
"""


def role_vars(h: RoleHost, archive: Path) -> dict[str, Any]:
    d = h.dir
    return {
        "cnt5_dir": str(d), "cnt5_docker_host": f"unix://{h.sock}",
        "calico_node_name": NODE, "calico_node_runtime": "docker",
        "calico_node_image": CALICO_NODE_IMAGE, "calico_node_image_archive": str(archive),
        "calico_node_image_pull": "never",
        "calico_node_etcd_endpoints": [h.etcd.endpoints],
        "calico_node_etcd_tls": False, "calico_node_etcd_allow_insecure_plaintext": True,
        "calico_node_etcd_pki_ca_host": "localhost",
        "calico_node_preflight": False, "calico_node_python_source": "none",
        "calico_node_calicoctl": False, "calico_node_cni": False,
        "calico_node_networking_backend": "none",
        "calico_node_ip": f"{h.net}.2",
        "calico_node_felix_env": {"DEFAULTENDPOINTTOHOSTACTION": "Accept", "HEALTHHOST": "127.0.0.1"},
        "calico_node_ready_timeout": 90,
        # every host path the role writes, in the test's directory
        "calico_node_sysctl_conf": str(d / "etc" / "60-calico.conf"),
        "calico_node_tmpfiles_conf": "",
        "calico_node_run_dir": str(d / "run"), "calico_node_lib_dir": str(d / "lib"),
        "calico_node_log_dir": str(d / "log"), "calico_node_config_dir": str(d / "etc"),
        "calico_node_pki_dir": str(d / "pki"), "calico_node_bgp_secrets_dir": str(d / "bgp-secrets"),
        "calico_node_cni_bin_dir": str(d / "cni-bin"), "calico_node_cni_conf_dir": str(d / "cni-conf"),
        "calico_node_libnetwork_plugin_dir": str(h.plugins),
        "calico_node_docker_socket": str(h.sock),
        "ansible_python_interpreter": sys.executable,
    }


def run_role(h: RoleHost, archive: Path, entry: str = "main") -> tuple[subprocess.CompletedProcess, float]:
    play = h.dir / "play.yml"
    play.write_text(PLAYBOOK)
    extra = h.dir / f"vars-{entry}.json"
    extra.write_text(json.dumps({**role_vars(h, archive), "cnt5_entry": entry}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "ETCD_", "ANSIBLE_"))}
    env.update({"ANSIBLE_COLLECTIONS_PATH": str(REPO), "ANSIBLE_LOCAL_TEMP": str(h.dir / "ansible-tmp"),
                "ANSIBLE_NOCOLOR": "1", "ANSIBLE_PIPELINING": "1", "ANSIBLE_RETRY_FILES_ENABLED": "0", "ANSIBLE_STDOUT_CALLBACK": "default",
                "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"})
    t0 = time.monotonic()
    # in the namespace: the role's readiness check asks 127.0.0.1 there
    p = subprocess.run(["ip", "netns", "exec", h.ns, str(VENV_BIN / "ansible-playbook"), "-i", "localhost,",
                        "-e", f"@{extra}", str(play)], env=env, capture_output=True, text=True, timeout=300)
    return p, time.monotonic() - t0


def recap(p: subprocess.CompletedProcess) -> dict[str, int]:
    """PLAY RECAP's counters for localhost."""
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("localhost") and "ok=" in ln][-1]
    return {k: int(v) for k, v in (f.split("=") for f in line.split()[2:])}


def changed_tasks(p: subprocess.CompletedProcess) -> list[str]:
    out, task = [], ""
    for ln in p.stdout.splitlines():
        if ln.startswith("TASK ["):
            task = ln
        elif ln.startswith("changed:"):
            out.append(task)
    return out


@pytest.fixture(scope="module")
def rhost(calico_node_image) -> Iterator[tuple[RoleHost, Path]]:  # noqa: F811
    h = RoleHost(NET, POOL, tag="t5")
    try:
        t0 = time.monotonic()
        archive = h.shm / "calico-node.tar"
        # the archive is written while the namespace, etcd and dockerd come up
        save = subprocess.Popen(["podman", "save", "--quiet", "-o", str(archive), CALICO_NODE_IMAGE],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            h.start()
        finally:
            err = save.communicate(timeout=300)[1]
        assert save.returncode == 0, f"podman save failed: {err}"
        print(f"cnt5 set-up: {time.monotonic() - t0:.1f}s")
        yield h, archive
    finally:
        for name in ("calico-node", "calico-libnetwork"):
            if h.dockerd is not None and h.dockerd.poll() is None:
                logs = h.docker("logs", "--tail", "30", name, check=False)
                if logs.returncode == 0:
                    print(f"---- {name} log (tail) ----\n{logs.stdout}{logs.stderr}")
        print(f"---- dockerd log (tail) ----\n{h.log('dockerd')}")
        t0 = time.monotonic()
        h.close()
        print(f"cnt5 tear-down {time.monotonic() - t0:.1f}s")


@pytest.mark.root
@pytest.mark.slow
def test_cnt5_role_on_a_docker_host(rhost, capsys) -> None:
    h, archive = rhost
    timings: dict[str, float] = {}

    # -- first run: both containers made and started, the agent ready --------------------
    p, timings["first"] = run_role(h, archive)
    assert p.returncode == 0, p.stdout[-6000:] + p.stderr[-2000:]
    assert recap(p)["changed"] > 0

    node = h.inspect("calico-node")
    assert node is not None and node["State"]["Running"], node
    hc = node["HostConfig"]
    assert hc["Privileged"] is False
    assert sorted(c.upper().removeprefix("CAP_") for c in hc["CapAdd"]) == CAPS
    # systempaths=unconfined: Docker keeps it as no masked and no read-only /proc paths
    assert hc["MaskedPaths"] == [] and hc["ReadonlyPaths"] == [], hc
    assert hc["NetworkMode"] == "host"
    assert f"{h.dir / 'lib'}:/var/lib/calico" in hc["Binds"]

    plug = h.inspect("calico-libnetwork")
    assert plug is not None and plug["State"]["Running"], plug
    assert plug["Config"]["Cmd"] == ["libnetwork"]
    assert plug["Config"]["Image"] == CALICO_NODE_IMAGE
    assert plug["HostConfig"]["Privileged"] is False
    assert [c.upper().removeprefix("CAP_") for c in plug["HostConfig"]["CapAdd"]] == ["NET_ADMIN"]
    binds = plug["HostConfig"]["Binds"]
    assert f"{h.plugins}:/run/docker/plugins" in binds and f"{h.sock}:/var/run/docker.sock" in binds
    # the plugin is the image's supervisor running calico-libnetwork alone
    pids = [ln.split()[1] for ln in h.docker("top", "calico-libnetwork").stdout.splitlines()[1:]]
    cmdlines = sorted(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode() for pid in pids)
    assert len(cmdlines) == 2 and "calico-node-supervisor libnetwork" in cmdlines[1], cmdlines
    assert "bin/calico-libnetwork" in cmdlines[0], cmdlines
    assert (h.plugins / "calico.sock").exists() and (h.plugins / "calico-ipam.sock").is_symlink()
    # the startup in calico/node registered the Node with the address given
    n = h.ds.get("Node", NODE)
    assert n["spec"]["bgp"]["ipv4Address"].startswith(f"{h.net}.2/"), n

    # -- the drivers work through the plugin container -----------------------------------
    h.docker("network", "create", "--driver", "calico", "--ipam-driver", "calico-ipam",
             "--subnet", POOL, "cnt5net")
    cid = h.docker("run", "-d", "--name", "cnt5-c1", "--net", "cnt5net", "--label", "role=web",
                   IMAGE, "sleep", "3600").stdout.strip()
    info = h.inspect(cid)
    ip = info["NetworkSettings"]["Networks"]["cnt5net"]["IPAddress"]
    assert ip.startswith("198.19.125."), info["NetworkSettings"]
    endpoint = info["NetworkSettings"]["Networks"]["cnt5net"]["EndpointID"]

    def labelled() -> dict[str, Any] | None:
        docs, _ = h.ds.list("WorkloadEndpoint", "libnetwork")
        for w in docs:
            if w["spec"]["endpoint"] == endpoint and w["spec"].get("containerID") == cid:
                return w
        return None

    wep = wait_for(labelled, 30, "the endpoint labelled from the Docker API (through the mounted socket)")
    assert wep["metadata"]["labels"]["role"] == "web"
    assert wep["spec"]["node"] == NODE
    # the containerised agent programs the workload's route; the host reaches it
    wait_for(lambda: ip in h.nsrun("ip", "route", "show", ip).stdout, 30, "the agent's route to the container")
    assert wait_for(lambda: h.ping_from(None, ip), 30, "host -> container ping")
    h.docker("rm", "-f", "cnt5-c1")
    wait_for(lambda: labelled() is None, 30, "the endpoint removed")
    h.docker("network", "rm", "cnt5net")

    # -- second run: nothing changes ------------------------------------------------------
    p2, timings["second"] = run_role(h, archive)
    assert p2.returncode == 0, p2.stdout[-6000:] + p2.stderr[-2000:]
    assert recap(p2)["changed"] == 0, changed_tasks(p2)
    assert h.inspect("calico-node")["Id"] == node["Id"]
    assert h.inspect("calico-libnetwork")["Id"] == plug["Id"]

    # -- remove: both containers go ---------------------------------------------------------
    p3, timings["remove"] = run_role(h, archive, "remove")
    assert p3.returncode == 0, p3.stdout[-6000:] + p3.stderr[-2000:]
    assert h.inspect("calico-node") is None and h.inspect("calico-libnetwork") is None
    assert not (h.dir / "lib" / "nodename").exists()
    with capsys.disabled():
        print(f"\ncnt5 role runs: first {timings['first']:.1f}s, second {timings['second']:.1f}s, "
              f"remove {timings['remove']:.1f}s")
