"""`calicoctl ipam show|check|release|configure` against the real etcd."""
from __future__ import annotations

import json

import pytest

from calico_net.cli.main import main
from calico_net.ipam import IPAM


@pytest.fixture
def ctl(etcd, etcd_client, monkeypatch, capsys):
    monkeypatch.setenv("ETCD_ENDPOINTS", etcd.endpoints)
    for k in ("ETCD_CA_CERT_FILE", "ETCD_CERT_FILE", "ETCD_KEY_FILE"):
        monkeypatch.delenv(k, raising=False)

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def setup(datastore, etcd_client):
    datastore.create({"apiVersion": "projectcalico.org/v3", "kind": "IPPool",
                      "metadata": {"name": "cli-pool"}, "spec": {"cidr": "198.19.0.0/24"}})
    datastore.create({"apiVersion": "projectcalico.org/v3", "kind": "Node",
                      "metadata": {"name": "node-a"}, "spec": {}})
    ipam = IPAM(etcd_client, datastore)
    used, _ = ipam.auto_assign("calico.used", "node-a")
    leaked, _ = ipam.auto_assign("calico.leaked", "node-a")
    datastore.create({
        "apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
        "metadata": {"name": "node-a-cni-used-eth0", "namespace": "default"},
        "spec": {"node": "node-a", "orchestrator": "cni", "workload": "used", "containerID": "used",
                 "endpoint": "eth0", "interfaceName": "cali0123456789a",
                 "ipNetworks": [f"{used[0]}/32"], "profiles": ["calico"]},
    })
    return ipam, str(used[0]), str(leaked[0])


def test_show_pools_nodes_and_blocks(ctl, setup):
    code, out, _ = ctl("ipam", "show", "--show-blocks")
    assert code == 0
    assert "| IP Pool  | 198.19.0.0/24 | 256       | 2 (0%)" in out
    assert "| Block    | 198.19.0.0/26 | 64        | 2 (3%)" in out and "-> node-a" in out
    assert "| node-a " in out
    code, out, _ = ctl("ipam", "show", "-o", "json")
    doc = json.loads(out)
    assert doc["pools"][0]["in_use"] == 2 and doc["pools"][0]["nodes"]["node-a"]["blocks"] == 1


def test_show_one_ip(ctl, setup):
    _, used, leaked = setup
    code, out, _ = ctl("ipam", "show", "--ip", used)
    assert code == 0 and f"IP {used} is in use" in out
    assert "Handle: calico.used" in out and "node: node-a" in out and "default/node-a-cni-used-eth0" in out
    code, out, _ = ctl("ipam", "show", "--ip", "198.19.0.200")
    assert "IP 198.19.0.200 is not assigned" in out


def test_check_reports_each_kind_of_problem(ctl, setup, datastore, etcd_client):
    ipam, used, leaked = setup
    code, out, _ = ctl("ipam", "check")
    assert code == 1
    assert "Found 1 allocations without endpoints (leaked)." in out and leaked in out
    # an endpoint whose address IPAM does not hold, and a block of a vanished node
    ipam.release_ips([used])
    ipam.auto_assign("calico.gone", "node-gone")
    code, out, _ = ctl("ipam", "check", "-o", "json")
    report = json.loads(out)
    assert code == 1
    assert report["endpointsWithoutAllocations"] == [{"endpoint": "default/node-a-cni-used-eth0", "ip": used}]
    assert [b["node"] for b in report["blocksOfMissingNodes"]] == ["node-gone"]
    assert {x["ip"] for x in report["allocationsWithoutEndpoints"]} >= {leaked}
    assert report["affinityMismatches"] == [] and report["handleMismatches"] == []


def test_check_clean(ctl, setup):
    ipam, used, leaked = setup
    ipam.release_by_handle("calico.leaked")
    code, out, _ = ctl("ipam", "check")
    assert code == 0, out
    assert "IPAM is consistent." in out


def test_check_finds_handle_and_affinity_damage(ctl, setup, etcd_client):
    ipam, used, leaked = setup
    etcd_client.delete("/calico/ipam/v2/handle/calico.leaked")
    etcd_client.delete("/calico/ipam/v2/host/node-a/ipv4/block/198.19.0.0-26")
    code, out, _ = ctl("ipam", "check", "-o", "json")
    report = json.loads(out)
    assert code == 1
    assert report["handleMismatches"] == ["handle calico.leaked holds 1 address(es) but has no handle record"]
    assert report["affinityMismatches"] == [
        "block 198.19.0.0/26 is affine to node-a but node-a has no affinity key"]


def test_an_unreadable_block_is_reported_and_the_rest_still_checked(ctl, setup, etcd_client):
    """A block key holding garbage neither stops `ipam check` nor goes unnoticed: it is
    a problem of its own, and the good blocks are checked as before."""
    ipam, used, leaked = setup
    bad = "/calico/ipam/v2/assignment/ipv4/block/198.19.9.0-26"
    etcd_client.put(bad, b"{not json")
    try:
        code, out, _ = ctl("ipam", "check", "-o", "json")
        report = json.loads(out)
        assert code == 1
        assert [x["key"] for x in report["unreadableBlocks"]] == [bad]
        assert [x["ip"] for x in report["allocationsWithoutEndpoints"]] == [leaked]
        code, out, _ = ctl("ipam", "check")
        assert "Found 1 blocks whose value cannot be read" in out and bad in out
    finally:
        etcd_client.delete(bad)


def test_release_refuses_addresses_in_use(ctl, setup):
    ipam, used, leaked = setup
    code, _, err = ctl("ipam", "release", "--ip", used)
    assert code == 1 and "still in use" in err and "node-a-cni-used-eth0" in err
    assert ipam.get_assignment(used) is not None
    code, out, _ = ctl("ipam", "release", "--ip", leaked)
    assert code == 0 and f"Released {leaked}" in out
    assert ipam.get_assignment(leaked) is None
    code, _, err = ctl("ipam", "release", "--ip", leaked)
    assert code == 1 and "not assigned" in err
    code, _, err = ctl("ipam", "release", "--handle", "calico.used")
    assert code == 1 and "still in use" in err
    code, out, _ = ctl("ipam", "release", "--handle", "calico.used", "--force")
    assert code == 0 and used in out
    code, _, err = ctl("ipam", "release", "--handle", "calico.used")
    assert code == 1 and "does not exist" in err


def test_configure_strict_affinity(ctl, setup):
    ipam, _, _ = setup
    code, out, _ = ctl("ipam", "configure", "--strictaffinity", "true")
    assert code == 0 and "StrictAffinity: true" in out
    assert ipam.get_config().strict_affinity
    code, out, _ = ctl("ipam", "configure")
    assert "StrictAffinity: true" in out
