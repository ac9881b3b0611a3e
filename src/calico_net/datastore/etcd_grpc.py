"""etcd's gRPC API as calico_net's one transport: a channel per endpoint, the one
fail-over loop, TLS, and the mapping of gRPC status codes to datastore errors.

The messages and stubs are generated from etcd's own `.proto` files (trimmed
copies in `calico_net.datastore.etcdpb`, see its docstring) and decoded by
protobuf's C runtime (upb). That runtime was measured against the hand-written
wire decoder this module used to hold, on the agent's cold-start path (one
RangeResponse of 10,000 WorkloadEndpoint values, about 600 bytes each, decoded
into the KV tuples the syncer consumes):

    .venv/bin/python bench/bench_etcd_decode.py
    hand decoder 28 ms, protobuf runtime (upb) 12 ms: the runtime is 2.3x faster

so there is no hand-written protobuf here. What callers see is `EtcdClient`
(`datastore.etcd`); nothing outside the datastore knows this module exists.
"""
from __future__ import annotations

import os
import ssl
import threading
from typing import Any, Callable, NamedTuple, Sequence
from urllib.parse import urlsplit

import grpc

from calico_net.datastore import etcd_h2
from calico_net.datastore.errors import DatastoreError, DatastoreUnavailable
from calico_net.datastore.etcdpb import cluster_pb2_grpc as cluster_rpc
from calico_net.datastore.etcdpb import rpc_pb2_grpc as rpc

# Statuses after which the next endpoint is tried: this one is down, unreachable,
# too slow, or refused our TLS.
_TRY_NEXT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class Stubs(NamedTuple):
    """The services of one endpoint's channel. (etcd's Watch is not called through
    gRPC: see `etcd_h2`.)"""

    kv: rpc.KVStub
    cluster: cluster_rpc.ClusterStub
    maintenance: cluster_rpc.MaintenanceStub


