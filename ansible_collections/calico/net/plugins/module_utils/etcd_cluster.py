# -*- coding: utf-8 -*-
# Copyright: calico.net contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""etcd cluster membership: adding, updating and removing members, with retries.

`calico_net.datastore.EtcdClient` lists members; adding, updating and removing them
is only needed by the `etcd_member` module (and so the etcd role), so those small
calls live here, on the client's `member_*` methods (its endpoint fail-over and TLS
settings, over etcd's gRPC Cluster service). Member IDs are uint64s; etcdctl shows
them in hex, and so do the results here.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from ansible_collections.calico.net.plugins.module_utils.common import ModuleError

# etcd refuses a membership change that its strict reconfiguration check finds unsafe:
# "etcdserver: unhealthy cluster" while the member that got the request has not been
# connected to enough peers for 5 s (a member just (re)started, or one is down), and
# "re-configuration failed due to not enough started members" when too few members
# would be started for the new quorum. Both pass once the members are up and connected,
# so membership calls retry them - a bounded number of times, with a growing wait -
# and give up with a message that says so. Any other error is raised at once.
TRANSIENT = ("unhealthy cluster", "not enough started members")
RETRIES = 10
RETRY_DELAY = 1.0
MAX_RETRY_DELAY = 10.0  # the wait doubles up to this (or up to retry_delay, if larger)


def is_transient(error: BaseException) -> bool:
    text = str(error)
    return any(t in text for t in TRANSIENT)


def etcd_reason(error: BaseException) -> str:
    """etcd's own words in a transient refusal ("etcdserver: unhealthy cluster"),
    without the transport's framing (a 503 reads as "cannot reach etcd: ...")."""
    text = str(error)
    for t in TRANSIENT:
        end = text.find(t)
        if end >= 0:
            start = text.rfind("etcdserver: ", 0, end)
            return text[start if start >= 0 else end:end + len(t)]
    return text


class Retry:
    """How a membership call retries etcd's transient refusal; counts the retries made."""

    def __init__(self, retries: int = RETRIES, delay: float = RETRY_DELAY,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if retries < 0:
            raise ModuleError(f"retries must be 0 or more, not {retries}")
        if delay < 0:
            raise ModuleError(f"retry_delay must be 0 or more, not {delay}")
        self.retries = retries
        self.delay = float(delay)
        self.sleep = sleep
        self.retried = 0  # retries made by this policy's calls, in all

    def wait(self, n: int) -> float:
        """Seconds to wait before retry number n (0-based)."""
        return min(self.delay * 2 ** min(n, 30), max(self.delay, MAX_RETRY_DELAY))

    def __call__(self, what: str, call: Callable[[], Any]) -> Any:
        started = time.monotonic()
        n = 0
        while True:
            try:
                return call()
            except Exception as e:  # DatastoreError; its message carries etcd's reason
                if not is_transient(e):
                    raise
                if n >= self.retries:
                    raise ModuleError(
                        f"etcd refused to {what} {n + 1} time{'s' if n else ''} in "
                        f"{time.monotonic() - started:.0f} s (retries={self.retries}): {etcd_reason(e)}. etcd refuses a "
                        "membership change while it would leave too few started, connected members for "
                        "quorum, and for 5 s after a member (re)joins; start or reconnect the missing members "
                        "and run again, or raise retries / retry_delay. Nothing was changed.",
                        attempts=n + 1, etcd_error=str(e)) from e
                self.sleep(self.wait(n))
                n += 1
                self.retried += 1


def member_view(member: dict[str, Any]) -> dict[str, Any]:
    """A member as the module returns it."""
    raw_id = member.get("ID")
    return dict(
        id=format(int(raw_id), "x") if raw_id not in (None, "") else None,
        name=member.get("name") or "",
        peer_urls=sorted(member.get("peerURLs") or []),
        client_urls=sorted(member.get("clientURLs") or []),
        is_learner=bool(member.get("isLearner", False)),
        started=bool(member.get("name")),
    )


def list_members(client: Any) -> list[dict[str, Any]]:
    return sorted((member_view(m) for m in client.members()), key=lambda m: (m["name"], m["peer_urls"]))


def add_member(client: Any, peer_urls: list[str], learner: bool = False, *,
               retry: Retry | None = None) -> dict[str, Any]:
    retry = retry or Retry()
    answer = retry(f"add the member {', '.join(peer_urls)}",
                   lambda: client.member_add(list(peer_urls), learner=learner))
    return member_view(answer["member"])


def update_member(client: Any, member_id: str, peer_urls: list[str], *, retry: Retry | None = None) -> None:
    retry = retry or Retry()
    retry(f"update the member {member_id}", lambda: client.member_update(int(member_id, 16), list(peer_urls)))


def remove_member(client: Any, member_id: str, *, retry: Retry | None = None) -> None:
    retry = retry or Retry()
    retry(f"remove the member {member_id}", lambda: client.member_remove(int(member_id, 16)))


def initial_cluster(members: list[dict[str, Any]], new_name: str | None, new_urls: list[str]) -> str:
    """ETCD_INITIAL_CLUSTER for a new member, as `etcdctl member add` prints it: every
    started member's name=peerURL, plus the new member's."""
    parts = []
    for m in members:
        name = m["name"]
        if set(m["peer_urls"]) & set(new_urls):
            name = new_name or name
        if not name:
            continue  # another member that was added but has not started yet
        parts += [(name, url) for url in m["peer_urls"]]
    return ",".join(f"{name}={url}" for name, url in sorted(parts))
