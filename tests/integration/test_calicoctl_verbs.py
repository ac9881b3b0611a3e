"""calicoctl's verbs beyond create/apply/get: patch, get -f, custom columns, version,
ipam split and release --from-report, datastore migrate. Driven as an operator runs
them (a subprocess against the session's real etcd); every case checks what etcd
holds afterwards, and every refusal that nothing was written."""
from __future__ import annotations

import json

import orjson
import pytest
import yaml

from tests.integration.test_calicoctl import ctl, keyspace  # noqa: F401 - fixture

POOL = """
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: pool-a
spec:
  cidr: 198.19.0.0/16
  blockSize: 26
  natOutgoing: true
"""
POOL_KEY = "/calico/resources/v3/projectcalico.org/ippools/pool-a"


def errors(proc) -> list[str]:
    """calicoctl's own error lines (the transport may log a plaintext warning first)."""
    return [line for line in proc.stderr.splitlines() if line.startswith("calicoctl:")]


def stored(client, key: str) -> dict:
    kv = client.get(key)
    assert kv is not None, key
    return orjson.loads(kv.value)


# --- patch ---------------------------------------------------------------------------


def test_patch_merges_into_the_stored_resource(ctl, etcd_client):
    ctl("apply", "-f", "-", stdin=POOL)
    before = stored(etcd_client, POOL_KEY)
    out = ctl("patch", "ippool", "pool-a", "-p", '{"spec":{"disabled":true,"natOutgoing":null}}').stdout
    assert "Successfully patched 1 'IPPool' resource" in out
    after = stored(etcd_client, POOL_KEY)
    assert after["spec"]["disabled"] is True
    assert "natOutgoing" not in after["spec"] or after["spec"]["natOutgoing"] is False
    assert after["spec"]["cidr"] == "198.19.0.0/16" and after["spec"]["blockSize"] == 26
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    # YAML patches work too, and a namespaced kind takes -n
    ctl("apply", "-f", "-", stdin="""
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: np1, namespace: ns1}
spec: {selector: all(), order: 10}
""")
    ctl("patch", "networkpolicy", "np1", "-n", "ns1", "-p", "spec:\n  order: 20\n  types: [Ingress]\n")
    np = stored(etcd_client, "/calico/resources/v3/projectcalico.org/networkpolicies/ns1/np1")
    assert np["spec"]["order"] == 20 and np["spec"]["types"] == ["Ingress"]


@pytest.mark.parametrize("patch, expect", [
    ('{"spec":{"blockSize":"big"}}', "spec.blockSize"),
    ('{"metadata":{"name":"other"}}', "metadata.name"),
    ('{"kind":"GlobalNetworkPolicy"}', "kind"),
    ('{"spec":{"nosuchfield":1}}', "spec.nosuchfield"),
    ('[1, 2]', "must be a JSON/YAML mapping"),
    ('{"spec": {', "not valid JSON or YAML"),
])
def test_patch_refuses_invalid_results_and_writes_nothing(ctl, etcd_client, patch, expect):
    ctl("apply", "-f", "-", stdin=POOL)
    before = keyspace(etcd_client)
    proc = ctl("patch", "ippool", "pool-a", "-p", patch, ok=False)
    assert proc.returncode != 0
    assert expect in proc.stderr
    assert len(errors(proc)) == 1
    assert keyspace(etcd_client) == before


def test_patch_of_a_missing_resource_fails_and_writes_nothing(ctl, etcd_client):
    before = keyspace(etcd_client)
    proc = ctl("patch", "ippool", "nope", "-p", '{"spec":{"disabled":true}}', ok=False)
    assert proc.returncode != 0 and "not found" in proc.stderr
    proc = ctl("patch", "ippool", "nope", "--type", "json", "-p", "[]", ok=False)
    assert proc.returncode != 0 and "not supported" in proc.stderr
    assert keyspace(etcd_client) == before


def test_patch_loses_to_a_concurrent_change(etcd_client, datastore):
    from calico_net.cli.patch import patched
    from calico_net.datastore.errors import ResourceConflict

    datastore.apply(yaml.safe_load(POOL))
    read = datastore.get("IPPool", "pool-a")
    other = datastore.get("IPPool", "pool-a")
    other["spec"]["natOutgoing"] = False
    datastore.replace(other)
    between = keyspace(etcd_client)
    with pytest.raises(ResourceConflict):
        datastore.replace(patched(read, {"spec": {"disabled": True}}))
    assert keyspace(etcd_client) == between


