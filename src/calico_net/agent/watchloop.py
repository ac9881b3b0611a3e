"""The snapshot-then-watch loop shared by the agent's syncer and confd's watcher,
and `SnapshotWatcher`, the thread both run it in.

Each round reads a snapshot at some revision R, then watches from R+1 until the
watch fails. Any failure ends the round: the datastore is reported lost (with the
reason) and, after a jittered (0.5x..1x), capped exponential backoff, a new round
starts with a new snapshot. A compaction under the watch is retried at once (etcd is
fine); a dead etcd costs next to nothing. Nothing escapes: the loop only ends when
`stop` is set.
"""
from __future__ import annotations

import logging
import random
import threading
from typing import Any, Callable

from calico_net.agent.threadname import name_os_thread
from calico_net.datastore.errors import DatastoreError, DatastoreUnavailable
from calico_net.datastore.etcd import WatchCompacted

log = logging.getLogger(__name__)


def run_snapshot_watch(
    stop: threading.Event,
    snapshot: Callable[[], int],
    watch: Callable[[int], None],
    set_connected: Callable[[bool, str], None],
    *,
    what: str,
    backoff_initial: float,
    backoff_max: float,
    ended: tuple[type[BaseException], ...] = (),
    after_round: Callable[[], None] | None = None,
) -> None:
    """Rounds of `revision = snapshot()` then `watch(revision + 1)` until `stop`.

    `ended`: exceptions that end a watch in an expected way (reported with their
    text, no traceback); any other unexpected exception is logged with its
    traceback as "`what` failed". `after_round` runs after every round (cleanup)."""
    delay = backoff_initial
    while not stop.is_set():
        try:
            revision = snapshot()
            delay = backoff_initial
            watch(revision + 1)
        except WatchCompacted as e:
            set_connected(False, f"watch compacted ({e}); resyncing")
            delay = backoff_initial  # etcd is fine: resync at once
        except DatastoreUnavailable as e:
            set_connected(False, str(e))
        except DatastoreError as e:
            set_connected(False, f"datastore error: {e}")
        except ended as e:
            set_connected(False, str(e))
        except Exception as e:  # noqa: BLE001 - the watcher must survive anything
            log.exception("%s failed; resyncing", what)
            set_connected(False, f"watcher error: {e.__class__.__name__}: {e}")
        finally:
            if after_round is not None:
                after_round()
        if stop.is_set():
            break
        stop.wait(delay * (0.5 + random.random() / 2))
        delay = min(backoff_max, delay * 2)


class SnapshotWatcher:
    """`run_snapshot_watch` in a daemon thread of its own, until `stop()`.

    A subclass reads (`snapshot() -> revision`), follows (`_watch_from(revision)`,
    registering the watches it opens with `_track` so that `stop()` and the end of
    each round cancel them) and hears of the connection through `_report`."""

    thread_name = "watcher"
    #: exceptions that end a watch in an expected way (see run_snapshot_watch)
    ended: tuple[type[BaseException], ...] = ()

    def __init__(self, *, backoff_initial: float, backoff_max: float, probe_interval: float) -> None:
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.probe_interval = probe_interval
        self.connected = False
        self._reported = False   # no status told yet: the first one is news either way
        self.snapshots = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watches: list[Any] = []
        self._watch_lock = threading.Lock()

    def snapshot(self) -> int:
        raise NotImplementedError

    def _watch_from(self, start: int) -> None:
        raise NotImplementedError

    def _report(self, connected: bool, reason: str, changed: bool) -> None:
        """Told on every status (`changed`: it differs from the last one)."""

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._cancel_watches()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _track(self, watches: list[Any]) -> None:
        with self._watch_lock:
            self._watches = list(watches)

    def _tracking(self, watch: Any) -> bool:
        with self._watch_lock:
            return any(w is watch for w in self._watches)

    def _cancel_watches(self) -> None:
        with self._watch_lock:
            watches, self._watches = self._watches, []
        for w in watches:
            try:
                w.cancel()
            except Exception:  # noqa: BLE001 - best effort: the round is over either way
                pass

    def _set_connected(self, connected: bool, reason: str) -> None:
        # The first status is always news: an agent started while etcd is down must
        # say why it is not ready, not stay at "not connected yet".
        changed = connected != self.connected or not self._reported
        self._reported = True
        if changed:
            self.connected = connected
            if connected:
                log.info("%s: datastore in sync (%s)", self.thread_name, reason)
            else:
                log.warning("%s: datastore lost: %s", self.thread_name, reason)
        self._report(connected, reason, changed)

    def _run(self) -> None:
        name_os_thread()
        run_snapshot_watch(self._stop, self.snapshot, self._watch_from, self._set_connected,
                           what=self.thread_name, backoff_initial=self.backoff_initial,
                           backoff_max=self.backoff_max, ended=self.ended,
                           after_round=self._cancel_watches)
