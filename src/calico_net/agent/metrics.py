"""Prometheus metrics of the agent: what each metric holds (`Metrics`), how they
are exposed through `prometheus_client` (`Metrics.registry`), the cluster-wide
counts and Felix's resync/local-policy figures read from the daemon at scrape time
(`DaemonCollector`), and serving `/metrics` on the project's one HTTP server (`serve`).

Where it listens is Felix's: `PrometheusMetricsHost` (FELIX_PROMETHEUSMETRICSHOST),
default empty, and an empty host means what Felix does with it - Go's listen on
"[]:9091", every address of the host, IPv6 and IPv4 alike. Metrics are off unless
PrometheusMetricsEnabled; operators who enable them and want them on one address set
the host (`127.0.0.1`, the node's address). The server is `httpserve`'s, shared with
the health endpoint and with confd.

Each metric is a small value holder (`Counter`, `Gauge`, `Histogram`, `Summary`)
that the daemon and confd update from any thread (a lock each) and that tests read
as `.value`. The exposition is `prometheus_client`'s: its own `CollectorRegistry`
(never the global one, so a test process may build several) holding a collector
that turns the holders into metric families at scrape time, its `ProcessCollector`
(process_cpu_seconds_total, process_resident_memory_bytes, …; left out when
PrometheusProcessMetricsEnabled is false, as Felix does), `PlatformCollector`
and `GCCollector` (the runtime's metrics, Felix's go_* here python_*: left out when
PrometheusGoMetricsEnabled is false), and its `generate_latest` text format. `prometheus_client` is
imported only when a registry is built - when PrometheusMetricsEnabled is true -
so an agent without metrics does not pay for the import (~65-100 ms measured) and
the holders cost a lock and an addition per call.

Names are Felix's where Felix has one, with Felix's type and help
(`felix_active_local_endpoints`, `felix_active_local_policies`,
`felix_int_dataplane_apply_time_seconds` a summary with Felix's 0.5/0.9/0.99
quantiles over the last 10 minutes, `felix_resync_state`, `felix_resyncs_started`,
`felix_cluster_num_hosts`, `…_workload_endpoints`, `…_host_endpoints`,
`…_policies`, `…_profiles`). Felix's Go counters carry no `_total` suffix and the
Python client adds one to every counter, so `felix_resyncs_started` is exposed
untyped under Felix's exact name: dashboards and alerts written for Felix keep
working. The project's own metrics, with no Felix counterpart, keep their names
(see docs/agent.md).
"""
from __future__ import annotations

import bisect
import collections
import http.server
import logging
import math
import threading
import time
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from calico_net.agent.httpserve import PROMETHEUS
from calico_net.agent.httpserve import serve as serve_routes

if TYPE_CHECKING:  # pragma: no cover - typing only; the daemon imports this module
    from prometheus_client.registry import CollectorRegistry

    from calico_net.agent.daemon import Daemon

log = logging.getLogger(__name__)

# Felix's felix_resync_state values (calc/async_calc_graph.go statusToGaugeValue).
WAIT_FOR_DATASTORE, RESYNC_IN_PROGRESS, IN_SYNC = 1, 2, 3


def _fmt(v: float) -> str:
    if v == math.inf:
        return "+Inf"
    if math.isnan(v):
        return "NaN"
    if float(v).is_integer():
        return str(int(v))
    return repr(float(v))


class Metric:
    type = "untyped"

    def __init__(self, name: str, help: str) -> None:
        self.name = name
        self.help = help
        self._lock = threading.Lock()

    def samples(self) -> Iterable[tuple[str, float]]:
        raise NotImplementedError

    def render(self) -> str:
        """Text format written here (confd's metrics use it; the agent's go through
        prometheus_client)."""
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.type}"]
        lines += [f"{n} {_fmt(v)}" for n, v in self.samples()]
        return "\n".join(lines) + "\n"