# --- get -f, custom columns, templates ------------------------------------------------


def test_get_f_shows_the_resources_a_manifest_names(ctl, tmp_path):
    ctl("apply", "-f", "-", stdin=POOL)
    ctl("apply", "-f", "-", stdin=POOL.replace("pool-a", "pool-b").replace("198.19.", "198.18."))
    manifest = tmp_path / "m.yaml"
    manifest.write_text(POOL)
    doc = yaml.safe_load(ctl("get", "-f", str(manifest), "-o", "yaml").stdout)
    assert doc["kind"] == "IPPool" and doc["metadata"]["name"] == "pool-a"
    table = ctl("get", "-f", str(manifest)).stdout.splitlines()
    assert table[0].split() == ["NAME", "CIDR", "SELECTOR"]
    assert table[1].split()[:2] == ["pool-a", "198.19.0.0/16"] and len(table) == 2
    both = tmp_path / "both.yaml"
    both.write_text(POOL + "---" + POOL.replace("pool-a", "pool-b").replace("198.19.", "198.18."))
    lst = json.loads(ctl("get", "-f", str(both), "-o", "json").stdout)
    assert [i["metadata"]["name"] for i in lst["items"]] == ["pool-a", "pool-b"]
    missing = tmp_path / "missing.yaml"
    missing.write_text(POOL.replace("pool-a", "pool-z"))
    proc = ctl("get", "-f", str(missing), ok=False)
    assert proc.returncode != 0 and "not found" in proc.stderr
    proc = ctl("get", "-f", str(manifest), "-l", "a == 'b'", ok=False)
    assert proc.returncode != 0 and "not both" in proc.stderr


def test_custom_columns(ctl):
    ctl("apply", "-f", "-", stdin=POOL)
    lines = ctl("get", "ippools", "-o", "custom-columns=NAME,CIDR,NAT").stdout.splitlines()
    assert lines[0].split() == ["NAME", "CIDR", "NAT"]
    assert lines[1].split() == ["pool-a", "198.19.0.0/16", "true"]
    lines = ctl("get", "ippools", "-o",
                "custom-columns=POOL:.metadata.name,BS:{.spec.blockSize},X:.spec.nothing").stdout.splitlines()
    assert lines[0].split() == ["POOL", "BS", "X"]
    assert lines[1].split() == ["pool-a", "26", "<none>"]
    for bad, why in [("custom-columns=", "at least one column"), ("custom-columns=BOGUS", 'no column "BOGUS"'),
                     ("custom-columns=A:.spec.x[0]", "simple paths"),
                     ("go-template={{.metadata.name}}", "not supported by calico.net yet"),
                     ("xml", "unrecognized output format")]:
        proc = ctl("get", "ippools", "-o", bad, ok=False)
        assert proc.returncode != 0 and why in proc.stderr, (bad, proc.stderr)


# --- version -------------------------------------------------------------------------


def test_version_shows_the_cluster_information_when_present(ctl, etcd_client):
    from calico_net import __version__
    from calico_net.cli.main import CLUSTER_INFO_KEY

    out = ctl("version").stdout
    assert f"Client Version:    v{__version__}" in out
    assert "Cluster Version:   unknown" in out and "Cluster GUID:      unknown" in out
    assert etcd_client.get(CLUSTER_INFO_KEY) is None  # reading never creates it
    etcd_client.put(CLUSTER_INFO_KEY, orjson.dumps({
        "apiVersion": "projectcalico.org/v3", "kind": "ClusterInformation", "metadata": {"name": "default"},
        "spec": {"calicoVersion": "v3.27.0", "clusterGUID": "abc123", "clusterType": "bgp,etcd",
                 "datastoreReady": True}}))
    out = ctl("version").stdout
    assert "Cluster Version:   v3.27.0" in out
    assert "Cluster Type:      bgp,etcd" in out and "Cluster GUID:      abc123" in out


