"""Calico policy rules → nftables rule text (pure functions, no I/O).

What it does: turns one Calico v3 rule (a dict of a validated document) into a
`CompiledRule` whose selectors are already scoped the way Calico scopes them, and
renders a `CompiledRule` into the nft statements of one policy/profile chain.

How it is built:

* `compile_rule` resolves everything that depends on where the rule lives: a rule
  `selector` inside a namespaced NetworkPolicy only matches that namespace
  (``&& projectcalico.org/namespace == "<ns>"``); a `namespaceSelector` is rewritten,
  as Calico does, onto ``pcns.``-prefixed labels that every namespaced endpoint and
  NetworkSet carries (``pcns.projectcalico.org/name`` = its namespace, plus whatever
  a profile's labelsToApply adds); named ports become (selector, protocol, name)
  keys, resolved against the endpoints the same side's selector picks (``all()`` when
  the side has none), like Calico's named-port IP sets.  Service accounts become
  selectors as Calico builds them: `names` over the implicit
  ``projectcalico.org/serviceaccount`` label, `selector` over ``pcsa.`` labels.
* `render_rule` emits one nft line per alternative.  nft has no OR inside a rule, so
  a rule whose selector set also has a CIDR companion set (NetworkSet nets), or that
  mixes numeric and named ports, becomes several lines with the same verdict.  Rules
  whose fields belong to one IP version (nets, selectors, named ports, ICMP types,
  ipVersion) are rendered per family; the others once, family-agnostic.
* Verdicts use two packet-mark bits, as Felix does: Allow sets MARK_ALLOW and
  returns, Pass sets MARK_PASS and returns (the endpoint chain then skips to the
  profiles), Deny drops (or rejects: the context's `deny` verdict, FelixConfiguration
  nftablesFilterDenyAction), Log logs and continues.  In a profile, Pass just returns
  (next profile).
* Set names come from `selector_hash`: one set per distinct canonical selector,
  shared by every rule that uses it: ``s4_<h>``/``s6_<h>`` (hash sets of addresses),
  ``c4_<h>``/``c6_<h>`` (interval sets of CIDRs, only while some NetworkSet gives the
  selector a non-host net) and ``n4_<h>``/``n6_<h>`` (named ports: addr . port);
  IPv6 and CIDR sets exist only while not empty, and rules skip what does not exist.
  Lists longer than INLINE_LIST_MAX become shared named sets ``r_<h>``.
"""
from __future__ import annotations

import hashlib
import ipaddress
import itertools
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Iterable, Iterator, Mapping, Protocol

from calico_net.model.fields import parse_port, parse_protocol
from . import nftstr
from calico_net.model.selector import (
    NAMESPACE_LABEL,
    All,
    And,
    Equals,
    Global,
    Has,
    In,
    Not,
    NotIn,
    Or,
    Selector,
    and_,
    parse_selector,
)
from calico_net.model import selector as _sel

__all__ = [
    "MARK_ALLOW",
    "MARK_PASS",
    "MARK_CLEAR_MASK",
    "NS_LABEL_PREFIX",
    "NS_NAME_LABEL",
    "SA_LABEL_PREFIX",
    "SA_NAME_LABEL",
    "SideMatch",
    "CompiledRule",
    "NamedPortKey",
    "RenderContext",
    "compile_rule",
    "compile_rules",
    "namespace_selector_to_endpoint_selector",
    "policy_applies_selector",
    "render_rule",
    "selector_hash",
    "proto_name",
]

#: Packet-mark bit: "a policy/profile allowed this packet" (Felix's accept mark).
MARK_ALLOW = 0x10000
#: Packet-mark bit: "a policy said Pass: skip to the profiles".
MARK_PASS = 0x20000
#: AND mask that clears both bits and keeps every other mark bit.
MARK_CLEAR_MASK = 0xFFFFFFFF & ~(MARK_ALLOW | MARK_PASS)

#: Prefix under which namespace labels are copied onto namespaced members, as Calico.
NS_LABEL_PREFIX = "pcns."
#: Namespace "label" every namespace has: its own name.
NS_NAME_LABEL = "projectcalico.org/name"
#: Prefix under which service-account labels reach endpoints (through the labelsToApply
#: of the ``ksa.<namespace>.<name>`` profile an endpoint lists), as Calico.
SA_LABEL_PREFIX = "pcsa."
#: Implicit label of a workload endpoint with a service account: the account's name.
SA_NAME_LABEL = "projectcalico.org/serviceaccount"

