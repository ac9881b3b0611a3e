"""The records the policy index keeps, and how they are read from Calico v3 documents.

It owns the immutable `Member` (an endpoint, local or remote, or a network set: its
labels, profiles, addresses, named ports), `Policy` and `Profile` records, the
`IndexChanges` a recompute returns, and the parsing that builds them
(`member_from_doc`, `policy_from_doc`, `profile_from_doc`). Parsing never fails
open: a member that cannot be used is absent; a policy or profile whose rules cannot
be compiled denies instead.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
import sys
import weakref
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Iterable, Mapping

from calico_net.model.selector import NAMESPACE_LABEL, ORCHESTRATOR_LABEL, Selector

from . import nftstr
from .nftstr import NftStringError, ifname_text
from .rules import (
    NS_LABEL_PREFIX,
    NS_NAME_LABEL,
    SA_NAME_LABEL,
    CompiledRule,
    compile_rules,
    policy_applies_selector,
)

log = logging.getLogger(__name__)

__all__ = [
    "member_for",
    "workload_member",
    "member_from_doc",
    "policy_from_doc",
    "profile_from_doc",
    "policy_sort_key",
    "effective_types",
    "Member",
    "Policy",
    "Profile",
    "IndexChanges",
    "Key",
    "shared_labels",
    "DENY_ALL",
    "ENDPOINT_KINDS",
    "NETSET_KINDS",
    "POLICY_KINDS",
]

ENDPOINT_KINDS = ("WorkloadEndpoint", "HostEndpoint")
NETSET_KINDS = ("NetworkSet", "GlobalNetworkSet")
POLICY_KINDS = ("NetworkPolicy", "GlobalNetworkPolicy")

Key = tuple[str, "str | None", str]       # (kind, namespace or None, name)


# ----------------------------------------------------------- shared label sets


class SharedLabels(dict):
    """A label set shared by every holder of the same labels: read-only by
    convention (no holder changes a label set in place, each builds a new one).
    A dict subclass only so that the share table can hold it weakly."""

    __slots__ = ("__weakref__",)


# (key, value) pairs in the holder's order -> the one shared dict. Weak: a label
# set that no member or document holds any longer leaves the table with it, so
# label churn does not grow it.
_SHARED: "weakref.WeakValueDictionary[tuple[tuple[Any, Any], ...], SharedLabels]" = \
    weakref.WeakValueDictionary()


def shared_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """The shared dict equal to `labels`. In a cluster most endpoints share their
    label set with many others (the pods of one deployment); one dict per distinct
    set, instead of one per endpoint, is most of what a remote endpoint costs in
    labels. Unhashable values (bad data: validation passes only strings) are not
    shared."""
    items = tuple(labels.items())
    try:
        got = _SHARED.get(items)
    except TypeError:
        return dict(labels)
    if got is None:
        got = _SHARED[items] = SharedLabels(items)
    return got


# ----------------------------------------------------------------- records


@dataclass(slots=True)
class Member:
    """Something that can be selected: an endpoint (local or remote) or a network set.

    One per endpoint of the cluster, so kept small: slots, no parsed document,
    the label set and the profile list shared with every member that has the
    same (`shared_labels`, `_shared_profiles`).
    Immutable by convention (a change is a new record: holders compare old and
    new), not by a frozen dataclass, whose `__init__` costs three times as much
    (one is made per endpoint read)."""

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
        """What the member contributes to sets (compared to detect changes). Made on
        each call, not kept: the sets keep the record they settled as its
        contribution, and one tuple per endpoint is 8 MB at 100,000."""
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


def policy_sort_key(p: Policy) -> tuple[Any, ...]:
    """Calico's policy order: `order` ascending (missing: last), then the name."""
    return p.sort_key


#: the rules of a policy or profile whose own rules cannot be used (never fail open)
DENY_ALL: tuple[CompiledRule, ...] = (CompiledRule(action="Deny"),)


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


# ----------------------------------------------------------------- parsing


def effective_types(spec: Mapping[str, Any]) -> tuple[str, ...]:
    """Calico's policy `types`, defaulted as documented when omitted: Ingress if there
    are no egress rules; Egress if only egress rules; both if both."""
    types = spec.get("types")
    if types:
        return tuple(types)
    ing, eg = bool(spec.get("ingress")), bool(spec.get("egress"))
    if eg and ing:
        return ("Ingress", "Egress")
    if eg:
        return ("Egress",)
    return ("Ingress",)


