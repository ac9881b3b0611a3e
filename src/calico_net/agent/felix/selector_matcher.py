"""`SelectorMatcher`: who matches whom between a family of selectors and a family of
labelled items, kept incrementally.

It owns the selectors, each selector's member set and each item's match set. A
changed item is evaluated only against the selectors filed under its own labels (a
prefilter built from what each selector cannot match without); a changed selector is
re-selected through a `LabelIndex` (set algebra); a large batch of changed items, as
on a cold start, re-selects every selector instead of evaluating item by item. It
knows nothing about policies or endpoints: the policy index uses two of them.

The items' labels are held by `GroupedLabels`: each distinct label set is indexed
once, with the items that carry it. In a cluster 100,000 endpoints carry a few
hundred distinct label sets (the pods of one deployment share theirs), so the
inverted index grows with the label sets, not with the endpoints.
"""
from __future__ import annotations

from typing import Any, Collection, Hashable, Mapping

from calico_net.model.selector import (
    And,
    Contains,
    EndsWith,
    Equals,
    Has,
    In,
    LabelIndex,
    Or,
    Selector,
    StartsWith,
)

__all__ = ["SelectorMatcher", "GroupedLabels"]

Group = tuple[Any, ...]


class GroupedLabels:
    """Items' label sets, each distinct set indexed once in a `LabelIndex` (its id
    is the set's (key, value) pairs in order), with the items that carry it.

    Same queries as a `LabelIndex` over the items: ``select`` expands the matching
    label sets into their items."""

    def __init__(self) -> None:
        self.sets = LabelIndex()                       # label-set id -> labels
        self._group: dict[Hashable, Group] = {}        # item -> its label-set id
        # label-set id -> (that id, the items carrying the set)
        self._items: dict[Group, tuple[Group, set[Hashable]]] = {}

    def __len__(self) -> int:
        return len(self._group)

    def __contains__(self, item: object) -> bool:
        return item in self._group

    def labels(self, item: Hashable) -> Mapping[str, str]:
        """The label set of ``item`` (KeyError if unknown)."""
        return self.sets.labels(self._group[item])

    def add(self, item: Hashable, labels: Mapping[str, str], gid: Group | None = None) -> None:
        """Add ``item`` or replace its labels. `gid`: ``tuple(labels.items())``, when
        the caller has it already."""
        if gid is None:
            gid = tuple(labels.items())
        try:
            hash(gid)
        except TypeError:
            # unhashable values (bad data): a label set of its own; (None, item)
            # cannot equal a tuple of (key, value) pairs
            gid = (None, item)
        old = self._group.get(item)
        if old == gid:
            return
        if old is not None:
            self._leave(item, old)
        entry = self._items.get(gid)
        if entry is None:
            entry = self._items[gid] = (gid, set())
            self.sets.add(gid, labels)
        # the label set's own id, not this call's equal copy: one per distinct set
        self._group[item] = entry[0]
        entry[1].add(item)

    def add_many(self, items: list[Hashable], labels: Mapping[str, str], gid: Group) -> None:
        """`add` for several items that take one label set (`gid`:
        ``tuple(labels.items())``): the items new to the index are filed in bulk."""
        try:
            hash(gid)
        except TypeError:
            for it in items:
                self.add(it, labels, gid)
            return
        group = self._group
        fresh = items
        if group:
            known = group.keys() & set(items)
            if known:
                for it in known:
                    old = group[it]
                    if old != gid:
                        self._leave(it, old)
                        del group[it]
                fresh = [it for it in items if it not in group]
        if not fresh:
            return
        entry = self._items.get(gid)
        if entry is None:
            entry = self._items[gid] = (gid, set())
            self.sets.add(gid, labels)
        group.update(dict.fromkeys(fresh, entry[0]))
        entry[1].update(fresh)

    def items_of(self, gid: Group) -> set[Hashable]:
        """The items carrying label set `gid` (the index's own set: not to be changed)."""
        return self._items[gid][1]

    def remove(self, item: Hashable) -> None:
        """Forget ``item``; unknown items are ignored."""
        old = self._group.pop(item, None)
        if old is not None:
            self._leave(item, old)

    def _leave(self, item: Hashable, gid: Group) -> None:
        items = self._items[gid][1]
        items.discard(item)
        if not items:
            del self._items[gid]
            self.sets.remove(gid)

    def select(self, sel: Selector | str) -> set[Hashable]:
        """The items whose labels match ``sel``; the set is the caller's."""
        return self._expand(self.sets.select(sel))

    def select_brute_force(self, sel: Selector | str) -> set[Hashable]:
        """Reference implementation (tests): ``evaluate`` on every label set."""
        return self._expand(self.sets.select_brute_force(sel))

    def _expand(self, gids: set[Hashable]) -> set[Hashable]:
        items = self._items
        if len(gids) == 1:
            return set(items[next(iter(gids))][1])  # type: ignore[index]
        out: set[Hashable] = set()
        for g in gids:
            out |= items[g][1]  # type: ignore[index]
        return out


