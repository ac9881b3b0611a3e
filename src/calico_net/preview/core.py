"""What a planned change would do on each node: its nftables and bird.cfg diffs.

`preview(snapshot, changes)` renders, for every calico Node of the datastore,
table inet calico (the agent's `PolicyDataplane`, `ruleset.desired_dataplane`)
and bird.cfg (confd's renderer, `bird.render_node_bird`) from the snapshot and
from the snapshot with the changes, and keeps only the nodes where either
differs. Which endpoints are local to a node comes from the WorkloadEndpoints'
and HostEndpoints' ``spec.node``, as on the node itself. The ruleset is only
rendered when a change is of a kind the agent reads, bird.cfg only when one is
of a kind confd reads.

The nftables diff is per object (chain, set, verdict map): the chain's rules in
order, a set's elements sorted. In the kernel form (`form="kernel"`, or "auto"
where nft can run in a scratch network namespace) the lines are what ``nft list
table inet calico`` will show on the host after the change; in the rendered form
they are the agent's own rule lines.
"""
from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .bird import render_node_bird
from .ruleset import (
    NftFormError,
    Objects,
    canonical_listing,
    desired_dataplane,
    kernel_form_available,
    objects_of_ruleset,
    parse_listing,
)
from .snapshot import CONFD_KINDS, Change, Snapshot, agent_kinds, read_snapshot

log = logging.getLogger(__name__)

__all__ = ["ObjectChange", "NodePreview", "diff_objects", "preview", "preview_datastore", "text_report", "FORMS"]

FORMS = ("auto", "kernel", "rendered")


@dataclass(frozen=True)
class ObjectChange:
    """One chain/set/map whose lines differ (before/after None: absent)."""

    name: str
    before: tuple[str, ...] | None
    after: tuple[str, ...] | None

    def unified(self, node: str = "", context: int = 3) -> str:
        a, b = list(self.before or ()), list(self.after or ())
        where = f"{node}: " if node else ""
        lines = difflib.unified_diff(a, b, fromfile=f"{where}{self.name}" + ("" if self.before is not None else " (absent)"),
                                     tofile=f"{where}{self.name}" + ("" if self.after is not None else " (absent)"),
                                     lineterm="", n=context)
        return "\n".join(lines) + "\n"

    def added(self) -> list[str]:
        return [ln[2:] for ln in self._ops() if ln.startswith("+")]

    def removed(self) -> list[str]:
        return [ln[2:] for ln in self._ops() if ln.startswith("-")]

    def _ops(self) -> list[str]:
        return [ln for ln in difflib.ndiff(list(self.before or ()), list(self.after or ()))
                if ln[:1] in "+-" and ln[1:2] == " "]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "state": "added" if self.before is None else
                "removed" if self.after is None else "changed",
                "removed": self.removed(), "added": self.added()}


def diff_objects(before: Objects, after: Objects) -> list[ObjectChange]:
    """The objects whose lines differ, by name."""
    out = []
    for name in sorted(set(before) | set(after)):
        a, b = before.get(name), after.get(name)
        if a != b:
            out.append(ObjectChange(name, a, b))
    return out


@dataclass
class NodePreview:
    """One node's differences (only nodes with some are reported)."""

    node: str
    nft: list[ObjectChange] = field(default_factory=list)
    nft_form: str = "rendered"
    bird_before: str | None = None
    bird_after: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def bird_changed(self) -> bool:
        return self.bird_before != self.bird_after

    def nft_diff(self) -> str:
        return "".join(c.unified(self.node) for c in self.nft)

    def bird_diff(self) -> str:
        if not self.bird_changed:
            return ""
        lines = difflib.unified_diff((self.bird_before or "").splitlines(), (self.bird_after or "").splitlines(),
                                     fromfile=f"{self.node}: bird.cfg", tofile=f"{self.node}: bird.cfg",
                                     lineterm="", n=3)
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"node": self.node}
        if self.nft:
            out["nftables"] = {"form": self.nft_form, "objects": [c.to_json() for c in self.nft],
                               "diff": self.nft_diff()}
        if self.bird_changed:
            out["bird"] = {"diff": self.bird_diff()}
        if self.notes:
            out["notes"] = list(self.notes)
        return out


