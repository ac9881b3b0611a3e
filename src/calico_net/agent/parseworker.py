"""The first snapshot parsed on both cores: a helper process parses chunks of it.

On a cold start the agent reads every resource in the cluster and parses it
(`syncer.parse_kv`: JSON, validation, the endpoint's policy record), about 15 µs
of Python per endpoint: 1.5 s of one core for 100,000 endpoints, while the
machine's other core has only etcd's reply pages to serve. `ParseWorker` runs
`python -m calico_net.agent.parseworker` next to the syncer for the first
snapshot only: the syncer hands it chunks of the snapshot's keys and values while
it parses other chunks itself (the worker takes a chunk only while it has fewer
than `MAX_OUTSTANDING` in hand, so neither waits for the other), and then the
worker exits.

What comes back for a chunk is plain data (`marshal`): for a WorkloadEndpoint
that comes with its policy record (`Resource.member`: the common shape, this
node's or another's), the record's fields, with its label set, profile list and
node name as numbers into tables the worker fills as it goes (each new entry sent
once), and the endpoint's held JSON (none for another node's), so that the
syncer builds exactly the `Resource` and `Member` that `parse_kv` would, sharing
label sets and names as `parse_kv` does, at about a sixth of the cost; for a key
the worker found bad, the reason (`BadObject`); and for anything else (policies,
profiles, endpoints of other shapes: a few per cent of a cluster) its position
in the chunk, which the syncer parses itself. The worker
runs the same `parse_kv` with the same node name, so what is accepted, refused
and why is the same whichever process parsed it.

If the worker cannot be started, dies, or says anything unexpected, the syncer
parses what it had handed over itself (`ParseWorker.failed`, logged once): the
worker is an accelerator, never a dependency.

Frames on both pipes: a 4-byte big-endian length, then a `marshal` payload.
To the worker: ``(node name,)`` once, then ``(chunk id, [(key, value bytes,
mod revision), ...])`` per chunk; a zero-length frame ends it. From the worker:
``("ready",)`` once, then ``(chunk id, members, bad, general, new labels, new
profiles, new nodes)`` per chunk.
"""
from __future__ import annotations

import logging
import marshal
import queue
import struct
import subprocess
import sys
import threading
from typing import Any, BinaryIO, Iterable

log = logging.getLogger(__name__)

_LEN = struct.Struct(">I")
MAX_OUTSTANDING = 2          # chunks the worker holds at once (one parsing, one queued)
CHUNK = 2000                 # keys per chunk
_MAX_FRAME = 1 << 30


# --- the worker process ----------------------------------------------------------------


def _read_frame(f: BinaryIO) -> bytes | None:
    head = f.read(4)
    if len(head) < 4:
        return None
    (n,) = _LEN.unpack(head)
    if n == 0:
        return None
    if n > _MAX_FRAME:
        raise ValueError(f"frame of {n} bytes")
    data = f.read(n)
    if len(data) < n:
        return None
    return data


def _write_frame(f: BinaryIO, payload: bytes) -> None:
    f.write(_LEN.pack(len(payload)) + payload)
    f.flush()


class ChunkParser:
    """The worker's side: `parse(items)` → the chunk's result (see the module
    docstring), with the tables' new entries since the last chunk."""

    def __init__(self, local_node: str) -> None:
        self.local_node = local_node
        self.labels: dict[tuple[tuple[str, str], ...], int] = {}
        self.profiles: dict[tuple[str, ...], int] = {}
        self.nodes: dict[str, int] = {}

    def parse(self, items: Iterable[tuple[str, bytes, int]]) -> tuple[Any, ...]:
        from calico_net.agent.syncer import BadObject, parse_kv
        from calico_net.datastore.etcd import KV

        members: list[tuple[Any, ...]] = []
        bad: list[tuple[int, str]] = []
        general: list[int] = []
        new_labels: list[tuple[tuple[str, str], ...]] = []
        new_profiles: list[tuple[str, ...]] = []
        new_nodes: list[str] = []
        labels, profiles, nodes, local = self.labels, self.profiles, self.nodes, self.local_node
        for i, (key, value, rev) in enumerate(items):
            try:
                res = parse_kv(KV(key, value, rev, 0, 0), local_node=local)
            except BadObject as e:
                bad.append((i, str(e)))
                continue
            m = res.member
            held = tuple.__getitem__(res, 3)
            if m is None or m.nets4 or m.nets6 or type(m.node) is not str \
                    or not (held is None or type(held) is bytes):
                general.append(i)
                continue
            items_ = tuple(m.own_labels.items())
            li = labels.get(items_)
            if li is None:
                li = labels[items_] = len(labels)
                new_labels.append(items_)
            pi = profiles.get(m.profiles)
            if pi is None:
                pi = profiles[m.profiles] = len(profiles)
                new_profiles.append(m.profiles)
            ni = nodes.get(m.node)
            if ni is None:
                ni = nodes[m.node] = len(nodes)
                new_nodes.append(m.node)
            members.append((i, res.name, res.namespace, li, pi, m.addrs4, m.addrs6, m.ports, ni, m.iface, held))
        return members, bad, general, new_labels, new_profiles, new_nodes


def worker_main() -> int:
    """`python -m calico_net.agent.parseworker`: parse chunks from stdin until a
    zero-length frame or the end of stdin."""
    from calico_net.agent import syncer

    syncer.model_kind("workloadendpoints")   # imported and warm before "ready"

    inp, out = sys.stdin.buffer, sys.stdout.buffer
    _write_frame(out, marshal.dumps(("ready",)))
    first = _read_frame(inp)
    if first is None:
        return 0
    (local_node,) = marshal.loads(first)
    parser = ChunkParser(local_node)
    while True:
        frame = _read_frame(inp)
        if frame is None:
            return 0
        chunk_id, items = marshal.loads(frame)
        _write_frame(out, marshal.dumps((chunk_id, *parser.parse(items))))