# Protocols with a port header, by number → nft header keyword.
_PORT_HEADERS = {6: "tcp", 17: "udp", 132: "sctp", 136: "udplite"}


def selector_hash(sel: Selector) -> str:
    """16 hex chars naming a canonical selector (stable across processes)."""
    return _text_hash(str(sel))


@lru_cache(maxsize=65536)
def _text_hash(text: str) -> str:
    return hashlib.sha224(text.encode()).hexdigest()[:16]


def proto_name(proto: int) -> str:
    """Short name of a protocol number for set keys/comments."""
    return _PORT_HEADERS.get(proto, str(proto))


# ------------------------------------------------------------------ selector scoping


def _prefix_keys(sel: Selector, prefix: str, all_as: Selector | None = None) -> Selector:
    """`sel` with every label key prefixed and every ``all()`` replaced by `all_as`
    (kept when None): Calico's namespaceSelector and service-account translations."""
    t = type(sel)
    if t is All:
        return sel if all_as is None else all_as
    if t is Global:
        return sel
    if t is Has:
        return Has(prefix + sel.key)  # type: ignore[attr-defined]
    if issubclass(t, _sel.KeyValue):
        return t(prefix + sel.key, sel.value)  # type: ignore[attr-defined, call-arg]
    if t in (In, NotIn):
        return t(prefix + sel.key, sel.values)  # type: ignore[attr-defined, call-arg]
    if t is Not:
        return Not(_prefix_keys(sel.operand, prefix, all_as))  # type: ignore[attr-defined]
    if t in (And, Or):
        return t(tuple(_prefix_keys(op, prefix, all_as) for op in sel.operands))  # type: ignore[attr-defined, call-arg]
    raise TypeError(f"unknown selector node {sel!r}")  # pragma: no cover


def namespace_selector_to_endpoint_selector(text: str) -> Selector:
    """A namespaceSelector as a selector over members' (``pcns.``-prefixed) labels;
    its ``all()`` means every namespace, i.e. every namespaced member."""
    return _prefix_keys(parse_selector(text), NS_LABEL_PREFIX, Has(NAMESPACE_LABEL))


def service_account_selector(text: str) -> Selector:
    """A service-account selector over endpoints' (``pcsa.``-prefixed) labels;
    its ``all()`` stays ``all()``, as Calico's prefixing leaves it."""
    return _prefix_keys(parse_selector(text), SA_LABEL_PREFIX)


def _service_accounts_match(sam: Mapping[str, Any]) -> Selector | None:
    """A rule's `serviceAccounts` as one selector: the prefixed `selector` AND the
    account name in `names` (Calico's parseServiceAccounts); None when both are empty."""
    text = _opt(sam.get("selector"))
    names = sam.get("names")
    if not text and not names:
        return None
    return _conj(service_account_selector(text) if text else All(),
                 In(SA_NAME_LABEL, names) if names else None)


def _ns_only(namespace: str) -> Selector:
    return Equals(NAMESPACE_LABEL, namespace)


def _conj(*parts: Selector | None) -> Selector:
    """Conjunction that drops all() and None operands (canonical, shortest form;
    all() when nothing is left)."""
    ops = [p for p in parts if p is not None and type(p) is not All]
    return and_(*ops)


def _opt(text: Any) -> str | None:
    if text is None:
        return None
    text = str(text).strip()
    return text or None


def policy_applies_selector(kind: str, namespace: str | None, spec: Mapping[str, Any]) -> Selector:
    """Which endpoints a policy applies to, as one selector over endpoint labels. A
    `serviceAccountSelector` is ANDed in; in a GlobalNetworkPolicy Calico then makes
    every ``all()`` "has a service account" (a NetworkPolicy keeps its ``all()``)."""
    sel_text = _opt(spec.get("selector"))
    parts: list[Selector] = [parse_selector(sel_text)] if sel_text else []
    if kind == "NetworkPolicy":
        parts.append(_ns_only(namespace or "default"))
    else:
        ns_text = _opt(spec.get("namespaceSelector"))
        if ns_text:
            parts.append(namespace_selector_to_endpoint_selector(ns_text))
    sa_text = _opt(spec.get("serviceAccountSelector"))
    if sa_text:
        parts.append(service_account_selector(sa_text))
        if kind != "NetworkPolicy":
            parts = [_prefix_keys(p, "", Has(SA_NAME_LABEL)) for p in parts]
    return _conj(*parts)


