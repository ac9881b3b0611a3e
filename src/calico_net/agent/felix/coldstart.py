"""The agent's cold start on a fresh host, and the link listing and interface
sysctls it shares with every later apply.

A fresh host is one without table inet calico at all. There the first apply runs
routes, nft and sysctls side by side instead of one after the other:

0. At the agent's start (`ColdStart.fresh_host`) the links are not listed: the
   route thread lists them later, while nft loads (here the listing would compete
   with the snapshot's parse for the GIL).
1. When the first snapshot is in (`ColdStart.on_first_snapshot`), with many local
   endpoints, the sysctl helper process starts on the endpoints' interface names
   (`Sysctls.start_configure_names`): it looks every name up (index, up flag),
   then writes, beside the daemon's dispatch and the policy render.
2. The first apply (`ColdStart.begin`) loads the placeholder table (new
   connections of workload interfaces dropped: "no policy yet") and starts a
   route thread, which waits.
3. The policy apply runs with `RouteThread.go` as its `while_loading` callback:
   the route thread is released as soon as an nft process loads the real table
   (the main thread then only waits for nft), else when the apply ends.
4. The route thread lists the links (only the endpoints' interfaces: the
   helper's look-ups when it made them, else `links_named`), starts the sysctls
   if the helper was not started in step 1, and writes the routes.
5. The main thread takes the listing and the sysctl work from the thread
   (`RouteThread.sysctls_started`): the helper's result is matched with the
   listing, an interface not there then (or re-created since) is configured as
   usual; then it takes the route result (`RouteThread.routes_written`).

Steps 2-5 are `ColdStart.first_apply`, which the daemon's first apply calls; every
other apply is `ordered_apply` (policy, sysctls, routes, in the main thread).

Policy goes before routes on every host: on a fresh host the placeholder table is
there before a route makes a workload reachable. On any other host (our table,
or another version of it: a restart, an upgrade) none of this happens: links are
listed at start, and routes follow the policy in the main thread. Cyclic GC is
held from the agent's start until the first apply is done (`GcPause`).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from .gcpause import GcPause
from .routes import RouteManager
from .rtnetlink import Link

if TYPE_CHECKING:
    from .backends import PendingLookups, PendingSysctls, PolicyBackend, RouteBackend, SysctlBackend
    from calico_net.agent.syncer import Resource

log = logging.getLogger(__name__)

__all__ = ["ApplyResult", "ColdStart", "LinkListing", "RouteThread", "local_interfaces",
           "ordered_apply", "start_sysctls", "finish_sysctls_by_name"]

#: cyclic GC stays off at most this long waiting for the first apply
GC_HOLD_MAX = 120.0


class LinkListing:
    """The link listing in the route manager: all links (`list_all`), or only the
    local endpoints' interfaces (`list_endpoints`, `set_found`: a fresh host's
    cold start, where the listing is on the critical path). After an
    endpoints-only listing (`partial`), an interface named by a new endpoint is
    looked up when it comes (`learn`), until the next full listing."""

    def __init__(self, nl: "RouteBackend", routes: RouteManager) -> None:
        self.nl = nl
        self.routes = routes
        self.listed = False    # the link listing is in the route manager
        self.partial = False   # ... only of the endpoints' interfaces

    def list_all(self) -> None:
        self.routes.set_links(self.nl.links())
        self.partial = False
        self.listed = True

    def list_endpoints(self) -> None:
        self.routes.set_links(self.nl.links_named(sorted(self.routes.if_endpoints)))
        self.partial = True
        self.listed = True

    def set_found(self, found: list[tuple[str, int, bool]]) -> None:
        """The endpoints' interfaces as the sysctl helper found them (name, index, up)."""
        self.routes.set_links([Link(index, name, up) for name, index, up in found])
        self.partial = True
        self.listed = True

    def learn(self, ifname: str) -> bool:
        """Look up one interface nobody had at the endpoints-only listing; False
        (logged) if that failed. (The lookup is the current state; link events
        queued before it are handled after it, each a link's state at its time,
        so the end state is current.)"""
        try:
            for link in self.nl.links_named([ifname]):
                self.routes.link_update(link, False)
        except OSError as e:
            log.warning("cannot look up interface %s (%s); at the next route refresh", ifname, e)
            return False
        return True


