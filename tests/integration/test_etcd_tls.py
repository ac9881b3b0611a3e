"""TLS to etcd: client certificates via ETCD_* variables and calicoctl.cfg; plaintext
and certificate-less clients are refused."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from etcd_server import start_etcd, stop_etcd
from calico_net.datastore.errors import DatastoreUnavailable
from calico_net.datastore.etcd import EtcdClient, EtcdConfig


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=calico-test-ca", cwd=d)
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth"),
                      ("client", "extendedKeyUsage=clientAuth")):
        (d / f"{name}.ext").write_text(ext + "\n")
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    return {"ca": str(d / "ca.pem"), "cert": str(d / "server.pem"), "key": str(d / "server.key"),
            "client_cert": str(d / "client.pem"), "client_key": str(d / "client.key")}


@pytest.fixture(scope="module")
def tls_etcd(pki):
    server = start_etcd(tls=pki)
    yield server
    stop_etcd(server)


def test_client_certificate_works(tls_etcd, pki):
    client = EtcdClient(EtcdConfig(endpoints=[tls_etcd.endpoints], ca_cert_file=pki["ca"],
                                   cert_file=pki["client_cert"], key_file=pki["client_key"]))
    client.put("/calico/tls/k", "v")
    assert client.get("/calico/tls/k").value == b"v"


def test_without_client_certificate_is_refused(tls_etcd, pki):
    client = EtcdClient(EtcdConfig(endpoints=[tls_etcd.endpoints], ca_cert_file=pki["ca"], timeout=3))
    with pytest.raises(DatastoreUnavailable, match="TLS"):
        client.get("/calico/tls/k")


def test_plaintext_is_refused(tls_etcd):
    client = EtcdClient(EtcdConfig(endpoints=[tls_etcd.endpoints.replace("https", "http")], timeout=3))
    with pytest.raises(DatastoreUnavailable):
        client.get("/calico/tls/k")


def test_calicoctl_reads_tls_settings_from_config_file(tls_etcd, pki, tmp_path):
    cfg = tmp_path / "calicoctl.cfg"
    cfg.write_text(
        "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nspec:\n  datastoreType: etcdv3\n"
        f"  etcdEndpoints: {tls_etcd.endpoints}\n  etcdCACertFile: {pki['ca']}\n"
        f"  etcdCertFile: {pki['client_cert']}\n  etcdKeyFile: {pki['client_key']}\n"
    )
    calicoctl = str(Path(sys.executable).parent / "calicoctl")
    manifest = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: tls-set}\nspec: {nets: [198.18.9.0/24]}\n"
    env = {"PATH": "/usr/bin:/bin"}
    proc = subprocess.run([calicoctl, "--config", str(cfg), "apply", "-f", "-"], input=manifest,
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([calicoctl, "--config", str(cfg), "get", "globalnetworksets"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert "tls-set" in proc.stdout