# ------------------------------------------------------------------ compiled rules

NamedPortKey = tuple[str, int, str]   # (selector canonical text, protocol number, port name)


@dataclass(frozen=True)
class SideMatch:
    """One side (source or destination) of a rule, scoped and parsed."""

    nets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    not_nets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    selector: Selector | None = None
    not_selector: Selector | None = None
    ports: tuple[tuple[int, int], ...] = ()
    named_ports: tuple[str, ...] = ()
    not_ports: tuple[tuple[int, int], ...] = ()
    not_named_ports: tuple[str, ...] = ()
    #: the selector named ports of this side are resolved against
    port_selector: Selector | None = None

    def family_specific(self) -> bool:
        return bool(self.nets or self.not_nets or self.selector is not None
                    or self.not_selector is not None or self.named_ports or self.not_named_ports)


@dataclass(frozen=True)
class CompiledRule:
    action: str                       # Allow | Deny | Pass | Log
    protocol: int | None = None
    not_protocol: int | None = None
    ip_version: int | None = None
    icmp: tuple[int | None, int | None] | None = None
    not_icmp: tuple[int | None, int | None] | None = None
    src: SideMatch = field(default_factory=SideMatch)
    dst: SideMatch = field(default_factory=SideMatch)
    #: the rule uses match fields we cannot enforce (http, services)
    unsupported: bool = False

    def selectors(self) -> Iterator[Selector]:
        """Selectors whose address sets the rule references."""
        for side in (self.src, self.dst):
            if side.selector is not None:
                yield side.selector
            if side.not_selector is not None:
                yield side.not_selector

    def named_port_keys(self) -> Iterator[NamedPortKey]:
        """(selector, protocol, name) of every named-port set the rule references."""
        if self.protocol is None:
            return
        for side in (self.src, self.dst):
            for name in side.named_ports + side.not_named_ports:
                yield (str(side.port_selector or All()), self.protocol, name)


def _nets(values: Iterable[str] | None) -> tuple[Any, ...]:
    if not values:
        return ()
    return tuple(_parse_net(v) for v in values)


def _parse_net(value: Any) -> Any:
    """``ipaddress.ip_network(value, strict=False)``, shared (the objects are immutable;
    policies repeat the same CIDRs)."""
    try:
        return _parse_net_cached(value)
    except TypeError:       # unhashable: let ip_network say what is wrong with it
        return ipaddress.ip_network(value, strict=False)


@lru_cache(maxsize=65536)
def _parse_net_cached(value: Any) -> Any:
    return ipaddress.ip_network(value, strict=False)


def _ports(values: Iterable[int | str] | None) -> tuple[tuple[tuple[int, int], ...], tuple[str, ...]]:
    nums: list[tuple[int, int]] = []
    names: list[str] = []
    for v in values or ():
        p = parse_port(v)
        if isinstance(p, str):
            names.append(p)
        else:
            nums.append(p)
    return tuple(nums), tuple(names)


