"""Set elements of ``table inet calico`` written and read as raw nfnetlink messages.

Owns `NetlinkSetWriter` (element adds/deletes as one transaction), `NetlinkReader`
(dumps of the table: chains with their rule counts, sets with their element
counts, one set's elements), `OwnGenerations` (which nftables generations the
agent's own writes committed: how the tamper watch tells its own transactions
from another process's), the element encoders and `NftError`, the error every
nft path raises. Why: every nft CLI (or libnftables) command first reads the
table's chains and sets into its cache, which on a big table costs far more than
a small change; the frequent changes — an endpoint coming, going or changing
labels — are, with our layout, only set/map element changes, which the kernel
takes directly: one NEWSETELEM/DELSETELEM batch in a single netlink transaction.

A batch is BATCH_BEGIN, one message per (verb, set) group, BATCH_END, sent with one
sendmsg (codec: `netlink`); every element message asks for an ACK and any error
fails the whole batch (the kernel aborts the transaction), so the caller can fall
back to nft. Keys are encoded from the same element text the nft scripts use, for
the set types this dataplane has on its fast path: ``ipv4_addr``, ``ipv6_addr``,
``ifname``, ``inet_proto``, ``inet_service`` and concatenations of those (each
field padded to 4 bytes, as nft does), and verdict map values ``jump <chain>``/
``goto``/``accept``/``drop``. Interval sets are not on the fast path (their
elements are ranges with end markers; those changes go through nft). A network
namespace can be given: the socket is opened inside it (`netlink.in_netns`).

A batch that adds ``jump`` elements to a verdict map costs more than one that only
touches plain sets, all of it in the kernel, which re-validates every chain
reachable from the map (loop detection) at commit: that is the floor of "one
endpoint added"; several endpoints added in one batch share it.
"""
from __future__ import annotations

import collections
import contextlib
import errno
import functools
import os
import socket
import struct
import threading
from typing import Any, Callable, Iterable, Iterator

from .netlink import (
    NLA_F_NESTED, NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST, NLATTR, NetlinkError, NetlinkSocket,
    attr as _attr, attr_list, attrs as _attrs, cstr as _str, grow_sndbuf, nested as _nested,
    open_socket, seq_at, strz as _strz,
)
from .nftstr import ident, unquote_ifname

__all__ = ["NetlinkSetWriter", "NetlinkReader", "NftError", "OwnGenerations", "PreparedBatch", "TABLE",
           "encodable", "encode_key", "read_generation"]

#: the table every nft path of the agent writes (``table inet calico``)
TABLE = "calico"


class NftError(RuntimeError):
    """nft rejected a script or could not be run."""


NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN = 16
NFNL_MSG_BATCH_END = 17
NFT_MSG_NEWSETELEM = 12
NFT_MSG_DELSETELEM = 14
NFPROTO_INET = 1
NFTA_SET_ELEM_LIST_TABLE = 1
NFTA_SET_ELEM_LIST_SET = 2
NFTA_SET_ELEM_LIST_ELEMENTS = 3
NFTA_LIST_ELEM = 1
NFTA_SET_ELEM_KEY = 1
NFTA_SET_ELEM_DATA = 2
NFTA_DATA_VALUE = 1
NFTA_DATA_VERDICT = 2
NFTA_VERDICT_CODE = 1
NFTA_VERDICT_CHAIN = 2
_VERDICTS = {"accept": 1, "drop": 0, "continue": -1, "return": -5, "jump": -3, "goto": -4}
IFNAMSIZ = 16
_PROTOS = {"tcp": 6, "udp": 17, "icmp": 1, "sctp": 132, "udplite": 136, "icmpv6": 58}
_FIELDS = ("ipv4_addr", "ipv6_addr", "ifname", "inet_proto", "inet_service")
_NFGENMSG = struct.Struct("=BBH")


def _types(decl: str) -> tuple[list[str], bool] | None:
    """(key field types, is verdict map) of a set declaration, None if not fast-path."""
    if "interval" in decl:
        return None
    body = decl.split(";")[0].strip()
    if not body.startswith("type "):
        return None
    body = body[5:]
    verdict = False
    if ":" in body:
        body, data = body.split(":", 1)
        if data.strip() != "verdict":
            return None
        verdict = True
    fields = [f.strip() for f in body.split(".")]
    if not fields or any(f not in _FIELDS for f in fields):
        return None
    return fields, verdict


def encodable(decl: str) -> bool:
    """Whether elements of a set declared `decl` can go on the netlink fast path."""
    return _types(decl) is not None


