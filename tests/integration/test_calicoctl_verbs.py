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
  cidr: 10.70.0.0/16
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
    assert after["spec"]["cidr"] == "10.70.0.0/16" and after["spec"]["blockSize"] == 26
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
    ctl("apply", "-f", "-", stdin=POOL.replace("pool-a", "pool-b").replace("10.70.", "10.71."))
    manifest = tmp_path / "m.yaml"
    manifest.write_text(POOL)
    doc = yaml.safe_load(ctl("get", "-f", str(manifest), "-o", "yaml").stdout)
    assert doc["kind"] == "IPPool" and doc["metadata"]["name"] == "pool-a"
    table = ctl("get", "-f", str(manifest)).stdout.splitlines()
    assert table[0].split() == ["NAME", "CIDR", "SELECTOR"]
    assert table[1].split()[:2] == ["pool-a", "10.70.0.0/16"] and len(table) == 2
    both = tmp_path / "both.yaml"
    both.write_text(POOL + "---" + POOL.replace("pool-a", "pool-b").replace("10.70.", "10.71."))
    lst = json.loads(ctl("get", "-f", str(both), "-o", "json").stdout)
    assert [i["metadata"]["name"] for i in lst["items"]] == ["pool-a", "pool-b"]
    missing = tmp_path / "missing.yaml"
    missing.write_text(POOL.replace("pool-a", "pool-z"))
    proc = ctl("get", "-f", str(missing), ok=False)
    assert proc.returncode != 0 and "not found" in proc.stderr


def test_custom_columns(ctl):
    ctl("apply", "-f", "-", stdin=POOL)
    lines = ctl("get", "ippools", "-o", "custom-columns=NAME,CIDR,NAT").stdout.splitlines()
    assert lines[0].split() == ["NAME", "CIDR", "NAT"]
    assert lines[1].split() == ["pool-a", "10.70.0.0/16", "true"]
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
