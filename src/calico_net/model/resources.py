"""Calico v3 resources (`apiVersion: projectcalico.org/v3`) as pydantic v2 models.

One model per kind (`IPPool`, `GlobalNetworkPolicy`, ...) with `metadata` and a
`...Spec`; field names are snake_case in Python and Calico's own JSON names on the
wire (`ipipMode`, `ipNATs`, `peerIP`, ...). All models forbid unknown fields and are
strict about types (a quoted "true" is not a boolean), because what a YAML file says
is what goes to etcd.

Validation happens in two passes:
1. pydantic: structure, types and per-value checks (the types in `model.fields`);
2. `Resource.semantic_errors()`: rules that tie several fields together (ports need a
   port protocol, blockSize depends on the pool's family, peerSelector excludes peerIP,
   ...). Each returns (field path, message) pairs.

`Resource.to_dict()` dumps only what was written (exclude_unset + aliases), so a
document survives YAML -> object -> JSON -> YAML unchanged; defaults are still
readable as attributes (`pool.spec.block_size == 26` when the YAML did not say).
Values are kept as written (CIDR text, "1000:2000", "64512.10"); `model.fields.parse_*`
give their meaning.
"""
from __future__ import annotations

import ipaddress
import math
import typing
from typing import Annotated, Any, ClassVar, Iterator, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, model_validator
from pydantic.alias_generators import to_camel

from calico_net.model.fields import (
    ASNumber, Annotations, CIDR, CommunityValue, community_problem, ContainerID, Duration,
    FilePath, HealthTimeoutName, HostAddress, HostInterfaceName, Hostname, IP, IPv4,
    IPv4Interface, IPv6, IPv6Interface, IgnoredInterface, InterfaceExcludeList, InterfaceFilter,
    InterfaceName, InterfacePrefixList, KeyValueList, Labels, LogPrefix, MAC, Name, Namespace,
    Net, PeerIP, Port, PortName, PortNumber, PortRange, Protocol, Region, ResourceVersion,
    SecretKey, Selector, Timestamp, UID, WireguardPublicKey, _cidr_problem, bounded, enum_before,
    fail, ip_version, is_host_network, name_problem, parse_cidr, parse_protocol, pattern_type, regexp_type, show,
    PORT_PROTOCOLS,
)

API_VERSION = "projectcalico.org/v3"

Error = tuple[str, str]


class CalicoModel(BaseModel):
    """Base of every model: Calico's JSON names, no unknown fields, strict types."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=True,  # Python code may construct with snake_case names
        serialize_by_alias=True,
        validate_assignment=False,
        defer_build=True,  # build a kind's validator on first use: calicoctl starts faster
    )

    def semantic_errors(self, path: str, ctx: "CheckContext") -> Iterator[Error]:
        """Cross-field rules; subclasses yield (path, message). Default: none."""
        return iter(())


class CheckContext:
    """What nested checks need to know about the document they are in."""

    def __init__(self, kind: str, name: str | None, namespaced: bool) -> None:
        self.kind = kind
        self.name = name
        self.namespaced = namespaced


def _p(path: str, field: str) -> str:
    return f"{path}.{field}" if path else field


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


#: The words every refusal of a Calico field the dataplane does not enforce carries.
NOT_SUPPORTED_YET = "not supported by calico.net yet"


def not_supported(reason: str) -> str:
    """The message for a Calico field calico.net refuses because it cannot enforce it."""
    return f"{NOT_SUPPORTED_YET} ({reason})"


_NO_SERVICE_ACCOUNTS = not_supported("the dataplane does not match service accounts")


Order = Annotated[Union[int, float], PlainValidator(_order)]

# --- metadata ----------------------------------------------------------------------------


class Metadata(CalicoModel):
    """The parts of Kubernetes ObjectMeta that Calico's v3 resources use."""

    name: Name
    namespace: Optional[Namespace] = None
    labels: Labels = Field(default_factory=dict)
    annotations: Annotations = Field(default_factory=dict)
    uid: Optional[UID] = None
    creation_timestamp: Optional[Timestamp] = None
    resource_version: Optional[ResourceVersion] = None


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
            yield _p(path, "code"), "an ICMP code requires an ICMP type"


