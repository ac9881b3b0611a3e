"""Kernel settings for workload interfaces and the host, written through /proc/sys.

Writing /proc/sys directly (not `sysctl(8)`) costs one open/write per value and
works inside a network namespace, where /proc/sys/net shows that namespace.

Per workload interface we set what Calico's Felix sets (endpoint manager,
`configureInterface`):

* `net.ipv4.conf.<if>.rp_filter = 1` — strict reverse-path check: a workload cannot
  send from an address that is not routed back to its own interface (anti-spoofing;
  our /32 route to the interface is what makes its real address pass);
* `net.ipv4.conf.<if>.route_localnet = 1` — lets traffic from the workload be DNATed
  to 127.0.0.0/8 on the host (node-local services);
* `net.ipv4.conf.<if>.proxy_arp = 1` and `net.ipv4.neigh.<if>.proxy_delay = 0` —
  the host answers the workload's ARP for its gateway 169.254.1.1 (and anything it
  routes), at once rather than after the default random delay of up to 0.8 s;
* `net.ipv4.conf.<if>.forwarding = 1`;
* IPv6, when the kernel has it: `net.ipv6.conf.<if>.proxy_ndp = 1`,
  `forwarding = 1`, `accept_ra = 0` (the host is the router, it takes no adverts).

Host-wide: `net.ipv4.ip_forward = 1` (and `net.ipv6.conf.all.forwarding = 1` when
IPv6 is present).
"""
from __future__ import annotations

import errno
import logging
import os

log = logging.getLogger(__name__)

PROC_SYS = "/proc/sys"

INTERFACE_V4 = (
    ("net/ipv4/conf/{if}/rp_filter", "1"),
    ("net/ipv4/conf/{if}/route_localnet", "1"),
    ("net/ipv4/conf/{if}/proxy_arp", "1"),
    ("net/ipv4/neigh/{if}/proxy_delay", "0"),
    ("net/ipv4/conf/{if}/forwarding", "1"),
)
INTERFACE_V6 = (
    ("net/ipv6/conf/{if}/proxy_ndp", "1"),
    ("net/ipv6/conf/{if}/forwarding", "1"),
    ("net/ipv6/conf/{if}/accept_ra", "0"),
)
HOST_V4 = (("net/ipv4/ip_forward", "1"),)
HOST_V6 = (("net/ipv6/conf/all/forwarding", "1"),)


class Sysctls:
    """Writes settings under `root` (a fake directory in unit tests)."""

    def __init__(self, root: str = PROC_SYS) -> None:
        self.root = root
        self.ipv6 = os.path.isdir(os.path.join(root, "net/ipv6"))

    def write(self, rel: str, value: str, *, only_if_different: bool = True) -> bool:
        """Write one value; True when it changed. A missing path (interface gone) is
        not an error: returns False."""
        path = os.path.join(self.root, rel)
        try:
            if only_if_different:
                with open(path, encoding="ascii") as f:
                    if f.read().strip() == value:
                        return False
            with open(path, "w", encoding="ascii") as f:
                f.write(value)
            return True
        except FileNotFoundError:
            return False
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENODEV):
                return False
            raise

    def configure_host(self) -> int:
        settings = HOST_V4 + (HOST_V6 if self.ipv6 else ())
        return sum(self.write(rel, v) for rel, v in settings)

    def configure_interface(self, ifname: str) -> int:
        """Apply every per-interface setting; returns how many values were written.

        Written without reading first: one open+write per value is half the
        syscalls, and rewriting an equal value changes nothing in the kernel."""
        if "/" in ifname or ifname in ("", ".", ".."):
            raise ValueError(f"bad interface name {ifname!r}")
        settings = INTERFACE_V4 + (INTERFACE_V6 if self.ipv6 else ())
        changed = 0
        for rel, v in settings:
            try:
                changed += self.write(rel.format(**{"if": ifname}), v, only_if_different=False)
            except OSError as e:
                log.warning("cannot set %s on %s: %s", rel.format(**{"if": ifname}), ifname, e)
        return changed
