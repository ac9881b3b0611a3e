"""The policy side of Felix's calculation graph: a pure in-memory index (no I/O).

What it holds: every endpoint (workload and host, cluster-wide) and network set with
its addresses and effective labels, the profiles and policies, and from those:

* for each *local* endpoint (``spec.node == node_name``) the policies that apply to
  it, ordered as Calico orders them (``order`` ascending, missing = last, then name);
* for each selector used by a rule (``selector``/``notSelector``/``namespaceSelector``,
  already scoped by `rules.compile_rule`) the set of addresses of every member it
  matches (endpoints anywhere in the cluster plus NetworkSet/GlobalNetworkSet nets),
  as reference-counted nft set contents (``s4_``/``s6_`` addresses, ``c4_``/``c6_``
  CIDRs, ``n4_``/``n6_`` address . named port).

How it is built: `update()` only records the new document and marks it dirty;
`recompute()` folds all pending changes in and returns an `IndexChanges` naming what
the dataplane must rewrite.  Selector matching is done by two `SelectorMatcher`s
(rule selectors × all members; policy selectors × local endpoints) that are
incremental: a changed item is evaluated against every selector, a changed selector
is re-selected through a `LabelIndex` (set algebra), and a large batch of changed
items (a cold start) re-selects every selector instead of evaluating item by item.
Set contents are multisets (an address may be given by two members at once), kept
right by retracting a member's contributions before it changes and re-adding them
after.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Hashable, Iterable, Mapping

from calico_net.model.selector import (
    NAMESPACE_LABEL,
    ORCHESTRATOR_LABEL,
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
    parse_selector,
)

from . import nftstr
from .nftstr import NftStringError, ifname
from .rules import (
    NS_LABEL_PREFIX,
    NS_NAME_LABEL,
    CompiledRule,
    NamedPortKey,
    compile_rules,
    effective_types,
    named_port_hash,
    policy_applies_selector,
    selector_hash,
)

log = logging.getLogger(__name__)

__all__ = [
    "ENDPOINT_KINDS",
    "POLICY_KINDS",
    "Member",
    "Policy",
    "Profile",
    "IndexChanges",
    "SelectorMatcher",
    "PolicyIndex",
]

ENDPOINT_KINDS = ("WorkloadEndpoint", "HostEndpoint")
NETSET_KINDS = ("NetworkSet", "GlobalNetworkSet")
POLICY_KINDS = ("NetworkPolicy", "GlobalNetworkPolicy")

Key = tuple[str, "str | None", str]       # (kind, namespace or None, name)


# ----------------------------------------------------------------- records


@dataclass(frozen=True)
class Member:
    """Something that can be selected: an endpoint (local or remote) or a network set."""

    key: Key
    own_labels: Mapping[str, str]
    profiles: tuple[str, ...] = ()
    addrs4: tuple[str, ...] = ()
    addrs6: tuple[str, ...] = ()
    nets4: tuple[str, ...] = ()
    nets6: tuple[str, ...] = ()
    ports: tuple[tuple[str, int, int], ...] = ()   # (name, protocol number, port)
    node: str | None = None
    iface: str | None = None

    @property
    def kind(self) -> str:
        return self.key[0]

    @property
    def namespace(self) -> str | None:
        return self.key[1]

    @property
    def name(self) -> str:
        return self.key[2]

    @property
    def is_endpoint(self) -> bool:
        return self.key[0] in ENDPOINT_KINDS

    def values(self) -> tuple[Any, ...]:
        """What the member contributes to sets (compared to detect changes)."""
        return (self.addrs4, self.addrs6, self.nets4, self.nets6, self.ports)


@dataclass(frozen=True)
class Policy:
    key: Key
    order: float | None
    applies: Selector
    types: tuple[str, ...]
    ingress: tuple[CompiledRule, ...]
    egress: tuple[CompiledRule, ...]
    sort_key: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        kind, ns, name = self.key
        full = f"{ns}/{name}" if ns else name
        object.__setattr__(self, "sort_key", (self.order is None, self.order or 0.0, full, kind))

    def rules(self) -> Iterable[CompiledRule]:
        yield from self.ingress
        yield from self.egress


def _sort_key(p: Policy) -> tuple[Any, ...]:
    return p.sort_key


#: the rules of a policy or profile whose own rules cannot be used (never fail open)
DENY_ALL: tuple[CompiledRule, ...] = (CompiledRule(action="Deny"),)


def _deny_all_policy(key: Key, doc: Mapping[str, Any], exc: Exception) -> Policy | None:
    """A policy whose rules cannot be compiled, as one that denies all traffic of
    the endpoints it selects in the directions it names (its order kept); None
    (treated as absent) if not even its selector and types can be read."""
    kind, ns, name = key
    try:
        spec = doc.get("spec") or {}
        types = effective_types(spec)
        pol = Policy(key=key, order=_order(spec.get("order")),
                     applies=policy_applies_selector(kind, ns, spec), types=types,
                     ingress=DENY_ALL if "Ingress" in types else (),
                     egress=DENY_ALL if "Egress" in types else ())
    except Exception as exc2:  # noqa: BLE001
        log.error("%s %s: cannot use it (%s; nor its selector: %s); treated as absent",
                  kind, key, exc, exc2)
        return None
    log.error("%s %s: cannot use its rules (%s); it denies all traffic of the endpoints "
              "it selects instead", kind, key, exc)
    return pol


def _order(value: Any) -> float | None:
    """A policy's `order` (None: last); a value that is not a finite number counts as
    missing (the model refuses those)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if f == f and f not in (float("inf"), float("-inf")) else None


