"""The policy side of Felix's calculation graph: a pure in-memory index (no I/O).

`PolicyIndex` owns the model of the policy this host must program: every endpoint
(workload and host, cluster-wide) and network set with its addresses and effective
labels, the profiles, the policies and the IP pools, and from those

* for each *local* endpoint (``spec.node == node_name``) the policies that apply to
  it, ordered as Calico orders them (``order`` ascending, missing = last, then name),
  matched by a `SelectorMatcher` of policy selectors × local endpoints, and grouped
  by tier (`tier_groups`: tiers by ``order`` then name, as Felix's policy sorter);
* for each selector used by a rule (``selector``/``notSelector``/``namespaceSelector``/
  ``serviceAccounts``, already scoped by `rules.compile_rule`) the nft sets of the
  addresses of every member it matches, kept by `SelectorSets` over a
  `SelectorMatcher` of rule selectors × all members (both matchers share one label
  index).

`update()` only records the new document and marks it dirty; `recompute()` folds all
pending changes in, step by step, and returns an `IndexChanges` naming what the
dataplane must rewrite. The records and their parsing live in `records`, the
matcher in `selector_matcher`, the set contents in `selector_sets`.
"""
from __future__ import annotations

import ipaddress
import logging
from typing import Any, Callable, Iterator, Mapping

from calico_net.model.resources.policy import BUILTIN_TIERS, policy_tier, tier_order_action
from calico_net.model.selector import Selector

from . import nftstr
from .records import (
    ENDPOINT_KINDS,
    NETSET_KINDS,
    POLICY_KINDS,
    IndexChanges,
    Key,
    Member,
    Policy,
    Profile,
    member_for,
    policy_from_doc,
    policy_sort_key,
    profile_from_doc,
)
from .rules import selector_hash
from .selector_matcher import SelectorMatcher
from .selector_sets import SelectorSets, set_type

log = logging.getLogger(__name__)

# the names the dataplane, the daemon and the tests import from here
__all__ = [
    "ENDPOINT_KINDS",
    "POLICY_KINDS",
    "Key",
    "Member",
    "Policy",
    "Profile",
    "IndexChanges",
    "SelectorMatcher",
    "PolicyIndex",
]