class SelectorMatcher:
    """Who matches whom, between a family of selectors and a family of labelled items.

    The items' labels live in a `GroupedLabels`, which several matchers may share; a
    matcher given a `universe` only considers the items in it (the policy matcher
    shares the member index and restricts it to local endpoints)."""

    #: above this many changed items, re-select every selector instead of evaluating
    #: each changed item against each selector
    BULK_ITEMS = 256

    def __init__(self, index: GroupedLabels | None = None, use_universe: bool = False) -> None:
        self.index = index if index is not None else GroupedLabels()
        self._owns_index = index is None
        self.universe: set[Hashable] | None = set() if use_universe else None
        self.selectors: dict[Hashable, Selector] = {}
        self.members: dict[Hashable, set[Hashable]] = {}
        # item -> the selectors it matches: one shared frozenset per distinct match
        # set (items with one label set match alike), reached through transition
        # caches (a frozenset caches its hash, so a lookup costs a tuple)
        self.matches: dict[Hashable, frozenset[Hashable]] = {}
        self._one: dict[Hashable, frozenset[Hashable]] = {}
        self._plus: dict[tuple[frozenset[Hashable], Hashable], frozenset[Hashable]] = {}
        self._minus: dict[tuple[frozenset[Hashable], Hashable], frozenset[Hashable]] = {}
        self._shared: dict[frozenset[Hashable], frozenset[Hashable]] = {}
        self._dirty_items: set[Hashable] = set()
        self._dirty_sels: set[Hashable] = set()
        self._skip: Collection[Hashable] = frozenset()
        self._by_kv: dict[tuple[str, str], set[Hashable]] = {}
        self._by_k: dict[str, set[Hashable]] = {}
        self._always: set[Hashable] = set()

    def set_item(self, item: Hashable, labels: Mapping[str, str] | None,
                 gid: Group | None = None) -> None:
        """A new label set for `item` (None: gone; `gid`: ``tuple(labels.items())``
        if the caller has it).  A matcher on a shared index takes `labels` only as
        present/absent (the index owner updates the index)."""
        if self._owns_index:
            if labels is None:
                self.index.remove(item)
            else:
                self.index.add(item, labels, gid)
        if self.universe is not None:
            if labels is None:
                self.universe.discard(item)
            else:
                self.universe.add(item)
        self._dirty_items.add(item)

    def set_items(self, items: list[Hashable], labels: Mapping[str, str], gid: Group) -> None:
        """`set_item` for several items that take one label set (`gid`:
        ``tuple(labels.items())``)."""
        if self._owns_index:
            self.index.add_many(items, labels, gid)
        if self.universe is not None:
            self.universe.update(items)
        self._dirty_items.update(items)

    def set_selector(self, key: Hashable, sel: Selector | None) -> None:
        if sel is None:
            if key not in self.selectors and key not in self._dirty_sels:
                return
            old = self.selectors.pop(key, None)
            if old is not None:
                self._unregister(key, old)
        else:
            if self.selectors.get(key) == sel and key not in self._dirty_sels:
                return
            old = self.selectors.get(key)
            if old is not None:
                self._unregister(key, old)
            self.selectors[key] = sel
            self._register(key, sel)
        self._dirty_sels.add(key)

    # Prefilter for the one-item path: each selector is filed under a label it cannot
    # match without (key=value, or key present); an item is evaluated only against
    # the selectors filed under its own labels plus those with no such requirement.

    def _register(self, key: Hashable, sel: Selector) -> None:
        for kind, token in _requirements(sel):
            bucket = self._by_kv if kind == "kv" else self._by_k if kind == "k" else None
            if bucket is None:
                self._always.add(key)
            else:
                bucket.setdefault(token, set()).add(key)

    def _unregister(self, key: Hashable, sel: Selector) -> None:
        for kind, token in _requirements(sel):
            if kind == "always":
                self._always.discard(key)
                continue
            bucket = self._by_kv if kind == "kv" else self._by_k
            keys = bucket.get(token)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del bucket[token]

    def _candidates(self, labels: Mapping[str, str]) -> set[Hashable]:
        out = set(self._always)
        by_kv, by_k = self._by_kv, self._by_k
        for k, v in labels.items():
            got = by_kv.get((k, v))
            if got:
                out |= got
            got = by_k.get(k)
            if got:
                out |= got
        return out

    def members_of(self, key: Hashable) -> set[Hashable]:
        return self.members.get(key, _NONE)  # type: ignore[return-value]

    def matches_of(self, item: Hashable) -> set[Hashable]:
        return self.matches.get(item, _NONE)  # type: ignore[return-value]

    def _select(self, sel: Selector) -> set[Hashable]:
        got = self.index.select(sel)
        if self.universe is not None:
            got &= self.universe
        return got

    def _diff(self, key: Hashable, old: set[Hashable], new: set[Hashable],
              changes: list[tuple[Hashable, Hashable, bool]]) -> None:
        matches = self.matches
        skip = self._skip
        if not old:
            # the common bulk case (a selector's first selection, a cold start)
            plus = self._plus_one
            for it in new:
                matches[it] = plus(matches.get(it), key)
            if skip:
                changes.extend([(key, it, True) for it in new if it not in skip])
            else:
                changes.extend([(key, it, True) for it in new])
            return
        for it in (old - new) if new else old:
            m = matches.get(it)
            if m is not None:
                m = self._minus_one(m, key)
                if m:
                    matches[it] = m
                else:
                    del matches[it]
            if it not in skip:
                changes.append((key, it, False))
        for it in (new - old) if old else new:
            matches[it] = self._plus_one(matches.get(it), key)
            if it not in skip:
                changes.append((key, it, True))

    def _plus_one(self, m: frozenset[Hashable] | None, key: Hashable) -> frozenset[Hashable]:
        """The shared match set `m` ∪ {key}."""
        if m is None:
            got = self._one.get(key)
            if got is None:
                got = self._one[key] = frozenset((key,))
            return got
        t = (m, key)
        got = self._plus.get(t)
        if got is None:
            new = m | {key}
            got = self._plus[t] = self._shared.setdefault(new, new)
        return got

    def _minus_one(self, m: frozenset[Hashable], key: Hashable) -> frozenset[Hashable]:
        """The shared match set `m` - {key}."""
        t = (m, key)
        got = self._minus.get(t)
        if got is None:
            new = m - {key}
            got = self._minus[t] = self._shared.setdefault(new, new)
        return got

    #: the transition caches are dropped past this size (they hold sets no item
    #: may use any more; dropping them costs only sharing for later changes)
    CACHE_LIMIT = 1 << 16

    def recompute(self, skip: Collection[Hashable] = frozenset()
                  ) -> list[tuple[Hashable, Hashable, bool]]:
        """Fold pending changes in; returns (selector key, item, matched now?) pairs,
        leaving out items in `skip` (a set, or a dict as an ordered set: the caller
        handles those wholesale)."""
        self._skip = skip
        if len(self._plus) + len(self._minus) + len(self._shared) > self.CACHE_LIMIT:
            self._plus.clear()
            self._minus.clear()
            self._shared.clear()
            self._one.clear()
        changes: list[tuple[Hashable, Hashable, bool]] = []
        dirty_sels, self._dirty_sels = self._dirty_sels, set()
        items, self._dirty_items = self._dirty_items, set()
        if len(items) > self.BULK_ITEMS:
            self._recompute_bulk(dirty_sels, changes)
            return changes
        for key in dirty_sels:
            sel = self.selectors.get(key)
            old = self.members.get(key, _NONE)
            new = self._select(sel) if sel is not None else set()
            self._diff(key, old, new, changes)  # type: ignore[arg-type]
            if sel is None:
                self.members.pop(key, None)
            else:
                self.members[key] = new
        if not items:
            return changes
        index, universe = self.index, self.universe
        for it in items:
            old = {k for k in self.matches.get(it, ()) if k not in dirty_sels}
            if it in index and (universe is None or it in universe):
                labels = index.labels(it)
                sels = self.selectors
                new = {k for k in self._candidates(labels)
                       if k not in dirty_sels and sels[k].evaluate(labels)}
            else:
                new = set()
            for k in old - new:
                self.members[k].discard(it)
                self._diff(k, {it}, _NONE, changes)  # type: ignore[arg-type]
            for k in new - old:
                self.members[k].add(it)
                self._diff(k, _NONE, {it}, changes)  # type: ignore[arg-type]
        return changes

    def _recompute_bulk(self, dirty_sels: set[Hashable],
                        changes: list[tuple[Hashable, Hashable, bool]]) -> None:
        """`recompute` for a large batch of changed items (a cold start): every
        selector is re-selected (the changed ones, then the others), its changes
        listed as `_diff` lists them; then each item's match set is rebuilt per
        label set (items carrying one label set match the same selectors), in bulk,
        instead of one transition per item and selector."""
        index, universe, members = self.index, self.universe, self.members
        select_sets, expand = index.sets.select, index._expand
        picked: dict[Hashable, set[Hashable]] = {}     # selector -> its label-set ids
        for key in dirty_sels:
            sel = self.selectors.get(key)
            old = members.get(key, _NONE)
            if sel is None:
                new: set[Hashable] = set()
            else:
                gids = picked[key] = select_sets(sel)
                new = expand(gids)
                if universe is not None:
                    new &= universe
            self._diff_changes(key, old, new, changes)  # type: ignore[arg-type]
            if sel is None:
                members.pop(key, None)
            else:
                members[key] = new
        others = [(k, s) for k, s in self.selectors.items() if k not in dirty_sels]
        for key, sel in others:
            old = members.get(key, _NONE)
            gids = picked[key] = select_sets(sel)
            new = expand(gids)
            if universe is not None:
                new &= universe
            if new != old:
                self._diff_changes(key, old, new, changes)  # type: ignore[arg-type]
                members[key] = new
        # every selector's members are now its selection: an item's match set is
        # the selectors whose selection holds its label set (and, with a universe,
        # only while the item is in it)
        by_gid: dict[Hashable, list[Hashable]] = {}
        for key, gids in picked.items():
            for g in gids:
                got = by_gid.get(g)
                if got is None:
                    by_gid[g] = [key]
                else:
                    got.append(key)
        matches, shared, items_of = self.matches, self._shared, index.items_of
        matches.clear()
        for g, keys in by_gid.items():
            its = items_of(g)  # type: ignore[arg-type]
            if universe is not None:
                its = its & universe
                if not its:
                    continue
            m = frozenset(keys)
            m = shared.setdefault(m, m)
            matches.update(dict.fromkeys(its, m))

    def _diff_changes(self, key: Hashable, old: set[Hashable], new: set[Hashable],
                      changes: list[tuple[Hashable, Hashable, bool]]) -> None:
        """The changes `_diff` lists, without its update of the match sets."""
        skip = self._skip
        if not old:
            if skip:
                # (set - set or set - dict: by the hashes the set holds)
                if new.difference(skip):
                    changes.extend([(key, it, True) for it in new if it not in skip])
            else:
                changes.extend([(key, it, True) for it in new])
            return
        for it in (old - new) if new else old:
            if it not in skip:
                changes.append((key, it, False))
        for it in (new - old) if old else new:
            if it not in skip:
                changes.append((key, it, True))


