"""8 processes x 200 allocations against one etcd, across 3 node names: 1,600
distinct addresses, consistent block affinities, no block claimed while the node had
room, and `calicoctl ipam check` clean once every address has its WorkloadEndpoint —
with the processes racing each other, and with the per-node host lock. And 8
processes filling their nodes up to the IPAMConfiguration's maxBlocksPerHost while an
IPReservation is created under them: no reserved address is handed out, no node holds
more blocks than the limit."""
from __future__ import annotations

import contextlib

import ipaddress
import multiprocessing as mp
import subprocess
import sys
import time
from pathlib import Path

import pytest

from calico_net.ipam import IPAM, BlockLimitError, keys

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


@contextlib.contextmanager
def _allocators(target, endpoints: list[str], nodes: list[str], lock_dir: str | None):
    """PROCS processes running `target`, released together by a barrier; yields a
    function that waits for their results. They are joined (killed if hung) on exit."""
    ctx = mp.get_context("fork")
    start = ctx.Barrier(PROCS)
    out = ctx.Queue()
    procs = [ctx.Process(target=target, args=(endpoints, i, nodes[i % NODES], lock_dir, start, out))
             for i in range(PROCS)]
    for p in procs:
        p.start()
    try:
        yield lambda: [out.get(timeout=280) for _ in procs]
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join()


def _allocations(results: list) -> list[tuple]:
    """Every (handle, node, address) the workers handed out; fails on a worker's error."""
    errors = [r for r in results if r[0] != "ok"]
    assert not errors, errors
    return [a for r in results for a in r[2]]


@pytest.mark.slow
@pytest.mark.parametrize("host_lock", [False, True], ids=["racing", "host-lock"])
def test_eight_processes_allocate_distinct_addresses(etcd, datastore, host_lock, tmp_path):
    datastore.create({"apiVersion": "projectcalico.org/v3", "kind": "IPPool",
                      "metadata": {"name": "conc"}, "spec": {"cidr": "198.19.0.0/16", "blockSize": 26}})
    nodes = [f"conc-node-{i}" for i in range(NODES)]
    lock_dir = str(tmp_path / "locks") if host_lock else None
    with _allocators(_worker, etcd.endpoints, nodes, lock_dir) as results:
        allocs = _allocations(results())
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


# --- reservations and maxBlocksPerHost under the race ----------------------------------------

MAX_BLOCKS = 3
STATIC_RESERVED = ["198.19.0.0/28", "198.19.0.16/31", "198.19.0.37", "198.19.0.48/29"]
# created while the processes allocate: the last 4 addresses of every /28 of the pool
LATE_RESERVED = [f"198.19.{n // 16}.{(n % 16) * 16 + 12}/30" for n in range(64)]


def _fill_worker(endpoints: str, index: int, node: str, lock_dir: str | None, start, out) -> None:
    from calico_net.datastore import Datastore, EtcdClient, EtcdConfig

    client = EtcdClient(EtcdConfig(endpoints=[endpoints]))
    ipam = IPAM(client, Datastore(client), host_lock_dir=lock_dir)
    start.wait()
    got = []
    try:
        for i in range(200):
            handle = f"fill.{index}-{i}"
            try:
                v4, _ = ipam.auto_assign(handle, node)
            except BlockLimitError:
                break
            got.append((handle, node, str(v4[0])))
        out.put(("ok", index, got))
    except Exception as e:  # noqa: BLE001 - reported to the parent
        out.put(("error", index, f"{type(e).__name__}: {e}"))


def _covered(cidrs: list[str]) -> set[str]:
    return {str(a) for c in cidrs for a in ipaddress.ip_network(c)}


@pytest.mark.slow
@pytest.mark.parametrize("host_lock", [False, True], ids=["racing", "host-lock"])
def test_reservations_and_block_limit_hold_under_eight_allocators(etcd, datastore, host_lock, tmp_path):
    datastore.create({"apiVersion": "projectcalico.org/v3", "kind": "IPPool",
                      "metadata": {"name": "fill"}, "spec": {"cidr": "198.19.0.0/22", "blockSize": 28}})
    datastore.create({"apiVersion": "projectcalico.org/v3", "kind": "IPAMConfiguration",
                      "metadata": {"name": "default"},
                      "spec": {"strictAffinity": True, "maxBlocksPerHost": MAX_BLOCKS}})
    datastore.create({"apiVersion": "projectcalico.org/v3", "kind": "IPReservation",
                      "metadata": {"name": "static"}, "spec": {"reservedCIDRs": STATIC_RESERVED}})
    nodes = [f"fill-node-{i}" for i in range(NODES)]
    lock_dir = str(tmp_path / "locks") if host_lock else None
    client = datastore.client
    with _allocators(_fill_worker, etcd.endpoints, nodes, lock_dir) as results:
        # reserve more while the processes are part-way through
        deadline = time.monotonic() + 120
        while len(client.get_prefix(keys.HANDLE_PREFIX, keys_only=True)[0]) < 30:
            assert time.monotonic() < deadline, "the allocators made no progress"
            time.sleep(0.002)
        late = datastore.create({"apiVersion": "projectcalico.org/v3", "kind": "IPReservation",
                                 "metadata": {"name": "late"}, "spec": {"reservedCIDRs": LATE_RESERVED}})
        late_rev = int(late["metadata"]["resourceVersion"])
        allocs = _allocations(results())
    ips = [a[2] for a in allocs]
    assert len(set(ips)) == len(ips), "duplicate addresses handed out"

    static, later = _covered(STATIC_RESERVED), _covered(LATE_RESERVED)
    assert not static & set(ips), sorted(static & set(ips))
    # an address the late reservation covers was committed before the reservation was
    # (its handle was created in the allocation's transaction)
    for handle, _, addr in allocs:
        if addr in later:
            kv = client.get(keys.handle_key(handle))
            assert kv.create_revision < late_rev, (handle, addr, kv.create_revision, late_rev)

    ipam = IPAM(client, datastore)
    blocks = ipam.blocks()
    assert all(b.host in nodes for b in blocks)
    assert "198.19.0.0/28" not in {str(b.cidr) for b in blocks}, "a block reserved whole was claimed"
    for node in nodes:
        mine = [b for b in blocks if b.host == node]
        assert len(mine) == MAX_BLOCKS, (node, [str(b.cidr) for b in mine])
        assert len(ipam.affinities(node)) == MAX_BLOCKS
        # the node stopped at its limit with every unreserved address of its blocks in use
        for b in mine:
            free = {str(b.ip_at(o)) for o in b.unallocated}
            assert free <= static | later, (str(b.cidr), sorted(free - static - later))
            for addr, attr in b.allocated():
                assert attr["secondary"]["node"] == node  # strict affinity: nothing borrowed
    # the late reservation took effect: some of what it covers stayed free
    assert any(str(b.ip_at(o)) in later for b in blocks for o in b.unallocated)
    assert len(ips) == sum(b.in_use for b in blocks)

