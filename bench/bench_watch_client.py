#!/usr/bin/env python3
"""What one etcd watch event costs the agent's process, and etcd, by client.

A real etcd (`tests/etcd_server.py`); a watcher process opens one watch on the
resource prefix and takes 5,000 events while this process writes one
WorkloadEndpoint update every 2 ms (500 changes/s, the churn of issue 22). For each
client it prints the watcher's CPU per event (measured inside it, from its first
event to its last) and etcd's CPU over the writes:

* `agent`: the agent's own `EtcdClient.watch_prefix` (its HTTP/2 stream,
  `datastore.etcd_h2`), events only;
* `agent+parse`: the same, each event parsed as the syncer does (`parse_kv`);
* `grpc`: the bare gRPC Watch stream (bidirectional, read through gRPC's
  channel thread), responses only;
* `grpc-unary`: the same method called as a unary-stream call on a channel with
  gRPC's SingleThreadedUnaryStream option (read in the caller's thread);
* `gateway`: etcd's JSON gateway (`POST /v3/watch`, one JSON object per line),
  each event's key and value base64-decoded;
* `h2`: the bare loop over an HTTP/2 socket (frames, messages, WatchResponse
  decoded), the floor for any client in Python.

    .venv/bin/python bench/bench_watch_client.py            # all of them, once
    .venv/bin/python bench/bench_watch_client.py agent h2 agent h2
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "src"), str(REPO / "tests"), str(REPO / "bench")]
PREFIX = "/calico/resources/v3/projectcalico.org/"
EVENTS, RATE = 5000, 500
CLIENTS = ("agent", "agent+parse", "grpc", "grpc-unary", "gateway", "h2")


def child(endpoint: str, client: str, start: int) -> None:
    """The watcher: take EVENTS events with `client`, print its CPU per event."""
    n, t0 = 0, None

    def count(k: int) -> bool:
        nonlocal n, t0
        if t0 is None:
            t0 = (time.process_time(), time.perf_counter())
        n += k
        return n >= EVENTS

    if client.startswith("agent"):
        from calico_net.agent.syncer import parse_kv
        from calico_net.datastore.config import EtcdConfig
        from calico_net.datastore.etcd import EtcdClient

        watch = EtcdClient(EtcdConfig(endpoints=[endpoint])).watch_prefix(PREFIX, start)
        for batch in watch:
            if client == "agent+parse":
                for ev in batch:
                    parse_kv(ev.kv, local_node="bench-node")
            if count(len(batch)):
                break
    elif client == "grpc-unary":
        import grpc

        from calico_net.datastore.etcd import prefix_end
        from calico_net.datastore.etcdpb import rpc_pb2 as pb

        import grpc.experimental

        channel = grpc.insecure_channel(endpoint.split("//", 1)[1], options=[
            (grpc.experimental.ChannelOptions.SingleThreadedUnaryStream, 1)])
        call = channel.unary_stream("/etcdserverpb.Watch/Watch",
                                    request_serializer=pb.WatchRequest.SerializeToString,
                                    response_deserializer=pb.WatchResponse.FromString)(
            pb.WatchRequest(create_request=pb.WatchCreateRequest(
                key=PREFIX.encode(), range_end=prefix_end(PREFIX), start_revision=start)))
        for reply in call:
            if reply.events and count(len(reply.events)):
                break
    elif client == "grpc":
        import grpc

        from calico_net.datastore.etcd import prefix_end
        from calico_net.datastore.etcdpb import rpc_pb2 as pb
        from calico_net.datastore.etcdpb import rpc_pb2_grpc as rpc

        done = threading.Event()

        def requests():
            yield pb.WatchRequest(create_request=pb.WatchCreateRequest(
                key=PREFIX.encode(), range_end=prefix_end(PREFIX), start_revision=start))
            done.wait()

        call = rpc.WatchStub(grpc.insecure_channel(endpoint.split("//", 1)[1])).Watch(requests())
        for reply in call:
            if reply.events and count(len(reply.events)):
                break
    elif client == "h2":
        import socket

        import bench_fanout as f

        from calico_net.datastore.etcdpb import rpc_pb2 as pb

        host, port = endpoint.split("//", 1)[1].rsplit(":", 1)
        sock = socket.create_connection((host, int(port)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(f.open_bytes(f"{host}:{port}", start))
        buf, grpc_buf, done = bytearray(), bytearray(), False
        while not done:
            buf += sock.recv(1 << 16)
            pos = 0
            while len(buf) - pos >= 9:
                length = int.from_bytes(buf[pos:pos + 3], "big")
                ftype, flags = buf[pos + 3], buf[pos + 4]
                if len(buf) - pos - 9 < length:
                    break
                payload = bytes(buf[pos + 9:pos + 9 + length])
                pos += 9 + length
                if ftype == 0:
                    grpc_buf += payload
                    while len(grpc_buf) >= 5:
                        m = int.from_bytes(grpc_buf[1:5], "big")
                        if len(grpc_buf) < 5 + m:
                            break
                        resp = pb.WatchResponse.FromString(bytes(grpc_buf[5:5 + m]))
                        del grpc_buf[:5 + m]
                        if resp.events and count(len(resp.events)):
                            done = True
                elif ftype == 4 and not flags & 0x1:
                    sock.sendall(f.frame(4, 0x1, 0))
                elif ftype == 6 and not flags & 0x1:
                    sock.sendall(f.frame(6, 0x1, 0, payload))
            del buf[:pos]
    else:
        import base64
        import http.client

        import orjson

        from calico_net.datastore.etcd import prefix_end

        host, port = endpoint.split("//", 1)[1].rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port))
        conn.request("POST", "/v3/watch", body=orjson.dumps({"create_request": {
            "key": base64.b64encode(PREFIX.encode()).decode(),
            "range_end": base64.b64encode(prefix_end(PREFIX)).decode(), "start_revision": start}}))
        resp = conn.getresponse()
        while True:
            line = resp.readline()
            if not line:
                break
            events = orjson.loads(line).get("result", {}).get("events") or ()
            for ev in events:
                kv = ev["kv"]
                base64.b64decode(kv["key"]), base64.b64decode(kv.get("value", ""))
            if events and count(len(events)):
                break
    cpu, wall = time.process_time() - t0[0], time.perf_counter() - t0[1]
    print(f"{client:12s} {n} events: {cpu / n * 1e6:4.0f} µs of CPU per event, "
          f"{100 * cpu / wall:4.1f} % of a core", end="", flush=True)
    os._exit(0)


def main(clients: list[str]) -> int:
    import orjson

    import bench_scale as b
    from calico_net.datastore.store import resource_key
    from etcd_server import start_etcd, stop_etcd

    print(f"load average {' '.join(open('/proc/loadavg').read().split()[:3])}; "
          f"{EVENTS} events at {RATE}/s per client", flush=True)
    etcd = start_etcd()
    try:
        client = etcd.client()
        for name in clients:
            start = client.revision() + 1
            p = subprocess.Popen([sys.executable, __file__, "--child", etcd.endpoints, name, str(start)])
            time.sleep(1.5)                      # the watcher is up and watching
            e0, t0 = b.proc_cpu_s(etcd.proc.pid), time.perf_counter()
            for j in range(EVENTS):
                due = t0 + j / RATE
                now = time.perf_counter()
                if due > now:
                    time.sleep(due - now)
                d = b.wep(j, "node-1", 50, role_shift=j)
                client.put(resource_key("WorkloadEndpoint", d["metadata"]["name"], d["metadata"]["namespace"]),
                           orjson.dumps(d))
            p.wait(60)
            print(f"; etcd {100 * (b.proc_cpu_s(etcd.proc.pid) - e0) / (time.perf_counter() - t0):.1f} % "
                  "of a core (the writes and this watcher)", flush=True)
    finally:
        stop_etcd(etcd)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    names = sys.argv[1:] or list(CLIENTS)
    bad = [n for n in names if n not in CLIENTS]
    if bad:
        sys.exit(f"unknown client {bad[0]!r}; one of {', '.join(CLIENTS)}")
    sys.exit(main(names))
