"""calico_net's etcd v3 client: `EtcdClient` and the values it deals in (KV,
WatchEvent, transaction building blocks), over etcd's gRPC API (`etcd_grpc`).

What it adds to etcd's calls is what Calico needs:

* several endpoints with fail-over (`ETCD_ENDPOINTS=https://a:2379,https://b:2379`);
* ranges and transactions that return the store revision of the read, so callers
  can snapshot at revision R and watch from R+1 (`read_prefix` reads a big prefix
  in pages, all at one revision, the next page on its way while the caller parses);
* a watch that reports compaction and lost connections as exceptions, and that
  `cancel()` ends from any thread.

Keys are str; a key that is not UTF-8 (etcd keys are any bytes) is read with
`surrogateescape`, so its exact bytes come back with `key_bytes`.
"""
from __future__ import annotations

import operator
import queue
import threading
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, NamedTuple, Protocol, Sequence

from google.protobuf.message import DecodeError

from calico_net.datastore import etcd_grpc, etcd_h2
from calico_net.datastore.config import DEFAULT_ENDPOINTS, EtcdConfig
from calico_net.datastore.errors import DatastoreError, DatastoreUnavailable
from calico_net.datastore.etcdpb import rpc_pb2 as pb
from calico_net.datastore.transport import check_config as _check_transport
from calico_net.errors import printable

__all__ = [
    "DEFAULT_ENDPOINTS", "EtcdClient", "EtcdConfig", "KV", "PrefixReader", "TxnResult", "Watch",
    "WatchCompacted", "WatchEvent", "cmp_absent", "cmp_mod_revision", "cmp_prefix_unchanged_since", "cmp_value",
    "connect", "key_bytes", "key_problem", "op_delete", "op_get", "op_get_prefix", "op_put",
    "prefix_end", "show_key",
]


def key_bytes(key: str) -> bytes:
    """A key as etcd stores it. Keys are read as UTF-8; one that is not (etcd keys are
    any bytes) is read with `surrogateescape` (`kvs_of`), so every
    key, good or bad, comes back to its exact bytes here."""
    return key.encode("utf-8", "surrogateescape")


def key_problem(key: str) -> str | None:
    """Why a key read from etcd cannot name a resource, or None. Only a key that is
    not ASCII costs more than one `isascii` (O(1) in CPython)."""
    if key.isascii():
        return None
    try:
        key.encode()
    except UnicodeEncodeError:
        return "key is not valid UTF-8"
    return None


def show_key(key: str) -> str:
    """A key as a log line or message shows it: as it is when it is printable, else
    escaped (a byte that is not UTF-8 as \\xNN, control characters and ANSI escapes as
    backslash escapes), and cut after 300 characters."""
    return printable(key, 300)


def prefix_end(prefix: str | bytes) -> bytes:
    """The range end that makes [prefix, end) cover every key starting with prefix."""
    raw = bytearray(key_bytes(prefix) if isinstance(prefix, str) else prefix)
    for i in range(len(raw) - 1, -1, -1):
        if raw[i] < 0xFF:
            raw[i] += 1
            return bytes(raw[: i + 1])
    return b"\0"


class KV(NamedTuple):
    """One key with its value and revisions, as etcd returns it. (A NamedTuple:
    immutable like a frozen dataclass, and cheaper to make — a snapshot makes one
    per key.)"""

    key: str
    value: bytes
    mod_revision: int
    create_revision: int
    version: int


#: a snapshot page grows (doubling) up to about this many bytes of keys and values
PAGE_BYTES = 8 << 20


