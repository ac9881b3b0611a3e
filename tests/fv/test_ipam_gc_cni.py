"""`calicoctl ipam gc` after real CNI attachments die badly: the installed `calico`
plugin ADDs into real network namespaces (`cnfv-gc-*`) on real etcd; then containers
are killed without CNI DEL (their namespace deleted, which takes the veth pair) and a
node's runtime state vanishes with its Node resource. gc reports exactly the leaked
objects, `--apply` removes them and leaves the live container whole, `ipam check` is
clean after, and ADDs running during gc --apply lose nothing. Addresses: 198.19.137.0/24.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from calico_net.cli.main import main
from calico_net.ipam import IPAM

pytestmark = pytest.mark.root

VENV_BIN = Path(sys.executable).parent
NS_PREFIX = "cnfv-gc-"
NODE, GONE_NODE = "cnfv-gc-node", "cnfv-gc-gone"
CIDS = [f"cnfvgc{n:02d}" for n in range(6)]


def sh(*cmd: str, check: bool = True) -> str:
    p = subprocess.run(list(cmd), capture_output=True, text=True, timeout=30)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {p.stderr.strip()}")
    return p.stdout


def link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


def wait_for(cond, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _clean(weps: list[str]) -> None:
    for line in sh("ip", "netns", "list", check=False).splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(NS_PREFIX):
            sh("ip", "netns", "del", name, check=False)
    for iface in weps:
        if link_exists(iface):
            sh("ip", "link", "del", iface, check=False)


@pytest.fixture
def env(etcd, datastore, tmp_path, monkeypatch) -> Iterator[Any]:
    monkeypatch.setenv("ETCD_ENDPOINTS", etcd.endpoints)
    for k in ("ETCD_CA_CERT_FILE", "ETCD_CERT_FILE", "ETCD_KEY_FILE"):
        monkeypatch.delenv(k, raising=False)
    datastore.create({"apiVersion": "projectcalico.org/v3", "kind": "IPPool",
                      "metadata": {"name": "gc-cni-pool"}, "spec": {"cidr": "198.19.137.0/24", "blockSize": 28}})
    for node in (NODE, GONE_NODE):
        datastore.create({"apiVersion": "projectcalico.org/v3", "kind": "Node", "metadata": {"name": node},
                          "spec": {}})
    ifaces: list[str] = []

    def add(cid: str, node: str = NODE) -> tuple[str, str]:
        ns = NS_PREFIX + cid
        sh("ip", "netns", "add", ns)
        conf = {"cniVersion": "1.0.0", "name": "calico", "type": "calico", "etcd_endpoints": etcd.endpoints,
                "nodename": node, "log_file_path": str(tmp_path / "cni.log"), "ipam": {"type": "calico-ipam"}}
        e = etcd.env()
        e.pop("ETCD_ENDPOINTS", None)
        e.update({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": cid, "CNI_NETNS": f"/var/run/netns/{ns}",
                  "CNI_IFNAME": "eth0", "CNI_ARGS": "", "CNI_PATH": "/usr/lib/cni"})
        p = subprocess.run([str(VENV_BIN / "calico")], input=json.dumps(conf), env=e, capture_output=True,
                           text=True, timeout=120)
        assert p.returncode == 0, (p.stdout, p.stderr)
        res = json.loads(p.stdout)
        ifaces.append(res["interfaces"][0]["name"])
        return res["interfaces"][0]["name"], res["ips"][0]["address"].split("/")[0]

    try:
        yield add
    finally:
        _clean(ifaces)


def kill_without_del(cid: str, iface: str) -> None:
    """The container dies and nobody calls DEL: its namespace goes, and with it the veth."""
    sh("ip", "netns", "del", NS_PREFIX + cid)
    wait_for(lambda: not link_exists(iface), 10, f"{iface} to go with its namespace")


def gc(*argv: str, capsys) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["ipam", "gc", "--node-local", "--node", NODE, "-o", "json", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def wep_of(datastore, cid: str) -> str:
    [name] = [d["metadata"]["name"] for d in datastore.list("WorkloadEndpoint")[0]
              if d["spec"].get("containerID") == cid]
    return f"default/{name}"


def test_gc_after_killed_containers_and_a_vanished_node(env, datastore, etcd_client, capsys):
    live_if, live_ip = env(CIDS[0])
    dead = {cid: env(cid) for cid in CIDS[1:3]}
    gone_if, gone_ip = env(CIDS[3], GONE_NODE)
    names = {cid: wep_of(datastore, cid) for cid in CIDS[:4]}
    for cid, (iface, _) in dead.items():
        kill_without_del(cid, iface)
    # the other node loses its runtime state and its Node, without calicoctl delete node
    kill_without_del(CIDS[3], gone_if)
    datastore.delete("Node", GONE_NODE)
    gone_block = str(IPAM(etcd_client, datastore).get_assignment(gone_ip).block)

    # just made: the default grace period keeps everything
    doc = gc(capsys=capsys)
    young = {f["name"] for f in doc["findings"] if f["kind"] == "WorkloadEndpoint" and f.get("protected")}
    assert young == {names[c] for c in CIDS[1:4]}
    doc = gc("--grace", "0", capsys=capsys)
    want = {("WorkloadEndpoint", names[c]) for c in CIDS[1:4]} | {("BlockAffinity", f"{GONE_NODE}/{gone_block}")}
    assert {(f["kind"], f["name"]) for f in doc["findings"]} == want
    assert all("interface" in f["reason"] for f in doc["findings"] if f["name"] in {names[c] for c in dead})

    doc = gc("--grace", "0", "--apply", capsys=capsys)
    released = {ip for _, ip in dead.values()} | {gone_ip}
    assert {(f["kind"], f["name"]) for f in doc["applied"]} == want | {("Allocation", ip) for ip in released}
    assert doc["skipped"] == []
    capsys.readouterr()
    assert main(["ipam", "check"]) == 0, capsys.readouterr().out
    # the live container is whole: endpoint, address, veth
    ipam = IPAM(etcd_client, datastore)
    assert sorted(f"default/{d['metadata']['name']}" for d in datastore.list("WorkloadEndpoint")[0]) == \
        [names[CIDS[0]]]
    assert ipam.get_assignment(live_ip).handle_id == f"calico.{CIDS[0]}"
    assert link_exists(live_if)
    assert all(ipam.get_assignment(ip) is None for ip in released)


def test_cni_adds_during_gc_apply_lose_nothing(env, datastore, etcd_client, capsys):
    dead_if, dead_ip = env(CIDS[0])
    dead_wep = wep_of(datastore, CIDS[0])
    kill_without_del(CIDS[0], dead_if)
    done: list[tuple[str, str, str]] = []
    errors: list[BaseException] = []

    def adds() -> None:
        try:
            for cid in CIDS[1:4]:
                done.append((cid, *env(cid)))
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    t = threading.Thread(target=adds)
    t.start()
    runs = 0
    # the default grace: an ADD's allocation and endpoint are fresh, whatever stage it is at
    while t.is_alive() or runs == 0:
        gc("--apply", capsys=capsys)
        runs += 1
    t.join(timeout=300)
    assert not t.is_alive() and not errors, errors
    ipam = IPAM(etcd_client, datastore)
    for cid, iface, ip in done:
        assert ipam.get_assignment(ip) is not None and link_exists(iface), cid
        wep_of(datastore, cid)
    assert len(done) == 3 and runs >= 2
    # the killed container is young too: kept until the grace period is waived
    assert ipam.get_assignment(dead_ip) is not None
    doc = gc("--apply", "--grace", "0", capsys=capsys)
    assert {f["name"] for f in doc["applied"]} == {dead_wep, dead_ip}
    assert ipam.get_assignment(dead_ip) is None and all(ipam.get_assignment(ip) for _, _, ip in done)
