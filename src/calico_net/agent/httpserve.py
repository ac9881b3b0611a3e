"""The one small HTTP server behind the agent's and confd's health, metrics and status
endpoints: where to listen for a Felix-style `*Host` setting (`listen_address`), the
server bound that way (`make_server`), and `serve`, which answers GET on a table of
paths, each a function returning (ok, body, content type): 200 when ok, else 503;
any other path is 404. Each server runs in a daemon thread.
"""
from __future__ import annotations

import http.server
import ipaddress
import logging
import socket
import threading
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

TEXT = "text/plain; charset=utf-8"
PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"
JSON = "application/json"

#: What a path answers: (ok, body, content type); ok picks 200 or 503.
Route = Callable[[], tuple[bool, str, str]]


def probe(check: Callable[[], tuple[bool, str]]) -> Route:
    """A route for a liveness/readiness check: its reason, one line of text."""
    def route() -> tuple[bool, str, str]:
        ok, why = check()
        return ok, why + "\n", TEXT
    return route


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: Mapping[str, Route]
    what: str

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        route = self.routes.get(self.path.split("?")[0])
        if route is None:
            self.send_error(404)
            return
        ok, body, ctype = route()
        data = body.encode()
        self.send_response(200 if ok else 503)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        log.debug(f"{self.what}: " + format, *args)


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


def serve(host: str, port: int, routes: Mapping[str, Route],
          what: str) -> http.server.ThreadingHTTPServer:
    """Serve `routes` (path -> Route) on `host`:`port` in a daemon thread; returns the
    server (`.shutdown()`). Raises OSError when it cannot listen."""
    handler = type("RoutesHandler", (_Handler,), {"routes": dict(routes), "what": what})
    return make_server(host, port, handler, what)
