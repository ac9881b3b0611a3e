"""HPACK (RFC 7541) header-block decoder.

The etcd watch stream is a gRPC call over HTTP/2, and etcd (grpc-go) sends
its response headers (``:status``, ``content-type``) and its trailers
(``grpc-status``, ``grpc-message``) as HPACK-compressed header blocks.  This
module turns those blocks back into lists of ``(name, value)`` byte pairs.

It implements the whole decoding side of RFC 7541: the static table
(Appendix A), the dynamic table with eviction by size, dynamic table size
updates, every field representation (indexed; literal with incremental
indexing, without indexing and never indexed, each with an indexed or a
literal name), prefixed integers and string literals, plain or Huffman coded
(Appendix B).  There is no encoder here (a sender may always use literals
without indexing and plain strings, which need no compression state).

One :class:`Decoder` belongs to one HTTP/2 connection and must be given the
connection's header blocks in the order they arrive, since they share the
dynamic table.  Malformed input raises :class:`HpackError`, whose message
gives the byte offset in the block and what was found there.  HPACK errors
are connection errors (HTTP/2 COMPRESSION_ERROR): after one, the dynamic
table may be half updated, so the decoder refuses further blocks.
"""

from __future__ import annotations

from collections import deque

__all__ = ["Decoder", "HpackError", "MAX_DECODED_BLOCK_SIZE"]

# Bound on the decoded size of one header block, counted as HTTP/2 counts a
# header list (RFC 7540 section 6.5.2): name length + value length + 32 for
# each field.  Indexed fields can make a small block decode to a large list;
# this stops that.
MAX_DECODED_BLOCK_SIZE = 64 * 1024

# Largest integer accepted in a prefixed integer (index, string length, table
# size).  Nothing legitimate comes near it.
_MAX_INT = 2**32

# Entry overhead in the dynamic table's size accounting (RFC 7541 4.1).
_ENTRY_OVERHEAD = 32


class HpackError(ValueError):
    """A header block that is not valid HPACK (the message says what is wrong: the byte offset and what was found)."""


# RFC 7541 Appendix A.  Index 1 is the first entry.
_STATIC_TABLE: tuple[tuple[bytes, bytes], ...] = (
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
)

# The Huffman code of RFC 7541 Appendix B is canonical: sorting the symbols
# by (code length, symbol) and counting upwards, shifting left whenever the
# length grows, gives exactly the codes the RFC lists.  So the code lengths
# are enough to rebuild it.  One row per 16 symbols; symbol 256 is EOS.
_HUFFMAN_CODE_LENGTHS = """
    13 23 28 28 28 28 28 28 28 24 30 28 28 30 28 28
    28 28 28 28 28 28 30 28 28 28 28 28 28 28 28 28
     6 10 10 12 13  6  8 11 10 10  8 11  8  6  6  6
     5  5  5  6  6  6  6  6  6  6  7  8 15  6 12 10
    13  6  7  7  7  7  7  7  7  7  7  7  7  7  7  7
     7  7  7  7  7  7  7  7  8  7  8 13 19 13 14  6
    15  5  6  5  6  5  6  6  6  5  7  7  6  6  6  5
     6  7  6  5  5  6  7  7  7  7  7 15 11 14 13 28
    20 22 20 20 22 22 22 23 22 23 23 23 23 23 24 23
    24 24 22 23 24 23 23 23 23 21 22 23 22 23 23 24
    22 21 20 22 22 23 23 21 23 22 22 24 21 22 23 23
    21 21 22 21 23 22 23 23 20 22 22 22 23 22 22 23
    26 26 20 19 22 23 22 25 26 26 26 27 27 26 24 25
    19 21 26 27 27 26 27 24 21 21 26 26 28 27 27 27
    20 24 20 21 22 21 21 23 22 22 25 25 24 24 26 23
    26 27 26 26 27 27 27 27 27 28 27 27 27 27 27 26
    30
"""

_EOS = 256


