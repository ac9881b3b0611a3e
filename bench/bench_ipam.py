#!/usr/bin/env python3
"""IPAM throughput: N processes each make M allocations against one real etcd.

Starts its own etcd (the test suite's launcher, tests/etcd_server.py), creates one
IPv4 pool inside 198.19.0.0/16, then forks the workers; each worker uses one `IPAM`
client and allocates for one of three node names (process i -> node i % 3), all
released at the end. Prints allocations per second, conflicts seen, blocks claimed,
CPU per allocation (the workers' and etcd's, which mean something on a loaded machine
where wall time does not) and checks that every address is distinct and every node got
exactly the blocks it needed. Target: >= 300 allocations/s for 8 x 200.

It runs twice, each time on a new etcd: the workers without a host lock (each
process on its own, racing the others of its node for the same block), and with
the per-node host lock the CNI plugin would use (`IPAM(host_lock_dir=...)`, Calico's
ipam.lock: processes of one node take turns and pass on the block written last).

    .venv/bin/python bench/bench_ipam.py [--procs 8] [--allocs 200] [--nodes 3] [--mode both|lock|nolock]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))


def worker(endpoints: str, index: int, node: str, allocs: int, lock_dir: str | None, start, out) -> None:
    from calico_net.datastore import Datastore, EtcdClient, EtcdConfig
    from calico_net.ipam import IPAM

    client = EtcdClient(EtcdConfig(endpoints=[endpoints]))
    ipam = IPAM(client, Datastore(client), host_lock_dir=lock_dir)
    txns = {"ok": 0, "conflict": 0, "requests": 0}
    real_txn, real_post = client.txn, client._post

    def counting_txn(*a, **kw):
        r = real_txn(*a, **kw)
        txns["ok" if r.succeeded else "conflict"] += 1
        return r

    def counting_post(*a, **kw):
        txns["requests"] += 1
        return real_post(*a, **kw)

    client.txn = counting_txn  # type: ignore[method-assign]
    client._post = counting_post  # type: ignore[method-assign]
    start.wait()
    t0, c0 = time.perf_counter(), time.process_time()
    got = []
    for i in range(allocs):
        v4, _ = ipam.auto_assign(f"bench.{index}.{i}", node)
        got.append(str(v4[0]))
    out.put((index, node, time.perf_counter() - t0, got, time.process_time() - c0, txns))


def run(endpoints: str, procs: int, allocs: int, nodes: int, lock_dir: str | None) -> dict:
    ctx = mp.get_context("fork")
    start = ctx.Barrier(procs + 1)
    out = ctx.Queue()
    workers = [
        ctx.Process(target=worker, args=(endpoints, i, f"bench-node-{i % nodes}", allocs, lock_dir, start, out))
        for i in range(procs)
    ]
    for w in workers:
        w.start()
    start.wait()
    t0 = time.perf_counter()
    results = [out.get(timeout=900) for _ in workers]
    wall = time.perf_counter() - t0
    for w in workers:
        w.join()
    ips = [ip for r in results for ip in r[3]]
    return {"wall": wall, "ips": ips, "per_proc": sorted((r[0], r[2]) for r in results),
            "cpu": sum(r[4] for r in results),
            "txn_ok": sum(r[5]["ok"] for r in results), "txn_conflict": sum(r[5]["conflict"] for r in results),
            "requests": sum(r[5]["requests"] for r in results)}


def proc_cpu(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_round(args: argparse.Namespace, lock: bool) -> bool:
    from etcd_server import start_etcd, stop_etcd  # the test suite's etcd launcher

    from calico_net.datastore import Datastore
    from calico_net.ipam import IPAM

    server = start_etcd()
    lock_dir = tempfile.mkdtemp(prefix="calico-bench-ipam-lock-") if lock else None
    try:
        client = server.client()
        ds = Datastore(client)
        ds.create({"apiVersion": "projectcalico.org/v3", "kind": "IPPool",
                   "metadata": {"name": "bench-pool"}, "spec": {"cidr": "198.19.0.0/16", "blockSize": 26}})
        etcd_cpu0 = proc_cpu(server.proc.pid)
        load0 = os.getloadavg()[0]
        res = run(server.endpoints, args.procs, args.allocs, args.nodes, lock_dir)
        etcd_cpu = proc_cpu(server.proc.pid) - etcd_cpu0
        total = args.procs * args.allocs
        ipam = IPAM(client, ds)
        blocks = ipam.blocks()
        distinct = len(set(res["ips"]))
        print(f"IPAM allocations, {'WITH the per-node host lock' if lock else 'without a host lock'}: "
              f"{args.procs} processes x {args.allocs} = {total}, {args.nodes} nodes, {os.cpu_count()} cores")
        print(f"  wall time          {res['wall']:.2f} s")
        print(f"  allocations/s      {total / res['wall']:.0f}   (target >= 300)")
        per = [t for _, t in res["per_proc"]]
        print(f"  per process        {min(per):.2f}-{max(per):.2f} s  ({args.allocs / max(per):.0f}-{args.allocs / min(per):.0f} allocations/s each)")
        cpu_ms = (res["cpu"] + etcd_cpu) / total * 1000
        cores = os.cpu_count() or 1
        print(f"  etcd transactions  {res['txn_ok']} went through, {res['txn_conflict']} lost a compare-and-swap "
              f"({res['txn_conflict'] / total:.2f} per allocation); {res['requests'] / total:.2f} etcd requests "
              "per allocation in all")
        print(f"  CPU per allocation {res['cpu'] / total * 1000:.1f} ms in the clients + {etcd_cpu / total * 1000:.1f} ms in etcd"
              f" = {cpu_ms:.1f} ms  -> at most {cores * 1000 / cpu_ms:.0f}/s on {cores} idle cores")
        print(f"  machine load       {load0:.1f} at start (other processes share these cores)")
        print(f"  distinct addresses {distinct} of {total}  {'OK' if distinct == total else 'DUPLICATES!'}")
        per_node = {n: sum(1 for b in blocks if b.host == n) for n in sorted({b.host or '-' for b in blocks})}
        need = {f"bench-node-{n}": -(-sum(args.allocs for i in range(args.procs) if i % args.nodes == n) // 64)
                for n in range(args.nodes)}
        print(f"  blocks claimed     {len(blocks)}  " + ", ".join(f"{n}: {c}" for n, c in per_node.items())
              + f"  ({'exactly what was needed' if per_node == need else f'needed {sum(need.values())}'})")
        t0 = time.perf_counter()
        handles = list(ipam.handles())
        for h in handles:
            ipam.release_by_handle(h)
        rel = time.perf_counter() - t0
        left = sum(b.in_use for b in ipam.blocks())
        print(f"  release by handle  {len(handles) / rel:.0f}/s single process, {left} left in use")
        return distinct == total and left == 0
    finally:
        stop_etcd(server)
        if lock_dir:
            shutil.rmtree(lock_dir, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--procs", type=int, default=8)
    ap.add_argument("--allocs", type=int, default=200)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--mode", choices=("both", "lock", "nolock"), default="both")
    args = ap.parse_args()
    ok = True
    for lock in {"both": (False, True), "lock": (True,), "nolock": (False,)}[args.mode]:
        ok = one_round(args, lock) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
