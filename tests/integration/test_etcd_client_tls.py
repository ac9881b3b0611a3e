"""The etcd client's TLS: one kept channel, server verification against the
configured CA with host-name checking, and no influence from the CA and proxy
environment variables that other HTTP clients or OpenSSL would honour."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from etcd_server import start_etcd, stop_etcd
from calico_net.datastore.errors import DatastoreUnavailable
from calico_net.datastore.etcd import EtcdClient, EtcdConfig


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _ca(d: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}", cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("pki-client")
    _ca(d, "ca")
    _ca(d, "other-ca")
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth"),
                      ("client", "extendedKeyUsage=clientAuth")):
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    return {"ca": str(d / "ca.pem"), "other_ca": str(d / "other-ca.pem"),
            "cert": str(d / "server.pem"), "key": str(d / "server.key"),
            "client_cert": str(d / "client.pem"), "client_key": str(d / "client.key")}


@pytest.fixture(scope="module")
def tls_etcd(pki):
    server = start_etcd(tls=pki)
    yield server
    stop_etcd(server)


def _client(endpoint: str, pki: dict[str, str], ca: str | None = None) -> EtcdClient:
    return EtcdClient(EtcdConfig(endpoints=[endpoint], ca_cert_file=ca or pki["ca"],
                                 cert_file=pki["client_cert"], key_file=pki["client_key"], timeout=5))


def test_tls_channel_is_kept(tls_etcd, pki):
    client = _client(tls_etcd.endpoints, pki)
    client.put("/calico/tlsk/0", "v")
    stubs = client._channels.stubs(0)
    for i in range(20):
        client.put(f"/calico/tlsk/{i}", str(i))
    assert client._channels.stubs(0) is stubs
    assert client.get("/calico/tlsk/19").value == b"19"
    client.close()


def test_server_signed_by_another_ca_is_refused(tls_etcd, pki):
    client = _client(tls_etcd.endpoints, pki, ca=pki["other_ca"])
    with pytest.raises(DatastoreUnavailable, match="TLS error.*certificate verify failed"):
        client.get("/calico/tlsk/0")


def test_host_name_is_checked(tls_etcd, pki):
    # the server certificate names 127.0.0.1 only
    client = _client(tls_etcd.endpoints.replace("127.0.0.1", "localhost"), pki)
    with pytest.raises(DatastoreUnavailable, match="TLS error"):
        client.get("/calico/tlsk/0")


def test_environment_does_not_replace_our_ca(tls_etcd, pki, monkeypatch):
    for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        monkeypatch.setenv(var, pki["other_ca"])
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:1")
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:1")
    client = _client(tls_etcd.endpoints, pki)
    client.put("/calico/tlsk/env", "v")
    assert client.get("/calico/tlsk/env").value == b"v"
    client.close()


def test_unreadable_client_key_is_a_tls_error(tls_etcd, pki, tmp_path):
    bad = tmp_path / "bad.key"
    bad.write_text("not a key\n")
    client = EtcdClient(EtcdConfig(endpoints=[tls_etcd.endpoints], ca_cert_file=pki["ca"],
                                   cert_file=pki["client_cert"], key_file=str(bad), timeout=5))
    with pytest.raises(DatastoreUnavailable, match="TLS error"):
        client.get("/calico/tlsk/0")


def test_range_over_tls_with_a_client_certificate(tls_etcd, pki):
    from calico_net.datastore.etcd import prefix_end

    client = _client(tls_etcd.endpoints, pki)
    client.put("/calico/tlsg/a", "1")
    kvs, _, more = client.get_range("/calico/tlsg/", prefix_end("/calico/tlsg/"))
    assert [(kv.key, kv.value) for kv in kvs] == [("/calico/tlsg/a", b"1")] and not more
    client.close()
    # a server signed by a CA we do not trust: unreachable
    wrong = _client(tls_etcd.endpoints, pki, ca=pki["other_ca"])
    with pytest.raises(DatastoreUnavailable):
        wrong.get_range("/calico/tlsg/", prefix_end("/calico/tlsg/"))
    wrong.close()


def _first_batch(client: EtcdClient, prefix: str, start: int) -> list[tuple[str, bytes]]:
    watch = client.watch_prefix(prefix, start, read_timeout=5)
    for batch in watch:
        watch.cancel()
        return [(e.kv.key, e.kv.value) for e in batch]
    return []


def test_watch_over_tls_with_a_client_certificate(tls_etcd, pki):
    # the watch has a connection of its own (etcd_h2), with the same TLS as the channels
    client = _client(tls_etcd.endpoints, pki)
    start = client.put("/calico/tlsw/a", "1")
    assert _first_batch(client, "/calico/tlsw/", start) == [("/calico/tlsw/a", b"1")]
    client.close()


@pytest.mark.parametrize("case", ["other CA", "host name", "no client certificate"])
def test_watch_refuses_what_the_channels_refuse(tls_etcd, pki, case):
    good = _client(tls_etcd.endpoints, pki)
    start = good.put("/calico/tlsr/a", "1")
    assert _first_batch(good, "/calico/tlsr/", start) == [("/calico/tlsr/a", b"1")]
    good.close()
    if case == "other CA":
        client, text = _client(tls_etcd.endpoints, pki, ca=pki["other_ca"]), "certificate verify failed"
    elif case == "host name":   # the server certificate names 127.0.0.1 only
        client, text = _client(tls_etcd.endpoints.replace("127.0.0.1", "localhost"), pki), "TLS error"
    else:                      # etcd runs with --client-cert-auth
        client = EtcdClient(EtcdConfig(endpoints=[tls_etcd.endpoints], ca_cert_file=pki["ca"], timeout=5))
        text = "TLS error.*bad certificate"
    with pytest.raises(DatastoreUnavailable, match=text) as err:
        _first_batch(client, "/calico/tlsr/", start)
    assert tls_etcd.endpoints.replace("127.0.0.1", "localhost" if case == "host name" else "127.0.0.1") \
        in str(err.value)
    client.close()
