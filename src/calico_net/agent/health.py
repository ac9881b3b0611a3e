"""Health endpoints of the agent: `/liveness` and `/readiness` on HealthHost:HealthPort.

The shared server of `httpserve` (a daemon thread) answers from a `HealthState` the
daemon updates:

* `/liveness` — 200 while the main loop has ticked within `liveness_timeout`
  (the loop wakes at least every second even when idle), else 503.
* `/readiness` — 200 once the first full snapshot has been applied to the
  dataplane and while the datastore is reachable; otherwise 503 with the reason in
  the body (`datastore lost: ...`, `waiting for the first apply`).
"""
from __future__ import annotations

import http.server
import threading
import time


class HealthState:
    def __init__(self, liveness_timeout: float = 90.0) -> None:
        self.liveness_timeout = liveness_timeout
        self._lock = threading.Lock()
        self.last_tick = time.monotonic()
        self.applied = False
        self.datastore_ok = False
        self.datastore_reason = "not connected yet"

    def tick(self) -> None:
        self.last_tick = time.monotonic()

    def set_applied(self) -> None:
        self.applied = True

    def set_datastore(self, ok: bool, reason: str) -> None:
        with self._lock:
            self.datastore_ok = ok
            self.datastore_reason = reason

    def live(self) -> tuple[bool, str]:
        age = time.monotonic() - self.last_tick
        if age > self.liveness_timeout:
            return False, f"main loop stalled for {age:.0f} s"
        return True, "live"

    def ready(self) -> tuple[bool, str]:
        live, why = self.live()
        if not live:
            return False, why
        with self._lock:
            if not self.datastore_ok:
                return False, f"datastore lost: {self.datastore_reason}"
        if not self.applied:
            return False, "waiting for the first apply of the datastore snapshot"
        return True, "ready"


def serve(state: HealthState, host: str, port: int) -> http.server.ThreadingHTTPServer:
    """`host` is HealthHost (Felix's default "localhost": 127.0.0.1); bound as Felix
    binds it (httpserve.listen_address)."""
    from calico_net.agent import httpserve

    return httpserve.serve(host, port, {"/liveness": httpserve.probe(state.live),
                                        "/readiness": httpserve.probe(state.ready)}, "health")
