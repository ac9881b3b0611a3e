"""Figures for the etcd client: per-call cost of the unary calls (gRPC), single puts,
one big transaction, a 10k range.

Starts its own etcd on a free loopback port and prints figures (no pass/fail). CPU
is this process's CPU time (`time.process_time`) and etcd's (from /proc), so they
mean something on a loaded machine where wall time does not.

Run: .venv/bin/python bench/bench_etcd_client.py [--calls 1000]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from etcd_server import start_etcd, stop_etcd  # noqa: E402

from calico_net.datastore.etcd import cmp_mod_revision, op_get, op_put  # noqa: E402


def proc_cpu(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def per_call(label: str, n: int, etcd_pid: int, call: Callable[[int], object]) -> None:
    call(-1)  # connection set up outside the measurement
    w0, c0, e0 = time.perf_counter(), time.process_time(), proc_cpu(etcd_pid)
    for i in range(n):
        call(i)
    wall, cpu, ecpu = time.perf_counter() - w0, time.process_time() - c0, proc_cpu(etcd_pid) - e0
    print(f"  {label:<68} client CPU {cpu / n * 1000:5.2f} ms  etcd CPU {ecpu / n * 1000:5.2f} ms  "
          f"wall {wall / n * 1000:5.2f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=1000)
    args = ap.parse_args()
    n = args.calls
    server = start_etcd()
    pid = server.proc.pid
    try:
        client = server.client()
        print(f"etcd client figures ({os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at start)")
        print(f"per call, mean of {n}:")
        block = b"b" * 5000
        client.put("/calico/bench/block", block)
        per_call("range of one 5 KB key", n, pid, lambda i: client.get("/calico/bench/block"))
        per_call("put of 50 B", n, pid, lambda i: client.put(f"/calico/bench/p/{i}", b"v" * 50))
        state = {"rev": client.get("/calico/bench/block").mod_revision}

        def cas(i: int) -> None:
            txn = client.txn([cmp_mod_revision("/calico/bench/block", state["rev"]),
                              cmp_mod_revision(f"/calico/bench/h/{i}", 0)],
                             [op_put("/calico/bench/block", block), op_put(f"/calico/bench/h/{i}", b"h" * 60)],
                             [op_get("/calico/bench/block")])
            assert txn.succeeded, "the benchmark's own compare-and-swap failed"
            state["rev"] = txn.revision

        per_call("CAS txn (5 KB block + handle)", n, pid, cas)

        value = b"x" * 400
        t = time.perf_counter()
        for i in range(500):
            client.put(f"/calico/bench/single/{i}", value)
        single = time.perf_counter() - t
        print(f"500 single puts:                {single:.2f} s ({500 / single:.0f}/s)")

        t = time.perf_counter()
        keys = [f"/calico/bench/txn/{i:05d}" for i in range(1000)]
        client.txn([cmp_mod_revision(k, 0) for k in keys], [op_put(k, value) for k in keys])
        print(f"1 txn of 1,000 CAS puts:        {time.perf_counter() - t:.3f} s")

        for start in range(0, 10000, 1000):
            ks = [f"/calico/bench/range/{i:05d}" for i in range(start, start + 1000)]
            client.txn([], [op_put(k, value) for k in ks])
        t = time.perf_counter()
        kvs, rev = client.get_prefix("/calico/bench/range/")
        print(f"range of {len(kvs):,} keys (400 B each): {time.perf_counter() - t:.3f} s")
    finally:
        stop_etcd(server)


if __name__ == "__main__":
    main()