class ServiceAccountMatch(CalicoModel):
    names: Optional[list[Name]] = None
    selector: Optional[Selector] = None


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
        if self.service_accounts is not None:
            yield _p(path, "serviceAccounts"), _NO_SERVICE_ACCOUNTS
        for field in ("selector", "not_selector"):
            text = getattr(self, field)
            if text and "global(" in text.replace(" ", ""):
                alias = to_camel(field)
                yield (_p(path, alias),
                       f"{show(text)}: global() may only be used in a namespaceSelector")


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
            yield from ent.semantic_errors(_p(path, side), ctx)
            for pfield in ("ports", "notPorts"):
                ports = ent.ports if pfield == "ports" else ent.not_ports
                if ports and proto not in PORT_PROTOCOLS:
                    now = "not set" if self.protocol is None else show(self.protocol)
                    yield (_p(path, f"{side}.{pfield}"),
                           f"ports require protocol TCP, UDP, SCTP or UDPLite (protocol is {now})")
            if self.ip_version:
                for nfield in ("nets", "notNets"):
                    nets = ent.nets if nfield == "nets" else ent.not_nets
                    for i, net in enumerate(nets or ()):
                        if ip_version(net) != self.ip_version:
                            yield (_p(path, f"{side}.{nfield}[{i}]"),
                                   f"{show(net)} is not an IPv{self.ip_version} network "
                                   f"(the rule has ipVersion {self.ip_version})")
        src_versions = {ip_version(n) for n in (self.source.nets if self.source else None) or ()}
        dst_versions = {ip_version(n) for n in
                        (self.destination.nets if self.destination else None) or ()}
        if src_versions and dst_versions and not src_versions & dst_versions:
            yield (_p(path, "destination.nets"),
                   "source and destination nets have no IP version in common, so the rule "
                   "can never match")
        for ifield, alias, pval in (("icmp", "icmp", self.protocol),
                                    ("not_icmp", "notICMP", self.protocol)):
            icmp = getattr(self, ifield)
            if icmp is None:
                continue
            yield from icmp.semantic_errors(_p(path, alias), ctx)
            if pval is None or parse_protocol(pval) not in (1, 58):
                now = "not set" if pval is None else show(pval)
                yield (_p(path, alias),
                       f"ICMP matches require protocol ICMP or ICMPv6 (protocol is {now})")
        for pfield, pval in (("protocol", self.protocol), ("notProtocol", self.not_protocol)):
            if pval is None or self.ip_version is None:
                continue
            num = parse_protocol(pval)
            if num == 1 and self.ip_version == 6:
                yield _p(path, pfield), "protocol ICMP requires ipVersion 4 (use ICMPv6 for IPv6)"
            if num == 58 and self.ip_version == 4:
                yield _p(path, pfield), "protocol ICMPv6 requires ipVersion 6 (use ICMP for IPv4)"


def _rules_errors(spec: Any, path: str, ctx: CheckContext) -> Iterator[Error]:
    for direction in ("ingress", "egress"):
        for i, rule in enumerate(getattr(spec, direction) or ()):
            yield from rule.semantic_errors(_p(path, f"{direction}[{i}]"), ctx)


# --- policies ------------------------------------------------------------------------------


class _PolicySpecBase(CalicoModel):
    tier: Optional[Literal["default"]] = None
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
        if self.service_account_selector is not None:
            yield _p(path, "serviceAccountSelector"), _NO_SERVICE_ACCOUNTS
        yield from _rules_errors(self, path, ctx)
        if self.types is not None:
            seen: set[str] = set()
            for i, t in enumerate(self.types):
                if t in seen:
                    yield _p(path, f"types[{i}]"), f"{show(t)} is listed twice"
                seen.add(t)
            if self.ingress and "Ingress" not in self.types:
                yield _p(path, "ingress"), "ingress rules are present but types does not include Ingress"
            if self.egress and "Egress" not in self.types:
                yield _p(path, "egress"), "egress rules are present but types does not include Egress"


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
        if self.pre_dnat:
            yield _p(path, "preDNAT"), not_supported(
                "the dataplane has no pre-DNAT host endpoint policy")
        if self.do_not_track:
            yield _p(path, "doNotTrack"), not_supported(
                "the dataplane has no untracked host endpoint policy")
        if self.apply_on_forward:
            yield _p(path, "applyOnForward"), not_supported(
                "host endpoint policy covers traffic to and from the host, not forwarded traffic")
        # Calico's own rules for these flags, reported as well so a document fixed for
        # one message does not meet the next.
        if self.do_not_track and self.pre_dnat:
            yield _p(path, "preDNAT"), "preDNAT and doNotTrack cannot both be true"
        if (self.do_not_track or self.pre_dnat) and not self.apply_on_forward:
            which = "doNotTrack" if self.do_not_track else "preDNAT"
            yield _p(path, "applyOnForward"), f"must be true when {which} is true"
        if self.pre_dnat:
            if self.egress:
                yield _p(path, "egress"), "preDNAT policy cannot have egress rules"
            if self.types and "Egress" in self.types:
                yield _p(path, "types"), "preDNAT policy cannot have type Egress"


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


# --- endpoints -----------------------------------------------------------------------------

_ENDPOINT_PORT_PROTOCOLS = {6: "TCP", 17: "UDP", 132: "SCTP"}


class EndpointPort(CalicoModel):
    """A named port of an endpoint, referenced by name from policy rules."""

    name: PortName
    protocol: Protocol
    port: PortNumber

    def semantic_errors(self, path: str, ctx: CheckContext) -> Iterator[Error]:
        if parse_protocol(self.protocol) not in _ENDPOINT_PORT_PROTOCOLS:
            yield (_p(path, "protocol"),
                   f"{show(self.protocol)} is not a protocol with ports (TCP, UDP or SCTP)")


class WorkloadEndpointPort(EndpointPort):
    host_port: Optional[bounded(0, 65535, "host port")] = None
    host_ip: Optional[IP] = Field(None, alias="hostIP")


class IPNAT(CalicoModel):
    internal_ip: IP = Field(alias="internalIP")
    external_ip: IP = Field(alias="externalIP")


def _ports_errors(ports: list[EndpointPort] | None, path: str, ctx: CheckContext) -> Iterator[Error]:
    seen: set[str] = set()
    for i, port in enumerate(ports or ()):
        yield from port.semantic_errors(_p(path, f"ports[{i}]"), ctx)
        if port.name in seen:
            yield _p(path, f"ports[{i}].name"), f"{show(port.name)} is used by another port"
        seen.add(port.name)


