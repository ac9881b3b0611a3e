"""The plugin's HTTP side: Docker's remote plugin protocol on a unix socket.

Docker POSTs a JSON body to `/<Interface>.<Method>` and reads a JSON answer; an error
is an answer carrying `Err` (with a non-200 status), which Docker shows to the user
as the reason the command failed. Each request runs in its own thread; the drivers
keep no state of their own between requests, so this needs no locking here (IPAM
serialises itself per host through its lock files).
"""
from __future__ import annotations

import json
import logging
import os
import socketserver
import stat
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/vnd.docker.plugins.v1.2+json"
MAX_BODY = 1 << 20

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class PluginError(Exception):
    """A request Docker made that the plugin refuses; the message goes to the user."""


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    routes: dict[str, Handler]


class _RequestHandler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: Any) -> None:  # the default writes to stderr per request
        log.debug("%s", fmt % args)

    def address_string(self) -> str:  # a unix socket peer has no (host, port)
        return "docker"

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        method = self.path.lstrip("/")
        handler = self.server.routes.get(method)
        if handler is None:
            self._reply(404, {"Err": f"unknown method {method[:80]!r}"})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self._reply(400, {"Err": "bad Content-Length"})
            return
        raw = self.rfile.read(length) if length else b""
        try:
            req = json.loads(raw) if raw.strip() else {}
            if not isinstance(req, dict):
                raise ValueError("the body is not a JSON object")
        except ValueError as e:
            self._reply(400, {"Err": f"{method}: bad request body: {e}"})
            return
        try:
            resp = handler(req)
        except PluginError as e:
            log.warning("%s refused: %s", method, e)
            self._reply(500, {"Err": str(e)})
            return
        except Exception as e:  # noqa: BLE001 - Docker must get an answer, never a dropped socket
            log.exception("%s failed", method)
            self._reply(500, {"Err": f"{method} failed: {type(e).__name__}: {e}"})
            return
        log.debug("%s -> %s", method, resp)
        self._reply(200, resp)

    do_GET = do_POST  # curl-style checks of Plugin.Activate


def make_server(path: str, routes: dict[str, Handler]) -> _Server:
    """Bind the socket (replacing a stale one left by a killed plugin)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
    srv = _Server(path, _RequestHandler)
    srv.routes = routes
    os.chmod(path, 0o660)
    return srv
