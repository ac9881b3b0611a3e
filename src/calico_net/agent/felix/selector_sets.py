"""The contents of the nft sets that rule selectors compile to, as reference counts.

It owns, for each selector some rule uses (by its canonical text), which policies and
profiles use it for addresses or for which named ports, and the sets those usages
need: ``s4_``/``s6_`` addresses, ``c4_``/``c6_`` CIDRs, ``n4_``/``n6_`` address .
named port. Each set is a multiset (an address may be given by two members at once),
kept right by retracting a member's contributions before it changes (`detach`) and
re-adding them once the rule selectors are re-matched (`settle`). It also answers
which sets exist and what they hold. Who matches a selector comes from the rule
`SelectorMatcher` it is given; what each member contributes, from its `Member`
record.
"""
from __future__ import annotations

import ipaddress
import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Hashable, Iterable, Mapping

from calico_net.model.selector import Selector

from .records import IndexChanges, Key, Member
from .rules import CompiledRule, NamedPortKey, named_port_hash, selector_hash
from .selector_matcher import SelectorMatcher

__all__ = ["SelectorSets"]


@dataclass
class _SelectorUse:
    """Who uses one rule selector: for its addresses, and for which named ports."""

    sel: Selector
    h: str
    addr_users: set[Hashable] = field(default_factory=set)
    np_users: dict[NamedPortKey, set[Hashable]] = field(default_factory=dict)
    # the names of its address sets, made once (hot path of every contribution)
    s4: str = field(default="", init=False)
    s6: str = field(default="", init=False)
    c4: str = field(default="", init=False)
    c6: str = field(default="", init=False)

    def __post_init__(self) -> None:
        h = self.h
        self.s4, self.s6, self.c4, self.c6 = f"s4_{h}", f"s6_{h}", f"c4_{h}", f"c6_{h}"

    def used(self) -> bool:
        return bool(self.addr_users or self.np_users)


