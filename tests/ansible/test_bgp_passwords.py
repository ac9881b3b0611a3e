"""BGP MD5 passwords through the collection: `calico.net.bgp_peer`'s `password` writes the
secret file confd reads and the peer's secretKeyRef, and no password ever reaches
Ansible's output.

Every play runs with `--diff -vvv` (what an operator runs to see a converge) against the
session's real etcd, on localhost, with the secrets directory in the test's tmp dir; the
whole output is grepped for each password. Secrets are random per run, so a leak cannot
pass by matching nothing.
"""
from __future__ import annotations

import json
import secrets
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from playbook_runner import VENV_BIN, ansible_env

pytestmark = pytest.mark.slow


def play(tmp: Path, env: dict[str, str], tasks: list[dict], *, extra: tuple[str, ...] = ()) -> tuple[int, str]:
    tmp.mkdir(parents=True, exist_ok=True)
    inventory = tmp / "inventory.ini"
    inventory.write_text(f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    playbook = tmp / "play.yml"
    playbook.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}],
                                       sort_keys=False))
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), str(playbook),
                           "--diff", "-vvv", *extra],
                          env=ansible_env(env, tmp), cwd=tmp, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=300)
    return proc.returncode, proc.stdout


@pytest.fixture
def clean_etcd(etcd):
    client = etcd.client()
    client.delete_prefix("/calico/")
    yield etcd
    client.delete_prefix("/calico/")
    client.close()


def stored_peer(etcd, name: str) -> dict:
    client = etcd.client()
    try:
        value = client.get(f"/calico/resources/v3/projectcalico.org/bgppeers/{name}")
    finally:
        client.close()
    assert value is not None, f"BGPPeer {name} is not stored"
    return json.loads(value.value)


def peer_task(password: str | None, secrets_dir: Path, *, check: bool = False, **more) -> dict:
    args = {"name": "rr-a", "peer_ip": "198.18.212.1", "as_number": 64512,
            "password_secrets_dir": str(secrets_dir), **more}
    if password is not None:
        args["password"] = password
    return {"name": "peer rr-a", "calico.net.bgp_peer": args, "check_mode": check, "register": "r"}


def assert_task(*conditions: str) -> dict:
    return {"name": "check", "ansible.builtin.assert": {"that": list(conditions)}}


def test_bgp_peer_password_writes_the_secret_and_never_prints_it(clean_etcd, tmp_path):
    env = clean_etcd.env()
    secrets_dir = tmp_path / "bgp-secrets"
    first, second = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    secret_file = secrets_dir / "bgp-secrets" / "rr-a"

    # create: check mode reports the change and writes nothing; the real run writes
    # the file before the peer; the same again changes nothing.
    rc, out = play(tmp_path / "create", env, [
        peer_task(first, secrets_dir, check=True),
        assert_task("r.changed", "r.secret_changed"),
        {"name": "nothing written in check mode", "ansible.builtin.stat": {"path": str(secret_file)},
         "register": "st"},
        assert_task("not st.stat.exists"),
        peer_task(first, secrets_dir),
        assert_task("r.changed", "r.secret_changed",
                    "r.resource.spec.password.secretKeyRef == {'name': 'bgp-secrets', 'key': 'rr-a'}"),
        peer_task(first, secrets_dir, check=True),
        assert_task("not r.changed"),
        peer_task(first, secrets_dir),
        assert_task("not r.changed", "not r.secret_changed"),
    ])
    assert rc == 0, out
    assert first not in out
    assert "secretKeyRef" in out  # the diff was printed, with the reference only
    assert secret_file.read_text() == first
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(secret_file.parent.stat().st_mode) == 0o700
    assert stored_peer(clean_etcd, "rr-a")["spec"]["password"] == {
        "secretKeyRef": {"name": "bgp-secrets", "key": "rr-a"}}

    # rotation: only the file changes; the task reports it.
    rc, out = play(tmp_path / "rotate", env, [
        peer_task(second, secrets_dir),
        assert_task("r.changed", "r.secret_changed"),
    ])
    assert rc == 0, out
    assert first not in out and second not in out
    assert secret_file.read_text() == second

    # declaring the peer without password options keeps the stored password
    rc, out = play(tmp_path / "keep", env, [
        peer_task(None, secrets_dir, keepalive_time="20s"),
        assert_task("r.changed", "r.resource.spec.password.secretKeyRef.key == 'rr-a'"),
    ])
    assert rc == 0, out
    assert stored_peer(clean_etcd, "rr-a")["spec"]["password"]["secretKeyRef"]["key"] == "rr-a"
    assert stored_peer(clean_etcd, "rr-a")["spec"]["keepaliveTime"] == "20s"

    # password: "" removes it from the peer; the file stays (other peers may name it)
    rc, out = play(tmp_path / "remove", env, [
        peer_task("", secrets_dir),
        assert_task("r.changed", "r.resource.spec.password is not defined"),
    ])
    assert rc == 0, out
    assert "password" not in stored_peer(clean_etcd, "rr-a")["spec"]
    assert secret_file.read_text() == second


