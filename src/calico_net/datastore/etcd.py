"""A small synchronous etcd v3 client for everything in calico_net.

Built on `etcd3gw` (OpenStack's maintained client for etcd's v3 JSON gateway): it
gives us a `requests` session with TLS client certificates, API-path discovery and
error mapping. On top of it this module adds what Calico needs and etcd3gw lacks:

* several endpoints with fail-over (`ETCD_ENDPOINTS=https://a:2379,https://b:2379`);
* ranges and transactions that return the store revision of the read, so callers
  can snapshot at revision R and watch from R+1;
* a watch that reports compaction and lost connections as exceptions instead of
  swallowing them in a worker thread (etcd3gw's own watcher does that).

See docs/etcd-client.md for why this client and not aetcd or python-etcd3.
"""
from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import select
import socket
import ssl
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, NamedTuple, Sequence
from urllib.parse import urlsplit

import orjson
import requests
import yaml

import etcd3gw

from calico_net.datastore.errors import DatastoreError, DatastoreUnavailable
from calico_net.datastore.etcd_grpc import GrpcRange, encode_range_request
from calico_net.datastore.transport import check_config as _check_transport
from calico_net.errors import printable

log = logging.getLogger(__name__)

DEFAULT_ENDPOINTS = "http://127.0.0.1:2379"
DEFAULT_CONFIG_FILE = "/etc/calico/calicoctl.cfg"
DEFAULT_TIMEOUT = 10.0


def _b64(data: str | bytes) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    return base64.b64encode(data).decode("ascii")


def _unb64(data: str | None) -> bytes:
    return base64.b64decode(data) if data else b""


def key_bytes(key: str) -> bytes:
    """A key as etcd stores it. Keys are read as UTF-8; one that is not (etcd keys are
    any bytes) is read with `surrogateescape` (`KV.from_json`, `etcd_grpc`), so every
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
    immutable like a frozen dataclass, and ~1 us cheaper to make — a snapshot
    makes one per key.)"""

    key: str
    value: bytes
    mod_revision: int
    create_revision: int
    version: int

    @classmethod
    def from_json(cls, kv: Mapping[str, Any]) -> "KV":
        raw = _unb64(kv.get("key"))
        try:
            key = raw.decode()
        except UnicodeDecodeError:
            # etcd keys are bytes: one that is not UTF-8 is kept (its exact bytes come
            # back with key_bytes) for the reader to skip it (key_problem says why)
            key = raw.decode("utf-8", "surrogateescape")
        return cls(
            key=key,
            value=_unb64(kv.get("value")),
            mod_revision=int(kv.get("mod_revision", 0)),
            create_revision=int(kv.get("create_revision", 0)),
            version=int(kv.get("version", 0)),
        )


def parse_range(content: bytes) -> tuple[list[KV], int, bool]:
    """A kv/range reply: (kvs, the header's revision, more)."""
    resp = orjson.loads(content)
    kvs = [KV.from_json(kv) for kv in resp.get("kvs") or []]
    return kvs, int(resp["header"]["revision"]), bool(resp.get("more", False))


def range_tail(content: bytes) -> tuple[bytes | None, bool] | None:
    """(the last key of a kv/range reply, more) without decoding the reply, or None
    if it cannot tell. The gateway's JSON is compact; no base64 text contains a
    quote, so the last `"key":"` is the last KV's key."""
    i = content.rfind(b'"key":"')
    more = content.rfind(b'"more":true') >= 0
    if i < 0:
        return None if more else (None, False)
    j = content.find(b'"', i + 7)
    if j < 0:
        return None
    try:
        return base64.b64decode(content[i + 7:j], validate=True), more
    except ValueError:
        return None


@dataclass(frozen=True)
class WatchEvent:
    """A change to one key. `kv.value` is empty for deletions."""

    type: str  # "PUT" or "DELETE"
    kv: KV
    revision: int


