"""Decode one etcd RangeResponse of WorkloadEndpoint-sized values into the KV tuples
the syncer consumes: the hand-written wire decoder against protobuf's own runtime
(the generated stubs in calico_net.datastore.etcdpb).

    .venv/bin/python bench/bench_etcd_decode.py [--keys 10000] [--runs 15]

Prints the best and median time of each and their ratio. The hand decoder is the
one calico_net used before it had generated stubs, kept here to reproduce the
comparison (see calico_net.datastore.etcd_grpc).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from google.protobuf.internal import api_implementation  # noqa: E402

from calico_net.datastore.etcd import KV, kvs_of  # noqa: E402
from calico_net.datastore.etcdpb import kv_pb2, rpc_pb2  # noqa: E402


def endpoint_value(i: int) -> bytes:
    """A WorkloadEndpoint as calicoctl stores it (about 600 bytes)."""
    return (
        '{"kind":"WorkloadEndpoint","apiVersion":"projectcalico.org/v3","metadata":{"name":'
        f'"node-{i % 50}-k8s-pod--{i}-eth0","namespace":"ns-{i % 20}","uid":"{i:08x}-1f2e-4c3b-9a8d-'
        f'7e6f5a4b3c2d","resourceVersion":"{i + 100}","creationTimestamp":"2024-01-01T00:00:00Z",'
        f'"labels":{{"app":"app-{i % 40}","tier":"backend","projectcalico.org/namespace":"ns-{i % 20}",'
        '"projectcalico.org/orchestrator":"k8s"}},"spec":{"orchestrator":"k8s","node":'
        f'"node-{i % 50}","containerID":"{i:064x}","pod":"pod-{i}","endpoint":"eth0",'
        f'"ipNetworks":["10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}/32"],"profiles":'
        f'["kns.ns-{i % 20}","ksa.ns-{i % 20}.default"],"interfaceName":"cali{i:011x}",'
        f'"mac":"ee:ee:ee:ee:{i >> 8 & 255:02x}:{i & 255:02x}"}}}}'
    ).encode()


def reply(n: int) -> bytes:
    resp = rpc_pb2.RangeResponse(header=rpc_pb2.ResponseHeader(revision=n + 5), count=n)
    for i in range(n):
        resp.kvs.append(kv_pb2.KeyValue(
            key=f"/calico/resources/v3/projectcalico.org/workloadendpoints/ns-{i % 20}/node-{i % 50}-k8s-pod--{i}-eth0".encode(),
            value=endpoint_value(i), create_revision=i + 2, mod_revision=i + 3, version=1))
    return resp.SerializeToString()


def with_runtime(raw: bytes) -> list[KV]:
    return kvs_of(rpc_pb2.RangeResponse.FromString(raw).kvs)


def with_hand_decoder(raw: bytes) -> list[KV]:
    return decode_range_response(raw)[0]


# --- the hand-written decoder of protobuf's wire format ----------------------------


def _read_varint(b: bytes, i: int) -> tuple[int, int]:
    """(value, next offset) of the varint at `b[i]`; ValueError if it runs off the end."""
    n = 0
    shift = 0
    while True:
        try:
            c = b[i]
        except IndexError:
            raise ValueError("truncated varint") from None
        i += 1
        n |= (c & 0x7F) << shift
        if c < 0x80:
            return n, i
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _int64(n: int) -> int:
    n &= (1 << 64) - 1
    return n - (1 << 64) if n >> 63 else n


def _skip(b: bytes, i: int, wire: int) -> int:
    """The offset after a field of wire type `wire` whose value starts at `i`."""
    if wire == 0:
        return _read_varint(b, i)[1]
    if wire == 1:
        return i + 8
    if wire == 2:
        n, i = _read_varint(b, i)
        return i + n
    if wire == 5:
        return i + 4
    raise ValueError(f"unsupported protobuf wire type {wire}")


def _decode_kv(b: bytes, i: int, end: int, kv_cls: Any) -> Any:
    key = value = b""
    create = mod = version = 0
    while i < end:
        tag = b[i]
        i += 1
        # the common tags are one byte; anything else through the general path
        if tag == 0x0A:
            n, i = _read_varint(b, i)
            key = b[i:i + n]
            i += n
        elif tag == 0x2A:
            n, i = _read_varint(b, i)
            value = b[i:i + n]
            i += n
        elif tag == 0x18:
            mod, i = _read_varint(b, i)
        elif tag == 0x10:
            create, i = _read_varint(b, i)
        elif tag == 0x20:
            version, i = _read_varint(b, i)
        else:
            if tag & 0x80:
                tag, i = _read_varint(b, i - 1)
            i = _skip(b, i, tag & 7)
    if i != end:
        raise ValueError("KeyValue overruns its length")
    try:
        skey = key.decode()
    except UnicodeDecodeError:
        # etcd keys are bytes: one that is not UTF-8 is kept, its bytes recoverable
        # (etcd.key_bytes), for the reader to skip it (etcd.key_problem); the
        # valid keys around it still decode
        skey = key.decode("utf-8", "surrogateescape")
    return kv_cls(skey, value, _int64(mod), _int64(create), _int64(version))


def _header_revision(b: bytes, i: int, end: int) -> int:
    revision = 0
    while i < end:
        tag, i = _read_varint(b, i)
        if tag == 0x18:
            revision, i = _read_varint(b, i)
        else:
            i = _skip(b, i, tag & 7)
    if i != end:
        raise ValueError("ResponseHeader overruns its length")
    return _int64(revision)


def _walk(raw: bytes, on_kv: Any) -> tuple[int, bool]:
    """Walk a `RangeResponse`'s top-level fields: `on_kv(start, end)` for each
    KeyValue's bytes, in order; returns (the header's revision, more).
    ValueError if `raw` is not well-formed."""
    revision = 0
    more = False
    i, n = 0, len(raw)
    while i < n:
        tag = raw[i]
        if tag == 0x12:                       # kvs, by far the most frequent: one byte
            i += 1
        else:
            tag, i = _read_varint(raw, i)
        if tag == 0x12:
            ln, j = _read_varint(raw, i)
            i = j + ln
            if i > n:
                raise ValueError("KeyValue runs past the reply")
            on_kv(j, i)
        elif tag == 0x0A:                     # header
            ln, j = _read_varint(raw, i)
            i = j + ln
            if i > n:
                raise ValueError("header runs past the reply")
            revision = _header_revision(raw, j, i)
        elif tag == 0x18:                     # more
            v, i = _read_varint(raw, i)
            more = bool(v)
        else:
            i = _skip(raw, i, tag & 7)
    if i != n:
        raise ValueError("reply overruns its length")
    return revision, more


def decode_range_response(raw: bytes, kv_cls: Any = None) -> tuple[list[Any], int, bool]:
    """A `RangeResponse`: (KVs in key order, the header's revision, more).
    `kv_cls` (default `etcd.KV`) is called as (key, value, mod_revision,
    create_revision, version). ValueError if `raw` is not a well-formed reply."""
    kv_cls = kv_cls or KV
    kvs: list[Any] = []
    append = kvs.append
    revision, more = _walk(raw, lambda i, end: append(_decode_kv(raw, i, end, kv_cls)))
    return kvs, revision, more


def timed(fn, raw: bytes, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn(raw)
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    raw = reply(args.keys)
    assert with_runtime(raw) == with_hand_decoder(raw)
    print(f"protobuf backend: {api_implementation.Type()}; reply: {args.keys} KVs, {len(raw) / 1e6:.1f} MB")
    res = {}
    for name, fn in (("hand decoder", with_hand_decoder), ("protobuf runtime", with_runtime)):
        t = timed(fn, raw, args.runs)
        res[name] = min(t)
        print(f"{name:17s} best {min(t) * 1e3:6.1f} ms  median {statistics.median(t) * 1e3:6.1f} ms")
    print(f"hand decoder / runtime: {res['hand decoder'] / res['protobuf runtime']:.2f}")


if __name__ == "__main__":
    main()