@dataclass(frozen=True)
class Profile:
    name: str
    labels_to_apply: Mapping[str, str]
    ingress: tuple[CompiledRule, ...]
    egress: tuple[CompiledRule, ...]

    def rules(self) -> Iterable[CompiledRule]:
        yield from self.ingress
        yield from self.egress


@dataclass
class IndexChanges:
    """What `recompute()` changed, for the dataplane to re-render."""

    policies: set[Key] = field(default_factory=set)          # re-render or delete
    profiles: set[str] = field(default_factory=set)          # re-render or delete
    endpoints: set[Key] = field(default_factory=set)         # local endpoints to re-dispatch
    sets: set[str] = field(default_factory=set)              # set names created or deleted
    elements: dict[str, set[str]] = field(default_factory=dict)  # touched elements of s/n sets
    cidr_sets: set[str] = field(default_factory=set)         # c sets whose contents changed
    pools: bool = False

    def __bool__(self) -> bool:
        return bool(self.policies or self.profiles or self.endpoints or self.sets
                    or self.elements or self.cidr_sets or self.pools)


# ----------------------------------------------------------------- matcher


class SelectorMatcher:
    """Who matches whom, between a family of selectors and a family of labelled items.

    The items' labels live in a `LabelIndex`, which several matchers may share; a
    matcher given a `universe` only considers the items in it (the policy matcher
    shares the member index and restricts it to local endpoints)."""

    #: above this many changed items, re-select every selector instead of evaluating
    #: each changed item against each selector
    BULK_ITEMS = 256

    def __init__(self, index: LabelIndex | None = None, use_universe: bool = False) -> None:
        self.index = index if index is not None else LabelIndex()
        self._owns_index = index is None
        self.universe: set[Hashable] | None = set() if use_universe else None
        self.selectors: dict[Hashable, Selector] = {}
        self.members: dict[Hashable, set[Hashable]] = {}
        self.matches: dict[Hashable, set[Hashable]] = {}
        self._dirty_items: set[Hashable] = set()
        self._dirty_sels: set[Hashable] = set()
        self._skip: set[Hashable] | frozenset[Hashable] = frozenset()
        self._by_kv: dict[tuple[str, str], set[Hashable]] = {}
        self._by_k: dict[str, set[Hashable]] = {}
        self._always: set[Hashable] = set()

    def set_item(self, item: Hashable, labels: Mapping[str, str] | None) -> None:
        """A new label set for `item` (None: gone).  A matcher on a shared index
        takes `labels` only as present/absent (the index owner updates the index)."""
        if self._owns_index:
            if labels is None:
                self.index.remove(item)
            else:
                self.index.add(item, labels)
        if self.universe is not None:
            if labels is None:
                self.universe.discard(item)
            else:
                self.universe.add(item)
        self._dirty_items.add(item)

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
            for it in new:
                m = matches.get(it)
                if m is None:
                    matches[it] = {key}
                else:
                    m.add(key)
            if skip:
                changes.extend([(key, it, True) for it in new if it not in skip])
            else:
                changes.extend([(key, it, True) for it in new])
            return
        for it in (old - new) if new else old:
            m = matches.get(it)
            if m is not None:
                m.discard(key)
                if not m:
                    del matches[it]
            if it not in skip:
                changes.append((key, it, False))
        for it in (new - old) if old else new:
            m = matches.get(it)
            if m is None:
                matches[it] = {key}
            else:
                m.add(key)
            if it not in skip:
                changes.append((key, it, True))

    def recompute(self, skip: set[Hashable] | frozenset[Hashable] = frozenset()
                  ) -> list[tuple[Hashable, Hashable, bool]]:
        """Fold pending changes in; returns (selector key, item, matched now?) pairs,
        leaving out items in `skip` (the caller handles those wholesale)."""
        self._skip = skip
        changes: list[tuple[Hashable, Hashable, bool]] = []
        dirty_sels, self._dirty_sels = self._dirty_sels, set()
        items, self._dirty_items = self._dirty_items, set()
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
        if len(items) > self.BULK_ITEMS:
            others = [(k, s) for k, s in self.selectors.items() if k not in dirty_sels]
            for key, sel in others:
                old = self.members.get(key, _NONE)
                new = self._select(sel)
                if new != old:
                    self._diff(key, old, new, changes)  # type: ignore[arg-type]
                    self.members[key] = new
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