class WorkloadEndpointSpec(CalicoModel):
    # identifiers: libcni's container-ID rule (model.fields.ContainerID)
    orchestrator: Optional[ContainerID] = None
    workload: Optional[ContainerID] = None
    node: Optional[Name] = None
    container_id: Optional[ContainerID] = Field(None, alias="containerID")
    pod: Optional[ContainerID] = None
    endpoint: Optional[ContainerID] = None
    service_account_name: Optional[Name] = None
    ip_networks: list[Net] = Field(default_factory=list)
    ip_nats: Optional[list[IPNAT]] = Field(None, alias="ipNATs")
    ipv4_gateway: Optional[IPv4] = None
    ipv6_gateway: Optional[IPv6] = None
    profiles: list[Name] = Field(default_factory=list)
    interface_name: Optional[InterfaceName] = None
    mac: Optional[MAC] = None
    ports: Optional[list[WorkloadEndpointPort]] = None
    allow_spoofed_source_prefixes: Optional[list[Net]] = None

    def semantic_errors(self, path: str, ctx: CheckContext) -> Iterator[Error]:
        yield from _ports_errors(self.ports, path, ctx)
        for i, net in enumerate(self.ip_networks):
            if not is_host_network(net):
                yield (_p(path, f"ipNetworks[{i}]"),
                       f"{show(net)} holds more than one address (a workload endpoint's "
                       "networks are single addresses: /32 for IPv4, /128 for IPv6)")
        nets = [parse_cidr(n) for n in self.ip_networks] if self.ip_nats else []
        for i, nat in enumerate(self.ip_nats or ()):
            ip = ipaddress.ip_address(nat.internal_ip)
            if not any(ip.version == n.version and ip in n for n in nets):
                yield (_p(path, f"ipNATs[{i}].internalIP"),
                       f"{show(nat.internal_ip)} is not in the endpoint's ipNetworks")


class HostEndpointSpec(CalicoModel):
    node: Name
    interface_name: Optional[HostInterfaceName] = None
    expected_ips: Optional[list[IP]] = Field(None, alias="expectedIPs")
    profiles: list[Name] = Field(default_factory=list)
    ports: Optional[list[EndpointPort]] = None

    def semantic_errors(self, path: str, ctx: CheckContext) -> Iterator[Error]:
        if not self.interface_name and not self.expected_ips:
            yield path, "one of interfaceName or expectedIPs is required"
        elif not self.interface_name:
            yield _p(path, "interfaceName"), not_supported(
                "a host endpoint found by its expectedIPs alone; name its interface")
        elif self.interface_name == "*":
            yield _p(path, "interfaceName"), not_supported(
                "\"*\" (all of a host's interfaces); give each interface its own HostEndpoint")
        yield from _ports_errors(self.ports, path, ctx)


# --- IP pools ------------------------------------------------------------------------------

EncapMode = enum_before(("Never", "Always", "CrossSubnet"), "mode")

_RESERVED_NETS = [
    (ipaddress.ip_network("169.254.0.0/16"), "link-local"),
    (ipaddress.ip_network("fe80::/10"), "link-local"),
    (ipaddress.ip_network("127.0.0.0/8"), "loopback"),
    (ipaddress.ip_network("::1/128"), "loopback"),
    (ipaddress.ip_network("224.0.0.0/4"), "multicast"),
    (ipaddress.ip_network("ff00::/8"), "multicast"),
]

BLOCK_SIZE_RANGE = {4: (20, 32), 6: (116, 128)}
DEFAULT_BLOCK_SIZE = {4: 26, 6: 122}


def _default_block_size(data: dict[str, Any]) -> int:
    return 122 if ":" in str(data.get("cidr", "")) else 26


class IPPoolSpec(CalicoModel):
    cidr: CIDR
    vxlan_mode: EncapMode = "Never"
    ipip_mode: EncapMode = "Never"
    nat_outgoing: bool = False
    disabled: bool = False
    disable_bgp_export: bool = Field(False, alias="disableBGPExport")
    block_size: int = Field(default_factory=_default_block_size)
    node_selector: Selector = "all()"
    allowed_uses: Optional[list[enum_before(("Workload", "Tunnel", "LoadBalancer"), "use")]] = None
    assignment_mode: Optional[enum_before(("Automatic", "Manual"), "assignment mode")] = None

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return parse_cidr(self.cidr)

    def semantic_errors(self, path: str, ctx: CheckContext) -> Iterator[Error]:
        net = self.network
        lo, hi = BLOCK_SIZE_RANGE[net.version]
        if not lo <= self.block_size <= hi:
            yield (_p(path, "blockSize"),
                   f"{show(self.block_size)} is not a valid IPv{net.version} block size ({lo}-{hi})")
        elif net.prefixlen > self.block_size:
            yield (_p(path, "cidr"),
                   f"{show(self.cidr)} is smaller than one block (blockSize {self.block_size}) - "
                   f"use a prefix of /{self.block_size} or shorter, or a larger blockSize")
        for reserved, what in _RESERVED_NETS:
            if reserved.version == net.version and net.overlaps(reserved):
                yield _p(path, "cidr"), f"{show(self.cidr)} overlaps the {what} range {reserved}"
        if net.version == 6 and self.ipip_mode != "Never":
            yield _p(path, "ipipMode"), "IPIP is only available for IPv4 pools (use Never or vxlanMode)"
        if self.ipip_mode != "Never" and self.vxlan_mode != "Never":
            yield (_p(path, "vxlanMode"),
                   "ipipMode and vxlanMode cannot both be enabled on one pool")


# --- BGP -----------------------------------------------------------------------------------

