"""The tamper watch: another process's changes to our routes and table, heard at once.

Owns `TamperWatcher` (one thread, two netlink sockets) and `Tamper`, what it
reports. Why: the periodic refreshes (`RouteRefreshInterval`,
`IptablesRefreshInterval`, 90 s in the lab) repair drift only when they come
round; `ip route del` of a workload route or `nft flush table inet calico` then
leaves a workload unreachable, or unprotected, for up to that long. The kernel
tells every listener about both at once, so the agent can repair within about a
second and keep the refreshes as a backstop.

* Routes: RTNLGRP_IPV4_ROUTE/IPV6_ROUTE. Only RTM_DELROUTE of a route shaped
  like ours counts (protocol 80, main table, unicast, a destination, no gateway:
  `rtnetlink.Netlink.routes` reads the same shape back) and only when another
  process asked for it: a notification carries the port id of the socket whose
  request caused it, so the agent's own deletes (its route socket's port) and the
  kernel's (port 0: an interface went down or away, which the link watch handles)
  are left out. Reported: the routes, with the interface they went through.
* nftables: NFNLGRP_NFTABLES. A transaction's notifications (tables, chains,
  rules, sets, elements — each names its table in attribute 1) come in a run that
  ends with NFT_MSG_NEWGEN, the transaction's generation. A generation that touched
  ``table inet calico`` is looked up in `OwnGenerations`: the agent's own writes
  are dropped there without any read of the table; anyone else's, or one that
  cannot be told apart, is reported.
* Lost events (ENOBUFS: the socket's buffer overflowed) are reported as such; the
  daemon then re-reads that side of the kernel.

Cost: a socket filter (classic BPF, in the kernel) lets only RTM_DELROUTE of
protocol 80 asked for by another process through to the route socket (route
notifications come one per message), so the agent's own route writes and deletes
— 10,000 at a cold start — and every other daemon's never wake the thread; the nftables socket hears every committed
change of the namespace, read a header at a time (only the first message of a
transaction is looked into until it names our table).

Debounce: the first event of a burst opens a window that closes after `quiet`
without another event, or `max_delay` after it opened; then one `Tamper` goes to
the callback, so `ip route flush proto 80` or a script of nft commands costs one
repair. With nothing happening the thread blocks in select(): no cost at idle.
"""
from __future__ import annotations

import ctypes
import errno
import logging
import select
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from calico_net.agent.threadname import name_os_thread

from .netlink import HDRLEN, NLMSGHDR, attrs, find_attr, open_socket
from .nft_netlink import NFNL_SUBSYS_NFTABLES, NFNLGRP_NFTABLES, NFT_MSG_NEWGEN, NFTA_GEN_ID, TABLE, OwnGenerations
from .rtnetlink import RT_TABLE_MAIN, RTM_DELROUTE, RTPROT_FELIX, Route

log = logging.getLogger(__name__)

__all__ = ["Tamper", "TamperWatcher", "attach_filter", "parse_delroute"]

RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_ROUTE = 0x400
NETLINK_NETFILTER = 12
RTN_UNICAST = 1
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_MULTIPATH, RTA_TABLE = 1, 4, 5, 9, 15
NFPROTO_INET = 1
_RTMSG = struct.Struct("=BBBBBBBBI")
_TABLE_ATTR = TABLE.encode() + b"\0"
#: a generation the ledger calls pending is looked at again after this long
PENDING_RETRY = 0.02


@dataclass
class Tamper:
    """What another process changed since the last report."""
    #: workload-shaped routes it deleted: route → the interface index it went through
    routes: dict[Route, int] = field(default_factory=dict)
    #: route events were lost: re-read every route
    routes_lost: bool = False
    #: why table inet calico must be checked ("" if not): another process changed
    #: it, a change could not be told from ours, or events were lost
    nft: str = ""

    def __bool__(self) -> bool:
        return bool(self.routes or self.routes_lost or self.nft)


SO_ATTACH_FILTER = 26
_BPF_LDB, _BPF_LDW, _BPF_JEQ, _BPF_RET = 0x30, 0x20, 0x15, 0x06   # ld byte/word [k]; jeq #k; ret #k


