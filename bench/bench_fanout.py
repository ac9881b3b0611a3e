#!/usr/bin/env python3
"""etcd watch fan-out: N watchers on the resource prefix while remote label churn runs.

Every agent holds one watch on `/calico/resources/v3/projectcalico.org/` over its
own TCP connection, so every write is sent by etcd once per agent. This bench asks
what that costs etcd, and how late the events arrive, at N watchers:

* a real etcd (tests/etcd_server.py) filled like the cluster of issue 22:
  `--remote` WorkloadEndpoints on `--nodes` nodes, `--policies` policies and
  `--profiles` profiles (bench_scale's documents);
* for each N of `--sweep` (and each churn rate of `--rates`): N watch streams opened
  from the current revision, then `--churn` changes/s for `--churn-seconds`, one put
  per change, each a real WorkloadEndpoint update (its labels change);
* figures: etcd CPU % over the churn (from /proc), etcd CPU per delivered event
  (above the writes' own cost at 0 watchers), write -> delivery latency p50/p99/max
  on the sampled streams, the events each stream got against those written, the
  watcher processes' own CPU %, and the lag of the last delivery after the last write.

Shape of the watchers (a stand-in for N agents that leaves as much of a small
machine as it can to etcd; its own CPU is reported): each watcher is its own TCP connection
carrying one HTTP/2 stream with one etcd watch, as an agent's is, so etcd keeps N
connections, N gRPC streams and N watchers and writes every event N times, exactly
as for N agents. The client side is not gRPC: a minimal HTTP/2 client (preface,
SETTINGS with a 2 GiB window, one HEADERS and one DATA frame holding the
WatchCreateRequest) written straight to the socket, and then:

* `--sample` streams (in one process, read at once) parse every frame and every
  WatchResponse (protobuf) and time each event by its mod_revision;
* the rest (split over `--drain-procs` processes, woken every `--drain-tick` s)
  only read the bytes and count the events in them (one `WorkloadEndpoint` per
  event value), so reading a stream costs about a recv() per tick, not a parse per
  event. Reading in ticks does not change what etcd sends or how: 50 ms of events
  at 500/s is tens of KB, which the socket buffers hold.

The changes are written by `--writers` threads sharing one schedule (a cluster's
writes come from many clients, so one slow put does not hold back the rest); a
change not started within a second after the period is not written, and the run
says how many were. Each point's line ends with whether it kept up: every change
written in time, every stream got every event, the last within a second.

    .venv/bin/python bench/bench_fanout.py --quick     # 10k endpoints, sweep 0,50,200
    .venv/bin/python bench/bench_fanout.py             # 100k endpoints: watchers 0,100,300,1000
                                                       # at 500/s, then 1000 at 100,200,300/s
    .venv/bin/python bench/bench_fanout.py --sweep 0,1000 --rates 50,100 --writers 4
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import resource
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
PREFIX = "/calico/resources/v3/projectcalico.org/"
MARKER = b"WorkloadEndpoint"      # once per event: the value's kind (keys are lower case)
WINDOW = 2**31 - 1                # HTTP/2 flow-control window: never runs out in a run

QUICK = dict(remote=10_000, nodes=100, policies=200, profiles=20, watchers=200, churn=500,
             churn_seconds=5, sweep="0,50,200", rates="")
FULL = dict(remote=100_000, nodes=1000, policies=1000, profiles=50, watchers=1000, churn=500,
            churn_seconds=10, sweep="0,100,300,1000", rates="100,200,300")


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --- the watcher processes ----------------------------------------------------------

def frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((ftype, flags)) + sid.to_bytes(4, "big") + payload


def open_bytes(authority: str, start_rev: int) -> bytes:
    """Everything a client sends to open one watch: the HTTP/2 preface, our SETTINGS
    (no push, a 2 GiB stream window), the connection window raised to 2 GiB, a POST to
    etcd's Watch method and the WatchCreateRequest as its first gRPC message (the
    request half stays open, as the agent's does)."""
    from calico_net.datastore.etcd import prefix_end
    from calico_net.datastore.etcdpb import rpc_pb2 as pb

    create = pb.WatchRequest(create_request=pb.WatchCreateRequest(
        key=PREFIX.encode(), range_end=prefix_end(PREFIX), start_revision=start_rev,
        progress_notify=True)).SerializeToString()
    # HPACK "literal header field without indexing, new name", no Huffman
    hdrs = b"".join(b"\x00" + bytes((len(n),)) + n + bytes((len(v),)) + v for n, v in (
        (b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/etcdserverpb.Watch/Watch"),
        (b":authority", authority.encode()), (b"content-type", b"application/grpc"),
        (b"te", b"trailers")))
    settings = struct.pack(">HIHI", 0x2, 0, 0x4, WINDOW)
    return (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, settings)
            + frame(8, 0, 0, struct.pack(">I", WINDOW - 65535)) + frame(1, 0x4, 1, hdrs)
            + frame(0, 0, 1, b"\x00" + len(create).to_bytes(4, "big") + create))


