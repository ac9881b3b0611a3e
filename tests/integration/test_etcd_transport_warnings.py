"""Real processes say it when they talk plaintext to etcd or ignore TLS files:
calicoctl, the CNI plugins (calico, calico-ipam) and the agent (calico-node), each
with one warning line naming the http:// endpoint, said once per process; an
https:// endpoint gives no such line. (The Ansible modules: tests/ansible/test_etcd_transport.py.)
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
PLAIN = "INSECURE: etcd endpoint"
IGNORED = "INSECURE: etcd TLS files"


def warnings_in(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "INSECURE:" in line]


def base_env(**extra: str) -> dict[str, str]:
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")}
    env.update(extra)
    return env


def test_calicoctl_warns_once_naming_the_endpoint(etcd, etcd_client, tmp_path):
    manifest = ("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: plain-a}\n"
                "spec: {nets: [198.18.9.0/24]}\n---\n"
                "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: plain-b}\n"
                "spec: {nets: [198.18.10.0/24]}\n")
    cfg = tmp_path / "calicoctl.cfg"  # endpoints from the environment, no TLS files anywhere
    cfg.write_text("apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nspec:\n  datastoreType: etcdv3\n")
    proc = subprocess.run([str(BIN / "calicoctl"), "--config", str(cfg), "apply", "-f", "-"],
                          input=manifest, capture_output=True, text=True, timeout=60,
                          env=base_env(ETCD_ENDPOINTS=etcd.endpoints))
    assert proc.returncode == 0, proc.stderr
    lines = warnings_in(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert f"{PLAIN} {etcd.endpoints} is plaintext" in lines[0]
    assert etcd_client.get("/calico/resources/v3/projectcalico.org/globalnetworksets/plain-b") is not None


def test_calicoctl_says_the_tls_files_are_ignored(etcd, etcd_client, tmp_path):
    for name in ("ca.pem", "client.pem", "client-key.pem"):
        (tmp_path / name).write_text("unused\n")
    cfg = tmp_path / "calicoctl.cfg"
    cfg.write_text(
        "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nspec:\n  datastoreType: etcdv3\n"
        f"  etcdEndpoints: {etcd.endpoints}\n  etcdCACertFile: {tmp_path}/ca.pem\n"
        f"  etcdCertFile: {tmp_path}/client.pem\n  etcdKeyFile: {tmp_path}/client-key.pem\n")
    proc = subprocess.run([str(BIN / "calicoctl"), "--config", str(cfg), "get", "globalnetworksets"],
                          capture_output=True, text=True, timeout=60, env=base_env())
    assert proc.returncode == 0, proc.stderr
    lines = warnings_in(proc.stderr)
    assert len(lines) == 2, proc.stderr
    assert f"{PLAIN} {etcd.endpoints} is plaintext" in lines[0]
    assert (f"{IGNORED} (CA {tmp_path}/ca.pem, certificate {tmp_path}/client.pem, "
            f"key {tmp_path}/client-key.pem) are IGNORED for the http:// endpoint {etcd.endpoints}") in lines[1]


def test_calicoctl_over_https_has_no_warning():
    proc = subprocess.run([str(BIN / "calicoctl"), "get", "ippools"], capture_output=True, text=True,
                          timeout=60, env=base_env(ETCD_ENDPOINTS="https://127.0.0.1:1"))
    assert proc.returncode == 1 and "cannot reach etcd" in proc.stderr
    assert warnings_in(proc.stderr) == [], proc.stderr


def cni(plugin: str, conf: dict, etcd_env: dict[str, str]) -> subprocess.CompletedProcess:
    env = base_env(CNI_COMMAND="DEL", CNI_CONTAINERID="transport-warning-test", CNI_IFNAME="eth0",
                   CNI_PATH=str(BIN), **etcd_env)
    return subprocess.run([str(BIN / plugin)], input=json.dumps(conf), capture_output=True, text=True,
                          timeout=60, env=env)


def test_cni_plugins_warn_naming_the_endpoint(etcd, etcd_client, tmp_path):
    conf = {"cniVersion": "1.0.0", "name": "calico", "type": "calico", "nodename": "transport-node",
            "etcd_endpoints": etcd.endpoints, "ipam": {"type": "calico-ipam"}}
    for plugin in ("calico-ipam", "calico"):
        proc = cni(plugin, conf, {})
        assert proc.returncode == 0, (plugin, proc.stdout, proc.stderr)
        lines = warnings_in(proc.stderr)
        # calico runs calico-ipam for DEL: each process says it once
        assert 1 <= len(lines) <= (1 if plugin == "calico-ipam" else 2), proc.stderr
        assert all(f"{PLAIN} {etcd.endpoints} is plaintext" in line for line in lines)
    # TLS files named in the network config with an http:// endpoint
    ca = tmp_path / "ca.pem"
    ca.write_text("unused\n")
    proc = cni("calico-ipam", dict(conf, etcd_ca_cert_file=str(ca)), {})
    assert proc.returncode == 0, proc.stderr
    assert any(f"{IGNORED} (CA {ca}) are IGNORED" in line for line in warnings_in(proc.stderr)), proc.stderr


def test_agent_warns_naming_the_endpoint(tmp_path):
    """The agent says it as it builds its client; it then stops before touching the host:
    its health port is taken (by this test), which it reports and exits 2 on."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        env = base_env(ETCD_ENDPOINTS="http://127.0.0.1:1", NODENAME="transport-node",
                       FELIX_HEALTHENABLED="true", FELIX_HEALTHHOST="127.0.0.1", FELIX_HEALTHPORT=str(port),
                       FELIX_PROMETHEUSMETRICSENABLED="false")
        proc = subprocess.run([sys.executable, "-m", "calico_net.agent"], capture_output=True, text=True,
                              timeout=60, env=env, cwd=tmp_path)
    assert proc.returncode == 2 and "cannot listen for health/metrics" in proc.stderr, proc.stderr
    lines = warnings_in(proc.stderr)
    assert len(lines) == 1 and f"{PLAIN} http://127.0.0.1:1 is plaintext" in lines[0], proc.stderr
