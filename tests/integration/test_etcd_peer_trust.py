"""A client certificate cannot act as an etcd peer (calico.net.etcd's PKI, for real).

The PKI and the member's settings come from the role itself: ansible-playbook runs the
role's preflight (its facts), renders its CA helper (`calico-etcd-pki`) and runs it on
the role's certificate spec, installs the member's files as the role does
(`_etcd_member_pki_files`) and renders its `etcd.env` and `bootstrap.env`. A real etcd
then runs with exactly those settings, on loopback addresses.

- The member is healthy for the role's client certificate (`client-calico`).
- On the peer port, the member's own peer certificate is accepted; the client
  certificate and the server certificate (both from the clients' CA) are refused in
  the TLS handshake.
- A holder of the client certificate may add a member through the client API, but a
  member started with that certificate as its peer certificate cannot join: it cannot
  even read the member list from the peer port, and never starts.

With one CA for peers and clients (before the peer CA), the client certificate was
accepted on the peer port, and such a member did join.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from etcd_server import REPO, free_port, stop_process

sys.path.insert(0, str(REPO / "tests" / "ansible"))
from playbook_runner import run_playbook  # noqa: E402 (tests/ansible is not on the path here)

pytestmark = pytest.mark.slow

ROLE = REPO / "ansible_collections" / "calico" / "net" / "roles" / "etcd"
ADDRESS = "127.0.0.2"  # the member's address (the role also listens on 127.0.0.1)
ROGUE = "127.0.0.3"


def run_role_pki(tmp: Path, client_port: int, peer_port: int) -> Path:
    """The role's PKI and settings for member m1, rendered and made under `tmp`."""
    ca_dir = tmp / "ca"
    playbook = tmp / "pki.yml"
    playbook.write_text(yaml.safe_dump([{
        "hosts": "localhost", "gather_facts": False,
        "tasks": [
            {"ansible.builtin.import_role": {"name": "calico.net.etcd", "tasks_from": "preflight"}},
            {"ansible.builtin.template": {"src": str(ROLE / "templates/usr/local/sbin/calico-etcd-pki.j2"),
                                          "dest": str(tmp / "calico-etcd-pki"), "mode": "0755"}},
            {"ansible.builtin.template": {"src": str(ROLE / "templates/etc/etcd/pki-spec.j2"),
                                          "dest": str(tmp / "pki-spec")}},
            {"ansible.builtin.command": {
                "argv": [str(tmp / "calico-etcd-pki"), str(ca_dir)],
                "stdin": "{{ lookup('ansible.builtin.template', '%s') }}" % (ROLE / "templates/etc/etcd/pki-spec.j2")}},
            {"ansible.builtin.file": {"path": "{{ etcd_pki_dir }}", "state": "directory", "mode": "0750"}},
            {"ansible.builtin.copy": {"src": f"{ca_dir}/{{{{ item.src }}}}", "dest": "{{ etcd_pki_dir }}/{{ item.dest }}",
                                      "remote_src": True, "mode": "0600"},
             "loop": "{{ _etcd_member_pki_files }}"},
            {"ansible.builtin.template": {"src": str(ROLE / "templates/etc/etcd/etcd.env.j2"),
                                          "dest": str(tmp / "etcd.env")}},
            {"ansible.builtin.template": {"src": str(ROLE / "templates/etc/etcd/bootstrap.env.j2"),
                                          "dest": str(tmp / "bootstrap.env")}},
        ],
    }], sort_keys=False))
    inventory_tmp = tmp / "ansible"
    run = run_playbook(playbook, {"PATH": "/usr/bin:/bin", "HOME": str(tmp)}, inventory_tmp, diff=False, extra_vars={
        "etcd_member_name": "m1", "etcd_address": ADDRESS, "etcd_client_port": client_port,
        "etcd_peer_port": peer_port, "etcd_pki_dir": str(tmp / "pki"), "etcd_data_dir": str(tmp / "data"),
        "etcd_group": "all", "etcd_pki_cert_days": 2, "etcd_pki_renew_days": 1,
    })
    assert run.returncode == 0, run.tail()
    return ca_dir