class Counter(Metric):
    """A counter. A name ending in `_total` is exposed as a counter; one without
    (Felix's Go names) is exposed untyped under that exact name."""
    type = "counter"

    def __init__(self, name: str, help: str) -> None:
        super().__init__(name, help)
        self.value = 0.0

    def inc(self, n: float = 1) -> None:
        with self._lock:
            self.value += n

    def samples(self) -> Iterable[tuple[str, float]]:
        return [(self.name, self.value)]


class Gauge(Metric):
    type = "gauge"

    def __init__(self, name: str, help: str) -> None:
        super().__init__(name, help)
        self.value = 0.0

    def set(self, v: float) -> None:
        with self._lock:
            self.value = float(v)

    def samples(self) -> Iterable[tuple[str, float]]:
        return [(self.name, self.value)]


class Histogram(Metric):
    type = "histogram"
    DEFAULT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

    def __init__(self, name: str, help: str, buckets: Iterable[float] = DEFAULT_BUCKETS) -> None:
        super().__init__(name, help)
        self.bounds = sorted(buckets)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, v: float) -> None:
        with self._lock:
            self.counts[bisect.bisect_left(self.bounds, v)] += 1
            self.sum += v
            self.count += 1

    def buckets(self) -> list[tuple[float, int]]:
        """(upper bound, cumulative count), +Inf last."""
        with self._lock:
            out, acc = [], 0
            for bound, c in zip(self.bounds + [math.inf], self.counts):
                acc += c
                out.append((bound, acc))
            return out

    def samples(self) -> Iterable[tuple[str, float]]:
        out: list[tuple[str, float]] = [(f'{self.name}_bucket{{le="{_fmt(b)}"}}', c)
                                         for b, c in self.buckets()]
        return out + [(f"{self.name}_sum", self.sum), (f"{self.name}_count", self.count)]


class Summary(Metric):
    """Felix's summaries (libcalico-go's NewSummary): quantiles 0.5, 0.9 and 0.99
    over the observations of the last `max_age` seconds (client_golang's default 10
    minutes), plus the all-time sum and count. The window keeps at most `keep`
    observations so a burst cannot grow it without bound; quantiles are exact over
    what it keeps (nearest rank), NaN when it is empty, as Go reports them."""
    type = "summary"
    QUANTILES = (0.5, 0.9, 0.99)

    def __init__(self, name: str, help: str, max_age: float = 600.0, keep: int = 4096) -> None:
        super().__init__(name, help)
        self.max_age = max_age
        self.window: collections.deque[tuple[float, float]] = collections.deque(maxlen=keep)
        self.sum = 0.0
        self.count = 0

    def observe(self, v: float) -> None:
        with self._lock:
            self.window.append((time.monotonic(), v))
            self.sum += v
            self.count += 1

    def quantiles(self) -> list[tuple[float, float]]:
        with self._lock:
            horizon = time.monotonic() - self.max_age
            while self.window and self.window[0][0] < horizon:
                self.window.popleft()
            values = sorted(v for _, v in self.window)
        if not values:
            return [(q, math.nan) for q in self.QUANTILES]
        return [(q, values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))])
                for q in self.QUANTILES]

    def samples(self) -> Iterable[tuple[str, float]]:
        out: list[tuple[str, float]] = [(f'{self.name}{{quantile="{q}"}}', v) for q, v in self.quantiles()]
        return out + [(f"{self.name}_sum", self.sum), (f"{self.name}_count", self.count)]


class _Both:
    """One `observe` feeding two metrics (Felix's summary and the project's histogram)."""

    def __init__(self, *targets: Histogram | Summary) -> None:
        self.targets = targets

    def observe(self, v: float) -> None:
        for t in self.targets:
            t.observe(v)

    @property
    def count(self) -> int:
        return self.targets[0].count


