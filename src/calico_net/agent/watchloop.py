"""The snapshot-then-watch loop shared by the agent's syncer and confd's watcher.

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
from typing import Callable

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
