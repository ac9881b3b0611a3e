"""Calico's rules that tie policies to tiers across resources (libcalico-go's clientv3):
a policy may only name a tier that exists, a tier may only be deleted when no policy is
in it, and the built-in tiers (`default`, `kube-admin`, `kube-baseline`) always exist
and cannot be deleted.

Pure functions over documents; calicoctl (`cli/resources.py`) runs them against the
datastore before it writes.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

from calico_net.errors import ValidationError
from calico_net.model.resources.policy import BUILTIN_TIERS, policy_tier, tier_order_action

__all__ = ["TIERED_KINDS", "check_tier_references", "default_tier_fields", "tier_delete_problem",
           "policies_in_tier"]

#: the kinds whose spec.tier names a tier (Calico checks the tier exists for each)
TIERED_KINDS = ("NetworkPolicy", "GlobalNetworkPolicy", "StagedNetworkPolicy",
                "StagedGlobalNetworkPolicy")


def _name(doc: Mapping[str, Any]) -> str | None:
    md = doc.get("metadata")
    name = md.get("name") if isinstance(md, Mapping) else None
    return name if isinstance(name, str) else None


def default_tier_fields(doc: dict[str, Any]) -> None:
    """Fill in a (validated) Tier document's omitted order and defaultAction with
    Calico's defaults (libcalico-go's DefaultTierFields; a built-in tier's own values)."""
    spec = doc.setdefault("spec", {})
    order, action = tier_order_action(_name(doc) or "", spec)
    spec.setdefault("order", int(order) if order == int(order) else order)
    spec.setdefault("defaultAction", action)


def check_tier_references(docs: Iterable[Mapping[str, Any]],
                          tier_exists: Callable[[str], bool]) -> None:
    """Raise ValidationError (path spec.tier) for the first policy document naming a
    tier that is neither built in, nor among `docs`, nor `tier_exists(name)`."""
    docs = list(docs)
    batch = {_name(d) for d in docs if d.get("kind") == "Tier"}
    known: dict[str, bool] = {}
    for doc in docs:
        if doc.get("kind") not in TIERED_KINDS:
            continue
        tier = policy_tier(doc.get("spec") or {})
        if tier in BUILTIN_TIERS or tier in batch:
            continue
        if tier not in known:
            known[tier] = tier_exists(tier)
        if not known[tier]:
            raise ValidationError(doc.get("kind"), _name(doc), [(
                "spec.tier", f'tier "{tier}" does not exist (create the Tier first; '
                             f'built in: {", ".join(BUILTIN_TIERS)})')])


def policies_in_tier(tier: str, docs_by_kind: Mapping[str, Iterable[Mapping[str, Any]]]) -> list[str]:
    """`Kind [namespace/]name` of every policy document in `tier`."""
    out = []
    for kind, docs in docs_by_kind.items():
        for d in docs:
            if policy_tier(d.get("spec") or {}) == tier:
                md = d.get("metadata") or {}
                ns = md.get("namespace")
                out.append(f"{kind} {ns + '/' if ns else ''}{md.get('name')}")
    return out


def tier_delete_problem(tier: str, in_tier: list[str]) -> str | None:
    """Why Tier `tier` cannot be deleted (None: it can): built in, or not empty."""
    if tier in BUILTIN_TIERS:
        return f'Tier "{tier}" cannot be deleted: it is a built-in tier'
    if in_tier:
        more = f" and {len(in_tier) - 3} more" if len(in_tier) > 3 else ""
        return (f'Tier "{tier}" cannot be deleted: it is not empty ({", ".join(in_tier[:3])}'
                f"{more}); delete or move its policies first")
    return None