def _field(ftype: str, text: str) -> bytes:
    if ftype == "ipv4_addr":
        return socket.inet_pton(socket.AF_INET, text)
    if ftype == "ipv6_addr":
        return socket.inet_pton(socket.AF_INET6, text)
    if ftype == "ifname":
        # the name as nftstr.ifname wrote it (checked again: no NUL, no wildcard)
        return unquote_ifname(text).ljust(IFNAMSIZ, b"\0")
    if ftype == "inet_proto":
        return bytes([_PROTOS[text] if text in _PROTOS else int(text)])
    if ftype == "inet_service":
        return struct.pack("!H", int(text))
    raise ValueError(ftype)


def encode_key(decl: str, text: str) -> bytes:
    """Key bytes of element `text` (as written in nft scripts) of a set `decl`."""
    t = _types(decl)
    if t is None:
        raise ValueError(f"not a fast-path set type: {decl}")
    fields, _ = t
    parts = [p.strip() for p in text.split(" . ")] if len(fields) > 1 else [text.strip()]
    if len(parts) != len(fields):
        raise ValueError(f"element {text!r} does not fit {decl!r}")
    if len(fields) == 1:
        return _field(fields[0], parts[0])
    out = b""
    for f, p in zip(fields, parts):
        b = _field(f, p)
        out += b + b"\0" * (-len(b) % 4)
    return out


@functools.lru_cache(maxsize=16384)
def _verdict(text: str) -> bytes:
    words = text.split()
    code = _VERDICTS[words[0]]
    attrs = [_attr(NFTA_VERDICT_CODE, struct.pack("!i", code))]
    if len(words) != (2 if words[0] in ("jump", "goto") else 1):
        raise ValueError(f"not a verdict: {text!r}")
    if words[0] in ("jump", "goto"):
        attrs.append(_attr(NFTA_VERDICT_CHAIN, _strz(ident(words[1]))))
    return _nested(NFTA_SET_ELEM_DATA, _nested(NFTA_DATA_VERDICT, *attrs))


_UNSEEN: Any = object()

# an element's attribute headers in front of its key, for the two shapes a cold
# start sends by the ten thousand: an IPv4 address (LIST_ELEM 16 > KEY 12 >
# DATA_VALUE 8 > 4 address bytes) and an interface name (the same with 16 bytes)
_V4_ELEM = struct.pack("=HHHHHH", 16, 1 | 0x8000, 12, 1 | 0x8000, 8, 1)
_IFNAME_KEY = struct.pack("=HHHH", 24, 1 | 0x8000, 20, 1)


def _encoder(verb: str, decl: str) -> Callable[[str, str | None], bytes] | None:
    """A function (key text, value text) -> the NFTA_LIST_ELEM attribute of one
    element of a set declared `decl`, for `verb`; None if not on the fast path."""
    t = _types(decl)
    if t is None:
        return None
    fields, is_map = t
    with_value = is_map and verb == "add"
    if fields == ["ipv4_addr"] and not is_map:
        inet_pton, af = socket.inet_pton, socket.AF_INET
        return lambda key, value: _V4_ELEM + inet_pton(af, key.strip())
    if fields == ["ifname"] and with_value:
        pack, head, verdict = NLATTR.pack, NFTA_LIST_ELEM | NLA_F_NESTED, _verdict

        def ifname_verdict(key: str, value: str | None) -> bytes:
            raw = unquote_ifname(key)
            if value is None:
                raise ValueError("a map element without a value")
            inner = _IFNAME_KEY + raw.ljust(IFNAMSIZ, b"\0") + verdict(value)
            return pack(4 + len(inner), head) + inner
        return ifname_verdict

    def general(key: str, value: str | None) -> bytes:
        kb = _field(fields[0], key.strip()) if len(fields) == 1 else encode_key(decl, key)
        elem = _nested(NFTA_SET_ELEM_KEY, _attr(NFTA_DATA_VALUE, kb))
        if with_value:
            if value is None:
                raise ValueError("a map element without a value")
            elem += _verdict(value)
        return _attr(NFTA_LIST_ELEM | NLA_F_NESTED, elem)
    return general


#: below this a batch fits the default netlink send buffer (net.core.wmem_default)
_DEFAULT_SNDBUF = 160 * 1024
#: the nfgenmsg of BATCH_BEGIN/BATCH_END: the subsystem (nf_tables) in res_id
_BATCH_BODY = _NFGENMSG.pack(0, 0, socket.htons(NFNL_SUBSYS_NFTABLES))


def _socket(netns: str | None, **opts: Any) -> NetlinkSocket:
    return NetlinkSocket(open_socket(NETLINK_NETFILTER, netns=netns, **opts))


