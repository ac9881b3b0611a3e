"""Policy kinds' specs: rules (protocols, ICMP, source/destination entities),
NetworkPolicy, GlobalNetworkPolicy and Profile, tiers, the staged policy kinds, and
the network sets they select.

The cross-field rules are Calico's (ports need a port protocol, ICMP matches need
ICMP, `types` must cover the rules given, preDNAT and doNotTrack need
applyOnForward).
"""
from __future__ import annotations

import math
from typing import Annotated, Any, Iterator, Optional, Union

from pydantic import Field, PlainValidator

import re

from calico_net.model.fields.checks import bounded, enum_before, fail, show
from calico_net.model.fields.network import (
    PORT_PROTOCOLS, Net, Port, Protocol, ip_version, parse_protocol,
)
from calico_net.model.fields.text import Annotations, Labels, Name, Selector
from calico_net.model.resources.cluster import StoredList, StoredMapping
from calico_net.model.resources.base import (
    CalicoModel, CheckContext, Error, field_path,
)

def _order(value: Any) -> Union[int, float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise fail(f"{show(value)} is not a number (policy order: lower numbers apply first)")
    try:
        finite = math.isfinite(value)  # NaN and infinities have no place in an ordering
    except OverflowError:               # an int too big for a float
        finite = False
    if not finite:
        raise fail(f"{show(value)} is not a finite number (policy order: lower numbers apply first)")
    return value


Order = Annotated[Union[int, float], PlainValidator(_order)]

# --- tiers ---------------------------------------------------------------------------------

#: Calico's tier of untiered policy, and the other tiers Calico always has (they
#: exist without a Tier document and cannot be deleted): name -> (order, defaultAction).
DEFAULT_TIER = "default"
BUILTIN_TIERS: dict[str, tuple[float, str]] = {
    "default": (1_000_000.0, "Deny"),
    "kube-admin": (1_000.0, "Pass"),
    "kube-baseline": (10_000_000.0, "Pass"),
}
#: the order a Tier without one is stored with (Calico's DefaultTierFields)
DEFAULT_TIER_ORDER = 1_000_000.0

_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN = _LABEL + r"(\." + _LABEL + ")*"
TIER_NAME_RE = re.compile(f"^{_LABEL}$")
# Calico's policy name rules (libcalico-go validator): a label with at most one dot;
# namespaced policy also takes the knp.default./ossg.default. prefixed names.
GNP_NAME_RE = re.compile(rf"^({_LABEL}\.)?{_LABEL}$")
NP_NAME_RE = re.compile(rf"^(({_LABEL})(\.{_LABEL})?|((?:knp|ossg)\.default\.({_SUBDOMAIN})))$")


def _tier_name(value: Any) -> str:
    if not isinstance(value, str):
        raise fail(f"{show(value)} is not a tier name (a string)")
    if len(value) > 63 or not TIER_NAME_RE.fullmatch(value):
        raise fail(f"{show(value)} is not a tier name (lower case alphanumerics and '-', "
                   "at most 63 characters, no dots)")
    return value


TierName = Annotated[str, PlainValidator(_tier_name)]
TierAction = enum_before(("Deny", "Pass"), "tier default action")
StagedAction = enum_before(("Set", "Delete"), "staged action")


def policy_tier(spec: Any) -> str:
    """The tier a policy document's spec names (`default` when it names none)."""
    tier = spec.get("tier") if isinstance(spec, dict) else getattr(spec, "tier", None)
    return tier or DEFAULT_TIER


def tier_order_action(name: str, spec: Any) -> tuple[float, str]:
    """A stored Tier's (order, defaultAction), Calico's defaults filled in."""
    spec = spec if isinstance(spec, dict) else {}
    order = spec.get("order")
    if isinstance(order, bool) or not isinstance(order, (int, float)) or not math.isfinite(order):
        order = BUILTIN_TIERS.get(name, (DEFAULT_TIER_ORDER, ""))[0]
    action = spec.get("defaultAction")
    if action not in ("Deny", "Pass"):
        action = BUILTIN_TIERS.get(name, (0.0, "Deny"))[1]
    return float(order), action


class TierSpec(CalicoModel):
    """A tier: its policies are evaluated together, tiers in `order` (lower first;
    stored as 1000000 when omitted, as Calico does), then by name."""

    order: Optional[Order] = None
    default_action: Optional[TierAction] = None

    def semantic_errors(self, path: str, ctx: CheckContext) -> Iterator[Error]:
        fixed = BUILTIN_TIERS.get(ctx.name or "")
        if fixed is None:
            return
        order, action = fixed
        if self.order is not None and float(self.order) != order:
            yield (field_path(path, "order"),
                   f"{show(self.order)}: the {show(ctx.name)} tier's order must be {order:g}")
        if self.default_action is not None and self.default_action != action:
            yield (field_path(path, "defaultAction"),
                   f"{show(self.default_action)}: the {show(ctx.name)} tier's default action "
                   f"must be {action}")

# --- policy rules --------------------------------------------------------------------------

Action = enum_before(("Allow", "Deny", "Log", "Pass"), "action")
PolicyType = enum_before(("Ingress", "Egress"), "policy type")


def _check_ip_version(value: Any) -> int:
    if isinstance(value, bool) or value not in (4, 6):
        raise fail(f"{show(value)} is not a valid IP version (4 or 6)")
    return value


IPVersion = Annotated[int, PlainValidator(_check_ip_version)]


class ICMPFields(CalicoModel):
    type: Optional[bounded(0, 254, "ICMP type")] = None
    code: Optional[bounded(0, 255, "ICMP code")] = None

    def semantic_errors(self, path: str, ctx: CheckContext) -> Iterator[Error]:
        if self.code is not None and self.type is None:
            yield field_path(path, "code"), "an ICMP code requires an ICMP type"


class ServiceAccountMatch(CalicoModel):
    names: Optional[list[Name]] = None
    selector: Optional[Selector] = None


def _no_global(path: str, alias: str, text: Optional[str]) -> Iterator[Error]:
    """Calico allows global() only in a namespaceSelector."""
    if text and "global(" in text.replace(" ", ""):
        yield field_path(path, alias), f"{show(text)}: global() may only be used in a namespaceSelector"


class EntityRule(CalicoModel):
    nets: Optional[list[Net]] = None
    selector: Optional[Selector] = None
    namespace_selector: Optional[Selector] = None
    ports: Optional[list[Port]] = None
    not_nets: Optional[list[Net]] = None
    not_selector: Optional[Selector] = None
    not_ports: Optional[list[Port]] = None
    service_accounts: Optional[ServiceAccountMatch] = None

    def semantic_errors(self, path: str, ctx: CheckContext) -> Iterator[Error]:
        yield from _no_global(path, "selector", self.selector)
        yield from _no_global(path, "notSelector", self.not_selector)


class RuleMetadata(CalicoModel):
    annotations: Optional[Annotations] = None


class Rule(CalicoModel):
    action: Action
    ip_version: Optional[IPVersion] = None
    protocol: Optional[Protocol] = None
    icmp: Optional[ICMPFields] = None
    not_protocol: Optional[Protocol] = None
    not_icmp: Optional[ICMPFields] = Field(None, alias="notICMP")
    source: Optional[EntityRule] = None
    destination: Optional[EntityRule] = None
    metadata: Optional[RuleMetadata] = None

    def semantic_errors(self, path: str, ctx: CheckContext) -> Iterator[Error]:
        proto = parse_protocol(self.protocol) if self.protocol is not None else None
        for side in ("source", "destination"):
            ent: EntityRule | None = getattr(self, side)
            if ent is None:
                continue
            yield from ent.semantic_errors(field_path(path, side), ctx)
            for pfield in ("ports", "notPorts"):
                ports = ent.ports if pfield == "ports" else ent.not_ports
                if ports and proto not in PORT_PROTOCOLS:
                    now = "not set" if self.protocol is None else show(self.protocol)
                    yield (field_path(path, f"{side}.{pfield}"),
                           f"ports require protocol TCP, UDP, SCTP or UDPLite (protocol is {now})")
            if self.ip_version:
                for nfield in ("nets", "notNets"):
                    nets = ent.nets if nfield == "nets" else ent.not_nets
                    for i, net in enumerate(nets or ()):
                        if ip_version(net) != self.ip_version:
                            yield (field_path(path, f"{side}.{nfield}[{i}]"),
                                   f"{show(net)} is not an IPv{self.ip_version} network "
                                   f"(the rule has ipVersion {self.ip_version})")
        src_versions = {ip_version(n) for n in (self.source.nets if self.source else None) or ()}
        dst_versions = {ip_version(n) for n in
                        (self.destination.nets if self.destination else None) or ()}
        if src_versions and dst_versions and not src_versions & dst_versions:
            yield (field_path(path, "destination.nets"),
                   "source and destination nets have no IP version in common, so the rule "
                   "can never match")
        for ifield, alias, pval in (("icmp", "icmp", self.protocol),
                                    ("not_icmp", "notICMP", self.protocol)):
            icmp = getattr(self, ifield)
            if icmp is None:
                continue
            yield from icmp.semantic_errors(field_path(path, alias), ctx)
            if pval is None or parse_protocol(pval) not in (1, 58):
                now = "not set" if pval is None else show(pval)
                yield (field_path(path, alias),
                       f"ICMP matches require protocol ICMP or ICMPv6 (protocol is {now})")
        for pfield, pval in (("protocol", self.protocol), ("notProtocol", self.not_protocol)):
            if pval is None or self.ip_version is None:
                continue
            num = parse_protocol(pval)
            if num == 1 and self.ip_version == 6:
                yield field_path(path, pfield), "protocol ICMP requires ipVersion 4 (use ICMPv6 for IPv6)"
            if num == 58 and self.ip_version == 4:
                yield field_path(path, pfield), "protocol ICMPv6 requires ipVersion 6 (use ICMP for IPv4)"


def _rules_errors(spec: Any, path: str, ctx: CheckContext) -> Iterator[Error]:
    for direction in ("ingress", "egress"):
        for i, rule in enumerate(getattr(spec, direction) or ()):
            yield from rule.semantic_errors(field_path(path, f"{direction}[{i}]"), ctx)


# --- policies ------------------------------------------------------------------------------


class _PolicySpecBase(CalicoModel):
    tier: Optional[TierName] = None
    order: Optional[Order] = None
    ingress: list[Rule] = Field(default_factory=list)
    egress: list[Rule] = Field(default_factory=list)
    selector: Selector = "all()"
    types: Optional[list[PolicyType]] = None
    service_account_selector: Optional[Selector] = None

    def effective_types(self) -> list[str]:
        """Calico's rule when `types` is omitted: Egress only when there are egress rules
        and no ingress rules, both when there are both, else Ingress."""
        if self.types:
            return list(self.types)
        if self.egress:
            return ["Ingress", "Egress"] if self.ingress else ["Egress"]
        return ["Ingress"]

    def semantic_errors(self, path: str, ctx: CheckContext) -> Iterator[Error]:
        yield from _no_global(path, "serviceAccountSelector", self.service_account_selector)
        yield from _rules_errors(self, path, ctx)
        if self.types is not None:
            seen: set[str] = set()
            for i, t in enumerate(self.types):
                if t in seen:
                    yield field_path(path, f"types[{i}]"), f"{show(t)} is listed twice"
                seen.add(t)
            if self.ingress and "Ingress" not in self.types:
                yield field_path(path, "ingress"), "ingress rules are present but types does not include Ingress"
            if self.egress and "Egress" not in self.types:
                yield field_path(path, "egress"), "egress rules are present but types does not include Egress"


class NetworkPolicySpec(_PolicySpecBase):
    """Namespaced policy: applies to workload endpoints of its namespace."""

    performance_hints: Optional[list[enum_before(("AssumeNeededOnEveryNode",), "performance hint")]] = None


class GlobalNetworkPolicySpec(_PolicySpecBase):
    """Cluster-wide policy: workload endpoints of every namespace and host endpoints."""

    do_not_track: bool = False
    pre_dnat: bool = Field(False, alias="preDNAT")
    apply_on_forward: bool = False
    namespace_selector: Optional[Selector] = None
    performance_hints: Optional[list[enum_before(("AssumeNeededOnEveryNode",), "performance hint")]] = None

    def semantic_errors(self, path: str, ctx: CheckContext) -> Iterator[Error]:
        yield from super().semantic_errors(path, ctx)
        # Calico's own rules for the host protection flags
        if self.do_not_track and self.pre_dnat:
            yield field_path(path, "preDNAT"), "preDNAT and doNotTrack cannot both be true"
        if (self.do_not_track or self.pre_dnat) and not self.apply_on_forward:
            which = "doNotTrack" if self.do_not_track else "preDNAT"
            yield field_path(path, "applyOnForward"), f"must be true when {which} is true"
        if self.pre_dnat:
            if self.egress:
                yield field_path(path, "egress"), "preDNAT policy cannot have egress rules"
            if self.types and "Egress" in self.types:
                yield field_path(path, "types"), "preDNAT policy cannot have type Egress"


class ProfileSpec(CalicoModel):
    ingress: list[Rule] = Field(default_factory=list)
    egress: list[Rule] = Field(default_factory=list)
    labels_to_apply: Optional[Labels] = None

    def semantic_errors(self, path: str, ctx: CheckContext) -> Iterator[Error]:
        yield from _rules_errors(self, path, ctx)


class NetworkSetSpec(CalicoModel):
    nets: list[Net] = Field(default_factory=list)


class GlobalNetworkSetSpec(NetworkSetSpec):
    pass




# --- staged policies: stored and shown, never enforced (as in Calico) -----------------------


def _staged_errors(spec: Any, path: str, ctx: CheckContext) -> Iterator[Error]:
    """Calico's rule: a staged Delete carries nothing but the tier; a staged Set is
    checked as the policy it would become."""
    if spec.staged_action == "Delete":
        extra = sorted(f for f in spec.model_fields_set if f not in ("staged_action", "tier"))
        if extra:
            names = ", ".join(type(spec).model_fields[f].alias or f for f in extra)
            yield (field_path(path, "stagedAction"),
                   f"with stagedAction Delete no field but tier may be set (found {names})")
        return
    yield from super(type(spec), spec).semantic_errors(path, ctx)


class StagedNetworkPolicySpec(NetworkPolicySpec):
    staged_action: Optional[StagedAction] = None

    def semantic_errors(self, path: str, ctx: CheckContext) -> Iterator[Error]:
        yield from _staged_errors(self, path, ctx)


class StagedGlobalNetworkPolicySpec(GlobalNetworkPolicySpec):
    staged_action: Optional[StagedAction] = None

    def semantic_errors(self, path: str, ctx: CheckContext) -> Iterator[Error]:
        yield from _staged_errors(self, path, ctx)


class StagedKubernetesNetworkPolicySpec(CalicoModel):
    """A Kubernetes NetworkPolicy spec, staged; its parts are kept as written."""

    staged_action: Optional[StagedAction] = None
    pod_selector: Optional[StoredMapping] = None
    ingress: Optional[StoredList] = None
    egress: Optional[StoredList] = None
    policy_types: Optional[list[PolicyType]] = None