def policy_from_doc(key: Key, doc: Mapping[str, Any]) -> Policy | None:
    """The policy of a NetworkPolicy/GlobalNetworkPolicy document. One whose rules
    cannot be compiled denies all traffic of the endpoints it selects in the
    directions it names (its order kept); one whose selector or types cannot be read
    is None (treated as absent)."""
    # (doNotTrack, preDNAT and applyOnForward are not part of the record:
    # PolicyDataplane.update reads them and hostprotect decides the chains from them)
    kind, ns, _name = key
    try:
        spec = doc.get("spec") or {}
        order = _order(spec.get("order"))
        applies = policy_applies_selector(kind, ns, spec)
        types = effective_types(spec)
    except Exception as exc:  # noqa: BLE001 - one bad object must not poison the rest
        log.error("%s %s: cannot use it (%s); treated as absent", kind, key, exc)
        return None
    try:
        ingress = compile_rules(spec.get("ingress"), ns)
        egress = compile_rules(spec.get("egress"), ns)
    except Exception as exc:  # noqa: BLE001
        log.error("%s %s: cannot use its rules (%s); it denies all traffic of the endpoints "
                  "it selects instead", kind, key, exc)
        ingress = DENY_ALL if "Ingress" in types else ()
        egress = DENY_ALL if "Egress" in types else ()
    return Policy(key=key, order=order, applies=applies, types=types,
                  ingress=ingress, egress=egress)


def profile_from_doc(name: str, doc: Mapping[str, Any]) -> Profile:
    """The profile of a Profile document; one whose rules cannot be compiled denies
    everything (its labels still apply)."""
    spec = doc.get("spec") or {}
    try:
        return Profile(name=name, labels_to_apply=dict(spec.get("labelsToApply") or {}),
                       ingress=compile_rules(spec.get("ingress")),
                       egress=compile_rules(spec.get("egress")))
    except Exception as exc:  # noqa: BLE001
        log.error("Profile %s: cannot use its rules (%s); it denies everything instead",
                  name, exc)
        labels = spec.get("labelsToApply")
        return Profile(name=name, labels_to_apply=dict(labels) if isinstance(
            labels, Mapping) else {}, ingress=DENY_ALL, egress=DENY_ALL)


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
            # proves it a canonical dotted quad, far cheaper than ipaddress
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


_AF_INET6 = socket.AF_INET6


def _host_addrs(values: Any) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """(IPv4, IPv6) addresses of ipNetworks that are all host addresses in canonical
    text ("a.b.c.d/32", "x::y/128", as IPAM writes them); None for anything else
    (another form, a wider network, something that is not an address): such an
    endpoint takes the general path (`host_routes` says what is wrong with it)."""
    if type(values) is not list or not values:
        return None
    a4: list[str] = []
    a6: list[str] = []
    for v in values:
        if type(v) is not str:
            return None
        a, _, plen = v.rpartition("/")
        try:
            if plen == "32" and _ntop(_AF_INET, _pton(_AF_INET, a)) == a:
                a4.append(a)
            elif plen == "128" and _ntop(_AF_INET6, _pton(_AF_INET6, a)) == a:
                a6.append(a)
            else:
                return None
        except (OSError, ValueError):
            return None
    return _uniq_sorted(a4), _uniq_sorted(a6)


def workload_member(name: str, namespace: str, doc: Mapping[str, Any],
                    local_node: str | None = None) -> Member | None:
    """The Member of a validated WorkloadEndpoint document whose ipNetworks are all
    canonical host addresses (`_host_addrs`), built where the document is read (the
    agent's syncer) so that a remote endpoint is never decoded again to be
    dispatched; None for any other endpoint (the daemon takes the general path:
    it decodes the document, checks its addresses and builds the record then).
    Given `local_node`, another node's endpoint has no interface name in its
    record (only this node's interfaces are programmed)."""
    spec = doc.get("spec")
    if type(spec) is not dict:
        return None
    addrs = _host_addrs(spec.get("ipNetworks"))
    if addrs is None:
        return None
    try:
        return member_from_doc("WorkloadEndpoint", name, namespace, doc, addrs=addrs,
                               iface=local_node is None or spec.get("node") == local_node)
    except Exception:  # noqa: BLE001 - the general path logs what is wrong
        return None


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


