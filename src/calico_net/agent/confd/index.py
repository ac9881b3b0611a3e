"""confd's in-memory view of the datastore: which etcd prefixes it reads
(:func:`watched_prefixes`) and :class:`BGPIndex`, etcd key → parsed and validated
resource plus this node's affine block CIDRs, from which :meth:`BGPIndex.render_input`
takes one consistent copy for the renderer. Pure state: no I/O, thread-safe.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from calico_net.datastore.etcd import KV, key_problem, show_key
from calico_net.datastore.store import RESOURCE_PREFIX
from calico_net.ipam import keys as ipam_keys

log = logging.getLogger(__name__)

#: The resource kinds confd reads, by their plural in Calico's key layout.
RESOURCE_PLURALS = {
    "nodes": "Node",
    "bgpconfigurations": "BGPConfiguration",
    "bgppeers": "BGPPeer",
    "ippools": "IPPool",
    "bgpfilters": "BGPFilter",
}


def watched_prefixes(node_name: str) -> list[str]:
    """The etcd prefixes confd snapshots and watches for ``node_name``."""
    return [f"{RESOURCE_PREFIX}{plural}/" for plural in RESOURCE_PLURALS] + [
        ipam_keys.host_prefix(node_name)
    ]

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
    filters: list[dict[str, Any]]
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
        live = ipam_keys.live_affinity(kv.key, kv.value)
        return None if live is None else str(live[1])

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
            if revision < self.revision:
                # etcd's history restarted (restored from a snapshot, or another
                # cluster at the address): a mod revision no longer names one value
                log.warning("etcd's revision went back from %d to %d: every value is parsed afresh",
                            self.revision, revision)
                self._parsed_rev.clear()
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
                filters=by_kind["BGPFilter"],
                revision=self.revision,
            )
