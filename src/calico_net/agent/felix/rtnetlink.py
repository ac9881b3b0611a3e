"""Links and routes in the kernel, over rtnetlink (the agent's side of `RouteManager`).

Owns `Netlink` — dump links, look links up by name, dump our routes, and write
many RTM_NEWROUTE/RTM_DELROUTE messages in one sendmsg — and `LinkWatcher`, which
listens to RTMGRP_LINK on its own socket in a thread so that an interface the CNI
plugin creates after its endpoint is picked up at once; with `Link` and `RouteOp`,
the values they exchange. Messages go through the shared codec in `netlink`
rather than pyroute2, whose per-message objects make a cold start's thousands of
route writes and link reads too slow; batched, they cost what `ip -batch` does.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterable

from calico_net.agent.threadname import name_os_thread

from .netlink import (
    HDRLEN, NLATTR, NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLMSGHDR, NLA_TYPE_MASK,
    NetlinkError, NetlinkSocket, attr, attrs, find_attr, open_socket, seq_at,
)

log = logging.getLogger(__name__)

__all__ = ["Link", "LinkWatcher", "Netlink", "NetlinkError", "Route", "RouteOp",
           "parse_link", "route_message", "RTPROT_FELIX", "RT_TABLE_MAIN"]

RTPROT_FELIX = 80
RT_TABLE_MAIN = 254
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RT_SCOPE_NOWHERE = 255  # in a delete: match any scope, as `ip route del` does
RTN_UNICAST = 1

RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_NEWROUTE = 24
RTM_DELROUTE = 25
RTM_GETROUTE = 26
RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RTA_MULTIPATH = 9
RTA_TABLE = 15
IFLA_IFNAME = 3
IFLA_AF_SPEC = 26
IFLA_INET_CONF = 1
IFF_UP = 0x1
SIOCGIFFLAGS = 0x8913
SIOCGIFINDEX = 0x8933
_IFREQ = struct.Struct("16s16x")   # struct ifreq: the name, then a 16-byte union
RTMGRP_LINK = 0x1

_RTMSG = struct.Struct("=BBBBBBBBI")
_IFINFOMSG = struct.Struct("=BxHiII")

Route = tuple[int, str, int]  # (family, dst address text, prefix length)


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    up: bool
    # The interface's IPv4 devconf (IFLA_INET_CONF, indexed by IPV4_DEVCONF_* - 1)
    # when the kernel reported it: lets the agent skip sysctls already right.
    v4conf: tuple[int, ...] | None = field(default=None, compare=False)


@dataclass
class RouteOp:
    op: str            # "replace" or "delete"
    route: Route
    oif: int = 0
    error: int = 0     # errno from the kernel, 0 = done


def _route_socket(groups: int = 0) -> socket.socket:
    # Big buffers: a cold start's route batch and the replies to a full link dump
    # must not overflow them.
    return open_socket(socket.NETLINK_ROUTE, groups=groups, sndbuf=4 << 20, rcvbuf=8 << 20)


class Netlink:
    """Raw rtnetlink for links and routes in the caller's network namespace."""

    def __init__(self, batch: int = 512) -> None:
        self.batch = batch
        self.nl = NetlinkSocket(_route_socket())
        # for `links_named` (ioctls by name); made here so it is in the same
        # network namespace as the netlink socket
        self.ioctl_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.lock = threading.Lock()

    def close(self) -> None:
        self.nl.close()
        self.ioctl_sock.close()

    def port(self) -> int:
        """The port id of this object's netlink socket: route notifications caused
        by its requests carry it (the tamper watch leaves those out)."""
        return int(self.nl.sock.getsockname()[0])

    def links(self) -> list[Link]:
        with self.lock:
            out = []
            for mtype, buf, off, end in self.nl.dump(RTM_GETLINK, _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)):
                if mtype != RTM_NEWLINK:
                    continue
                link = parse_link(buf, off, end)
                if link:
                    out.append(link)
            return out

    def links_named(self, names: Iterable[str]) -> list[Link]:
        """The links of these names that exist, looked up one by one (index and up
        flag, two ioctls each; no devconf: `v4conf` is None). Cheaper per name than
        the full dump is per link, whose cost is mostly walking every message's
        dozens of attributes in Python: the cold start on a fresh host uses this for
        the endpoints' interfaces (and for interfaces that endpoints name later,
        until the route refresh lists everything)."""
        out: list[Link] = []
        fd = self.ioctl_sock.fileno()
        ioctl, pack = fcntl.ioctl, _IFREQ.pack
        for name in names:
            try:
                raw = name.encode()
            except UnicodeEncodeError:
                continue
            if not raw or len(raw) >= 16 or b"\0" in raw:
                continue   # cannot be an interface name (IFNAMSIZ)
            req = pack(raw)
            try:
                (index,) = struct.unpack_from("=i", ioctl(fd, SIOCGIFINDEX, req), 16)
                (flags,) = struct.unpack_from("=H", ioctl(fd, SIOCGIFFLAGS, req), 16)
            except OSError as e:
                if e.errno in (errno.ENODEV, errno.ENXIO):
                    continue   # no such interface (now)
                raise
            out.append(Link(index, name, bool(flags & IFF_UP)))
        return out

    def routes(self, protocol: int = RTPROT_FELIX, table: int = RT_TABLE_MAIN) -> dict[Route, int]:
        """Our routes in the kernel: {(family, dst, len): oif}.

        Routes of this protocol that carry a gateway (RTA_GATEWAY, or next hops in
        RTA_MULTIPATH) are left out: workload routes never have one, while the
        overlay's routes to other nodes' blocks (`encap.kernel`, also protocol 80,
        as Felix's are) always do; so are routes that are not unicast (the overlay's
        blackholes of this node's own blocks). Leaving them out here is what keeps
        the RouteManager's resync from deleting routes it does not own."""
        with self.lock:
            out: dict[Route, int] = {}
            for family in (socket.AF_INET, socket.AF_INET6):
                body = _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
                try:
                    msgs = list(self.nl.dump(RTM_GETROUTE, body))
                except NetlinkError as e:
                    if family == socket.AF_INET6 and e.errno in (errno.EAFNOSUPPORT, errno.EOPNOTSUPP):
                        continue
                    raise
                for mtype, buf, off, end in msgs:
                    if mtype != RTM_NEWROUTE:
                        continue
                    fam, dst_len, _sl, _tos, tbl, proto, _scope, rtype, _fl = _RTMSG.unpack_from(buf, off)
                    if proto != protocol or rtype != RTN_UNICAST:
                        continue
                    a = attrs(buf, off + _RTMSG.size, end)
                    if RTA_TABLE in a:
                        (tbl,) = struct.unpack("=I", a[RTA_TABLE][:4])
                    if tbl != table or RTA_DST not in a or RTA_GATEWAY in a or RTA_MULTIPATH in a:
                        continue
                    dst = socket.inet_ntop(fam, a[RTA_DST])
                    oif = struct.unpack("=i", a[RTA_OIF][:4])[0] if RTA_OIF in a else 0
                    out[(fam, dst, dst_len)] = oif
            return out

    def write(self, ops: list[RouteOp], protocol: int = RTPROT_FELIX, table: int = RT_TABLE_MAIN) -> None:
        """Send every op, `self.batch` per sendmsg; sets each op's `error`."""
        msgs = [route_message(op, protocol, table) for op in ops]
        for op, err in zip(ops, self.request_batch(msgs)):
            op.error = err

    def request_batch(self, msgs: list[tuple[int, int, bytes]]) -> list[int]:
        """Send (type, flags, body) messages, `self.batch` per sendmsg; return the
        errno of each (0 = done)."""
        out: list[int] = []
        with self.lock:
            for i in range(0, len(msgs), self.batch):
                out += self._send_batch(msgs[i: i + self.batch])
        return out

    def _send_batch(self, msgs: list[tuple[int, int, bytes]]) -> list[int]:
        # Only the last message asks for an ACK: the kernel reports failures of the
        # others anyway, in order, so once the last ACK is in, every error is too.
        # One ACK per message would cost a recv() each.
        if not msgs:
            return []
        mtype, flags, body = msgs[-1]
        msgs[-1] = (mtype, flags | NLM_F_ACK, body)
        first = self.nl.send(msgs)
        errors = self.nl.wait_acks({self.nl.seq})
        if not errors:
            return [0] * len(msgs)
        return [errors.get(seq_at(first, i), 0) for i in range(len(msgs))]