_NONE: frozenset[Any] = frozenset()


def _requirements(sel: Selector) -> list[tuple[str, Any]]:
    """Labels without which `sel` cannot match: [("kv", (key, value)), ...] (any of
    them), [("k", key)], or [("always", None)] when there is no such label."""
    t = type(sel)
    if t is Equals:
        return [("kv", (sel.key, sel.value))]  # type: ignore[attr-defined]
    if t is In:
        return [("kv", (sel.key, v)) for v in sorted(sel.values)]  # type: ignore[attr-defined]
    if t in (Has, Contains, StartsWith, EndsWith):
        return [("k", sel.key)]  # type: ignore[attr-defined]
    if t is And:
        best: list[tuple[str, Any]] | None = None
        for op in sel.operands:  # type: ignore[attr-defined]
            req = _requirements(op)
            if req[0][0] == "always":
                continue
            if best is None or (req[0][0] == "kv" and (best[0][0] != "kv" or len(req) < len(best))):
                best = req
        return best or [("always", None)]
    if t is Or:
        out: list[tuple[str, Any]] = []
        for op in sel.operands:  # type: ignore[attr-defined]
            req = _requirements(op)
            if req[0][0] == "always":
                return [("always", None)]
            out.extend(req)
        return out
    return [("always", None)]