def _next_page_limit(limit: int, kvs: Sequence[Any]) -> int:
    """The next page's key limit after a page of `kvs` read with `limit`: twice as many,
    up to what `PAGE_BYTES` holds at this page's size per key.

    Every limited range makes etcd count all the keys left in the range (its reply's
    `count`: a walk of the key index from the page's start to the end), so a prefix
    of N keys read in pages of P costs etcd about N²/2P key visits: 2.0 s of etcd
    CPU for 100,000 endpoints in pages of 1,000, 0.4 s in pages of 20,000. Growing
    pages keep the first ones small (the reader starts parsing at once) and the
    number of pages, and so the counting, down."""
    size = sum(len(kv.key) + len(kv.value) for kv in kvs) or 1
    fits = max(1, PAGE_BYTES * len(kvs) // size)
    return max(1, min(limit * 2, fits))


def kvs_of(kvs: Iterable[Any]) -> list[KV]:
    """KVs from etcd's `mvccpb.KeyValue` messages, in order."""
    out: list[KV] = []
    append = out.append
    for kv in kvs:
        raw = kv.key
        try:
            key = raw.decode()
        except UnicodeDecodeError:
            # etcd keys are bytes: one that is not UTF-8 is kept (its exact bytes come
            # back with key_bytes) for the reader to skip it (key_problem says why)
            key = raw.decode("utf-8", "surrogateescape")
        append(KV(key, kv.value, kv.mod_revision, kv.create_revision, kv.version))
    return out


class WatchEvent(NamedTuple):
    """A change to one key. `kv.value` is empty for deletions. (A NamedTuple: one is
    made per event of every watch.)"""

    type: str  # "PUT" or "DELETE"
    kv: KV
    revision: int


class WatchCompacted(DatastoreError):
    """The revision a watch asked for is compacted: take a fresh snapshot."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"etcd revision compacted (oldest available: {compact_revision})")
        self.compact_revision = compact_revision


class PrefixReader(Protocol):
    """What the agent's syncer and confd's watcher need from the datastore."""

    def read_prefix(self, prefix: str, page_size: int) -> tuple[int, Iterator[list[KV]]]: ...
    def watch_prefix(self, prefix: str, start_revision: int, *,
                     read_timeout: float | None = None, coalesce: float = 0.0) -> "Watch": ...
    def revision(self) -> int: ...


# --- transaction building blocks --------------------------------------------------
# Each is the keyword arguments of etcd's `Compare` or `RequestOp` message (a plain
# dict: callers may look at which operation it is); `EtcdClient.txn` builds them.


def cmp_mod_revision(key: str, revision: int) -> dict[str, Any]:
    """Compare: the key was last modified at `revision` (0 = the key does not exist)."""
    if revision == 0:
        return {"key": key_bytes(key), "target": "CREATE", "result": "EQUAL", "create_revision": 0}
    return {"key": key_bytes(key), "target": "MOD", "result": "EQUAL", "mod_revision": revision}


def cmp_value(key: str, value: bytes | str) -> dict[str, Any]:
    """Compare: the key holds exactly `value` (a key that does not exist holds none)."""
    return {"key": key_bytes(key), "target": "VALUE", "result": "EQUAL", "value": _value_bytes(value)}


def cmp_absent(key: str) -> dict[str, Any]:
    return cmp_mod_revision(key, 0)


def cmp_prefix_unchanged_since(prefix: str, revision: int) -> dict[str, Any]:
    """Compare: no key under `prefix` was created or modified after `revision` (true for
    an empty prefix; a key deleted since is not noticed)."""
    return {"key": key_bytes(prefix), "range_end": prefix_end(prefix), "target": "MOD",
            "result": "LESS", "mod_revision": revision + 1}


def _value_bytes(value: bytes | str) -> bytes:
    return value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value


def op_put(key: str, value: bytes | str) -> dict[str, Any]:
    return {"request_put": {"key": key_bytes(key), "value": _value_bytes(value)}}


def op_delete(key: str) -> dict[str, Any]:
    return {"request_delete_range": {"key": key_bytes(key)}}


def op_get(key: str) -> dict[str, Any]:
    return {"request_range": {"key": key_bytes(key)}}


def op_get_prefix(prefix: str, *, keys_only: bool = False) -> dict[str, Any]:
    """Read every key under `prefix` inside a transaction (several ranges read in one
    transaction see one revision)."""
    return {"request_range": {"key": key_bytes(prefix), "range_end": prefix_end(prefix),
                              "keys_only": keys_only}}


@dataclass
class TxnResult:
    succeeded: bool
    revision: int
    responses: list[Any]        # etcd's ResponseOp messages, one per operation run

    def range_kvs(self, index: int) -> list[KV]:
        """KVs returned by the `op_get` at position `index` of the branch that ran."""
        return kvs_of(self.responses[index].response_range.kvs)


def _as_bytes(key: str | bytes) -> bytes:
    return key_bytes(key) if isinstance(key, str) else key


def _as_dict(message: Any) -> dict[str, Any]:
    """A reply as etcd's JSON gateway writes it (etcd's field names, uint64 as a
    decimal string, default values left out): the shape cluster tooling reads."""
    from google.protobuf import json_format

    return json_format.MessageToDict(message, preserving_proto_field_name=True)


# The unary calls by the names etcd's JSON gateway gives them; `EtcdClient._post`
# sends every one of them.
_CALLS = {
    "kv/range": operator.attrgetter("kv.Range"),
    "kv/put": operator.attrgetter("kv.Put"),
    "kv/deleterange": operator.attrgetter("kv.DeleteRange"),
    "kv/txn": operator.attrgetter("kv.Txn"),
    "kv/compaction": operator.attrgetter("kv.Compact"),
    "cluster/member/list": operator.attrgetter("cluster.MemberList"),
    "cluster/member/add": operator.attrgetter("cluster.MemberAdd"),
    "cluster/member/update": operator.attrgetter("cluster.MemberUpdate"),
    "cluster/member/remove": operator.attrgetter("cluster.MemberRemove"),
    "maintenance/status": operator.attrgetter("maintenance.Status"),
}


class EtcdClient:
    """Thread-safe: every thread shares one gRPC channel per endpoint."""

    def __init__(self, config: EtcdConfig) -> None:
        self.config = config
        _check_transport(config)  # http:// endpoints, ignored TLS files: a warning, once
        self._channels = etcd_grpc.Channels(
            config.endpoints, ca_cert_file=config.ca_cert_file, cert_file=config.cert_file,
            key_file=config.key_file, timeout=config.timeout)

    def _post(self, call: str, request: Any) -> Any:
        """Send one unary request (`call` as in `_CALLS`), failing over across the
        endpoints; etcd's reply message."""
        return self._channels.call(_CALLS[call], request)

    # --- reads ---
    def get(self, key: str) -> KV | None:
        kvs = self._post("kv/range", pb.RangeRequest(key=key_bytes(key))).kvs
        return kvs_of(kvs)[0] if kvs else None

    def get_prefix(self, prefix: str, *, revision: int | None = None, keys_only: bool = False) -> tuple[list[KV], int]:
        """All keys under prefix, and the store revision this read saw."""
        reply = self._post("kv/range", pb.RangeRequest(
            key=key_bytes(prefix), range_end=prefix_end(prefix), revision=revision or 0, keys_only=keys_only))
        return kvs_of(reply.kvs), reply.header.revision

    def _range(self, key: bytes, range_end: bytes, *, revision: int | None = None, limit: int = 0) -> Any:
        return self._post("kv/range", pb.RangeRequest(key=key, range_end=range_end, revision=revision or 0,
                                                      limit=max(limit, 0)))

    def get_range(self, key: str | bytes, range_end: str | bytes, *, revision: int | None = None,
                  limit: int = 0) -> tuple[list[KV], int, bool]:
        """The keys in [key, range_end) in key order, at most `limit` (0: all) of them.

        Returns (kvs, the store revision of the reply's header, more): `more` says
        keys are left after the last one returned (read on from `last key + b"\\0"`).
        With `revision` the read is of that revision; a compacted one raises
        DatastoreError. The header revision is the store's current revision either
        way, so a paged read learns R from its first (revision-less) page."""
        reply = self._range(_as_bytes(key), _as_bytes(range_end), revision=revision, limit=limit)
        return kvs_of(reply.kvs), reply.header.revision, reply.more

    def read_prefix(self, prefix: str, page_size: int = 1000) -> tuple[int, Iterator[list[KV]]]:
        """The keys under `prefix` at one revision R, as (R, pages of KVs in key order).

        The first page is small (so the caller starts parsing early) and is read
        here at the current revision, which fixes R. A helper thread reads the
        following pages, `page_size` keys each, at revision R, each asked for as
        soon as the previous one is in, while the caller turns the ones that
        arrived into KVs and parses them: etcd works on page i+1 while page i is
        parsed. Pages after the second grow (`_next_page_limit`: etcd counts what is
        left of the range on every page). Every page is of revision R, so together
        they are one consistent snapshot (a compaction of R meanwhile fails the
        read with DatastoreError: read again). `page_size` 0 or less: one read,
        one page."""
        if page_size <= 0:
            kvs, revision = self.get_prefix(prefix)
            return revision, iter((kvs,))
        end = prefix_end(prefix)
        first = self._range(key_bytes(prefix), end, limit=max(1, page_size // 4))
        revision = first.header.revision
        if not first.more or not first.kvs:
            return revision, iter((kvs_of(first.kvs),))
        return revision, self._pages(first, end, revision, page_size)

    def _pages(self, first: Any, end: bytes, revision: int, limit: int) -> Iterator[list[KV]]:
        replies: queue.SimpleQueue[Any] = queue.SimpleQueue()
        abandon = threading.Event()

        def fetch(start: bytes, limit: int) -> None:
            try:
                while not abandon.is_set():
                    reply = self._range(start, end, revision=revision, limit=limit)
                    replies.put(reply)
                    if not reply.more or not reply.kvs:
                        break
                    start = reply.kvs[-1].key + b"\0"
                    limit = _next_page_limit(limit, reply.kvs)
            except BaseException as e:  # noqa: BLE001 - re-raised in the reading thread
                replies.put(e)
            replies.put(None)

        threading.Thread(target=fetch, args=(first.kvs[-1].key + b"\0", limit), name="etcd-pages",
                         daemon=True).start()

        def pages() -> Iterator[list[KV]]:
            try:
                yield kvs_of(first.kvs)
                while True:
                    item = replies.get()
                    if item is None:
                        return
                    if isinstance(item, BaseException):
                        raise item
                    yield kvs_of(item.kvs)
            finally:
                abandon.set()

        return pages()

    def revision(self) -> int:
        return self._post("kv/range", pb.RangeRequest(key=b"\0", count_only=True)).header.revision

    # --- writes ---
    def put(self, key: str, value: bytes | str) -> int:
        return self._post("kv/put", pb.PutRequest(key=key_bytes(key), value=_value_bytes(value))).header.revision

    def delete(self, key: str) -> bool:
        return self._post("kv/deleterange", pb.DeleteRangeRequest(key=key_bytes(key))).deleted > 0

    def delete_prefix(self, prefix: str) -> int:
        return self._post("kv/deleterange", pb.DeleteRangeRequest(
            key=key_bytes(prefix), range_end=prefix_end(prefix))).deleted

    def txn(
        self,
        compare: Sequence[dict[str, Any]],
        success: Sequence[dict[str, Any]],
        failure: Sequence[dict[str, Any]] = (),
    ) -> TxnResult:
        request = pb.TxnRequest(compare=[pb.Compare(**c) for c in compare],
                                success=[pb.RequestOp(**op) for op in success],
                                failure=[pb.RequestOp(**op) for op in failure])
        try:
            reply = self._post("kv/txn", request)
        except DatastoreError as e:
            if "too many operations" in str(e):
                raise DatastoreError(
                    f"{e} — the transaction has {len(success)} operations; raise etcd's "
                    "--max-txn-ops (the calico.net etcd role sets it) or split the input"
                ) from e
            raise
        return TxnResult(succeeded=reply.succeeded, revision=reply.header.revision,
                         responses=list(reply.responses))

    def compact(self, revision: int) -> None:
        self._post("kv/compaction", pb.CompactionRequest(revision=revision, physical=True))

    # --- cluster ---
    def status(self) -> dict[str, Any]:
        return _as_dict(self._post("maintenance/status", pb.StatusRequest()))

    def members(self) -> list[dict[str, Any]]:
        return [_as_dict(m) for m in self._post("cluster/member/list", pb.MemberListRequest()).members]

    def member_list(self) -> list[dict[str, Any]]:
        """The cluster's members (`ID` a decimal string, `name` absent for a member
        that was added but has not started yet)."""
        return self.members()

    def member_add(self, peer_urls: Sequence[str], *, learner: bool = False) -> dict[str, Any]:
        """Add a member; returns etcd's answer (`member`, `members`, `header`)."""
        return _as_dict(self._post("cluster/member/add", pb.MemberAddRequest(
            peerURLs=list(peer_urls), isLearner=learner)))

    def member_update(self, member_id: int | str, peer_urls: Sequence[str]) -> dict[str, Any]:
        """Change a member's peer URLs. `member_id` is the uint64 ID (an int, or the
        decimal string `member_list` gives)."""
        return _as_dict(self._post("cluster/member/update", pb.MemberUpdateRequest(
            ID=int(member_id), peerURLs=list(peer_urls))))

    def member_remove(self, member_id: int | str) -> dict[str, Any]:
        """Remove a member by its uint64 ID (an int, or `member_list`'s decimal string)."""
        return _as_dict(self._post("cluster/member/remove", pb.MemberRemoveRequest(ID=int(member_id))))

    # --- watch ---
    def watch_prefix(self, prefix: str, start_revision: int, *, read_timeout: float | None = None,
                     coalesce: float = 0.0) -> "Watch":
        """The changes under `prefix` from `start_revision` (see `Watch`; `coalesce`:
        `etcd_h2.StreamCall`'s, for a reader that takes a busy stream in batches)."""
        return Watch(self, prefix, start_revision, read_timeout=read_timeout, coalesce=coalesce)

    def close(self) -> None:
        """Close the channels (a later call opens them again)."""
        self._channels.close()


class Watch:
    """Iterate over changes under a prefix from a revision: lists of WatchEvent, one
    per etcd watch response.

    The stream is etcd's Watch call on an HTTP/2 connection of its own
    (`etcd_h2.StreamCall`, not gRPC's runtime: a third of the CPU per event),
    opened on the endpoints in turn from the one that answered last, as every
    other call is.

    Ends by raising: `WatchCompacted` when the start revision is gone,
    `DatastoreUnavailable` when the stream breaks (or, with `read_timeout`, stays
    silent that long; etcd's progress notifications keep a healthy one talking),
    `DatastoreError` when etcd refuses the watch. `cancel()`, from any thread, ends
    it quietly.
    """

    PATH = "/etcdserverpb.Watch/Watch"

    def __init__(self, client: EtcdClient, prefix: str, start_revision: int, *, read_timeout: float | None,
                 coalesce: float = 0.0) -> None:
        self._channels = client._channels
        self._coalesce = coalesce
        self._prefix = prefix
        self.start_revision = start_revision
        self._read_timeout = read_timeout
        self._lock = threading.Lock()
        self._cancelled = False
        self._call: etcd_h2.StreamCall | None = None

    def _request(self) -> bytes:
        return pb.WatchRequest(create_request=pb.WatchCreateRequest(
            key=key_bytes(self._prefix), range_end=prefix_end(self._prefix),
            start_revision=self.start_revision, progress_notify=True)).SerializeToString()

    def _open(self) -> tuple[etcd_h2.StreamCall, Any] | None:
        """The stream and etcd's first reply (the watch created), from the first
        endpoint that answers; None when cancelled meanwhile."""
        channels = self._channels
        endpoints, n, start = channels.endpoints, len(channels.endpoints), channels.current
        request, errors = self._request(), []
        for k in range(n):
            idx = (start + k) % n
            endpoint = endpoints[idx]
            tls = channels.tls_context() if endpoint.startswith("https://") else None
            try:
                call = etcd_h2.StreamCall(endpoint, self.PATH, request, tls=tls, timeout=channels.timeout,
                                          coalesce=self._coalesce)
            except etcd_h2.CallFailed as e:
                if not e.try_next:
                    raise DatastoreError(f"etcd rejected the watch: {e}") from None
                errors.append(f"{endpoint}: {e}")
                continue
            with self._lock:
                self._call = call
                cancelled = self._cancelled
            message = None
            try:
                if not cancelled:
                    message = call.next_message(channels.timeout)
            except etcd_h2.CallFailed as e:
                if not self._cancelled:
                    call.close()
                    if not e.try_next:
                        raise DatastoreError(f"etcd rejected the watch: {e}") from None
                    errors.append(f"{endpoint}: {e}")
                    continue
            if self._cancelled:
                call.close()
                return None
            if message is None:
                call.close()
                errors.append(f"{endpoint}: the watch stream ended at once")
                continue
            try:
                first = pb.WatchResponse.FromString(message)
            except DecodeError:
                call.close()
                errors.append(f"{endpoint}: its watch reply does not decode")
                continue
            channels.current = idx
            return call, first
        raise DatastoreUnavailable("cannot reach etcd: " + "; ".join(errors))

    def __iter__(self) -> Iterator[list[WatchEvent]]:
        """Yields batches of events (one batch per etcd watch response)."""
        opened = self._open()
        if opened is None:
            return
        call, reply = opened
        decode = pb.WatchResponse.FromString
        timeout = self._read_timeout
        try:
            while True:
                if self._cancelled:
                    return
                if reply.compact_revision:
                    raise WatchCompacted(reply.compact_revision)
                if reply.canceled:
                    raise DatastoreUnavailable(f"etcd cancelled the watch: {reply.cancel_reason}")
                events = reply.events
                if events:
                    kvs = kvs_of([ev.kv for ev in events])
                    batch = [WatchEvent("DELETE" if ev.type else "PUT", kv, kv.mod_revision)
                             for ev, kv in zip(events, kvs)]
                    self.start_revision = batch[-1].revision + 1
                    yield batch
                message = call.next_message(timeout)
                if message is None:
                    break
                try:
                    reply = decode(message)
                except DecodeError:
                    raise DatastoreUnavailable("etcd sent a watch reply that does not decode") from None
        except etcd_h2.CallFailed as e:
            if self._cancelled:
                return
            raise DatastoreUnavailable(f"etcd watch connection lost: {e}") from None
        finally:
            call.close()
        if not self._cancelled:
            raise DatastoreUnavailable("etcd watch stream ended")

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            call = self._call
        if call is not None:
            call.cancel()


def connect(config: EtcdConfig | None = None, **kwargs: Any) -> EtcdClient:
    return EtcdClient(config or EtcdConfig.from_sources(**kwargs))
