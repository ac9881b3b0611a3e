"""The per-interface sysctl settings (one table) and the helper process that
writes them for many interfaces at once.

`WORKLOAD_V4`/`WORKLOAD_V6` are what every workload interface gets; `sysctl.Sysctls`
writes them inline for a few interfaces and starts this module as a process for
many (``python -I -S <this file>``: it imports nothing but the standard library,
so it starts as fast as a bare interpreter; ``python -m
calico_net.agent.felix.sysctl_helper`` runs the same code). The process runs on
the other CPU beside the agent's policy work and leaves the agent's GIL alone.

Its protocol: arguments ROOT (the /proc/sys to write under), LOOKUP (``-``: no
lookups; ``ioctl``: interface index and up flag from the kernel of this network
namespace; else a directory laid out as /sys/class/net, read for them) and
LINKS_FD (``-1``, or a descriptor: every name is looked up first and
``name<TAB>index<TAB>up`` lines go there, then one byte ``L`` to stdout says they
are there). On stdin one line per interface, ``name<TAB>mode<TAB>item...``, an
item ``relpath=value`` (written) or ``?relpath=value`` (read first, written only
if it differs); mode ``s``: if every ``?`` value is right already, nothing is
written for that interface. On stdout one line per interface,
``name<TAB>index<TAB>errno<TAB>message`` (index 0 without lookups; with lookups,
index 0 and ENODEV: no such interface; errno 0: done).
"""
from __future__ import annotations

import errno
import os
import sys

TYPE_CHECKING = False   # (no typing import: the helper starts as a bare interpreter does)
if TYPE_CHECKING:
    from typing import Callable

#: per workload interface, IPv4: (path under /proc/sys, "{if}" standing for the
#: interface name; value; the IPV4_DEVCONF_* id under which the link listing
#: reports the current value (IFLA_INET_CONF), 0 if it does not)
WORKLOAD_V4: tuple[tuple[str, str, int], ...] = (
    ("net/ipv4/conf/{if}/proxy_arp", "1", 3),
    ("net/ipv4/conf/{if}/route_localnet", "1", 26),
    ("net/ipv4/conf/{if}/forwarding", "1", 1),
    ("net/ipv4/neigh/{if}/proxy_delay", "0", 0),
)
#: per workload interface whose endpoint has an IPv6 address (on a host with IPv6)
WORKLOAD_V6: tuple[tuple[str, str, int], ...] = (
    ("net/ipv6/conf/{if}/proxy_ndp", "1", 0),
    ("net/ipv6/conf/{if}/forwarding", "1", 0),
    ("net/ipv6/conf/{if}/accept_ra", "0", 0),
)
HOST_V4 = (("net/ipv4/ip_forward", "1"),)
HOST_V6 = (("net/ipv6/conf/all/forwarding", "1"),)

_SIOCGIFINDEX = 0x8933
_SIOCGIFFLAGS = 0x8913
_IFF_UP = 0x1


def interface_writes(name: str, devconf: "tuple[int, ...] | None", v6: bool,
                     host_v6: bool) -> "list[tuple[str, str, bool]] | None":
    """What to write for one interface whose current IPv4 values are `devconf`
    (from the link listing; None: unknown): (path, value, required) each, a
    required path missing meaning the interface is gone. None: nothing, every
    value the listing shows is ours already (an interface configured before; the
    others were written together with them) and no IPv6 is needed."""
    out: list[tuple[str, str, bool]] = []
    shown_right = 0
    for rel, val, idx in WORKLOAD_V4:
        if idx and devconf is not None and len(devconf) >= idx and devconf[idx - 1] == int(val):
            shown_right += 1
            continue
        out.append((rel.replace("{if}", name), val, idx != 0))
    if not v6 and shown_right == sum(1 for _, _, idx in WORKLOAD_V4 if idx):
        return None
    if v6 and host_v6:
        out += [(rel.replace("{if}", name), val, False) for rel, val, _ in WORKLOAD_V6]
    return out