def _delroute_filter(skip_ports: frozenset[int] = frozenset()) -> list[tuple[int, int, int, int]]:
    """Classic BPF over a route notification: accept it only if it is RTM_DELROUTE
    (nlmsg_type, host byte order, at offset 4) of protocol 80 (rtm_protocol, the
    rtmsg's sixth byte, after the 16-byte header) and was not asked for by one of
    `skip_ports` or the kernel (nlmsg_pid at offset 12; port 0). Byte loads for
    the type: BPF's wider loads are big-endian, the header is in host order; the
    port is compared as the big-endian load sees it."""
    low, high = (4, 5) if sys.byteorder == "little" else (5, 4)
    ports = [0] + sorted(skip_ports)
    seen = [int.from_bytes(p.to_bytes(4, sys.byteorder), "big") for p in ports]
    n = 8 + len(ports)          # the index of the final "drop"
    prog = [(_BPF_LDB, 0, 0, low), (_BPF_JEQ, 0, n - 2, RTM_DELROUTE & 0xFF),
            (_BPF_LDB, 0, 0, high), (_BPF_JEQ, 0, n - 4, RTM_DELROUTE >> 8),
            (_BPF_LDB, 0, 0, HDRLEN + 5), (_BPF_JEQ, 0, n - 6, RTPROT_FELIX),
            (_BPF_LDW, 0, 0, 12)]
    for i, port in enumerate(seen):
        prog.append((_BPF_JEQ, n - (8 + i), 0, port))
    return prog + [(_BPF_RET, 0, 0, 0xFFFFFFFF), (_BPF_RET, 0, 0, 0)]


def attach_filter(sock: socket.socket, prog: list[tuple[int, int, int, int]]) -> None:
    """SO_ATTACH_FILTER of a classic BPF program (the kernel copies it)."""
    code = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *ins) for ins in prog))
    fprog = struct.pack("@HP", len(prog), ctypes.addressof(code))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def parse_delroute(buf: bytes, off: int, end: int) -> tuple[Route, int] | None:
    """(route, oif) of an RTM_DELROUTE body buf[off:end] if it is shaped like one of
    our workload routes, else None."""
    fam, dst_len, _sl, _tos, tbl, proto, _scope, rtype, _fl = _RTMSG.unpack_from(buf, off)
    if proto != RTPROT_FELIX or rtype != RTN_UNICAST or fam not in (socket.AF_INET, socket.AF_INET6):
        return None
    a = attrs(buf, off + _RTMSG.size, end)
    if RTA_TABLE in a:
        (tbl,) = struct.unpack("=I", a[RTA_TABLE][:4])
    if tbl != RT_TABLE_MAIN or RTA_DST not in a or RTA_GATEWAY in a or RTA_MULTIPATH in a:
        return None
    oif = struct.unpack("=i", a[RTA_OIF][:4])[0] if RTA_OIF in a else 0
    return (fam, socket.inet_ntop(fam, a[RTA_DST]), dst_len), oif


