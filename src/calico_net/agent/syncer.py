"""The agent's datastore watcher: snapshot at revision R, then watch from R+1.

Built as one thread that owns the etcd conversation (through the datastore's
`PrefixReader`: `read_prefix` for a snapshot, `watch_prefix`, `revision` for the
probe) and talks to the daemon only through a callback sink (the daemon puts what
it gets on its queue):

* `on_snapshot(resources, revision)` — the complete, parsed state of
  `/calico/resources/v3/projectcalico.org/` at `revision`. The first one is the
  initial load; every later one is a *full resync* after the watch broke, and the
  consumer diffs it against what it holds, so nothing is deleted spuriously.
* `on_update(key, resource_or_None)` — one change seen by the watch.
* `on_status(connected, reason)` — the datastore was lost or is back.

Every key is parsed here (JSON, kind from the key, `calico_net.model` validation).
A key that does not parse — a key that is not UTF-8, garbage JSON, JSON that is not
an object, an invalid spec, an unknown kind — is logged once with its key (escaped:
`etcd.show_key`), skipped, and counted; the agent never stops on bad data.
If a key that was good turns bad, the consumer sees a deletion for it (the bad value
is not applied, the old good one is not kept either, as Calico does).

On any watch error (compaction, lost connection, anything else) the thread marks
the datastore lost, backs off exponentially (capped, jittered, so a dead etcd costs
next to no CPU), takes a new snapshot and delivers it as a resync. While a watch is
open a light probe checks that etcd still answers, so a silently dead connection
(a partition, not a closed socket) is noticed within `probe_interval`.
"""
from __future__ import annotations

import functools
import logging
import sys
import threading
import time
from typing import Any, Callable, NamedTuple, Protocol

import orjson

from calico_net.agent.felix.records import shared_labels, workload_member
from calico_net.agent import parseworker
from calico_net.agent.parseworker import ParseWorker
from calico_net.agent.watchloop import SnapshotWatcher
from calico_net.datastore.errors import DatastoreUnavailable
from calico_net.datastore.etcd import KV, PrefixReader, key_problem, show_key
from calico_net.datastore.store import RESOURCE_PREFIX, parse_key
from calico_net.errors import printable
from calico_net.model.quick import quick_valid

log = logging.getLogger(__name__)

class _Fields(NamedTuple):
    kind: str
    name: str
    namespace: str | None
    doc: Any            # the document, or (a compacted kind) its JSON as read: bytes
    revision: int
    #: a WorkloadEndpoint's policy record, built as it is read (`records.workload_member`;
    #: None: the daemon builds it from the document)
    member: Any = None


class Resource(_Fields):
    """One validated resource as the agent holds it (immutable; a NamedTuple
    rather than a frozen dataclass: one is made per key of every snapshot).

    `doc` is the validated document. For the kinds a cluster has by the ten
    thousand (`_COMPACTED`: endpoints, every one of which every agent holds)
    what is held is its JSON (`raw`, one bytes object, a third of the parsed
    document's size, less what the key already says: `_held`) and `doc` decodes
    it on each use (a new dict each time, equal to the validated document: the
    holders only read it when it changes, to dispatch it). A WorkloadEndpoint of
    the common shape also carries its policy record (`member`), made from the
    document decoded to validate it, and is dispatched from that. Another node's
    endpoint with a record (read with `parse_kv`'s `local_node`) keeps only the
    record: `doc` is None (most of what an agent holds is such endpoints, and the
    policy record is all it uses of them)."""

    __slots__ = ()

    @property
    def doc(self) -> dict[str, Any]:  # type: ignore[override]
        d = tuple.__getitem__(self, 3)
        if type(d) is bytes:
            return _expand(d, self.name, self.namespace, tuple.__getitem__(self, 4))
        return d

    @property
    def raw(self) -> bytes | None:
        """The held form of a compacted resource (`_held`; None: the parsed document
        is held)."""
        d = tuple.__getitem__(self, 3)
        return d if type(d) is bytes else None


class BadObject(ValueError):
    """A key whose value cannot be used; str() says why."""


Validator = Callable[[dict[str, Any]], dict[str, Any]]


