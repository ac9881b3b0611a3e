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
import os
import secrets
import stat
from pathlib import Path

import pytest

from playbook_runner import run_tasks as play

pytestmark = pytest.mark.slow


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


def test_a_password_bird_cannot_hold_is_refused_without_showing_it(clean_etcd, tmp_path):
    # a quote, a backslash, a newline, 92 bytes (TCP-MD5 keys are at most 80); then the
    # same task with a good password passes, so the refusals were the passwords'.
    marker = secrets.token_hex(8)
    secrets_dir = tmp_path / "bgp-secrets"
    tasks = []
    for bad in ('"', "\\", "\n", "x" * 60):
        tasks += [dict(peer_task(marker + bad + marker, secrets_dir), ignore_errors=True),
                  assert_task("r.failed", "'calico/node\\'s confd would refuse it' in r.msg",
                              "not r.changed")]
    rc, out = play(tmp_path, clean_etcd.env(), tasks)
    assert rc == 0, out
    assert marker not in out
    assert not secrets_dir.exists()
    client = clean_etcd.client()
    try:
        assert client.get("/calico/resources/v3/projectcalico.org/bgppeers/rr-a") is None
    finally:
        client.close()
    rc, out = play(tmp_path / "good", clean_etcd.env(), [peer_task(marker * 2, secrets_dir)])
    assert rc == 0, out


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


# --- the roles -------------------------------------------------------------------------


def bird_play(tmp: Path, bird_vars: dict, *, check: bool = False) -> tuple[int, str]:
    """The bird role's argument validation, preflight and bird.conf (tags; apt and the
    service are not run here), with the config file in `tmp`. `_bird_started` stands for
    the role's own service task, which is skipped: a fresh start needs no reload."""
    return play(tmp, dict(os.environ), [], extra=("--tags", "bird_preflight,bird_configure",
                                                  *(("--check",) if check else ())),
                roles=[{"role": "calico.net.bird", "bird_config_file": str(tmp / "bird.conf"),
                        "bird_address": "198.18.212.1", **bird_vars}],
                vars={"_bird_started": {"changed": True}})


@pytest.mark.root
def test_bird_role_diff_never_prints_the_passwords(tmp_path):
    password, neighbour_password = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    bird_vars = {"bird_password": password, "bird_neighbors": [
        {"name": "node-a", "address": "198.18.212.2", "rr_client": True},
        {"name": "node-b", "address": "198.18.212.3", "rr_client": True, "password": neighbour_password}]}
    for run, check in (("check", True), ("real", False)):
        rc, out = bird_play(tmp_path / run, bird_vars, check=check)
        assert rc == 0, out
        assert "Write bird.conf" in out and "changed: [localhost]" in out, out
        assert password not in out and neighbour_password not in out
    conf = (tmp_path / "real" / "bird.conf").read_text()
    assert f'password "{password}";' in conf
    assert f'password "{neighbour_password}";' in conf


@pytest.mark.root
@pytest.mark.parametrize("where,bad", [("bird_password", '"'), ("neighbour", "\\"), ("bird_password", "x" * 60)])
def test_bird_role_refuses_a_password_bird_conf_cannot_hold(tmp_path, where, bad):
    marker = secrets.token_hex(8)
    password = marker + bad + marker
    bird_vars = ({"bird_password": password, "bird_neighbors": [{"name": "node-a", "address": "198.18.212.2"}]}
                 if where == "bird_password" else
                 {"bird_neighbors": [{"name": "node-a", "address": "198.18.212.2", "password": password}]})
    rc, out = bird_play(tmp_path, bird_vars)
    assert rc != 0, out
    assert "Check the MD5 passwords" in out and "BIRD 2 strings cannot escape them" in out, out
    assert ("bird_password" if where == "bird_password" else "neighbour node-a") in out
    assert marker not in out
    assert not (tmp_path / "bird.conf").exists()
    # (test_bird_role_diff_never_prints_the_passwords passes the same play with good ones)


def calico_node_play(tmp: Path, role_vars: dict, *, check: bool = False) -> tuple[int, str]:
    """The calico_node role's BGP secrets step only (and its always-tagged checks)."""
    return play(tmp, dict(os.environ), [], extra=("--tags", "calico_node_bgp_secrets",
                                                  *(("--check",) if check else ())),
                roles=[{"role": "calico.net.calico_node", "calico_node_etcd_endpoints": ["https://198.18.212.9:2379"],
                        "calico_node_etcd_pki_ca_host": "localhost",
                        "calico_node_bgp_secrets_dir": str(tmp / "bgp-secrets"), **role_vars}])


@pytest.mark.root
def test_calico_node_role_writes_the_secrets_confd_reads(tmp_path):
    from calico_net.agent.confd.settings import SecretReader

    cluster, tor = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    role_vars = {"calico_node_bgp_password": cluster,
                 "calico_node_bgp_secrets": [{"name": "tor", "key": "r1", "password": tor}]}
    rc, out = calico_node_play(tmp_path / "check", role_vars, check=True)
    assert rc == 0, out
    assert not (tmp_path / "check" / "bgp-secrets").exists()
    for run in ("first", "again"):
        rc, out = calico_node_play(tmp_path / "real", role_vars)
        assert rc == 0, out
        assert cluster not in out and tor not in out
    assert "changed=0" in out  # the second run
    secrets_dir = tmp_path / "real" / "bgp-secrets"
    assert stat.S_IMODE(secrets_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((secrets_dir / "tor" / "r1").stat().st_mode) == 0o600
    # what confd itself reads from that directory
    reader = SecretReader(str(secrets_dir), env={})
    assert reader({"name": "bgp-secrets", "key": "calico-bgp-password"}) == cluster
    assert reader({"name": "tor", "key": "r1"}) == tor

    rc, out = calico_node_play(tmp_path / "bad", {"calico_node_bgp_secrets": [
        {"key": "r2", "password": tor + '"'}]})
    assert rc != 0, out
    assert "BGP secrets bgp-secrets/r2" in out, out
    assert tor not in out
