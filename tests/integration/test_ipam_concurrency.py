"""8 processes x 200 allocations against one etcd, across 3 node names: 1,600
distinct addresses, consistent block affinities, no block claimed while the node had
room, and `calicoctl ipam check` clean once every address has its WorkloadEndpoint —
with the processes racing each other, and with the per-node host lock."""
from __future__ import annotations

import multiprocessing as mp
import subprocess
import sys
from pathlib import Path

import pytest

from calico_net.ipam import IPAM

PROCS, ALLOCS, NODES = 8, 200, 3
VENV_BIN = Path(sys.executable).parent


def _worker(endpoints: str, index: int, node: str, lock_dir: str | None, start, out) -> None:
    from calico_net.datastore import Datastore, EtcdClient, EtcdConfig

    client = EtcdClient(EtcdConfig(endpoints=[endpoints]))
    ipam = IPAM(client, Datastore(client), host_lock_dir=lock_dir)
    start.wait()
    got = []
    try:
        for i in range(ALLOCS):
            handle = f"conc.{index}-{i}"
            v4, _ = ipam.auto_assign(handle, node)
            got.append((handle, node, str(v4[0])))
        out.put(("ok", index, got))
    except Exception as e:  # noqa: BLE001 - reported to the parent
        out.put(("error", index, f"{type(e).__name__}: {e}"))


def _wep(node: str, handle: str, ip: str) -> dict:
    cid = handle.split(".", 1)[1]
    return {
        "apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
        "metadata": {"name": f"{node}-cni-{cid}-eth0", "namespace": "default"},
        "spec": {"node": node, "orchestrator": "cni", "workload": cid, "containerID": cid,
                 "endpoint": "eth0", "interfaceName": "cali" + cid.replace("-", "")[:11].ljust(11, "0"),
                 "ipNetworks": [f"{ip}/32"], "profiles": ["calico"]},
    }


@pytest.mark.slow
@pytest.mark.parametrize("host_lock", [False, True], ids=["racing", "host-lock"])
def test_eight_processes_allocate_distinct_addresses(etcd, datastore, host_lock, tmp_path):
    datastore.create({"apiVersion": "projectcalico.org/v3", "kind": "IPPool",
                      "metadata": {"name": "conc"}, "spec": {"cidr": "198.19.0.0/16", "blockSize": 26}})
    nodes = [f"conc-node-{i}" for i in range(NODES)]
    ctx = mp.get_context("fork")
    start = ctx.Barrier(PROCS)
    out = ctx.Queue()
    lock_dir = str(tmp_path / "locks") if host_lock else None
    procs = [ctx.Process(target=_worker, args=(etcd.endpoints, i, nodes[i % NODES], lock_dir, start, out))
             for i in range(PROCS)]
    for p in procs:
        p.start()
    try:
        results = [out.get(timeout=280) for _ in procs]
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join()
    errors = [r for r in results if r[0] != "ok"]
    assert not errors, errors
    allocs = [a for r in results for a in r[2]]
    ips = [a[2] for a in allocs]
    assert len(ips) == PROCS * ALLOCS
    assert len(set(ips)) == PROCS * ALLOCS, "duplicate addresses handed out"

    ipam = IPAM(datastore.client, datastore)
    # every address is recorded for its handle, in a block affine to the node that asked
    by_ip = {}
    for blk in ipam.blocks():
        for addr, attr in blk.allocated():
            by_ip[str(addr)] = (attr["handle_id"], blk.host, attr["secondary"]["node"])
    assert len(by_ip) == PROCS * ALLOCS
    for handle, node, ip in allocs:
        assert by_ip[ip] == (handle, node, node)  # nothing borrowed: the pool had room
    # no node claimed a block while one of its blocks still had room (a claim requires
    # that no affinity of the node appeared since the view that found them all full)
    for node in nodes:
        mine = [b for b in ipam.blocks() if b.host == node]
        wanted = sum(ALLOCS for i in range(PROCS) if nodes[i % NODES] == node)
        assert len(mine) == -(-wanted // 64), (node, len(mine), wanted)
        assert sum(1 for b in mine if b.free) <= 1, (node, [(str(b.cidr), b.free) for b in mine])
    affinities = {(a.node, a.cidr) for a in ipam.affinities()}
    assert affinities == {(b.host, b.cidr) for b in ipam.blocks()}
    assert all(a.state == "confirmed" for a in ipam.affinities())

    # give every address its endpoint and every node its Node; then the check is clean
    datastore.apply_all([{"apiVersion": "projectcalico.org/v3", "kind": "Node",
                          "metadata": {"name": n}, "spec": {}} for n in nodes])
    datastore.apply_all([_wep(node, handle, ip) for handle, node, ip in allocs])
    res = subprocess.run([str(VENV_BIN / "calicoctl"), "ipam", "check"], env=etcd.env(),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "IPAM is consistent." in res.stdout
    assert f"{PROCS * ALLOCS} allocations" in res.stdout