LogSeverity = enum_before(("Trace", "Debug", "Info", "Warning", "Error", "Fatal"), "log severity")


class SecretKeyRef(CalicoModel):
    name: Name
    key: SecretKey
    optional: Optional[bool] = None


class BGPPassword(CalicoModel):
    secret_key_ref: SecretKeyRef


class ServiceIPBlock(CalicoModel):
    cidr: CIDR


class Community(CalicoModel):
    name: Name
    value: CommunityValue


class PrefixAdvertisement(CalicoModel):
    cidr: Net
    communities: list[str]


class BGPConfigurationSpec(CalicoModel):
    log_severity_screen: Optional[LogSeverity] = None
    node_to_node_mesh_enabled: Optional[bool] = None
    as_number: Optional[ASNumber] = None
    service_load_balancer_ips: Optional[list[ServiceIPBlock]] = Field(None, alias="serviceLoadBalancerIPs")
    service_external_ips: Optional[list[ServiceIPBlock]] = Field(None, alias="serviceExternalIPs")
    service_cluster_ips: Optional[list[ServiceIPBlock]] = Field(None, alias="serviceClusterIPs")
    communities: Optional[list[Community]] = None
    prefix_advertisements: Optional[list[PrefixAdvertisement]] = None
    listen_port: Optional[PortNumber] = None
    node_mesh_password: Optional[BGPPassword] = None
    node_mesh_max_restart_time: Optional[Duration] = None
    bind_mode: Optional[enum_before(("None", "NodeIP"), "bind mode")] = None
    ignored_interfaces: Optional[list[IgnoredInterface]] = None
    local_workload_peering_ipv4: Optional[IPv4] = Field(None, alias="localWorkloadPeeringIPV4")
    local_workload_peering_ipv6: Optional[IPv6] = Field(None, alias="localWorkloadPeeringIPV6")
    program_cluster_routes: Optional[enum_before(("Enabled", "Disabled"), "value")] = None

    def semantic_errors(self, path: str, ctx: CheckContext) -> Iterator[Error]:
        if ctx.name != "default":
            for attr, alias in (("node_mesh_password", "nodeMeshPassword"),
                                ("node_mesh_max_restart_time", "nodeMeshMaxRestartTime")):
                if getattr(self, attr) is not None:
                    yield _p(path, alias), "may only be set in the BGPConfiguration named \"default\""
        if self.node_mesh_password is not None and self.node_to_node_mesh_enabled is False:
            yield _p(path, "nodeMeshPassword"), "requires nodeToNodeMeshEnabled"
        known = {c.name for c in self.communities or ()}
        for i, adv in enumerate(self.prefix_advertisements or ()):
            for j, comm in enumerate(adv.communities):
                if comm not in known and community_problem(comm):
                    yield (_p(path, f"prefixAdvertisements[{i}].communities[{j}]"),
                           f"{show(comm)} is neither a community defined in spec.communities "
                           "nor a community value (aa:nn or aa:nn:mm)")


class BGPPeerSpec(CalicoModel):
    node: Optional[Name] = None
    node_selector: Optional[Selector] = None
    peer_ip: Optional[PeerIP] = Field(None, alias="peerIP")
    as_number: Optional[ASNumber] = None
    peer_selector: Optional[Selector] = None
    keep_original_next_hop: Optional[bool] = None
    next_hop_mode: Optional[enum_before(("Auto", "Self", "Keep"), "next hop mode")] = None
    password: Optional[BGPPassword] = None
    source_address: Optional[enum_before(("UseNodeIP", "None"), "source address")] = None
    max_restart_time: Optional[Duration] = None
    num_allowed_local_as_numbers: Optional[bounded(0, 10, "number of local AS numbers")] = Field(
        None, alias="numAllowedLocalASNumbers")
    ttl_security: Optional[bounded(0, 255, "TTL security hop count")] = None
    reachable_by: Optional[IP] = None
    filters: Optional[list[Name]] = None
    keepalive_time: Optional[Duration] = None
    local_as_number: Optional[ASNumber] = Field(None, alias="localASNumber")
    local_workload_selector: Optional[Selector] = None
    reverse_peering: Optional[enum_before(("Auto", "Manual"), "reverse peering mode")] = None

    def semantic_errors(self, path: str, ctx: CheckContext) -> Iterator[Error]:
        if self.node and self.node_selector:
            yield _p(path, "nodeSelector"), "node and nodeSelector cannot both be set"
        if self.peer_selector:
            if self.peer_ip:
                yield _p(path, "peerIP"), "peerIP and peerSelector cannot both be set"
            if self.as_number is not None:
                yield (_p(path, "asNumber"),
                       "asNumber cannot be set with peerSelector (the peers' own AS numbers are used)")
        elif not self.local_workload_selector:
            if not self.peer_ip and self.as_number is None:
                yield _p(path, "peerIP"), "peerIP and asNumber are required unless peerSelector is set"
            elif not self.peer_ip:
                yield _p(path, "peerIP"), "required with asNumber (or use peerSelector)"
            elif self.as_number is None:
                yield _p(path, "asNumber"), "required with peerIP"
        if self.keep_original_next_hop and self.next_hop_mode not in (None, "Keep"):
            yield (_p(path, "nextHopMode"),
                   f"{show(self.next_hop_mode)} contradicts keepOriginalNextHop: true")


# --- nodes ---------------------------------------------------------------------------------


