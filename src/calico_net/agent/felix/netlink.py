"""The one netlink codec of the agent, and the one way into a network namespace.

Owns what rtnetlink (links, routes: `rtnetlink`) and nfnetlink (nft set elements
and dumps: `nft_netlink`) share: the message header, attribute packing and
walking, a socket that numbers its requests, dump iteration, batches sent in one
sendmsg and the ACK/error replies read back, and `in_netns`, which runs a call
with the calling thread inside a named network namespace (sockets and libnftables
contexts opened there stay there). Everything is bytes and `struct` on a raw
`AF_NETLINK` socket: a cold start encodes tens of thousands of routes and set
elements, so there are no per-message or per-attribute objects.
"""
from __future__ import annotations

import errno
import os
import socket
import struct
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

__all__ = [
    "NetlinkError", "NetlinkSocket", "open_socket", "in_netns", "grow_sndbuf",
    "attr", "nested", "strz", "attrs", "attr_list", "find_attr", "cstr",
]

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_REPLACE = 0x100
NLM_F_CREATE = 0x400
NLM_F_DUMP = 0x300
NLA_F_NESTED = 0x8000
#: an attribute's type without the NESTED and NET_BYTEORDER flag bits
NLA_TYPE_MASK = 0x3FFF
CLONE_NEWNET = 0x40000000
SO_SNDBUFFORCE = 32

NLMSGHDR = struct.Struct("=IHHII")
NLATTR = struct.Struct("=HH")
_ERRNO = struct.Struct("=i")
HDRLEN = NLMSGHDR.size
_SEQ_MASK = 0xFFFFFFFF


class NetlinkError(OSError):
    """The kernel answered a request with an error (errno is the kernel's)."""


# ------------------------------------------------------------------ attributes

def attr(kind: int, payload: bytes) -> bytes:
    """One attribute: header, payload, padding to 4 bytes."""
    length = 4 + len(payload)
    return NLATTR.pack(length, kind) + payload + b"\0" * (-length % 4)


def nested(kind: int, *inner: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(inner))


def strz(s: str) -> bytes:
    return s.encode() + b"\0"


def cstr(b: bytes | None) -> str:
    """A NUL-terminated string attribute's text."""
    return bytes(b or b"").split(b"\0", 1)[0].decode(errors="replace")


def attrs(buf: bytes, off: int, end: int) -> dict[int, bytes]:
    """{type: payload} of the attributes in buf[off:end] (a repeated type: the last)."""
    out: dict[int, bytes] = {}
    unpack = NLATTR.unpack_from
    while off + 4 <= end:
        length, kind = unpack(buf, off)
        if length < 4:
            break
        out[kind & NLA_TYPE_MASK] = buf[off + 4: off + length]
        off += (length + 3) & ~3
    return out


def attr_list(buf: bytes) -> list[bytes]:
    """Payloads of the attributes in `buf` (a nested attribute's payload), in order."""
    out = []
    off, end = 0, len(buf)
    while off + 4 <= end:
        length, _kind = NLATTR.unpack_from(buf, off)
        if length < 4:
            break
        out.append(buf[off + 4: off + length])
        off += (length + 3) & ~3
    return out


def find_attr(buf: bytes, off: int, end: int, kind: int) -> tuple[int, int] | None:
    """(start, end) of the payload of the first attribute of type `kind` in
    buf[off:end], without copying anything; None if there is none."""
    unpack = NLATTR.unpack_from
    while off + 4 <= end:
        length, k = unpack(buf, off)
        if length < 4:
            return None
        if k & NLA_TYPE_MASK == kind:
            return off + 4, off + length
        off += (length + 3) & ~3
    return None


# ------------------------------------------------------------------ namespaces

_libc: Any = None


@contextmanager
def in_netns(netns: str | None) -> Iterator[None]:
    """Run the body with the calling thread in network namespace `netns` (a name
    under /run/netns), then bring the thread back to its own; nothing for None.
    setns is per thread, so other threads are unaffected; what the body opens
    (sockets, libnftables contexts) keeps working in `netns` afterwards."""
    if not netns:
        yield
        return
    global _libc
    import ctypes   # only when a namespace is used: the agent normally runs in its own
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    target = os.open(f"/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns({netns})")
        try:
            yield
        finally:
            if _libc.setns(home, CLONE_NEWNET) != 0:  # pragma: no cover - cannot fail back
                raise OSError(ctypes.get_errno(), "could not return to the original netns")
    finally:
        os.close(target)
        os.close(home)


# ------------------------------------------------------------------ sockets

