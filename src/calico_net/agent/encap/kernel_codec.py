"""The rtnetlink messages of the overlay's routes, neighbours and FDB entries: build
them, dump them, parse them (the agent's own codec, `felix.netlink`, as the
workload routes use; `kernel.EncapKernel` decides what to send).

Ours, as this module reads the kernel: routes in the main table of protocol 80
(RTPROT_FELIX) that carry a gateway (workload routes never do), and blackholes of
protocol 80 (this node's own blocks when no BIRD writes them); neighbours and
FDB entries of one device, as the kernel reports them (the caller keeps the
permanent ones). Pure functions except the three `dump_*`, which take the socket.
"""
from __future__ import annotations

import errno
import ipaddress
import re
import socket
import struct
from dataclasses import dataclass

from ..felix.netlink import NLM_F_CREATE, NLM_F_REPLACE, NetlinkError, NetlinkSocket, attr, attrs
from ..felix.rtnetlink import (
    RT_TABLE_MAIN, RTA_DST, RTA_GATEWAY, RTA_MULTIPATH, RTA_OIF, RTA_TABLE, RTM_DELROUTE,
    RTM_GETROUTE, RTM_NEWROUTE, RTN_UNICAST, RTPROT_FELIX,
)

RTN_BLACKHOLE = 6

RTA_PRIORITY = 6
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_NOWHERE = 255     # in a delete: any scope
RTNH_F_ONLINK = 4
RTM_F_CLONED = 0x200
IP6_RT_PRIO_USER = 1024    # the metric the kernel gives an IPv6 route added with 0

RTM_NEWNEIGH = 28
RTM_DELNEIGH = 29
RTM_GETNEIGH = 30
NDA_DST = 1
NDA_LLADDR = 2
NDA_IFINDEX = 8
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
AF_BRIDGE = 7

RTMSG = struct.Struct("=BBBBBBBBI")
NDMSG = struct.Struct("=BxxxiHBB")
_IFINFOMSG = struct.Struct("=BxHiII")

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")

RouteKey = tuple[int, bytes, int]          # family, packed dst, prefix length
Message = tuple[int, int, bytes]           # type, flags, body (Netlink.request_batch's)


@dataclass(frozen=True)
class KernelRoute:
    key: RouteKey
    gateway: bytes | None      # None: a multipath route, or a blackhole
    oif: int
    onlink: bool
    priority: int
    blackhole: bool = False


def ip(text: object, family: int) -> bytes | None:
    """The packed address, or None when `text` is not an address of `family`."""
    try:
        a = ipaddress.ip_address(str(text))
    except ValueError:
        return None
    if (a.version == 4) != (family == socket.AF_INET):
        return None
    return a.packed


def mac(text: object) -> bytes | None:
    """The 6 bytes of a colon-separated MAC, or None when `text` is not one."""
    s = str(text).lower()
    if not _MAC.match(s):
        return None
    return bytes.fromhex(s.replace(":", ""))


def is_default_priority(family: int, priority: int) -> bool:
    """Whether a route of this metric is the one a replace with metric 0 overwrites."""
    return priority == 0 or (family == socket.AF_INET6 and priority == IP6_RT_PRIO_USER)


# ------------------------------------------------------------------ routes

def parse_route(buf: bytes, off: int, end: int) -> KernelRoute | None:
    """The route in an RTM_NEWROUTE body buf[off:end] if it is ours, else None."""
    fam, dst_len, _sl, _tos, tbl, proto, _scope, rtype, flags = RTMSG.unpack_from(buf, off)
    if proto != RTPROT_FELIX or flags & RTM_F_CLONED:
        return None
    a = attrs(buf, off + RTMSG.size, end)
    if RTA_TABLE in a:
        (tbl,) = struct.unpack("=I", a[RTA_TABLE][:4])
    blackhole = rtype == RTN_BLACKHOLE
    if tbl != RT_TABLE_MAIN or (not blackhole and RTA_GATEWAY not in a and RTA_MULTIPATH not in a):
        return None    # another table's, or a workload route
    size = 4 if fam == socket.AF_INET else 16
    dst = bytes(a[RTA_DST]) if RTA_DST in a else b"\0" * size
    oif = struct.unpack("=i", a[RTA_OIF][:4])[0] if RTA_OIF in a else 0
    prio = struct.unpack("=I", a[RTA_PRIORITY][:4])[0] if RTA_PRIORITY in a else 0
    gw = bytes(a[RTA_GATEWAY]) if RTA_GATEWAY in a and RTA_MULTIPATH not in a else None
    return KernelRoute((fam, dst, dst_len), gw, oif, bool(flags & RTNH_F_ONLINK), prio, blackhole)


def dump_routes(nls: NetlinkSocket) -> list[KernelRoute]:
    """Our routes of both families (a kernel without IPv6: IPv4 only)."""
    out: list[KernelRoute] = []
    for family in (socket.AF_INET, socket.AF_INET6):
        body = RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
        try:
            msgs = list(nls.dump(RTM_GETROUTE, body))
        except NetlinkError as e:
            if family == socket.AF_INET6 and e.errno in (errno.EAFNOSUPPORT, errno.EOPNOTSUPP):
                continue
            raise
        for mtype, buf, off, end in msgs:
            if mtype == RTM_NEWROUTE:
                r = parse_route(buf, off, end)
                if r is not None:
                    out.append(r)
    return out