def _side(ent: Mapping[str, Any] | None, namespace: str | None) -> tuple[SideMatch, bool]:
    """Compile one EntityRule; also says whether it used unsupported fields."""
    if not ent:
        return SideMatch(), False
    unsupported = bool(ent.get("services"))
    sel_text = _opt(ent.get("selector"))
    not_text = _opt(ent.get("notSelector"))
    ns_text = _opt(ent.get("namespaceSelector"))
    sam = ent.get("serviceAccounts")
    sa = _service_accounts_match(sam) if sam else None
    # the endpoints the side names: its selector AND its service accounts
    own: Selector | None = None
    if sel_text or sa is not None:
        own = _conj(sa, parse_selector(sel_text) if sel_text else None)
    selector: Selector | None = None
    if ns_text:
        selector = _conj(own, namespace_selector_to_endpoint_selector(ns_text))
    elif own is not None:
        selector = own
        if namespace is not None:
            selector = _conj(selector, _ns_only(namespace))
    elif not_text and namespace is not None:
        # As Calico: in a namespaced policy a notSelector alone still limits the side
        # to the policy's namespace (the positive part carries it; the notSelector
        # stays as written), so "not these" never reaches other namespaces or
        # addresses that are no endpoint at all.
        selector = _ns_only(namespace)
    not_selector = parse_selector(not_text) if not_text else None
    ports, named = _ports(ent.get("ports"))
    not_ports, not_named = _ports(ent.get("notPorts"))
    port_selector: Selector | None = None
    if named or not_named:
        if selector is not None:
            port_selector = selector
        elif namespace is not None:
            port_selector = _ns_only(namespace)
        else:
            port_selector = All()
    nets = ent.get("nets") or ([ent["net"]] if ent.get("net") else None)
    not_nets = ent.get("notNets") or ([ent["notNet"]] if ent.get("notNet") else None)
    return SideMatch(
        nets=_nets(nets), not_nets=_nets(not_nets), selector=selector,
        not_selector=not_selector, ports=ports, named_ports=named, not_ports=not_ports,
        not_named_ports=not_named, port_selector=port_selector), unsupported


def _icmp(value: Mapping[str, Any] | None) -> tuple[int | None, int | None] | None:
    if not value:
        return None
    t, c = value.get("type"), value.get("code")
    if t is None and c is None:
        return None
    return (t, c)


def compile_rule(rule: Mapping[str, Any], namespace: str | None = None) -> CompiledRule:
    """Compile one Calico rule dict; `namespace` is the policy's (None for global)."""
    src, u1 = _side(rule.get("source"), namespace)
    dst, u2 = _side(rule.get("destination"), namespace)
    proto = rule.get("protocol")
    not_proto = rule.get("notProtocol")
    return CompiledRule(
        action=str(rule.get("action", "Deny")),
        protocol=parse_protocol(proto) if proto is not None else None,
        not_protocol=parse_protocol(not_proto) if not_proto is not None else None,
        ip_version=rule.get("ipVersion"),
        icmp=_icmp(rule.get("icmp")),
        not_icmp=_icmp(rule.get("notICMP")),
        src=src, dst=dst,
        unsupported=u1 or u2 or bool(rule.get("http")),
    )


def compile_rules(rules: Iterable[Mapping[str, Any]] | None,
                  namespace: str | None = None) -> tuple[CompiledRule, ...]:
    return tuple(compile_rule(r, namespace) for r in rules or ())


# ------------------------------------------------------------------ rendering


class RenderContext(Protocol):
    """What rendering needs from the index: set names and CIDR-set existence."""

    def has_set(self, name: str) -> bool:
        """Whether a selector/named-port set is programmed (``c4_``/``c6_`` CIDR sets
        and the IPv6 sets exist only while they have members)."""
        ...

    def literal_set(self, decl: str, elements: list[str]) -> str:
        """Name of a named set holding `elements` (for lists too long to inline)."""
        ...

    log_prefix: str
    #: the verdict of a Deny rule ("drop" or "reject"); a context without one drops
    deny: str


def _addr_kw(family: int, side: str) -> str:
    return f"{'ip' if family == 4 else 'ip6'} {'saddr' if side == 'src' else 'daddr'}"


#: Lists (nets, ports) up to this long are written inline: a positive list as one
#: rule line per member, a negative list as a chain of ``!=`` terms.  Longer lists
#: become a named interval set shared by every rule with the same list.  Anonymous
#: sets (``{ a, b }``) are avoided on purpose: each one is a kernel set that every
#: later nft command lists into its cache, so a ruleset with many of them makes every
#: nft command (a full load most of all) slow.
INLINE_LIST_MAX = 4


