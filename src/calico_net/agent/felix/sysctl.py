"""Kernel settings for workload interfaces and the host.

Per workload interface we set what Calico's Felix sets (endpoint manager,
`configureInterface`), except the one our nftables table already does; the
table of values is `sysctl_helper.WORKLOAD_V4`/`WORKLOAD_V6`:

* `net.ipv4.conf.<if>.proxy_arp = 1` and `net.ipv4.neigh.<if>.proxy_delay = 0` —
  the host answers the workload's ARP for its gateway 169.254.1.1 (and anything it
  routes), at once rather than after the default random delay;
* `net.ipv4.conf.<if>.route_localnet = 1` — lets traffic from the workload be DNATed
  to 127.0.0.0/8 on the host (node-local services);
* `net.ipv4.conf.<if>.forwarding = 1` — normally inherited from `ip_forward`;
  written only when the interface reports 0;
* IPv6, for interfaces whose endpoint has an IPv6 address: `proxy_ndp = 1`,
  `forwarding = 1`, `accept_ra = 0` (the host is the router, it takes no adverts).
* Not `rp_filter`: Felix's iptables dataplane sets it to 1 for anti-spoofing; here
  the policy dataplane's `cali-prerouting` chain does the same strict check with an
  nft `fib saddr . iif` lookup, so the sysctl would only cost a write per interface.

Host-wide: `net.ipv4.ip_forward = 1` (and `net.ipv6.conf.all.forwarding = 1` when
IPv6 is present).

Two runners apply the table: inline (`configure_interfaces`, a few interfaces)
and the helper process of `sysctl_helper` (`start_configure`, many: most of the
cost is the kernel making each interface's /proc/sys inodes on first use; the
process runs on the other CPU while the agent renders and loads the policy, and
leaves the GIL alone, which a helper *thread* would not). The agent collects its
result before it programs routes. On a fresh host the links are listed late
(while nft loads), so there the helper is started earlier, on the endpoints'
interface names (`start_configure_names`): it looks every name up first (index
and up flag, reported at once: the route thread's link listing, see
`PendingByName.links`), reads the values the listing would have reported before
writing, and reports each interface's index, which `finish_by_name` matches with
the listing (an interface not there yet, or re-created since, is configured as
usual after it).

How it is written, all per network namespace: the interface's current IPv4 values
come with the link listing (IFLA_INET_CONF, see rtnetlink.parse_link), so only values
that differ are written, and an interface whose values are all ours already (an
agent restart) is not touched. Writes go through /proc/sys (one open + write
each). Not rtnetlink: RTM_SETLINK with IFLA_INET_CONF fires link-change notifiers
for every interface that is up, and RTM_SETNEIGHTBL for `proxy_delay` scans the
ARP table's per-device parameter list, both far dearer than a /proc/sys write
with many interfaces.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import subprocess
import sys
from typing import Any, Callable, Iterable

from . import sysctl_helper
from .sysctl_helper import HOST_V4, HOST_V6, by_name_template, interface_writes

log = logging.getLogger(__name__)

PROC_SYS = "/proc/sys"
#: where interfaces are looked up by name; for this default the helper asks the
#: kernel directly (the same answer, without a file read per name)
SYS_CLASS_NET = "/sys/class/net"


def _spawn_helper(args: list[str], lines: list[bytes], pass_fds: tuple[int, ...] = ()) -> subprocess.Popen:
    """Start the sysctl helper process (`sysctl_helper`) with `args`, reading
    `lines` (one interface each) on stdin from a memfd, so a large input never
    blocks on a pipe. Raises OSError."""
    fd = os.memfd_create("calico-sysctls")
    try:
        data = memoryview(b"\n".join(lines) + b"\n")
        while data:
            data = data[os.write(fd, data):]
        os.lseek(fd, 0, os.SEEK_SET)
        # by path, isolated and without site: only the standard library is needed
        return subprocess.Popen([sys.executable, "-I", "-S", sysctl_helper.__file__, *args],
                                stdin=fd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                pass_fds=pass_fds)
    finally:
        os.close(fd)


class Sysctls:
    """Writes settings under `root` (the /proc/sys of the network namespace to
    configure), looking interfaces up by name in `sys_class_net` (laid out as
    /sys/class/net) when it is not the default."""

    def __init__(self, root: str = PROC_SYS, sys_class_net: str = SYS_CLASS_NET) -> None:
        self.root = root
        self.ipv6 = os.path.isdir(os.path.join(root, "net/ipv6"))
        self.sys_class_net = sys_class_net

    #: at least this many interfaces to configure: use the helper process
    HELPER_MIN = 256

    def configure_interfaces(self, items: Iterable[tuple[Any, bool]]) -> list[str]:
        """Configure workload interfaces: (rtnetlink.Link, needs IPv6) each. Writes only
        values that differ from the link's reported devconf. Returns the names that
        could not be configured (gone meanwhile, or refused)."""
        failed: list[str] = []
        for link, v6 in items:
            writes = interface_writes(link.name, link.v4conf, v6, self.ipv6)
            if writes is None:
                continue     # configured before (an agent restart)
            try:
                _checked(link.name)
                for rel, val, required in writes:
                    if not self.write(rel, val, only_if_different=False) and required:
                        raise FileNotFoundError(link.name)
            except (OSError, ValueError) as e:
                log.warning("cannot configure %s: %s", link.name, e)
                failed.append(link.name)
        return failed

    def start_configure(self, items: Iterable[tuple[Any, bool]]) -> "PendingConfigure":
        """`configure_interfaces`, started: many interfaces go to a helper process
        that runs beside the caller; `.wait()` returns the names that failed."""
        items = list(items)
        if len(items) < self.HELPER_MIN:
            return PendingConfigure(failed=self.configure_interfaces(items))
        lines: list[bytes] = []
        failed: list[str] = []
        for link, v6 in items:
            writes = interface_writes(link.name, link.v4conf, v6, self.ipv6)
            if writes is None:
                continue      # configured before (see configure_interfaces)
            try:
                _checked(link.name)
            except ValueError as e:
                log.warning("cannot configure %s: %s", link.name, e)
                failed.append(link.name)
                continue
            if writes:
                lines.append("\t".join([link.name, "-", *(f"{rel}={val}" for rel, val, _ in writes)]).encode())
        if not lines:
            return PendingConfigure(failed=failed)
        try:
            proc = _spawn_helper([self.root, "-", "-1"], lines)
        except OSError as e:
            log.warning("cannot start the sysctl helper (%s); writing inline", e)
            return PendingConfigure(failed=self.configure_interfaces(items))
        return PendingConfigure(failed=failed, proc=proc, fallback=lambda: self.configure_interfaces(items))

    def start_configure_names(self, items: Iterable[tuple[str, bool]], links: bool = False) -> "PendingByName":
        """Start configuring interfaces known only by name, before the link listing
        (a cold start: the names come from the local endpoints): (name, needs IPv6)
        each, always in a helper process. It does what `configure_interfaces` does
        with a listed link: it reads the values the listing's devconf would have
        shown first, leaves an interface whose values are all ours and that needs
        no IPv6 alone, and otherwise writes the values that differ and the others.
        It reports, per name, the interface index it found before writing (0: no
        such interface) and the error if any; `finish_by_name` matches that with
        the link listing. Names that cannot be an interface (see `_sendable`) are
        not sent: no such interface exists.

        With `links`, the helper first looks every name up (index and up flag)
        and reports that before it writes anything: `PendingByName.links()` is the
        link listing of these interfaces, for the routes, without an ioctl per
        interface in the agent's own process."""
        # one line per interface from a template made once (many lines on the
        # critical path of a cold start)
        plain = by_name_template(False, self.ipv6)
        with_v6 = by_name_template(True, self.ipv6)
        lines = [(with_v6 if v6 else plain).format(name).encode() for name, v6 in items if _sendable(name)]
        if not lines:
            return PendingByName(result={})
        lfd = os.memfd_create("calico-links") if links else -1
        lookup = "ioctl" if self.sys_class_net == SYS_CLASS_NET else self.sys_class_net
        try:
            proc = _spawn_helper([self.root, lookup, str(lfd)], lines, pass_fds=(lfd,) if links else ())
        except OSError as e:
            if links:
                os.close(lfd)
            log.warning("cannot start the sysctl helper (%s); writing inline", e)
            return PendingByName(result=None)
        return PendingByName(proc=proc, links_fd=lfd if links else None)

    def finish_by_name(self, result: "dict[str, tuple[int, int, str]] | None",
                       items: Iterable[tuple[Any, bool]]) -> tuple[list[tuple[Any, bool]], list[str]]:
        """Match what `start_configure_names` did with the link listing's
        `interfaces_to_configure` items (link, needs IPv6). Returns (the items still
        to configure — the interface was not there when the helper looked, or is
        another one now: configure them as usual —, the names that failed, logged
        as `configure_interfaces` logs them). `result` None (the helper did not
        run): every item is still to do, written inline as when the helper fails."""
        items = list(items)
        if result is None:
            return [], self.configure_interfaces(items)
        rest: list[tuple[Any, bool]] = []
        failed: list[str] = []
        for link, v6 in items:
            got = result.get(link.name)
            if got is None or got[0] != link.index:
                rest.append((link, v6))
                continue
            _index, code, message = got
            if code:
                if code not in (errno.ENOENT, errno.ENODEV):
                    log.warning("cannot configure %s: %s", link.name, message)
                failed.append(link.name)
        return rest, failed

    def write(self, rel: str, value: str, *, only_if_different: bool = True) -> bool:
        """Write one value; True when it changed. A missing path (interface gone) is
        not an error: returns False."""
        path = os.path.join(self.root, rel)
        try:
            if only_if_different:
                with open(path, encoding="ascii") as f:
                    if f.read().strip() == value:
                        return False
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC)  # no Python file object: cheaper
            try:
                os.write(fd, value.encode("ascii"))
            finally:
                os.close(fd)
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


