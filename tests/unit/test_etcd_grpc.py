"""The hand-written protobuf of etcd's KV.Range (calico_net.datastore.etcd_grpc),
checked against an independent encoder written here from the wire-format rules:
field order, unknown fields of every wire type, long varints, malformed input.
(The real server's replies are checked in tests/integration/test_etcd_client.py.)"""
from __future__ import annotations

import pytest

from calico_net.datastore.etcd import KV
from calico_net.datastore.etcd_grpc import (
    decode_range_response,
    encode_range_request,
    range_response_tail,
)

from etcd_pb import f_bytes, f_fixed32, response


KVS = [KV(f"/calico/resources/v3/projectcalico.org/k{i:05d}", f'{{"v":{i}}}'.encode() * (i % 7),
          100 + i * 1000003, 50 + i, 1 + i % 3) for i in range(200)]


@pytest.mark.parametrize("unknown", [False, True])
@pytest.mark.parametrize("more", [False, True])
def test_response_decodes_to_the_kvs_it_was_made_from(unknown, more):
    extra = f_bytes(9, b"x" * 300) + f_fixed32(10, 5) if unknown else b""
    raw = response(KVS, 2**40 + 3, more, extra_kv=extra, unknown=unknown)
    kvs, rev, got_more = decode_range_response(raw)
    assert kvs == KVS and rev == 2**40 + 3 and got_more is more
    assert range_response_tail(raw) == (KVS[-1].key.encode(), more)


def test_empty_response_and_empty_values():
    raw = response([], 7, False)
    assert decode_range_response(raw) == ([], 7, False)
    assert range_response_tail(raw) == (None, False)
    # a deleted-then-recreated key may have an empty value; an empty message is all zeros
    empty = KV("/k", b"", 5, 5, 1)
    raw = response([empty], 8, False)
    assert decode_range_response(raw)[0] == [empty]
    assert decode_range_response(b"") == ([], 0, False)


@pytest.mark.parametrize("cut", [1, 2, 5, 40, -1, -3])
def test_truncated_reply_is_an_error_not_a_short_page(cut):
    raw = response(KVS[:5], 9, True)
    bad = raw[:cut] if cut > 0 else raw[:cut]
    with pytest.raises(ValueError):
        decode_range_response(bad)
    with pytest.raises(ValueError):
        range_response_tail(bad)


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

    assert fields(encode_range_request(b"/a/", b"/a0")) == {1: b"/a/", 2: b"/a0"}
    assert fields(encode_range_request(b"/a/", b"/a0", limit=1000, revision=2**35)) == \
        {1: b"/a/", 2: b"/a0", 3: 1000, 4: 2**35}
    # the varint itself, byte for byte: 1000 = 0xe8 0x07
    assert encode_range_request(b"k", b"l", limit=1000) == b"\x0a\x01k\x12\x01l\x18\xe8\x07"


def test_a_key_that_is_not_utf8_decodes_with_its_bytes_kept():
    """etcd keys are bytes: one that is not UTF-8 must not fail the page (it did:
    every snapshot retry failed on it). It decodes with surrogateescape; key_bytes
    gives back the exact bytes (where the next page starts), key_problem says why a
    reader skips it. The same through the JSON gateway's decoder."""
    import base64
    import json

    from calico_net.datastore.etcd import key_bytes, key_problem, parse_range, show_key
    from etcd_pb import f_int

    raw_key = b"/calico/resources/v3/projectcalico.org/globalnetworkpolicies/bad\xff\xfe\x1b"
    good_key = b"/calico/resources/v3/projectcalico.org/globalnetworkpolicies/z\xc3\xa9"
    raw = (f_bytes(1, f_int(3, 9))
           + f_bytes(2, f_bytes(1, raw_key) + f_int(3, 7) + f_bytes(5, b"{not json"))
           + f_bytes(2, f_bytes(1, good_key) + f_int(3, 8) + f_bytes(5, b"{}")))
    gateway = json.dumps({"header": {"revision": "9"}, "kvs": [
        {"key": base64.b64encode(k).decode(), "value": base64.b64encode(v).decode(), "mod_revision": str(r)}
        for k, v, r in ((raw_key, b"{not json", 7), (good_key, b"{}", 8))]}).encode()
    for kvs, rev, more in (decode_range_response(raw), parse_range(gateway)):
        assert rev == 9 and not more
        assert [key_bytes(k.key) for k in kvs] == [raw_key, good_key]
        assert key_problem(kvs[0].key) == "key is not valid UTF-8"
        assert key_problem(kvs[1].key) is None and kvs[1].key.endswith("z\u00e9")
        assert show_key(kvs[0].key).endswith("globalnetworkpolicies/bad\\xff\\xfe\\x1b")
        assert kvs[0].value == b"{not json" and kvs[1].mod_revision == 8
    assert range_response_tail(raw) == (good_key, False)


def test_show_key_is_bounded_and_escaped():
    from calico_net.datastore.etcd import show_key

    assert show_key("/calico/resources/v3/projectcalico.org/nodes/h1") == "/calico/resources/v3/projectcalico.org/nodes/h1"
    shown = show_key("/calico/x/" + "\x1b[2J" * 1_000_000)
    assert len(shown) < 2000 and shown.isprintable() and "\\x1b[2J" in shown
    assert shown.endswith("... (4000010 characters)")
