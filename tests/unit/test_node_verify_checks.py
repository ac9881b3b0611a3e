"""The pure parts of `calicoctl node verify` (calico_net.verify.checks, cli.verify):
the pool-mode lookup, route keys, certificate expiry, that a check which raises is
reported as a failure while the others still run, and the table/JSON output and
exit code. The checks against real BIRD, kernel and etcd are in
tests/fv/test_node_verify.py."""
from __future__ import annotations

import datetime
import io
import ipaddress
import json
from types import SimpleNamespace

import pytest

from calico_net.verify import checks


def pool(cidr: str, **spec: str) -> dict:
    return {"metadata": {"name": cidr}, "spec": {"cidr": cidr, **spec}}


def test_pool_mode_takes_the_most_specific_pool() -> None:
    pools = [pool("198.19.0.0/16", ipipMode="Always"), pool("198.19.4.0/22"), pool("bad")]
    assert checks._pool_mode(pools, ipaddress.ip_network("198.19.0.0/26")) == "encap"
    assert checks._pool_mode(pools, ipaddress.ip_network("198.19.4.64/26")) == "plain"
    assert checks._pool_mode(pools, ipaddress.ip_network("198.18.99.0/26")) == ""


def test_route_keys() -> None:
    assert checks._norm_dst("198.19.0.7", 4) == "198.19.0.7/32"
    assert checks._norm_dst("default", 4) == "0.0.0.0/0"
    assert checks._norm_dst("198.19.0.0/26", 4) == "198.19.0.0/26"


def _cert(tmp_path, days: int) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "calico-node")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - datetime.timedelta(days=400))
            .not_valid_after(now + datetime.timedelta(days=days)).sign(key, hashes.SHA256()))
    path = tmp_path / f"cert-{days}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(path)


def _env(cert: str | None = None, ca: str | None = None) -> checks.Env:
    cfg = SimpleNamespace(cert_file=cert, ca_cert_file=ca, key_file=None)
    return checks.Env(client=None, etcd_config=cfg, settings=SimpleNamespace(node_name="n1"))


def test_certificate_expiry(tmp_path) -> None:
    [r] = checks._cert_expiry(_env())
    assert r.status == checks.SKIP
    [r] = checks._cert_expiry(_env(_cert(tmp_path, 200), _cert(tmp_path, 365)))
    assert r.status == checks.OK and r.detail.startswith(("199 day", "200 day")), r.detail
    soon = _cert(tmp_path, 10)
    [r] = checks._cert_expiry(_env(_cert(tmp_path, 200), soon))
    assert r.status == checks.FAIL and soon in r.detail and "renew" in r.fix
    [r] = checks._cert_expiry(_env(_cert(tmp_path, -3)))
    assert r.status == checks.FAIL and "expired" in r.detail


def test_a_check_that_raises_is_a_failure_and_the_rest_run(monkeypatch) -> None:
    def boom(env):
        raise RuntimeError("no route table")

    def fine(env):
        return [checks.Result("fine", checks.OK, "all good")]

    monkeypatch.setattr(checks, "CHECKS", (("boom", boom), ("fine", fine), ("later", fine)))
    out = checks.run_checks(_env(), {"later"})
    assert [(r.check, r.status) for r in out] == [("boom", "fail"), ("fine", "ok"), ("later", "skip")]
    assert "no route table" in out[0].detail and out[0].fix


@pytest.mark.parametrize("output", ["table", "json"])
def test_output_and_exit_code(monkeypatch, output: str) -> None:
    from calico_net.cli import main as cli_main

    results = [checks.Result("bgp-sessions", checks.FAIL, "Mesh_198_18_0_12: Active\x1b[2J", "start BIRD"),
               checks.Result("ipam", checks.OK, "clean")]
    monkeypatch.setattr(checks, "run_checks", lambda env, skip: results)
    monkeypatch.setenv("NODENAME", "n1")
    args = cli_main.build_parser().parse_args(["node", "verify", "-o", output])
    out = io.StringIO()
    ctx = cli_main.Context(config_file=None, out=out)
    ctx._client = object()
    assert args.func(args, ctx) == 1
    text = out.getvalue()
    if output == "json":
        doc = json.loads(text)
        assert doc["node"] == "n1" and doc["ok"] is False
        assert doc["checks"][0] == {"check": "bgp-sessions", "status": "fail",
                                    "detail": "Mesh_198_18_0_12: Active\x1b[2J", "fix": "start BIRD"}
    else:
        assert "\x1b" not in text  # escaped in the table
        assert "bgp-sessions  FAIL    Mesh_198_18_0_12" in text and "FIX bgp-sessions: start BIRD" in text
        assert text.rstrip().endswith("FAILED: 1 failed check(s) on n1")
    results[0] = checks.Result("bgp-sessions", checks.OK, "2 session(s) Established")
    assert args.func(args, cli_main.Context(config_file=None, out=io.StringIO(), _client=object())) == 0