# --- the syncer's side ---------------------------------------------------------------------


class ParseWorker:
    """The worker process and the two threads that feed it and read its results."""

    def __init__(self, local_node: str) -> None:
        self.local_node = local_node
        self.failed: str | None = None       # why the worker is not used (once set, stays)
        self.ready = False
        self._closed = False
        self.outstanding: dict[int, list[Any]] = {}   # chunk id → the chunk's KVs
        self._next_id = 0
        self._lock = threading.Lock()
        self._send: queue.Queue[bytes | None] = queue.Queue()
        self.results: queue.Queue[tuple[Any, ...] | None] = queue.Queue()
        # the tables, indexed as the worker numbers their entries
        self.labels: list[Any] = []
        self.profiles: list[tuple[str, ...]] = []
        self.nodes: list[str] = []
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "calico_net.agent.parseworker"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
        except OSError as e:
            self.proc = None
            self.failed = f"cannot start the parse worker: {e}"
            return
        self._send.put(marshal.dumps((local_node,)))
        self._writer = threading.Thread(target=self._write_loop, name="parse-feed", daemon=True)
        self._reader = threading.Thread(target=self._read_loop, name="parse-results", daemon=True)
        self._writer.start()
        self._reader.start()

    # the threads

    def _write_loop(self) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        f = self.proc.stdin
        try:
            while True:
                payload = self._send.get()
                if payload is None:
                    f.write(_LEN.pack(0))
                    f.close()
                    return
                f.write(_LEN.pack(len(payload)))
                f.write(payload)
                f.flush()
        except (OSError, ValueError) as e:
            self._fail(f"the parse worker stopped reading: {e}")

    def _read_loop(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        f = self.proc.stdout
        try:
            while True:
                frame = _read_frame(f)
                if frame is None:
                    break
                msg = marshal.loads(frame)
                if msg == ("ready",):
                    self.ready = True
                    continue
                self.results.put(msg)
        except (OSError, ValueError, EOFError, TypeError) as e:
            self._fail(f"the parse worker sent something unreadable: {e}")
        else:
            if not self.failed and self.outstanding:
                self._fail("the parse worker ended early")
        self.results.put(None)
        # reaped here, not by `close`: the syncer does not wait for it to exit
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def _fail(self, why: str) -> None:
        with self._lock:
            if self.failed is None:
                self.failed = why
        self.results.put(None)

    # the syncer's calls (one thread)

    def can_take(self) -> bool:
        """Whether to hand the worker a chunk now (it is up and not behind)."""
        return self.failed is None and self.ready and len(self.outstanding) < MAX_OUTSTANDING

    def submit(self, chunk: list[Any]) -> None:
        cid = self._next_id
        self._next_id += 1
        self.outstanding[cid] = chunk
        self._send.put(marshal.dumps((cid, [(kv.key, kv.value, kv.mod_revision) for kv in chunk])))

    def take(self, block: bool) -> tuple[list[Any], tuple[Any, ...]] | None:
        """(the chunk, its result) for the next result in; None when there is none
        (not blocking) or the worker failed (then `failed` says why and the
        chunks it held are the caller's to parse: `take_back`)."""
        while True:
            try:
                msg = self.results.get(block=block, timeout=30 if block else None)
            except queue.Empty:
                if block:
                    self._fail("the parse worker took over 30 s for one chunk")
                return None
            if msg is None:
                if self.failed is not None:
                    return None
                continue
            try:
                cid, members, bad, general, new_labels, new_profiles, new_nodes = msg
                chunk = self.outstanding.pop(cid)
            except (ValueError, KeyError, TypeError):
                self._fail(f"the parse worker sent an unexpected result: {str(msg)[:200]}")
                return None
            from calico_net.agent.felix.records import _shared_profiles, shared_labels

            for items in new_labels:
                self.labels.append(shared_labels(dict(items)))
            for t in new_profiles:
                self.profiles.append(_shared_profiles(t))
            for n in new_nodes:
                self.nodes.append(sys.intern(n))
            return chunk, (members, bad, general)

    def take_back(self) -> list[list[Any]]:
        """The chunks handed over whose results never came (after a failure)."""
        chunks, self.outstanding = list(self.outstanding.values()), {}
        return chunks

    def close(self) -> None:
        """End the worker: the end of its input makes it exit, and the results
        thread reaps it (nothing here waits for that)."""
        if self.proc is None or self._closed:
            return
        self._closed = True
        self._send.put(None)


def build_members(worker: ParseWorker, chunk: list[Any], members: list[tuple[Any, ...]],
                  kind: str = "WorkloadEndpoint") -> Iterable[tuple[str, Any]]:
    """(etcd key, Resource) of each remote endpoint record in a chunk's result:
    the `Resource` and `Member` parse_kv makes for it."""
    from calico_net.agent.felix.records import Member
    from calico_net.agent.syncer import Resource

    labels, profiles, nodes, intern = worker.labels, worker.profiles, worker.nodes, sys.intern
    for i, name, ns, li, pi, a4, a6, ports, ni, iface, held in members:
        kv = chunk[i]
        ns = intern(ns)
        # marshal gives back tuples as tuples: the record's fields as parse_kv made them
        member = Member((kind, ns, name), labels[li], profiles[pi], a4, a6, (), (), ports, nodes[ni], iface)
        yield kv.key, Resource(kind, name, ns, held, kv.mod_revision, member)


if __name__ == "__main__":
    sys.exit(worker_main())