class TamperWatcher:
    """Calls `on_tamper(Tamper)` from its own thread (see the module docstring).

    `own_ports`: the port ids of the agent's route sockets (their deletes are
    its own); `generations`: the ledger of the agent's nft writes, None to leave
    nftables unwatched."""

    def __init__(self, on_tamper: Callable[[Tamper], None], own_ports: frozenset[int],
                 generations: OwnGenerations | None, *, quiet: float = 0.1,
                 max_delay: float = 0.4) -> None:
        self.on_tamper = on_tamper
        self.own_ports = own_ports
        self.generations = generations
        self.quiet = quiet
        self.max_delay = max_delay
        self._stop = False
        self.route_sock = open_socket(socket.NETLINK_ROUTE, groups=RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE,
                                      rcvbuf=4 << 20)
        try:
            attach_filter(self.route_sock, _delroute_filter(own_ports))
        except OSError as e:   # the check below stays: only the thread's cost changes
            log.warning("tamper watch: no socket filter (%s); reading every route event", e)
        self.nft_sock: socket.socket | None = None
        if generations is not None:
            try:
                self.nft_sock = open_socket(NETLINK_NETFILTER, groups=1 << (NFNLGRP_NFTABLES - 1),
                                            rcvbuf=8 << 20)
            except OSError:
                self.route_sock.close()
                raise
        self.thread = threading.Thread(target=self._run, name="tamper-watcher", daemon=True)
        # state of the thread only
        self._pending = Tamper()
        self._gens: list[int] = []        # our table's generations not yet classified
        self._touched = False             # the transaction being read touched our table
        self._first = 0.0                 # when the open window opened (0: none open)
        self._last = 0.0

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop = True
        for s in (self.route_sock, self.nft_sock):
            if s is None:
                continue
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    # --- the thread ---
    def _run(self) -> None:
        name_os_thread()
        socks = [s for s in (self.route_sock, self.nft_sock) if s is not None]
        while not self._stop:
            timeout = None
            if self._first:
                timeout = max(0.0, min(self._last + self.quiet, self._first + self.max_delay) - time.monotonic())
            try:
                ready, _, _ = select.select(socks, [], [], timeout)
            except (OSError, ValueError):
                if self._stop:
                    return
                raise
            for s in ready:
                try:
                    data = s.recv(1 << 20)
                except OSError as e:
                    if self._stop:
                        return
                    if e.errno != errno.ENOBUFS:
                        log.error("tamper watch stopped: %s", e)
                        return
                    # events were dropped: this side of the kernel must be re-read
                    if s is self.route_sock:
                        self._pending.routes_lost = True
                    else:
                        self._pending.nft = "nftables events were lost"
                        self._touched = False
                    self._event()
                    continue
                try:
                    if s is self.route_sock:
                        self._routes(data)
                    else:
                        self._nft(data)
                except (struct.error, IndexError, ValueError, OSError):
                    # a message we cannot read must not end the watch: have both
                    # sides checked, as after lost events
                    log.exception("tamper watch: unreadable netlink message")
                    self._pending.routes_lost = True
                    self._pending.nft = "an unreadable nftables or route event"
                    self._event()
            if self._first and time.monotonic() >= min(self._last + self.quiet, self._first + self.max_delay):
                self._flush()

    def _event(self) -> None:
        now = time.monotonic()
        if not self._first:
            self._first = now
        self._last = now

    def _routes(self, data: bytes) -> None:
        off, n, unpack = 0, len(data), NLMSGHDR.unpack_from
        while off + HDRLEN <= n:
            length, mtype, _f, _seq, port = unpack(data, off)
            if length < HDRLEN:
                break
            # port 0: the kernel's own delete (a link went down or away)
            if (mtype == RTM_DELROUTE and port != 0 and port not in self.own_ports
                    and length >= HDRLEN + _RTMSG.size):
                got = parse_delroute(data, off + HDRLEN, off + length)
                if got is not None:
                    self._pending.routes[got[0]] = got[1]
                    self._event()
            off += (length + 3) & ~3

    def _nft(self, data: bytes) -> None:
        off, n, unpack = 0, len(data), NLMSGHDR.unpack_from
        newgen = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN
        while off + HDRLEN <= n:
            length, mtype, _f, _seq, _port = unpack(data, off)
            if length < HDRLEN:
                break
            body = off + HDRLEN
            if length < HDRLEN + 4:      # no nfgenmsg: not a notification we know
                pass
            elif mtype == newgen:
                if self._touched:
                    self._touched = False
                    gen = attrs(data, body + 4, off + length).get(NFTA_GEN_ID)
                    if gen is None:
                        self._pending.nft = "a change of table inet calico without its generation"
                    else:
                        self._gens.append(struct.unpack("!I", gen[:4])[0])
                    self._event()
            elif mtype >> 8 == NFNL_SUBSYS_NFTABLES and data[body] == NFPROTO_INET and not self._touched:
                # every object message names its table in attribute 1 (NFTA_*_TABLE)
                pos = find_attr(data, body + 4, off + length, 1)
                if pos is not None and data[pos[0]:pos[1]] == _TABLE_ATTR:
                    self._touched = True
            off += (length + 3) & ~3

    def _flush(self) -> None:
        """The window closed: classify the generations and report."""
        assert self.generations is not None or not self._gens
        keep: list[int] = []
        for gen in self._gens:
            kind = self.generations.classify(gen) if self.generations is not None else ""
            if kind == OwnGenerations.PENDING:
                keep.append(gen)       # our write is still going: look again shortly
            elif kind == OwnGenerations.FOREIGN:
                self._pending.nft = f"another process changed table inet calico (generation {gen})"
            elif kind == OwnGenerations.AMBIGUOUS and not self._pending.nft:
                self._pending.nft = (f"a change of table inet calico (generation {gen}) may not be "
                                     f"the agent's own")
        self._gens = keep
        report, self._pending = self._pending, Tamper()
        if keep:
            now = time.monotonic()
            self._first, self._last = now, now - self.quiet + PENDING_RETRY
        else:
            self._first = self._last = 0.0
        if report:
            self.on_tamper(report)
