"""Prometheus metrics of the agent, in the text exposition format, served on port 9091.

Where it listens is Felix's: `PrometheusMetricsHost` (FELIX_PROMETHEUSMETRICSHOST),
default empty, and an empty host means what Felix does with it - Go's listen on
"[]:9091", every address of the host, IPv6 and IPv4 alike. Metrics are off unless
PrometheusMetricsEnabled; operators who enable them and want them on one address set
the host (`127.0.0.1`, the node's address). `listen_address()` and `make_server()`
below are shared with the health endpoint (HealthHost, default "localhost":
127.0.0.1, the first IPv4 address Go would pick for the name).

Written by hand (counters, gauges, one histogram; ~100 lines) rather than with
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
import ipaddress
import logging
import math
import socket
import threading
from typing import Iterable

log = logging.getLogger(__name__)


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


class _Handler(http.server.BaseHTTPRequestHandler):
    metrics: Metrics

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path.split("?")[0] != "/metrics":
            self.send_error(404)
            return
        body = self.metrics.render().encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        log.debug("metrics: " + format, *args)


# --- where to listen (shared with health.py) ----------------------------------------


def _ipv6_usable() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def listen_address(host: str, port: int) -> tuple[socket.AddressFamily, tuple, bool]:
    """(family, socket address, dual-stack) to listen on for a Felix `*Host` setting.

    "" (or "[]"): every address - "::" accepting IPv4 too, or 0.0.0.0 on a host
    without IPv6 (Go's "[]:port"). An IP literal, with or without brackets: that
    address. A name: its first IPv4 address, else its first address (Go's Listen picks
    one address of a name, IPv4 first). Raises OSError when a name does not resolve.
    """
    h = host.strip()
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
    if h == "":
        if _ipv6_usable():
            return socket.AF_INET6, ("::", port, 0, 0), True
        return socket.AF_INET, ("0.0.0.0", port), False
    try:
        ip = ipaddress.ip_address(h)
    except ValueError:
        infos = socket.getaddrinfo(h, port, type=socket.SOCK_STREAM)
        if not infos:  # pragma: no cover - getaddrinfo raises instead
            raise OSError(f"{h!r} does not resolve")
        family, _, _, _, sockaddr = next((i for i in infos if i[0] == socket.AF_INET), infos[0])
        return family, sockaddr, False
    if ip.version == 6:
        return socket.AF_INET6, (str(ip), port, 0, 0), False
    return socket.AF_INET, (str(ip), port), False


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, family: socket.AddressFamily, address: tuple, dual_stack: bool,
                 handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        self.address_family = family
        self._dual_stack = dual_stack
        super().__init__(address, handler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if self._dual_stack else 1)
        # TCPServer's bind; not HTTPServer's, which looks the address up in DNS for a
        # server name nothing here uses
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]


def make_server(host: str, port: int, handler: type[http.server.BaseHTTPRequestHandler],
                what: str) -> http.server.ThreadingHTTPServer:
    """An HTTP server listening where Felix would for `host` (see listen_address),
    serving in a daemon thread named `what`-http; logs where it listens."""
    family, address, dual = listen_address(host, port)
    server = _Server(family, address, dual, handler)
    bound = server.server_address
    shown = "every address" if host.strip() in ("", "[]") else f"{host.strip()}"
    log.info("%s listening on %s (%s port %d)", what, shown,
             f"[{bound[0]}]" if family == socket.AF_INET6 else bound[0], bound[1])
    threading.Thread(target=server.serve_forever, name=f"{what}-http", daemon=True).start()
    return server


def serve(metrics: Metrics, host: str, port: int) -> http.server.ThreadingHTTPServer:
    """Start serving /metrics in a daemon thread; returns the server (`.shutdown()`).
    `host` is PrometheusMetricsHost: "" listens on every address, as Felix does."""
    handler = type("MetricsHandler", (_Handler,), {"metrics": metrics})
    return make_server(host, port, handler, "metrics")
