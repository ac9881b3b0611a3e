"""Figures for the etcd client choice: single puts, one big transaction, a 10k range.

Starts its own etcd on a free loopback port and prints figures (no pass/fail).
Run: .venv/bin/python bench/bench_etcd_client.py
"""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from etcd_server import start_etcd, stop_etcd  # noqa: E402

from calico_net.datastore.etcd import cmp_mod_revision, op_put  # noqa: E402


def main() -> None:
    server = start_etcd()
    try:
        client = server.client()
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
