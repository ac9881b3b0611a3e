"""Set-element changes for ``table inet calico`` sent as raw nfnetlink messages.

What it is for: every nft CLI (or libnftables) command first reads the table's
chains and sets into its cache; with ~3,000 chains and ~1,500 sets that read
costs hundreds of milliseconds per command (DESIGN.md measured 0.16-0.26 s on an
idle machine), however small the change.  The frequent changes — an endpoint
coming, going or changing labels — are, with our layout, only set/map element
changes, and the kernel takes those directly: one NEWSETELEM/DELSETELEM batch in a
single netlink transaction, a few milliseconds.

How it is built: plain `socket(AF_NETLINK, NETLINK_NETFILTER)` and `struct`; a
batch is BATCH_BEGIN, one message per (verb, set) group, BATCH_END, sent with one
sendmsg; every element message asks for an ACK and any error fails the whole
batch (the kernel aborts the transaction), so the caller can fall back to nft.
Keys are encoded from the same element text the nft scripts use, for the set types
this dataplane has on its fast path: ``ipv4_addr``, ``ipv6_addr``, ``ifname``,
``inet_proto``, ``inet_service`` and concatenations of those (each field padded
to 4 bytes, as nft does), and verdict map values ``jump <chain>``/``goto``/
``accept``/``drop``.  Interval sets are not on the fast path (their elements are
ranges with end markers; those changes go through nft).  A network namespace can be
given: the socket is opened inside it (setns on this thread, then back).

Measured on the bench table (10,000 endpoints, ~2,800 chains, 2 loaded CPUs): a
batch that only touches plain sets commits in ~1 ms; one that adds ``jump``
elements to a verdict map costs ~30 ms, all of it in the kernel, which re-validates
every chain reachable from the map (loop detection) at commit.  That is the floor of
"one endpoint added"; several endpoints added in one batch share it.
"""
from __future__ import annotations

import ctypes
import errno
import functools
import os
import socket
import struct
from typing import Any, Iterable

from .nft import FAMILY, TABLE, NftError
from .nftstr import ident, unquote_ifname

__all__ = ["NetlinkSetWriter", "PreparedBatch", "encodable", "encode_key"]

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN = 16
NFNL_MSG_BATCH_END = 17
NFT_MSG_NEWSETELEM = 12
NFT_MSG_DELSETELEM = 14
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_CREATE = 0x400
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLA_F_NESTED = 0x8000
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
CLONE_NEWNET = 0x40000000
IFNAMSIZ = 16
_PROTOS = {"tcp": 6, "udp": 17, "icmp": 1, "sctp": 132, "udplite": 136, "icmpv6": 58}
_FIELDS = ("ipv4_addr", "ipv6_addr", "ifname", "inet_proto", "inet_service")


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


def _attr(atype: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, atype) + payload + b"\0" * (-length % 4)


def _nested(atype: int, *attrs: bytes) -> bytes:
    return _attr(atype | NLA_F_NESTED, b"".join(attrs))


def _strz(s: str) -> bytes:
    return s.encode() + b"\0"


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
        pack, head, verdict = struct.Struct("=HH").pack, NFTA_LIST_ELEM | NLA_F_NESTED, _verdict

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
SO_SNDBUFFORCE = 32


