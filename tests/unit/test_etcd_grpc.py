"""etcd's messages as calico_net reads them: the generated stubs
(calico_net.datastore.etcdpb) and `etcd.kvs_of`, checked against an independent
encoder written here from the wire-format rules (etcd_pb): field numbers, field
order, unknown fields of every wire type, long varints, malformed input; and how
the transport words a failure (calico_net.datastore.etcd_grpc).
(The real server's replies are checked in tests/integration/test_etcd_client.py.)"""
from __future__ import annotations

import grpc
import pytest
from google.protobuf.message import DecodeError

from calico_net.datastore.etcd import KV, kvs_of
from calico_net.datastore.etcd_grpc import failure_text, refused
from calico_net.datastore.etcdpb import rpc_pb2 as pb

from etcd_pb import f_bytes, f_fixed32, response


KVS = [KV(f"/calico/resources/v3/projectcalico.org/k{i:05d}", f'{{"v":{i}}}'.encode() * (i % 7),
          100 + i * 1000003, 50 + i, 1 + i % 3) for i in range(200)]


def decode_range_response(raw: bytes) -> tuple[list[KV], int, bool]:
    reply = pb.RangeResponse.FromString(raw)
    return kvs_of(reply.kvs), reply.header.revision, reply.more


@pytest.mark.parametrize("unknown", [False, True])
@pytest.mark.parametrize("more", [False, True])
def test_response_decodes_to_the_kvs_it_was_made_from(unknown, more):
    extra = f_bytes(9, b"x" * 300) + f_fixed32(10, 5) if unknown else b""
    raw = response(KVS, 2**40 + 3, more, extra_kv=extra, unknown=unknown)
    kvs, rev, got_more = decode_range_response(raw)
    assert kvs == KVS and rev == 2**40 + 3 and got_more is more


def test_empty_response_and_empty_values():
    raw = response([], 7, False)
    assert decode_range_response(raw) == ([], 7, False)
    # a deleted-then-recreated key may have an empty value; an empty message is all zeros
    empty = KV("/k", b"", 5, 5, 1)
    raw = response([empty], 8, False)
    assert decode_range_response(raw)[0] == [empty]
    assert decode_range_response(b"") == ([], 0, False)


@pytest.mark.parametrize("cut", [1, 2, 5, 40, -1, -3])
def test_truncated_reply_is_an_error_not_a_short_page(cut):
    raw = response(KVS[:5], 9, True)
    bad = raw[:cut] if cut > 0 else raw[:cut]
    with pytest.raises(DecodeError):
        decode_range_response(bad)


def test_request_fields():
    def fields(b: bytes) -> dict[int, object]:
        out, i = {}, 0
        while i < len(b):
            tag = b[i]
            i += 1
            if tag & 7 == 2:
                n = b[i]
                i += 1
                out[tag >> 3] = b[i:i + n]
                i += n
            else:
                v, shift = 0, 0
                while True:
                    c = b[i]
                    i += 1
                    v |= (c & 0x7F) << shift
                    shift += 7
                    if c < 0x80:
                        break
                out[tag >> 3] = v
        return out

    def encode_range_request(key, range_end, *, limit=0, revision=0):
        return pb.RangeRequest(key=key, range_end=range_end, limit=limit, revision=revision).SerializeToString()

    assert fields(encode_range_request(b"/a/", b"/a0")) == {1: b"/a/", 2: b"/a0"}
    assert fields(encode_range_request(b"/a/", b"/a0", limit=1000, revision=2**35)) == \
        {1: b"/a/", 2: b"/a0", 3: 1000, 4: 2**35}
    # the varint itself, byte for byte: 1000 = 0xe8 0x07
    assert encode_range_request(b"k", b"l", limit=1000) == b"\x0a\x01k\x12\x01l\x18\xe8\x07"


def test_method_paths_are_etcds():
    from calico_net.datastore.etcdpb import rpc_pb2_grpc

    assert pb.DESCRIPTOR.package == "etcdserverpb"
    assert [m.full_name for m in pb.DESCRIPTOR.services_by_name["KV"].methods] == [
        "etcdserverpb.KV.Range", "etcdserverpb.KV.Put", "etcdserverpb.KV.DeleteRange",
        "etcdserverpb.KV.Txn", "etcdserverpb.KV.Compact"]
    assert pb.DESCRIPTOR.services_by_name["Watch"].methods_by_name["Watch"].full_name == "etcdserverpb.Watch.Watch"
    assert rpc_pb2_grpc.KVStub and pb.RangeResponse.DESCRIPTOR.fields_by_name["kvs"].message_type.full_name \
        == "mvccpb.KeyValue"


def test_a_key_that_is_not_utf8_decodes_with_its_bytes_kept():
    """etcd keys are bytes: one that is not UTF-8 must not fail the page (it did:
    every snapshot retry failed on it). It decodes with surrogateescape; key_bytes
    gives back the exact bytes (where the next page starts), key_problem says why a
    reader skips it."""
    from calico_net.datastore.etcd import key_bytes, key_problem, show_key
    from etcd_pb import f_int

    raw_key = b"/calico/resources/v3/projectcalico.org/globalnetworkpolicies/bad\xff\xfe\x1b"
    good_key = b"/calico/resources/v3/projectcalico.org/globalnetworkpolicies/z\xc3\xa9"
    raw = (f_bytes(1, f_int(3, 9))
           + f_bytes(2, f_bytes(1, raw_key) + f_int(3, 7) + f_bytes(5, b"{not json"))
           + f_bytes(2, f_bytes(1, good_key) + f_int(3, 8) + f_bytes(5, b"{}")))
    kvs, rev, more = decode_range_response(raw)
    assert rev == 9 and not more
    assert [key_bytes(k.key) for k in kvs] == [raw_key, good_key]
    assert key_problem(kvs[0].key) == "key is not valid UTF-8"
    assert key_problem(kvs[1].key) is None and kvs[1].key.endswith("z\u00e9")
    assert show_key(kvs[0].key).endswith("globalnetworkpolicies/bad\\xff\\xfe\\x1b")
    assert kvs[0].value == b"{not json" and kvs[1].mod_revision == 8


def test_show_key_is_bounded_and_escaped():
    from calico_net.datastore.etcd import show_key

    assert show_key("/calico/resources/v3/projectcalico.org/nodes/h1") == "/calico/resources/v3/projectcalico.org/nodes/h1"
    shown = show_key("/calico/x/" + "\x1b[2J" * 1_000_000)
    assert len(shown) < 2000 and shown.isprintable() and "\\x1b[2J" in shown
    assert shown.endswith("... (4000010 characters)")


class Failed(grpc.RpcError):
    def __init__(self, code, details):
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


def test_failures_are_worded_for_an_operator():
    assert failure_text(Failed(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"), 0.5) == \
        "timed out after 0.5 s"
    tls = failure_text(Failed(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses; last error: "
                              "UNKNOWN: ipv4:127.0.0.1:2379: Ssl handshake failed: SSL_ERROR_SSL: error:1000007d:"
                              "SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED"))
    assert tls.startswith("TLS error: certificate verify failed")
    assert str(refused(Failed(grpc.StatusCode.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been "
                                                             "compacted"))) == \
        "etcd rejected the request: etcdserver: mvcc: required revision has been compacted"
    assert "does not decode" in str(refused(Failed(grpc.StatusCode.INTERNAL, "Exception deserializing response!")))