# an IPv4 route replace (rtmsg, RTA_DST, RTA_OIF, RTA_TABLE: every attribute 4
# bytes, so no padding) in one pack: a cold start builds one per endpoint
_V4_REPLACE = struct.Struct("=BBBBBBBBIHH4sHHiHHI")


def route_message(op: RouteOp, protocol: int, table: int) -> tuple[int, int, bytes]:
    family, dst, dst_len = op.route
    rtm_table = table if table < 256 else 252  # RT_TABLE_COMPAT; RTA_TABLE has the real one
    if op.op == "replace" and family == socket.AF_INET:
        body = _V4_REPLACE.pack(family, dst_len, 0, 0, rtm_table, protocol, RT_SCOPE_LINK, RTN_UNICAST, 0,
                                8, RTA_DST, socket.inet_pton(family, dst), 8, RTA_OIF, op.oif,
                                8, RTA_TABLE, table)
        return RTM_NEWROUTE, NLM_F_REPLACE | NLM_F_CREATE, body
    if op.op == "replace":
        scope = RT_SCOPE_LINK if family == socket.AF_INET else RT_SCOPE_UNIVERSE
        body = _RTMSG.pack(family, dst_len, 0, 0, rtm_table, protocol, scope, RTN_UNICAST, 0)
        body += attr(RTA_DST, socket.inet_pton(family, dst))
        body += attr(RTA_OIF, struct.pack("=i", op.oif))
        body += attr(RTA_TABLE, struct.pack("=I", table))
        return RTM_NEWROUTE, NLM_F_REPLACE | NLM_F_CREATE, body
    body = _RTMSG.pack(family, dst_len, 0, 0, rtm_table, protocol, RT_SCOPE_NOWHERE, 0, 0)
    body += attr(RTA_DST, socket.inet_pton(family, dst))
    body += attr(RTA_TABLE, struct.pack("=I", table))
    if op.oif:
        body += attr(RTA_OIF, struct.pack("=i", op.oif))
    return RTM_DELROUTE, 0, body