def model_validate(doc: dict[str, Any]) -> dict[str, Any]:
    """Validate with calico_net.model; raise ValidationError, or return `doc` itself.

    The model keeps every value as the user wrote it (`Resource.to_dict()` is the
    document as written), so the stored JSON *is* the validated document and
    to_dict() (a copy of every key's document on a cold start) is skipped.

    Endpoints and network sets of the common shapes are decided by
    `model.quick.quick_valid` (far cheaper than a pydantic model, and no pydantic
    schema build at start); whatever it does not accept outright goes
    through `parse_resource`, which also gives the reason for a bad one."""
    if quick_valid(doc):
        return doc
    from calico_net import model

    model.parse_resource(doc)
    return doc


@functools.lru_cache(maxsize=64)
def model_kind(plural: str) -> str | None:
    """The kind stored under `plural` in Calico's key layout, None if unknown."""
    from calico_net import model

    try:
        return model.kind_for_plural(plural).kind
    except ValueError:
        return None


def parse_kv(kv: KV, validate: Validator = model_validate,
             kind_of: Callable[[str], str | None] = model_kind,
             local_node: str | None = None) -> Resource:
    """Turn one etcd key/value into a Resource, or raise BadObject.

    `local_node`: the agent's node. A WorkloadEndpoint of another node that comes
    with its record (`Resource.member`) is held as that record alone: no document
    (`doc` and `raw` are None), since nothing of it but the record is ever used."""
    key = kv.key
    if not key.isascii():           # O(1): only a non-ASCII key is looked at further
        problem = key_problem(key)
        if problem:
            raise BadObject(problem)
    parts = parse_key(key)
    if parts is None:
        raise BadObject("not a resource key")
    kind = kind_of(parts.plural)
    if kind is None:
        raise BadObject(f'unknown kind "{parts.plural}"')
    try:
        doc = orjson.loads(kv.value)
    except (ValueError, UnicodeDecodeError) as e:  # orjson.JSONDecodeError is a ValueError
        raise BadObject(f"value is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise BadObject("value is not a JSON object")
    md = doc.get("metadata")
    if not isinstance(md, dict):
        raise BadObject("metadata is missing")
    if doc.get("kind") != kind:
        raise BadObject(f'kind {doc.get("kind")!r} does not match the key ({kind})')
    if md.get("name") != parts.name:
        raise BadObject(f'metadata.name {md.get("name")!r} does not match the key')
    if parts.namespace is not None and md.get("namespace") != parts.namespace:
        raise BadObject(f'metadata.namespace {md.get("namespace")!r} does not match the key')
    doc.setdefault("apiVersion", "projectcalico.org/v3")
    try:
        valid = validate(doc)
    except ValueError as e:  # calico_net.errors.ValidationError is a ValueError
        raise BadObject(str(e)) from None
    except Exception as e:  # noqa: BLE001 - a validator bug must not stop the agent
        raise BadObject(f"validation failed: {e.__class__.__name__}: {e}") from None
    namespace = parts.namespace
    if kind in _COMPACTED:
        if namespace is not None:
            namespace = sys.intern(namespace)
        if valid is doc and validate is model_validate and doc["apiVersion"] == _API_VERSION:
            # model_validate returns the document it was given, unchanged
            member = (workload_member(parts.name, namespace, doc, local_node)
                      if kind == "WorkloadEndpoint" and namespace is not None else None)
            if member is not None and local_node is not None and member.node != local_node:
                return Resource(kind, parts.name, namespace, None, kv.mod_revision, member)
            return Resource(kind, parts.name, namespace,
                            _held(doc, kind, parts.namespace is not None), kv.mod_revision, member)
        valid.setdefault("metadata", {})["resourceVersion"] = str(kv.mod_revision)
        _compact(valid)
    else:
        valid.setdefault("metadata", {})["resourceVersion"] = str(kv.mod_revision)
    return Resource(kind, parts.name, namespace, valid, kv.mod_revision)


_API_VERSION = "projectcalico.org/v3"
_KIND_OF_HELD = {b"W": "WorkloadEndpoint", b"H": "HostEndpoint"}


def _held(doc: dict[str, Any], kind: str, namespaced: bool) -> bytes:
    """The validated document as held: its JSON without what the key says (kind,
    metadata.name and, for a namespaced key, namespace: parse_kv checked them
    equal) and without apiVersion and resourceVersion, behind a one-byte tag for
    the kind; `_expand` puts them back. The endpoint's own fields — uid, labels,
    spec — stay as they were read."""
    md = {k: v for k, v in doc["metadata"].items()
          if k != "name" and k != "resourceVersion" and not (namespaced and k == "namespace")}
    slim = {k: v for k, v in doc.items() if k != "kind" and k != "apiVersion" and k != "metadata"}
    slim["metadata"] = md
    return (b"W" if kind == "WorkloadEndpoint" else b"H") + orjson.dumps(slim)


def _expand(raw: bytes, name: str, namespace: str | None, revision: int) -> dict[str, Any]:
    """The validated document of a compacted resource held as `raw` (see `_held`)."""
    doc = orjson.loads(raw[1:])
    md = doc["metadata"]
    md["name"] = name
    if namespace is not None:
        md["namespace"] = namespace
    md["resourceVersion"] = str(revision)
    doc["kind"] = _KIND_OF_HELD[raw[:1]]
    doc["apiVersion"] = _API_VERSION
    _compact(doc)
    return doc


# The kinds a cluster has by the ten thousand (every endpoint, cluster-wide, is held
# by every agent): held as JSON (`Resource.raw`, `_held`) or, another node's
# WorkloadEndpoint with a record, as the record alone; their documents, when
# decoded, share what they have in common.
#: the page of the first snapshot at which the parse worker is started (pages of
#: 250, 1,000, 2,000, ... keys: a smaller snapshot is parsed before it is up)
WORKER_FROM_PAGE = 2

_COMPACTED = frozenset(("WorkloadEndpoint", "HostEndpoint"))
_SHARED_STRINGS = {"metadata": ("namespace",), "spec": ("node", "orchestrator", "endpoint")}


def _compact(doc: dict[str, Any]) -> None:
    """Share, between documents, the values that repeat across a cluster's endpoints:
    the label set (one dict per distinct set, `felix.records.shared_labels`) and the
    namespace, node, orchestrator and endpoint names (interned strings); the
    document stays equal to what was read. Held documents are never changed in
    place (an update is a new document), so sharing is safe."""
    doc["apiVersion"] = sys.intern(doc["apiVersion"]) if type(doc["apiVersion"]) is str else doc["apiVersion"]
    doc["kind"] = sys.intern(doc["kind"])
    for part, fields in _SHARED_STRINGS.items():
        sub = doc.get(part)
        if type(sub) is not dict:
            continue
        for f in fields:
            v = sub.get(f)
            if type(v) is str:
                sub[f] = sys.intern(v)
    md = doc["metadata"]
    labels = md.get("labels")
    if type(labels) is dict:
        md["labels"] = shared_labels(labels)


class Sink(Protocol):
    """The syncer's consumer (the daemon). `known` is read from the syncer's thread:
    the resource the consumer holds for a key (one dict lookup), so that a resync
    reuses what was validated before instead of keeping a second copy here."""

    #: the agent's node, when the consumer has one (`parse_kv`'s `local_node`)
    node_name: str | None

    def known(self, key: str) -> Resource | None: ...
    def on_snapshot(self, resources: dict[str, Resource], revision: int) -> None: ...
    def on_update(self, key: str, resource: Resource | None) -> None: ...
    def on_status(self, connected: bool, reason: str) -> None: ...
    def on_bad_object(self, key: str, reason: str, new: bool) -> None: ...


class Syncer(SnapshotWatcher):
    """Snapshot + watch of the resources prefix in a daemon thread. `stop()` ends it."""

    thread_name = "syncer"

    def __init__(
        self,
        client: PrefixReader,
        sink: Sink,
        *,
        prefix: str = RESOURCE_PREFIX,
        validate: Validator = model_validate,
        kind_of: Callable[[str], str | None] = model_kind,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        probe_interval: float = 5.0,
        page_size: int = 1000,
        coalesce: float = 0.01,
        use_worker: bool = True,
    ) -> None:
        super().__init__(backoff_initial=backoff_initial, backoff_max=backoff_max,
                         probe_interval=probe_interval)
        self.client = client
        # while the watch stream is busy, it is read every `coalesce` seconds (a
        # batch of replies per read and per wake-up); a change after a quiet spell
        # is read at once
        self.coalesce = coalesce
        # the first snapshot parsed with a helper process (`parseworker`)
        self.use_worker = use_worker
        #: keys of the first snapshot the worker parsed
        self.worker_keys = 0
        self._worker: ParseWorker | None = None     # while one is in use (for stop())
        self.sink = sink
        self.prefix = prefix
        self.validate = validate
        self.kind_of = kind_of
        self.local_node: str | None = getattr(sink, "node_name", None)
        self.page_size = page_size
        # key -> (mod_revision, reason) of values we skipped: each is logged once.
        self.bad: dict[str, tuple[int, str]] = {}
        self.revision = 0
        #: the last snapshot's revision was below one seen before: etcd's history
        #: restarted (restored from a snapshot, or another cluster at the address),
        #: so a mod revision no longer names one value and nothing held is reused
        self.history_reset = False
        self._reuse_known = True
        #: why the probe cancelled the current watch (the status reason then)
        self._probe_failure: str | None = None

    # --- parsing ---
    def _parse(self, kv: KV) -> Resource | None:
        # A resync re-reads every key: values the consumer holds (same key, same
        # mod revision) are not validated again, unless etcd's history restarted.
        if self._reuse_known:
            cached = self.sink.known(kv.key)
            if cached is not None and cached.revision == kv.mod_revision:
                return cached
        try:
            res = parse_kv(kv, self.validate, self.kind_of, self.local_node)
        except BadObject as e:
            self._bad(kv, str(e))
            return None
        self.bad.pop(kv.key, None)
        return res

    def _bad(self, kv: KV, reason: str) -> None:
        seen = self.bad.get(kv.key)
        new = seen is None or seen[0] != kv.mod_revision
        if new:
            log.warning("skipping bad datastore object %s (revision %d): %s",
                        show_key(kv.key), kv.mod_revision, printable(reason, 2000))
        self.bad[kv.key] = (kv.mod_revision, reason)
        self.sink.on_bad_object(kv.key, reason, new)

    def stop(self) -> None:
        super().stop()
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.close()

    # --- the loop ---
    def _report(self, connected: bool, reason: str, changed: bool) -> None:
        if changed:
            self.sink.on_status(connected, reason)

    def snapshot(self) -> int:
        """One full read (`read_prefix`: pages at one revision, the next one read
        while this thread parses); delivers it and returns its revision. The first
        one is parsed with a helper process (`parseworker`) where it can be."""
        revision, pages = self.client.read_prefix(self.prefix, self.page_size)
        self.history_reset = revision < self.revision
        if self.history_reset:
            log.warning("etcd's revision went back from %d to %d (restored from a snapshot, or another "
                        "cluster at this address): every resource is parsed and compared afresh",
                        self.revision, revision)
        self._reuse_known = not self.history_reset
        resources: dict[str, Resource] = {}
        present: set[str] = set()
        worker: ParseWorker | None = None
        self.worker_keys = 0
        try:
            for n, page in enumerate(pages):
                present.update(kv.key for kv in page)
                if worker is None and n == WORKER_FROM_PAGE:
                    # a snapshot this long (its third page: more than 1,250 keys
                    # so far) is worth a second process
                    worker = self._first_snapshot_worker()
                if worker is None:
                    self._parse_into(page, resources)
                else:
                    self._parse_page_with(worker, page, resources)
            if worker is not None:
                self._finish_with(worker, resources, len(present))
        finally:
            self._reuse_known = True
            # its job is done, or the read failed (then what it holds is of a
            # snapshot that is not used: the next attempt starts afresh)
            if worker is not None:
                self._worker = None
                worker.close()
        for key in [k for k in self.bad if k not in present]:
            del self.bad[key]
        self.snapshots += 1
        self.revision = revision
        self._set_connected(True, f"snapshot at revision {revision}, {len(resources)} resources")
        self.sink.on_snapshot(resources, revision)
        return revision

    def _parse_into(self, kvs: list[KV], resources: dict[str, Resource]) -> None:
        parse = self._parse
        for i, kv in enumerate(kvs):
            if not i & 63:
                # let the page fetcher have the GIL at once when its reply is
                # in (else it waits up to a whole switch interval per socket
                # read while etcd sits idle)
                time.sleep(0)
            res = parse(kv)
            if res is not None:
                resources[kv.key] = res

    def _first_snapshot_worker(self) -> ParseWorker | None:
        """A parse worker for the first snapshot of an agent (the syncer's own
        parsing, a node name); None otherwise, or if one cannot be started."""
        if (self.snapshots or not self.use_worker or self.local_node is None
                or self.validate is not model_validate or self.kind_of is not model_kind):
            return None
        worker = ParseWorker(self.local_node)
        if worker.failed:
            log.warning("%s; the snapshot is parsed in this process", worker.failed)
            self.use_worker = False
            return None
        self._worker = worker
        return worker

    def _parse_page_with(self, worker: ParseWorker, page: list[KV], resources: dict[str, Resource]) -> None:
        """Parse a page in chunks, handing a chunk to the worker whenever it can
        take one and parsing the others here; the worker's results are taken as
        they come."""
        size = parseworker.CHUNK
        for start in range(0, len(page), size):
            chunk = page[start:start + size]
            if worker.can_take():
                worker.submit(chunk)
                self.worker_keys += len(chunk)
            else:
                self._parse_into(chunk, resources)
            self._take_results(worker, resources, block=False)

    def _finish_with(self, worker: ParseWorker, resources: dict[str, Resource], total: int) -> None:
        """The worker's last results; what a failed worker held is parsed here."""
        while worker.outstanding and worker.failed is None:
            self._take_results(worker, resources, block=True)
        if worker.failed is not None:
            log.warning("%s; parsing the rest of the snapshot in this process", worker.failed)
            for chunk in worker.take_back():
                self.worker_keys -= len(chunk)
                self._parse_into(chunk, resources)
        log.info("%s: first snapshot, %d of %d keys parsed by the parse worker", self.thread_name,
                 self.worker_keys, total)

    def _take_results(self, worker: ParseWorker, resources: dict[str, Resource], block: bool) -> None:
        while True:
            got = worker.take(block)
            if got is None:
                return
            chunk, (members, bad, general) = got
            pop_bad = self.bad.pop
            for key, res in parseworker.build_members(worker, chunk, members):
                resources[key] = res
                pop_bad(key, None)
            for i, reason in bad:
                self._bad(chunk[i], reason)
            self._parse_into([chunk[i] for i in general], resources)
            block = False

    def _watch_from(self, start: int) -> None:
        watch = self.client.watch_prefix(self.prefix, start, coalesce=self.coalesce)
        self._probe_failure = None
        self._track([watch])
        probe = threading.Thread(target=self._probe, args=(watch,), name="syncer-probe", daemon=True)
        probe.start()
        try:
            for batch in watch:
                if self._stop.is_set():
                    return
                for ev in batch:
                    self.revision = ev.revision
                    if ev.type == "DELETE":
                        self.bad.pop(ev.kv.key, None)
                        self.sink.on_update(ev.kv.key, None)
                        continue
                    res = self._parse(ev.kv)
                    # A key that turned bad is dropped: the consumer deletes it.
                    self.sink.on_update(ev.kv.key, res)
            if not self._stop.is_set():
                raise DatastoreUnavailable(self._probe_failure or "etcd watch ended")
        finally:
            self._track([])
            probe.join(timeout=0)

    def _probe(self, watch: Any) -> None:
        """While `watch` is current, check etcd answers; cancel the watch if not.

        A closed socket ends the watch by itself; this catches the silent case."""
        while not self._stop.wait(self.probe_interval):
            if not self._tracking(watch):
                return
            try:
                self.client.revision()
            except Exception as e:  # noqa: BLE001
                log.warning("etcd probe failed while watching (%s); restarting the watch", e)
                self._probe_failure = f"etcd did not answer while watching: {e}"
                self._cancel_watch_broken(watch)
                return

    def _cancel_watch_broken(self, watch: Any) -> None:
        # cancel() makes the iterator end quietly; _watch_from then raises with the
        # probe's reason (set before this call).
        try:
            watch.cancel()
        except Exception:  # noqa: BLE001
            pass