# --- ipam check -o FILE / release --from-report ----------------------------------------


@pytest.fixture
def leaky(datastore, etcd_client):
    from calico_net.ipam import IPAM

    datastore.create({"apiVersion": "projectcalico.org/v3", "kind": "IPPool",
                      "metadata": {"name": "rep-pool"}, "spec": {"cidr": "198.18.248.0/24"}})
    datastore.create({"apiVersion": "projectcalico.org/v3", "kind": "Node", "metadata": {"name": "node-a"}, "spec": {}})
    ipam = IPAM(etcd_client, datastore)
    used, _ = ipam.auto_assign("calico.used", "node-a")
    leaked, _ = ipam.auto_assign("calico.leaked", "node-a", num_v4=2)
    datastore.create({
        "apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
        "metadata": {"name": "node-a-cni-used-eth0", "namespace": "default"},
        "spec": {"node": "node-a", "orchestrator": "cni", "workload": "used", "containerID": "used",
                 "endpoint": "eth0", "interfaceName": "cali0123456789a",
                 "ipNetworks": [f"{used[0]}/32"], "profiles": ["calico"]},
    })
    return ipam, str(used[0]), sorted(str(a) for a in leaked)


def test_release_from_report_frees_exactly_the_leaked_addresses(ctl, leaky, tmp_path, etcd_client):
    ipam, used, leaked = leaky
    orphan = "/calico/ipam/v2/handle/calico.orphan"  # a handle no allocation names
    etcd_client.put(orphan, b'{"block": {}, "deleted": false}')
    report = tmp_path / "report.json"
    proc = ctl("ipam", "check", "-o", str(report), ok=False)
    assert proc.returncode == 1 and "Report written" in proc.stdout
    doc = json.loads(report.read_text())
    assert [h["id"] for h in doc["leakedHandles"]] == ["calico.orphan"]
    assert doc["allocations"][used][0]["inUse"] is True
    assert sorted(ip for ip, e in doc["allocations"].items() if not e[0]["inUse"]) == leaked
    assert doc["allocations"][leaked[0]][0]["handle"] == "calico.leaked"
    out = ctl("ipam", "release", "--from-report", str(report)).stdout
    assert "Released 2 IPs successfully" in out
    assert all(ipam.get_assignment(a) is None for a in leaked)
    assert ipam.get_assignment(used).handle_id == "calico.used"
    assert etcd_client.get("/calico/ipam/v2/handle/calico.leaked") is None
    assert etcd_client.get(orphan) is None and "Released 1 handles" in out
    assert etcd_client.get("/calico/ipam/v2/handle/calico.used") is not None


def test_release_from_a_stale_report_is_refused(ctl, leaky, tmp_path, etcd_client):
    ipam, used, leaked = leaky
    report = tmp_path / "report.json"
    ctl("ipam", "check", "-o", str(report), ok=False)
    ipam.auto_assign("calico.new", "node-a")  # IPAM moved on since the report
    before = keyspace(etcd_client)
    proc = ctl("ipam", "release", "--from-report", str(report), ok=False)
    assert proc.returncode != 0 and "changed since the report" in proc.stderr
    assert keyspace(etcd_client) == before
    # a report of another cluster is refused even with --force
    ctl("ipam", "check", "-o", str(report), ok=False)
    doc = json.loads(report.read_text())
    doc["clusterGUID"] = "another-cluster"
    report.write_text(json.dumps(doc))
    proc = ctl("ipam", "release", "--from-report", str(report), "--force", ok=False)
    assert proc.returncode != 0 and "mismatched cluster GUID" in proc.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"hello": 1}')
    proc = ctl("ipam", "release", "--from-report", str(bad), ok=False)
    assert proc.returncode != 0 and "not an IPAM report" in proc.stderr
    assert keyspace(etcd_client) == before


# --- ipam split ----------------------------------------------------------------------