class Channels:
    """One channel per endpoint, made on first use and kept (thread-safe: a gRPC
    channel multiplexes calls from any number of threads). A channel made before a
    fork is not used by the child (gRPC's sockets and threads do not survive a
    fork): the child makes its own and leaves the parent's alone. gRPC's own rule
    still holds: fork only while no other thread is inside a gRPC call (a watch
    being read counts), or the child's calls may fail or the child crash.

    TLS as the configuration says: the CA file (else gRPC's default roots) and a
    client certificate when one is set. No proxy: etcd traffic goes where the
    endpoints say, whatever HTTP(S)_PROXY says."""

    def __init__(self, endpoints: Sequence[str], *, ca_cert_file: str | None = None,
                 cert_file: str | None = None, key_file: str | None = None,
                 timeout: float = 10.0) -> None:
        self.endpoints = list(endpoints)
        self.ca_cert_file = ca_cert_file
        self.cert_file = cert_file
        self.key_file = key_file
        self.timeout = timeout
        self.current = 0            # the endpoint that answered last: tried first
        self._open: dict[int, tuple[int, grpc.Channel, Stubs]] = {}
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None

    def stubs(self, idx: int) -> Stubs:
        pid = os.getpid()
        with self._lock:
            hit = self._open.get(idx)
            if hit is not None and hit[0] == pid:
                return hit[2]
            channel = self._channel(self.endpoints[idx])
            stubs = Stubs(rpc.KVStub(channel), cluster_rpc.ClusterStub(channel),
                          cluster_rpc.MaintenanceStub(channel))
            self._open[idx] = (pid, channel, stubs)
            return stubs

    def tls_context(self) -> ssl.SSLContext:
        """The TLS context of the watch streams' own connections (`etcd_h2`), from
        the same files as the channels' credentials; made once."""
        with self._lock:
            if self._tls is None:
                with_cert = bool(self.cert_file and self.key_file)
                try:
                    self._tls = etcd_h2.tls_context(self.ca_cert_file, self.cert_file if with_cert else None,
                                                    self.key_file if with_cert else None)
                except OSError as e:   # ssl.SSLError is one too
                    raise DatastoreError(f"cannot read the etcd TLS files: {e}") from None
            return self._tls

    def _channel(self, endpoint: str) -> grpc.Channel:
        parts = urlsplit(endpoint)
        host = parts.hostname or "127.0.0.1"
        port = parts.port or 2379
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        # gRPC's reconnect backoff grows to 120 s by default: after a long etcd outage
        # the channel would come back that late, long after etcd did. Capped at the
        # watchers' own backoff cap, so recovery follows etcd's return.
        options = [("grpc.max_receive_message_length", -1), ("grpc.enable_http_proxy", 0),
                   ("grpc.max_reconnect_backoff_ms", 5000)]
        if parts.scheme != "https":
            return grpc.insecure_channel(target, options=options)
        with_cert = bool(self.cert_file and self.key_file)
        try:
            creds = grpc.ssl_channel_credentials(
                root_certificates=_read(self.ca_cert_file),
                private_key=_read(self.key_file) if with_cert else None,
                certificate_chain=_read(self.cert_file) if with_cert else None)
        except OSError as e:
            raise DatastoreError(f"cannot read the etcd TLS files: {e}") from None
        return grpc.secure_channel(target, creds, options=options)

    def call(self, method: Callable[[Stubs], Any], request: Any) -> Any:
        """`method(stubs)(request)` on the endpoints in turn, from the one that
        answered last; the reply. DatastoreUnavailable naming every endpoint when
        none answers, DatastoreError when etcd refuses the request."""
        n = len(self.endpoints)
        start = self.current
        errors: list[str] = []
        for k in range(n):
            idx = (start + k) % n
            try:
                try:
                    reply = method(self.stubs(idx))(request, timeout=self.timeout)
                except grpc.RpcError as e:
                    if not _not_sent_after_fork(e):
                        raise
                    # gRPC's fork handling can fail a forked child's first send on a new
                    # channel ("Wrong file descriptor generation"): nothing was sent, so
                    # sending once more is safe, even for a write
                    reply = method(self.stubs(idx))(request, timeout=self.timeout)
            except grpc.RpcError as e:
                if try_next(e):
                    errors.append(f"{self.endpoints[idx]}: {failure_text(e, self.timeout)}")
                    continue
                raise refused(e) from None
            self.current = idx
            return reply
        raise DatastoreUnavailable("cannot reach etcd: " + "; ".join(errors))

    def close(self) -> None:
        with self._lock:
            channels, self._open = self._open, {}
        pid = os.getpid()
        for owner, channel, _ in channels.values():
            if owner == pid:
                channel.close()


def _not_sent_after_fork(e: grpc.RpcError) -> bool:
    return "Wrong file descriptor generation" in (e.details() or "")


def failure_text(e: grpc.RpcError, timeout: float | None = None) -> str:
    """One endpoint's failure for an operator: a timeout says so, a TLS failure
    says TLS (and gRPC's wording of a certificate that does not verify is turned
    into the usual one)."""
    if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"timed out after {timeout:g} s" if timeout else "timed out"
    text = e.details() or str(e.code())
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        return "TLS error: certificate verify failed (" + text[:300] + ")"
    if any(word in text.lower() for word in ("ssl", "tsi_", "tls", "handshake", "certificate", "verification")):
        return ("TLS error: " + text)[:400]
    return text[:400]


def refused(e: grpc.RpcError) -> DatastoreError:
    """The error for a call that reached etcd and failed there (or whose reply did
    not decode: gRPC reports that as INTERNAL)."""
    text = (e.details() or str(e.code()))[:400]
    if e.code() == grpc.StatusCode.INTERNAL and "deserializ" in text:
        return DatastoreError(f"etcd reply does not decode: {text}")
    return DatastoreError(f"etcd rejected the request: {text}")


def try_next(e: grpc.RpcError) -> bool:
    """Whether another endpoint may answer where this one failed with `e`."""
    return e.code() in _TRY_NEXT


def _read(path: str | None) -> bytes | None:
    if not path:
        return None
    with open(path, "rb") as f:
        return f.read()
