"""One consistent copy of what the agent and confd read, and a planned change on top.

`Snapshot` holds every resource the agent's policy dataplane and confd are fed,
keyed (kind, namespace or None, name), plus the raw IPAM affinity keys confd
exports blocks from. `read_snapshot` takes it from the datastore (one list per
kind); `Snapshot.with_changes` returns a copy with planned documents put or
deleted, which is what the preview renders as "after".
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

__all__ = ["agent_kinds", "CONFD_KINDS", "GLOBAL_KINDS", "Change", "Snapshot", "read_snapshot", "doc_key"]

def agent_kinds() -> tuple[str, ...]:
    """What the agent's policy dataplane takes (`daemon.DATAPLANE_KINDS`), its
    settings' FelixConfigurations, and Nodes (the overlay's allowed hosts)."""
    from calico_net.agent.daemon import DATAPLANE_KINDS

    return tuple(sorted(DATAPLANE_KINDS)) + ("FelixConfiguration", "Node")


#: what confd renders bird.cfg from (confd.index.RESOURCE_PLURALS)
CONFD_KINDS = ("Node", "BGPConfiguration", "BGPPeer", "IPPool", "BGPFilter")
#: kinds without a namespace (for a kind the model does not know)
GLOBAL_KINDS = frozenset({"GlobalNetworkPolicy", "HostEndpoint", "GlobalNetworkSet", "Profile", "IPPool",
                          "FelixConfiguration", "Node", "BGPConfiguration", "BGPPeer", "BGPFilter"})

Key = tuple[str, "str | None", str]


def doc_key(doc: Mapping[str, Any]) -> Key:
    """(kind, namespace or None, name) of a Calico v3 document; ValueError naming
    the field when it has none."""
    kind = doc.get("kind") if isinstance(doc, Mapping) else None
    meta = doc.get("metadata") if isinstance(doc, Mapping) else None
    if not isinstance(kind, str) or not kind:
        raise ValueError("kind: missing (a Calico v3 resource kind is required)")
    if not isinstance(meta, Mapping) or not isinstance(meta.get("name"), str) or not meta.get("name"):
        raise ValueError(f"{kind}: metadata.name: missing (a name is required)")
    ns = (meta.get("namespace") or "default") if _namespaced(kind) else None
    return kind, ns, str(meta["name"])


def _namespaced(kind: str) -> bool:
    try:
        from calico_net.datastore.store import kind_info

        return bool(kind_info(kind).namespaced)
    except Exception:  # noqa: BLE001 - a kind the model does not know
        return kind not in GLOBAL_KINDS


@dataclass(frozen=True)
class Change:
    """One planned change: `doc` to be stored under `key`, or None (deleted)."""

    key: Key
    doc: Mapping[str, Any] | None

    @classmethod
    def put(cls, doc: Mapping[str, Any]) -> "Change":
        return cls(doc_key(doc), doc)

    @classmethod
    def delete(cls, kind: str, name: str, namespace: str | None = None) -> "Change":
        return cls((kind, (namespace or "default") if _namespaced(kind) else None, name), None)


@dataclass
class Snapshot:
    """Resources by key, and the raw IPAM affinity keys (etcd KVs) confd reads."""

    docs: dict[Key, Mapping[str, Any]] = field(default_factory=dict)
    affinities: list[Any] = field(default_factory=list)
    revision: int = 0

    @classmethod
    def of(cls, docs: Iterable[Mapping[str, Any]], affinities: Iterable[Any] = ()) -> "Snapshot":
        return cls({doc_key(d): d for d in docs}, list(affinities))

    def with_changes(self, changes: Iterable[Change]) -> "Snapshot":
        docs = dict(self.docs)
        for c in changes:
            if c.doc is None:
                docs.pop(c.key, None)
            else:
                docs[c.key] = c.doc
        return Snapshot(docs, list(self.affinities), self.revision)

    def of_kinds(self, kinds: Iterable[str]) -> list[Mapping[str, Any]]:
        want = set(kinds)
        return [d for k, d in self.docs.items() if k[0] in want]

    def nodes(self) -> list[str]:
        """The calico Nodes' names, sorted."""
        return sorted(k[2] for k in self.docs if k[0] == "Node")

    def confd_kvs(self, node: str) -> list[Any]:
        """What confd's `BGPIndex` of `node` loads: its resources as etcd KVs (the
        stored JSON under their keys) and the node's own affinity keys."""
        from calico_net.datastore.etcd import KV
        from calico_net.datastore.store import resource_key
        from calico_net.ipam import keys as ipam_keys

        out = []
        for (kind, ns, name), doc in self.docs.items():
            if kind in CONFD_KINDS:
                out.append(KV(resource_key(kind, name, ns), json.dumps(doc).encode(), 1, 1, 1))
        prefix = ipam_keys.host_prefix(node)
        out.extend(kv for kv in self.affinities if kv.key.startswith(prefix))
        return out


def read_snapshot(datastore: Any) -> Snapshot:
    """Every resource the agent and confd read, and the IPAM affinity keys, from
    `datastore` (a `calico_net.datastore.Datastore`)."""
    from calico_net.ipam import keys as ipam_keys

    docs: dict[Key, Mapping[str, Any]] = {}
    revision = 0
    for kind in dict.fromkeys(agent_kinds() + CONFD_KINDS):
        items, rev = datastore.list(kind)
        revision = max(revision, int(rev or 0))
        for d in items:
            docs[doc_key(d)] = d
    kvs, rev = datastore.client.get_prefix(ipam_keys.host_prefix())
    return Snapshot(docs, list(kvs), max(revision, int(rev or 0)))