def parse_link(buf: bytes, off: int, end: int | None = None) -> Link | None:
    """The link in an RTM_NEWLINK/RTM_DELLINK message whose body is buf[off:end]."""
    _fam, _type, index, flags, _change = _IFINFOMSG.unpack_from(buf, off)
    # Walk the attributes without copying them: a link message carries dozens,
    # mostly statistics, and only two are wanted.
    pos = off + _IFINFOMSG.size
    end = len(buf) if end is None else end
    name: str | None = None
    conf: tuple[int, ...] | None = None
    unpack = NLATTR.unpack_from
    while pos + 4 <= end:
        length, kind = unpack(buf, pos)
        if length < 4:
            break
        kind &= NLA_TYPE_MASK
        if kind == IFLA_IFNAME:
            name = bytes(buf[pos + 4: pos + length]).split(b"\0", 1)[0].decode(errors="replace")
        elif kind == IFLA_AF_SPEC:
            conf = _inet_conf(buf, pos + 4, pos + length)
        pos += (length + 3) & ~3
    if name is None:
        return None
    return Link(index, name, bool(flags & IFF_UP), conf)


def _inet_conf(buf: bytes, pos: int, end: int) -> tuple[int, ...] | None:
    """IFLA_AF_SPEC → AF_INET → IFLA_INET_CONF as a tuple of u32."""
    inet = find_attr(buf, pos, end, socket.AF_INET)
    if inet is None:
        return None
    conf = find_attr(buf, inet[0], inet[1], IFLA_INET_CONF)
    if conf is None:
        return None
    return struct.unpack_from(f"={(conf[1] - conf[0]) // 4}I", buf, conf[0])


class LinkWatcher:
    """Calls `on_link(link, deleted)` for every link event, from its own thread."""

    def __init__(self, on_link: Callable[[Link, bool], None]) -> None:
        self.on_link = on_link
        self.sock = _route_socket(RTMGRP_LINK)
        self._stop = False
        self.thread = threading.Thread(target=self._run, name="link-watcher", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def _run(self) -> None:
        name_os_thread()
        unpack = NLMSGHDR.unpack_from
        while not self._stop:
            try:
                data = self.sock.recv(1 << 20)
            except OSError as e:
                if self._stop:
                    return
                if e.errno == errno.ENOBUFS:
                    # We missed events: tell the consumer to re-read every link.
                    log.warning("netlink link events overflowed; re-reading links")
                    self.on_link(Link(0, "", False), False)
                    continue
                log.error("link watcher stopped: %s", e)
                return
            if not data:
                return
            off = 0
            while off + HDRLEN <= len(data):
                length, mtype, _f, _seq, _pid = unpack(data, off)
                if length < HDRLEN:
                    break
                if mtype in (RTM_NEWLINK, RTM_DELLINK):
                    link = parse_link(data, off + HDRLEN, off + length)
                    if link is not None:
                        self.on_link(link, mtype == RTM_DELLINK)
                off += (length + 3) & ~3