def start_sysctls(sysctls: "SysctlBackend", todo: list[Any], failed: set[str]) -> "PendingSysctls | None":
    """Start writing the sysctls of `todo`'s interfaces (a few inline, many by the
    helper process, beside the policy work); returns what is pending (collected
    before routes) or None. Names that failed at once are added to `failed`."""
    if not todo:
        return None
    try:
        return sysctls.start_configure(todo)
    except Exception as e:  # noqa: BLE001 - retried on the next new link
        log.warning("cannot configure workload interfaces: %s", e)
        failed.update(link.name for link, _ in todo)
    return None


def finish_sysctls_by_name(sysctls: "SysctlBackend", by_name: "PendingLookups", todo: list[Any],
                           failed: set[str]) -> "PendingSysctls | None":
    """Match the by-name helper's work with the link listing (`todo`): an
    interface counts as configured when the helper found it with the index the
    listing has; the others (not there then, or re-created since) are written
    now as usual. Returns what is still pending, like `start_sysctls`."""
    try:
        rest, bad = sysctls.finish_by_name(by_name.wait(), todo)
    except Exception as e:  # noqa: BLE001 - retried on the next new link
        log.warning("cannot configure workload interfaces: %s", e)
        failed.update(link.name for link, _ in todo)
        return None
    failed.update(bad)
    return start_sysctls(sysctls, rest, failed)


def sysctls_for_new_interfaces(routes: RouteManager, sysctls: "SysctlBackend",
                               by_name: "PendingLookups | None",
                               failed: set[str]) -> tuple[list[Any], "PendingSysctls | None"]:
    """The interfaces still to configure (from the link listing) and the sysctl work
    started for them: the by-name helper's, matched with the listing, when it ran."""
    todo = routes.interfaces_to_configure()
    if by_name is not None:
        return todo, finish_sysctls_by_name(sysctls, by_name, todo, failed)
    return todo, start_sysctls(sysctls, todo, failed)


def collect_sysctls(routes: RouteManager, pending: "PendingSysctls | None", todo: list[Any],
                    failed: set[str]) -> None:
    """Wait for the sysctl work started for `todo` and mark each interface that did
    not fail as configured (a failed one is retried on the next new link)."""
    if pending is not None:
        try:
            failed.update(pending.wait())
        except Exception as e:  # noqa: BLE001 - retried on the next new link
            log.warning("cannot configure workload interfaces: %s", e)
            failed.update(link.name for link, _ in todo)
    for link, _ in todo:
        if link.name not in failed:
            routes.mark_configured(link.name)


@dataclass
class ApplyResult:
    """One apply: whether it all went in, and where its time went (seconds)."""

    ok: bool
    policy_s: float
    sysctl_s: float       # the sysctl work the main thread started and waited for
    routes_s: float
    n_sysctls: int        # interfaces configured


def _apply_policy(policy: "PolicyBackend", while_loading: Any = None) -> bool:
    try:
        if while_loading is None:
            policy.apply()
        else:
            policy.apply(while_loading=while_loading)
    except Exception:  # noqa: BLE001 - retried; the agent keeps running
        log.exception("applying policy failed; retrying")
        return False
    return True


def _routes_done(write: Any) -> bool:
    try:
        stats = write()
        if stats.failed:
            log.info("routes: %d added, %d removed, %d failed", stats.added, stats.removed, stats.failed)
    except OSError:
        log.exception("programming routes failed; retrying")
        return False
    return True


def ordered_apply(policy: "PolicyBackend", links: LinkListing, sysctls: "SysctlBackend",
                  by_name: "PendingLookups | None") -> ApplyResult:
    """Every apply but a fresh host's first: the links are listed (the caller saw
    to it), sysctls of new interfaces start, the policy goes in, the sysctls are
    collected, then the routes. (`by_name`: a helper started on the snapshot's
    interface names whose work is matched with the listing.)"""
    routes = links.routes
    t0 = time.monotonic()
    failed: set[str] = set()
    todo, pending = sysctls_for_new_interfaces(routes, sysctls, by_name, failed)
    t1 = time.monotonic()
    ok = _apply_policy(policy)
    t2 = time.monotonic()
    collect_sysctls(routes, pending, todo, failed)
    t2s = time.monotonic()
    ok &= _routes_done(routes.apply)
    t3 = time.monotonic()
    return ApplyResult(ok, t2 - t1, (t1 - t0) + (t2s - t2), t3 - t2s, len(todo))


_HOST_SUFFIXES = ("/32", "/128")