def _family(m: Metric) -> Any:
    """The prometheus_client metric family of one holder, read now."""
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric as PMetric,
        SummaryMetricFamily,
    )
    if isinstance(m, Counter):
        if m.name.endswith("_total"):
            return CounterMetricFamily(m.name, m.help, value=m.value)
        fam = PMetric(m.name, m.help, "unknown")
        fam.add_sample(m.name, {}, m.value)
        return fam
    if isinstance(m, Gauge):
        return GaugeMetricFamily(m.name, m.help, value=m.value)
    if isinstance(m, Histogram):
        return HistogramMetricFamily(m.name, m.help, sum_value=m.sum,
                                     buckets=[(_fmt(b), c) for b, c in m.buckets()])
    if isinstance(m, Summary):
        fam = SummaryMetricFamily(m.name, m.help, count_value=m.count, sum_value=m.sum)
        for q, v in m.quantiles():
            fam.add_sample(m.name, {"quantile": str(q)}, v)
        return fam
    raise TypeError(f"no exposition for {type(m).__name__}")


class Metrics:
    """The agent's metrics, one attribute each (the daemon's calls: `.inc()`,
    `.set()`, `.observe()`)."""

    def __init__(self) -> None:
        self.active_local_endpoints = Gauge("felix_active_local_endpoints", "Number of active endpoints on this host.")
        self.apply_time = Summary("felix_int_dataplane_apply_time_seconds",
                                  "Time in seconds for each incremental update to the dataplane "
                                  "(after the initial resync).")
        self.apply_histogram = Histogram("felix_apply_duration_seconds",
                                         "Time to apply one batch of dataplane changes (buckets: "
                                         "aggregatable across hosts, which a summary is not).")
        self.resyncs = Counter("felix_resyncs_total", "Full datastore resyncs after the first snapshot.")
        self.errors = Counter("felix_errors_total", "Errors applying the dataplane or talking to the datastore.")
        self.skipped_total = Counter("felix_skipped_bad_objects_total", "Bad datastore values seen and skipped.")
        self.skipped = Gauge("felix_skipped_bad_objects", "Datastore keys currently skipped as bad.")
        self.config_errors = Counter("felix_config_errors_total",
                                     "Configuration values ignored as invalid (each source, parameter and value once).")
        self.refused_endpoints_total = Counter(
            "felix_refused_endpoints_total",
            "Endpoints refused (an interface outside the interface prefixes, an address wider than "
            "a host address), each endpoint and reason once.")
        self.refused_endpoints = Gauge("felix_refused_endpoints", "Endpoints currently refused.")
        self.datastore_connected = Gauge("felix_datastore_connected", "1 while the datastore is reachable.")
        self.route_repairs = Counter("felix_route_repairs_total", "Routes rewritten by a refresh (drift repaired).")
        self.nft_repairs = Counter("felix_nft_repairs_total", "Refreshes that had to repair the nftables table.")
        self.all: list[Metric] = [v for v in vars(self).values() if isinstance(v, Metric)]
        # The daemon's count of every NetworkPolicy and GlobalNetworkPolicy: kept for
        # its callers, exposed as Felix's felix_cluster_num_policies by DaemonCollector
        # (the old felix_active_policies name read like Felix's per-host figure).
        self.active_policies = Gauge("felix_cluster_num_policies", "Total number of policies cluster-wide.")
        self.apply_duration = _Both(self.apply_time, self.apply_histogram)
        self._registry: CollectorRegistry | None = None
        #: PrometheusProcessMetricsEnabled: the process_* metrics (set before the
        #: registry is built; Felix's default is on)
        self.process_metrics = True
        #: PrometheusGoMetricsEnabled: the runtime's metrics (Go's go_* in Felix; here
        #: the Python runtime's python_gc_* and python_info)
        self.runtime_metrics = True
        self._extra: list[Any] = []
        self._reg_lock = threading.Lock()

    def collect(self) -> Iterator[Any]:
        """prometheus_client's collector protocol: every holder, read now."""
        for m in self.all:
            yield _family(m)

    def add_collector(self, collector: Any) -> None:
        """Another collector on this registry (the daemon's, built after us)."""
        with self._reg_lock:
            self._extra.append(collector)
            if self._registry is not None:
                self._registry.register(collector)

    def registry(self) -> CollectorRegistry:
        """The registry, built (and prometheus_client imported) on first use."""
        with self._reg_lock:
            if self._registry is None:
                from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
                reg = CollectorRegistry(auto_describe=False)
                reg.register(self)
                if self.process_metrics:
                    ProcessCollector(registry=reg)
                if self.runtime_metrics:
                    PlatformCollector(registry=reg)
                    GCCollector(registry=reg)
                for c in self._extra:
                    reg.register(c)
                self._registry = reg
            return self._registry

    def render(self) -> str:
        from prometheus_client import generate_latest
        return generate_latest(self.registry()).decode()