class SelectorSets:
    """Selector usage and reference-counted set contents (see the module docstring).

    A user is ``("policy", key)`` or ``("profile", name)``; `changes` is the
    `IndexChanges` being gathered, which the owner replaces after each recompute."""

    def __init__(self, matcher: SelectorMatcher, members: Mapping[Key, Member],
                 changes: IndexChanges) -> None:
        self.matcher = matcher
        self.members = members
        self.changes = changes
        self.uses: dict[str, _SelectorUse] = {}           # canonical selector text → use
        self.counts: dict[str, Counter[str]] = {}         # set name → multiset of elements
        # member → its record when it last contributed (what it gave: `values()`)
        self.contributed: dict[Key, Member] = {}

    # -- usage -----------------------------------------------------------------

    def move_uses(self, user: Hashable, old_rules: Iterable[CompiledRule],
                  new_rules: Iterable[CompiledRule]) -> None:
        """Move a policy's/profile's selector and named-port usage from old to new rules."""
        old_addr, old_np, _ = _uses(old_rules)
        new_addr, new_np, sels = _uses(new_rules)
        for t in old_addr - new_addr:
            self._drop_use(t, user, None)
        for npk in old_np - new_np:
            self._drop_use(npk[0], user, npk)
        for t in new_addr - old_addr:
            self._add_use(sels[t], user, None)
        for npk in new_np - old_np:
            self._add_use(sels[npk[0]], user, npk)

    def _add_use(self, sel: Selector, user: Hashable, npk: NamedPortKey | None) -> None:
        t = str(sel)
        use = self.uses.get(t)
        if use is None:
            use = self.uses[t] = _SelectorUse(sel=sel, h=selector_hash(sel))
            self.matcher.set_selector(t, sel)
        if npk is None:
            first = not use.addr_users
            use.addr_users.add(user)
            if first:
                self._create_sets("s", use.h)
                self._contribute_existing(use, None, +1)
        else:
            users = use.np_users.get(npk)
            first = users is None
            if first:
                users = use.np_users[npk] = set()
            users.add(user)
            if first:
                self._create_sets("n", named_port_hash(npk))
                self._contribute_existing(use, npk, +1)

    def _create_sets(self, kind: str, h: str) -> None:
        for fam in (4, 6):
            name = f"{kind}{fam}_{h}"
            self.counts[name] = Counter()
            self.changes.sets.add(name)

    def _drop_use(self, t: str, user: Hashable, npk: NamedPortKey | None) -> None:
        use = self.uses.get(t)
        if use is None:
            return
        if npk is None:
            if user not in use.addr_users:
                return
            use.addr_users.discard(user)
            if not use.addr_users:
                self._contribute_existing(use, None, -1)
                for kind in ("s", "c"):
                    for fam in (4, 6):
                        name = f"{kind}{fam}_{use.h}"
                        if name in self.counts:
                            del self.counts[name]
                            self.changes.sets.add(name)
        else:
            users = use.np_users.get(npk)
            if not users or user not in users:
                return
            users.discard(user)
            if not users:
                self._contribute_existing(use, npk, -1)
                del use.np_users[npk]
                h = named_port_hash(npk)
                for fam in (4, 6):
                    name = f"n{fam}_{h}"
                    self.counts.pop(name, None)
                    self.changes.sets.add(name)
        if not use.used():
            del self.uses[t]
            self.matcher.set_selector(t, None)

    # -- member contributions --------------------------------------------------

    def detach(self, key: Key, detached: dict[Key, None]) -> None:
        """Retract everything member `key` contributed to sets (before it changes);
        `settle` re-adds what it contributes then."""
        if key in detached:
            return
        detached[key] = None
        gave = self.contributed.pop(key, None)
        if gave is None:
            return
        vals = gave.values()
        for sel_key in self.matcher.matches_of(key):
            use = self.uses.get(sel_key)  # type: ignore[arg-type]
            if use is not None:
                self._contribute(vals, use, None, -1)

    def settle(self, detached: dict[Key, None],
               groups: list[tuple[list[Key], list[Member]]] | None = None,
               gone: Iterable[Key] = ()) -> None:
        """Re-match the rule selectors and bring the sets up to date: a member that
        joined or left a selector adds or retracts its contributions; each detached
        member contributes anew (or is forgotten if gone).

        `groups`, when given, are the detached members that exist, as (keys, their
        records) of members with equal effective labels (so one match set per
        group), and `gone` the detached keys without a member: together exactly
        `detached`."""
        uses, members, matcher = self.uses, self.members, self.matcher
        for sel_key, item, added in matcher.recompute(skip=detached):
            if item in detached:
                continue
            use = uses.get(sel_key)  # type: ignore[arg-type]
            m = members.get(item)  # type: ignore[arg-type]
            if use is None or m is None:
                continue
            self._contribute(m.values(), use, None, +1 if added else -1)
        contributed = self.contributed
        matches = matcher.matches
        # the common member (IPv4 host addresses only) is gathered by its match set
        # (one shared set per label set): its addresses reach each matched
        # selector's set once per match set, counted in bulk below
        by_match: dict[frozenset[Hashable], list[tuple[str, ...]]] = {}
        if groups is None:
            for key in detached:
                m = members.get(key)
                if m is None:
                    contributed.pop(key, None)
                    continue
                vals = m.values()
                a4, a6, n4, n6, ports = vals
                if a6 or n4 or n6 or ports:
                    for sel_key in matcher.matches_of(key):
                        use = uses.get(sel_key)  # type: ignore[arg-type]
                        if use is not None:
                            self._contribute(vals, use, None, +1)
                elif a4:
                    ms = matches.get(key)
                    if ms:
                        got = by_match.get(ms)
                        if got is None:
                            by_match[ms] = [a4]
                        else:
                            got.append(a4)
                contributed[key] = m
        else:
            for key in gone:
                contributed.pop(key, None)
            for keys, recs in groups:
                ms = matches.get(keys[0])
                vals_list = [m.values() for m in recs]
                contributed.update(zip(keys, recs))
                if not ms:
                    continue
                simple: list[tuple[str, ...]] = []
                for vals in vals_list:
                    if vals[1] or vals[2] or vals[3] or vals[4]:
                        for sel_key in ms:
                            use = uses.get(sel_key)  # type: ignore[arg-type]
                            if use is not None:
                                self._contribute(vals, use, None, +1)
                    elif vals[0]:
                        simple.append(vals[0])
                if simple:
                    got = by_match.get(ms)
                    if got is None:
                        by_match[ms] = simple
                    else:
                        got.extend(simple)
        counts, touched = self.counts, self.changes.elements
        if not by_match:
            return
        # _contribute(vals, use, None, +1) for all those members: only additions,
        # so the elements that appear are those the set did not hold before
        per_set: dict[str, list[list[tuple[str, ...]]]] = {}
        for ms, addrs in by_match.items():
            for sel_key in ms:
                use = uses.get(sel_key)  # type: ignore[arg-type]
                if use is None or not use.addr_users or use.s4 not in counts:
                    continue
                got = per_set.get(use.s4)
                if got is None:
                    per_set[use.s4] = [addrs]
                else:
                    got.append(addrs)
        chain = itertools.chain.from_iterable
        for name, lists in per_set.items():
            c = counts[name]
            elems = list(chain(chain(lists)))
            fresh = set(elems)
            if c:
                fresh = {e for e in fresh if e not in c}
            c.update(elems)
            if fresh:
                t = touched.get(name)
                if t is None:
                    touched[name] = fresh
                else:
                    t |= fresh

    def _contribute_existing(self, use: _SelectorUse, npk: NamedPortKey | None | str,
                             sign: int) -> None:
        """Add/retract one usage's contributions from the selector's current members
        (members whose own change is pending are handled when they re-attach)."""
        for item in self.matcher.members_of(str(use.sel)):
            gave = self.contributed.get(item)  # type: ignore[arg-type]
            if gave is not None:
                self._contribute(gave.values(), use, npk if npk is not None else "addr", sign)

    def _contribute(self, vals: tuple[Any, ...], use: _SelectorUse,
                    only: NamedPortKey | str | None, sign: int) -> None:
        """Apply one member's values to the sets of `use` (all usages, or `only` one:
        "addr" or a named-port key)."""
        addrs4, addrs6, nets4, nets6, ports = vals
        if (only is None and use.addr_users) or only == "addr":
            if addrs4:
                c = self.counts.get(use.s4)
                if c is not None:
                    self._count(use.s4, c, addrs4, sign)
            if nets4:
                self._bump_cidr(use.c4, nets4, sign, use)
            if addrs6:
                self._bump(use.s6, addrs6, sign, use.addr_users)
            if nets6:
                self._bump_cidr(use.c6, nets6, sign, use)
        if only == "addr" or not ports:
            return
        for npk in ([only] if only is not None else list(use.np_users)):
            _sel_text, proto, pname = npk  # type: ignore[misc]
            h = named_port_hash(npk)  # type: ignore[arg-type]
            for name, pproto, port in ports:
                if name != pname or pproto != proto:
                    continue
                if addrs4:
                    self._bump(f"n4_{h}", [f"{a} . {port}" for a in addrs4], sign)
                if addrs6:
                    self._bump(f"n6_{h}", [f"{a} . {port}" for a in addrs6], sign,
                               use.np_users.get(npk, ()))  # type: ignore[arg-type]

    def _mark_users(self, users: Iterable[Hashable]) -> None:
        for user in users:
            if user[0] == "policy":  # type: ignore[index]
                self.changes.policies.add(user[1])  # type: ignore[index]
            else:
                self.changes.profiles.add(user[1])  # type: ignore[index]

    def _bump(self, name: str, elems: Iterable[str], sign: int,
              users: Iterable[Hashable] = ()) -> None:
        c = self.counts.get(name)
        if c is None:
            return
        if name[1] == "6":
            # IPv6 sets exist only while not empty: rules change shape with that
            was = bool(c)
            self._count(name, c, elems, sign)
            if was != bool(c):
                self.changes.sets.add(name)
                self._mark_users(users)
            return
        self._count(name, c, elems, sign)

    def _bump_cidr(self, name: str, nets: Iterable[str], sign: int, use: _SelectorUse) -> None:
        c = self.counts.get(name)
        was = bool(c)
        if c is None:
            if sign < 0:
                return
            c = self.counts[name] = Counter()
        # a CIDR set is re-sent whole (collapsed), so its elements are not tracked
        self._count(name, c, nets, sign, track=False)
        self.changes.cidr_sets.add(name)
        if was != bool(c):
            # a CIDR companion set appears/disappears: rules using it change shape
            self.changes.sets.add(name)
            self._mark_users(use.addr_users)
        if not c:
            del self.counts[name]

    def _count(self, name: str, c: Counter[str], elems: Iterable[str], sign: int,
               track: bool = True) -> None:
        """Add `sign` to each element's count in `c`; with `track`, the elements that
        appear or disappear become touched elements of set `name`."""
        touched = None
        for e in elems:
            n = c.get(e, 0) + sign
            if n <= 0:
                c.pop(e, None)
            else:
                c[e] = n
            if track and ((sign > 0 and n == 1) or (sign < 0 and n == 0)):
                if touched is None:
                    touched = self.changes.elements.setdefault(name, set())
                touched.add(e)

    # -- queries ---------------------------------------------------------------

    def exists(self, name: str) -> bool:
        """Whether the set is to be programmed.  ``s4_``/``n4_`` sets exist while a
        rule uses them (so the first member joining is an element change); CIDR sets
        and the IPv6 sets only while they have members (rules referencing them are
        re-rendered when that changes), which keeps IPv4-only clusters free of
        hundreds of empty sets that every nft command would have to read."""
        if name[0] == "c" or name[1] == "6":
            return bool(self.counts.get(name))
        return name in self.counts

    def elements(self, name: str) -> set[str]:
        if name.startswith("c"):
            return self.cidr_elements(name)
        c = self.counts.get(name)
        return {e for e, n in c.items() if n > 0} if c else set()

    def cidr_elements(self, name: str) -> set[str]:
        """Collapsed (non-overlapping) CIDRs of a ``c4_``/``c6_`` set."""
        c = self.counts.get(name)
        if not c:
            return set()
        nets = [ipaddress.ip_network(n) for n in c]
        return {str(n) for n in ipaddress.collapse_addresses(nets)}

    def element_present(self, name: str, elem: str) -> bool:
        c = self.counts.get(name)
        return bool(c) and c.get(elem, 0) > 0  # type: ignore[union-attr]

    def names(self) -> list[str]:
        """The sets to be programmed."""
        return [n for n in self.counts if self.exists(n)]


def set_type(name: str) -> str:
    """The nft type declaration of a set, from its name."""
    kind, fam = name[0], name[1]
    addr = "ipv4_addr" if fam == "4" else "ipv6_addr"
    if kind == "n":
        return f"type {addr} . inet_service"
    if kind == "c":
        return f"type {addr}; flags interval"
    return f"type {addr}"


def _uses(rules: Iterable[CompiledRule]) -> tuple[set[str], set[NamedPortKey], dict[str, Selector]]:
    """(address selector texts, named-port keys, text → selector) of some rules."""
    addr: set[str] = set()
    nps: set[NamedPortKey] = set()
    sels: dict[str, Selector] = {}
    for r in rules:
        for s in r.selectors():
            t = str(s)
            addr.add(t)
            sels[t] = s
        for side in (r.src, r.dst):
            if side.port_selector is not None:
                sels[str(side.port_selector)] = side.port_selector
        for npk in r.named_port_keys():
            nps.add(npk)
    return addr, nps, sels