def local_interfaces(resources: "dict[str, Resource]", node: str,
                     prefixes: tuple[str, ...] = ("cali",)) -> list[tuple[str, bool]]:
    """(interface name, has an IPv6 network) of this node's WorkloadEndpoints whose
    interface starts with one of `prefixes` (no other interface is ever
    configured) and whose ipNetworks all look like host addresses, sorted. (A
    string test only, on the cold start's critical path: an endpoint left out here
    is configured after the link listing if the route manager accepts it.)"""
    out: dict[str, bool] = {}
    # a held endpoint (`Resource.raw`) whose JSON does not hold the node's name as
    # a JSON string is another node's: it is not decoded (at worst, a name written
    # with escapes, the endpoint is configured after the link listing)
    needle = orjson.dumps(node)
    for res in resources.values():
        if res.kind != "WorkloadEndpoint":
            continue
        member = res.member
        if member is not None and member.node != node:
            continue        # another node's (perhaps held as its record alone)
        raw = res.raw
        if raw is not None and needle not in raw:
            continue
        spec = res.doc.get("spec") or {}
        name = spec.get("interfaceName")
        if spec.get("node") != node or not name or not isinstance(name, str):
            continue
        if not name.startswith(prefixes):
            continue
        v6 = False
        for n in spec.get("ipNetworks") or ():
            if not isinstance(n, str) or not n.endswith(_HOST_SUFFIXES):
                break
            if ":" in n:
                v6 = True
        else:
            out[name] = out.get(name, False) or v6
    return sorted(out.items())


class RouteThread(threading.Thread):
    """`RouteManager.apply()` in a thread (the first apply on a fresh host),
    released by `go`; with `list_links`, the link listing and the start of the
    sysctls first (unless `by_name`, the helper already started on the
    endpoints' interface names: then the listing is the helper's look-ups when it
    made them, else `links_named`, and `sysctls()` matches the helper's result
    with the listing)."""

    def __init__(self, links: LinkListing, sysctls: "SysctlBackend", list_links: bool,
                 by_name: "PendingLookups | None") -> None:
        super().__init__(name="early-routes", daemon=True)
        self.links = links
        self.routes = links.routes
        self.sysctls = sysctls
        self.list_links = list_links
        self.by_name = by_name
        self.go = threading.Event()       # set when nft is loading (or the apply ended)
        self.stats: Any = None
        self.error: BaseException | None = None
        self.todo: list[Any] = []
        self.pending: "PendingSysctls | None" = None
        self.failed: set[str] = set()

    def run(self) -> None:
        try:
            self.go.wait()
            if self.list_links:
                # The sysctl helper looked the endpoints' interfaces up before its
                # writes: no ioctl per interface here, each of which would give up
                # the GIL and wait to get it back while the main thread encodes
                # the verdict map elements.
                found = self.by_name.links() if self.by_name is not None else None
                if found is not None:
                    self.links.set_found(found)
                else:
                    self.links.list_endpoints()
                self.todo = self.routes.interfaces_to_configure()
                if self.by_name is None:
                    self.pending = start_sysctls(self.sysctls, self.todo, self.failed)
            self.stats = self.routes.apply()
        except BaseException as e:  # noqa: BLE001 - handed to the main loop
            self.error = e

    def sysctls_started(self, failed: set[str]) -> tuple[list[Any], "PendingSysctls | None"]:
        """After `go`: the interfaces to configure (from this thread's listing) and
        what is pending for them; failed names are added to `failed`."""
        self.join()        # its listing and sysctl start are needed
        failed |= self.failed
        pending = self.pending
        if self.by_name is not None:
            pending = finish_sysctls_by_name(self.sysctls, self.by_name, self.todo, failed)
        return self.todo, pending

    def routes_written(self) -> Any:
        """The routes' result, once the thread is done; what is still dirty then
        is written too (link events cannot arrive meanwhile, but be exact)."""
        self.join()
        if self.error is not None:
            raise self.error
        if self.routes.dirty:
            return self.routes.apply()
        return self.stats