def _collect(proc: subprocess.Popen) -> str | None:
    """A sysctl helper's output once it has ended; None (logged) if it failed."""
    out, err = proc.communicate()
    if proc.returncode != 0:
        log.warning("sysctl helper failed (%s); writing inline", err.decode(errors="replace").strip()[-300:])
        return None
    return out.decode(errors="replace")


def _parse_result(out: str) -> "dict[str, tuple[int, int, str]]":
    """The helper's report: {name: (index found, errno, message)}."""
    result: dict[str, tuple[int, int, str]] = {}
    for line in out.splitlines():
        name, index, code, message = (line.split("\t", 3) + ["", "", ""])[:4]
        result[name] = (int(index or 0), int(code or 0), message)
    return result


class PendingByName:
    """`Sysctls.start_configure_names` under way; `.wait()` returns
    {name: (index found, errno, message)}, or None if the helper did not run."""

    def __init__(self, result: "dict[str, tuple[int, int, str]] | None" = None,
                 proc: subprocess.Popen | None = None, links_fd: int | None = None) -> None:
        self._result = result
        self._proc = proc
        self._links_fd = links_fd
        self._marker = links_fd is not None      # a "L" still ahead on stdout

    def links(self) -> "list[tuple[str, int, bool]] | None":
        """(name, index, up) of every interface found, once the helper has looked
        them all up (it blocks until then), or None if it was not asked to or did
        not get that far. Call it at most once, before `wait()`."""
        fd, self._links_fd = self._links_fd, None
        if fd is None or self._proc is None:
            return None
        try:
            assert self._proc.stdout is not None
            # raw read of the one byte: wait() reads the rest through communicate()
            got = os.read(self._proc.stdout.fileno(), 1)
            self._marker = False
            if got != b"L":
                return None
            chunks = []
            off = 0
            while True:
                chunk = os.pread(fd, 1 << 20, off)
                if not chunk:
                    break
                chunks.append(chunk)
                off += len(chunk)
        except OSError as e:
            log.warning("cannot read the sysctl helper's interface lookups (%s)", e)
            return None
        finally:
            os.close(fd)
        out = []
        for line in b"".join(chunks).decode(errors="replace").splitlines():
            name, index, up = (line.split("\t") + ["", "", ""])[:3]
            if index.isdigit() and int(index):
                out.append((name, int(index), up == "1"))
        return out

    def wait(self) -> "dict[str, tuple[int, int, str]] | None":
        proc, self._proc = self._proc, None
        if self._links_fd is not None:
            os.close(self._links_fd)
            self._links_fd = None
        if proc is None:
            return self._result
        out = _collect(proc)
        if out is None:
            self._result = None
            return None
        if self._marker and out.startswith("L"):
            out = out[1:]
        self._result = _parse_result(out)
        return self._result


