"""Plaintext etcd needs an explicit, insecure-named opt-in in both roles, and the
modules warn when they talk plaintext.

The roles run for real through ansible-playbook on localhost, but only their
always-tagged tasks (`--tags always`: argument validation and the transport checks)
and in check mode, so nothing on this machine is installed, written or started
whatever the outcome. Each refusal is paired with the same play plus the opt-in
passing, so a refusal for any other reason fails the test.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from playbook_runner import VENV_BIN, ansible_env, run_playbook

pytestmark = pytest.mark.slow


def role_play(tmp: Path, role: str, role_vars: dict) -> tuple[int, str]:
    """Apply `role` to localhost with `role_vars`, always-tagged tasks only, in check mode."""
    import subprocess

    tmp.mkdir(parents=True, exist_ok=True)
    inventory = tmp / "inventory.ini"
    inventory.write_text(
        f"[etcd]\nlocalhost ansible_connection=local ansible_python_interpreter={sys.executable}\n"
        "[calico_nodes]\nlocalhost\n")
    playbook = tmp / "play.yml"
    playbook.write_text(yaml.safe_dump([{
        "hosts": "localhost", "gather_facts": False,
        # etcd_address's default needs gathered facts; the play gathers none
        "roles": [{"role": f"calico.net.{role}", **({"etcd_address": "127.0.0.1"} if role == "etcd" else {}),
                   **role_vars}],
    }], sort_keys=False))
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), str(playbook), "--check", "--tags", "always"],
        env=ansible_env({"PATH": "/usr/bin:/bin", "HOME": str(tmp)}, tmp), cwd=tmp,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    return proc.returncode, proc.stdout


def test_etcd_role_refuses_plaintext_without_the_insecure_opt_in(tmp_path):
    rc, out = role_play(tmp_path / "refused", "etcd", {"etcd_tls": False})
    assert rc != 0, out
    assert "Refuse plaintext etcd unless the insecure opt-in is set" in out
    assert "etcd_allow_insecure_plaintext=true" in out

    rc, out = role_play(tmp_path / "opted-in", "etcd", {"etcd_tls": False, "etcd_allow_insecure_plaintext": True})
    assert rc == 0, out
    assert "INSECURE: etcd_tls=false" in out


def test_etcd_role_with_tls_passes_the_check(tmp_path):
    rc, out = role_play(tmp_path, "etcd", {})
    assert rc == 0, out
    assert "INSECURE" not in out


def test_etcd_role_refuses_tls_settings_in_extra_env(tmp_path):
    rc, out = role_play(tmp_path, "etcd", {"etcd_extra_env": {"ETCD_PEER_TRUSTED_CA_FILE": "/etc/etcd/pki/ca.crt"}})
    assert rc != 0 and "etcd_extra_env may not set the TLS settings" in out, out
    assert "ETCD_PEER_TRUSTED_CA_FILE" in out


def test_calico_node_role_refuses_plaintext_without_the_insecure_opt_in(tmp_path):
    endpoints = ["http://198.18.0.11:2379"]
    rc, out = role_play(tmp_path / "refused", "calico_node",
                        {"calico_node_etcd_tls": False, "calico_node_etcd_endpoints": endpoints})
    assert rc != 0, out
    assert "calico_node_etcd_allow_insecure_plaintext=true" in out

    rc, out = role_play(tmp_path / "opted-in", "calico_node",
                        {"calico_node_etcd_tls": False, "calico_node_etcd_allow_insecure_plaintext": True,
                         "calico_node_etcd_endpoints": endpoints})
    assert rc == 0, out
    assert "INSECURE: calico_node_etcd_tls=false" in out and "http://198.18.0.11:2379" in out


def test_calico_node_role_refuses_tls_files_with_an_http_endpoint(tmp_path):
    rc, out = role_play(tmp_path / "refused", "calico_node",
                        {"calico_node_etcd_endpoints": ["https://198.18.0.11:2379", "HTTP://198.18.0.12:2379"]})
    assert rc != 0, out
    assert "TLS to etcd needs https:// endpoints" in out and "HTTP://198.18.0.12:2379" in out

    rc, out = role_play(tmp_path / "https", "calico_node",
                        {"calico_node_etcd_endpoints": ["https://198.18.0.11:2379", "https://198.18.0.12:2379"]})
    assert rc == 0, out


def test_modules_warn_when_they_talk_plaintext(etcd, tmp_path):
    """A module against the (plaintext) test etcd: its result carries the warning."""
    ca = tmp_path / "ca.pem"
    ca.write_text("unused\n")
    playbook = tmp_path / "module.yml"
    playbook.write_text(yaml.safe_dump([{
        "hosts": "localhost", "gather_facts": False,
        "tasks": [
            {"name": "plaintext", "calico.net.resource_info": {"kind": "IPPool", "etcd_endpoints": [etcd.endpoints]},
             "register": "plain"},
            {"name": "plaintext with a CA file", "calico.net.resource_info": {
                "kind": "IPPool", "etcd_endpoints": [etcd.endpoints], "etcd_ca_cert_file": str(ca)},
             "register": "ignored"},
            {"ansible.builtin.copy": {"content": "{{ {'plain': plain.warnings | default([]), "
                                                 "'ignored': ignored.warnings | default([])} | to_json }}",
                                      "dest": str(tmp_path / "warnings.json")}},
        ],
    }], sort_keys=False))
    run = run_playbook(playbook, etcd.env(), tmp_path / "run", diff=False)
    assert run.returncode == 0, run.tail()
    got = json.loads((tmp_path / "warnings.json").read_text())
    plain = [w for w in got["plain"] if "INSECURE" in w]
    assert len(plain) == 1 and f"etcd endpoint {etcd.endpoints} is plaintext" in plain[0], got
    ignored = [w for w in got["ignored"] if "INSECURE" in w]
    assert len(ignored) == 2 and f"(CA {ca}) are IGNORED" in ignored[1], got