def by_name_template(v6: bool, host_v6: bool) -> str:
    """The helper's input line for an interface known only by name, with ``{0}``
    for the name: the values the listing would show are read first (``?``); with
    no IPv6 to do, an interface whose values are all ours is left alone (``s``)."""
    items = [("?" if idx else "") + rel.replace("{if}", "{0}") + "=" + val for rel, val, idx in WORKLOAD_V4]
    if v6 and host_v6:
        items += [rel.replace("{if}", "{0}") + "=" + val for rel, val, _ in WORKLOAD_V6]
    return "\t".join(["{0}", "-" if v6 else "s", *items])


def _lookup_ioctl() -> "Callable[[bytes], tuple[int, int]]":
    import fcntl
    import socket
    import struct
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ifreq = struct.Struct("16si")
    flags_req = struct.Struct("16sH")

    def lookup(name: bytes) -> tuple[int, int]:
        # SIOCGIFINDEX and SIOCGIFFLAGS on one socket (if_nametoindex opens one per call)
        if len(name) >= 16:
            return 0, 0   # longer than IFNAMSIZ allows ("16s" would cut it short)
        try:
            index = ifreq.unpack(fcntl.ioctl(sock, _SIOCGIFINDEX, ifreq.pack(name, 0)))[1]
            flags = flags_req.unpack(fcntl.ioctl(sock, _SIOCGIFFLAGS, flags_req.pack(name, 0)))[1]
        except OSError:
            return 0, 0
        return index, flags & _IFF_UP
    return lookup


def _lookup_sysfs(net_dir: bytes) -> "Callable[[bytes], tuple[int, int]]":
    def lookup(name: bytes) -> tuple[int, int]:
        try:
            with open(net_dir + name + b"/ifindex", "rb") as f:
                index = int(f.read())
            with open(net_dir + name + b"/flags", "rb") as f:
                flags = int(f.read(), 16)
        except (OSError, ValueError):
            return 0, 0
        return index, flags & _IFF_UP
    return lookup


def _configure(root: bytes, parts: list[bytes]) -> None:
    """One interface's items (see the module docstring); OSError if one failed."""
    fds = []
    try:
        todo = []
        right = True
        for item in parts[2:]:
            rel, _, val = item.rpartition(b"=")
            if rel[:1] == b"?":
                fd = os.open(root + rel[1:], os.O_RDWR)
                fds.append(fd)
                if os.pread(fd, 64, 0).strip() != val:
                    right = False
                    todo.append((fd, val))
            else:
                todo.append((rel, val))
        if right and parts[1] == b"s":
            return
        for target, val in todo:
            if type(target) is int:
                os.pwrite(target, val, 0)
                continue
            fd = os.open(root + target, os.O_WRONLY | os.O_TRUNC)
            try:
                os.write(fd, val)
            finally:
                os.close(fd)
    finally:
        for fd in fds:
            os.close(fd)


def main(argv: list[str]) -> None:
    root = os.fsencode(argv[0]) + b"/"
    how = argv[1]
    links_fd = int(argv[2])
    lookup: "Callable[[bytes], tuple[int, int]] | None"
    if how == "-":
        lookup = None
    elif how == "ioctl":
        lookup = _lookup_ioctl()
    else:
        lookup = _lookup_sysfs(os.fsencode(how) + b"/")
    lines = [line.split(b"\t") for line in sys.stdin.buffer.read().split(b"\n") if line]
    found: dict[bytes, tuple[int, int]] = {}
    if links_fd >= 0 and lookup is not None:
        listing = []
        for parts in lines:
            index, up = found[parts[0]] = lookup(parts[0])
            listing.append(b"%s\t%d\t%d" % (parts[0], index, up))
        data = memoryview(b"\n".join(listing))
        while data:
            data = data[os.write(links_fd, data):]
        os.close(links_fd)
        os.write(1, b"L")
    out = []
    for parts in lines:
        name = parts[0]
        index = 0
        if lookup is not None:
            index = (found.get(name) or lookup(name))[0]
            if not index:
                out.append(b"%s\t0\t%d\tno such interface" % (name, errno.ENODEV))
                continue
        try:
            _configure(root, parts)
        except OSError as e:
            out.append(b"%s\t%d\t%d\t%s" % (name, index, e.errno or 0, os.fsencode(str(e.strerror))))
            continue
        out.append(b"%s\t%d\t0\t" % (name, index))
    sys.stdout.buffer.write(b"\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1:])