class NodeBGPSpec(CalicoModel):
    as_number: Optional[ASNumber] = None
    ipv4_address: Optional[IPv4Interface] = None
    ipv6_address: Optional[IPv6Interface] = None
    ipv4_ipip_tunnel_addr: Optional[IPv4] = Field(None, alias="ipv4IPIPTunnelAddr")
    route_reflector_cluster_id: Optional[IPv4] = Field(None, alias="routeReflectorClusterID")

    def semantic_errors(self, path: str, ctx: CheckContext) -> Iterator[Error]:
        if not self.ipv4_address and not self.ipv6_address:
            yield path, "at least one of ipv4Address or ipv6Address is required"


# Calico takes any orchestrator name; these are the characters such names are made of.
OrchestratorName = pattern_type(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?", "at most 63 letters, "
                                "digits, '-', '_' and '.'", "orchestrator name", max_len=63)


class OrchRef(CalicoModel):
    orchestrator: OrchestratorName
    node_name: Optional[Name] = None


class NodeWireguardSpec(CalicoModel):
    interface_ipv4_address: Optional[IPv4] = Field(None, alias="interfaceIPv4Address")
    interface_ipv6_address: Optional[IPv6] = Field(None, alias="interfaceIPv6Address")


class NodeAddress(CalicoModel):
    address: str
    type: Optional[enum_before(("CalicoNodeIP", "InternalIP", "ExternalIP"), "address type")] = None

    def semantic_errors(self, path: str, ctx: CheckContext) -> Iterator[Error]:
        if _cidr_problem(self.address, None, True, True, "address"):
            yield _p(path, "address"), f"{show(self.address)} is not an IP address or address/prefix"


class NodeSpec(CalicoModel):
    bgp: Optional[NodeBGPSpec] = None
    ipv4_vxlan_tunnel_addr: Optional[IPv4] = Field(None, alias="ipv4VXLANTunnelAddr")
    vxlan_tunnel_mac_addr: Optional[MAC] = Field(None, alias="vxlanTunnelMACAddr")
    ipv6_vxlan_tunnel_addr: Optional[IPv6] = Field(None, alias="ipv6VXLANTunnelAddr")
    vxlan_tunnel_mac_addr_v6: Optional[MAC] = Field(None, alias="vxlanTunnelMACAddrV6")
    orch_refs: Optional[list[OrchRef]] = None
    wireguard: Optional[NodeWireguardSpec] = None
    addresses: Optional[list[NodeAddress]] = None

    def semantic_errors(self, path: str, ctx: CheckContext) -> Iterator[Error]:
        if self.bgp is not None:
            yield from self.bgp.semantic_errors(_p(path, "bgp"), ctx)
        for i, addr in enumerate(self.addresses or ()):
            yield from addr.semantic_errors(_p(path, f"addresses[{i}]"), ctx)


class NodeStatus(CalicoModel):
    wireguard_public_key: Optional[WireguardPublicKey] = None
    wireguard_public_key_v6: Optional[WireguardPublicKey] = Field(None, alias="wireguardPublicKeyV6")
    pod_cidrs: Optional[list[CIDR]] = Field(None, alias="podCIDRs")


# --- Felix ---------------------------------------------------------------------------------


class ProtoPort(CalicoModel):
    """A failsafe port: protocol, port and (optionally) the peer network it applies to."""

    protocol: enum_before(("TCP", "UDP", "SCTP", "tcp", "udp", "sctp"), "failsafe protocol")
    port: PortNumber
    net: Optional[Net] = None

    def semantic_errors(self, path: str, ctx: CheckContext) -> Iterator[Error]:
        if self.net is not None:
            yield _p(path, "net"), not_supported(
                "a failsafe port limited to a network; the dataplane would open it to every "
                "address, so leave net out to say so")


class RouteTableRange(CalicoModel):
    min: bounded(1, 4294967295, "route table index")
    max: bounded(1, 4294967295, "route table index")

    def semantic_errors(self, path: str, ctx: CheckContext) -> Iterator[Error]:
        if self.min > self.max:
            yield _p(path, "min"), f"{self.min} is greater than max {self.max}"


class HealthTimeoutOverride(CalicoModel):
    name: HealthTimeoutName
    timeout: Duration


Mark = bounded(0, 0xFFFFFFFF, "mark mask")
EnabledDisabled = enum_before(("Enabled", "Disabled"), "value")
MTU = bounded(0, 65535, "MTU")