# profile lists as members hold them: the endpoints of a namespace share one tuple
_PROFILES: dict[tuple[str, ...], tuple[str, ...]] = {}
_PROFILES_MAX = 1 << 14


def _shared_profiles(values: Any) -> tuple[str, ...]:
    if not values:
        return ()
    t = tuple(values)
    try:
        got = _PROFILES.get(t)
    except TypeError:           # unhashable entries (bad data): not shared
        return t
    if got is None:
        if len(_PROFILES) >= _PROFILES_MAX:
            _PROFILES.clear()
        got = _PROFILES[t] = t
    return got


def member_for(key: Key, doc: Mapping[str, Any] | None) -> Member | None:
    """The record of the endpoint or network set `key` (as `PolicyIndex` files it:
    namespace already decided) for `doc`; None when deleted or when it cannot be
    used (logged: one bad object must not poison the rest). The index parses at
    `update()`, so that what waits for its recompute is the record, not the
    document (a cold start has every endpoint of the cluster waiting)."""
    if doc is None:
        return None
    try:
        return member_from_doc(key[0], key[2], key[1], doc, key)
    except Exception as exc:  # noqa: BLE001
        log.warning("%s %s: cannot use it (%s); treated as absent", key[0], key, exc)
        return None


def member_from_doc(kind: str, name: str, namespace: str | None, doc: Mapping[str, Any],
                    key: Key | None = None,
                    addrs: tuple[tuple[str, ...], tuple[str, ...]] | None = None,
                    iface: bool = True) -> Member:
    """Build a Member from a validated Calico v3 document.

    An endpoint's addresses must be host addresses (/32, /128, or a bare address),
    as Calico's validation demands (libcalico-go's validateWorkloadEndpointSpec:
    "IP network contains multiple addresses"): a wider one would put a whole
    network into every selector set the endpoint is in. Such an endpoint raises
    ValueError (the index treats it as absent). Its interface name must be one
    the nft text can carry (`nftstr.ifname_text`), else it is not programmed.
    `addrs`: the (IPv4, IPv6) host addresses, already read (`_host_addrs`);
    `iface` False: the record leaves the interface name out."""
    meta = doc.get("metadata") or {}
    spec = doc.get("spec") or {}
    if kind in ("HostEndpoint", "GlobalNetworkSet"):
        namespace = None
    else:
        namespace = namespace or meta.get("namespace") or "default"
    if addrs is not None:
        (a4, a6), n4, n6 = addrs, (), ()
    else:
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
    profiles = _shared_profiles(spec.get("profiles")) if kind in ENDPOINT_KINDS else ()
    ports = _ports(spec.get("ports")) if kind in ENDPOINT_KINDS else ()
    own = dict(meta.get("labels") or {})
    if namespace is not None:
        own[NAMESPACE_LABEL] = namespace
        own[NS_LABEL_PREFIX + NS_NAME_LABEL] = namespace
    if kind == "WorkloadEndpoint":
        own[ORCHESTRATOR_LABEL] = str(spec.get("orchestrator") or "cni")
        sa = spec.get("serviceAccountName")
        # as Calico's pod conversion: the label only for a name shorter than 63
        # characters (a label value holds at most 63)
        if sa and isinstance(sa, str) and len(sa) < 63:
            own[SA_NAME_LABEL] = sa
    ifname = (spec.get("interfaceName") or None) if kind in ENDPOINT_KINDS and iface else None
    if ifname is not None:
        try:
            # checked, not kept quoted: nftstr.ifname caches the quoted form of the
            # interfaces the dataplane programs (local ones), not of every remote one
            ifname_text(ifname)
        except NftStringError as exc:
            # "*" (all host interfaces) and names the kernel would refuse are not programmed
            log.warning("%s %s: interface name not supported (%s); endpoint not programmed",
                        kind, name, exc)
            ifname = None
    if key is None or key != (kind, namespace, name):
        key = (kind, namespace, name)
    node = spec.get("node") if kind in ENDPOINT_KINDS else None
    return Member(
        key=key, own_labels=shared_labels(own), profiles=profiles,
        addrs4=a4, addrs6=a6, nets4=n4, nets6=n6, ports=ports,
        # one string per node name, not one per endpoint
        node=sys.intern(node) if type(node) is str else node,
        iface=ifname,
    )