def _grow_sndbuf(sock: socket.socket, size: int) -> None:
    """Raise the socket's send buffer to `size` bytes (past net.core.wmem_max with
    CAP_NET_ADMIN, as nft does for its big batches)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, size)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


class PreparedBatch:
    """Encoded element messages (message type, flags, body) of one transaction."""

    __slots__ = ("bodies", "count")

    def __init__(self, bodies: list[tuple[int, int, bytes]], count: int) -> None:
        self.bodies = bodies
        self.count = count


class NetlinkSetWriter:
    """Sends element adds/deletes for sets of table inet calico in one netlink batch."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self._sock: socket.socket | None = None
        self._seq = 1

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _socket(self) -> socket.socket:
        if self._sock is None:
            if self.netns:
                self._sock = _socket_in_netns(self.netns)
            else:
                self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
            self._sock.bind((0, 0))
            self._sock.settimeout(5.0)
        return self._sock

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
            head = (struct.pack("=BBH", NFPROTO_INET, 0, 0)
                    + _attr(NFTA_SET_ELEM_LIST_TABLE, _strz(TABLE))
                    + _attr(NFTA_SET_ELEM_LIST_SET, _strz(name)))
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
        msgs = [self._msg(NFNL_MSG_BATCH_BEGIN, 0, struct.pack("=BBH", 0, 0, socket.htons(NFNL_SUBSYS_NFTABLES)))]
        acks: set[int] = set()
        for mtype, flags, body in batch.bodies:
            seq = self._next_seq()
            acks.add(seq)
            msgs.append(self._msg(mtype, flags, body, seq))
        msgs.append(self._msg(NFNL_MSG_BATCH_END, 0, struct.pack("=BBH", 0, 0, socket.htons(NFNL_SUBSYS_NFTABLES))))
        data = b"".join(msgs)
        sock = self._socket()
        try:
            if len(data) > _DEFAULT_SNDBUF:
                # one batch is one sendmsg: the socket's send buffer must hold it
                _grow_sndbuf(sock, 2 * len(data))
            sock.sendall(data)
            self._wait_acks(sock, acks)
        except NftError:
            raise
        except OSError as exc:
            self.close()
            raise NftError(f"netlink element batch failed: {exc}") from exc
        return batch.count

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0x7FFFFFFF or 1
        return self._seq

    def _msg(self, mtype: int, flags: int, body: bytes, seq: int | None = None) -> bytes:
        if seq is None:
            seq = self._next_seq()
        return struct.pack("=IHHII", 16 + len(body), mtype, flags | NLM_F_REQUEST, seq, 0) + body

    def _wait_acks(self, sock: socket.socket, pending: set[int]) -> None:
        errors: list[str] = []
        while pending:
            try:
                data = sock.recv(65536)
            except socket.timeout:
                if errors:
                    break       # an aborted batch need not ack the rest
                raise
            finally:
                if errors:
                    sock.settimeout(0.2)
            off = 0
            while off + 16 <= len(data):
                length, mtype, _flags, seq, _pid = struct.unpack_from("=IHHII", data, off)
                if length < 16:
                    break
                if mtype == NLMSG_ERROR:
                    (err,) = struct.unpack_from("=i", data, off + 16)
                    pending.discard(seq)
                    if err != 0:
                        errors.append(os.strerror(-err) if err < 0 else str(err))
                elif mtype == NLMSG_DONE:
                    pending.discard(seq)
                off += (length + 3) & ~3
            if errors and not pending:
                break
        sock.settimeout(5.0)
        if errors:
            # the kernel aborted the whole batch
            self.close()      # drop any late replies with the socket
            raise NftError("netlink element batch refused: " + "; ".join(sorted(set(errors))))