class FelixConfigurationSpec(CalicoModel):
    """Felix's settings as FelixConfiguration fields; unset means "inherit"."""

    @model_validator(mode="before")
    @classmethod
    def _empty_strings_are_unset(cls, data: Any) -> Any:
        # Calico's FelixConfiguration fields are `omitempty`: "" is the same as not set
        # (several of Felix's own defaults are ""), so a stored "" is no error.
        if isinstance(data, dict) and any(v == "" for v in data.values()):
            return {k: v for k, v in data.items() if v != ""}
        return data

    use_internal_dataplane_driver: Optional[bool] = None
    dataplane_driver: Optional[FilePath] = None
    dataplane_watchdog_timeout: Optional[Duration] = None
    ipv6_support: Optional[bool] = None
    route_refresh_interval: Optional[Duration] = None
    interface_refresh_interval: Optional[Duration] = None
    iptables_refresh_interval: Optional[Duration] = None
    iptables_post_write_check_interval: Optional[Duration] = None
    iptables_lock_file_path: Optional[FilePath] = None
    iptables_lock_timeout: Optional[Duration] = None
    iptables_lock_probe_interval: Optional[Duration] = None
    feature_detect_override: Optional[KeyValueList] = None
    feature_gates: Optional[KeyValueList] = None
    floating_ips: Optional[EnabledDisabled] = Field(None, alias="floatingIPs")
    ipsets_refresh_interval: Optional[Duration] = None
    max_ipset_size: Optional[bounded(1, 2**31 - 1, "ipset size")] = None
    iptables_backend: Optional[enum_before(("Legacy", "NFT", "Auto"), "iptables backend")] = None
    nftables_mode: Optional[enum_before(("Disabled", "Enabled", "Auto"), "nftables mode")] = None
    nftables_refresh_interval: Optional[Duration] = None
    nftables_filter_allow_action: Optional[enum_before(("Accept", "Return"), "action")] = None
    nftables_mangle_allow_action: Optional[enum_before(("Accept", "Return"), "action")] = None
    nftables_filter_deny_action: Optional[enum_before(("Drop", "Reject"), "action")] = None
    nftables_mark_mask: Optional[Mark] = None
    xdp_refresh_interval: Optional[Duration] = Field(None, alias="xdpRefreshInterval")
    netlink_timeout: Optional[Duration] = None
    metadata_addr: Optional[Hostname] = None
    metadata_port: Optional[PortNumber] = None
    openstack_region: Optional[Region] = None
    interface_prefix: Optional[InterfacePrefixList] = None
    interface_exclude: Optional[InterfaceExcludeList] = None
    chain_insert_mode: Optional[enum_before(("Insert", "Append"), "chain insert mode")] = None
    default_endpoint_to_host_action: Optional[enum_before(("Drop", "Return", "Accept"), "action")] = None
    iptables_filter_allow_action: Optional[enum_before(("Accept", "Return"), "action")] = None
    iptables_mangle_allow_action: Optional[enum_before(("Accept", "Return"), "action")] = None
    iptables_filter_deny_action: Optional[enum_before(("Drop", "Reject"), "action")] = None
    log_prefix: Optional[LogPrefix] = None
    log_file_path: Optional[FilePath] = None
    log_severity_file: Optional[LogSeverity] = None
    log_severity_screen: Optional[LogSeverity] = None
    log_severity_sys: Optional[LogSeverity] = None
    log_debug_filename_regex: Optional[regexp_type("log file name pattern")] = None
    ipip_enabled: Optional[bool] = None
    ipip_mtu: Optional[MTU] = Field(None, alias="ipipMTU")
    vxlan_enabled: Optional[bool] = None
    vxlan_mtu: Optional[MTU] = Field(None, alias="vxlanMTU")
    vxlan_mtu_v6: Optional[MTU] = Field(None, alias="vxlanMTUV6")
    vxlan_port: Optional[PortNumber] = None
    vxlan_vni: Optional[bounded(1, 2**24 - 1, "VXLAN VNI")] = Field(None, alias="vxlanVNI")
    allow_vxlan_packets_from_workloads: Optional[bool] = Field(None, alias="allowVXLANPacketsFromWorkloads")
    allow_ipip_packets_from_workloads: Optional[bool] = Field(None, alias="allowIPIPPacketsFromWorkloads")
    reporting_interval: Optional[Duration] = None
    reporting_ttl: Optional[Duration] = Field(None, alias="reportingTTL")
    endpoint_reporting_enabled: Optional[bool] = None
    endpoint_reporting_delay: Optional[Duration] = None
    iptables_mark_mask: Optional[Mark] = None
    disable_conntrack_invalid_check: Optional[bool] = None
    health_enabled: Optional[bool] = None
    health_host: Optional[HostAddress] = None
    health_port: Optional[PortNumber] = None
    health_timeout_overrides: Optional[list[HealthTimeoutOverride]] = None
    prometheus_metrics_enabled: Optional[bool] = None
    prometheus_metrics_host: Optional[HostAddress] = None
    prometheus_metrics_port: Optional[PortNumber] = None
    prometheus_go_metrics_enabled: Optional[bool] = None
    prometheus_process_metrics_enabled: Optional[bool] = None
    prometheus_wire_guard_metrics_enabled: Optional[bool] = Field(None, alias="prometheusWireGuardMetricsEnabled")
    failsafe_inbound_host_ports: Optional[list[ProtoPort]] = None
    failsafe_outbound_host_ports: Optional[list[ProtoPort]] = None
    kube_node_port_ranges: Optional[list[PortRange]] = None
    policy_sync_path_prefix: Optional[FilePath] = None
    usage_reporting_enabled: Optional[bool] = None
    usage_reporting_initial_delay: Optional[Duration] = None
    usage_reporting_interval: Optional[Duration] = None
    nat_port_range: Optional[PortRange] = None
    nat_outgoing_address: Optional[IP] = None
    device_route_source_address: Optional[IPv4] = None
    device_route_source_address_ipv6: Optional[IPv6] = Field(None, alias="deviceRouteSourceAddressIPv6")
    device_route_protocol: Optional[bounded(1, 255, "route protocol")] = None
    remove_external_routes: Optional[bool] = None
    external_nodes_cidr_list: Optional[list[Net]] = Field(None, alias="externalNodesCIDRList")
    debug_memory_profile_path: Optional[FilePath] = None
    debug_disable_log_dropping: Optional[bool] = None
    iptables_nat_outgoing_interface_filter: Optional[InterfaceFilter] = Field(
        None, alias="iptablesNATOutgoingInterfaceFilter")
    sidecar_acceleration_enabled: Optional[bool] = None
    xdp_enabled: Optional[bool] = None
    generic_xdp_enabled: Optional[bool] = Field(None, alias="genericXDPEnabled")
    bpf_enabled: Optional[bool] = None
    bpf_disable_unprivileged: Optional[bool] = None
    bpf_log_level: Optional[enum_before(("Off", "Info", "Debug"), "BPF log level")] = None
    bpf_data_iface_pattern: Optional[regexp_type("interface pattern")] = None
    bpf_connect_time_load_balancing_enabled: Optional[bool] = None
    bpf_external_service_mode: Optional[enum_before(("Tunnel", "DSR"), "BPF external service mode")] = None
    bpf_kube_proxy_iptables_cleanup_enabled: Optional[bool] = None
    route_source: Optional[enum_before(("CalicoIPAM", "WorkloadIPs"), "route source")] = None
    route_table_range: Optional[RouteTableRange] = None
    route_table_ranges: Optional[list[RouteTableRange]] = None
    route_sync_disabled: Optional[bool] = None
    service_loop_prevention: Optional[enum_before(("Drop", "Reject", "Disabled"), "value")] = None
    workload_source_spoofing: Optional[enum_before(("Disabled", "Any"), "value")] = None
    mtu_iface_pattern: Optional[regexp_type("interface pattern")] = None
    ip_forwarding: Optional[EnabledDisabled] = Field(None, alias="ipForwarding")
    aws_src_dst_check: Optional[enum_before(("DoNothing", "Enable", "Disable"), "value")] = None
    wireguard_enabled: Optional[bool] = None
    wireguard_enabled_v6: Optional[bool] = Field(None, alias="wireguardEnabledV6")
    wireguard_listening_port: Optional[PortNumber] = None
    wireguard_listening_port_v6: Optional[PortNumber] = Field(None, alias="wireguardListeningPortV6")
    wireguard_routing_rule_priority: Optional[bounded(1, 32765, "routing rule priority")] = None
    wireguard_interface_name: Optional[InterfaceName] = None
    wireguard_interface_name_v6: Optional[InterfaceName] = Field(None, alias="wireguardInterfaceNameV6")
    wireguard_mtu: Optional[MTU] = Field(None, alias="wireguardMTU")
    wireguard_mtu_v6: Optional[MTU] = Field(None, alias="wireguardMTUV6")
    wireguard_host_encryption_enabled: Optional[bool] = None
    wireguard_persistent_keep_alive: Optional[Duration] = None

    def semantic_errors(self, path: str, ctx: CheckContext) -> Iterator[Error]:
        for alias, ports in (("failsafeInboundHostPorts", self.failsafe_inbound_host_ports),
                             ("failsafeOutboundHostPorts", self.failsafe_outbound_host_ports)):
            for i, port in enumerate(ports or ()):
                yield from port.semantic_errors(_p(path, f"{alias}[{i}]"), ctx)
        if self.route_table_range is not None:
            yield from self.route_table_range.semantic_errors(_p(path, "routeTableRange"), ctx)
        for i, rng in enumerate(self.route_table_ranges or ()):
            yield from rng.semantic_errors(_p(path, f"routeTableRanges[{i}]"), ctx)


