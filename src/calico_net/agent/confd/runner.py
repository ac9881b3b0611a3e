"""The live half of confd: :class:`Confd`, which keeps BIRD's configuration in step
with etcd and owns every side effect (bird.cfg, BIRD's control socket, the status
file, the health server).

As Calico's confd in calico/node (a process of its own beside Felix and BIRD): after
each change the :class:`~.watcher.Watcher` writes into the :class:`~.index.BGPIndex`
(coalesced for ``coalesce`` seconds, at most ``coalesce_max``), confd renders
``bird.cfg`` with :func:`.render.render_bird_config`, checks it with ``bird -p -c``,
swaps it in atomically only when the bytes changed and only then asks BIRD to
``configure``. A render BIRD rejects never replaces the running configuration: the
last good one stays on disk and in BIRD, the rejection is logged once, counted,
written to the status file and reported by ``/readiness``. A datastore value that
does not parse or validate is logged once and skipped; it never stops confd.
Validation and BIRD reload are injectable callables, so the unit tests run without
BIRD and the FV tests run the real thing. Passwords appear only in bird.cfg (mode
0640), never in logs, status or metrics.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from calico_net.agent import httpserve
from calico_net.agent.confd import birdctl
from calico_net.agent.confd.index import BGPIndex, RenderInput, watched_prefixes
from calico_net.agent.confd.render import (
    BirdConfigError,
    RenderError,
    render_bird_config,
    validate_bird_config,
    write_if_changed,
)
from calico_net.agent.confd.settings import ConfdSettings, SecretReader
from calico_net.agent.confd.status import ConfdMetrics, ConfdStatus
from calico_net.agent.confd.watcher import Watcher

log = logging.getLogger(__name__)

__all__ = [
    "BGPIndex", "Confd", "ConfdMetrics", "ConfdSettings", "ConfdStatus", "RenderInput",
    "SecretReader", "Watcher", "watched_prefixes",
]


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Confd:
    """Renders on change, validates, installs, reloads; see the module docstring."""

    def __init__(
        self,
        settings: ConfdSettings,
        client: Any,
        *,
        validate: Callable[[str], None] | None = None,
        reload: Callable[[], None] | None = None,
        passwords: Callable[[Mapping[str, Any]], str | None] | None = None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.metrics = ConfdMetrics()
        self.status = ConfdStatus(node=settings.node_name)
        self.validate = validate or (
            lambda text: validate_bird_config(text, bird_binary=settings.bird_binary))
        self.reload = reload or self._birdc_configure
        self.passwords = passwords or SecretReader(settings.secrets_dir)
        self.index = BGPIndex(settings.node_name, on_bad=lambda k, r: self.metrics.skipped.inc())
        self.watcher = Watcher(
            client, self.index, watched_prefixes(settings.node_name),
            on_change=self.wake, on_status=self._on_datastore_status,
            backoff_initial=settings.backoff_initial, backoff_max=settings.backoff_max,
            probe_interval=settings.probe_interval,
        )
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._last_change = 0.0
        self._first_change = 0.0
        self._last_tick = time.monotonic()
        self._status_written: str | None = None
        self._server: http.server.ThreadingHTTPServer | None = None
        # What we know about the config: the last good text (on disk), whether BIRD
        # still has to be told, and the last text bird -p rejected.
        self.good_text: str | None = None
        self.reload_pending = False
        self.next_reload_try = 0.0
        self.rejected_sha: str | None = None
        self.last_error_logged: str | None = None
        self._snapshots_seen = 0
        self._rejected_seen: set[str] = set()  # render-time skips already logged

    # -- wiring

    def wake(self) -> None:
        now = time.monotonic()
        if not self._wake.is_set():
            self._first_change = now
        self._last_change = now
        self._wake.set()

    def _on_datastore_status(self, connected: bool, reason: str) -> None:
        self.status.datastore_connected = connected
        self.status.datastore_reason = reason
        self.metrics.datastore_connected.set(1 if connected else 0)
        if connected and reason.startswith("snapshot"):
            self._snapshots_seen += 1
            if self._snapshots_seen > 1:
                self.metrics.resyncs.inc()
            self.wake()  # re-render after every resync, changed or not
        self._write_status()

    def live(self) -> tuple[bool, str]:
        age = time.monotonic() - self._last_tick
        if age > max(60.0, 3 * self.settings.refresh_interval):
            return False, f"render loop stalled for {age:.0f} s"
        return True, "live"

    def start_health(self) -> None:
        s = self.settings
        if not s.health_enabled:
            return
        status = self.status
        routes = {
            "/liveness": httpserve.probe(self.live),
            "/readiness": httpserve.probe(status.ready),
            "/metrics": lambda: (True, self.metrics.render(), httpserve.PROMETHEUS),
            "/status": lambda: (True, json.dumps(status.to_json(), indent=2) + "\n",
                                httpserve.JSON),
        }
        try:
            self._server = httpserve.serve(s.health_host, s.health_port, routes, "confd-health")
        except OSError as exc:
            log.error("cannot serve health on %s:%d (%s); continuing without it",
                      s.health_host, s.health_port, exc)

    @property
    def health_port(self) -> int | None:
        return self._server.server_address[1] if self._server else None

    # -- lifecycle

    def run(self) -> None:
        """Run until :meth:`stop`."""
        self._adopt_existing_config()
        self.start_health()
        self.watcher.start()
        s = self.settings
        next_refresh = time.monotonic() + s.refresh_interval
        try:
            while not self._stop.is_set():
                self._last_tick = time.monotonic()
                timeout = min(1.0, max(0.0, next_refresh - time.monotonic()))
                if self.reload_pending:
                    timeout = min(timeout, max(0.0, self.next_reload_try - time.monotonic()))
                woke = self._wake.wait(timeout)
                if self._stop.is_set():
                    break
                if woke:
                    self._coalesce()
                    self._wake.clear()
                    self.step()
                    next_refresh = time.monotonic() + s.refresh_interval
                elif time.monotonic() >= next_refresh:
                    self.step()  # periodic: picks up rotated secrets, repairs the file
                    next_refresh = time.monotonic() + s.refresh_interval
                elif self.reload_pending and time.monotonic() >= self.next_reload_try:
                    self._reload()
                    self._write_status()
        finally:
            self.watcher.stop()
            if self._server is not None:
                self._server.shutdown()
                self._server.server_close()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _coalesce(self) -> None:
        """Wait until changes have been quiet for ``coalesce`` s (at most
        ``coalesce_max`` after the first one), so a burst renders once."""
        s = self.settings
        while not self._stop.is_set():
            now = time.monotonic()
            quiet_at = self._last_change + s.coalesce
            give_up_at = self._first_change + s.coalesce_max
            wait = min(quiet_at, give_up_at) - now
            if wait <= 0:
                return
            time.sleep(min(wait, 0.05))

    def _adopt_existing_config(self) -> None:
        """A config left by an earlier run is the last good one until we render."""
        try:
            with open(self.settings.bird_config, encoding="utf-8") as fh:
                text = fh.read()
        except OSError:
            return
        self.status.config_sha256 = _sha(text)

    # -- one render cycle

    def step(self) -> None:
        """Render from the index and apply the result; never raises."""
        if not self.index.synced:
            return
        started = time.monotonic()
        inp = self.index.render_input()
        self.status.synced = True
        self.status.revision = inp.revision
        self.metrics.renders.inc()
        rejected: list[str] = []
        try:
            text = render_bird_config(
                self.settings.node_name, inp.nodes, inp.bgp_configs, inp.peers, inp.pools,
                inp.blocks, passwords=self.passwords, options=self.settings.options,
                rejected=rejected, filters=inp.filters,
            )
        except RenderError as exc:
            self._failed("render-error", str(exc), None)
            self.metrics.render_errors.inc()
            self._write_status()
            return
        except Exception as exc:  # noqa: BLE001 - a renderer bug must not stop confd
            log.exception("rendering bird.cfg failed")
            self._failed("render-error", f"{exc.__class__.__name__}: {exc}", None)
            self.metrics.render_errors.inc()
            self._write_status()
            return
        self._note_rejected(rejected)
        sha = _sha(text)
        if text != self.good_text:
            if sha == self.rejected_sha:
                self._write_status()  # same rejected render: already logged and counted
                return
            try:
                self.validate(text)
            except BirdConfigError as exc:
                self.metrics.validation_failures.inc()
                self._failed("rejected", str(exc), sha)
                self._write_status()
                return
            except Exception as exc:  # noqa: BLE001 - e.g. bird binary missing/timeout
                # Not BIRD's verdict on this text: try again on the next step.
                self.metrics.validation_failures.inc()
                self._failed("rejected", f"cannot run bird -p: {exc}", None)
                self._write_status()
                return
            first = self.good_text is None
            try:
                changed = write_if_changed(self.settings.bird_config, text)
            except OSError as exc:
                self._failed("render-error", f"cannot write {self.settings.bird_config}: {exc}", None)
                self._write_status()
                return
            self.good_text = text
            self.status.config_sha256 = sha
            self.status.applied_at = time.time()
            if changed:
                self.metrics.config_writes.inc()
                log.info("bird.cfg updated (%d bytes, sha256 %s, revision %d)",
                         len(text), sha[:12], inp.revision)
            # Tell BIRD when the bytes changed — and once at start-up, in case BIRD
            # still runs something older than the file an earlier confd left.
            if changed or first:
                self.reload_pending = True
                self.next_reload_try = 0.0
        if self.status.state != "ok":
            if self.status.state in ("rejected", "render-error"):
                log.info("render is good again; BIRD runs the current config")
            self.status.state = "ok"
            self.status.error = None
            self.status.rejected_sha256 = None
            self.rejected_sha = None
            self.last_error_logged = None
        self.metrics.last_render_ok.set(1)
        if self.reload_pending and time.monotonic() >= self.next_reload_try:
            self._reload()
        self.metrics.render_seconds.observe(time.monotonic() - started)
        self._write_status()

    def _note_rejected(self, rejected: list[str]) -> None:
        """Objects the renderer skipped for an invalid value (a name BIRD cannot
        quote, a bad port, …): each is logged and counted once while it lasts; the
        rest of the configuration is rendered without it."""
        current = set(rejected)
        for note in rejected:
            if note not in self._rejected_seen:
                log.warning("bird.cfg rendered without a bad object: %s", note)
                self.metrics.skipped.inc()
        self._rejected_seen = current

    def _failed(self, state: str, message: str, sha: str | None) -> None:
        self.status.state = state
        self.status.error = message
        self.status.rejected_sha256 = sha
        self.rejected_sha = sha
        self.metrics.last_render_ok.set(0)
        if message != self.last_error_logged:
            self.last_error_logged = message
            if state == "rejected":
                log.error("bird -p rejected the rendered config; BIRD keeps running the last "
                          "good one (sha256 %s): %s", (self.status.config_sha256 or "none")[:12],
                          message)
            else:
                log.error("cannot render bird.cfg; keeping the last good config: %s", message)

    def _reload(self) -> None:
        try:
            self.reload()
        except Exception as exc:  # noqa: BLE001 - BIRD may not be up yet; retry later
            self.metrics.reload_failures.inc()
            message = str(exc)
            if message != self.status.bird_reload_error:
                log.warning("BIRD configure failed (will retry; a BIRD that starts later "
                            "reads the file itself): %s", message)
            self.status.bird_reloaded = False
            self.status.bird_reload_error = message
            self.reload_pending = True
            self.next_reload_try = time.monotonic() + self.settings.reload_retry
            return
        self.metrics.reloads.inc()
        self.reload_pending = False
        self.status.bird_reloaded = True
        self.status.bird_reload_error = None

    def _birdc_configure(self) -> None:
        result = birdctl.configure(self.settings.bird_socket)
        log.info("BIRD: %s", result.message)

    def _write_status(self) -> None:
        path = self.settings.status_file
        if not path:
            return
        text = json.dumps(self.status.to_json(), indent=2, sort_keys=True) + "\n"
        if text == self._status_written:
            return
        try:
            write_if_changed(path, text, mode=0o644)
            self._status_written = text
        except OSError as exc:
            log.warning("cannot write status file %s: %s", path, exc)