# ----------------------------------------------------------------- selector usage


@dataclass
class _SelectorUse:
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


_AF_INET = socket.AF_INET
_pton, _ntop = socket.inet_pton, socket.inet_ntop


def _split_ips(values: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(IPv4 addresses, IPv6 addresses, IPv4 networks, IPv6 networks), each in its
    canonical text: these strings become set elements in nft text, so nothing
    that is not an address or a network gets through (unparseable ones are logged
    and left out)."""
    a4: list[str] = []
    a6: list[str] = []
    n4: list[str] = []
    n6: list[str] = []
    for v in values:
        if not isinstance(v, str):
            log.warning("ignoring address %r: not a string", v)
            continue
        if v.endswith("/32"):
            # the common case ("a.b.c.d/32"): one inet_pton/inet_ntop round trip
            # (~0.3 µs) proves it a canonical dotted quad, without ipaddress (~20 µs)
            a = v[:-3]
            try:
                if _ntop(_AF_INET, _pton(_AF_INET, a)) == a:
                    a4.append(a)
                    continue
            except (OSError, ValueError):
                pass
        try:
            net = ipaddress.ip_network(v, strict=False)
        except ValueError:
            log.warning("ignoring unparseable address %r", v)
            continue
        host = net.prefixlen == net.max_prefixlen
        if net.version == 4:
            (a4 if host else n4).append(str(net.network_address) if host else str(net))
        else:
            (a6 if host else n6).append(str(net.network_address) if host else str(net))
    return _uniq_sorted(a4), _uniq_sorted(a6), _uniq_sorted(n4), _uniq_sorted(n6)


def _uniq_sorted(values: list[Any]) -> tuple[Any, ...]:
    """``tuple(sorted(set(values)))``; most endpoints have one address per family."""
    if len(values) < 2:
        return tuple(values)
    return tuple(sorted(set(values)))


def _ports(values: Iterable[Mapping[str, Any]] | None) -> tuple[tuple[str, int, int], ...]:
    if not values:
        return ()
    out = []
    for p in values:
        try:
            out.append(_port_entry(p["name"], p.get("protocol", "TCP"), p["port"]))
        except (KeyError, ValueError, TypeError):
            log.warning("ignoring malformed endpoint port %r", p)
    return _uniq_sorted(out)


def _port_entry(name: Any, protocol: Any, port: Any) -> tuple[str, int, int]:
    try:
        return _port_entry_cached(name, protocol, port)
    except TypeError:        # unhashable field: parse it uncached (and fail as before)
        return _parse_port_entry(name, protocol, port)


def _parse_port_entry(name: Any, protocol: Any, port: Any) -> tuple[str, int, int]:
    from calico_net.model.fields import parse_protocol
    # the port becomes set element text ("addr . port"): a number in range, or
    # ValueError (the port is left out)
    if type(port) is not int:
        raise ValueError(f"port {port!r} is not a number")
    nftstr.number(port, 1, 65535)
    return (str(name), parse_protocol(protocol), port)


# endpoints repeat a handful of named ports: parse each distinct one once
_port_entry_cached = lru_cache(maxsize=4096, typed=True)(_parse_port_entry)


def member_from_doc(kind: str, name: str, namespace: str | None, doc: Mapping[str, Any]) -> Member:
    """Build a Member from a validated Calico v3 document.

    An endpoint's addresses must be host addresses (/32, /128, or a bare address),
    as Calico's validation demands (libcalico-go's validateWorkloadEndpointSpec:
    "IP network contains multiple addresses"): a wider one would put a whole
    network into every selector set the endpoint is in. Such an endpoint raises
    ValueError (the index treats it as absent). Its interface name must be one
    the nft text can carry (`nftstr.ifname_text`), else it is not programmed."""
    meta = doc.get("metadata") or {}
    spec = doc.get("spec") or {}
    if kind in ("HostEndpoint", "GlobalNetworkSet"):
        namespace = None
    else:
        namespace = namespace or meta.get("namespace") or "default"
    if kind == "WorkloadEndpoint":
        ips = list(spec.get("ipNetworks") or ())
    elif kind == "HostEndpoint":
        ips = list(spec.get("expectedIPs") or ())
    else:
        ips = list(spec.get("nets") or ())
    a4, a6, n4, n6 = _split_ips(ips)
    if (n4 or n6) and kind in ENDPOINT_KINDS:
        field_ = "ipNetworks" if kind == "WorkloadEndpoint" else "expectedIPs"
        raise ValueError(f"{field_} {', '.join(n4 + n6)}: wider than a host address "
                         "(/32 or /128, as Calico requires)")
    profiles = tuple(spec.get("profiles") or ()) if kind in ENDPOINT_KINDS else ()
    ports = _ports(spec.get("ports")) if kind in ENDPOINT_KINDS else ()
    own = dict(meta.get("labels") or {})
    if namespace is not None:
        own[NAMESPACE_LABEL] = namespace
        own[NS_LABEL_PREFIX + NS_NAME_LABEL] = namespace
    if kind == "WorkloadEndpoint":
        own[ORCHESTRATOR_LABEL] = str(spec.get("orchestrator") or "cni")
    iface = (spec.get("interfaceName") or None) if kind in ENDPOINT_KINDS else None
    if iface is not None:
        try:
            ifname(iface)    # checked (and its quoted form kept for the maps)
        except NftStringError as exc:
            # "*" (all host interfaces) and names the kernel would refuse are not programmed
            log.warning("%s %s: interface name not supported (%s); endpoint not programmed",
                        kind, name, exc)
            iface = None
    return Member(
        key=(kind, namespace, name), own_labels=own, profiles=profiles,
        addrs4=a4, addrs6=a6, nets4=n4, nets6=n6, ports=ports,
        node=spec.get("node") if kind in ENDPOINT_KINDS else None,
        iface=iface,
    )



# ----------------------------------------------------------------- the index


class PolicyIndex:
    """Pure model of the policy this host must program (see the module docstring)."""

    def __init__(self, node_name: str) -> None:
        self.node_name = node_name
        self.members: dict[Key, Member] = {}
        self.labels: dict[Key, dict[str, str]] = {}       # effective labels of members
        self.policies: dict[Key, Policy] = {}
        self.profiles: dict[str, Profile] = {}
        self.pools: dict[str, Mapping[str, Any]] = {}
        self.profile_members: dict[str, set[Key]] = {}
        # rule selectors × all members
        self.rule_matcher = SelectorMatcher()
        self.sel_use: dict[str, _SelectorUse] = {}        # canonical selector text → use
        # policy selectors × local endpoints (same label index, restricted)
        self.policy_matcher = SelectorMatcher(self.rule_matcher.index, use_universe=True)
        # set name → multiset of elements
        self.set_counts: dict[str, Counter[str]] = {}
        self._contributed: dict[Key, tuple[Any, ...]] = {}
        # pending raw updates
        self._pending_members: dict[Key, Mapping[str, Any] | None] = {}
        self._pending_policies: dict[Key, Mapping[str, Any] | None] = {}
        self._pending_profiles: dict[str, Mapping[str, Any] | None] = {}
        self._pools_dirty = False
        self._changes = IndexChanges()

    # -- input -----------------------------------------------------------------

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
            self._pending_members[(kind, namespace, name)] = doc
        elif kind in POLICY_KINDS:
            if kind == "GlobalNetworkPolicy":
                namespace = None
            elif namespace is None:
                namespace = ((doc or {}).get("metadata") or {}).get("namespace") or "default"
            self._pending_policies[(kind, namespace, name)] = doc
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
                    or self._pending_profiles or self._pools_dirty)

    # -- queries ---------------------------------------------------------------

    def is_local(self, key: Key) -> bool:
        m = self.members.get(key)
        return m is not None and m.is_endpoint and m.node == self.node_name

    def local_endpoints(self) -> list[Key]:
        return [k for k, m in self.members.items() if m.is_endpoint and m.node == self.node_name]

    def policies_for(self, ep: Key, direction: str) -> list[Policy]:
        """Policies applying to local endpoint `ep` in `direction` (Ingress/Egress), in order."""
        return [p for p in self.ordered_policies(ep) if direction in p.types]

    def ordered_policies(self, ep: Key) -> list[Policy]:
        """All policies applying to local endpoint `ep`, in Calico's order."""
        pols = self.policies
        out = [pols[k] for k in self.policy_matcher.matches_of(ep) if k in pols]
        if len(out) > 1:
            out.sort(key=_sort_key)
        return out

    def profiles_for(self, ep: Key) -> list[str]:
        """The endpoint's profiles that exist, in the endpoint's order."""
        m = self.members.get(ep)
        if m is None:
            return []
        return [p for p in m.profiles if p in self.profiles]

    def has_nets(self, sel: Selector, family: int) -> bool:
        return self.set_exists(f"c{family}_{selector_hash(sel)}")

    def cidr_set_elements(self, name: str) -> set[str]:
        """Collapsed (non-overlapping) CIDRs of a ``c4_``/``c6_`` set."""
        c = self.set_counts.get(name)
        if not c:
            return set()
        nets = [ipaddress.ip_network(n) for n in c]
        return {str(n) for n in ipaddress.collapse_addresses(nets)}

    def set_exists(self, name: str) -> bool:
        """Whether the set is to be programmed.  ``s4_``/``n4_`` sets exist while a
        rule uses them (so the first member joining is an element change); CIDR sets
        and the IPv6 sets only while they have members (rules referencing them are
        re-rendered when that changes), which keeps IPv4-only clusters free of
        hundreds of empty sets that every nft command would have to read."""
        if name[0] == "c" or name[1] == "6":
            return bool(self.set_counts.get(name))
        return name in self.set_counts

    def set_type(self, name: str) -> str:
        kind, fam = name[0], name[1]
        addr = "ipv4_addr" if fam == "4" else "ipv6_addr"
        if kind == "n":
            return f"type {addr} . inet_service"
        if kind == "c":
            return f"type {addr}; flags interval"
        return f"type {addr}"

    def element_present(self, name: str, elem: str) -> bool:
        c = self.set_counts.get(name)
        return bool(c) and c.get(elem, 0) > 0  # type: ignore[union-attr]

    def set_elements(self, name: str) -> set[str]:
        if name.startswith("c"):
            return self.cidr_set_elements(name)
        c = self.set_counts.get(name)
        return {e for e, n in c.items() if n > 0} if c else set()

    def all_set_names(self) -> list[str]:
        return [n for n in self.set_counts if self.set_exists(n)]

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
        """Fold all pending updates in; return what changed since the last call."""
        ch = self._changes
        # 1. members: retract old contributions, record new data, update matchers
        detached: set[Key] = set()
        pending_members, self._pending_members = self._pending_members, {}
        profile_label_dirty: set[Key] = set()
        for key, doc in pending_members.items():
            old = self.members.get(key)
            new = None
            if doc is not None:
                try:
                    new = member_from_doc(key[0], key[2], key[1], doc)
                except Exception as exc:  # noqa: BLE001 - one bad object must not poison the rest
                    log.warning("%s %s: cannot use it (%s); treated as absent", key[0], key, exc)
            if new is not None and old is not None and new == old:
                continue
            self._detach(key, detached)
            if old is not None:
                for p in old.profiles:
                    s = self.profile_members.get(p)
                    if s is not None:
                        s.discard(key)
                        if not s:
                            del self.profile_members[p]
            if new is None:
                self.members.pop(key, None)
            else:
                self.members[key] = new
                for p in new.profiles:
                    self.profile_members.setdefault(p, set()).add(key)
            profile_label_dirty.add(key)
            was_local = old is not None and old.is_endpoint and old.node == self.node_name
            is_local = new is not None and new.is_endpoint and new.node == self.node_name
            if was_local or is_local:
                ch.endpoints.add(key)

        # 2. profiles (labels feed member labels; rules feed selector usage)
        pending_profiles, self._pending_profiles = self._pending_profiles, {}
        for name, doc in pending_profiles.items():
            old_p = self.profiles.get(name)
            new_p = None
            if doc is not None:
                spec = doc.get("spec") or {}
                try:
                    new_p = Profile(name=name,
                                    labels_to_apply=dict(spec.get("labelsToApply") or {}),
                                    ingress=compile_rules(spec.get("ingress")),
                                    egress=compile_rules(spec.get("egress")))
                except Exception as exc:  # noqa: BLE001
                    # never fail open: a profile whose rules cannot be used denies
                    log.error("Profile %s: cannot use its rules (%s); it denies everything "
                              "instead", name, exc)
                    labels = spec.get("labelsToApply")
                    new_p = Profile(name=name, labels_to_apply=dict(labels) if isinstance(
                        labels, Mapping) else {}, ingress=DENY_ALL, egress=DENY_ALL)
            if new_p == old_p:
                continue
            ch.profiles.add(name)
            if (old_p is None) != (new_p is None):
                # class chains list only existing profiles
                for k in self.profile_members.get(name, ()):
                    if self.is_local(k):
                        ch.endpoints.add(k)
            if (old_p.labels_to_apply if old_p else {}) != (new_p.labels_to_apply if new_p else {}):
                for k in self.profile_members.get(name, ()):
                    if k not in detached:
                        self._detach(k, detached)
                    profile_label_dirty.add(k)
            self._set_uses(("profile", name), old_p.rules() if old_p else (),
                           new_p.rules() if new_p else ())
            if new_p is None:
                del self.profiles[name]
            else:
                self.profiles[name] = new_p

        # 3. effective labels → matchers
        for key in profile_label_dirty:
            m = self.members.get(key)
            if m is None:
                self.labels.pop(key, None)
                self.rule_matcher.set_item(key, None)
                self.policy_matcher.set_item(key, None)
                continue
            labels = self._effective_labels(m)
            self.labels[key] = labels
            self.rule_matcher.set_item(key, labels)
            if m.is_endpoint and m.node == self.node_name:
                self.policy_matcher.set_item(key, labels)
            else:
                self.policy_matcher.set_item(key, None)

        # 4. policies
        pending_policies, self._pending_policies = self._pending_policies, {}
        for key, doc in pending_policies.items():
            old = self.policies.get(key)
            new = None
            if doc is not None:
                try:
                    new = self._policy_from_doc(key, doc)
                except Exception as exc:  # noqa: BLE001
                    new = _deny_all_policy(key, doc, exc)
            if new == old:
                continue
            ch.policies.add(key)
            self._set_uses(("policy", key), old.rules() if old else (), new.rules() if new else ())
            if new is None:
                del self.policies[key]
                self.policy_matcher.set_selector(key, None)
            else:
                self.policies[key] = new
                self.policy_matcher.set_selector(key, new.applies)
                if old is not None and (old.order != new.order or old.types != new.types):
                    for ep in self.policy_matcher.members_of(key):
                        ch.endpoints.add(ep)
            if old is not None and new is None:
                for ep in self.policy_matcher.members_of(key):
                    ch.endpoints.add(ep)

        # 5. rule selectors: re-match, move contributions
        for sel_key, item, added in self.rule_matcher.recompute(skip=detached):
            if item in detached:
                continue
            use = self.sel_use.get(sel_key)  # type: ignore[arg-type]
            m = self.members.get(item)  # type: ignore[arg-type]
            if use is None or m is None:
                continue
            self._contribute(m.values(), use, None, +1 if added else -1)
        sel_use, set_counts, touched = self.sel_use, self.set_counts, ch.elements
        for key in detached:
            m = self.members.get(key)
            if m is None:
                self._contributed.pop(key, None)
                continue
            vals = m.values()
            a4, a6, n4, n6, ports = vals
            if a6 or n4 or n6 or ports:
                for sel_key in self.rule_matcher.matches_of(key):
                    use = sel_use.get(sel_key)  # type: ignore[arg-type]
                    if use is not None:
                        self._contribute(vals, use, None, +1)
            else:
                # _contribute(vals, use, None, +1) for the common member (IPv4
                # host addresses only), inlined: a cold start does ~20,000 of them
                for sel_key in self.rule_matcher.matches_of(key):
                    use = sel_use.get(sel_key)  # type: ignore[arg-type]
                    if use is None or not use.addr_users or not a4:
                        continue
                    c = set_counts.get(use.s4)
                    if c is None:
                        continue
                    for e in a4:
                        n = c.get(e, 0) + 1
                        c[e] = n
                        if n == 1:
                            t = touched.get(use.s4)
                            if t is None:
                                touched[use.s4] = {e}
                            else:
                                t.add(e)
            self._contributed[key] = vals

        # 6. policy selectors × local endpoints
        for _pol, ep, _added in self.policy_matcher.recompute(skip=ch.endpoints):
            ch.endpoints.add(ep)  # type: ignore[arg-type]

        if self._pools_dirty:
            ch.pools = True
            self._pools_dirty = False
        self._changes = IndexChanges()
        return ch

    # -- internals -------------------------------------------------------------

    def _effective_labels(self, m: Member) -> dict[str, str]:
        labels: dict[str, str] = {}
        # earlier profiles win over later ones; the endpoint's own labels win over all
        for p in reversed(m.profiles):
            prof = self.profiles.get(p)
            if prof is not None:
                labels.update(prof.labels_to_apply)
        labels.update(m.own_labels)
        return labels

    def _policy_from_doc(self, key: Key, doc: Mapping[str, Any]) -> Policy | None:
        # (doNotTrack, preDNAT, applyOnForward, serviceAccountSelector and rule
        # serviceAccounts never get here: the model refuses them, and the syncer
        # skips and counts such a document already in etcd)
        kind, ns, name = key
        spec = doc.get("spec") or {}
        return Policy(
            key=key,
            order=_order(spec.get("order")),
            applies=policy_applies_selector(kind, ns, spec),
            types=effective_types(spec),
            ingress=compile_rules(spec.get("ingress"), ns),
            egress=compile_rules(spec.get("egress"), ns),
        )

    def _detach(self, key: Key, detached: set[Key]) -> None:
        """Retract everything member `key` contributed to sets (before it changes)."""
        if key in detached:
            return
        detached.add(key)
        vals = self._contributed.pop(key, None)
        if vals is None:
            return
        for sel_key in self.rule_matcher.matches_of(key):
            use = self.sel_use.get(sel_key)  # type: ignore[arg-type]
            if use is not None:
                self._contribute(vals, use, None, -1)

    def _set_uses(self, user: Hashable, old_rules: Iterable[CompiledRule],
                  new_rules: Iterable[CompiledRule]) -> None:
        """Move a policy's/profile's selector and named-port usage from old to new rules."""
        def uses(rules: Iterable[CompiledRule]) -> tuple[set[str], set[NamedPortKey], dict[str, Selector]]:
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
        old_addr, old_np, _ = uses(old_rules)
        new_addr, new_np, sels = uses(new_rules)
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
        use = self.sel_use.get(t)
        if use is None:
            use = self.sel_use[t] = _SelectorUse(sel=sel, h=selector_hash(sel))
            self.rule_matcher.set_selector(t, sel)
        if npk is None:
            first = not use.addr_users
            use.addr_users.add(user)
            if first:
                for fam in (4, 6):
                    name = f"s{fam}_{use.h}"
                    self.set_counts[name] = Counter()
                    self._changes.sets.add(name)
                self._contribute_existing(use, None, +1)
        else:
            users = use.np_users.get(npk)
            first = users is None
            if first:
                users = use.np_users[npk] = set()
            users.add(user)
            if first:
                h = named_port_hash(npk)
                for fam in (4, 6):
                    name = f"n{fam}_{h}"
                    self.set_counts[name] = Counter()
                    self._changes.sets.add(name)
                self._contribute_existing(use, npk, +1)

    def _drop_use(self, t: str, user: Hashable, npk: NamedPortKey | None) -> None:
        use = self.sel_use.get(t)
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
                        if name in self.set_counts:
                            del self.set_counts[name]
                            self._changes.sets.add(name)
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
                    self.set_counts.pop(name, None)
                    self._changes.sets.add(name)
        if not use.used():
            del self.sel_use[t]
            self.rule_matcher.set_selector(t, None)

    def _contribute_existing(self, use: _SelectorUse, npk: NamedPortKey | None | str,
                             sign: int) -> None:
        """Add/retract one usage's contributions from the selector's current members
        (members whose own change is pending are handled when they re-attach)."""
        for item in self.rule_matcher.members_of(str(use.sel)):
            vals = self._contributed.get(item)  # type: ignore[arg-type]
            if vals is not None:
                self._contribute(vals, use, npk if npk is not None else "addr", sign)

    def _contribute(self, vals: tuple[Any, ...], use: _SelectorUse,
                    only: NamedPortKey | str | None, sign: int) -> None:
        """Apply one member's values to the sets of `use` (all usages, or `only` one:
        "addr" or a named-port key)."""
        addrs4, addrs6, nets4, nets6, ports = vals
        if (only is None and use.addr_users) or only == "addr":
            if addrs4:
                c = self.set_counts.get(use.s4)
                if c is not None:
                    self._bump_elems(use.s4, c, addrs4, sign)
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
                self._changes.policies.add(user[1])  # type: ignore[index]
            else:
                self._changes.profiles.add(user[1])  # type: ignore[index]

    def _bump(self, name: str, elems: Iterable[str], sign: int,
              users: Iterable[Hashable] = ()) -> None:
        c = self.set_counts.get(name)
        if c is None:
            return
        if name[1] == "6":
            # IPv6 sets exist only while not empty: rules change shape with that
            was = bool(c)
            self._bump_elems(name, c, elems, sign)
            if was != bool(c):
                self._changes.sets.add(name)
                self._mark_users(users)
            return
        self._bump_elems(name, c, elems, sign)

    def _bump_elems(self, name: str, c: Counter[str], elems: Iterable[str], sign: int) -> None:
        touched = None
        for e in elems:
            n = c.get(e, 0) + sign
            if n <= 0:
                c.pop(e, None)
            else:
                c[e] = n
            if (sign > 0 and n == 1) or (sign < 0 and n == 0):
                if touched is None:
                    touched = self._changes.elements.setdefault(name, set())
                touched.add(e)

    def _bump_cidr(self, name: str, nets: Iterable[str], sign: int, use: _SelectorUse) -> None:
        c = self.set_counts.get(name)
        was = bool(c)
        if c is None:
            if sign < 0:
                return
            c = self.set_counts[name] = Counter()
        for n in nets:
            v = c.get(n, 0) + sign
            if v <= 0:
                c.pop(n, None)
            else:
                c[n] = v
        self._changes.cidr_sets.add(name)
        if was != bool(c):
            # a CIDR companion set appears/disappears: rules using it change shape
            self._changes.sets.add(name)
            self._mark_users(use.addr_users)
        if not c:
            del self.set_counts[name]
