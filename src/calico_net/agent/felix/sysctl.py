"""Kernel settings for workload interfaces and the host.

Per workload interface we set what Calico's Felix sets (endpoint manager,
`configureInterface`), except the one our nftables table already does:

* `net.ipv4.conf.<if>.proxy_arp = 1` and `net.ipv4.neigh.<if>.proxy_delay = 0` —
  the host answers the workload's ARP for its gateway 169.254.1.1 (and anything it
  routes), at once rather than after the default random delay of up to 0.8 s;
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

Many interfaces at once (a cold start: ~30,000 writes; at 10,000 fresh interfaces
the helper needs ~1.2 s of CPU, most of it the kernel making each interface's
/proc/sys inodes on first use) are written by a small helper process (`start_configure`): it
runs on the other CPU while the agent renders and loads the policy, and leaves the
GIL alone (a helper *thread* was GIL-starved). The agent collects its result
before it programs routes. A few interfaces are written inline. On a fresh host
the links are listed late (while nft loads), so there the helper is started
earlier, on the endpoints' interface names (`start_configure_names`): it looks
every name up first (index and up flag, reported at once: the route thread's link
listing, see `PendingByName.links`), reads the values the listing would have
reported before writing, and reports each interface's index, which
`finish_by_name` matches with the listing (an interface not there yet, or
re-created since, is configured as usual after it).

How it is written, all per network namespace: the interface's current IPv4 values
come with the link listing (IFLA_INET_CONF, see routes.parse_link), so only values
that differ are written, and an interface whose values are all ours already (an
agent restart) is not touched. Writes go through /proc/sys (one open + write each,
~0.02 ms here even with 10,000 interfaces). rtnetlink was measured and rejected:
RTM_SETLINK with IFLA_INET_CONF costs ~0.6 ms per interface that is up (it fires
link-change notifiers), and RTM_SETNEIGHTBL for `proxy_delay` scans the ARP
table's per-device parameter list, ~0.24 ms per message at 10,000 interfaces.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import subprocess
import sys
from typing import Any, Callable, Iterable

log = logging.getLogger(__name__)

PROC_SYS = "/proc/sys"

INTERFACE_V6 = (
    ("net/ipv6/conf/{if}/proxy_ndp", "1"),
    ("net/ipv6/conf/{if}/forwarding", "1"),
    ("net/ipv6/conf/{if}/accept_ra", "0"),
)
HOST_V4 = (("net/ipv4/ip_forward", "1"),)
HOST_V6 = (("net/ipv6/conf/all/forwarding", "1"),)


# name -> (IPV4_DEVCONF_* id, value) for workload interfaces
WORKLOAD_V4 = {"proxy_arp": (3, 1), "route_localnet": (26, 1), "forwarding": (1, 1)}


def _spawn_helper(args: list[str], lines: list[bytes], pass_fds: tuple[int, ...] = ()) -> subprocess.Popen:
    """Start a sysctl helper process reading `lines` (one interface each) on stdin from
    a memfd, so a large input never blocks on a pipe. Raises OSError."""
    fd = os.memfd_create("calico-sysctls")
    try:
        data = memoryview(b"\n".join(lines) + b"\n")
        while data:
            data = data[os.write(fd, data):]
        os.lseek(fd, 0, os.SEEK_SET)
        return subprocess.Popen(args, stdin=fd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                pass_fds=pass_fds)
    finally:
        os.close(fd)


class Sysctls:
    """Writes settings under `root` (a fake directory in unit tests)."""

    def __init__(self, root: str = PROC_SYS, ifindex_dir: str | None = None) -> None:
        self.root = root
        self.ipv6 = os.path.isdir(os.path.join(root, "net/ipv6"))
        # Where the by-name helper reads interface indexes (a file per name holding
        # the index) instead of asking the kernel: unit tests with a fake root only.
        self.ifindex_dir = ifindex_dir

    #: at least this many interfaces to configure: use the helper process
    HELPER_MIN = 256

    def configure_interfaces(self, items: Iterable[tuple[Any, bool]]) -> list[str]:
        """Configure workload interfaces: (routes.Link, needs IPv6) each. Writes only
        values that differ from the link's reported devconf. Returns the names that
        could not be configured (gone meanwhile, or refused)."""
        items = list(items)
        failed: list[str] = []
        for link, v6 in items:
            conf = link.v4conf
            right = {key for key, (idx, val) in WORKLOAD_V4.items()
                     if conf is not None and len(conf) >= idx and conf[idx - 1] == val}
            if len(right) == len(WORKLOAD_V4) and not v6:
                # Every visible value is already ours: an interface we configured
                # before (agent restart). proxy_delay is not visible in the link
                # listing; it was written together with these, so it is left alone.
                continue
            try:
                for key, (idx, val) in WORKLOAD_V4.items():
                    if key in right:
                        continue
                    if not self.write(f"net/ipv4/conf/{_checked(link.name)}/{key}", str(val),
                                      only_if_different=False):
                        raise FileNotFoundError(link.name)
                self.write(f"net/ipv4/neigh/{link.name}/proxy_delay", "0", only_if_different=False)
                if v6 and self.ipv6:
                    self._write_all(link.name, INTERFACE_V6)
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
            conf = link.v4conf
            writes = [f"net/ipv4/conf/{link.name}/{key}={val}"
                      for key, (idx, val) in WORKLOAD_V4.items()
                      if not (conf is not None and len(conf) >= idx and conf[idx - 1] == val)]
            if not writes and not v6:
                continue      # configured before (see configure_interfaces)
            try:
                _checked(link.name)
            except ValueError as e:
                log.warning("cannot configure %s: %s", link.name, e)
                failed.append(link.name)
                continue
            writes.append(f"net/ipv4/neigh/{link.name}/proxy_delay=0")
            if v6 and self.ipv6:
                writes += [rel.format(**{"if": link.name}) + f"={v}" for rel, v in INTERFACE_V6]
            lines.append("\t".join([link.name, *writes]).encode())
        if not lines:
            return PendingConfigure(failed=failed)
        try:
            proc = _spawn_helper([sys.executable, "-I", "-S", "-c", _HELPER, self.root], lines)
        except OSError as e:
            log.warning("cannot start the sysctl helper (%s); writing inline", e)
            return PendingConfigure(failed=self.configure_interfaces(items))
        return PendingConfigure(failed=failed, proc=proc, fallback=lambda: self.configure_interfaces(items))

    def start_configure_names(self, items: Iterable[tuple[str, bool]], links: bool = False) -> "PendingByName":
        """Start configuring interfaces known only by name, before the link listing
        (a cold start: the names come from the local endpoints): (name, needs IPv6)
        each, always in a helper process. It does what `configure_interfaces` does
        with a listed link: it reads the three IPv4 values first (what the listing's
        devconf would have said), leaves an interface whose values are all ours and
        that needs no IPv6 alone, and otherwise writes the values that differ,
        `proxy_delay` and the IPv6 ones. It reports, per name, the interface index
        it found before writing (0: no such interface) and the error if any;
        `finish_by_name` matches that with the link listing. Names that cannot be
        an interface (see `_sendable`) are not sent: no such interface exists.

        With `links`, the helper first looks every name up (index and up flag)
        and reports that before it writes anything: `PendingByName.links()` is the
        link listing of these interfaces, there ~0.3 s after the start, for the
        routes, without ~20,000 ioctls in the agent's own process."""
        lines: list[bytes] = []
        # one line per interface, from a template made once (~10,000 lines on the
        # critical path of a cold start)
        v4 = "\t".join([f"?net/ipv4/conf/{{0}}/{key}={val}" for key, (_idx, val) in WORKLOAD_V4.items()]
                       + ["net/ipv4/neigh/{0}/proxy_delay=0"])
        v6_tail = "\t".join(rel.replace("{if}", "{0}") + f"={v}" for rel, v in INTERFACE_V6)
        plain = "{0}\ts\t" + v4
        with_v6 = "{0}\t-\t" + v4 + ("\t" + v6_tail if self.ipv6 else "")
        for name, v6 in items:
            if not _sendable(name):
                continue
            lines.append((with_v6 if v6 else plain).format(name).encode())
        if not lines:
            return PendingByName(result={})
        lfd = os.memfd_create("calico-links") if links else -1
        args = [sys.executable, "-I", "-S", "-c", _BY_NAME_HELPER, self.root,
                self.ifindex_dir if self.ifindex_dir is not None else "-", str(lfd)]
        try:
            proc = _spawn_helper(args, lines, pass_fds=(lfd,) if links else ())
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

    def _write_all(self, ifname: str, settings: tuple[tuple[str, str], ...]) -> None:
        for rel, v in settings:
            self.write(rel.format(**{"if": _checked(ifname)}), v, only_if_different=False)

    def write(self, rel: str, value: str, *, only_if_different: bool = True) -> bool:
        """Write one value; True when it changed. A missing path (interface gone) is
        not an error: returns False."""
        path = os.path.join(self.root, rel)
        try:
            if only_if_different:
                with open(path, encoding="ascii") as f:
                    if f.read().strip() == value:
                        return False
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC)  # no Python file object: ~40 % cheaper
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


