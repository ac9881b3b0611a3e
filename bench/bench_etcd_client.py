"""Figures for the etcd client: per-call cost of the unary transport, single puts, one
big transaction, a 10k range.

Starts its own etcd on a free loopback port and prints figures (no pass/fail). The
per-call rows compare our keep-alive `http.client` transport (what `EtcdClient` uses)
with a POST through etcd3gw's `requests` session (what it used before), on the same
request bodies; CPU is this process's CPU time (`time.process_time`) and etcd's (from
/proc), so they mean something on a loaded machine where wall time does not.

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

import orjson  # noqa: E402

from calico_net.datastore.etcd import (  # noqa: E402
    API_PATH,
    EtcdClient,
    _b64,
    cmp_mod_revision,
    op_get,
    op_put,
)


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


def requests_post(client: EtcdClient) -> Callable[[str, dict], dict]:
    """The old path: a POST through etcd3gw's requests session."""
    gw = client._clients[0]

    def post(path: str, body: dict) -> dict:
        resp = gw.session.post(gw.get_url(path), data=orjson.dumps(body), timeout=client.config.timeout,
                               headers={"Content-Type": "application/json"})
        resp.raise_for_status()
        return orjson.loads(resp.content)

    return post


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
        old = requests_post(client)
        new = client._post
        block = b"b" * 5000
        client.put("/calico/bench/block", block)
        get_body = {"key": _b64("/calico/bench/block")}
        for name, post in (("http.client keep-alive (EtcdClient)", new), ("requests session (etcd3gw, before)", old)):
            per_call(f"range of one 5 KB key, {name}", n, pid, lambda i, p=post: p("kv/range", get_body))
            per_call(f"put of 50 B, {name}", n, pid,
                     lambda i, p=post: p("kv/put", {"key": _b64(f"/calico/bench/p/{i}"), "value": _b64(b"v" * 50)}))

            state = {"rev": client.get("/calico/bench/block").mod_revision}

            def cas(i: int, p=post, state=state) -> None:
                body = {"compare": [cmp_mod_revision("/calico/bench/block", state["rev"]),
                                    cmp_mod_revision(f"/calico/bench/h/{name[:4]}/{i}", 0)],
                        "success": [op_put("/calico/bench/block", block),
                                    op_put(f"/calico/bench/h/{name[:4]}/{i}", b"h" * 60)],
                        "failure": [op_get("/calico/bench/block")]}
                resp = p("kv/txn", body)
                assert resp.get("succeeded"), "the benchmark's own compare-and-swap failed"
                state["rev"] = int(resp["header"]["revision"])

            per_call(f"CAS txn (5 KB block + handle), {name}", n, pid, cas)
        assert API_PATH == "/v3/"

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
