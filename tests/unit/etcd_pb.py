"""An independent protobuf encoder for etcd's RangeResponse, written from the
wire-format rules, for tests of the generated etcd messages
(calico_net.datastore.etcdpb) as calico_net reads them."""
from __future__ import annotations

import random
import struct

from calico_net.datastore.etcd import KV


def varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    out = b""
    while n >= 0x80:
        out += bytes([(n & 0x7F) | 0x80])
        n >>= 7
    return out + bytes([n])


def f_int(no: int, v: int) -> bytes:
    return varint(no << 3) + varint(v)


def f_bytes(no: int, b: bytes) -> bytes:
    return varint(no << 3 | 2) + varint(len(b)) + b


def f_fixed64(no: int, v: int) -> bytes:
    return varint(no << 3 | 1) + struct.pack("<Q", v)


def f_fixed32(no: int, v: int) -> bytes:
    return varint(no << 3 | 5) + struct.pack("<I", v)


def kv_msg(kv: KV, extra: bytes = b"", order: int = 0) -> bytes:
    # proto3 leaves zero and empty fields out; a server may write fields in any order
    fields = [f_bytes(1, kv.key.encode())] if kv.key else []
    fields += [f_int(no, v) for no, v in ((2, kv.create_revision), (3, kv.mod_revision),
                                          (4, kv.version), (6, 7)) if v]
    if kv.value:
        fields.append(f_bytes(5, kv.value))
    if order:
        random.Random(order).shuffle(fields)
    return b"".join(fields) + extra


def response(kvs: list[KV], revision: int, more: bool, extra_kv: bytes = b"", unknown: bool = False) -> bytes:
    header = f_int(1, 0xDEADBEEF) + f_int(2, 42) + f_int(3, revision) + f_int(4, 9)
    out = f_bytes(1, header)
    if unknown:
        out += f_fixed64(15, 1) + f_fixed32(14, 2) + f_bytes(200, b"future field") + f_int(13, 1 << 40)
    for i, kv in enumerate(kvs):
        out += f_bytes(2, kv_msg(kv, extra_kv, order=i if unknown else 0))
    if more:
        out += f_int(3, 1)
    out += f_int(4, len(kvs) + 5)
    return out