class Conn:
    """One watcher: one TCP connection, one HTTP/2 stream, one etcd watch."""

    def __init__(self, host: str, port: int, start_rev: int, parse_all: bool) -> None:
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(open_bytes(f"{host}:{port}", start_rev))
        self.sock.setblocking(False)
        self.parse_all = parse_all
        self.buf = bytearray()       # HTTP/2 bytes not yet parsed
        self.grpc = bytearray()      # gRPC message bytes not yet parsed
        self.created = False
        self.count = 0               # events seen
        self.responses = 0           # parsed streams: WatchResponses that held events
        self.t_last = 0.0            # when the last one came
        self.tail = b""              # the last bytes drained (a marker may straddle reads)
        self.revs: list[int] = []    # parsed streams: each event's mod_revision ...
        self.times: list[float] = []  # ... and when it came

    def feed(self, data: bytes, now: float) -> None:
        if self.created and not self.parse_all:
            c = data.count(MARKER) + (self.tail + data[:len(MARKER) - 1]).count(MARKER)
            self.tail = data[-(len(MARKER) - 1):]
            if c:
                self.count += c
                self.t_last = now
            return
        self.buf += data
        self._frames(now)
        if self.created and not self.parse_all and self.buf:
            rest, self.buf = bytes(self.buf), bytearray()   # the stream is open: drain from here
            self.feed(rest, now)

    def _frames(self, now: float) -> None:
        buf, pos = self.buf, 0
        while len(buf) - pos >= 9 and not (self.created and not self.parse_all):
            length = int.from_bytes(buf[pos:pos + 3], "big")
            ftype, flags = buf[pos + 3], buf[pos + 4]
            if len(buf) - pos - 9 < length:
                break
            payload = bytes(buf[pos + 9:pos + 9 + length])
            pos += 9 + length
            if ftype == 0:                               # DATA
                if flags & 0x8:
                    payload = payload[1:len(payload) - payload[0]]
                self.grpc += payload
                self._messages(now)
            elif ftype == 4 and not flags & 0x1:         # SETTINGS: acknowledge
                self.sock.send(frame(4, 0x1, 0))
            elif ftype == 6 and not flags & 0x1:         # PING: answer
                self.sock.send(frame(6, 0x1, 0, payload))
            elif ftype == 7:                             # GOAWAY
                raise RuntimeError(f"etcd sent GOAWAY: {payload[8:200]!r}")
            elif ftype == 3:                             # RST_STREAM
                raise RuntimeError(f"etcd reset the stream: {payload.hex()}")
            elif ftype == 1 and flags & 0x1:             # trailers: the call ended
                raise RuntimeError(f"the watch call ended: {payload[:200]!r}")
        del buf[:pos]

    def _messages(self, now: float) -> None:
        from calico_net.datastore.etcdpb import rpc_pb2 as pb

        g = self.grpc
        while len(g) >= 5:
            n = int.from_bytes(g[1:5], "big")
            if len(g) < 5 + n:
                break
            resp = pb.WatchResponse.FromString(bytes(g[5:5 + n]))
            del g[:5 + n]
            if resp.created:
                self.created = True
            if resp.canceled or resp.compact_revision:
                raise RuntimeError(f"watch cancelled: {resp.cancel_reason or resp.compact_revision}")
            for ev in resp.events:
                self.revs.append(ev.kv.mod_revision)
                self.times.append(now)
            if resp.events:
                self.responses += 1
            self.count += len(resp.events)
            if self.count:
                self.t_last = now
            if self.created and not self.parse_all:
                return