def _set_attrs(name: str) -> bytes:
    """The attributes naming set `name` of our table in an element message."""
    return _attr(NFTA_SET_ELEM_LIST_TABLE, _strz(TABLE)) + _attr(NFTA_SET_ELEM_LIST_SET, _strz(name))


class PreparedBatch:
    """Encoded element messages (message type, flags, body) of one transaction."""

    __slots__ = ("bodies", "count")

    def __init__(self, bodies: list[tuple[int, int, bytes]], count: int) -> None:
        self.bodies = bodies
        self.count = count



class NetlinkSetWriter:
    """Sends element adds/deletes for sets of table inet calico in one netlink batch."""

    def __init__(self, netns: str | None = None, generations: "OwnGenerations | None" = None) -> None:
        self.netns = netns
        self._nl: NetlinkSocket | None = None
        #: where each batch's generation is recorded as ours (None: not tracked)
        self.generations = generations

    def close(self) -> None:
        if self._nl is not None:
            self._nl.close()
            self._nl = None

    def write(self, ops: Iterable[tuple[str, str, str, str, str | None]]) -> int:
        """Apply (verb "add"|"delete", set name, set decl, element key text, map value
        text or None) in one transaction; returns the number of elements sent.
        Raises NftError (nothing applied) if the kernel refuses any of them."""
        return self.send(self.prepare(ops))

    def prepare(self, ops: Iterable[tuple[str, str, str, str, str | None]]) -> "PreparedBatch":
        """Encode `ops` (as for `write`) into one batch without sending it: the
        encoding is Python work a caller may do while something else runs. Raises
        NftError for an element that cannot be encoded."""
        groups: dict[tuple[str, str], list[bytes]] = {}
        order: list[tuple[str, str]] = []
        encoders: dict[tuple[str, str], Any] = {}
        n = 0
        for verb, name, decl, key, value in ops:
            enc = encoders.get((verb, decl), _UNSEEN)
            if enc is _UNSEEN:
                enc = encoders[(verb, decl)] = _encoder(verb, decl)
            if enc is None:
                raise NftError(f"set {name} ({decl}) is not on the netlink fast path")
            try:
                elem = enc(key, value)
            except (ValueError, KeyError, OSError, TypeError) as exc:
                raise NftError(f"set {name}: element {key!r} cannot be encoded: {exc}") from None
            g = (verb, name)
            got = groups.get(g)
            if got is None:
                got = groups[g] = []
                order.append(g)
            got.append(elem)
            n += 1
        # keep the caller's order between groups: deletes of a map key precede its re-add
        bodies: list[tuple[int, int, bytes]] = []
        for verb, name in order:
            elems = groups[(verb, name)]
            head = _NFGENMSG.pack(NFPROTO_INET, 0, 0) + _set_attrs(name)
            mtype = (NFNL_SUBSYS_NFTABLES << 8) | (
                NFT_MSG_NEWSETELEM if verb == "add" else NFT_MSG_DELSETELEM)
            flags = NLM_F_REQUEST | NLM_F_ACK | (NLM_F_CREATE if verb == "add" else 0)
            for i in range(0, len(elems), 500):     # keep each message well under 64 KiB
                bodies.append((mtype, flags, head + _nested(NFTA_SET_ELEM_LIST_ELEMENTS, *elems[i:i + 500])))
        return PreparedBatch(bodies, n)

    def send(self, batch: "PreparedBatch") -> int:
        """Send a prepared batch as one transaction; returns its element count.
        Raises NftError (nothing applied) if the kernel refuses any of it."""
        if not batch.count:
            return 0
        if self.generations is None:
            return self._send(batch)
        with self.generations.transaction():
            return self._send(batch)

    def _send(self, batch: "PreparedBatch") -> int:
        bodies = batch.bodies
        msgs = [(NFNL_MSG_BATCH_BEGIN, 0, _BATCH_BODY), *bodies, (NFNL_MSG_BATCH_END, 0, _BATCH_BODY)]
        size = sum(len(body) for _t, _f, body in msgs) + 16 * len(msgs)
        try:
            if self._nl is None:
                self._nl = _socket(self.netns, timeout=5.0)
            nl = self._nl
            if size > _DEFAULT_SNDBUF:
                # one batch is one sendmsg: the socket's send buffer must hold it
                grow_sndbuf(nl.sock, 2 * size)
            first = nl.send(msgs)
            # the element messages (between BEGIN and END) are the ones acknowledged
            errors = nl.wait_acks({seq_at(first, i) for i in range(1, len(bodies) + 1)}, settle=0.2)
        except OSError as exc:
            self.close()
            raise NftError(f"netlink element batch failed: {exc}") from exc
        if errors:
            # the kernel aborted the whole batch
            self.close()      # drop any late replies with the socket
            raise NftError("netlink element batch refused: " + "; ".join(
                sorted({os.strerror(e) if e > 0 else str(-e) for e in errors.values()})))
        return batch.count


