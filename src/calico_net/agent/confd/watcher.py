"""confd's conversation with etcd: :class:`Watcher` takes a snapshot of every watched
prefix at one revision, then watches each from the next revision, in a thread of its
own; it only writes into a :class:`~.index.BGPIndex` and calls back on change and on
connection status. Errors, compaction and a silent etcd start a fresh snapshot after
a backoff (:class:`calico_net.agent.watchloop.SnapshotWatcher`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from calico_net.agent.confd.index import BGPIndex
from calico_net.agent.watchloop import SnapshotWatcher
from calico_net.datastore.etcd import KV

log = logging.getLogger(__name__)


class _WatchEnded(Exception):
    pass


class Watcher(SnapshotWatcher):
    """Snapshot + watch of :func:`watched_prefixes` in a daemon thread.

    The snapshot reads every prefix at one revision R (the first read fixes R, the
    others ask for it), so the index is one consistent view; one watch per prefix then
    starts at R+1, each in its own thread feeding one queue, so the index is only ever
    written from this watcher's main thread. Any error cancels every watch and starts
    over with a fresh snapshot after a backoff.
    """

    thread_name = "confd-watcher"
    ended = (_WatchEnded,)

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
        super().__init__(backoff_initial=backoff_initial, backoff_max=backoff_max,
                         probe_interval=probe_interval)
        self.client = client
        self.index = index
        self.prefixes = prefixes
        self.on_change = on_change
        self.on_status = on_status

    def _report(self, connected: bool, reason: str, changed: bool) -> None:
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

    def _watch_from(self, start: int) -> None:
        events: queue.Queue[tuple[str, Any]] = queue.Queue()
        watches = [self.client.watch_prefix(p, start) for p in self.prefixes]
        self._track(watches)

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