def child(args: argparse.Namespace) -> int:
    """A watcher process: open the connections, say `ready` once every watch is
    created, `done` once every stream has the events it is told to expect (`expect N`
    on stdin, once the writes are over), and on `stop`
    print its figures as one JSON line."""
    sys.path.insert(0, str(REPO / "src"))
    raise_nofile()
    host, port = args.endpoint.rsplit(":", 1)
    parse_all = args.child == "sample"
    conns = [Conn(host, int(port), args.start_rev, parse_all) for _ in range(args.conns)]
    by_fd = {c.sock.fileno(): c for c in conns}
    ep = select.epoll()
    for fd in by_fd:
        ep.register(fd, select.EPOLLIN)
    stdin = sys.stdin.fileno()
    ep.register(stdin, select.EPOLLIN)
    ready = done = False
    n_done = 0
    expect = 1 << 62               # told once the writes are over
    deadline = time.monotonic() + 900
    tick = 0.0 if parse_all else args.drain_tick
    while time.monotonic() < deadline:
        for fd, _ in ep.poll(1.0):
            if fd == stdin:
                line = sys.stdin.readline()
                if line.startswith("expect "):
                    expect = int(line.split()[1])
                    n_done = sum(1 for c in conns if c.count >= expect)
                elif not line or line.strip() == "stop":
                    out = {"counts": [c.count for c in conns], "t_last": [c.t_last for c in conns]}
                    if parse_all:
                        out["revs"] = [c.revs for c in conns]
                        out["times"] = [c.times for c in conns]
                        out["responses"] = [c.responses for c in conns]
                    print(json.dumps(out), flush=True)
                    return 0
                continue
            c = by_fd[fd]
            data = c.sock.recv(1 << 20)
            if not data:
                raise RuntimeError("etcd closed a watch connection")
            before = c.count
            c.feed(data, time.perf_counter())
            if before < expect <= c.count:
                n_done += 1
        if not ready and all(c.created for c in conns):
            ready = True
            print("ready", flush=True)
        if ready and not done and n_done >= len(conns):
            done = True
            print("done", flush=True)
        if tick:
            time.sleep(tick)
    return 1


# --- the bench ------------------------------------------------------------------------

class Child:
    def __init__(self, role: str, endpoint: str, start_rev: int, conns: int, tick: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--child", role, "--endpoint", endpoint, "--start-rev", str(start_rev),
             "--conns", str(conns), "--drain-tick", str(tick)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.role = role
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put("")

    def wait_for(self, word: str, until: float) -> bool:
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, until - time.perf_counter()))
            except queue.Empty:
                return False
            if not line:
                raise RuntimeError(f"watcher process ({self.role}) exited: {self.proc.wait()}")
            if line.strip() == word:
                return True

    def tell(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def result(self) -> dict:
        self.tell("stop")
        while True:
            line = self.lines.get(timeout=60)
            if not line:
                raise RuntimeError(f"watcher process ({self.role}) exited: {self.proc.wait()}")
            if line.startswith("{"):
                return json.loads(line)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))] if s else float("nan")