# ----------------------------------------------------------------- read-back (dumps)

NFT_MSG_GETCHAIN = 4
NFT_MSG_GETRULE = 7
NFT_MSG_GETSET = 10
NFT_MSG_GETSETELEM = 13
NFT_MSG_GETTABLE = 1
NFTA_TABLE_NAME = 1
NFTA_CHAIN_TABLE = 1
NFTA_CHAIN_NAME = 3
NFTA_RULE_TABLE = 1
NFTA_RULE_CHAIN = 2
NFTA_SET_TABLE = 1
NFTA_SET_NAME = 2


class NetlinkReader:
    """Dumps of table inet calico over netlink: chains with their rule counts, sets
    with their element counts, one set's elements.  Much cheaper than ``nft -j list
    table`` on a big table (no text rendering, no JSON)."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns

    def _open(self) -> NetlinkSocket:
        return _socket(self.netns, rcvbuf=4 << 20, timeout=10.0)

    def _dump(self, nl: NetlinkSocket, msg: int, attrs: bytes) -> list[dict[int, bytes]]:
        """One dump request; the attribute maps of every reply message."""
        body = _NFGENMSG.pack(NFPROTO_INET, 0, 0) + attrs
        try:
            # each reply's body is an nfgenmsg (4 bytes), then the attributes
            return [_attrs(data, off + 4, end)
                    for _t, data, off, end in nl.dump((NFNL_SUBSYS_NFTABLES << 8) | msg, body, 1 << 20)]
        except NetlinkError as exc:
            if exc.errno == errno.ENOENT:
                raise FileNotFoundError(exc.strerror) from None
            raise NftError(f"netlink dump failed: {exc.strerror}") from None

    def table_exists(self, nl: NetlinkSocket) -> bool:
        for a in self._dump(nl, NFT_MSG_GETTABLE, b""):
            if _str(a.get(NFTA_TABLE_NAME)) == TABLE:
                return True
        return False

    def exists(self) -> bool:
        """Whether table inet calico exists."""
        nl = self._open()
        try:
            return self.table_exists(nl)
        finally:
            nl.close()

    def counts(self) -> tuple[dict[str, int], dict[str, int]] | None:
        """({chain: rule count}, {set or map: element count}) of table inet calico,
        None if the table does not exist."""
        nl = self._open()
        try:
            if not self.table_exists(nl):
                return None
            chains: dict[str, int] = {}
            for a in self._dump(nl, NFT_MSG_GETCHAIN, b""):
                if _str(a.get(NFTA_CHAIN_TABLE)) == TABLE:
                    chains[_str(a.get(NFTA_CHAIN_NAME))] = 0
            for a in self._dump(nl, NFT_MSG_GETRULE, _attr(NFTA_RULE_TABLE, _strz(TABLE))):
                if _str(a.get(NFTA_RULE_TABLE)) == TABLE:
                    name = _str(a.get(NFTA_RULE_CHAIN))
                    chains[name] = chains.get(name, 0) + 1
            sets: dict[str, int] = {}
            names = [_str(a.get(NFTA_SET_NAME))
                     for a in self._dump(nl, NFT_MSG_GETSET, _attr(NFTA_SET_TABLE, _strz(TABLE)))
                     if _str(a.get(NFTA_SET_TABLE)) == TABLE]
            for name in names:
                sets[name] = sum(len(attr_list(a.get(NFTA_SET_ELEM_LIST_ELEMENTS, b"")))
                                 for a in self._dump(nl, NFT_MSG_GETSETELEM, _set_attrs(name)))
            return chains, sets
        finally:
            nl.close()

    def _elements(self, nl: NetlinkSocket, name: str) -> list[bytes]:
        keys: list[bytes] = []
        for a in self._dump(nl, NFT_MSG_GETSETELEM, _set_attrs(name)):
            for elem in attr_list(a.get(NFTA_SET_ELEM_LIST_ELEMENTS, b"")):
                key = _attrs(elem, 0, len(elem)).get(NFTA_SET_ELEM_KEY, b"")
                keys.append(_attrs(key, 0, len(key)).get(NFTA_DATA_VALUE, b""))
        return keys

    def string_elements(self, name: str) -> list[str] | None:
        """Elements of an ifname/string-typed set (e.g. cali-meta), None if absent."""
        nl = self._open()
        try:
            return [_str(k) for k in self._elements(nl, name)]
        except (FileNotFoundError, NftError):
            return None
        finally:
            nl.close()


# ----------------------------------------------------------------- our own generations

NFT_MSG_NEWGEN = 15
NFT_MSG_GETGEN = 16
NFTA_GEN_ID = 1
#: where nf_tables notifies every committed change (table, chain, rule, set, element, generation)
NFNLGRP_NFTABLES = 7


def read_generation(nl: NetlinkSocket) -> int:
    """The kernel's current nftables generation (NFT_MSG_GETGEN): it goes up by
    one with every committed transaction, anyone's."""
    seq = nl.next_seq()
    body = _NFGENMSG.pack(socket.AF_UNSPEC, 0, 0)
    nl.sock.sendall(struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN,
                                NLM_F_REQUEST, seq, 0) + body)
    while True:
        data = nl.sock.recv(4096)
        off = 0
        while off + 16 <= len(data):
            length, mtype, _f, rseq, _pid = struct.unpack_from("=IHHII", data, off)
            if length < 16:
                break
            if rseq == seq:
                if mtype == 2:       # NLMSG_ERROR: the kernel refused
                    (err,) = struct.unpack_from("=i", data, off + 16)
                    raise NftError(f"nftables generation: {os.strerror(-err)}")
                if mtype == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN:
                    gen = _attrs(data, off + 20, off + length).get(NFTA_GEN_ID)
                    if gen is None:
                        raise NftError("nftables generation: no NFTA_GEN_ID in the reply")
                    return struct.unpack("!I", gen[:4])[0]
            off += (length + 3) & ~3