def test_a_password_set_with_resource_survives_bgp_peer(clean_etcd, tmp_path):
    rc, out = play(tmp_path, clean_etcd.env(), [
        {"name": "a peer with a password, as a manifest", "calico.net.resource": {"definition": {
            "apiVersion": "projectcalico.org/v3", "kind": "BGPPeer", "metadata": {"name": "rr-a"},
            "spec": {"peerIP": "198.18.212.1", "asNumber": 64512,
                     "password": {"secretKeyRef": {"name": "bgp-secrets", "key": "from-manifest"}}}}}},
        peer_task(None, tmp_path / "unused", check=True),
        assert_task("not r.changed"),
        peer_task(None, tmp_path / "unused", max_restart_time="90s"),
        assert_task("r.changed", "r.resource.spec.password.secretKeyRef.key == 'from-manifest'"),
    ])
    assert rc == 0, out
    assert stored_peer(clean_etcd, "rr-a")["spec"]["password"]["secretKeyRef"]["key"] == "from-manifest"
    assert not (tmp_path / "unused").exists()


@pytest.mark.parametrize("bad", ['"', "\\", "\n", "x" * 60])
def test_a_password_bird_cannot_hold_is_refused_without_showing_it(clean_etcd, tmp_path, bad):
    # a quote, a backslash, a newline, or 92 bytes (TCP-MD5 keys are at most 80)
    marker = secrets.token_hex(8)
    password = marker + bad + marker
    secrets_dir = tmp_path / "bgp-secrets"
    rc, out = play(tmp_path, clean_etcd.env(), [peer_task(password, secrets_dir),
                                                {"name": "unreached", "ansible.builtin.fail": {}}])
    assert rc != 0, out
    assert "calico/node's confd would refuse it" in out, out
    assert marker not in out
    assert not secrets_dir.exists()
    client = clean_etcd.client()
    try:
        assert client.get("/calico/resources/v3/projectcalico.org/bgppeers/rr-a") is None
    finally:
        client.close()


def test_node_mesh_password(clean_etcd, tmp_path):
    password = secrets.token_urlsafe(24)
    secrets_dir = tmp_path / "bgp-secrets"
    mesh = {"name": "mesh", "register": "r", "calico.net.bgp_configuration": {
        "node_mesh_password": password, "node_mesh_password_secrets_dir": str(secrets_dir)}}
    rc, out = play(tmp_path, clean_etcd.env(), [
        dict(mesh, check_mode=True),
        assert_task("r.changed", "r.secret_changed"),
        mesh,
        assert_task("r.changed", "r.secret_changed",
                    "r.resource.spec.nodeMeshPassword.secretKeyRef == {'name': 'bgp-secrets', 'key': 'node-mesh'}"),
        mesh,
        assert_task("not r.changed"),
        {"name": "other settings keep the password", "register": "r",
         "calico.net.bgp_configuration": {"as_number": "64512"}},
        assert_task("r.changed", "r.resource.spec.nodeMeshPassword.secretKeyRef.key == 'node-mesh'"),
    ])
    assert rc == 0, out
    assert password not in out
    assert "nodeMeshPassword" in out
    assert (secrets_dir / "bgp-secrets" / "node-mesh").read_text() == password