# --- resources -----------------------------------------------------------------------------


class Resource(CalicoModel):
    """A Calico v3 resource: apiVersion, kind, metadata, spec."""

    KIND: ClassVar[str] = ""
    NAMESPACED: ClassVar[bool] = False

    api_version: Literal["projectcalico.org/v3"] = Field(API_VERSION, alias="apiVersion")
    kind: str
    metadata: Metadata
    spec: Any = None

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str | None:
        return self.metadata.namespace

    def semantic_errors(self, path: str = "", ctx: CheckContext | None = None) -> Iterator[Error]:
        ctx = ctx or CheckContext(self.KIND, self.metadata.name, self.NAMESPACED)
        if self.spec is not None:
            yield from self.spec.semantic_errors(_p(path, "spec"), ctx)

    def to_dict(self) -> dict[str, Any]:
        """The document as written (plus any metadata set since), JSON-ready, Calico names."""
        _mark_changed_fields(self)
        self.__pydantic_fields_set__.update(("api_version", "kind"))  # always written
        return self.model_dump(by_alias=True, exclude_unset=True)  # values are JSON types already

    def __repr__(self) -> str:
        where = f"{self.metadata.namespace}/" if self.metadata.namespace else ""
        return f"<{self.kind} {where}{self.metadata.name}>"


_CONTAINER_FIELDS: dict[type, tuple[str, ...]] = {}


def _may_contain(annotation: Any) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    if typing.get_origin(annotation) in (list, dict):
        return True
    return any(_may_contain(arg) for arg in typing.get_args(annotation))


def _container_fields(cls: type[BaseModel]) -> tuple[str, ...]:
    """Names of the fields of `cls` that can hold a list, a dict or a sub-model."""
    names = _CONTAINER_FIELDS.get(cls)
    if names is None:
        names = tuple(n for n, fi in cls.model_fields.items() if _may_contain(fi.annotation))
        _CONTAINER_FIELDS[cls] = names
    return names