class OwnGenerations:
    """Which nftables generations were committed by this process's writes.

    Why: the tamper watch (`tamper`) hears every transaction on our table, the
    agent's own included, and must tell them apart without reading the table back
    (that read would cost at every apply). Every write of the agent (`NftRunner.run`,
    `NetlinkSetWriter.send`: one transaction each) runs inside `transaction()`,
    which reads the generation before and after: when it rose by exactly one, that
    generation is ours; when it rose by more, someone else committed meanwhile and
    the generations between are *ambiguous* (the watch then has the table checked).
    Notifications of a commit are queued to listeners before the writer gets its
    ACK, so the watch may see a generation before its write is recorded here: such
    a generation is *pending* until the write ends."""

    OWN, FOREIGN, AMBIGUOUS, PENDING = "own", "foreign", "ambiguous", "pending"

    def __init__(self, netns: str | None = None, keep: int = 4096) -> None:
        self.netns = netns
        self._nl: NetlinkSocket | None = None
        self._lock = threading.Lock()
        #: (before, after) of recent writes; before/after None: not readable
        self._done: collections.deque[tuple[int | None, int | None]] = collections.deque(maxlen=keep)
        self._inflight: dict[int, int | None] = {}
        self._token = 0

    def current(self) -> int | None:
        """The current generation, None if it cannot be read."""
        with self._lock:
            try:
                if self._nl is None:
                    self._nl = _socket(self.netns, timeout=5.0)
                return read_generation(self._nl)
            except (OSError, NftError, struct.error):
                if self._nl is not None:
                    self._nl.close()
                    self._nl = None
                return None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Around one write of ours (at most one committed transaction)."""
        before = self.current()
        with self._lock:
            self._token += 1
            token = self._token
            self._inflight[token] = before
        try:
            yield
        finally:
            after = self.current()
            with self._lock:
                del self._inflight[token]
                self._done.append((before, after))

    def classify(self, gen: int) -> str:
        """OWN, FOREIGN, AMBIGUOUS or PENDING (see the class docstring) for a
        generation the watch saw committed."""
        with self._lock:
            for before in self._inflight.values():
                if before is None or _gen_after(gen, before):
                    return self.PENDING
            for before, after in reversed(self._done):
                if before is None or after is None:
                    return self.AMBIGUOUS     # a write whose window is unknown
                if _gen_after(gen, before) and not _gen_after(gen, after):
                    return self.OWN if (after - before) & 0xFFFFFFFF == 1 else self.AMBIGUOUS
            return self.FOREIGN


def _gen_after(a: int, b: int) -> bool:
    """a comes after b in the kernel's 32-bit generation count (which wraps)."""
    return 0 < (a - b) & 0xFFFFFFFF < 0x80000000