def _merge_ports(ports: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for lo, hi in sorted(ports):
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return [(a, b) for a, b in out]


def _collapse(nets: Iterable[Any]) -> list[str]:
    nets = tuple(nets)
    if not nets:
        return []
    return list(_collapse_cached(nets))


@lru_cache(maxsize=16384)
def _collapse_cached(nets: tuple[Any, ...]) -> tuple[str, ...]:
    return tuple(nftstr.cidr(n) for n in ipaddress.collapse_addresses(nets))


def _port_text(p: tuple[int, int]) -> str:
    lo = nftstr.number(p[0], 0, 65535)
    return lo if p[0] == p[1] else f"{lo}-{nftstr.number(p[1], 0, 65535)}"


def _rule_families(rule: CompiledRule) -> list[int | None]:
    """[None] when the rule is family-agnostic, else the families it applies to."""
    specific = (rule.ip_version is not None or rule.icmp is not None or rule.not_icmp is not None
                or rule.src.family_specific() or rule.dst.family_specific())
    if not specific:
        return [None]
    fams = [4, 6]
    if rule.ip_version:
        fams = [rule.ip_version]
    if rule.protocol == 1:
        fams = [f for f in fams if f == 4]
    elif rule.protocol == 58:
        fams = [f for f in fams if f == 6]
    for side in (rule.src, rule.dst):
        if side.nets:
            have = {n.version for n in side.nets}
            fams = [f for f in fams if f in have]
    return fams  # type: ignore[return-value]


def _verdict(action: str, in_profile: bool, log_prefix: str, deny: str = "drop") -> str | None:
    if action == "Allow":
        return f"meta mark set meta mark | {MARK_ALLOW:#x} return"
    if action == "Deny":
        if deny not in ("drop", "reject"):
            raise ValueError(f"deny verdict {deny!r} is not drop or reject")
        return deny
    if action == "Pass":
        return "return" if in_profile else f"meta mark set meta mark | {MARK_PASS:#x} return"
    if action == "Log":
        return f"log prefix {nftstr.log_prefix(log_prefix + ': ')} level info"
    return None


def _side_alternatives(rule: CompiledRule, side: SideMatch, which: str, fam: int,
                       ctx: RenderContext) -> list[list[str]] | None:
    """For one side: a list of groups, each a list of OR-alternatives (a group of one
    string is a plain AND term).  None when this side can never match `fam`."""
    groups: list[list[str]] = []
    kw = _addr_kw(fam, which)
    addr_t = "ipv4_addr" if fam == 4 else "ipv6_addr"
    if side.nets:
        nets = _collapse(n for n in side.nets if n.version == fam)
        if not nets:
            return None
        if len(nets) <= INLINE_LIST_MAX:
            groups.append([f"{kw} {n}" for n in nets])
        else:
            groups.append([f"{kw} @{ctx.literal_set(f'type {addr_t}; flags interval', nets)}"])
    not_nets = _collapse(n for n in side.not_nets if n.version == fam)
    if not_nets:
        if len(not_nets) <= INLINE_LIST_MAX:
            groups.append([" ".join(f"{kw} != {n}" for n in not_nets)])
        else:
            groups.append([f"{kw} != @{ctx.literal_set(f'type {addr_t}; flags interval', not_nets)}"])
    if side.selector is not None:
        h = selector_hash(side.selector)
        alts = [f"{kw} @{n}" for n in (f"s{fam}_{h}", f"c{fam}_{h}") if ctx.has_set(n)]
        if not alts:
            return None          # no member of this family: the rule cannot match
        groups.append(alts)
    if side.not_selector is not None:
        h = selector_hash(side.not_selector)
        terms = [f"{kw} != @{n}" for n in (f"s{fam}_{h}", f"c{fam}_{h}") if ctx.has_set(n)]
        if terms:
            groups.append([" ".join(terms)])
    hdr = _PORT_HEADERS.get(rule.protocol or 0)
    pkw = f"{hdr} {'sport' if which == 'src' else 'dport'}" if hdr else None
    if pkw and (side.ports or side.named_ports):
        alts = []
        ports = [_port_text(p) for p in _merge_ports(side.ports)]
        if len(ports) <= INLINE_LIST_MAX:
            alts.extend(f"{pkw} {p}" for p in ports)
        else:
            alts.append(f"{pkw} @{ctx.literal_set('type inet_service; flags interval', ports)}")
        for name in side.named_ports:
            n = f"n{fam}_{_np_hash(side, rule.protocol, name)}"  # type: ignore[arg-type]
            if ctx.has_set(n):
                alts.append(f"{kw} . {pkw} @{n}")
        if not alts:
            return None          # only named ports, none resolves in this family
        groups.append(alts)
    if pkw and side.not_ports:
        ports = [_port_text(p) for p in _merge_ports(side.not_ports)]
        if len(ports) <= INLINE_LIST_MAX:
            groups.append([" ".join(f"{pkw} != {p}" for p in ports)])
        else:
            groups.append([f"{pkw} != @{ctx.literal_set('type inet_service; flags interval', ports)}"])
    if pkw:
        for name in side.not_named_ports:
            n = f"n{fam}_{_np_hash(side, rule.protocol, name)}"  # type: ignore[arg-type]
            if ctx.has_set(n):
                groups.append([f"{kw} . {pkw} != @{n}"])
    return groups


@lru_cache(maxsize=65536)
def named_port_hash(key: NamedPortKey) -> str:
    """16 hex chars naming a named-port set."""
    sel_text, proto, name = key
    return hashlib.sha224(f"{sel_text}\0{proto}\0{name}".encode()).hexdigest()[:16]


def _np_hash(side: SideMatch, proto: int, name: str) -> str:
    return named_port_hash((str(side.port_selector or All()), proto, name))


def _icmp_groups(rule: CompiledRule, fam: int | None) -> list[list[str]]:
    kw = "icmpv6" if (fam == 6 or rule.protocol == 58) else "icmp"
    groups: list[list[str]] = []
    if rule.icmp is not None:
        t, c = _icmp_numbers(rule.icmp)
        term = f"{kw} type {t}"
        if c is not None:
            term += f" {kw} code {c}"
        groups.append([term])
    if rule.not_icmp is not None:
        t, c = _icmp_numbers(rule.not_icmp)
        if c is None:
            groups.append([f"{kw} type != {t}"])
        else:
            # not (type t and code c) = type != t, or type t and code != c
            groups.append([f"{kw} type != {t}", f"{kw} type {t} {kw} code != {c}"])
    return groups


def _icmp_numbers(tc: tuple[Any, Any]) -> tuple[str, str | None]:
    """An ICMP (type, code) as nft text (a code needs a type, as Calico validates)."""
    t, c = tc
    return nftstr.number(t, 0, 255), nftstr.number(c, 0, 255) if c is not None else None


def render_rule(rule: CompiledRule, ctx: RenderContext, in_profile: bool = False) -> list[str]:
    """nft rule lines (without ``add rule`` prefix) for one compiled rule."""
    if rule.unsupported and rule.action in ("Allow", "Pass"):
        # We cannot check the extra match: never allow more than the rule says.
        return []
    verdict = _verdict(rule.action, in_profile, ctx.log_prefix, getattr(ctx, "deny", "drop"))
    if verdict is None:
        return []
    lines: list[str] = []
    for fam in _rule_families(rule):
        groups: list[list[str]] = []
        if fam is not None and rule.ip_version is not None:
            groups.append([f"meta nfproto {'ipv4' if fam == 4 else 'ipv6'}"])
        if rule.protocol is not None:
            groups.append([f"meta l4proto {nftstr.number(rule.protocol, 0, 255)}"])
        if rule.not_protocol is not None:
            groups.append([f"meta l4proto != {nftstr.number(rule.not_protocol, 0, 255)}"])
        groups.extend(_icmp_groups(rule, fam))
        dead = False
        for which, side in (("src", rule.src), ("dst", rule.dst)):
            if fam is None:
                # family-agnostic: only ports can appear on the sides
                sg = _side_alternatives(rule, side, which, 4, ctx) or []
            else:
                sg = _side_alternatives(rule, side, which, fam, ctx)  # type: ignore[assignment]
                if sg is None:
                    dead = True
                    break
            groups.extend(sg)
        if dead:
            continue
        if fam is not None and rule.ip_version is None and not any(
                ("ip " in g[0] or "ip6 " in g[0] or "icmp" in g[0]) for g in groups):
            groups.insert(0, [f"meta nfproto {'ipv4' if fam == 4 else 'ipv6'}"])
        for combo in itertools.product(*groups):
            lines.append(" ".join([*combo, verdict]))
    return lines
