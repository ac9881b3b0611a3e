"""The live half of confd: BIRD's configuration kept in step with etcd.

What it does, as Calico's confd does in calico/node (a process of its own beside
Felix and BIRD):

* reads this node's view of the datastore — Nodes, BGPConfigurations, BGPPeers,
  IPPools and the IPAM block affinities of this node — as one snapshot at revision R,
  then watches each of those prefixes from R+1 (:class:`Watcher`);
* after each change (coalesced for ``coalesce`` seconds, 50 ms by default) renders
  ``bird.cfg`` with :func:`render.render_bird_config`, checks it with ``bird -p -c``,
  swaps it in atomically only when the bytes changed and then, only then, asks BIRD
  to ``configure`` over its control socket (:class:`Confd`);
* a render that BIRD rejects never replaces the running configuration: the last good
  one stays on disk and in BIRD, the rejection is logged once, counted, written to the
  status file and reported by ``/readiness``;
* a datastore value that does not parse or validate is logged once and skipped; it
  never stops confd;
* on compaction, a broken watch or a silent etcd (probed while watching) it backs
  off (exponential, jittered, capped), takes a fresh snapshot and renders again.

How it is built: three parts with one direction of flow. :class:`BGPIndex` is the pure
in-memory state (etcd key → parsed resource, affine block CIDRs); :class:`Watcher`
owns the etcd conversation in a thread and only writes into the index and sets an
event; :class:`Confd` owns rendering and every side effect (file, BIRD, status,
metrics). Validation and BIRD reload are injectable callables, so the unit tests run
without BIRD and the FV tests run the real thing.

Passwords (BGPPeer ``spec.password.secretKeyRef`` and BGPConfiguration
``nodeMeshPassword``) come from files ``$CALICO_BGP_SECRETS_DIR/<name>/<key>`` or from
the environment ``CALICO_BGP_PASSWORD_<NAME>_<KEY>`` (see :class:`SecretReader`); they
appear only in bird.cfg (mode 0640), never in logs, status or metrics.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from calico_net.agent import httpserve
from calico_net.agent.confd import birdctl
from calico_net.agent.confd.render import (
    BirdConfigError,
    RenderError,
    RenderOptions,
    render_bird_config,
    validate_bird_config,
    write_if_changed,
)
from calico_net.agent.metrics import Counter, Gauge, Histogram, Metric
from calico_net.agent.watchloop import run_snapshot_watch
from calico_net.datastore.etcd import KV, key_problem, show_key
from calico_net.datastore.store import RESOURCE_PREFIX
from calico_net.ipam import keys as ipam_keys

log = logging.getLogger(__name__)

DEFAULT_BIRD_CONFIG = "/etc/calico/confd/config/bird.cfg"
DEFAULT_BIRD_SOCKET = birdctl.DEFAULT_SOCKET
DEFAULT_SECRETS_DIR = "/etc/calico/bgp-secrets"
DEFAULT_STATUS_FILE = "/var/run/calico/confd-status.json"
DEFAULT_HEALTH_PORT = 9098

#: The resource kinds confd reads, by their plural in Calico's key layout.
RESOURCE_PLURALS = {
    "nodes": "Node",
    "bgpconfigurations": "BGPConfiguration",
    "bgppeers": "BGPPeer",
    "ippools": "IPPool",
}


def watched_prefixes(node_name: str) -> list[str]:
    """The etcd prefixes confd snapshots and watches for ``node_name``."""
    return [f"{RESOURCE_PREFIX}{plural}/" for plural in RESOURCE_PLURALS] + [
        ipam_keys.host_prefix(node_name)
    ]


# ----------------------------------------------------------------------- settings


def _env_bool(value: str | None, default: bool) -> bool:
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def _env_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "")
    try:
        return float(raw) if raw.strip() else default
    except ValueError:
        log.warning("ignoring %s=%r: not a number", name, raw)
        return default


@dataclass
class ConfdSettings:
    """Everything confd takes from its environment (see docs/bgp.md)."""

    node_name: str
    bird_config: str = DEFAULT_BIRD_CONFIG
    bird_socket: str = DEFAULT_BIRD_SOCKET
    bird_binary: str = "bird"
    secrets_dir: str = DEFAULT_SECRETS_DIR
    status_file: str | None = DEFAULT_STATUS_FILE
    health_enabled: bool = True
    health_host: str = "127.0.0.1"
    health_port: int = DEFAULT_HEALTH_PORT
    coalesce: float = 0.05  # seconds of quiet before rendering
    coalesce_max: float = 0.5  # but never wait longer than this after the first change
    refresh_interval: float = 30.0  # re-render anyway (secrets may have rotated)
    reload_retry: float = 2.0  # retry a failed BIRD configure after this long
    backoff_initial: float = 0.1
    backoff_max: float = 5.0
    probe_interval: float = 5.0
    options: RenderOptions = field(default_factory=RenderOptions)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ConfdSettings:
        import socket

        env = os.environ if env is None else env
        router_id = env.get("CALICO_ROUTER_ID") or None
        options = RenderOptions(router_id=router_id)
        status = env.get("CALICO_CONFD_STATUS_FILE", DEFAULT_STATUS_FILE)
        return cls(
            # The name is an etcd key component (this node's IPAM affinities): refuse
            # "/", NUL, newline and the like here (ValueError: exit 2).
            node_name=ipam_keys.check_node_name(env.get("NODENAME") or socket.gethostname()),
            bird_config=env.get("CALICO_BIRD_CONFIG") or DEFAULT_BIRD_CONFIG,
            bird_socket=env.get("CALICO_BIRD_SOCKET") or DEFAULT_BIRD_SOCKET,
            bird_binary=env.get("CALICO_BIRD_BINARY") or "bird",
            secrets_dir=env.get("CALICO_BGP_SECRETS_DIR") or DEFAULT_SECRETS_DIR,
            status_file=status or None,
            health_enabled=_env_bool(env.get("CALICO_CONFD_HEALTHENABLED"), True),
            health_host=env.get("CALICO_CONFD_HEALTHHOST") or "127.0.0.1",
            health_port=int(env.get("CALICO_CONFD_HEALTHPORT") or DEFAULT_HEALTH_PORT),
            coalesce=_env_float(env, "CALICO_CONFD_COALESCE", 0.05),
            refresh_interval=_env_float(env, "CALICO_CONFD_REFRESH_INTERVAL", 30.0),
            options=options,
        )


class SecretReader:
    """Looks up a ``secretKeyRef`` ``{name, key}``: first the file
    ``<secrets_dir>/<name>/<key>`` (one trailing newline dropped), then the environment
    variable ``CALICO_BGP_PASSWORD_<NAME>_<KEY>`` (upper case, other characters as
    ``_``). Returns None when neither exists. The value is never logged."""

    _SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # fullmatch: no trailing newline

    def __init__(self, secrets_dir: str, env: Mapping[str, str] | None = None) -> None:
        self.secrets_dir = secrets_dir
        self.env = os.environ if env is None else env

    @staticmethod
    def env_name(name: str, key: str) -> str:
        def norm(s: str) -> str:
            return re.sub(r"[^A-Za-z0-9]", "_", s).upper()

        return f"CALICO_BGP_PASSWORD_{norm(name)}_{norm(key)}"

    def __call__(self, ref: Mapping[str, Any]) -> str | None:
        name, key = str(ref.get("name") or ""), str(ref.get("key") or "")
        if not (self._SAFE.fullmatch(name) and self._SAFE.fullmatch(key)) or ".." in name + key:
            log.warning("secretKeyRef %r/%r is not a safe file name; ignored", name, key)
            return None
        path = os.path.join(self.secrets_dir, name, key)
        try:
            with open(path, encoding="utf-8") as fh:
                value = fh.read()
            return value[:-1] if value.endswith("\n") else value
        except FileNotFoundError:
            pass
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("cannot read BGP secret %s: %s", path, exc.__class__.__name__)
        return self.env.get(self.env_name(name, key))


# -------------------------------------------------------------------------- index


def _resource_validator(doc: dict[str, Any]) -> dict[str, Any]:
    """Validate with calico_net.model (imported late: pydantic is a heavy import)."""
    from calico_net import model

    return model.parse_resource(doc).to_dict()


@dataclass(frozen=True)
class RenderInput:
    """One consistent copy of what the renderer needs."""

    nodes: list[dict[str, Any]]
    bgp_configs: list[dict[str, Any]]
    peers: list[dict[str, Any]]
    pools: list[dict[str, Any]]
    blocks: list[str]
    revision: int


class BGPIndex:
    """etcd key → parsed value for the keys confd cares about. No I/O; thread-safe.

    Values that do not parse are skipped (logged once per key and mod revision, and
    counted through ``on_bad``); a key whose value turns bad drops out, as in Felix.
    """

    def __init__(
        self,
        node_name: str,
        *,
        validate: Callable[[dict[str, Any]], dict[str, Any]] = _resource_validator,
        on_bad: Callable[[str, str], None] | None = None,
    ) -> None:
        self.node_name = node_name
        self.validate = validate
        self.on_bad = on_bad
        self._lock = threading.Lock()
        self._resources: dict[str, tuple[str, dict[str, Any]]] = {}  # key -> (kind, doc)
        self._blocks: dict[str, str] = {}  # affinity key -> block cidr
        self._parsed_rev: dict[str, int] = {}  # key -> mod revision of a parsed value
        self.bad: dict[str, tuple[int, str]] = {}  # key -> (mod revision, reason)
        self.revision = 0
        self.synced = False

    # -- parsing (no lock needed: pure)

    def _parse_resource(self, kv: KV) -> tuple[str, dict[str, Any]]:
        rest = kv.key[len(RESOURCE_PREFIX):].split("/")
        if len(rest) != 2 or rest[0] not in RESOURCE_PLURALS:
            raise ValueError("not a key confd reads")
        kind, name = RESOURCE_PLURALS[rest[0]], rest[1]
        try:
            doc = json.loads(kv.value)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"value is not JSON: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("metadata"), dict):
            raise ValueError("value is not a resource object with metadata")
        if doc.get("kind") != kind:
            raise ValueError(f"kind {doc.get('kind')!r} does not match the key ({kind})")
        if doc["metadata"].get("name") != name:
            raise ValueError(f"metadata.name {doc['metadata'].get('name')!r} does not match the key")
        doc.setdefault("apiVersion", "projectcalico.org/v3")
        try:
            valid = self.validate(doc)
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - a validator bug must not stop confd
            raise ValueError(f"validation failed: {exc.__class__.__name__}: {exc}") from None
        return kind, valid

    def _parse_affinity(self, kv: KV) -> str | None:
        """The block CIDR of an affinity key of this node, None when it is not one to
        export (pending deletion / deleted)."""
        parsed = ipam_keys.parse_affinity_key(kv.key)
        if parsed is None or parsed[0] != self.node_name:
            raise ValueError("not an affinity key of this node")
        try:
            value = json.loads(kv.value or b"{}")
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"value is not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ValueError("value is not a JSON object")
        state = value.get("state", ipam_keys.AFFINITY_CONFIRMED)
        if state == ipam_keys.AFFINITY_PENDING_DELETION or value.get("deleted") is True:
            return None
        return str(parsed[1])

    # -- updates

    def _note_bad(self, kv: KV, reason: str) -> None:
        seen = self.bad.get(kv.key)
        if seen is None or seen[0] != kv.mod_revision:
            log.warning("skipping bad datastore value %s (revision %d): %s",
                        show_key(kv.key), kv.mod_revision, reason)
            if self.on_bad is not None:
                self.on_bad(kv.key, reason)
        self.bad[kv.key] = (kv.mod_revision, reason)

    def _put_locked(self, kv: KV) -> bool:
        """Apply one PUT; True when the renderable state changed."""
        key = kv.key
        if not key.isascii() and key_problem(key):      # not UTF-8: never parsed, never held
            self._note_bad(kv, key_problem(key) or "")
            return False
        if key.startswith(RESOURCE_PREFIX):
            if self._parsed_rev.get(key) == kv.mod_revision and key in self._resources:
                return False  # resync of a value we already hold
            try:
                kind, doc = self._parse_resource(kv)
            except ValueError as exc:
                self._note_bad(kv, str(exc))
                self._parsed_rev.pop(key, None)
                return self._resources.pop(key, None) is not None
            self.bad.pop(key, None)
            self._parsed_rev[key] = kv.mod_revision
            old = self._resources.get(key)
            self._resources[key] = (kind, doc)
            return old is None or old[1] != doc
        try:
            cidr = self._parse_affinity(kv)
        except ValueError as exc:
            self._note_bad(kv, str(exc))
            return self._blocks.pop(key, None) is not None
        self.bad.pop(key, None)
        if cidr is None:
            return self._blocks.pop(key, None) is not None
        old_cidr = self._blocks.get(key)
        self._blocks[key] = cidr
        return old_cidr != cidr

    def _delete_locked(self, key: str) -> bool:
        self.bad.pop(key, None)
        self._parsed_rev.pop(key, None)
        a = self._resources.pop(key, None) is not None
        b = self._blocks.pop(key, None) is not None
        return a or b

    def load(self, kvs: list[KV], revision: int) -> bool:
        """Replace everything with a snapshot at ``revision``; True when it changed."""
        with self._lock:
            changed = not self.synced
            present = {kv.key for kv in kvs}
            for key in [k for k in list(self._resources) + list(self._blocks) if k not in present]:
                changed |= self._delete_locked(key)
            for key in [k for k in self.bad if k not in present]:
                del self.bad[key]
            for kv in kvs:
                changed |= self._put_locked(kv)
            self.revision = revision
            self.synced = True
            return changed

    def apply(self, event_type: str, kv: KV) -> bool:
        """One watch event; True when the renderable state changed."""
        with self._lock:
            self.revision = max(self.revision, kv.mod_revision)
            if event_type == "DELETE":
                return self._delete_locked(kv.key)
            return self._put_locked(kv)

    def render_input(self) -> RenderInput:
        with self._lock:
            by_kind: dict[str, list[dict[str, Any]]] = {k: [] for k in RESOURCE_PLURALS.values()}
            for kind, doc in self._resources.values():
                by_kind[kind].append(doc)
            return RenderInput(
                nodes=by_kind["Node"],
                bgp_configs=by_kind["BGPConfiguration"],
                peers=by_kind["BGPPeer"],
                pools=by_kind["IPPool"],
                blocks=sorted(set(self._blocks.values())),
                revision=self.revision,
            )


# ------------------------------------------------------------------------ watcher


class _WatchEnded(Exception):
    pass


class Watcher:
    """Snapshot + watch of :func:`watched_prefixes` in a daemon thread.

    The snapshot reads every prefix at one revision R (the first read fixes R, the
    others ask for it), so the index is one consistent view; one watch per prefix then
    starts at R+1, each in its own thread feeding one queue, so the index is only ever
    written from this watcher's main thread. Any error cancels every watch and starts
    over with a fresh snapshot after a backoff.
    """

    def __init__(
        self,
        client: Any,
        index: BGPIndex,
        prefixes: list[str],
        *,
        on_change: Callable[[], None],
        on_status: Callable[[bool, str], None] | None = None,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        probe_interval: float = 5.0,
    ) -> None:
        self.client = client
        self.index = index
        self.prefixes = prefixes
        self.on_change = on_change
        self.on_status = on_status
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.probe_interval = probe_interval
        self.snapshots = 0
        self.connected = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watches: list[Any] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="confd-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._cancel_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _cancel_all(self) -> None:
        with self._lock:
            watches, self._watches = self._watches, []
        for w in watches:
            try:
                w.cancel()
            except Exception:  # noqa: BLE001 - best effort
                pass

    def _set_connected(self, connected: bool, reason: str) -> None:
        if connected != self.connected:
            self.connected = connected
            if connected:
                log.info("datastore in sync (%s)", reason)
            else:
                log.warning("datastore lost: %s", reason)
        if self.on_status is not None:
            self.on_status(connected, reason)

    def snapshot(self) -> int:
        """Read every prefix at one revision into the index; returns the revision."""
        kvs: list[KV] = []
        revision = 0
        for prefix in self.prefixes:
            got, rev = self.client.get_prefix(prefix, revision=revision or None)
            revision = revision or rev
            kvs.extend(got)
        changed = self.index.load(kvs, revision)
        self.snapshots += 1
        self._set_connected(True, f"snapshot at revision {revision}, {len(kvs)} keys")
        if changed:
            self.on_change()
        return revision

    def _run(self) -> None:
        run_snapshot_watch(self._stop, self.snapshot, self._watch_from, self._set_connected,
                           what="confd watcher", backoff_initial=self.backoff_initial,
                           backoff_max=self.backoff_max, ended=(_WatchEnded,),
                           after_round=self._cancel_all)

    def _watch_from(self, start: int) -> None:
        events: queue.Queue[tuple[str, Any]] = queue.Queue()
        watches = [self.client.watch_prefix(p, start) for p in self.prefixes]
        with self._lock:
            self._watches = list(watches)

        def pump(watch: Any) -> None:
            try:
                for batch in watch:
                    events.put(("batch", batch))
                events.put(("end", None))
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                events.put(("error", exc))

        for i, w in enumerate(watches):
            threading.Thread(target=pump, args=(w,), name=f"confd-watch-{i}", daemon=True).start()
        next_probe = time.monotonic() + self.probe_interval
        while not self._stop.is_set():
            try:
                what, item = events.get(timeout=max(0.05, next_probe - time.monotonic()))
            except queue.Empty:
                # No news: check etcd still answers (a partition does not close sockets).
                self.client.revision()
                next_probe = time.monotonic() + self.probe_interval
                continue
            if what == "error":
                raise item
            if what == "end":
                if self._stop.is_set():
                    return
                raise _WatchEnded("etcd watch ended")
            changed = False
            for ev in item:
                changed |= self.index.apply(ev.type, ev.kv)
            if changed:
                self.on_change()


# ------------------------------------------------------------------ metrics/health


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
        if not self.datastore_connected:
            return False, f"datastore lost: {self.datastore_reason}"
        if not self.synced:
            return False, "waiting for the first datastore snapshot"
        if self.state == "rejected":
            return False, f"rendered config rejected by bird -p, running the last good one: {self.error}"
        if self.state == "render-error":
            return False, f"cannot render bird.cfg: {self.error}"
        if self.state != "ok":
            return False, "waiting for the first render"
        if not self.bird_reloaded:
            return False, f"BIRD has not taken the config yet: {self.bird_reload_error}"
        return True, "ready"

    def to_json(self) -> dict[str, Any]:
        ready, why = self.ready()
        doc = dict(vars(self))
        doc["ready"] = ready
        doc["reason"] = why
        return doc


# -------------------------------------------------------------------------- confd


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
                rejected=rejected,
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
