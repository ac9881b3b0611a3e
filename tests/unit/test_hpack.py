"""Tests of the HPACK decoder: the RFC 7541 Appendix C examples, Huffman coding, and malformed blocks."""

import pytest

from calico_net.datastore import hpack
from calico_net.datastore.hpack import Decoder, HpackError


def unhex(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


def huffman_encode(data: bytes) -> bytes:
    """Huffman-code ``data`` with the module's code table, padding with ones."""
    acc = 0
    nbits = 0
    for byte in data:
        code, length = hpack.HUFFMAN_CODES[byte]
        acc = (acc << length) | code
        nbits += length
    pad = -nbits % 8
    acc = (acc << pad) | ((1 << pad) - 1)
    nbits += pad
    return acc.to_bytes(nbits // 8, "big")


def encode_int(value: int, prefix: int, flags: int = 0) -> bytes:
    mask = (1 << prefix) - 1
    if value < mask:
        return bytes([flags | value])
    out = bytearray([flags | mask])
    value -= mask
    while value >= 0x80:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def literal_str(data: bytes, huffman: bool = False) -> bytes:
    if huffman:
        data = huffman_encode(data)
    return encode_int(len(data), 7, 0x80 if huffman else 0) + data


def pairs(*items: tuple[str, str]) -> list[tuple[bytes, bytes]]:
    return [(n.encode(), v.encode()) for n, v in items]


# -- RFC 7541 Appendix C.2: single representations ------------------------


def test_c_2_1_literal_with_indexing():
    d = Decoder()
    block = unhex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572")
    assert d.decode(block) == pairs(("custom-key", "custom-header"))
    assert d.dynamic_table == pairs(("custom-key", "custom-header"))
    assert d.dynamic_table_size == 55


def test_c_2_2_literal_without_indexing():
    d = Decoder()
    assert d.decode(unhex("040c 2f73 616d 706c 652f 7061 7468")) == pairs((":path", "/sample/path"))
    assert d.dynamic_table == []
    assert d.dynamic_table_size == 0


def test_c_2_3_literal_never_indexed():
    d = Decoder()
    assert d.decode(unhex("1008 7061 7373 776f 7264 0673 6563 7265 74")) == pairs(("password", "secret"))
    assert d.dynamic_table == []


def test_c_2_4_indexed():
    d = Decoder()
    assert d.decode(b"\x82") == pairs((":method", "GET"))
    assert d.dynamic_table == []


# -- RFC 7541 Appendix C.3 / C.4: requests sharing a decoder --------------

REQUEST_1 = pairs((":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com"))
REQUEST_2 = REQUEST_1 + pairs(("cache-control", "no-cache"))
REQUEST_3 = pairs(
    (":method", "GET"), (":scheme", "https"), (":path", "/index.html"),
    (":authority", "www.example.com"), ("custom-key", "custom-value"),
)
TABLE_AFTER_REQUEST = [
    (pairs((":authority", "www.example.com")), 57),
    (pairs(("cache-control", "no-cache"), (":authority", "www.example.com")), 110),
    (pairs(("custom-key", "custom-value"), ("cache-control", "no-cache"), (":authority", "www.example.com")), 164),
]

C3_BLOCKS = [
    "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
    "8286 84be 5808 6e6f 2d63 6163 6865",
    "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
]
C4_BLOCKS = [
    "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
    "8286 84be 5886 a8eb 1064 9cbf",
    "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
]


@pytest.mark.parametrize("blocks", [C3_BLOCKS, C4_BLOCKS], ids=["C.3", "C.4"])
def test_c_3_c_4_requests(blocks):
    d = Decoder()
    for block, want, (table, size) in zip(blocks, [REQUEST_1, REQUEST_2, REQUEST_3], TABLE_AFTER_REQUEST):
        assert d.decode(unhex(block)) == want
        assert d.dynamic_table == table
        assert d.dynamic_table_size == size


# -- RFC 7541 Appendix C.5 / C.6: responses, table size 256, eviction -----

DATE_1 = "Mon, 21 Oct 2013 20:13:21 GMT"
DATE_2 = "Mon, 21 Oct 2013 20:13:22 GMT"
COOKIE = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"
LOCATION = "https://www.example.com"

RESPONSE_1 = pairs((":status", "302"), ("cache-control", "private"), ("date", DATE_1), ("location", LOCATION))
RESPONSE_2 = pairs((":status", "307"), ("cache-control", "private"), ("date", DATE_1), ("location", LOCATION))
RESPONSE_3 = pairs(
    (":status", "200"), ("cache-control", "private"), ("date", DATE_2), ("location", LOCATION),
    ("content-encoding", "gzip"), ("set-cookie", COOKIE),
)
TABLE_AFTER_RESPONSE = [
    (pairs(("location", LOCATION), ("date", DATE_1), ("cache-control", "private"), (":status", "302")), 222),
    (pairs((":status", "307"), ("location", LOCATION), ("date", DATE_1), ("cache-control", "private")), 222),
    (pairs(("set-cookie", COOKIE), ("content-encoding", "gzip"), ("date", DATE_2)), 215),
]

C5_BLOCKS = [
    """4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
       2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70
       6c65 2e63 6f6d""",
    "4803 3330 37c1 c0bf",
    """88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d
       54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049
       5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e
       3d31""",
]
C6_BLOCKS = [
    """4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
       2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3""",
    "4883 640e ffc1 c0bf",
    """88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
       77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
       9587 3160 65c0 03ed 4ee5 b106 3d50 07""",
]


@pytest.mark.parametrize("blocks", [C5_BLOCKS, C6_BLOCKS], ids=["C.5", "C.6"])
def test_c_5_c_6_responses_with_eviction(blocks):
    d = Decoder(max_table_size=256)
    for block, want, (table, size) in zip(blocks, [RESPONSE_1, RESPONSE_2, RESPONSE_3], TABLE_AFTER_RESPONSE):
        assert d.decode(unhex(block)) == want
        assert d.dynamic_table == table
        assert d.dynamic_table_size == size


# -- Huffman ----------------------------------------------------------------


def test_huffman_codes_match_rfc_samples():
    # A few entries of RFC 7541 Appendix B, checked against the table the module rebuilds.
    assert hpack.HUFFMAN_CODES[0] == (0x1FF8, 13)
    assert hpack.HUFFMAN_CODES[ord(" ")] == (0x14, 6)
    assert hpack.HUFFMAN_CODES[ord("0")] == (0x0, 5)
    assert hpack.HUFFMAN_CODES[ord("a")] == (0x3, 5)
    assert hpack.HUFFMAN_CODES[ord("z")] == (0x7B, 7)
    assert hpack.HUFFMAN_CODES[ord("~")] == (0x1FFD, 13)
    assert hpack.HUFFMAN_CODES[10] == (0x3FFFFFFC, 30)
    assert hpack.HUFFMAN_CODES[255] == (0x3FFFFEE, 26)
    assert hpack.HUFFMAN_CODES[256] == (0x3FFFFFFF, 30)
    # Prefix-free and complete: the Kraft sum is exactly 1.
    assert sum(2.0 ** -length for _, length in hpack.HUFFMAN_CODES) == 1.0


@pytest.mark.parametrize("text, coded", [
    ("www.example.com", "f1e3 c2e5 f23a 6ba0 ab90 f4ff"),
    ("no-cache", "a8eb 1064 9cbf"),
    ("302", "6402"),
    ("private", "aec3 771a 4b"),
    ("gzip", "9bd9 ab"),
])
def test_huffman_encoder_matches_rfc(text, coded):
    assert huffman_encode(text.encode()) == unhex(coded)


@pytest.mark.parametrize("value", [bytes([b]) for b in range(256)] + [bytes(range(256)), b""])
def test_huffman_round_trip(value):
    block = b"\x00" + literal_str(b"x-bytes") + literal_str(value, huffman=True)
    assert Decoder().decode(block) == [(b"x-bytes", value)]


def test_huffman_round_trip_name_and_indexed_add():
    d = Decoder()
    block = b"\x40" + literal_str(b"grpc-message", huffman=True) + literal_str(b"etcdserver: no leader", huffman=True)
    assert d.decode(block) == [(b"grpc-message", b"etcdserver: no leader")]
    assert d.decode(b"\xbe") == [(b"grpc-message", b"etcdserver: no leader")]


# -- Integers and size updates ------------------------------------------------


def test_multi_byte_integers():
    # Index 62 needs a continuation byte with a 4-bit prefix; also checks a
    # dynamic table size update to a multi-byte value at the start of a block.
    d = Decoder()
    d.decode(b"\x40" + literal_str(b"a") + literal_str(b"b"))
    block = encode_int(1337, 5, 0x20) + encode_int(62, 4) + literal_str(b"c")
    assert block[:3] == b"\x3f\x9a\x0a"  # RFC 7541 C.1.2
    assert d.decode(block) == [(b"a", b"c")]
    assert d.table_size == 1337


def test_size_update_evicts_and_zero_empties():
    d = Decoder()
    d.decode(b"\x40" + literal_str(b"k1") + literal_str(b"v1") + b"\x40" + literal_str(b"k2") + literal_str(b"v2"))
    assert d.dynamic_table_size == 72
    d.decode(encode_int(40, 5, 0x20))
    assert d.dynamic_table == [(b"k2", b"v2")]
    d.decode(b"\x20\x3f\xe1\x1f")  # to 0, then back to 4096, both before any field
    assert d.dynamic_table == []
    assert d.table_size == 4096


def test_entry_larger_than_table_empties_it():
    d = Decoder(max_table_size=64)
    d.decode(b"\x40" + literal_str(b"k") + literal_str(b"v"))
    assert d.decode(b"\x40" + literal_str(b"k") + literal_str(b"v" * 40)) == [(b"k", b"v" * 40)]
    assert d.dynamic_table == []
    assert d.dynamic_table_size == 0


def test_empty_block():
    assert Decoder().decode(b"") == []


def test_grpc_trailers():
    block = (
        b"\x88"
        + b"\x5f" + literal_str(b"application/grpc", huffman=True)
        + b"\x40" + literal_str(b"grpc-status") + literal_str(b"0")
    )
    d = Decoder()
    assert d.decode(block) == [(b":status", b"200"), (b"content-type", b"application/grpc"), (b"grpc-status", b"0")]
    assert d.decode(b"\xbe\xbf") == [(b"grpc-status", b"0"), (b"content-type", b"application/grpc")]


# -- Errors -------------------------------------------------------------------


def raises(block: bytes, match: str, decoder: Decoder | None = None) -> HpackError:
    with pytest.raises(HpackError, match=match) as info:
        (decoder or Decoder()).decode(block)
    return info.value


def test_truncated_integer():
    raises(b"\xff", "offset 0: integer truncated")
    raises(b"\x82\xff\x9a", "offset 1: integer truncated")


def test_absurd_integers():
    raises(b"\xff\xff\xff\xff\xff\x7f", "offset 0: integer too large")
    raises(b"\xff" + b"\x80" * 10 + b"\x01", "integer too large")


def test_index_zero():
    raises(b"\x80", "offset 0: indexed header field with index 0")


def test_index_beyond_tables():
    raises(b"\xbe", "offset 0: index 62 is beyond the tables")
    raises(b"\x82\x7f\x00" + literal_str(b"v"), "offset 1: index 63 is beyond the tables")
    raises(b"\x0f\x30" + literal_str(b"v"), "index 63 is beyond")


def test_string_length_beyond_block():
    raises(b"\x00\x05abc", "offset 1: string length 5 runs past the end")
    raises(b"\x04\x8a\xff", "offset 1: string length 10 runs past")


def test_missing_string():
    raises(b"\x00", "offset 1: string literal missing")
    raises(b"\x04", "offset 1: string literal missing")
    raises(b"\x00" + literal_str(b"k"), "offset 3: string literal missing")


def test_bad_huffman_padding():
    # 'a' is 00011 (5 bits); pad with zeros instead of ones.
    raises(b"\x04\x81\x18", "offset 1: Huffman padding is not all ones")
    # 'a' then a full byte of ones: 11 bits of padding.
    raises(b"\x04\x82\x1f\xff", "offset 1: .* 11 bits of padding")


def test_huffman_eos_in_string():
    # EOS (30 ones) followed by two padding ones.
    raises(b"\x04\x84\xff\xff\xff\xff", "offset 5: EOS symbol")
    # After a real symbol.
    raises(b"\x04\x85\x1f\xff\xff\xff\xff", "EOS symbol")


def test_size_update_above_max():
    raises(encode_int(4097, 5, 0x20), "offset 0: dynamic table size update to 4097 exceeds the maximum 4096")
    raises(b"\x3f\xe2\x01", r"size update to 257 exceeds the maximum 256", Decoder(max_table_size=256))


def test_size_update_after_field():
    raises(b"\x82\x20", r"offset 1: dynamic table size update \(0\) after a header field")


def test_decoded_size_bound():
    d = Decoder()
    d.decode(b"\x40" + literal_str(b"k") + literal_str(b"v" * 4000))
    block = b"\xbe" * 17  # 17 x 4033 > 64 KiB
    raises(block, "offset 16: header block decodes to more than 65536 bytes", d)
    assert Decoder().decode(b"\x40" + literal_str(b"k") + literal_str(b"v" * 4000) + b"\xbe" * 15)


def test_decoder_refuses_blocks_after_an_error():
    d = Decoder()
    raises(b"\x80", "index 0", d)
    raises(b"\x82", "unusable after an earlier HPACK error", d)


@pytest.mark.parametrize("seed", range(20))
def test_random_garbage_only_raises_hpack_error(seed):
    import random

    rng = random.Random(seed)
    for _ in range(200):
        block = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
        try:
            Decoder().decode(block)
        except HpackError:
            pass