class WatchCompacted(DatastoreError):
    """The revision a watch asked for is compacted: take a fresh snapshot."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"etcd revision compacted (oldest available: {compact_revision})")
        self.compact_revision = compact_revision


# --- transaction building blocks (the JSON gateway's request shapes) ----------------


def cmp_mod_revision(key: str, revision: int) -> dict[str, Any]:
    """Compare: the key was last modified at `revision` (0 = the key does not exist)."""
    if revision == 0:
        return {"key": _b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
    return {"key": _b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(revision)}


def cmp_absent(key: str) -> dict[str, Any]:
    return cmp_mod_revision(key, 0)


def cmp_prefix_unchanged_since(prefix: str, revision: int) -> dict[str, Any]:
    """Compare: no key under `prefix` was created or modified after `revision` (true for
    an empty prefix; a key deleted since is not noticed)."""
    return {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix)), "target": "MOD",
            "result": "LESS", "mod_revision": str(revision + 1)}


def op_put(key: str, value: bytes | str) -> dict[str, Any]:
    return {"request_put": {"key": _b64(key), "value": _b64(value)}}


def op_delete(key: str) -> dict[str, Any]:
    return {"request_delete_range": {"key": _b64(key)}}


def op_get(key: str) -> dict[str, Any]:
    return {"request_range": {"key": _b64(key)}}


def op_get_prefix(prefix: str, *, keys_only: bool = False) -> dict[str, Any]:
    """Read every key under `prefix` inside a transaction (several ranges read in one
    transaction see one revision)."""
    body: dict[str, Any] = {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))}
    if keys_only:
        body["keys_only"] = True
    return {"request_range": body}


@dataclass
class TxnResult:
    succeeded: bool
    revision: int
    responses: list[dict[str, Any]]

    def range_kvs(self, index: int) -> list[KV]:
        """KVs returned by the `op_get` at position `index` of the branch that ran."""
        resp = self.responses[index].get("response_range", {})
        return [KV.from_json(kv) for kv in resp.get("kvs", [])]


# --- configuration -------------------------------------------------------------


@dataclass
class EtcdConfig:
    """Where etcd is and how to authenticate, as Calico's tools read it."""

    endpoints: list[str] = field(default_factory=lambda: [DEFAULT_ENDPOINTS])
    ca_cert_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    timeout: float = DEFAULT_TIMEOUT

    @classmethod
    def from_sources(
        cls,
        env: Mapping[str, str] | None = None,
        config_file: str | None = None,
        **overrides: Any,
    ) -> "EtcdConfig":
        """Calico's precedence: explicit overrides, then environment, then the file.

        `config_file` defaults to /etc/calico/calicoctl.cfg when that exists; a file
        named explicitly must exist.
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        path = config_file
        if path is None and os.path.exists(DEFAULT_CONFIG_FILE):
            path = DEFAULT_CONFIG_FILE
        if path:
            values.update(_read_calicoctl_cfg(path))
        env_map = {
            "ETCD_ENDPOINTS": "endpoints",
            "ETCD_CA_CERT_FILE": "ca_cert_file",
            "ETCD_CERT_FILE": "cert_file",
            "ETCD_KEY_FILE": "key_file",
        }
        for var, attr in env_map.items():
            if env.get(var):
                values[attr] = env[var]
        dstype = env.get("DATASTORE_TYPE")
        if dstype and dstype != "etcdv3":
            raise DatastoreError(f'DATASTORE_TYPE "{dstype}" is not supported (only etcdv3)')
        values.update({k: v for k, v in overrides.items() if v is not None})
        eps = values.get("endpoints", DEFAULT_ENDPOINTS)
        if isinstance(eps, str):
            eps = [e.strip() for e in eps.split(",") if e.strip()]
        values["endpoints"] = list(eps)
        cfg = cls(**values)
        cfg.check()
        return cfg

    def check(self) -> None:
        if not self.endpoints:
            raise DatastoreError("no etcd endpoints configured (ETCD_ENDPOINTS)")
        for ep in self.endpoints:
            parts = urlsplit(ep)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise DatastoreError(
                    f'etcd endpoint "{ep}" is not a URL like https://198.18.0.11:2379'
                )
        if bool(self.cert_file) != bool(self.key_file):
            raise DatastoreError("etcd client TLS needs both a certificate and a key file")
        for what in ("ca_cert_file", "cert_file", "key_file"):
            path = getattr(self, what)
            if path and not os.path.isfile(path):
                raise DatastoreError(f'{what.replace("_", " ")} "{path}" does not exist')


def _read_calicoctl_cfg(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f) or {}
    except OSError as e:
        raise DatastoreError(f"cannot read config file {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise DatastoreError(f"config file {path} is not valid YAML: {e}") from e
    if not isinstance(doc, dict) or doc.get("kind") != "CalicoAPIConfig":
        raise DatastoreError(f"config file {path}: kind must be CalicoAPIConfig")
    spec = doc.get("spec") or {}
    dstype = spec.get("datastoreType", "etcdv3")
    if dstype != "etcdv3":
        raise DatastoreError(f'config file {path}: spec.datastoreType "{dstype}" is not supported (only etcdv3)')
    mapping = {
        "etcdEndpoints": "endpoints",
        "etcdCACertFile": "ca_cert_file",
        "etcdCertFile": "cert_file",
        "etcdKeyFile": "key_file",
    }
    return {attr: spec[k] for k, attr in mapping.items() if spec.get(k)}


# --- the unary transport ------------------------------------------------------

API_PATH = "/v3/"
_HEADERS = {"Content-Type": "application/json"}
# What a failed exchange with one endpoint raises: the next endpoint is tried.
_TRANSPORT_ERRORS = (OSError, http.client.HTTPException)
_RESEND_ERRORS = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class _Transport:
    """Unary POSTs on plain `http.client` keep-alive connections.

    etcd3gw sends through a `requests` session, which costs ~2 ms of CPU per call in
    request preparation, adapters and header merging; a kept-alive `http.client`
    connection costs ~0.6 ms. Each thread gets its own connection per endpoint (an
    HTTPConnection is not thread-safe), remembered with the pid that opened it so a
    forked child never shares its parent's socket. Only our settings apply: no proxy
    variables, no REQUESTS_CA_BUNDLE; TLS verifies the server against
    `ca_cert_file` (else certifi's bundle, as requests did) with host-name checking,
    and presents the client certificate when one is configured.
    """

    def __init__(self, config: EtcdConfig) -> None:
        self._config = config
        self._targets = []
        for ep in config.endpoints:
            parts = urlsplit(ep)
            self._targets.append((parts.scheme, parts.hostname or "127.0.0.1", parts.port or 2379))
        self._ssl_context: ssl.SSLContext | None = None
        self._local = threading.local()
        self._open: "weakref.WeakSet[http.client.HTTPConnection]" = weakref.WeakSet()
        self._lock = threading.Lock()

    def _tls(self) -> ssl.SSLContext:
        with self._lock:
            if self._ssl_context is None:
                cfg = self._config
                cafile = cfg.ca_cert_file
                if not cafile:
                    try:
                        import certifi

                        cafile = certifi.where()
                    except ImportError:  # pragma: no cover - requests depends on certifi
                        cafile = None
                ctx = ssl.create_default_context(cafile=cafile)
                if cfg.cert_file and cfg.key_file:
                    ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
                self._ssl_context = ctx
            return self._ssl_context

    def _connection(self, idx: int, fresh: bool) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection to endpoint `idx`, and whether it was used before."""
        conns: dict[int, tuple[int, http.client.HTTPConnection]] | None = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        pid = os.getpid()
        hit = conns.get(idx)
        if hit is not None:
            owner, conn = hit
            if owner != pid:  # inherited over fork: leave the parent's socket alone
                conn.sock = None
                hit = None
            elif fresh or conn.sock is None or _dropped(conn.sock):
                conn.close()
                hit = None
            else:
                return conn, True
        scheme, host, port = self._targets[idx]
        timeout = self._config.timeout
        if scheme == "https":
            conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=self._tls())
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        conns[idx] = (pid, conn)
        self._open.add(conn)
        return conn, False

    def post(self, idx: int, path: str, data: bytes) -> tuple[int, str, bytes]:
        """POST `data`; returns (status, reason, body). Raises one of _TRANSPORT_ERRORS."""
        conn, reused = self._connection(idx, fresh=False)
        for resend in (True, False):
            try:
                conn.request("POST", path, body=data, headers=_HEADERS)
                resp = conn.getresponse()
                content = resp.read()
                if resp.will_close:
                    conn.close()
                return resp.status, resp.reason, content
            except _RESEND_ERRORS:
                conn.close()
                # etcd may close an idle kept-alive connection just as we reuse it:
                # send once more on a new connection (a request that had been
                # processed is a repeated put or a compare-and-swap that now fails).
                if not (reused and resend):
                    raise
                conn, reused = self._connection(idx, fresh=True)
            except BaseException:
                conn.close()
                raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        for conn in list(self._open):
            conn.close()


