"""What confd reports about itself: :class:`ConfdMetrics` (its Prometheus metrics on
``/metrics``) and :class:`ConfdStatus` (``/status``, ``/readiness`` and the status
file). Plain state, updated by :class:`~.runner.Confd`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from calico_net.agent.metrics import Counter, Gauge, Histogram, Metric


class ConfdMetrics:
    """confd's Prometheus metrics (text format on ``/metrics`` of the health port)."""

    def __init__(self) -> None:
        self.renders = Counter("calico_confd_renders_total", "Renders of bird.cfg attempted.")
        self.render_errors = Counter(
            "calico_confd_render_errors_total", "Renders that failed before BIRD saw them.")
        self.validation_failures = Counter(
            "calico_confd_validation_failures_total",
            "Rendered configs bird -p rejected (the last good config was kept).")
        self.config_writes = Counter(
            "calico_confd_config_writes_total", "Times bird.cfg was replaced on disk.")
        self.reloads = Counter("calico_confd_bird_reloads_total", "Successful BIRD configure calls.")
        self.reload_failures = Counter(
            "calico_confd_bird_reload_failures_total", "Failed BIRD configure calls.")
        self.resyncs = Counter(
            "calico_confd_resyncs_total", "Datastore snapshots taken after the first one.")
        self.skipped = Counter(
            "calico_confd_skipped_bad_objects_total", "Bad datastore values seen and skipped.")
        self.last_render_ok = Gauge(
            "calico_confd_last_render_ok", "1 when the latest render is the config BIRD runs.")
        self.datastore_connected = Gauge(
            "calico_confd_datastore_connected", "1 while the datastore watch is in sync.")
        self.render_seconds = Histogram(
            "calico_confd_render_seconds", "Render + bird -p + write + configure, per change.")
        self.all: list[Metric] = [v for v in vars(self).values() if isinstance(v, Metric)]

    def render(self) -> str:
        return "".join(m.render() for m in self.all)


@dataclass
class ConfdStatus:
    """What ``/status``, ``/readiness`` and the status file report."""

    node: str
    datastore_connected: bool = False
    datastore_reason: str = "not connected yet"
    revision: int = 0
    synced: bool = False
    #: "ok" — the latest render runs in BIRD; "rejected" — bird -p refused it and the
    #: last good config stays; "render-error" — the resources cannot be rendered.
    state: str = "waiting"
    error: str | None = None
    config_sha256: str | None = None  # of the config on disk (the last good one)
    applied_at: float | None = None  # unix time the last good config was installed
    rejected_sha256: str | None = None
    bird_reloaded: bool = False
    bird_reload_error: str | None = None

    def ready(self) -> tuple[bool, str]:
        # The first condition that does not hold is the reason given.
        for holds, why in (
            (self.datastore_connected, f"datastore lost: {self.datastore_reason}"),
            (self.synced, "waiting for the first datastore snapshot"),
            (self.state != "rejected",
             f"rendered config rejected by bird -p, running the last good one: {self.error}"),
            (self.state != "render-error", f"cannot render bird.cfg: {self.error}"),
            (self.state == "ok", "waiting for the first render"),
            (self.bird_reloaded, f"BIRD has not taken the config yet: {self.bird_reload_error}"),
        ):
            if not holds:
                return False, why
        return True, "ready"

    def to_json(self) -> dict[str, Any]:
        ready, why = self.ready()
        doc = dict(vars(self))
        doc["ready"] = ready
        doc["reason"] = why
        return doc