def _mark_changed_fields(model: BaseModel) -> bool:
    """Mark fields changed since validation as set; True if `model` has any set field.

    exclude_unset alone would drop a default container changed in place
    (`res.metadata.labels["a"] = "b"` on a document without labels) and a default
    sub-model one of whose fields was assigned (`res.spec.order = 5` with no spec).
    Scalars cannot change in place, and assigning one marks it set already.
    """
    fields_set = model.__pydantic_fields_set__
    values = model.__dict__
    for fname in _container_fields(type(model)):
        value = values.get(fname)
        if isinstance(value, BaseModel):
            if _mark_changed_fields(value):
                fields_set.add(fname)
        elif isinstance(value, list):
            if value and fname not in fields_set:
                fields_set.add(fname)
            for item in value:
                if isinstance(item, BaseModel):
                    _mark_changed_fields(item)
        elif isinstance(value, dict) and value and fname not in fields_set:
            fields_set.add(fname)
    return bool(fields_set)


class Node(Resource):
    """A host running calico/node: its BGP addresses and AS number."""

    KIND: ClassVar[str] = "Node"
    kind: Literal["Node"] = "Node"
    spec: NodeSpec = Field(default_factory=NodeSpec)
    status: Optional[NodeStatus] = None


class IPPool(Resource):
    """A range workload addresses are allocated from, in blocks of 2^(32-blockSize)."""

    KIND: ClassVar[str] = "IPPool"
    kind: Literal["IPPool"] = "IPPool"
    spec: IPPoolSpec


class BGPConfiguration(Resource):
    """Cluster-wide (`default`) or per-node (`node.<name>`) BGP settings."""

    KIND: ClassVar[str] = "BGPConfiguration"
    kind: Literal["BGPConfiguration"] = "BGPConfiguration"
    spec: BGPConfigurationSpec = Field(default_factory=BGPConfigurationSpec)


class BGPPeer(Resource):
    """A BGP peering for all nodes, one node or a selection of nodes."""

    KIND: ClassVar[str] = "BGPPeer"
    kind: Literal["BGPPeer"] = "BGPPeer"
    spec: BGPPeerSpec = Field(default_factory=BGPPeerSpec)


class FelixConfiguration(Resource):
    """Felix settings: `default` for every node, `node.<name>` for one node."""

    KIND: ClassVar[str] = "FelixConfiguration"
    kind: Literal["FelixConfiguration"] = "FelixConfiguration"
    spec: FelixConfigurationSpec = Field(default_factory=FelixConfigurationSpec)

    def semantic_errors(self, path: str = "", ctx: CheckContext | None = None) -> Iterator[Error]:
        name = self.metadata.name
        if name != "default":
            node = name[5:] if name.startswith("node.") else None
            if not node or name_problem(node, "node name"):
                yield (_p(path, "metadata.name"),
                       f"{show(name)} is not a FelixConfiguration name (\"default\" or \"node.<nodename>\")")
        yield from super().semantic_errors(path, ctx)


class Profile(Resource):
    """Rules and labels shared by the endpoints that list the profile."""

    KIND: ClassVar[str] = "Profile"
    kind: Literal["Profile"] = "Profile"
    spec: ProfileSpec = Field(default_factory=ProfileSpec)


class NetworkPolicy(Resource):
    """Policy for the workload endpoints of one namespace."""

    KIND: ClassVar[str] = "NetworkPolicy"
    NAMESPACED: ClassVar[bool] = True
    kind: Literal["NetworkPolicy"] = "NetworkPolicy"
    spec: NetworkPolicySpec = Field(default_factory=NetworkPolicySpec)


class GlobalNetworkPolicy(Resource):
    """Policy for endpoints of every namespace and for host endpoints."""

    KIND: ClassVar[str] = "GlobalNetworkPolicy"
    kind: Literal["GlobalNetworkPolicy"] = "GlobalNetworkPolicy"
    spec: GlobalNetworkPolicySpec = Field(default_factory=GlobalNetworkPolicySpec)


class NetworkSet(Resource):
    """Named, labelled networks of one namespace that policy selectors can match."""

    KIND: ClassVar[str] = "NetworkSet"
    NAMESPACED: ClassVar[bool] = True
    kind: Literal["NetworkSet"] = "NetworkSet"
    spec: NetworkSetSpec = Field(default_factory=NetworkSetSpec)


class GlobalNetworkSet(Resource):
    """Named, labelled networks that any policy's selectors can match."""

    KIND: ClassVar[str] = "GlobalNetworkSet"
    kind: Literal["GlobalNetworkSet"] = "GlobalNetworkSet"
    spec: GlobalNetworkSetSpec = Field(default_factory=GlobalNetworkSetSpec)


class WorkloadEndpoint(Resource):
    """A workload's interface: node, host-side interface name, addresses, profiles."""

    KIND: ClassVar[str] = "WorkloadEndpoint"
    NAMESPACED: ClassVar[bool] = True
    kind: Literal["WorkloadEndpoint"] = "WorkloadEndpoint"
    spec: WorkloadEndpointSpec = Field(default_factory=WorkloadEndpointSpec)


class HostEndpoint(Resource):
    """A host interface (or all of them, `*`) that policy applies to."""

    KIND: ClassVar[str] = "HostEndpoint"
    kind: Literal["HostEndpoint"] = "HostEndpoint"
    spec: HostEndpointSpec


RESOURCE_CLASSES: tuple[type[Resource], ...] = (
    Node, IPPool, BGPConfiguration, BGPPeer, FelixConfiguration, Profile, NetworkPolicy,
    GlobalNetworkPolicy, NetworkSet, GlobalNetworkSet, WorkloadEndpoint, HostEndpoint,
)