def _dropped(sock: socket.socket) -> bool:
    """True when an idle kept-alive socket was closed by the server (it is readable:
    EOF, or unexpected bytes)."""
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


# --- the client ----------------------------------------------------------------


class EtcdClient:
    """Thread-safe: unary requests use one keep-alive connection per thread and endpoint."""

    def __init__(self, config: EtcdConfig) -> None:
        self.config = config
        _check_transport(config)  # http:// endpoints, ignored TLS files: a warning, once
        # etcd3gw clients: the Watch's streaming requests session per endpoint.
        self._clients = [self._make(ep) for ep in config.endpoints]
        self._transport = _Transport(config)
        self._grpc = GrpcRange(config.endpoints, ca_cert_file=config.ca_cert_file,
                               cert_file=config.cert_file, key_file=config.key_file)
        self._current = 0
        self._lock = threading.Lock()

    def _make(self, endpoint: str) -> etcd3gw.Etcd3Client:
        parts = urlsplit(endpoint)
        client = etcd3gw.Etcd3Client(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 2379,
            protocol=parts.scheme,
            ca_cert=self.config.ca_cert_file,
            cert_key=self.config.key_file,
            cert_cert=self.config.cert_file,
            timeout=self.config.timeout,
            api_path=API_PATH,
        )
        # requests would otherwise let REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE replace our CA
        # and send etcd traffic through HTTP(S)_PROXY; etcd settings come from us only.
        client.session.trust_env = False
        return client

    # All unary requests go through here: fail over to the next endpoint on connection
    # errors. The body goes out and comes back through orjson: a 10,000-key range is
    # megabytes.
    def _post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return orjson.loads(self._post_raw(path, body))

    def _post_raw(self, path: str, body: Mapping[str, Any]) -> bytes:
        """POST `body`; the reply's JSON text (HTTP 200), after failover."""
        errors: list[str] = []
        n = len(self._clients)
        start = self._current
        data = orjson.dumps(body)
        url_path = API_PATH + path
        for i in range(n):
            idx = (start + i) % n
            try:
                status, reason, content = self._transport.post(idx, url_path, data)
            except _TRANSPORT_ERRORS as e:
                errors.append(f"{self.config.endpoints[idx]}: {_short(e)}")
                continue
            if status in (502, 503, 504):
                errors.append(f"{self.config.endpoints[idx]}: HTTP {status} {_short_body(content, reason)}")
                continue
            if status != 200:
                raise DatastoreError(f"etcd rejected the request: {_short_body(content, reason)}")
            self._current = idx
            return content
        raise DatastoreUnavailable("cannot reach etcd: " + "; ".join(errors))

    # --- reads ---
    def get(self, key: str) -> KV | None:
        resp = self._post("kv/range", {"key": _b64(key)})
        kvs = resp.get("kvs") or []
        return KV.from_json(kvs[0]) if kvs else None

    def get_prefix(self, prefix: str, *, revision: int | None = None, keys_only: bool = False) -> tuple[list[KV], int]:
        """All keys under prefix, and the store revision this read saw."""
        body: dict[str, Any] = {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))}
        if revision:
            body["revision"] = str(revision)
        if keys_only:
            body["keys_only"] = True
        resp = self._post("kv/range", body)
        kvs = [KV.from_json(kv) for kv in resp.get("kvs") or []]
        return kvs, int(resp["header"]["revision"])

    def get_range(self, key: str | bytes, range_end: str | bytes, *, revision: int | None = None,
                  limit: int = 0) -> tuple[list[KV], int, bool]:
        """The keys in [key, range_end) in key order, at most `limit` (0: all) of them.

        Returns (kvs, the store revision of the reply's header, more): `more` says
        keys are left after the last one returned (read on from `last key + b"\\0"`).
        With `revision` the read is of that revision; a compacted one raises
        DatastoreError. The header revision is the store's current revision either
        way, so a paged read learns R from its first (revision-less) page."""
        return parse_range(self.get_range_raw(key, range_end, revision=revision, limit=limit))

    def get_range_raw(self, key: str | bytes, range_end: str | bytes, *, revision: int | None = None,
                      limit: int = 0) -> bytes:
        """`get_range`'s reply undecoded (`parse_range` decodes it, `range_tail`
        finds where the next page starts): a paged reader can ask for the next
        page before it decodes this one."""
        body: dict[str, Any] = {"key": _b64(key), "range_end": _b64(range_end)}
        if revision:
            body["revision"] = str(revision)
        if limit > 0:
            body["limit"] = str(limit)
        return self._post_raw("kv/range", body)

    def get_range_pb(self, key: str | bytes, range_end: str | bytes, *, revision: int | None = None,
                     limit: int = 0) -> bytes:
        """`get_range_raw` over gRPC instead of the JSON gateway: the RangeResponse's
        protobuf bytes (`etcd_grpc.decode_range_response` decodes them,
        `etcd_grpc.range_response_tail` finds where the next page starts). Several
        times cheaper for etcd and for us on big ranges (see etcd_grpc). Raises
        `etcd_grpc.GrpcNotUsable` when gRPC cannot be used (then read through the
        gateway), else the usual datastore errors."""
        request = encode_range_request(key_bytes(key) if isinstance(key, str) else key,
                                       key_bytes(range_end) if isinstance(range_end, str) else range_end,
                                       limit=limit, revision=revision or 0)
        raw, _ = self._grpc.range(request, start=self._current, timeout=self.config.timeout)
        return raw

    def revision(self) -> int:
        resp = self._post("kv/range", {"key": _b64("\0"), "count_only": True})
        return int(resp["header"]["revision"])

    # --- writes ---
    def put(self, key: str, value: bytes | str) -> int:
        resp = self._post("kv/put", {"key": _b64(key), "value": _b64(value)})
        return int(resp["header"]["revision"])

    def delete(self, key: str) -> bool:
        resp = self._post("kv/deleterange", {"key": _b64(key)})
        return int(resp.get("deleted", 0)) > 0

    def delete_prefix(self, prefix: str) -> int:
        resp = self._post("kv/deleterange", {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))})
        return int(resp.get("deleted", 0))

    def txn(
        self,
        compare: Sequence[Mapping[str, Any]],
        success: Sequence[Mapping[str, Any]],
        failure: Sequence[Mapping[str, Any]] = (),
    ) -> TxnResult:
        body = {"compare": list(compare), "success": list(success), "failure": list(failure)}
        try:
            resp = self._post("kv/txn", body)
        except DatastoreError as e:
            if "too many operations" in str(e):
                raise DatastoreError(
                    f"{e} — the transaction has {len(success)} operations; raise etcd's "
                    "--max-txn-ops (the calico.net etcd role sets it) or split the input"
                ) from e
            raise
        return TxnResult(
            succeeded=bool(resp.get("succeeded", False)),
            revision=int(resp["header"]["revision"]),
            responses=list(resp.get("responses") or []),
        )

    def compact(self, revision: int) -> None:
        self._post("kv/compaction", {"revision": str(revision), "physical": True})

    # --- cluster ---
    def status(self) -> dict[str, Any]:
        return self._post("maintenance/status", {})

    def members(self) -> list[dict[str, Any]]:
        return list(self._post("cluster/member/list", {}).get("members") or [])

    def member_list(self) -> list[dict[str, Any]]:
        """The cluster's members as the gateway returns them (`ID` a decimal string,
        `name` empty for a member that was added but has not started yet)."""
        return self.members()

    def member_add(self, peer_urls: Sequence[str], *, learner: bool = False) -> dict[str, Any]:
        """Add a member; returns the gateway's answer (`member`, `members`, `header`)."""
        body: dict[str, Any] = {"peerURLs": list(peer_urls)}
        if learner:
            body["isLearner"] = True
        return self._post("cluster/member/add", body)

    def member_update(self, member_id: int | str, peer_urls: Sequence[str]) -> dict[str, Any]:
        """Change a member's peer URLs. `member_id` is the uint64 ID (an int, or the
        decimal string the gateway returns)."""
        return self._post("cluster/member/update", {"ID": str(int(member_id)), "peerURLs": list(peer_urls)})

    def member_remove(self, member_id: int | str) -> dict[str, Any]:
        """Remove a member by its uint64 ID (an int, or the gateway's decimal string)."""
        return self._post("cluster/member/remove", {"ID": str(int(member_id))})

    # --- watch ---
    def watch_prefix(self, prefix: str, start_revision: int, *, read_timeout: float | None = None) -> "Watch":
        return Watch(self, prefix, start_revision, read_timeout=read_timeout)

    def close(self) -> None:
        self._transport.close()
        self._grpc.close()
        for c in self._clients:
            c.session.close()


