"""The Docker API reads the network driver needs, over Docker's unix socket.

Docker never tells a network driver which container an endpoint belongs to; as
Calico did, the driver asks the daemon: the network's inspect lists its containers
with their endpoint ids, and the container's inspect holds its name and labels.
"""
from __future__ import annotations

import http.client
import json
import socket
import urllib.parse
from typing import Any

API_VERSION = "v1.25"   # what Calico's plugin pinned; every Docker since 1.13 serves it


class DockerAPIError(Exception):
    pass


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._path)
        self.sock = s


class DockerAPI:
    def __init__(self, host: str = "unix:///var/run/docker.sock", timeout: float = 5.0) -> None:
        if not host.startswith("unix://"):
            raise ValueError(f"DOCKER_HOST {host!r}: only unix:// sockets are supported")
        self.path = host[len("unix://"):]
        self.timeout = timeout

    def get(self, path: str) -> Any:
        conn = _UnixConnection(self.path, self.timeout)
        try:
            conn.request("GET", f"/{API_VERSION}{path}")
            resp = conn.getresponse()
            body = resp.read()
        except OSError as e:
            raise DockerAPIError(f"GET {path}: {e}") from None
        finally:
            conn.close()
        if resp.status != 200:
            raise DockerAPIError(f"GET {path}: HTTP {resp.status} {body[:200]!r}")
        try:
            return json.loads(body)
        except ValueError as e:
            raise DockerAPIError(f"GET {path}: bad JSON: {e}") from None

    def network(self, network_id: str) -> dict[str, Any]:
        return self.get("/networks/" + urllib.parse.quote(network_id, safe=""))

    def container(self, container_id: str) -> dict[str, Any]:
        return self.get("/containers/" + urllib.parse.quote(container_id, safe="") + "/json")
