"""Prometheus metrics of the agent, in the text exposition format, served on port 9091.

Where it listens is Felix's: `PrometheusMetricsHost` (FELIX_PROMETHEUSMETRICSHOST),
default empty, and an empty host means what Felix does with it - Go's listen on
"[]:9091", every address of the host, IPv6 and IPv4 alike. Metrics are off unless
PrometheusMetricsEnabled; operators who enable them and want them on one address set
the host (`127.0.0.1`, the node's address). The server is `httpserve`'s, shared with
the health endpoint (HealthHost, default "localhost": 127.0.0.1, the first IPv4
address Go would pick for the name) and with confd.

Written by hand (counters, gauges, one histogram) rather than with
`prometheus_client`: the agent needs only these, and a dependency fewer in the
calico/node image is worth more than the convenience. Values are updated from
several threads; each metric guards itself with a lock.

Names follow Felix's where Felix has one: `felix_active_local_endpoints`,
`felix_active_policies`, `felix_resyncs_total`, …; the skipped-object count is
exposed both as a counter (`felix_skipped_bad_objects_total`: every bad value seen)
and as a gauge (`felix_skipped_bad_objects`: keys skipped right now).
"""
from __future__ import annotations

import bisect
import http.server
import math
import threading
from typing import Iterable

from calico_net.agent.httpserve import PROMETHEUS
from calico_net.agent.httpserve import serve as serve_routes


def _fmt(v: float) -> str:
    if v == math.inf:
        return "+Inf"
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
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.type}"]
        lines += [f"{n} {_fmt(v)}" for n, v in self.samples()]
        return "\n".join(lines) + "\n"


class Counter(Metric):
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

    def samples(self) -> Iterable[tuple[str, float]]:
        with self._lock:
            out, acc = [], 0
            for bound, c in zip(self.bounds + [math.inf], self.counts):
                acc += c
                out.append((f'{self.name}_bucket{{le="{_fmt(bound)}"}}', acc))
            out.append((f"{self.name}_sum", self.sum))
            out.append((f"{self.name}_count", self.count))
            return out


class Metrics:
    """The agent's metrics, one attribute each."""

    def __init__(self) -> None:
        self.active_local_endpoints = Gauge("felix_active_local_endpoints", "Local workload endpoints being programmed.")
        self.active_policies = Gauge("felix_active_policies", "NetworkPolicies and GlobalNetworkPolicies known.")
        self.apply_duration = Histogram("felix_apply_duration_seconds", "Time to apply one batch of dataplane changes.")
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

    def render(self) -> str:
        return "".join(m.render() for m in self.all)


def serve(metrics: Metrics, host: str, port: int) -> http.server.ThreadingHTTPServer:
    """Start serving /metrics in a daemon thread; returns the server (`.shutdown()`).
    `host` is PrometheusMetricsHost: "" listens on every address, as Felix does."""
    return serve_routes(host, port, {"/metrics": lambda: (True, metrics.render(), PROMETHEUS)},
                        "metrics")