class Watch:
    """Iterate over changes under a prefix from a revision.

    Ends by raising: `WatchCompacted` when the start revision is gone,
    `DatastoreUnavailable` when the stream breaks. `cancel()` ends it quietly.
    """

    def __init__(self, client: EtcdClient, prefix: str, start_revision: int, *, read_timeout: float | None) -> None:
        self._client = client
        self._prefix = prefix
        self.start_revision = start_revision
        self._read_timeout = read_timeout
        self._resp: requests.Response | None = None
        self._cancelled = False

    def _open(self) -> requests.Response:
        body = {
            "create_request": {
                "key": _b64(self._prefix),
                "range_end": _b64(prefix_end(self._prefix)),
                "start_revision": str(self.start_revision),
                "progress_notify": True,
            }
        }
        errors = []
        cl = self._client
        for i in range(len(cl._clients)):
            idx = (cl._current + i) % len(cl._clients)
            c = cl._clients[idx]
            try:
                resp = c.session.post(
                    c.get_url("watch"), json=body, stream=True,
                    timeout=(cl.config.timeout, self._read_timeout),
                )
            except requests.exceptions.RequestException as e:
                errors.append(f"{cl.config.endpoints[idx]}: {e}")
                continue
            if resp.status_code != 200:
                errors.append(f"{cl.config.endpoints[idx]}: HTTP {resp.status_code}")
                resp.close()
                continue
            return resp
        raise DatastoreUnavailable("cannot open etcd watch: " + "; ".join(errors))

    def __iter__(self) -> Iterator[list[WatchEvent]]:
        """Yields batches of events (one batch per etcd watch response)."""
        self._resp = self._open()
        try:
            for line in self._resp.iter_lines(chunk_size=None):
                if self._cancelled:
                    return
                if not line or not line.strip():
                    continue
                msg = json.loads(line)
                if "error" in msg:
                    raise DatastoreUnavailable(f"etcd watch failed: {msg['error'].get('message', msg['error'])}")
                result = msg.get("result", {})
                compact = int(result.get("compact_revision", 0) or 0)
                if compact:
                    raise WatchCompacted(compact)
                if result.get("canceled"):
                    raise DatastoreUnavailable(f"etcd cancelled the watch: {result.get('cancel_reason', '')}")
                events = result.get("events")
                if not events:
                    continue
                batch = []
                for ev in events:
                    kv = KV.from_json(ev.get("kv", {}))
                    batch.append(WatchEvent(ev.get("type", "PUT"), kv, kv.mod_revision))
                self.start_revision = batch[-1].revision + 1
                yield batch
        except (requests.exceptions.RequestException, ConnectionError, OSError) as e:
            if self._cancelled:
                return
            raise DatastoreUnavailable(f"etcd watch connection lost: {e}") from e
        except AttributeError:
            # requests raises this when cancel() closes the stream underneath us
            if self._cancelled:
                return
            raise
        finally:
            if self._resp is not None:
                self._resp.close()
        if not self._cancelled:
            raise DatastoreUnavailable("etcd watch stream ended")

    def cancel(self) -> None:
        self._cancelled = True
        resp = self._resp
        if resp is not None:
            try:
                resp.raw._fp.fp.raw._sock.shutdown(2)  # type: ignore[union-attr]
            except Exception:  # noqa: BLE001 - best effort to wake the reader
                pass
            resp.close()


def _short_body(content: bytes, reason: str = "") -> str:
    try:
        detail = orjson.loads(content)
        return str(detail.get("error") or detail.get("message") or detail)[:400]
    except Exception:  # noqa: BLE001 - not JSON
        return (content.decode("utf-8", "replace") or reason or "")[:400]


def _short(e: Exception) -> str:
    if isinstance(e, ssl.SSLError):  # args: (errno, message)
        return ("TLS error: " + str(e.args[-1] if e.args else e.__class__.__name__))[:400]
    text = getattr(e, "detail_text", None) or " ".join(str(a) for a in e.args if a) or e.__class__.__name__
    if "SSL" in text or "certificate" in text.lower():
        text = "TLS error: " + text
    try:
        detail = json.loads(text)
        text = detail.get("error") or detail.get("message") or text
    except Exception:  # noqa: BLE001 - not JSON: keep the text
        pass
    return text[:400]


def connect(config: EtcdConfig | None = None, **kwargs: Any) -> EtcdClient:
    return EtcdClient(config or EtcdConfig.from_sources(**kwargs))