class DaemonCollector:
    """Felix's figures that come from what the daemon holds, computed per scrape:
    the cluster-wide counts from `daemon.cache` (Node resources are the hosts),
    `felix_active_local_policies` (policies matching at least one local endpoint,
    as Felix's policy resolver counts them) from the policy index, and the resync
    state. The daemon's thread changes these while a scrape reads them; a read that
    races a change (RuntimeError: a dict changed size) is retried, and after a few
    tries the figure is left out of that one scrape rather than failing it."""

    KINDS = (("felix_cluster_num_hosts", "Total number of calico hosts in the cluster.", ("Node",)),
             ("felix_cluster_num_workload_endpoints", "Total number of workload endpoints cluster-wide.",
              ("WorkloadEndpoint",)),
             ("felix_cluster_num_host_endpoints", "Total number of host endpoints cluster-wide.",
              ("HostEndpoint",)),
             ("felix_cluster_num_policies", "Total number of policies cluster-wide.",
              ("NetworkPolicy", "GlobalNetworkPolicy")),
             ("felix_cluster_num_profiles", "Total number of profiles cluster-wide.", ("Profile",)))

    def __init__(self, daemon: Daemon, metrics: Metrics) -> None:
        self.daemon = daemon
        self.metrics = metrics

    @staticmethod
    def _retry(read: Any, what: str) -> Any:
        for _ in range(5):
            try:
                return read()
            except RuntimeError:
                continue
        log.debug("metrics: %s changed under every read; left out of this scrape", what)
        return None

    def kind_counts(self) -> collections.Counter[str] | None:
        return self._retry(lambda: collections.Counter(r.kind for r in list(self.daemon.cache.values())),
                           "the resource cache")

    def local_policies(self) -> int | None:
        from calico_net.agent.felix.policy import PolicyDataplane
        policy = self.daemon.policy
        if not isinstance(policy, PolicyDataplane):
            return None
        index = policy.index

        def read() -> int:
            active: set[Any] = set()
            for ep in index.local_endpoints():
                active.update(p.key for p in index.ordered_policies(ep))
            return len(active)
        return self._retry(read, "the policy index")

    def resync_state(self) -> int:
        if not self.metrics.datastore_connected.value:
            return WAIT_FOR_DATASTORE
        return IN_SYNC if self.daemon.synced else RESYNC_IN_PROGRESS

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily, Metric as PMetric
        counts = self.kind_counts()
        if counts is not None:
            for name, help, kinds in self.KINDS:
                yield GaugeMetricFamily(name, help, value=sum(counts[k] for k in kinds))
        n = self.local_policies()
        if n is not None:
            yield GaugeMetricFamily("felix_active_local_policies", "Number of active policies on this host.",
                                    value=n)
        yield GaugeMetricFamily("felix_resync_state", "Current datastore state.", value=self.resync_state())
        # Felix counts the first sync as a resync started; the daemon's counter
        # (felix_resyncs_total) counts only those after it.
        started = PMetric("felix_resyncs_started", "Number of times Felix has started resyncing with "
                          "the datastore.", "unknown")
        started.add_sample("felix_resyncs_started", {},
                           self.metrics.resyncs.value + (1 if self.daemon.synced else 0))
        yield started


def serve(metrics: Metrics, host: str, port: int) -> http.server.ThreadingHTTPServer:
    """Start serving /metrics in a daemon thread; returns the server (`.shutdown()`).
    `host` is PrometheusMetricsHost: "" listens on every address, as Felix does.
    The registry is built here, not at the first scrape: the import cost and any
    failure of it show at start."""
    metrics.registry()
    return serve_routes(host, port, {"/metrics": lambda: (True, metrics.render(), PROMETHEUS)},
                        "metrics")