def env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    etcd = shutil.which("etcd") or "/usr/bin/etcd"
    if not os.path.exists(etcd):
        pytest.fail("etcd is not installed (make test installs Debian's etcd-server)")
    return subprocess.Popen([etcd, *args], env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


@pytest.fixture(scope="module")
def member(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("peer-trust")
    client_port, peer_port = free_port(), free_port()
    ca_dir = run_role_pki(tmp, client_port, peer_port)
    settings = {**env_file(tmp / "etcd.env"), **env_file(tmp / "bootstrap.env")}
    env = {"PATH": "/usr/bin:/bin", **settings}
    proc = start([], env, tmp / "m1.log")
    m = {
        "tmp": tmp, "ca_dir": ca_dir, "settings": settings, "proc": proc,
        "client_url": f"https://{ADDRESS}:{client_port}", "peer_url": f"https://{ADDRESS}:{peer_port}",
        "pki": tmp / "pki",
        "client": (str(ca_dir / "issued/client-calico.crt"), str(ca_dir / "issued/client-calico.key")),
    }
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            pytest.fail(f"etcd exited: {(tmp / 'm1.log').read_text()[-3000:]}")
        try:
            r = requests.get(m["client_url"] + "/health", cert=m["client"], verify=str(ca_dir / "ca.crt"), timeout=2)
            if r.ok and r.json().get("health") == "true":
                break
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            stop_process(proc)
            pytest.fail(f"etcd did not become healthy: {(tmp / 'm1.log').read_text()[-3000:]}")
        time.sleep(0.2)
    yield m
    stop_process(proc)


def test_role_settings_give_peers_their_own_ca(member):
    s, pki = member["settings"], member["pki"]
    assert s["ETCD_PEER_CLIENT_CERT_AUTH"] == "true" and s["ETCD_CLIENT_CERT_AUTH"] == "true"
    assert s["ETCD_TRUSTED_CA_FILE"] == str(pki / "ca.crt")
    assert s["ETCD_PEER_TRUSTED_CA_FILE"] == str(pki / "peer-ca.crt")
    assert (pki / "peer-ca.crt").read_bytes() != (pki / "ca.crt").read_bytes()


def peer_get(member, cert: tuple[str, str]) -> requests.Response:
    return requests.get(member["peer_url"] + "/members", cert=cert,
                        verify=str(member["pki"] / "peer-ca.crt"), timeout=5)


def test_peer_certificate_is_accepted_on_the_peer_port(member):
    pki = member["pki"]
    r = peer_get(member, (str(pki / "peer.crt"), str(pki / "peer.key")))
    assert r.status_code == 200 and [m["name"] for m in r.json()] == ["m1"], r.text


@pytest.mark.parametrize("which", ["client-calico", "m1-server"])
def test_client_and_server_certificates_are_refused_on_the_peer_port(member, which):
    issued = member["ca_dir"] / "issued"
    with pytest.raises(requests.exceptions.SSLError):
        peer_get(member, (str(issued / f"{which}.crt"), str(issued / f"{which}.key")))


def rejected(member) -> int:
    """How many peer connections m1 has refused for a certificate not from its peer CA."""
    return sum(1 for line in (member["tmp"] / "m1.log").read_text().splitlines()
               if "rejected connection" in line and "certificate signed by unknown authority" in line)


def test_a_member_with_the_client_certificate_cannot_join(member):
    from calico_net.datastore.etcd import EtcdClient, EtcdConfig

    tmp = member["tmp"]
    rogue_peer = f"https://{ROGUE}:{free_port()}"
    rogue_client = f"http://{ROGUE}:{free_port()}"  # its own client port is beside the point
    # the client certificate may use the client API, member add included (as a learner,
    # so the one-member cluster keeps its quorum)
    ca = str(member["pki"] / "ca.crt")
    client = EtcdClient(EtcdConfig(endpoints=[member["client_url"]], ca_cert_file=ca,
                                   cert_file=member["client"][0], key_file=member["client"][1]))
    added = client.member_add([rogue_peer], learner=True)
    rogue_id = added["member"]["ID"]
    log = tmp / "rogue.log"
    rejected_before = rejected(member)
    rogue = start([
        "--name", "rogue", "--data-dir", str(tmp / "rogue-data"),
        "--listen-peer-urls", rogue_peer, "--initial-advertise-peer-urls", rogue_peer,
        "--listen-client-urls", rogue_client, "--advertise-client-urls", rogue_client,
        "--initial-cluster", f"m1={member['peer_url']},rogue={rogue_peer}",
        "--initial-cluster-state", "existing",
        "--peer-client-cert-auth", "--peer-trusted-ca-file", str(member["pki"] / "peer-ca.crt"),
        "--peer-cert-file", member["client"][0], "--peer-key-file", member["client"][1],
    ], {"PATH": "/usr/bin:/bin"}, log)
    try:
        deadline = time.monotonic() + 45
        joined = False
        while time.monotonic() < deadline and rogue.poll() is None:
            members = {m.get("ID"): m for m in client.member_list()}
            if members.get(rogue_id, {}).get("name"):  # a started member has published its name
                joined = True
                break
            time.sleep(0.5)
        assert not joined, "a member with the client certificate as its peer certificate joined the cluster"
        assert rogue.poll() is not None, "the rogue member is still running after 45 s"
        assert rogue.returncode != 0
        text = log.read_text()
        assert "cannot fetch cluster info" in text, text[-2000:]
        # m1 says why: the rogue's certificate is not from the peer CA (the rogue itself
        # sees "bad certificate" or a reset connection, depending on timing)
        assert rejected(member) > rejected_before, (tmp / "m1.log").read_text()[-2000:]
        members = {m.get("ID"): m for m in client.member_list()}
        assert not members[rogue_id].get("name"), members
    finally:
        stop_process(rogue)
        client.member_remove(rogue_id)
        client.close()
    r = requests.get(member["client_url"] + "/health", cert=member["client"], verify=ca, timeout=5)
    assert r.json().get("health") == "true"


def pki_helper(member, ca_dir: Path, *args: str) -> list[str]:
    proc = subprocess.run([str(member["tmp"] / "calico-etcd-pki"), *args, str(ca_dir)],
                          input=(member["tmp"] / "pki-spec").read_text(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return sorted(proc.stdout.split("\n")[:-1])


def test_pki_helper_gives_a_cluster_made_before_the_peer_ca_one(member, tmp_path):
    """A CA directory from before the peer CA (peer certificates signed by the clients'
    CA): the helper makes the peer CA and reissues the peer certificates only."""
    old = tmp_path / "ca"
    shutil.copytree(member["ca_dir"], old)
    for f in ("peer-ca.crt", "peer-ca.key", "peer-ca.srl"):
        (old / f).unlink(missing_ok=True)
    issued = old / "issued"
    subprocess.run(["openssl", "req", "-new", "-key", str(issued / "m1-peer.key"), "-subj", "/CN=m1-peer",
                    "-out", str(tmp_path / "peer.csr")], check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", str(tmp_path / "peer.csr"), "-CA", str(old / "ca.crt"),
                    "-CAkey", str(old / "ca.key"), "-CAcreateserial", "-days", "2", "-out", str(issued / "m1-peer.crt")],
                   check=True, capture_output=True)
    untouched = {n: (issued / n).read_bytes() for n in ("m1-server.crt", "client-calico.crt")}
    ca = (old / "ca.crt").read_bytes()

    assert pki_helper(member, old, "--check") == ["created peer-ca", "issued m1-peer"]
    assert not (old / "peer-ca.crt").exists()
    assert pki_helper(member, old) == ["created peer-ca", "issued m1-peer"]
    assert pki_helper(member, old) == []  # idempotent
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(old / "peer-ca.crt"), str(issued / "m1-peer.crt")],
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    refused = subprocess.run(["openssl", "verify", "-CAfile", str(old / "peer-ca.crt"),
                              str(issued / "client-calico.crt")], capture_output=True, text=True)
    assert refused.returncode != 0
    assert (old / "ca.crt").read_bytes() == ca
    assert {n: (issued / n).read_bytes() for n in untouched} == untouched