class PolicyIndex:
    """Pure model of the policy this host must program (see the module docstring)."""

    def __init__(self, node_name: str) -> None:
        self.node_name = node_name
        self.members: dict[Key, Member] = {}
        #: the members that are this node's endpoints
        self.local_keys: set[Key] = set()
        self.policies: dict[Key, Policy] = {}
        self.profiles: dict[str, Profile] = {}
        self.pools: dict[str, Mapping[str, Any]] = {}
        self.profile_members: dict[str, set[Key]] = {}
        # rule selectors × all members; it owns the label index (effective labels)
        self.rule_matcher = SelectorMatcher()
        # policy selectors × local endpoints (same label index, restricted)
        self.policy_matcher = SelectorMatcher(self.rule_matcher.index, use_universe=True)
        self._changes = IndexChanges()
        self.sets = SelectorSets(self.rule_matcher, self.members, self._changes)
        # pending raw updates
        self._pending_members: dict[Key, Member | None] = {}
        self._pending_policies: dict[Key, Mapping[str, Any] | None] = {}
        self._pending_profiles: dict[str, Mapping[str, Any] | None] = {}
        self._pools_dirty = False
        # tiers: name -> (order, defaultAction) of each Tier document; each policy's tier
        self.tiers: dict[str, tuple[float, str]] = {}
        self.policy_tiers: dict[Key, str] = {}
        self._tier_dirty: set[str] = set()      # tiers whose document or members changed
        #: set by recompute when some endpoint's tier grouping may have changed; the
        #: dataplane clears it once its per-combination caches are dropped
        self.tiers_changed = False

    # -- input -----------------------------------------------------------------

    def update_member(self, member: Member) -> None:
        """Record a new version of an endpoint given as its record (its key is the one
        `update` files the endpoint under).  No computation."""
        self._pending_members[member.key] = member

    def update(self, kind: str, name: str, namespace: str | None,
               doc: Mapping[str, Any] | None) -> None:
        """Record a new version (None: deleted) of one resource.  No computation."""
        if kind in ENDPOINT_KINDS or kind in NETSET_KINDS:
            if kind in ("HostEndpoint", "GlobalNetworkSet"):
                namespace = None
            elif namespace is None and doc is not None:
                namespace = (doc.get("metadata") or {}).get("namespace") or "default"
            elif namespace is None:
                namespace = "default"
            key = (kind, namespace, name)
            self._pending_members[key] = member_for(key, doc)   # the record waits, not the doc
        elif kind in POLICY_KINDS:
            if kind == "GlobalNetworkPolicy":
                namespace = None
            elif namespace is None:
                namespace = ((doc or {}).get("metadata") or {}).get("namespace") or "default"
            key = (kind, namespace, name)
            self._pending_policies[key] = doc
            tier = policy_tier((doc or {}).get("spec") or {}) if doc is not None else None
            old = self.policy_tiers.get(key)
            if tier != old:
                if tier is None:
                    del self.policy_tiers[key]
                else:
                    self.policy_tiers[key] = tier
                if old is not None and tier is not None:
                    self._tier_dirty.update((old, tier))
        elif kind == "Tier":
            if doc is None:
                self.tiers.pop(name, None)
            else:
                self.tiers[name] = tier_order_action(name, doc.get("spec"))
            self._tier_dirty.add(name)
        elif kind == "Profile":
            self._pending_profiles[name] = doc
        elif kind == "IPPool":
            if doc is None:
                self.pools.pop(name, None)
            else:
                self.pools[name] = dict(doc.get("spec") or {})
            self._pools_dirty = True
        else:
            raise ValueError(f"PolicyIndex does not handle kind {kind!r}")

    @property
    def dirty(self) -> bool:
        return bool(self._pending_members or self._pending_policies
                    or self._pending_profiles or self._pools_dirty or self._tier_dirty)

    # -- queries ---------------------------------------------------------------

    def is_local(self, key: Key) -> bool:
        return key in self.local_keys

    def local_endpoints(self) -> list[Key]:
        return list(self.local_keys)

    def policies_for(self, ep: Key, direction: str) -> list[Policy]:
        """Policies applying to local endpoint `ep` in `direction` (Ingress/Egress), in order."""
        return [p for p in self.ordered_policies(ep) if direction in p.types]

    def ordered_policies(self, ep: Key) -> list[Policy]:
        """All policies applying to local endpoint `ep`, in Calico's order."""
        pols = self.policies
        out = [pols[k] for k in self.policy_matcher.matches_of(ep) if k in pols]
        if len(out) > 1:
            out.sort(key=policy_sort_key)
        return out

    def tier_info(self, tier: str) -> tuple[tuple[Any, ...], float | None, str]:
        """(sort key, order, defaultAction) of `tier`. As Felix: tiers with a Tier
        document (or built in) by order then name; a tier without one after them all,
        by name, ending in Deny."""
        got = self.tiers.get(tier) or BUILTIN_TIERS.get(tier)
        if got is None:
            return (1, 0.0, tier), None, "Deny"
        return (0, got[0], tier), got[0], got[1]

    def tier_groups(self, pols: list[Policy]) -> list[tuple[str, float | None, str, list[Policy]]]:
        """`pols` (in policy order) grouped by tier: (tier, order, defaultAction,
        policies) in tier order."""
        tiers = self.policy_tiers
        groups: dict[str, list[Policy]] = {}
        for p in pols:
            groups.setdefault(tiers.get(p.key, "default"), []).append(p)
        out = []
        for name, members in groups.items():
            sort, order, action = self.tier_info(name)
            out.append((sort, (name, order, action, members)))
        out.sort(key=lambda t: t[0])
        return [g for _, g in out]

    def profiles_for(self, ep: Key) -> list[str]:
        """The endpoint's profiles that exist, in the endpoint's order."""
        m = self.members.get(ep)
        if m is None:
            return []
        return [p for p in m.profiles if p in self.profiles]

    # the nft sets rule selectors compile to (kept by `SelectorSets`)

    def has_nets(self, sel: Selector, family: int) -> bool:
        return self.sets.exists(f"c{family}_{selector_hash(sel)}")

    def set_exists(self, name: str) -> bool:
        return self.sets.exists(name)

    def set_type(self, name: str) -> str:
        return set_type(name)

    def set_elements(self, name: str) -> set[str]:
        return self.sets.elements(name)

    def element_present(self, name: str, elem: str) -> bool:
        return self.sets.element_present(name, elem)

    def all_set_names(self) -> list[str]:
        return self.sets.names()

    def pool_cidrs(self) -> tuple[set[str], set[str], set[str], set[str]]:
        """(all v4, all v6, natOutgoing v4, natOutgoing v6) pool CIDRs, collapsed."""
        all4, all6, nat4, nat6 = [], [], [], []
        for spec in self.pools.values():
            try:
                net = ipaddress.ip_network(spec.get("cidr", ""), strict=False)
            except ValueError:
                continue
            (all4 if net.version == 4 else all6).append(net)
            if spec.get("natOutgoing"):
                (nat4 if net.version == 4 else nat6).append(net)

        def col(nets: list[Any]) -> set[str]:
            return {nftstr.cidr(n) for n in ipaddress.collapse_addresses(nets)} if nets else set()
        return col(all4), col(all6), col(nat4), col(nat6)

    # -- recompute -------------------------------------------------------------

    def recompute(self) -> IndexChanges:
        """Fold all pending updates in; return what changed since the last call.

        The steps run in this order because each feeds the next: a changed member or
        profile first retracts the member's set contributions (it is "detached"),
        then effective labels reach the matchers, then policies move their selector
        usage, then the rule selectors are re-matched and the sets settle (detached
        members contribute anew), and last the policy selectors are re-matched
        against the local endpoints."""
        ch = self._changes
        # members whose set contributions are retracted, and members whose effective
        # labels may have changed: insertion-ordered (dicts as ordered sets), so the
        # steps walk the members in the order they came (and were allocated in),
        # not in hash order, which on a cold start costs a cache miss per member
        detached: dict[Key, None] = {}
        relabel: dict[Key, None] = {}
        self._apply_member_updates(ch, detached, relabel)
        self._apply_profile_updates(ch, detached, relabel)
        groups, gone = self._push_effective_labels(relabel)
        self._apply_policy_updates(ch)
        # (the members detached are the members relabelled: both steps above mark
        # each member in both or in neither, so the counts agree; the label groups
        # spare settle a look-up per member)
        if len(detached) == len(relabel):
            self.sets.settle(detached, groups, gone)
        else:
            self.sets.settle(detached)
        self._match_policies_to_endpoints(ch)
        if self._tier_dirty:
            # a tier's order or default action, or a policy's tier, changed: the
            # endpoints its policies select are re-dispatched
            dirty, self._tier_dirty = self._tier_dirty, set()
            for key, tier in self.policy_tiers.items():
                if tier in dirty and key in self.policies:
                    ch.endpoints.update(self.policy_matcher.members_of(key))
            self.tiers_changed = True
        if self._pools_dirty:
            ch.pools = True
            self._pools_dirty = False
        self._changes = self.sets.changes = IndexChanges()
        return ch

    def _file_under_profiles(self, key: Key, profiles: tuple[str, ...]) -> None:
        profile_members = self.profile_members
        for p in profiles:
            s = profile_members.get(p)
            if s is None:
                s = profile_members[p] = set()
            s.add(key)

    def _apply_member_updates(self, ch: IndexChanges, detached: dict[Key, None],
                              relabel: dict[Key, None]) -> None:
        """Pending endpoints and network sets become records; a changed one is
        detached, re-filed under its profiles and relabelled; a local endpoint that
        changed (or stopped or started being local) is to be re-dispatched."""
        pending, self._pending_members = self._pending_members, {}
        members, profile_members, node = self.members, self.profile_members, self.node_name
        detach, contributed, local_keys = self.sets.detach, self.sets.contributed, self.local_keys
        if not members and not contributed:
            # a cold start: every member is new (nothing to retract, no profiles to
            # leave, none was local); the loop below, without what cannot apply
            new_keys = dict.fromkeys(pending)
            detached.update(new_keys)
            relabel.update(new_keys)
            endpoints = ch.endpoints
            for key, new in pending.items():
                if new is None:
                    continue
                members[key] = new
                if new.profiles:
                    self._file_under_profiles(key, new.profiles)
                if new.node == node and new.is_endpoint:
                    endpoints.add(key)
                    local_keys.add(key)
            return
        for key, new in pending.items():
            old = members.get(key)
            if new is not None and old is not None and new == old:
                continue
            if old is None and key not in contributed:
                detached[key] = None    # a new member: nothing to retract (detach's own fast case)
            else:
                detach(key, detached)
            if old is not None:
                for p in old.profiles:
                    s = profile_members.get(p)
                    if s is not None:
                        s.discard(key)
                        if not s:
                            del profile_members[p]
            if new is None:
                members.pop(key, None)
            else:
                members[key] = new
                self._file_under_profiles(key, new.profiles)
            relabel[key] = None
            was_local = old is not None and old.node == node and old.is_endpoint
            is_local = new is not None and new.node == node and new.is_endpoint
            if was_local or is_local:
                ch.endpoints.add(key)
                if is_local:
                    local_keys.add(key)
                else:
                    local_keys.discard(key)

    def _apply_profile_updates(self, ch: IndexChanges, detached: dict[Key, None],
                               relabel: dict[Key, None]) -> None:
        """Pending profiles become records: their labels feed their members'
        effective labels (members detached and relabelled when those change), their
        rules feed selector usage; appearing or vanishing changes the class chains of
        their local endpoints."""
        pending, self._pending_profiles = self._pending_profiles, {}
        for name, old, new in _changed(pending, self.profiles, profile_from_doc):
            ch.profiles.add(name)
            members = self.profile_members.get(name, _NO_KEYS)
            if (old is None) != (new is None):
                # class chains list only existing profiles
                ch.endpoints.update(self.local_keys.intersection(members))
            if (old.labels_to_apply if old else {}) != (new.labels_to_apply if new else {}):
                for k in members.difference(detached):
                    self.sets.detach(k, detached)
                relabel.update(dict.fromkeys(members))
            self.sets.move_uses(("profile", name), old.rules() if old else (),
                                new.rules() if new else ())
            if new is None:
                del self.profiles[name]
            else:
                self.profiles[name] = new

    def _push_effective_labels(self, relabel: dict[Key, None]
                               ) -> tuple[list[tuple[list[Key], list[Member]]], list[Key]]:
        """The effective labels of relabelled members into the label index (all
        members for rule selectors; local endpoints only for policy selectors).
        Returns the relabelled members that exist, as (keys, records) of members
        with the same effective labels, and the keys of those that are gone."""
        members, node = self.members, self.node_name
        rule_set, policy_set = self.rule_matcher.set_item, self.policy_matcher.set_item
        # the policy matcher only ever held local endpoints (its universe)
        policy_items = self.policy_matcher.universe
        assert policy_items is not None
        # members with the same own labels and profiles (the pods of a deployment,
        # all of them on a cold start) have the same effective labels: made once
        # per (own label set, profiles) in this call (the own label sets are the
        # members' shared ones, alive throughout, so their ids are stable here),
        # and the members taking them reach the rule matcher together
        made: dict[tuple[int, tuple[str, ...]],
                   tuple[dict[str, str], tuple[Any, ...], list[Key], list[Member]]] = {}
        gone: list[Key] = []
        for key in relabel:
            m = members.get(key)
            if m is None:
                rule_set(key, None)
                policy_set(key, None)
                gone.append(key)
                continue
            ck = (id(m.own_labels), m.profiles)
            got = made.get(ck)
            if got is None:
                labels = self._effective_labels(m)
                got = made[ck] = (labels, tuple(labels.items()), [key], [m])
            else:
                got[2].append(key)
                got[3].append(m)
            if m.node == node and m.is_endpoint:
                policy_set(key, got[0])
            elif key in policy_items:
                policy_set(key, None)
        rule_set_many = self.rule_matcher.set_items
        for labels, gid, keys, _recs in made.values():
            rule_set_many(keys, labels, gid)
        return [(keys, recs) for _labels, _gid, keys, recs in made.values()], gone

    def _effective_labels(self, m: Member) -> dict[str, str]:
        labels: dict[str, str] = {}
        # earlier profiles win over later ones; the endpoint's own labels win over all
        for p in reversed(m.profiles):
            prof = self.profiles.get(p)
            if prof is not None:
                labels.update(prof.labels_to_apply)
        labels.update(m.own_labels)
        return labels

    def _apply_policy_updates(self, ch: IndexChanges) -> None:
        """Pending policies become records: their rules move selector usage, their
        selectors go to the policy matcher; the endpoints a deleted policy applied
        to, or one whose order or types changed, are to be re-dispatched."""
        pending, self._pending_policies = self._pending_policies, {}
        matcher = self.policy_matcher
        for key, old, new in _changed(pending, self.policies, policy_from_doc):
            ch.policies.add(key)
            self.sets.move_uses(("policy", key), old.rules() if old else (),
                                new.rules() if new else ())
            if new is None:
                del self.policies[key]
                matcher.set_selector(key, None)
            else:
                self.policies[key] = new
                matcher.set_selector(key, new.applies)
            if old is not None and (new is None or old.order != new.order
                                    or old.types != new.types):
                ch.endpoints.update(matcher.members_of(key))

    def _match_policies_to_endpoints(self, ch: IndexChanges) -> None:
        """Re-match the policy selectors; each local endpoint whose policies changed
        is to be re-dispatched (those already marked are skipped)."""
        for _pol, ep, _added in self.policy_matcher.recompute(skip=ch.endpoints):
            ch.endpoints.add(ep)  # type: ignore[arg-type]


_NO_KEYS: frozenset[Key] = frozenset()


def _changed(pending: Mapping[Any, Mapping[str, Any] | None], current: Mapping[Any, Any],
             parse: Callable[[Any, Mapping[str, Any]], Any]) -> Iterator[tuple[Any, Any, Any]]:
    """(key, old record, new record) of each pending document (None: deleted) whose
    record differs from the current one."""
    for key, doc in pending.items():
        old = current.get(key)
        new = parse(key, doc) if doc is not None else None
        if new != old:
            yield key, old, new