def route_replace(key: RouteKey, gateway: bytes, oif: int, onlink: bool) -> Message:
    family, dst, dst_len = key
    body = RTMSG.pack(family, dst_len, 0, 0, RT_TABLE_MAIN, RTPROT_FELIX, RT_SCOPE_UNIVERSE, RTN_UNICAST,
                      RTNH_F_ONLINK if onlink else 0)
    body += attr(RTA_DST, dst) + attr(RTA_GATEWAY, gateway) + attr(RTA_OIF, struct.pack("=i", oif))
    body += attr(RTA_TABLE, struct.pack("=I", RT_TABLE_MAIN))
    return RTM_NEWROUTE, NLM_F_REPLACE | NLM_F_CREATE, body


def route_blackhole(key: RouteKey) -> Message:
    family, dst, dst_len = key
    body = RTMSG.pack(family, dst_len, 0, 0, RT_TABLE_MAIN, RTPROT_FELIX, RT_SCOPE_UNIVERSE, RTN_BLACKHOLE, 0)
    body += attr(RTA_DST, dst) + attr(RTA_TABLE, struct.pack("=I", RT_TABLE_MAIN))
    return RTM_NEWROUTE, NLM_F_REPLACE | NLM_F_CREATE, body


def route_delete(kr: KernelRoute) -> Message:
    family, dst, dst_len = kr.key
    # protocol 80 in the request: the kernel then deletes only a route of ours,
    # and gateway, device and metric pin the very route that was dumped
    body = RTMSG.pack(family, dst_len, 0, 0, RT_TABLE_MAIN, RTPROT_FELIX, RT_SCOPE_NOWHERE, 0, 0)
    body += attr(RTA_DST, dst) + attr(RTA_TABLE, struct.pack("=I", RT_TABLE_MAIN))
    if kr.gateway is not None:
        body += attr(RTA_GATEWAY, kr.gateway)
    if kr.oif:
        body += attr(RTA_OIF, struct.pack("=i", kr.oif))
    if kr.priority:
        body += attr(RTA_PRIORITY, struct.pack("=I", kr.priority))
    return RTM_DELROUTE, 0, body


# ------------------------------------------------------ neighbours and FDB

def parse_neigh(buf: bytes, off: int, end: int) -> tuple[int, int, bytes | None, bytes | None, int]:
    """(family, ifindex, NDA_DST, NDA_LLADDR, state) of an RTM_NEWNEIGH body."""
    fam, ifi, state, _flags, _type = NDMSG.unpack_from(buf, off)
    a = attrs(buf, off + NDMSG.size, end)
    dst = bytes(a[NDA_DST]) if NDA_DST in a else None
    lladdr = bytes(a[NDA_LLADDR]) if NDA_LLADDR in a else None
    return fam, ifi, dst, lladdr, state


def dump_neigh(nls: NetlinkSocket, family: int, index: int) -> list[tuple[bytes, bytes | None, int]]:
    """(ip, mac, state) of the neighbours of one device."""
    # NDA_IFINDEX makes the kernel filter: a host's ARP cache on its workload
    # interfaces can be large and is none of our business
    body = NDMSG.pack(family, 0, 0, 0, 0) + attr(NDA_IFINDEX, struct.pack("=I", index))
    out = []
    for mtype, buf, off, end in nls.dump(RTM_GETNEIGH, body):
        if mtype != RTM_NEWNEIGH:
            continue
        _fam, ifi, dst, lladdr, state = parse_neigh(buf, off, end)
        if ifi == index and dst is not None:
            out.append((dst, lladdr, state))
    return out


def dump_fdb(nls: NetlinkSocket, index: int) -> list[tuple[bytes, bytes | None, int]]:
    """(mac, remote address, state) of the FDB entries of one device."""
    # an ifinfomsg header naming the device: `bridge fdb show dev X`'s request
    body = _IFINFOMSG.pack(AF_BRIDGE, 0, index, 0, 0)
    out = []
    for mtype, buf, off, end in nls.dump(RTM_GETNEIGH, body):
        if mtype != RTM_NEWNEIGH:
            continue
        _fam, ifi, dst, lladdr, state = parse_neigh(buf, off, end)
        if ifi == index and lladdr is not None:
            out.append((lladdr, dst, state))
    return out


def neigh_msg(mtype: int, family: int, index: int, addr: bytes, lladdr: bytes | None) -> Message:
    """A permanent neighbour's replace (RTM_NEWNEIGH) or delete (RTM_DELNEIGH)."""
    body = NDMSG.pack(family, index, NUD_PERMANENT, 0, 0) + attr(NDA_DST, addr)
    if mtype == RTM_NEWNEIGH and lladdr is not None:
        body += attr(NDA_LLADDR, lladdr)
        return mtype, NLM_F_REPLACE | NLM_F_CREATE, body
    return mtype, 0, body


def fdb_msg(mtype: int, index: int, lladdr: bytes, dst: bytes) -> Message:
    """An FDB entry's replace or delete."""
    # NTF_SELF: the VXLAN device's own table (not a bridge's); permanent, as
    # `bridge fdb replace <mac> dev <vxlan> dst <ip> self permanent`
    body = NDMSG.pack(AF_BRIDGE, index, NUD_PERMANENT, NTF_SELF, 0) + attr(NDA_LLADDR, lladdr) + attr(NDA_DST, dst)
    flags = NLM_F_REPLACE | NLM_F_CREATE if mtype == RTM_NEWNEIGH else 0
    return mtype, flags, body