def all_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds so far of every process: pid -> (name, seconds)."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                head, _, rest = open(f"/proc/{entry}/stat").read().rpartition(")")
            except OSError:
                continue
            f = rest.split()
            out[int(entry)] = (head.split("(", 1)[1], (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK"))
    return out


def churn(client, args, bs, rate: int, point: int) -> tuple[dict[int, float], list[float], int, float]:
    """`rate` changes/s for `--churn-seconds` from `--writers` threads (a cluster's
    writes come from many clients: one slow put does not hold back the others); each
    thread writes every W-th change on the shared schedule. A change not started
    within a second after the end of the period is not written. (revision -> time of its put, put
    latencies in ms, changes late by more than 50 ms, when the last put returned)."""
    import orjson

    from calico_net.datastore.store import resource_key

    n = int(rate * args.churn_seconds)
    step = max(1, args.remote // max(1, n))
    written: dict[int, float] = {}
    put_ms: list[float] = []
    late = [0]
    lock = threading.Lock()
    t0 = time.perf_counter() + 0.01
    end = t0 + args.churn_seconds + 1.0

    def writer(k: int) -> None:
        for j in range(k, n, args.writers):
            due = t0 + j / rate
            now = time.perf_counter()
            if now >= end:
                return
            if due > now:
                time.sleep(due - now)
            elif now - due > 0.05:
                with lock:
                    late[0] += 1
            i = (j * step) % args.remote
            d = bs.wep(i, bs.remote_node(i, args.nodes), args.profiles, role_shift=1 + point)
            t = time.perf_counter()
            rev = client.put(resource_key("WorkloadEndpoint", d["metadata"]["name"], d["metadata"]["namespace"]),
                             orjson.dumps(d))
            t2 = time.perf_counter()
            with lock:
                written[rev] = t
                put_ms.append((t2 - t) * 1000)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(args.writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return written, put_ms, late[0], time.perf_counter()


def run_point(etcd, client, args, bs, watchers: int, rate: int, point: int, base: dict | None) -> dict:
    """N watchers, churn at `rate`/s: the figures of one point."""
    endpoint = etcd.endpoints.split("://", 1)[1]
    start_rev = client.revision() + 1
    n_sample = min(args.sample, watchers)
    rest = watchers - n_sample
    n_drain = min(args.drain_procs, rest)
    children: list[Child] = []
    try:
        if n_sample:
            children.append(Child("sample", endpoint, start_rev, n_sample, 0.0))
        for k in range(n_drain):
            share = rest // n_drain + (1 if k < rest % n_drain else 0)
            children.append(Child("drain", endpoint, start_rev, share, args.drain_tick))
        t_open = time.perf_counter()
        for c in children:
            if not c.wait_for("ready", t_open + 120):
                raise RuntimeError(f"{watchers} watches not created in 120 s")
        opened = time.perf_counter() - t_open
        time.sleep(0.5)
        pids = [c.proc.pid for c in children]
        c0 = {p: bs.proc_cpu_s(p) for p in pids}
        all0 = all_cpu()
        e0, w0, t0 = bs.proc_cpu_s(etcd.proc.pid), bs.proc_cpu_s(os.getpid()), time.perf_counter()
        written, put_ms, late, t_writes = churn(client, args, bs, rate, point)
        n = len(written)
        for c in children:
            c.tell(f"expect {n}")
        all_done = True
        for c in children:
            all_done = c.wait_for("done", t_writes + args.drain_wait) and all_done
        t_end = time.perf_counter()
        ecpu = bs.proc_cpu_s(etcd.proc.pid) - e0
        wcpu = bs.proc_cpu_s(os.getpid()) - w0
        ccpu = {p: bs.proc_cpu_s(p) - c0[p] for p in pids}
        all1 = all_cpu()
        results = [(c, c.result()) for c in children]
    finally:
        for c in children:
            c.kill()
    span = t_end - t0
    offered = int(rate * args.churn_seconds)
    fig = dict(watchers=watchers, rate=rate, n=n, offered=offered, opened_s=opened,
               rate_written=n / (t_writes - t0), late=late, put_p50=pct(put_ms, 50), put_p99=pct(put_ms, 99),
               etcd_cpu_s=ecpu, etcd_cpu_pct=100 * ecpu / span, span_s=span, all_done=all_done,
               writer_cpu_pct=100 * wcpu / span,
               ours_pct=100 * (ecpu + wcpu + sum(ccpu.values())) / span / os.cpu_count())
    ours = {etcd.proc.pid, os.getpid(), *pids}
    busiest = sorted(((cpu - all0[p][1], name) for p, (name, cpu) in all1.items() if p in all0 and p not in ours),
                     reverse=True)[:3]
    fig["others"] = ", ".join(f"{name} {100 * cpu / span:.0f} %" for cpu, name in busiest if cpu / span >= 0.03)
    born = sum(cpu for p, (_, cpu) in all1.items() if p not in all0 and p not in ours)
    if born / span >= 0.03:   # processes that started during the churn (tests, builds)
        fig["others"] += f"{', ' if fig['others'] else ''}new processes {100 * born / span:.0f} %"
    last_write = max(written.values())
    counts: list[int] = []
    lags: list[float] = []
    lat: list[float] = []
    sample_counts: list[int] = []
    responses = 0
    sample_cpu = drain_cpu = 0.0
    for c, r in results:
        counts += r["counts"]
        lags += [(t - last_write) * 1000 for t in r["t_last"] if t]
        if c.role == "sample":
            sample_cpu += ccpu[c.proc.pid]
            responses += sum(r["responses"])
            for revs, times in zip(r["revs"], r["times"]):
                got = [(rev, t) for rev, t in zip(revs, times) if rev in written]
                sample_counts.append(len({rev for rev, _ in got}))
                lat += [(t - written[rev]) * 1000 for rev, t in got]
        else:
            drain_cpu += ccpu[c.proc.pid]
    deliveries = sum(min(k, n) for k in counts)
    fig.update(delivered=deliveries, expected=n * watchers,
               short_streams=sum(1 for k in counts if k < n), min_count=min(counts) if counts else n,
               max_count=max(counts) if counts else n,
               sample_min=min(sample_counts) if sample_counts else n,
               per_response=len(lat) / responses if responses else float("nan"),
               p50=pct(lat, 50), p99=pct(lat, 99), max=max(lat) if lat else float("nan"),
               lag_ms=max(lags) if lags else float("nan"),
               sample_cpu_pct=100 * sample_cpu / span, drain_cpu_pct=100 * drain_cpu / span)
    per_write = base["etcd_cpu_s"] / base["n"] if base else None
    fig["etcd_us_per_event"] = (1e6 * (ecpu - per_write * n) / deliveries
                                if per_write is not None and deliveries else float("nan"))
    # kept up: every change written within half a second of the period, every stream
    # got every one, the last within a second of the last write
    fig["kept_up"] = (n == offered and t_writes - t0 <= args.churn_seconds + 0.5 and all_done
                      and fig["short_streams"] == 0 and (not watchers or fig["lag_ms"] < 1000))
    line = (f"watchers={watchers} churn={rate}/s: {n} of {offered} changes written in {args.churn_seconds} s "
            f"({fig['rate_written']:.0f}/s, {late} >50 ms late, put p50 {fig['put_p50']:.1f} ms "
            f"p99 {fig['put_p99']:.1f} ms); etcd CPU {fig['etcd_cpu_pct']:.0f} % of one core "
            f"({ecpu:.2f} s over {span:.1f} s)")
    if watchers:
        line += (f", {fig['etcd_us_per_event']:.1f} us per delivered event above the writes' own cost; "
                 f"write -> sampled watcher ({len(sample_counts)} streams): p50 {fig['p50']:.1f} ms, "
                 f"p99 {fig['p99']:.1f} ms, max {fig['max']:.1f} ms; events per stream {fig['min_count']}"
                 f"..{fig['max_count']} of {n} ({fig['short_streams']} streams short, sampled streams "
                 f"min {fig['sample_min']}; {fig['per_response']:.1f} events per watch response); last delivery {fig['lag_ms']:.0f} ms after the last write; "
                 f"watcher processes CPU: sampled {fig['sample_cpu_pct']:.0f} %, draining "
                 f"{fig['drain_cpu_pct']:.0f} % of one core; watches opened in {opened:.1f} s")
    line += (f"; writer CPU {fig['writer_cpu_pct']:.0f} %; etcd, writer and watchers together "
             f"{fig['ours_pct']:.0f} % of the machine's {os.cpu_count()} cores; other processes above 3 % "
             f"of one core: {fig['others'] or 'none'}; kept up: {'yes' if fig['kept_up'] else 'NO'}; "
             f"load {open('/proc/loadavg').read().split()[0]}")
    print(line, flush=True)
    return fig


def inner(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(REPO / "src"))
    sys.path.insert(0, str(REPO / "tests"))
    sys.path.insert(0, str(BENCH))
    import bench_scale as bs
    from etcd_server import start_etcd, stop_etcd

    raise_nofile()     # etcd inherits it: one socket per watcher
    sweep = sorted({int(x) for x in args.sweep.split(",") if x.strip()} | {args.watchers})
    rates = sorted({int(x) for x in args.rates.split(",") if x.strip()})
    print(f"load average {' '.join(open('/proc/loadavg').read().split()[:3])}", flush=True)
    print(f"== fan-out bench: {args.remote} endpoints on {args.nodes} nodes, {args.policies} policies, "
          f"{args.profiles} profiles; watchers {','.join(map(str, sweep))} at churn {args.churn}/s for "
          f"{args.churn_seconds} s" + (f"; then {args.watchers} watchers at {args.rates}/s" if rates else ""),
          flush=True)
    print(f"watcher shape: one TCP connection, one HTTP/2 stream, one watch per watcher (as one agent); "
          f"{args.sample} streams parsed and timed in one process, the rest drained by "
          f"{args.drain_procs} processes every {args.drain_tick * 1000:.0f} ms", flush=True)
    etcd = start_etcd()
    try:
        client = etcd.client()
        t = time.perf_counter()
        bs.put_raw(client, bs.config_docs(args.policies, args.profiles))
        for s in range(0, args.remote, 20_000):
            bs.put_raw(client, [bs.wep(i, bs.remote_node(i, args.nodes), args.profiles)
                                for i in range(s, min(args.remote, s + 20_000))])
        print(f"setup: {args.remote} endpoints put in {time.perf_counter() - t:.1f} s", flush=True)
        figs = []
        base = None
        point = 0
        for w in sweep:
            fig = run_point(etcd, client, args, bs, w, args.churn, point, base)
            point += 1
            if w == 0:
                base = fig
            figs.append(fig)
        for r in rates:
            if r == args.churn:
                continue
            figs.append(run_point(etcd, client, args, bs, args.watchers, r, point, base))
            point += 1
        top = [f for f in figs if f["watchers"] == args.watchers and f["rate"] == args.churn][0]
        keeps = sorted(f["rate"] for f in figs if f["watchers"] == args.watchers and f["kept_up"])
        sweep_cpu = " ".join(f"{f['watchers']}:{f['etcd_cpu_pct']:.0f}" for f in figs if f["rate"] == args.churn)
        print(f"SUMMARY remote={args.remote} watchers={args.watchers} churn={args.churn} "
              f"written={top['n']}/{top['offered']} written_per_s={top['rate_written']:.0f} "
              f"put_p99_ms={top['put_p99']:.1f} etcd_cpu_pct={top['etcd_cpu_pct']:.0f} "
              f"etcd_us_per_event={top['etcd_us_per_event']:.1f} events_per_response={top['per_response']:.1f} p50_ms={top['p50']:.1f} "
              f"p99_ms={top['p99']:.1f} max_ms={top['max']:.1f} lag_ms={top['lag_ms']:.0f} "
              f"delivered={top['delivered']}/{top['expected']} sample_cpu_pct={top['sample_cpu_pct']:.0f} "
              f"drain_cpu_pct={top['drain_cpu_pct']:.0f} ours_of_machine_pct={top['ours_pct']:.0f} "
              f"etcd_cpu_pct_by_watchers={sweep_cpu} "
              f"kept_up_at_rates={','.join(map(str, keeps)) or 'none'} "
              f"loadavg={open('/proc/loadavg').read().split()[0]}", flush=True)
    finally:
        stop_etcd(etcd)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes for development")
    for k, v in FULL.items():
        ap.add_argument("--" + k.replace("_", "-"), type=type(v), default=None)
    ap.add_argument("--sample", type=int, default=20, help="streams parsed and timed")
    ap.add_argument("--drain-procs", type=int, default=2, help="processes draining the other streams")
    ap.add_argument("--drain-tick", type=float, default=0.05, help="seconds between the drainers' reads")
    ap.add_argument("--child", choices=("sample", "drain"), help=argparse.SUPPRESS)
    ap.add_argument("--endpoint", help=argparse.SUPPRESS)
    ap.add_argument("--start-rev", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--conns", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--writers", type=int, default=16, help="writer threads sharing the churn schedule")
    ap.add_argument("--drain-wait", type=float, default=30.0,
                    help="seconds after the last write to wait for every stream to catch up")
    args = ap.parse_args()
    if args.child:
        return child(args)
    base = QUICK if args.quick else FULL
    for k, v in base.items():
        if vars(args)[k] is None:
            vars(args)[k] = v
    return inner(args)


if __name__ == "__main__":
    sys.exit(main())
