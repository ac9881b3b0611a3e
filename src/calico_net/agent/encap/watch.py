"""The block affinities of every node, from etcd: snapshot + watch of
/calico/ipam/v2/host/ (`AffinityWatcher`, a `watchloop.SnapshotWatcher` in a thread
of its own), feeding the overlay controller through callbacks that only put events
on the daemon's queue.

A key is a block of a node when it parses (`ipam.keys.parse_affinity_key`) and its
value is a JSON object whose state is not `pendingDeletion` and that is not marked
`deleted` (confd's rule for the blocks it exports). Anything else is not a block of
that node: a bad key or value is logged once per revision and skipped; a key that
turns bad or pending-deletion is a removal.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable

from calico_net.agent.watchloop import SnapshotWatcher
from calico_net.datastore.etcd import KV, show_key
from calico_net.errors import printable
from calico_net.ipam import keys as ipam_keys

log = logging.getLogger(__name__)

Affinities = dict[str, set[str]]


class _WatchEnded(Exception):
    pass


def parse_affinity(kv: KV) -> tuple[str, str] | None:
    """(node, block CIDR) of a live affinity; None when the affinity is on its way
    out. Raises ValueError for a bad key or value."""
    live = ipam_keys.live_affinity(kv.key, kv.value)
    return None if live is None else (live[0], str(live[1]))


class AffinityWatcher(SnapshotWatcher):
    """Snapshot + watch of every node's block affinities.

    `on_snapshot(affinities)` gets the whole map {node: {block CIDR}} after each
    snapshot (the first and every resync); `on_update(node, cidr, present)` each
    change the watch brings. Both are called from this watcher's thread."""

    thread_name = "encap-affinities"
    ended = (_WatchEnded,)

    def __init__(
        self,
        client: Any,
        *,
        on_snapshot: Callable[[Affinities], None],
        on_update: Callable[[str, str, bool], None],
        on_status: Callable[[bool, str], None] | None = None,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        probe_interval: float = 5.0,
    ) -> None:
        super().__init__(backoff_initial=backoff_initial, backoff_max=backoff_max,
                         probe_interval=probe_interval)
        self.client = client
        self.on_snapshot = on_snapshot
        self.on_update = on_update
        self.on_status = on_status
        self.prefix = ipam_keys.HOST_PREFIX
        #: key -> (node, cidr) of the live affinities
        self.held: dict[str, tuple[str, str]] = {}
        #: key -> mod revision of values skipped as bad (each logged once)
        self.bad: dict[str, int] = {}

    def _report(self, connected: bool, reason: str, changed: bool) -> None:
        if self.on_status is not None and changed:
            self.on_status(connected, reason)

    def _parse(self, kv: KV) -> tuple[str, str] | None:
        try:
            got = parse_affinity(kv)
        except ValueError as exc:
            if self.bad.get(kv.key) != kv.mod_revision:
                log.warning("skipping bad block affinity %s (revision %d): %s",
                            show_key(kv.key), kv.mod_revision, printable(str(exc), 300))
            self.bad[kv.key] = kv.mod_revision
            return None
        self.bad.pop(kv.key, None)
        return got

    def snapshot(self) -> int:
        kvs, revision = self.client.get_prefix(self.prefix)
        held: dict[str, tuple[str, str]] = {}
        for kv in kvs:
            got = self._parse(kv)
            if got is not None:
                held[kv.key] = got
        present = {kv.key for kv in kvs}
        for key in [k for k in self.bad if k not in present]:
            del self.bad[key]
        self.held = held
        self.snapshots += 1
        self._set_connected(True, f"snapshot at revision {revision}, {len(held)} affinities")
        out: Affinities = {}
        for node, cidr in held.values():
            out.setdefault(node, set()).add(cidr)
        self.on_snapshot(out)
        return revision

    def _apply(self, key: str, got: tuple[str, str] | None) -> None:
        old = self.held.get(key)
        if old == got:
            return
        if old is not None:
            del self.held[key]
            self.on_update(old[0], old[1], False)
        if got is not None:
            self.held[key] = got
            self.on_update(got[0], got[1], True)

    def _watch_from(self, start: int) -> None:
        events: queue.Queue[tuple[str, Any]] = queue.Queue()
        watch = self.client.watch_prefix(self.prefix, start)
        self._track([watch])

        def pump() -> None:
            try:
                for batch in watch:
                    events.put(("batch", batch))
                events.put(("end", None))
            except BaseException as exc:  # noqa: BLE001 - handed to the watcher's thread
                events.put(("error", exc))

        threading.Thread(target=pump, name="encap-affinities-watch", daemon=True).start()
        next_probe = time.monotonic() + self.probe_interval
        while not self._stop.is_set():
            try:
                what, item = events.get(timeout=max(0.05, next_probe - time.monotonic()))
            except queue.Empty:
                # no news: check etcd still answers (a partition does not close sockets)
                self.client.revision()
                next_probe = time.monotonic() + self.probe_interval
                continue
            if what == "error":
                raise item
            if what == "end":
                if self._stop.is_set():
                    return
                raise _WatchEnded("etcd watch ended")
            for ev in item:
                if ev.type == "DELETE":
                    self.bad.pop(ev.kv.key, None)
                    self._apply(ev.kv.key, None)
                else:
                    self._apply(ev.kv.key, self._parse(ev.kv))