# The helper process: lines "ifname<TAB>relpath=value<TAB>..." on stdin; writes them
# under argv[1]; prints "ifname<TAB>errno<TAB>message" for each interface that failed
# (a missing path: the interface is gone).
_HELPER = r"""
import os, sys
root = os.fsencode(sys.argv[1]) + b"/"
out = []
for line in sys.stdin.buffer:
    parts = line.rstrip(b"\n").split(b"\t")
    try:
        for item in parts[1:]:
            rel, _, val = item.rpartition(b"=")
            fd = os.open(root + rel, os.O_WRONLY | os.O_TRUNC)
            try:
                os.write(fd, val)
            finally:
                os.close(fd)
    except OSError as e:
        out.append(b"%s\t%d\t%s" % (parts[0], e.errno or 0, os.fsencode(str(e.strerror))))
sys.stdout.buffer.write(b"\n".join(out))
"""


# The by-name helper: lines "ifname<TAB>s|-<TAB>item<TAB>..." on stdin, an item
# "relpath=value" (written) or "?relpath=value" (read first; written only if it
# differs). "s": if every "?" value is right already, nothing is written for that
# interface. Looks the interface index up first (argv[2]: a directory of fake index
# files, for tests, or "-"); prints "ifname<TAB>index<TAB>errno<TAB>message" for
# every line (index 0 and ENODEV: no such interface; errno 0: done). argv[3], if
# not "-1": a file descriptor; then every name is looked up (index and up flag)
# before anything is written, the lines "ifname<TAB>index<TAB>up" go to that
# descriptor and one byte "L" to stdout, which says they are there.
_BY_NAME_HELPER = r"""
import errno, os, sys
root = os.fsencode(sys.argv[1]) + b"/"
if sys.argv[2] != "-":
    index_dir = os.fsencode(sys.argv[2]) + b"/"
    def lookup(name):
        try:
            with open(index_dir + name, "rb") as f:
                index = int(f.read())
        except OSError:
            return 0, 0
        return index, 1
else:
    import fcntl, socket, struct
    _sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    _ifreq = struct.Struct("16si")
    _flags = struct.Struct("16sH")
    def lookup(name):
        # SIOCGIFINDEX and SIOCGIFFLAGS on one socket (if_nametoindex opens one per call)
        if len(name) >= 16:
            return 0, 0   # longer than IFNAMSIZ allows ("16s" would cut it short)
        try:
            index = _ifreq.unpack(fcntl.ioctl(_sock, 0x8933, _ifreq.pack(name, 0)))[1]
            flags = _flags.unpack(fcntl.ioctl(_sock, 0x8913, _flags.pack(name, 0)))[1]
        except OSError:
            return 0, 0
        return index, flags & 1
lines = [line.split(b"\t") for line in sys.stdin.buffer.read().split(b"\n") if line]
found = {}
links_fd = int(sys.argv[3])
if links_fd >= 0:
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
    index = (found.get(name) or lookup(name))[0]
    if not index:
        out.append(b"%s\t0\t%d\tno such interface" % (name, errno.ENODEV))
        continue
    fds = []
    try:
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
            if not (right and parts[1] == b"s"):
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
    except OSError as e:
        out.append(b"%s\t%d\t%d\t%s" % (name, index, e.errno or 0, os.fsencode(str(e.strerror))))
        continue
    out.append(b"%s\t%d\t0\t" % (name, index))
sys.stdout.buffer.write(b"\n".join(out))
"""


def _collect(proc: subprocess.Popen) -> str | None:
    """A sysctl helper's output once it has ended; None (logged) if it failed."""
    out, err = proc.communicate()
    if proc.returncode != 0:
        log.warning("sysctl helper failed (%s); writing inline", err.decode(errors="replace").strip()[-300:])
        return None
    return out.decode(errors="replace")


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
        result: dict[str, tuple[int, int, str]] = {}
        for line in out.splitlines():
            name, index, code, message = (line.split("\t", 3) + ["", "", ""])[:4]
            result[name] = (int(index or 0), int(code or 0), message)
        self._result = result
        return result


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
        for line in out.splitlines():
            name, _, rest = line.partition("\t")
            code, _, message = rest.partition("\t")
            if code not in (str(errno.ENOENT), str(errno.ENODEV)):
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
