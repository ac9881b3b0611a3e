"""BGP with MD5 between a calico node and the `calico.net.bird` role's route reflector,
both ends set up by the collection, and a password rotation.

Two network namespaces joined by a veth pair, 198.18.213.1/30 (the reflector) and
198.18.213.2/30 (the node). One ansible-playbook run (`--diff -vvv`, grepped for the
password) renders the reflector's bird.conf with the `bird` role (bird_password) and
declares, in the session's real etcd, the node, the BGP configuration and a
`calico.net.bgp_peer` with `password` - which writes the secret file. The reflector's
BIRD runs in its namespace; on the node side the real confd process (root namespace,
where etcd listens) renders bird.cfg with the password it reads from that secret file,
and the node's BIRD runs with it in the node namespace. The session must reach
Established on both ends (TCP-MD5 signed: a kernel without the matching key drops
every segment).

Then the node's password is rotated with the module alone: the session must go down
and stay down (the proof that MD5 is enforced); rotating the reflector's with the role
brings it back, and the time from the second rotation to Established is printed.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from playbook_runner import run_tasks as play

pytestmark = [pytest.mark.root, pytest.mark.slow]

RR_IP, NODE_IP = "198.18.213.1", "198.18.213.2"
NODE = "md5-node"


def sh(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def established(sock: Path) -> bool:
    from calico_net.agent.confd.birdctl import BirdCtlError, bgp_sessions

    try:
        return any(s.info.startswith("Established") for s in bgp_sessions(str(sock), timeout=5))
    except (BirdCtlError, OSError):
        return False


def wait_for(cond, timeout: float, what: str, logs=lambda: "") -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if cond():
            return time.monotonic() - started
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s: {what}\n{logs()}")


def stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def netns_pair():
    tag = f"{os.getpid() % 100000}"
    rr_ns, node_ns = f"cnm-md5rr-{tag}", f"cnm-md5n-{tag}"
    for ns in (rr_ns, node_ns):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    try:
        for ns in (rr_ns, node_ns):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", f"cnm5{tag}a", "netns", rr_ns, "type", "veth",
           "peer", "name", f"cnm5{tag}b", "netns", node_ns)
        for ns, dev, ip in ((rr_ns, f"cnm5{tag}a", RR_IP), (node_ns, f"cnm5{tag}b", NODE_IP)):
            sh("ip", "-n", ns, "addr", "add", f"{ip}/30", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
        yield rr_ns, node_ns
    finally:
        for ns in (rr_ns, node_ns):
            for pid in subprocess.run(["ip", "netns", "pids", ns], capture_output=True,
                                      text=True).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture
def clean_etcd(etcd):
    client = etcd.client()
    client.delete_prefix("/calico/")
    yield etcd
    client.delete_prefix("/calico/")
    client.close()


def converge(tmp: Path, env: dict[str, str], password: str, secrets_dir: Path, *,
             reflector: bool = True, cluster: bool = True) -> str:
    """The collection's two ends of the session: the bird role's bird.conf and the
    datastore side (Node, BGPConfiguration, BGPPeer with the password)."""
    tasks = []
    if reflector:
        tasks.append({"name": "reflector", "ansible.builtin.include_role": {
            "name": "calico.net.bird", "tasks_from": "configure"},
            "vars": {"bird_config_file": str(tmp.parent / "rr-bird.conf"), "bird_address": RR_IP,
                     "bird_password": password,
                     "bird_neighbors": [{"name": NODE, "address": NODE_IP, "rr_client": True}]}})
    if cluster:
        tasks += [
            {"name": "node", "calico.net.resource": {"definition": {
                "apiVersion": "projectcalico.org/v3", "kind": "Node", "metadata": {"name": NODE},
                "spec": {"bgp": {"ipv4Address": f"{NODE_IP}/30"}}}}},
            {"name": "bgp", "calico.net.bgp_configuration": {
                "as_number": "64512", "node_to_node_mesh_enabled": False}},
        ]
    tasks.append({"name": "peer", "calico.net.bgp_peer": {
        "name": "to-reflector", "peer_ip": RR_IP, "as_number": 64512, "password": password,
        "password_secrets_dir": str(secrets_dir)}})
    # _bird_started: the role's service task is not run here, BIRD is this test's process
    # (a fresh start needs no reload; the test reconfigures it itself).
    rc, out = play(tmp, env, tasks, vars={"_bird_started": {"changed": True}})
    assert rc == 0, out
    assert password not in out
    return out


def test_md5_session_between_a_calico_node_and_the_bird_role(netns_pair, clean_etcd, tmp_path):
    rr_ns, node_ns = netns_pair
    bird = shutil.which("bird") or "/usr/sbin/bird"
    secrets_dir = tmp_path / "bgp-secrets"
    first, second = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    env = clean_etcd.env()
    converge(tmp_path / "converge", env, first, secrets_dir)

    rr_sock, node_sock = tmp_path / "rr.ctl", tmp_path / "node.ctl"
    node_cfg = tmp_path / "node-bird.cfg"
    confd_log = open(tmp_path / "confd.log", "w")
    confd_env = dict(env, NODENAME=NODE, CALICO_BIRD_CONFIG=str(node_cfg), CALICO_BIRD_SOCKET=str(node_sock),
                     CALICO_BGP_SECRETS_DIR=str(secrets_dir), CALICO_CONFD_HEALTHENABLED="false",
                     CALICO_CONFD_STATUS_FILE="", CALICO_CONFD_REFRESH_INTERVAL="1")
    procs: list[subprocess.Popen] = []

    def logs() -> str:
        out = []
        for name in ("confd.log", "rr-bird.log", "node-bird.log"):
            p = tmp_path / name
            out.append(f"--- {name}\n" + ("\n".join(p.read_text(errors="replace").splitlines()[-30:])
                                          if p.exists() else ""))
        return "\n".join(out)

    try:
        procs.append(subprocess.Popen(["ip", "netns", "exec", rr_ns, bird, "-f", "-c",
                                       str(tmp_path / "rr-bird.conf"), "-s", str(rr_sock)],
                                      stdout=open(tmp_path / "rr-bird.log", "w"), stderr=subprocess.STDOUT))
        procs.append(subprocess.Popen([sys.executable, "-m", "calico_net.agent.confd"], env=confd_env,
                                      stdout=confd_log, stderr=subprocess.STDOUT))
        wait_for(lambda: node_cfg.exists() and f'"{first}"' in node_cfg.read_text(), 30,
                 "confd renders bird.cfg with the password from the secret file", logs)
        procs.append(subprocess.Popen(["ip", "netns", "exec", node_ns, bird, "-f", "-c", str(node_cfg),
                                       "-s", str(node_sock)],
                                      stdout=open(tmp_path / "node-bird.log", "w"), stderr=subprocess.STDOUT))
        took = wait_for(lambda: established(rr_sock) and established(node_sock), 60,
                        "MD5 session Established on both ends", logs)
        print(f"MD5 session Established {took:.1f}s after the node's BIRD started")

        # The node's password alone changes: the session must drop and stay down.
        converge(tmp_path / "rotate-node", env, second, secrets_dir, reflector=False, cluster=False)
        wait_for(lambda: not established(node_sock), 30, "session down with mismatched passwords", logs)
        time.sleep(8)  # connect retry is 5s on both ends: a retry must not succeed either
        assert not established(node_sock) and not established(rr_sock), logs()

        # The reflector's too (the role, then `birdc configure` as its handler does).
        started = time.monotonic()
        converge(tmp_path / "rotate-rr", env, second, secrets_dir, cluster=False)
        sh("birdc", "-s", str(rr_sock), "configure")
        wait_for(lambda: established(rr_sock) and established(node_sock), 60,
                 "Established again with the rotated password on both ends", logs)
        print(f"rotation: Established {time.monotonic() - started:.1f}s after the reflector's converge began")
        assert f'"{second}"' in node_cfg.read_text()
    finally:
        for proc in reversed(procs):
            stop(proc)
        confd_log.close()
