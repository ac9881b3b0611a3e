"""The agent's main loop: datastore events in, batched dataplane transactions out.

One thread owns all state; everything else talks to it through one queue:

    Syncer thread ──(snapshot | update | status)──┐
    LinkWatcher thread ──(link event)─────────────┤
    TamperWatcher thread ──(tamper)───────────────┤
    AffinityWatcher thread ──(encap event)────────┼──► queue ──► main loop
    stop() / signals ──(stop)─────────────────────┘

The main loop takes an event, then keeps taking events while they keep coming —
until the queue has been quiet for `quiet` or `coalesce` has passed since the
first — so a burst (a manifest applied, CNI adds in a row, a resync) becomes one
batch while a lone change waits only briefly. Under sustained change (the last
batch held more than one change and its apply ended less than `coalesce` before
this batch's first event) a batch takes a whole `sustained` window (50 ms)
instead: a steady stream of changes becomes
one apply per window rather than one per gap in the stream, each apply's fixed
cost (the index, the nft transaction and its notifications, the routes, the
overlay's step) paid at most 20 times a second. Then it applies: sysctls of new
workload interfaces (many: in a helper process, beside the policy work), policy
(`PolicyDataplane.apply()`: one nft transaction of what changed), routes (only
dirty ones). Nothing is written before the first complete snapshot is in. On a
host without our table the first apply is the cold start of `felix.coldstart`
(placeholder table, routes and nft in parallel, sysctls beside them).

A later snapshot is a *resync*: it is diffed against the cache of resources the
daemon holds, and only differences are dispatched, so an outage followed by a
resync deletes nothing that still exists. Periodic refreshes (`RouteRefreshInterval`,
`IptablesRefreshInterval`, Calico's names; 0 disables) read the kernel back and
repair drift; they are the backstop of the tamper watch (`felix.tamper`), which hears
another process delete a workload route or change table inet calico and has it
repaired at once: the route re-added by the next apply, the nft refresh (check,
then rewrite) brought forward. FelixConfiguration `default` / `node.<NODENAME>` changes are applied
live where possible (log level, failsafe ports, refresh intervals, endpoint-to-host
action, the overlay's parameters); listener ports need a restart.

The overlay (IP-in-IP / VXLAN, `encap.controller.EncapController`, when one is
given) gets IPPool, Node and FelixConfiguration changes and the affinity watcher's
events forwarded; its apply steps run around the policy and route writes, and a
failure there is logged, counted and retried without holding those up.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable

from calico_net.agent.config import Config
from calico_net.agent.encap.controller import EncapController
from calico_net.agent.felix.backends import PolicyBackend, RouteBackend, SysctlBackend
from calico_net.agent.felix.coldstart import ApplyResult, ColdStart, LinkListing, ordered_apply
from calico_net.agent.felix.nft import NftRunner
from calico_net.agent.felix.nft_netlink import OwnGenerations
from calico_net.agent.felix.nftstr import NftStringError, ifname_text
from calico_net.agent.felix.policy import FelixSettings, PolicyDataplane
from calico_net.agent.felix.records import Member
from calico_net.agent.felix.routes import RouteManager, host_routes
from calico_net.agent.felix.rtnetlink import Link, LinkWatcher, Netlink
from calico_net.agent.felix.sysctl import Sysctls
from calico_net.agent.felix.tamper import Tamper, TamperWatcher
from calico_net.agent.health import HealthState
from calico_net.agent.metrics import Metrics
from calico_net.agent.syncer import Resource, Syncer

log = logging.getLogger(__name__)

# What PolicyDataplane.update() takes; everything else in the snapshot is skipped here.
DATAPLANE_KINDS = frozenset({"WorkloadEndpoint", "HostEndpoint", "Profile", "NetworkPolicy",
                             "GlobalNetworkPolicy", "NetworkSet", "GlobalNetworkSet", "IPPool", "Tier"})

POLICY_KINDS = ("NetworkPolicy", "GlobalNetworkPolicy")
IDLE_TICK = 1.0          # the loop wakes at least this often (liveness, timers)
RETRY_AFTER_ERROR = 1.0  # a failed apply is retried after this long


def felix_settings(cfg: Config, settings_cls: Any, prefixes: tuple[str, ...] | None = None) -> Any:
    """Build the policy dataplane's settings object (`settings_cls`, by default
    `FelixSettings`) from the resolved config. `prefixes`: the interface prefixes
    in use (the daemon's, fixed once the first snapshot is in), else the config's."""
    def pairs(ports: Any) -> list[tuple]:
        # The policy dataplane takes (protocol, port), or (protocol, port, net) for
        # an entry limited to a network.
        return [(p.protocol, p.port, p.net) if p.net else (p.protocol, p.port) for p in ports]

    return settings_cls(
        failsafe_inbound=pairs(cfg.values["FailsafeInboundHostPorts"]),
        failsafe_outbound=pairs(cfg.values["FailsafeOutboundHostPorts"]),
        default_endpoint_to_host_action=cfg.values["DefaultEndpointToHostAction"],
        interface_prefixes=tuple(prefixes if prefixes is not None else cfg.values["InterfacePrefix"]),
        allow_ipip_from_workloads=cfg.values["AllowIPIPPacketsFromWorkloads"],
        allow_vxlan_from_workloads=cfg.values["AllowVXLANPacketsFromWorkloads"],
        nat_outgoing_address=cfg.values["NATOutgoingAddress"],
        nat_port_range=cfg.values["NATPortRange"],
        log_prefix=cfg.values["LogPrefix"],
        drop_invalid=not cfg.values["DisableConntrackInvalidCheck"],
        filter_deny_action=cfg.values["NftablesFilterDenyAction"],
    )


class Daemon:
    """The main loop of the module docstring. `policy`, `route_backend` and
    `sysctls` default to the real dataplane (`PolicyDataplane`, `Netlink`,
    `Sysctls`); tests pass stand-ins implementing the same Protocols."""

    def __init__(
        self,
        node_name: str,
        config: Config,
        client: Any,
        *,
        policy: PolicyBackend | None = None,
        settings_cls: Any = None,
        route_backend: RouteBackend | None = None,
        sysctls: SysctlBackend | None = None,
        watch_links: bool = True,
        watch_tamper: bool = True,
        metrics: Metrics | None = None,
        health: HealthState | None = None,
        coalesce: float = 0.020,
        quiet: float = 0.003,
        sustained: float = 0.050,
        syncer_factory: Callable[..., Syncer] = Syncer,
        encap: EncapController | None = None,
    ) -> None:
        self.node_name = node_name
        self.config = config
        self.metrics = metrics or Metrics()
        self._config_errors = 0
        self._count_config_errors()
        #: workload interface prefixes: taken from the config until the first
        #: snapshot's FelixConfigurations are in, then fixed (a change needs a restart)
        self.iface_prefixes: tuple[str, ...] = tuple(config.values["InterfacePrefix"])
        self._prefixes_fixed = False
        config.until_start.add("InterfacePrefix")
        #: endpoints refused (key → reason), each logged and counted once per reason
        self.refused: dict[str, str] = {}
        self.health = health or HealthState()
        self.coalesce = coalesce
        self.quiet = quiet
        self.sustained = max(sustained, coalesce)
        self._last_apply_end = float("-inf")
        self._last_batch = 0              # events in the last batch
        #: the generations our own nft writes commit (None: nftables is not watched,
        #: as with a stand-in policy backend)
        self.generations: OwnGenerations | None = None
        if policy is None:
            settings_cls = settings_cls or FelixSettings
            if watch_tamper:
                self.generations = OwnGenerations()
            policy = PolicyDataplane(node_name, felix_settings(config, settings_cls, self.iface_prefixes),
                                     nft=NftRunner(generations=self.generations))
        self.settings_cls = settings_cls
        self.policy: PolicyBackend = policy
        #: port ids of our route sockets (None: routes go to a stand-in, not watched)
        self._route_ports: frozenset[int] | None = None
        if route_backend is None:
            own_nl = Netlink()
            self._route_ports = frozenset({own_nl.port()})
            route_backend = own_nl
        self.nl: RouteBackend = route_backend
        self.routes = RouteManager(self.nl, iface_prefixes=self.iface_prefixes)
        self.sysctls: SysctlBackend = sysctls if sysctls is not None else Sysctls()
        self.links = LinkListing(self.nl, self.routes)
        # the sysctl helper's interface look-ups stand for a link listing only
        # when the routes go to this namespace's kernel (our own Netlink)
        self.coldstart = ColdStart(self.policy, self.links, self.sysctls, lookups=route_backend is None)
        self.watch_links = watch_links
        self.link_watcher: LinkWatcher | None = None
        self.watch_tamper = watch_tamper and self._route_ports is not None
        self.tamper_watcher: TamperWatcher | None = None
        self.tampers = 0             # tamper reports handled
        self.syncer = syncer_factory(client, self)
        self.events: queue.Queue[tuple] = queue.Queue()
        self.cache: dict[str, Resource] = {}
        self.policy_count = 0
        self.synced = False          # first snapshot received
        self.applied = False         # first snapshot applied
        self.retry_at: float | None = None
        now = time.monotonic()
        self.next_route_refresh = now + self._interval("RouteRefreshInterval")
        self.next_nft_refresh = now + self._interval("IptablesRefreshInterval")
        self._stop = threading.Event()
        self.apply_count = 0
        #: the overlay (None: not run, as in tests of the rest)
        self.encap = encap
        if encap is not None:
            encap.attach(self.policy, self.events.put)

    @property
    def links_partial(self) -> bool:
        """The link listing is only of the endpoints' interfaces (a fresh host's cold start)."""
        return self.links.partial

    # --- Sink interface (called from the syncer thread) ---
    def known(self, key: str) -> Resource | None:
        """What the daemon holds for `key` (the syncer reuses it on a resync: the
        datastore's documents are held here, once)."""
        return self.cache.get(key)

    def on_snapshot(self, resources: dict[str, Resource], revision: int) -> None:
        # a bad key that is gone (or good again) leaves the syncer's bad set silently
        self.metrics.skipped.set(len(self.syncer.bad))
        # read here, in the syncer's thread, as it is for this snapshot
        self.events.put(("snapshot", resources, revision, getattr(self.syncer, "history_reset", False)))

    def on_update(self, key: str, resource: Resource | None) -> None:
        self.metrics.skipped.set(len(self.syncer.bad))
        self.events.put(("update", key, resource))

    def on_status(self, connected: bool, reason: str) -> None:
        # Health and the gauge answer at once, even while the loop is busy.
        self.health.set_datastore(connected, reason)
        self.metrics.datastore_connected.set(1 if connected else 0)
        if not connected:
            self.metrics.errors.inc()

    def on_bad_object(self, key: str, reason: str, new: bool) -> None:
        if new:
            self.metrics.skipped_total.inc()
        self.metrics.skipped.set(len(self.syncer.bad))

    def _on_link(self, link: Link, deleted: bool) -> None:
        self.events.put(("link", link, deleted))

    def _on_tamper(self, tamper: Tamper) -> None:
        self.events.put(("tamper", tamper))

    # --- lifecycle ---
    def start(self) -> None:
        """Start the helpers (not the loop): datastore, host sysctls, links."""
        # The snapshot (network I/O and etcd's own work, in the syncer thread) is
        # started first: the host sysctls and the link listing overlap it. Nothing
        # from it is handled before the listing is in (the loop runs after start()).
        self.syncer.start()
        try:
            # ip_forward=1 on a host where it was 0 walks every device under RTNL (a
            # trylock: the write spins while another process holds RTNL)
            self.sysctls.configure_host()
        except OSError as e:
            log.error("cannot set host sysctls: %s", e)
        if self.watch_links:
            # Listen first, then list, so no link created in between is missed.
            self.link_watcher = LinkWatcher(self._on_link)
            self.link_watcher.start()
        if self.watch_tamper and self._route_ports is not None:
            # before the first apply reads or writes anything: no change is missed
            try:
                self.tamper_watcher = TamperWatcher(self._on_tamper, self._route_ports, self.generations)
                self.tamper_watcher.start()
            except OSError as e:
                log.error("cannot watch for tampering (the refreshes still repair): %s", e)
        if not self.coldstart.fresh_host():
            self.links.list_all()
        # else: on a fresh host the first apply lists the links in its route thread
        # while nft loads the table (the main thread only waits then): here the
        # listing would compete with the snapshot's parse for the GIL. Link events
        # that come meanwhile queue up and are handled after that listing, in order.

    def stop(self) -> None:
        self._stop.set()
        self.events.put(("stop",))

    def shutdown(self) -> None:
        """Stop the helpers. The dataplane is left as it is: a restart must not
        disturb workloads."""
        self.syncer.stop()
        if self.link_watcher is not None:
            self.link_watcher.stop()
        if self.tamper_watcher is not None:
            self.tamper_watcher.stop()
        if self.encap is not None:
            self.encap.stop()

    def run(self) -> None:
        self.coldstart.hold_gc()
        self.start()
        try:
            while not self._stop.is_set():
                self.loop_once()
        finally:
            self.coldstart.stopped()
            self.shutdown()

    # --- the loop ---
    def _interval(self, name: str) -> float:
        v = float(self.config.values[name])
        return v if v > 0 else float("inf")

    def loop_once(self, max_wait: float = IDLE_TICK) -> None:
        self.health.tick()
        now = time.monotonic()
        self.coldstart.tick(now)
        deadline = min(self.next_route_refresh, self.next_nft_refresh, now + max_wait)
        if self.retry_at is not None:
            deadline = min(deadline, self.retry_at)
        try:
            ev = self.events.get(timeout=max(0.0, deadline - now))
        except queue.Empty:
            ev = None
        dirty = False
        if ev is not None:
            dirty |= self._handle(ev)
            taken = 1
            first = time.monotonic()
            window_end = first + self.coalesce
            # sustained change (the last batch was more than one change and this one
            # follows it at once): wait out a whole window, not just a gap in the
            # stream (in one sleep, then take what came: not one wake-up per event).
            # Changes made one at a time, each after the last was applied, are not.
            quiet = self.quiet
            if first - self._last_apply_end < self.coalesce and self._last_batch > 1:
                window_end = first + self.sustained
                quiet = self.sustained
                self._stop.wait(max(0.0, window_end - time.monotonic()))
            while not self._stop.is_set():
                left = min(window_end - time.monotonic(), quiet)
                try:
                    ev = self.events.get(timeout=left) if left > 0 else self.events.get_nowait()
                except queue.Empty:
                    break
                dirty |= self._handle(ev)
                taken += 1
            self._last_batch = taken
        if self._stop.is_set():
            return
        if self.synced and (dirty or (self.retry_at is not None and time.monotonic() >= self.retry_at)
                            or not self.applied):
            self.apply()
        if self.applied:
            self._maybe_refresh()

    def _handle(self, ev: tuple) -> bool:
        """Process one event; True if the dataplane may need an apply. An exception
        here is a bug, but one event must not take the agent down: it is logged,
        counted, and the next refresh/resync puts things right."""
        try:
            return self._handle_event(ev)
        except Exception:  # noqa: BLE001
            log.exception("failed to process %s event", ev[0])
            self.metrics.errors.inc()
            return True

    def _handle_event(self, ev: tuple) -> bool:
        what = ev[0]
        if what == "update":
            _, key, res = ev
            return self._dispatch(key, res)
        if what == "snapshot":
            _, resources, revision, history_reset = ev
            self._resync(resources, revision, history_reset)
            return True
        if what == "tamper":
            return self._tamper(ev[1])
        if what == "encap":
            return self.encap is not None and self.encap.on_event(ev)
        if what == "link":
            _, link, deleted = ev
            if link.index == 0:  # lost events: list them all again
                self.links.list_all()
                if self.encap is not None:
                    self.encap.refresh()
            else:
                self.routes.link_update(link, deleted)
                if self.encap is not None:
                    self.encap.link_event(link.name, link.up, deleted)
            return True
        return False

    def _tamper(self, t: Tamper) -> bool:
        """Another process deleted routes or changed our table: repair now rather
        than at the next refresh. True if routes must be written."""
        self.tampers += 1
        now = time.monotonic()
        n = self.routes.forget(t.routes) if t.routes else 0
        if n:
            log.warning("tamper: %d workload routes deleted by another process; re-adding", n)
            self.metrics.route_repairs.inc(n)
        if t.routes_lost:
            log.warning("tamper watch: route events lost; re-reading the routes")
            self.next_route_refresh = now
        if t.nft:
            log.warning("tamper: %s; checking it now", t.nft)
            self.next_nft_refresh = now
        return n > 0

    def _resync(self, resources: dict[str, Resource], revision: int, history_reset: bool = False) -> None:
        """Take a snapshot: dispatch what changed. A resource held at the same mod
        revision is the same value, except after etcd's history restarted
        (`history_reset`: the revision went back), when only equal contents count."""
        first = not self.synced
        if first:
            # The first snapshot's FelixConfigurations come first: the interface
            # prefixes they give decide which endpoints are programmed at all.
            for key, res in resources.items():
                if res.kind == "FelixConfiguration":
                    self._dispatch(key, res)
            self._fix_prefixes()
        if first and not self.applied:
            self.coldstart.on_first_snapshot(resources, self.node_name, self.iface_prefixes)
        if not first:
            self.metrics.resyncs.inc()
        changed = 0
        for key in [k for k in self.cache if k not in resources]:
            self._dispatch(key, None)
            changed += 1
        for key, res in resources.items():
            old = self.cache.get(key)
            if old is not None and ((old.revision == res.revision and not history_reset) or
                                    (old.member == res.member and old.doc == res.doc)):
                self.cache[key] = res
                continue
            self._dispatch(key, res)
            changed += 1
        self.synced = True
        log.info("%s at revision %d: %d resources, %d changed",
                 "snapshot" if first else "resync", revision, len(resources), changed)

    def _dispatch(self, key: str, res: Resource | None) -> bool:
        old = self.cache.get(key)
        if res is None:
            if old is None:
                return False
            del self.cache[key]
        else:
            self.cache[key] = res
        cur = res or old
        assert cur is not None
        kind = cur.kind
        if res is not None and res.member is not None and res.member.node != self.node_name:
            return self._remote_endpoint(key, res, res.member)
        if kind in POLICY_KINDS:
            self.policy_count += (res is not None) - (old is not None)
        if kind == "FelixConfiguration":
            self._felix_configuration(cur.name, res.doc.get("spec") if res is not None else None)
            return True
        doc = res.doc if res is not None else None
        if self.encap is not None and kind in ("IPPool", "Node", "WorkloadEndpoint"):
            # endpoints by key (names repeat across namespaces): borrowed addresses' routes
            self.encap.resource(kind, key if kind == "WorkloadEndpoint" else cur.name,
                                (doc.get("spec") or {}) if doc is not None else None)
        if kind == "WorkloadEndpoint":
            spec = (doc.get("spec") or {}) if doc is not None else {}
            problem = None
            if doc is not None and spec.get("node") == self.node_name:
                ifname = spec.get("interfaceName") or None
                # refuses (and forgets) an endpoint outside the interface prefixes
                # or with an address wider than a host address
                problem = self.routes.set_endpoint(key, ifname, spec.get("ipNetworks") or [])
                if problem is None and self.links.partial and ifname and ifname not in self.routes.links:
                    if not self.links.learn(ifname):
                        self.next_route_refresh = min(self.next_route_refresh,
                                                      time.monotonic() + RETRY_AFTER_ERROR)
            else:
                self.routes.remove_endpoint(key)
                if doc is not None:
                    # a remote endpoint's addresses go into selector sets here
                    problem = host_routes(spec.get("ipNetworks") or ())[1]
            doc = self._endpoint_verdict(key, kind, doc, problem)
        elif kind == "HostEndpoint":
            doc = self._endpoint_verdict(key, kind, doc, _host_endpoint_problem(doc))
        if kind not in DATAPLANE_KINDS:
            return True  # Nodes, BGP resources: confd's business, not the dataplane's
        try:
            self.policy.update(kind, cur.name, cur.namespace, doc)
        except Exception:  # noqa: BLE001 - one bad object must not stop the agent
            log.exception("policy dataplane rejected %s %s", kind, key)
            self.metrics.errors.inc()
        return True

    def _remote_endpoint(self, key: str, res: Resource, member: Member) -> bool:
        """A remote WorkloadEndpoint that came with its policy record (the syncer made
        it from a document whose addresses are all host addresses): the same steps
        as the general path in `_dispatch`, from the record, without decoding it."""
        if self.encap is not None:
            self.encap.remote_endpoint(key, member.node, member.addrs4, member.addrs6)
        self.routes.remove_endpoint(key)        # it may have been local before
        self._endpoint_verdict(key, res.kind, res, None)
        self.policy.update_member(member)
        return True

    def _endpoint_verdict(self, key: str, kind: str, doc: dict[str, Any] | None,
                          problem: str | None) -> dict[str, Any] | None:
        """`doc`, or None (the endpoint is treated as absent by the policy dataplane)
        if `problem`: then logged and counted once per endpoint and reason."""
        if doc is None or problem is None:
            if self.refused and self.refused.pop(key, None) is not None:
                self.metrics.refused_endpoints.set(len(self.refused))
            return doc
        if self.refused.get(key) != problem:
            self.refused[key] = problem
            log.error("refusing %s %s: %s; nothing is programmed for it", kind, key, problem)
            self.metrics.refused_endpoints_total.inc()
            self.metrics.refused_endpoints.set(len(self.refused))
        return None

    def _fix_prefixes(self) -> None:
        """The first snapshot's FelixConfigurations are in: the interface prefixes
        are fixed from now on (a later change is logged as needing a restart)."""
        self._prefixes_fixed = True
        self.config.until_start.discard("InterfacePrefix")
        log.info("workload interface prefixes: %s", ",".join(self.iface_prefixes))

    def _count_config_errors(self) -> None:
        n = self.config.bad_total
        if n > self._config_errors:
            self.metrics.config_errors.inc(n - self._config_errors)
            self._config_errors = n

    def _felix_configuration(self, name: str, spec: dict[str, Any] | None) -> None:
        changed = self.config.set_felix_configuration(name, spec)
        self._count_config_errors()
        if "InterfacePrefix" in changed and not self._prefixes_fixed:
            self.iface_prefixes = tuple(self.config.values["InterfacePrefix"])
            self.routes.iface_prefixes = self.iface_prefixes
        if not changed:
            return
        if "LogSeverityScreen" in changed:
            logging.getLogger().setLevel(self.config.log_level)
        if self.encap is not None:
            self.encap.settings_changed(changed)
        now = time.monotonic()
        if "RouteRefreshInterval" in changed:
            self.next_route_refresh = now + self._interval("RouteRefreshInterval")
        if "IptablesRefreshInterval" in changed:
            self.next_nft_refresh = now + self._interval("IptablesRefreshInterval")
        if self.settings_cls is not None:
            try:
                self.policy.set_settings(felix_settings(self.config, self.settings_cls, self.iface_prefixes))
            except Exception:  # noqa: BLE001
                log.exception("cannot apply new Felix settings")
                self.metrics.errors.inc()

    def apply(self) -> None:
        """Write everything that changed: interface sysctls, policy, routes.

        Policy goes before routes: a route makes a workload reachable only once
        its policy is in. The first apply on a host without our table is the cold
        start (`ColdStart.first_apply`); every other one is `ordered_apply`."""
        t0 = time.monotonic()
        result = self.coldstart.first_apply() if not self.applied else None
        if result is None:
            if not self.links.listed:
                try:
                    self.links.list_all()
                except OSError:
                    log.exception("cannot list links; retrying in %.0f s", RETRY_AFTER_ERROR)
                    self.metrics.errors.inc()
                    self.retry_at = time.monotonic() + RETRY_AFTER_ERROR
                    return
            encap_ok = self._encap_step("before_policy")
            result = ordered_apply(self.policy, self.links, self.sysctls, self.coldstart.take_by_name())
            encap_ok &= self._encap_step("after_routes")
        else:
            # the cold start wrote policy and routes; the overlay follows, and its
            # allowed hosts go into the policy at the next apply, at once
            hosts = self.encap.hosts if self.encap is not None else None
            encap_ok = self._encap_step("before_policy") and self._encap_step("after_routes")
            if self.encap is not None and self.encap.hosts != hosts:
                self.events.put(("encap", "hosts"))
        if not encap_ok:
            result.ok = False
        self._applied(result, time.monotonic() - t0)
        self._last_apply_end = time.monotonic()

    def _encap_step(self, step: str) -> bool:
        """One of the overlay's apply steps; a failure is logged and counted (by the
        caller's retry), never raised: policy and workload routes go on regardless."""
        if self.encap is None:
            return True
        try:
            if step == "before_policy":
                self.encap.before_policy()
                return True
            if self.encap.after_routes():
                return True
            log.warning("overlay: the kernel refused part of it; retrying in %.0f s", RETRY_AFTER_ERROR)
            return False
        except Exception:  # noqa: BLE001 - the overlay must not stop the agent
            log.exception("overlay: %s failed; retrying in %.0f s", step, RETRY_AFTER_ERROR)
            return False

    def _applied(self, result: ApplyResult, elapsed: float) -> None:
        self.metrics.apply_duration.observe(elapsed)
        self.metrics.active_local_endpoints.set(len(self.routes.endpoints))
        self.metrics.active_policies.set(self.policy_count)
        self.apply_count += 1
        if result.ok:
            self.retry_at = None
            if not self.applied:
                self.applied = True
                self.coldstart.applied()
                self.health.set_applied()
                stats = getattr(self.policy, "last_stats", None)
                split = (f": index {stats.index_seconds:.3f} s, render {stats.render_seconds:.3f} s, "
                         f"write {stats.write_seconds:.3f} s" if stats is not None else "")
                log.info("dataplane programmed: %d local endpoints, %d policies in %.3f s "
                         "(policy %.3f s%s; sysctls of %d interfaces %.3f s more; routes %.3f s)",
                         len(self.routes.endpoints), self.policy_count, elapsed,
                         result.policy_s, split, result.n_sysctls, result.sysctl_s, result.routes_s)
        else:
            self.metrics.errors.inc()
            self.retry_at = time.monotonic() + RETRY_AFTER_ERROR

    def _maybe_refresh(self) -> None:
        now = time.monotonic()
        if now >= self.next_route_refresh:
            self.next_route_refresh = now + self._interval("RouteRefreshInterval")
            try:
                self.links.list_all()
                stats = self.routes.resync()
                if stats:
                    log.warning("route refresh repaired drift: %d added, %d removed, %d failed",
                                stats.added, stats.removed, stats.failed)
                    self.metrics.route_repairs.inc(stats.added + stats.removed)
            except OSError:
                log.exception("route refresh failed")
                self.metrics.errors.inc()
            if self.encap is not None:
                self.encap.refresh()
                self.retry_at = now   # the next loop pass applies the overlay's refresh
        if now >= self.next_nft_refresh:
            self.next_nft_refresh = now + self._interval("IptablesRefreshInterval")
            try:
                if self.policy.refresh():
                    log.warning("nftables refresh repaired drift in table inet calico")
                    self.metrics.nft_repairs.inc()
            except Exception:  # noqa: BLE001
                log.exception("nftables refresh failed")
                self.metrics.errors.inc()


def _host_endpoint_problem(doc: dict[str, Any] | None) -> str | None:
    """Why a HostEndpoint cannot be programmed (None: it can): an interface name nft
    cannot carry ("*", every host interface, is one endpoint for all of them), or an
    expected IP that is not a host address."""
    if doc is None:
        return None
    spec = doc.get("spec") or {}
    iface = spec.get("interfaceName")
    if iface and iface != "*":
        try:
            ifname_text(iface)
        except NftStringError as exc:
            return f"interfaceName: {exc}"
    return host_routes(spec.get("expectedIPs") or (), "expectedIPs")[1]