def test_split_replaces_a_disabled_unused_pool(ctl, etcd_client):
    ctl("apply", "-f", "-", stdin=POOL)
    before = keyspace(etcd_client)
    proc = ctl("ipam", "split", "--cidr", "198.19.0.0/16", "4", ok=False)
    assert proc.returncode != 0 and "not disabled" in proc.stderr
    proc = ctl("ipam", "split", "--cidr", "198.19.0.0/16", "3", ok=False)
    assert proc.returncode != 0 and "power of 2" in proc.stderr
    assert keyspace(etcd_client) == before
    ctl("patch", "ippool", "pool-a", "-p", '{"spec":{"disabled":true}}')
    out = ctl("ipam", "split", "--cidr", "198.19.0.0/16", "4").stdout
    assert "split into 4 smaller pools" in out
    assert etcd_client.get(POOL_KEY) is None
    pools = {stored(etcd_client, f"{POOL_KEY[:-len('pool-a')]}split-pool-a-{i}")["spec"]["cidr"]: i for i in range(4)}
    assert pools == {"198.19.0.0/18": 0, "198.19.64.0/18": 1, "198.19.128.0/18": 2, "198.19.192.0/18": 3}
    child = stored(etcd_client, f"{POOL_KEY[:-len('pool-a')]}split-pool-a-0")
    assert child["spec"]["disabled"] is False and child["spec"]["natOutgoing"] is True
    assert child["spec"]["blockSize"] == 26


def test_split_refuses_a_pool_with_allocations(ctl, leaky, etcd_client):
    ctl("patch", "ippool", "rep-pool", "-p", '{"spec":{"disabled":true}}')
    before = keyspace(etcd_client)
    proc = ctl("ipam", "split", "--name", "rep-pool", "2", ok=False)
    assert proc.returncode != 0 and "3 allocated address(es)" in proc.stderr
    assert keyspace(etcd_client) == before


# --- datastore migrate export / import ------------------------------------------------


def test_migrate_export_wipe_import_round_trips(ctl, leaky, etcd_client, tmp_path):
    from calico_net.agent.startup import ensure_cluster_information
    from calico_net.datastore.store import Datastore
    from tests.integration.test_calicoctl import DATA

    # every kind calicoctl writes; ClusterInformation the way the agent writes it
    kinds_file = tmp_path / "kinds.yaml"
    kinds_file.write_text(yaml.safe_dump_all(
        [d for d in yaml.safe_load_all((DATA / "valid" / "all-kinds.yaml").read_text())
         if d and d["kind"] != "ClusterInformation"]))
    ctl("apply", "-f", str(kinds_file))
    ensure_cluster_information(Datastore(etcd_client))
    ctl("ipam", "configure", "--strictaffinity", "true")
    first = ctl("datastore", "migrate", "export").stdout
    docs = list(yaml.safe_load_all(first))
    kinds = {d["kind"] for d in docs}
    assert {"IPAMBlock", "BlockAffinity", "IPAMHandle", "IPAMConfiguration", "WorkloadEndpoint", "IPPool",
            "ClusterInformation", "Tier"} <= kinds
    assert not any("resourceVersion" in d["metadata"] for d in docs)
    resources_before = [(k, v) for k, v, _ in keyspace(etcd_client)
                        if k.startswith(("/calico/resources/", "/calico/ipam/"))]
    dump = tmp_path / "backup.yaml"
    dump.write_text(first)
    # refused while the datastore holds anything
    proc = ctl("datastore", "migrate", "import", "-f", str(dump), ok=False)
    assert proc.returncode != 0 and "not empty" in proc.stderr
    assert [(k, v) for k, v in resources_before] == [(k, v) for k, v, _ in keyspace(etcd_client)
                                                      if k.startswith(("/calico/resources/", "/calico/ipam/"))]
    etcd_client.delete_prefix("/calico/")
    out = ctl("datastore", "migrate", "import", "-f", str(dump)).stdout
    assert f"Successfully imported {len(docs)} " in out
    after = [(k, v) for k, v, _ in keyspace(etcd_client)]
    assert after == resources_before
    assert ctl("datastore", "migrate", "export").stdout == first


