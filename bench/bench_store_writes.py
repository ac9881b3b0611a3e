"""What a manifest write costs when etcd holds a whole cluster: `Datastore.apply_all`
of 50 WorkloadEndpoints (one per namespace, half new and half updates of existing
ones) with 100,000 WorkloadEndpoints in etcd. Target: p99 <= 100 ms.

Starts its own etcd on a free loopback port, puts the endpoints raw (big
transactions, no validation: the setup is not what is measured), then times N rounds
of `apply_all` (validation, the read before the write, the CAS transaction). Prints
p50/p99 wall time, this process's and etcd's CPU per round, and how many keys etcd
returned per round (counted on the client's replies).

"before" runs the same rounds with the read the datastore used until issue 22 (a
prefix read of every namespace directory written to), copied here as
`old_read_many`, on the same etcd; `--no-before` skips it.

Run: .venv/bin/python bench/bench_store_writes.py [--endpoints 100000]
     [--namespaces 50] [--rounds 40] [--before-rounds 5] [--no-before]
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import statistics
import sys
import time
from typing import Any, Sequence

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from etcd_server import start_etcd, stop_etcd  # noqa: E402

import orjson  # noqa: E402

from calico_net.datastore import store  # noqa: E402
from calico_net.datastore.etcd import EtcdClient, op_put  # noqa: E402
from calico_net.datastore.etcdpb import rpc_pb2 as pb  # noqa: E402
from calico_net.datastore.store import Datastore, resource_key  # noqa: E402

NET = ipaddress.ip_network("198.18.0.0/15")   # 131,072 addresses: one per endpoint


def proc_cpu(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CountingClient(EtcdClient):
    """The real client, counting the KVs in etcd's range replies (plain or in a txn)."""

    returned = 0

    def _post(self, call: str, request: Any) -> Any:
        reply = super()._post(call, request)
        if isinstance(reply, pb.RangeResponse):
            self.returned += len(reply.kvs)
        elif isinstance(reply, pb.TxnResponse):
            self.returned += sum(len(r.response_range.kvs) for r in reply.responses
                                 if r.WhichOneof("response") == "response_range")
        return reply


def old_read_many(self: Datastore, keys: Sequence[str]) -> dict[str, tuple[dict[str, Any], int]]:
    """`Datastore._read_many` as it was before issue 22 (for the "before" figures)."""
    out: dict[str, tuple[dict[str, Any], int]] = {}
    if len(keys) <= 8:
        for key in keys:
            doc, rev = self._read_for_write(key)
            if doc is not None:
                out[key] = (doc, rev)
        return out
    wanted = set(keys)
    dirs = {k.rsplit("/", 1)[0] + "/" for k in keys}
    for d in sorted(dirs):
        kvs, _ = self.client.get_prefix(d)
        for kv in kvs:
            if kv.key in wanted:
                out[kv.key] = (store._decoded_or_empty(kv), kv.mod_revision)
    return out


def wep(ns: str, name: str, index: int, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"node": f"node-{index % 1000}", "orchestrator": "k8s", "pod": name, "endpoint": "eth0",
                 "interfaceName": f"cali{index:011d}",
                 "ipNetworks": [f"{NET.network_address + index}/32"]},
    }


def fill(client: EtcdClient, endpoints: int, namespaces: int) -> float:
    """Put `endpoints` WEPs spread evenly over the namespaces, 5,000 per transaction."""
    t = time.perf_counter()
    ops = []
    for i in range(endpoints):
        ns = f"ns{i % namespaces:03d}"
        name = f"node-{i % 1000}-k8s-pod{i:06d}-eth0"
        doc = wep(ns, name, i, {"app": f"a{i % 97}"})
        doc["metadata"].update(uid=f"00000000-0000-0000-0000-{i:012d}", creationTimestamp="2026-01-01T00:00:00Z")
        ops.append(op_put(resource_key("WorkloadEndpoint", name, ns), orjson.dumps(doc)))
        if len(ops) == 5000:
            client.txn([], ops)
            ops = []
    if ops:
        client.txn([], ops)
    return time.perf_counter() - t


def rounds(label: str, ds: Datastore, client: CountingClient, etcd_pid: int, n: int, namespaces: int,
           endpoints: int, tag: str) -> list[float]:
    """`n` apply_alls of one WEP per namespace: even namespaces update an existing
    endpoint (a different one each round), odd ones create a new endpoint."""
    times: list[float] = []
    returned: list[int] = []
    c0, e0 = time.process_time(), proc_cpu(etcd_pid)
    for r in range(n):
        docs = []
        for k in range(namespaces):
            ns = f"ns{k:03d}"
            if k % 2 == 0:
                i = (r * namespaces + k) % endpoints     # lies in ns{k} since i % namespaces == k
                docs.append(wep(ns, f"node-{i % 1000}-k8s-pod{i:06d}-eth0", i, {"app": "updated", "round": str(r)}))
            else:
                i = endpoints + r * namespaces + k
                docs.append(wep(ns, f"{tag}-r{r:04d}-eth0", i % NET.num_addresses, {"app": "new"}))
        client.returned = 0
        t = time.perf_counter()
        out = ds.apply_all(docs)
        times.append(time.perf_counter() - t)
        returned.append(client.returned)
        assert len(out) == namespaces, "apply_all did not write every document"
    cpu, ecpu = time.process_time() - c0, proc_cpu(etcd_pid) - e0
    ms = sorted(x * 1000 for x in times)
    p99 = ms[min(len(ms) - 1, int(round(0.99 * (len(ms) - 1))))]
    print(f"  {label:<7} {n:3d} rounds: p50 {statistics.median(ms):7.1f} ms  p99 {p99:7.1f} ms  "
          f"max {ms[-1]:7.1f} ms | per round: client CPU {cpu / n * 1000:6.1f} ms, "
          f"etcd CPU {ecpu / n * 1000:6.1f} ms, keys etcd returned {statistics.mean(returned):.0f}")
    return ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--endpoints", type=int, default=100_000)
    ap.add_argument("--namespaces", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--before-rounds", type=int, default=5)
    ap.add_argument("--no-before", action="store_true")
    args = ap.parse_args()
    if args.endpoints + (args.rounds + args.before_rounds) * args.namespaces > NET.num_addresses:
        ap.error(f"at most {NET.num_addresses} endpoints in {NET}")
    server = start_etcd()
    pid = server.proc.pid
    try:
        client = CountingClient(server.client().config)
        ds = Datastore(client)
        print(f"Datastore.apply_all of {args.namespaces} WorkloadEndpoints (one per namespace, half new, "
              f"half updates) ({os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at start)")
        took = fill(client, args.endpoints, args.namespaces)
        print(f"  {args.endpoints:,} WorkloadEndpoints in {args.namespaces} namespaces put in {took:.1f} s; "
              f"target p99 <= 100 ms")
        # one round outside the measurement: connection set-up, model import
        rounds("warm-up", ds, client, pid, 1, args.namespaces, args.endpoints, "warm")
        after = rounds("after", ds, client, pid, args.rounds, args.namespaces, args.endpoints, "after")
        if not args.no_before:
            Datastore._read_many = old_read_many       # type: ignore[method-assign]
            before = rounds("before", ds, client, pid, args.before_rounds, args.namespaces, args.endpoints, "before")
            print(f"  p50 before/after: {statistics.median(before) / statistics.median(after):.0f}x")
        client.close()
    finally:
        stop_etcd(server)


if __name__ == "__main__":
    main()