class PendingConfigure:
    """Interfaces being configured (by the helper process, or already done)."""

    def __init__(self, failed: list[str], proc: subprocess.Popen | None = None,
                 fallback: Callable[[], list[str]] | None = None) -> None:
        self._failed = failed
        self._proc = proc
        self._fallback = fallback

    def wait(self) -> list[str]:
        """Names of the interfaces that could not be configured."""
        proc, self._proc = self._proc, None
        if proc is None:
            return self._failed
        out = _collect(proc)
        if out is None:
            return self._fallback() if self._fallback else self._failed
        failed = list(self._failed)
        for name, (_index, code, message) in _parse_result(out).items():
            if not code:
                continue
            if code not in (errno.ENOENT, errno.ENODEV):
                log.warning("cannot configure %s: %s", name, message)
            failed.append(name)
        return failed


_UNSENDABLE = re.compile(r"[/\t\n\r\0 =:]")


# Directory names under /proc/sys/net/ipv4/conf that are not interfaces: writing
# "all" or "default" would configure every interface (or every new one).
_NOT_INTERFACES = ("", ".", "..", "all", "default")


def _sendable(ifname: str) -> bool:
    """A name the by-name helper can be given: one line, one path component. (The
    kernel refuses names with '/', whitespace or ':', so the others cannot exist.)"""
    return (0 < len(ifname) <= 15 and ifname not in _NOT_INTERFACES
            and _UNSENDABLE.search(ifname) is None)


def _checked(ifname: str) -> str:
    """`ifname` if it is one path component under /proc/sys/net/ipv4/conf that names
    an interface (and fits the helper's line format); ValueError otherwise."""
    if not _sendable(ifname):
        raise ValueError(f"bad interface name {ifname!r}")
    return ifname