def test_migrate_import_refuses_a_bad_stream_and_writes_nothing(ctl, etcd_client, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(POOL + "---\n" + POOL.replace("26", "99") + "---\n"
                   "apiVersion: crd.projectcalico.org/v1\nkind: IPAMHandle\nmetadata: {name: x}\n"
                   "spec: {handleID: 'a/b', block: {}}\n")
    proc = ctl("datastore", "migrate", "import", "-f", str(bad), ok=False)
    assert proc.returncode != 0
    assert "document 2" in proc.stderr and "document 3" in proc.stderr and "nothing imported" in proc.stderr
    assert keyspace(etcd_client) == []
    dup = tmp_path / "dup.yaml"
    dup.write_text(POOL + "---\n" + POOL)
    proc = ctl("datastore", "migrate", "import", "-f", str(dup), ok=False)
    assert proc.returncode != 0 and "appears twice" in proc.stderr
    assert keyspace(etcd_client) == []


# --- node checksystem / diags ----------------------------------------------------------


def _calicoctl(*args: str, env: dict | None = None):
    import os
    import subprocess
    import sys
    from pathlib import Path

    exe = str(Path(sys.executable).parent / "calicoctl")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_checksystem_reports_each_check(tmp_path):
    from calico_net.cli.nodecheck import MODULES, run_checks

    proc = _calicoctl("node", "checksystem")
    lines = proc.stdout.splitlines()
    for mod, _, _ in MODULES:
        assert any(line.split() and line.split()[0] == mod for line in lines), mod
    assert "Checking programs..." in proc.stdout
    failed = [r for r in run_checks() if r[2].startswith("FAIL")]
    assert (proc.returncode != 0) == bool(failed)
    # a PATH without nft or bird: each named as a failure, and the exit says so
    bare = tmp_path / "bin"
    bare.mkdir()
    proc = _calicoctl("node", "checksystem", env={"PATH": str(bare)})
    assert proc.returncode != 0 and "minimum requirements" in proc.stderr
    nft = next(line for line in proc.stdout.splitlines() if line.split()[:1] == ["nft"])
    assert "FAIL: not found on PATH" in nft


def test_diags_collects_into_a_tarball(tmp_path):
    import subprocess
    import tarfile

    logs, conf, out = tmp_path / "logs", tmp_path / "conf", tmp_path / "out"
    for d in (logs, conf, out):
        d.mkdir()
    (logs / "calico-node.log").write_text("felix started\n")
    (conf / "calicoctl.cfg").write_text("kind: CalicoAPIConfig\n")
    (conf / "etcd.key").write_text("-----BEGIN PRIVATE KEY-----\nxx\n")
    def routes() -> set[str]:
        return set(subprocess.run(["ip", "route"], capture_output=True, text=True, check=True).stdout.splitlines())

    before = routes()
    proc = _calicoctl("node", "diags", "--log-dir", str(logs), "--config-dir", str(conf),
                      "--output-dir", str(out), "--bird-socket", str(tmp_path / "no-bird.ctl"))
    assert proc.returncode == 0, proc.stderr
    [tarball] = list(out.iterdir())
    assert str(tarball) in proc.stdout
    with tarfile.open(tarball) as tar:
        files = {m.name.split("/", 1)[1]: tar.extractfile(m).read().decode() for m in tar.getmembers() if m.isfile()}
    assert files["logs/calico-node.log"] == "felix started\n"
    assert files["config/calicoctl.cfg"] == "kind: CalicoAPIConfig\n"
    assert "config/etcd.key" not in files
    # other tests may add and remove routes meanwhile: the ones there throughout must be in it
    stable = before & routes()
    assert stable and stable <= set(files["ip-route.txt"].splitlines())
    assert "nft-ruleset.txt" in files and "ip-6-route.txt" in files
    assert "birdc -s" in files["failures.txt"] and "etcd.key: holds a private key" in files["failures.txt"]


@pytest.mark.parametrize("args, why", [
    (["--log-dir=-rf"], "not a usable path"),
    (["--bird-socket", "a\nb"], "not a usable path"),
    (["--output-dir", "/nonexistent/dir"], "not a directory"),
])
def test_diags_refuses_bad_paths_and_writes_nothing(tmp_path, args, why):
    out = tmp_path / "out"
    out.mkdir()
    full = ["--output-dir", str(out)] + args if "--output-dir" not in args else args
    proc = _calicoctl("node", "diags", *full)
    assert proc.returncode != 0 and why in proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.startswith("calicoctl:")][0]
    assert list(out.iterdir()) == []
