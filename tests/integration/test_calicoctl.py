"""calicoctl as an operator runs it: a subprocess against the session's real etcd."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from calico_net.model.kinds import KINDS

DATA = Path(__file__).resolve().parent.parent / "data"


@pytest.fixture
def ctl(etcd, etcd_client):
    env = etcd.env()
    calicoctl = str(Path(sys.executable).parent / "calicoctl")

    def run(*args: str, stdin: str | None = None, ok: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([calicoctl, *args], input=stdin, capture_output=True, text=True, env=env, timeout=60)
        if ok and proc.returncode != 0:
            raise AssertionError(f"calicoctl {' '.join(args)} failed: {proc.stderr}")
        return proc

    return run


def keyspace(client) -> list[tuple[str, bytes, int]]:
    kvs, _ = client.get_prefix("/")
    return [(kv.key, kv.value, kv.mod_revision) for kv in kvs]


GNP = """
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: {name}
spec:
  order: 100
  selector: role == "db"
  ingress:
  - action: Allow
    protocol: TCP
    source:
      selector: role == "backend"
    destination:
      ports: [5432]
"""


def all_kinds() -> list[dict]:
    return [d for d in yaml.safe_load_all((DATA / "valid" / "all-kinds.yaml").read_text()) if d]


def test_every_kind_round_trips_through_apply_and_get(ctl, etcd_client, tmp_path):
    docs = all_kinds()
    assert {d["kind"] for d in docs} == set(KINDS), "the manifest should hold every kind"
    # calicoctl does not write ClusterInformation (the agent does), as Calico's calicoctl
    info = [d for d in docs if d["kind"] == "ClusterInformation"]
    docs = [d for d in docs if d["kind"] != "ClusterInformation"]
    (tmp_path / "info.yaml").write_text(yaml.safe_dump_all(info))
    assert "not supported on ClusterInformation" in ctl("apply", "-f", str(tmp_path / "info.yaml"),
                                                        ok=False).stderr
    (tmp_path / "kinds.yaml").write_text(yaml.safe_dump_all(docs))
    ctl("apply", "-f", str(tmp_path / "kinds.yaml"))
    for doc in docs:
        md = doc["metadata"]
        args = ["get", doc["kind"], md["name"], "-o", "yaml"]
        if md.get("namespace"):
            args += ["-n", md["namespace"]]
        got = yaml.safe_load(ctl(*args).stdout)
        assert got["spec"] == doc["spec"], doc["kind"]
        assert got["kind"] == doc["kind"] and got["apiVersion"] == "projectcalico.org/v3"
        for k, v in md.items():
            assert got["metadata"][k] == v
        assert got["metadata"]["uid"] and got["metadata"]["creationTimestamp"]
        assert int(got["metadata"]["resourceVersion"]) > 0


def test_two_replaces_from_one_read_exactly_one_wins(ctl, tmp_path):
    ctl("create", "-f", "-", stdin=GNP.format(name="db-access"))
    read = yaml.safe_load(ctl("get", "gnp", "db-access", "-o", "yaml").stdout)
    results = []
    for order in (200, 300):
        doc = json.loads(json.dumps(read))
        doc["spec"]["order"] = order
        f = tmp_path / f"r{order}.yaml"
        f.write_text(yaml.safe_dump(doc))
        results.append(ctl("replace", "-f", str(f), ok=False))
    codes = sorted(r.returncode for r in results)
    assert codes[0] == 0 and codes[1] != 0
    loser = next(r for r in results if r.returncode != 0)
    assert 'GlobalNetworkPolicy "db-access"' in loser.stderr and "modified by someone else" in loser.stderr
    final = yaml.safe_load(ctl("get", "gnp", "db-access", "-o", "yaml").stdout)
    assert final["spec"]["order"] == 200


def test_create_fails_when_it_exists_and_writes_nothing(ctl, etcd_client):
    ctl("create", "-f", "-", stdin=GNP.format(name="a"))
    before = keyspace(etcd_client)
    both = GNP.format(name="b") + "---" + GNP.format(name="a")
    proc = ctl("create", "-f", "-", stdin=both, ok=False)
    assert proc.returncode == 1
    assert 'GlobalNetworkPolicy "a" already exists' in proc.stderr
    assert keyspace(etcd_client) == before


def test_apply_multi_document_is_all_or_nothing(ctl, etcd_client):
    before = keyspace(etcd_client)
    bad = GNP.format(name="good-one") + "---" + GNP.format(name="bad-one").replace("TCP", "TCPX")
    proc = ctl("apply", "-f", "-", stdin=bad, ok=False)
    assert proc.returncode == 1
    assert 'GlobalNetworkPolicy "bad-one": spec.ingress[0].protocol: "TCPX" is not a protocol' in proc.stderr
    assert keyspace(etcd_client) == before


def test_apply_conflict_in_one_document_writes_none(ctl, etcd_client):
    ctl("apply", "-f", "-", stdin=GNP.format(name="p1"))
    stale = yaml.safe_load(ctl("get", "gnp", "p1", "-o", "yaml").stdout)
    ctl("apply", "-f", "-", stdin=GNP.format(name="p1").replace("order: 100", "order: 150"))
    before = keyspace(etcd_client)
    stale["spec"]["order"] = 999
    manifest = GNP.format(name="p2") + "---\n" + yaml.safe_dump(stale)
    proc = ctl("apply", "-f", "-", stdin=manifest, ok=False)
    assert proc.returncode == 1 and 'GlobalNetworkPolicy "p1"' in proc.stderr
    assert keyspace(etcd_client) == before


def test_get_formats_aliases_and_namespaces(ctl):
    wep = """
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {{name: {name}, namespace: {ns}, labels: {{app: web}}}}
spec:
  node: node-1
  orchestrator: cni
  workload: {name}
  endpoint: eth0
  interfaceName: cali0123456789a
  ipNetworks: [198.19.0.{ip}/32]
  profiles: [default]