def _kinds(changes: Iterable[Change]) -> set[str]:
    return {c.key[0] for c in changes}


def _nft_changes(before: Snapshot, after: Snapshot, node: str, form: str, env: Mapping[str, str] | None,
                 config_file: str, notes: list[str]) -> tuple[list[ObjectChange], str]:
    dp0 = desired_dataplane(before, node, env, config_file)
    dp1 = desired_dataplane(after, node, env, config_file)
    rendered = diff_objects(objects_of_ruleset(dp0.rs), objects_of_ruleset(dp1.rs))
    if not rendered or form == "rendered" or (form == "auto" and not kernel_form_available()):
        return rendered, "rendered"
    try:
        a = parse_listing(canonical_listing(dp0.ruleset_text()))
        b = parse_listing(canonical_listing(dp1.ruleset_text()))
    except NftFormError as exc:
        if form == "kernel":
            raise
        notes.append(f"nftables lines in the agent's form: {exc}")
        return rendered, "rendered"
    return diff_objects(a, b), "kernel"


def preview(snap: Snapshot, changes: list[Change], *, nodes: Iterable[str] | None = None,
            form: str = "auto", env: Mapping[str, str] | None = None, config_file: str = "",
            bird_options: Any = None) -> list[NodePreview]:
    """Per node (default: every Node in the snapshot both before and after the change)
    the nftables objects and bird.cfg that the changes would alter; only nodes
    with a difference. `env`/`config_file`: the agent's FELIX_* environment and
    config file, when known (default: neither; FelixConfigurations apply)."""
    if form not in FORMS:
        raise ValueError(f"form: {form!r} is not one of {', '.join(FORMS)}")
    after = snap.with_changes(changes)
    kinds = _kinds(changes)
    want_nft = bool(kinds & set(agent_kinds()))
    want_bird = bool(kinds & set(CONFD_KINDS))
    # a Node the change creates or deletes has no configuration on one side: left out
    names = sorted(set(snap.nodes()) & set(after.nodes())) if nodes is None else list(nodes)
    out = []
    for node in names:
        np = NodePreview(node)
        if want_nft:
            np.nft, np.nft_form = _nft_changes(snap, after, node, form, env, config_file, np.notes)
        if want_bird:
            b0 = render_node_bird(snap, node, bird_options)
            b1 = render_node_bird(after, node, bird_options)
            if b0 != b1:
                np.bird_before, np.bird_after = b0, b1
        if np.nft or np.bird_changed:
            out.append(np)
    return out


def preview_datastore(datastore: Any, changes: list[Change], *, nodes: Iterable[str] | None = None,
                      form: str = "auto") -> list[NodePreview]:
    """`preview` of `changes` on what `datastore` holds now. Without a calico Node
    (none stored, none in the changes) there is nothing to render: [] after one list."""
    if nodes is None and not any(c.key[0] == "Node" and c.doc is not None for c in changes):
        stored, _rev = datastore.list("Node")
        if not stored:
            return []
    return preview(read_snapshot(datastore), changes, nodes=nodes, form=form)


def text_report(previews: list[NodePreview]) -> str:
    """The unified diffs, node by node (calicoctl's output)."""
    if not previews:
        return "No node's ruleset or bird.cfg changes.\n"
    parts = []
    for p in previews:
        what = [w for w, on in (("nftables", bool(p.nft)), ("bird.cfg", p.bird_changed)) if on]
        parts.append(f"=== node {p.node}: {' and '.join(what)} change\n")
        for n in p.notes:
            parts.append(f"# {n}\n")
        parts.append(p.nft_diff())
        parts.append(p.bird_diff())
    return "".join(parts)