def _socket_in_netns(netns: str) -> socket.socket:
    libc = ctypes.CDLL(None, use_errno=True)
    target = os.open(f"/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise NftError(f"setns({netns}): {os.strerror(e)}")
        try:
            return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        finally:
            if libc.setns(home, CLONE_NEWNET) != 0:   # pragma: no cover - cannot fail back
                raise OSError(errno.EPERM, "could not return to the original netns")
    finally:
        os.close(target)
        os.close(home)


# ----------------------------------------------------------------- read-back (dumps)

NLM_F_DUMP = 0x300
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


def _attrs(data: bytes, off: int, end: int) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while off + 4 <= end:
        length, atype = struct.unpack_from("=HH", data, off)
        if length < 4:
            break
        out[atype & 0x7FFF] = data[off + 4:off + length]
        off += (length + 3) & ~3
    return out


def _list(data: bytes) -> list[bytes]:
    """Payloads of the attributes of a nested attribute, in order."""
    out = []
    off = 0
    while off + 4 <= len(data):
        length, _t = struct.unpack_from("=HH", data, off)
        if length < 4:
            break
        out.append(data[off + 4:off + length])
        off += (length + 3) & ~3
    return out


def _str(b: bytes | None) -> str:
    return (b or b"").split(b"\0", 1)[0].decode()


class NetlinkReader:
    """Dumps of table inet calico over netlink: chains with their rule counts, sets
    with their element counts, one set's elements.  Much cheaper than ``nft -j list
    table`` on a big table (no text rendering, no JSON)."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self._seq = 1

    def _open(self) -> socket.socket:
        sock = (_socket_in_netns(self.netns) if self.netns else
                socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind((0, 0))
        sock.settimeout(10.0)
        return sock

    def _dump(self, sock: socket.socket, msg: int, attrs: bytes) -> list[dict[int, bytes]]:
        """One dump request; the attribute maps of every reply message."""
        self._seq = (self._seq + 1) & 0x7FFFFFFF or 1
        seq = self._seq
        body = struct.pack("=BBH", NFPROTO_INET, 0, 0) + attrs
        sock.sendall(struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_NFTABLES << 8) | msg,
                                 NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body)
        out: list[dict[int, bytes]] = []
        while True:
            data = sock.recv(1 << 20)
            off = 0
            while off + 16 <= len(data):
                length, mtype, _f, mseq, _pid = struct.unpack_from("=IHHII", data, off)
                if length < 16:
                    raise NftError("malformed netlink reply")
                if mseq == seq:
                    if mtype == NLMSG_DONE:
                        return out
                    if mtype == NLMSG_ERROR:
                        (err,) = struct.unpack_from("=i", data, off + 16)
                        if err == -errno.ENOENT:
                            raise FileNotFoundError(os.strerror(-err))
                        if err:
                            raise NftError(f"netlink dump failed: {os.strerror(-err)}")
                        return out
                    out.append(_attrs(data, off + 20, off + length))
                off += (length + 3) & ~3

    def table_exists(self, sock: socket.socket) -> bool:
        for a in self._dump(sock, NFT_MSG_GETTABLE, b""):
            if _str(a.get(NFTA_TABLE_NAME)) == TABLE:
                return True
        return False

    def exists(self) -> bool:
        """Whether table inet calico exists."""
        sock = self._open()
        try:
            return self.table_exists(sock)
        finally:
            sock.close()

    def counts(self) -> tuple[dict[str, int], dict[str, int]] | None:
        """({chain: rule count}, {set or map: element count}) of table inet calico,
        None if the table does not exist."""
        sock = self._open()
        try:
            if not self.table_exists(sock):
                return None
            chains: dict[str, int] = {}
            for a in self._dump(sock, NFT_MSG_GETCHAIN, b""):
                if _str(a.get(NFTA_CHAIN_TABLE)) == TABLE:
                    chains[_str(a.get(NFTA_CHAIN_NAME))] = 0
            for a in self._dump(sock, NFT_MSG_GETRULE, _attr(NFTA_RULE_TABLE, _strz(TABLE))):
                if _str(a.get(NFTA_RULE_TABLE)) == TABLE:
                    name = _str(a.get(NFTA_RULE_CHAIN))
                    chains[name] = chains.get(name, 0) + 1
            sets: dict[str, int] = {}
            names = [_str(a.get(NFTA_SET_NAME))
                     for a in self._dump(sock, NFT_MSG_GETSET, _attr(NFTA_SET_TABLE, _strz(TABLE)))
                     if _str(a.get(NFTA_SET_TABLE)) == TABLE]
            for name in names:
                attrs = (_attr(NFTA_SET_ELEM_LIST_TABLE, _strz(TABLE))
                         + _attr(NFTA_SET_ELEM_LIST_SET, _strz(name)))
                sets[name] = sum(len(_list(a.get(NFTA_SET_ELEM_LIST_ELEMENTS, b"")))
                                 for a in self._dump(sock, NFT_MSG_GETSETELEM, attrs))
            return chains, sets
        finally:
            sock.close()

    def _elements(self, sock: socket.socket, name: str) -> list[bytes]:
        attrs = _attr(NFTA_SET_ELEM_LIST_TABLE, _strz(TABLE)) + _attr(NFTA_SET_ELEM_LIST_SET, _strz(name))
        keys: list[bytes] = []
        for a in self._dump(sock, NFT_MSG_GETSETELEM, attrs):
            for elem in _list(a.get(NFTA_SET_ELEM_LIST_ELEMENTS, b"")):
                ea = _attrs(elem, 0, len(elem))
                key = _attrs(ea.get(NFTA_SET_ELEM_KEY, b""), 0, len(ea.get(NFTA_SET_ELEM_KEY, b"")))
                keys.append(key.get(NFTA_DATA_VALUE, b""))
        return keys

    def string_elements(self, name: str) -> list[str] | None:
        """Elements of an ifname/string-typed set (e.g. cali-meta), None if absent."""
        sock = self._open()
        try:
            return [_str(k) for k in self._elements(sock, name)]
        except (FileNotFoundError, NftError):
            return None
        finally:
            sock.close()