"""
    ctl("apply", "-f", "-", stdin=wep.format(name="w1", ns="prod", ip=1) + "---" + wep.format(name="w2", ns="dev", ip=2))
    table = ctl("get", "workloadendpoints", "-A").stdout
    assert "NAMESPACE" in table and "w1" in table and "w2" in table
    only_prod = ctl("get", "wep", "-n", "prod", "-o", "json").stdout
    items = json.loads(only_prod)["items"]
    assert [i["metadata"]["name"] for i in items] == ["w1"]
    wide = ctl("get", "weps", "-n", "dev", "-o", "wide").stdout
    assert "PROFILES" in wide and "198.19.0.2/32" in wide
    ctl("apply", "-f", "-", stdin=GNP.format(name="x"))
    for alias in ("gnp", "globalnetworkpolicy", "globalnetworkpolicies", "GlobalNetworkPolicy"):
        assert "x" in ctl("get", alias).stdout
    unknown = ctl("get", "nosuchkind", ok=False)
    assert unknown.returncode == 1 and "unknown resource type" in unknown.stderr


def test_label_add_overwrite_remove(ctl):
    ctl("apply", "-f", "-", stdin=GNP.format(name="lab"))
    ctl("label", "gnp", "lab", "tier=db")
    refused = ctl("label", "gnp", "lab", "tier=web", ok=False)
    assert refused.returncode == 1 and "--overwrite" in refused.stderr
    ctl("label", "gnp", "lab", "tier=web", "--overwrite")
    got = yaml.safe_load(ctl("get", "gnp", "lab", "-o", "yaml").stdout)
    assert got["metadata"]["labels"] == {"tier": "web"}
    ctl("label", "gnp", "lab", "tier", "--remove")
    got = yaml.safe_load(ctl("get", "gnp", "lab", "-o", "yaml").stdout)
    assert "labels" not in got["metadata"]


def test_delete_by_name_file_and_precondition(ctl, tmp_path):
    ctl("apply", "-f", "-", stdin=GNP.format(name="d1") + "---" + GNP.format(name="d2"))
    ctl("delete", "gnp", "d1")
    missing = ctl("get", "gnp", "d1", ok=False)
    assert missing.returncode == 1 and 'GlobalNetworkPolicy "d1" not found' in missing.stderr
    assert ctl("delete", "gnp", "d1", "--skip-not-exists").returncode == 0
    stale = yaml.safe_load(ctl("get", "gnp", "d2", "-o", "yaml").stdout)
    ctl("apply", "-f", "-", stdin=GNP.format(name="d2").replace("order: 100", "order: 7"))
    f = tmp_path / "stale.yaml"
    f.write_text(yaml.safe_dump(stale))
    refused = ctl("delete", "-f", str(f), ok=False)
    assert refused.returncode == 1 and "modified by someone else" in refused.stderr
    del stale["metadata"]["resourceVersion"]
    f.write_text(yaml.safe_dump(stale))
    ctl("delete", "-f", str(f))


def test_validate_is_offline_and_reports_paths(ctl, tmp_path):
    env_less = subprocess.run(
        [str(Path(sys.executable).parent / "calicoctl"), "validate", "-f", "-"],
        input=GNP.format(name="v").replace("TCP", "TCPX"), capture_output=True, text=True,
        env={"PATH": "/usr/bin:/bin", "ETCD_ENDPOINTS": "http://127.0.0.1:1"}, timeout=60,
    )
    assert env_less.returncode == 1 and "spec.ingress[0].protocol" in env_less.stderr
    assert ctl("validate", "-f", "-", stdin=GNP.format(name="v")).stdout.startswith("1 resource(s) valid")


def test_version(ctl):
    assert "Client Version" in ctl("version").stdout


def test_unreachable_etcd_is_one_line(tmp_path):
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "calicoctl"), "get", "ippools"],
        capture_output=True, text=True, env={"ETCD_ENDPOINTS": "http://127.0.0.1:1", "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert proc.returncode == 1
    # besides the plaintext warning (an http:// endpoint), the error is one line
    lines = [line for line in proc.stderr.splitlines()
             if not line.startswith("WARNING calico_net.datastore.transport:")]
    assert len(lines) == 1 and "cannot reach etcd" in lines[0] and "Traceback" not in proc.stderr


def invalid_corpus() -> list[Path]:
    return sorted((DATA / "invalid").glob("*.yaml"))


def test_invalid_corpus_is_rejected_and_nothing_is_written(ctl, etcd, etcd_client, capsys, monkeypatch):
    """Every corpus file through calicoctl's own entry point (in this process: the
    corpus is large and start-up cost is not what is tested here; the subprocess path
    is covered above and by a sample below)."""
    from calico_net.cli.main import main

    files = invalid_corpus()
    assert len(files) >= 50
    # A pool that some corpus files overlap with.
    ctl("apply", "-f", "-", stdin="""
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: existing-pool}
spec: {cidr: 198.19.0.0/16}
""")
    monkeypatch.setenv("ETCD_ENDPOINTS", etcd.endpoints)
    before = keyspace(etcd_client)
    failures = []
    for i, f in enumerate(files):
        expect = f.read_text().splitlines()[0].removeprefix("# expect:").strip()
        if i % 20 == 0:  # a sample as real subprocesses, the way an operator runs it
            proc = ctl("apply", "-f", str(f), ok=False)
            rc, err = proc.returncode, proc.stderr
        else:
            rc = main(["apply", "-f", str(f)])
            err = capsys.readouterr().err
        if rc == 0 or expect not in err:
            failures.append(f"{f.name}: rc={rc} stderr={err.strip()!r} expected {expect!r}")
    assert not failures, "\n".join(failures)
    assert keyspace(etcd_client) == before