class ColdStart:
    """The fresh-host sequence of the module docstring, for one daemon.

    `lookups`: the sysctl helper's interface look-ups may stand for the link
    listing (the routes go to this namespace's kernel, where the helper looks)."""

    def __init__(self, policy: "PolicyBackend", links: LinkListing, sysctls: "SysctlBackend",
                 lookups: bool) -> None:
        self.policy = policy
        self.links = links
        self.routes = links.routes
        self.sysctls = sysctls
        self.lookups = lookups
        self.gc = GcPause()
        self._by_name: "PendingLookups | None" = None   # started, not yet collected

    def fresh_host(self) -> bool:
        """True if the first apply will take the placeholder path (no table inet
        calico at all); False on any doubt."""
        try:
            return not self.policy.table_exists()
        except Exception:  # noqa: BLE001 - then the usual order
            return False

    # -- GC ------------------------------------------------------------------

    def hold_gc(self) -> None:
        """No cyclic GC until the first apply is done (or GC_HOLD_MAX has passed:
        the datastore may be unreachable)."""
        self.gc.hold(GC_HOLD_MAX)

    def tick(self, now: float) -> None:
        if self.gc.expired(now):
            self.gc.release()

    def applied(self) -> None:
        """The first apply is done: freeze what was built, GC on again."""
        self.gc.release(freeze=True)

    def stopped(self) -> None:
        self.gc.release()

    # -- the sequence --------------------------------------------------------

    def on_first_snapshot(self, resources: "dict[str, Resource]", node: str,
                          prefixes: tuple[str, ...]) -> None:
        """Step 1: on a fresh host, the sysctl helper starts on the snapshot's
        interface names now."""
        if self._by_name is None and self.fresh_host():
            self._by_name = self.start_by_name(local_interfaces(resources, node, prefixes))

    def take_by_name(self) -> "PendingLookups | None":
        """The helper started on names (step 1), to be collected by the caller."""
        by_name, self._by_name = self._by_name, None
        return by_name

    def first_apply(self) -> ApplyResult | None:
        """Steps 2-5 on a fresh host: the placeholder, the policy apply with the
        route thread released while nft loads, the sysctls, the routes. None when
        this is not a fresh host (then `ordered_apply` is the first apply)."""
        early = self.begin()
        if early is None:
            return None
        t0 = time.monotonic()
        todo: list[Any] = []
        failed: set[str] = set()
        pending = None
        if not early.list_links:
            # the links were listed already: the sysctls start here, as usual
            todo, pending = sysctls_for_new_interfaces(self.routes, self.sysctls,
                                                       self.take_by_name(), failed)
        t1 = time.monotonic()
        ok = _apply_policy(self.policy, while_loading=early.go.set)
        t2 = time.monotonic()
        early.go.set()
        if early.list_links:
            todo, pending = early.sysctls_started(failed)
        collect_sysctls(self.routes, pending, todo, failed)
        t2s = time.monotonic()
        ok &= _routes_done(early.routes_written)
        t3 = time.monotonic()
        return ApplyResult(ok, t2 - t1, (t1 - t0) + (t2s - t2), t3 - t2s, len(todo))

    def begin(self) -> RouteThread | None:
        """Step 2, at the first apply: if table inet calico does not exist at all,
        load the placeholder table and start the route thread (waiting for its
        `go`). Otherwise None: routes follow the policy as usual."""
        if self.routes.synced:
            return None
        try:
            if self.policy.table_exists():
                return None
            self.policy.load_placeholder()
        except Exception as e:  # noqa: BLE001 - the usual order still works
            log.warning("cannot load the placeholder table (%s); routes after the policy", e)
            return None
        by_name = None
        if not self.links.listed:
            by_name = self.take_by_name()
            if by_name is None:
                by_name = self.start_by_name()
        t = RouteThread(self.links, self.sysctls, list_links=not self.links.listed, by_name=by_name)
        t.start()
        return t

    def start_by_name(self, items: list[tuple[str, bool]] | None = None) -> "PendingLookups | None":
        """Start the sysctl helper on the local endpoints' interface names
        (`items`: (name, has IPv6); default: the route manager's), so its writes
        run beside the policy's index and render instead of after the listing.
        Only for many interfaces (else None: the usual path after the listing)."""
        if items is None:
            v6 = self.routes.if_v6
            items = [(name, name in v6) for name in sorted(self.routes.if_endpoints)]
        if len(items) < self.sysctls.HELPER_MIN:
            return None
        try:
            if self.lookups:
                # it looks the interfaces up for the route thread first
                return self.sysctls.start_configure_names(items, links=True)
            return self.sysctls.start_configure_names(items)
        except Exception as e:  # noqa: BLE001 - the usual path after the listing
            log.warning("cannot start the sysctl helper (%s); after the link listing", e)
            return None