def open_socket(protocol: int, *, groups: int = 0, netns: str | None = None, sndbuf: int = 0,
                rcvbuf: int = 0, timeout: float | None = None) -> socket.socket:
    """A bound netlink socket of `protocol` (in `netns` if given). Buffer sizes are
    best effort: past the sysctl limits the kernel's own caps apply."""
    with in_netns(netns):
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol)
    try:
        for opt, size in ((socket.SO_SNDBUF, sndbuf), (socket.SO_RCVBUF, rcvbuf)):
            if size:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, opt, size)
                except OSError:
                    pass
        sock.bind((0, groups))
        if timeout is not None:
            sock.settimeout(timeout)
    except BaseException:
        sock.close()
        raise
    return sock


def grow_sndbuf(sock: socket.socket, size: int) -> None:
    """Raise the socket's send buffer to `size` bytes: past net.core.wmem_max with
    CAP_NET_ADMIN (as nft does for its big batches), else up to that limit."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, size)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


def seq_at(first: int, i: int) -> int:
    """The sequence number of the i-th message of a batch numbered from `first`
    (numbers run 1 … 2**32-1 and wrap to 1: 0 is never used)."""
    return (first - 1 + i) % _SEQ_MASK + 1


class NetlinkSocket:
    """A netlink socket that numbers its requests: dumps, batches, their ACKs."""

    __slots__ = ("sock", "seq")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def next_seq(self) -> int:
        self.seq = (self.seq + 1) & _SEQ_MASK or 1
        return self.seq

    def dump(self, mtype: int, body: bytes, bufsize: int = 1 << 16) -> Iterator[tuple[int, bytes, int, int]]:
        """Send a dump request; yield (type, buffer, body offset, message end) for
        each reply message, the buffer uncopied. Raises NetlinkError if the kernel
        refuses the dump."""
        seq = self.next_seq()
        self.sock.sendall(NLMSGHDR.pack(HDRLEN + len(body), mtype, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body)
        unpack = NLMSGHDR.unpack_from
        while True:
            data = self.sock.recv(bufsize)
            off, n = 0, len(data)
            while off + HDRLEN <= n:
                length, rtype, _flags, rseq, _pid = unpack(data, off)
                if length < HDRLEN:
                    raise NetlinkError(errno.EBADMSG, "malformed netlink reply")
                if rseq == seq:
                    if rtype == NLMSG_DONE:
                        return
                    if rtype == NLMSG_ERROR:
                        (err,) = _ERRNO.unpack_from(data, off + HDRLEN)
                        if err:
                            raise NetlinkError(-err, os.strerror(-err))
                        return
                    yield rtype, data, off + HDRLEN, off + length
                off += (length + 3) & ~3

    def send(self, msgs: Sequence[tuple[int, int, bytes]]) -> int:
        """Send (type, flags, body) messages in one sendmsg, numbered on from the
        last request; returns the first one's sequence number (see `seq_at`).
        Only messages whose flags ask for NLM_F_ACK are answered when they work."""
        first = seq = self.seq
        pack = NLMSGHDR.pack
        chunks = []
        for mtype, flags, body in msgs:
            seq = (seq + 1) & _SEQ_MASK or 1
            chunks.append(pack(HDRLEN + len(body), mtype, flags | NLM_F_REQUEST, seq, 0) + body)
        self.seq = seq
        self.sock.sendall(b"".join(chunks))
        return (first + 1) & _SEQ_MASK or 1

    def wait_acks(self, pending: set[int], settle: float | None = None,
                  bufsize: int = 1 << 16) -> dict[int, int]:
        """Read replies until every sequence number in `pending` is answered (an
        ACK, an error or NLMSG_DONE); returns {seq: errno} of every refused message
        seen, whether pending or not (the kernel reports each failure even without
        NLM_F_ACK). With `settle`: once something is refused, stop waiting after
        `settle` seconds without a reply — a transaction the kernel aborted need
        not answer the rest."""
        errors: dict[int, int] = {}
        sock = self.sock
        timeout = sock.gettimeout()
        unpack = NLMSGHDR.unpack_from
        try:
            while pending:
                try:
                    data = sock.recv(bufsize)
                except socket.timeout:
                    if errors and settle is not None:
                        break
                    raise
                off, n = 0, len(data)
                while off + HDRLEN <= n:
                    length, mtype, _flags, seq, _pid = unpack(data, off)
                    if length < HDRLEN:
                        break
                    if mtype == NLMSG_ERROR:
                        (err,) = _ERRNO.unpack_from(data, off + HDRLEN)
                        if err:
                            errors[seq] = -err
                        pending.discard(seq)
                    elif mtype == NLMSG_DONE:
                        pending.discard(seq)
                    off += (length + 3) & ~3
                if errors and settle is not None:
                    sock.settimeout(settle)
        finally:
            if settle is not None:
                sock.settimeout(timeout)
        return errors