def _build_huffman_codes() -> tuple[tuple[int, int], ...]:
    lengths = [int(x) for x in _HUFFMAN_CODE_LENGTHS.split()]
    assert len(lengths) == 257
    codes = [(0, 0)] * 257
    code = -1
    prev_len = 0
    for sym in sorted(range(257), key=lambda s: (lengths[s], s)):
        code = (code + 1) << (lengths[sym] - prev_len)
        prev_len = lengths[sym]
        codes[sym] = (code, prev_len)
    return tuple(codes)


# HUFFMAN_CODES[symbol] == (code, bit length), symbols 0-255 and EOS (256).
# Exposed for tests, which build an encoder from it.
HUFFMAN_CODES = _build_huffman_codes()

# (bit length, code) -> symbol, for decoding one bit at a time.
_HUFFMAN_DECODE = {(length, code): sym for sym, (code, length) in enumerate(HUFFMAN_CODES)}
_HUFFMAN_MIN_LEN = min(length for _, length in HUFFMAN_CODES)
_HUFFMAN_MAX_LEN = max(length for _, length in HUFFMAN_CODES)


def _huffman_decode(data: bytes, offset: int, data_offset: int) -> bytes:
    """Decode Huffman-coded ``data``.

    ``offset`` (of the string literal) and ``data_offset`` (of its first
    coded byte) are positions in the block, for messages.
    """
    out = bytearray()
    code = 0
    length = 0
    for i, byte in enumerate(data):
        for shift in range(7, -1, -1):
            code = (code << 1) | ((byte >> shift) & 1)
            length += 1
            if length < _HUFFMAN_MIN_LEN:
                continue
            sym = _HUFFMAN_DECODE.get((length, code))
            if sym is None:
                if length >= _HUFFMAN_MAX_LEN:  # the code is complete: unreachable
                    raise HpackError(f"offset {data_offset + i}: invalid Huffman code")
                continue
            if sym == _EOS:
                raise HpackError(f"offset {data_offset + i}: EOS symbol inside a Huffman-coded string")
            out.append(sym)
            code = 0
            length = 0
    # What is left must be padding: a prefix of EOS (all ones), under 8 bits.
    if length > 7:
        raise HpackError(
            f"offset {offset}: Huffman-coded string ends with {length} bits of padding (at most 7 allowed)"
        )
    if code != (1 << length) - 1:
        raise HpackError(f"offset {offset}: Huffman padding is not all ones ({code:0{length}b})")
    return bytes(out)


