# -*- coding: utf-8 -*-
# Copyright: calico.net contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""etcd cluster membership through the v3 JSON gateway (`/v3/cluster/member/*`).

`calico_net.datastore.EtcdClient` lists members; adding, updating and removing them
is only needed by the `etcd_member` module (and so the etcd role), so those small
calls live here, on the client's `member_*` methods (its endpoint fail-over and TLS
settings). Member IDs are uint64s that the gateway sends as decimal
strings; etcdctl shows them in hex, and so do the results here.
"""

from __future__ import annotations

import time
from typing import Any, Callable

# etcd refuses a membership change with "unhealthy cluster" while its strict
# reconfiguration check fails - for a few seconds after a member has joined or restarted
# (the leader wants every member connected for 5 s first). That passes by itself, so
# membership calls wait it out, up to this long, before giving up with etcd's answer.
UNHEALTHY_WAIT = 60.0
UNHEALTHY_STEP = 1.0


def _retry(call: Callable[[], Any], *, wait: float | None = None) -> Any:
    """Run a membership call, waiting out etcd's transient "unhealthy cluster" refusal."""
    deadline = time.monotonic() + (UNHEALTHY_WAIT if wait is None else wait)
    while True:
        try:
            return call()
        except Exception as e:  # DatastoreError; its message carries etcd's reason
            if "unhealthy cluster" not in str(e) or time.monotonic() >= deadline:
                raise
            time.sleep(UNHEALTHY_STEP)


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


def add_member(client: Any, peer_urls: list[str], learner: bool = False) -> dict[str, Any]:
    return member_view(_retry(lambda: client.member_add(list(peer_urls), learner=learner))["member"])


def update_member(client: Any, member_id: str, peer_urls: list[str]) -> None:
    _retry(lambda: client.member_update(int(member_id, 16), list(peer_urls)))


def remove_member(client: Any, member_id: str) -> None:
    _retry(lambda: client.member_remove(int(member_id, 16)))


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