class Decoder:
    """Decodes the header blocks of one HTTP/2 connection, in the order received (the dynamic table is shared by the blocks of a connection)."""

    def __init__(self, max_table_size: int = 4096) -> None:
        if max_table_size < 0:
            raise ValueError(f"max_table_size must not be negative: {max_table_size}")
        # The limit the encoder may raise its table size to (our
        # SETTINGS_HEADER_TABLE_SIZE), and the size it currently uses.
        self.max_table_size = max_table_size
        self._table_size = max_table_size
        # Newest entry first: dynamic index 62 is _dynamic[0].
        self._dynamic: deque[tuple[bytes, bytes]] = deque()
        self._dynamic_size = 0
        self._broken = False

    @property
    def table_size(self) -> int:
        """The dynamic table's current maximum size (as set by the encoder)."""
        return self._table_size

    @property
    def dynamic_table(self) -> list[tuple[bytes, bytes]]:
        """The dynamic table's entries, newest first."""
        return list(self._dynamic)

    @property
    def dynamic_table_size(self) -> int:
        """The dynamic table's size in RFC 7541 terms (each entry: name + value + 32)."""
        return self._dynamic_size

    def decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        """Decode one complete header block (HEADERS plus any CONTINUATION payloads) into (name, value) pairs."""
        if self._broken:
            raise HpackError("offset 0: decoder is unusable after an earlier HPACK error on this connection")
        try:
            return self._decode(bytes(block))
        except HpackError:
            self._broken = True
            raise

    # -- internals --------------------------------------------------------

    def _decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        headers: list[tuple[bytes, bytes]] = []
        total = 0
        pos = 0
        end = len(block)
        while pos < end:
            start = pos
            first = block[pos]
            if first & 0x80:
                # Indexed header field (6.1).
                index, pos = _decode_int(block, pos, 7)
                if index == 0:
                    raise HpackError(f"offset {start}: indexed header field with index 0")
                name, value = self._lookup(index, start)
            elif first & 0xE0 == 0x20:
                # Dynamic table size update (6.3): only before the first field.
                size, pos = _decode_int(block, pos, 5)
                if headers:
                    raise HpackError(
                        f"offset {start}: dynamic table size update ({size}) after a header field"
                    )
                if size > self.max_table_size:
                    raise HpackError(
                        f"offset {start}: dynamic table size update to {size}"
                        f" exceeds the maximum {self.max_table_size}"
                    )
                self._table_size = size
                self._evict(0)
                continue
            else:
                if first & 0xC0 == 0x40:
                    # Literal with incremental indexing (6.2.1).
                    prefix, add = 6, True
                else:
                    # Literal without indexing (0000) or never indexed (0001) (6.2.2, 6.2.3).
                    prefix, add = 4, False
                index, pos = _decode_int(block, pos, prefix)
                if index:
                    name = self._lookup(index, start)[0]
                else:
                    name, pos = _decode_str(block, pos)
                value, pos = _decode_str(block, pos)
                if add:
                    self._add(name, value)
            total += len(name) + len(value) + _ENTRY_OVERHEAD
            if total > MAX_DECODED_BLOCK_SIZE:
                raise HpackError(
                    f"offset {start}: header block decodes to more than {MAX_DECODED_BLOCK_SIZE} bytes"
                )
            headers.append((name, value))
        return headers

    def _lookup(self, index: int, offset: int) -> tuple[bytes, bytes]:
        if index <= len(_STATIC_TABLE):
            return _STATIC_TABLE[index - 1]
        dyn = index - len(_STATIC_TABLE) - 1
        if dyn < len(self._dynamic):
            return self._dynamic[dyn]
        raise HpackError(
            f"offset {offset}: index {index} is beyond the tables"
            f" ({len(_STATIC_TABLE)} static + {len(self._dynamic)} dynamic entries)"
        )

    def _add(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value) + _ENTRY_OVERHEAD
        # An entry larger than the table empties it and is not added (4.4).
        if size > self._table_size:
            self._dynamic.clear()
            self._dynamic_size = 0
            return
        self._evict(size)
        self._dynamic.appendleft((name, value))
        self._dynamic_size += size

    def _evict(self, room: int) -> None:
        """Drop the oldest entries until ``room`` more bytes fit in the table."""
        while self._dynamic and self._dynamic_size + room > self._table_size:
            name, value = self._dynamic.pop()
            self._dynamic_size -= len(name) + len(value) + _ENTRY_OVERHEAD


def _decode_int(block: bytes, pos: int, prefix: int) -> tuple[int, int]:
    """Decode an integer with a ``prefix``-bit prefix at ``block[pos]``; return (value, next position)."""
    start = pos
    mask = (1 << prefix) - 1
    value = block[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    while True:
        if pos >= len(block):
            raise HpackError(f"offset {start}: integer truncated at the end of the block")
        byte = block[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        shift += 7
        if value > _MAX_INT or shift > 35:
            raise HpackError(f"offset {start}: integer too large (over {_MAX_INT} or over 5 continuation bytes)")
        if not byte & 0x80:
            return value, pos


def _decode_str(block: bytes, pos: int) -> tuple[bytes, int]:
    """Decode a string literal at ``block[pos]``; return (string, next position)."""
    start = pos
    if pos >= len(block):
        raise HpackError(f"offset {start}: string literal missing at the end of the block")
    huffman = bool(block[pos] & 0x80)
    length, pos = _decode_int(block, pos, 7)
    if length > len(block) - pos:
        raise HpackError(
            f"offset {start}: string length {length} runs past the end of the block"
            f" ({len(block) - pos} bytes left)"
        )
    data = block[pos:pos + length]
    if huffman:
        data = _huffman_decode(data, start, pos)
    pos += length
    return data, pos
