"""BGP kinds' specs: BGPConfiguration (mesh, AS number, advertised service ranges and
communities), BGPPeer (who peers with whom, passwords, timers) and BGPFilter (import
and export rules a BGPPeer applies through ``filters``).
"""
from __future__ import annotations

from typing import ClassVar, Iterator, Optional

from pydantic import Field

from calico_net.model.fields.bgp import ASNumber, CommunityValue, Duration, community_problem
from calico_net.model.fields.checks import bounded, enum_before, show
from calico_net.model.fields.network import CIDR, IP, IPv4, IPv6, Net, PeerIP, PortNumber
from calico_net.model.fields.settings import IgnoredInterface, SecretKey
from calico_net.model.fields.text import Name, Selector
from calico_net.model.resources.base import CalicoModel, CheckContext, Error, field_path

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
    service_load_balancer_aggregation: Optional[
        enum_before(("Enabled", "Disabled"), "aggregation mode")] = None
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
                    yield field_path(path, alias), "may only be set in the BGPConfiguration named \"default\""
        if self.node_mesh_password is not None and self.node_to_node_mesh_enabled is False:
            yield field_path(path, "nodeMeshPassword"), "requires nodeToNodeMeshEnabled"
        known = {c.name for c in self.communities or ()}
        for i, adv in enumerate(self.prefix_advertisements or ()):
            for j, comm in enumerate(adv.communities):
                if comm not in known and community_problem(comm):
                    yield (field_path(path, f"prefixAdvertisements[{i}].communities[{j}]"),
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
            yield field_path(path, "nodeSelector"), "node and nodeSelector cannot both be set"
        if self.peer_selector:
            if self.peer_ip:
                yield field_path(path, "peerIP"), "peerIP and peerSelector cannot both be set"
            if self.as_number is not None:
                yield (field_path(path, "asNumber"),
                       "asNumber cannot be set with peerSelector (the peers' own AS numbers are used)")
        elif not self.local_workload_selector:
            if not self.peer_ip and self.as_number is None:
                yield field_path(path, "peerIP"), "peerIP and asNumber are required unless peerSelector is set"
            elif not self.peer_ip:
                yield field_path(path, "peerIP"), "required with asNumber (or use peerSelector)"
            elif self.as_number is None:
                yield field_path(path, "asNumber"), "required with peerIP"
        if self.keepalive_time is not None:
            from calico_net.model.fields.bgp import parse_duration

            if not 1 <= parse_duration(self.keepalive_time) <= 240:
                yield (field_path(path, "keepaliveTime"),
                       f"{show(self.keepalive_time)} is outside 1s-240s (BIRD's keepalive is "
                       "whole seconds and at most its 240 s hold time)")
        if self.keep_original_next_hop and self.next_hop_mode not in (None, "Keep"):
            yield (field_path(path, "nextHopMode"),
                   f"{show(self.next_hop_mode)} contradicts keepOriginalNextHop: true")




# --- BGPFilter ----------------------------------------------------------------------------

MatchOperator = enum_before(("Equal", "NotEqual", "In", "NotIn"), "match operator")
FilterAction = enum_before(("Accept", "Reject"), "filter action")


class BGPFilterPrefixLengthV4(CalicoModel):
    min: Optional[bounded(0, 32, "IPv4 prefix length")] = None
    max: Optional[bounded(0, 32, "IPv4 prefix length")] = None


class BGPFilterPrefixLengthV6(CalicoModel):
    min: Optional[bounded(0, 128, "IPv6 prefix length")] = None
    max: Optional[bounded(0, 128, "IPv6 prefix length")] = None


class _BGPFilterRule(CalicoModel):
    cidr: Optional[CIDR] = None
    source: Optional[enum_before(("RemotePeers",), "filter source")] = None
    interface: Optional[IgnoredInterface] = None
    match_operator: Optional[MatchOperator] = None
    action: FilterAction

    FAMILY: ClassVar[int] = 4

    def semantic_errors(self, path: str, ctx: CheckContext) -> Iterator[Error]:
        import ipaddress

        if bool(self.cidr) != bool(self.match_operator):
            yield (field_path(path, "matchOperator" if self.cidr else "cidr"),
                   "cidr and matchOperator must be set together")
        if self.cidr and ipaddress.ip_network(self.cidr, strict=False).version != self.FAMILY:
            yield field_path(path, "cidr"), f"{show(self.cidr)} is not an IPv{self.FAMILY} CIDR"
        plen = self.prefix_length  # type: ignore[attr-defined]
        if plen is not None:
            if self.match_operator not in ("In", "NotIn"):
                yield (field_path(path, "prefixLength"),
                       "requires cidr with matchOperator In or NotIn")
            elif self.cidr:
                own = ipaddress.ip_network(self.cidr, strict=False).prefixlen
                lo = own if plen.min is None else plen.min
                hi = (32 if self.FAMILY == 4 else 128) if plen.max is None else plen.max
                if not own <= lo <= hi:
                    yield (field_path(path, "prefixLength"),
                           f"min {lo} and max {hi} must satisfy {own} (the cidr's length) <= min <= max")


class BGPFilterRuleV4(_BGPFilterRule):
    prefix_length: Optional[BGPFilterPrefixLengthV4] = None


class BGPFilterRuleV6(_BGPFilterRule):
    prefix_length: Optional[BGPFilterPrefixLengthV6] = None
    FAMILY: ClassVar[int] = 6


class BGPFilterSpec(CalicoModel):
    export_v4: Optional[list[BGPFilterRuleV4]] = Field(None, alias="exportV4")
    import_v4: Optional[list[BGPFilterRuleV4]] = Field(None, alias="importV4")
    export_v6: Optional[list[BGPFilterRuleV6]] = Field(None, alias="exportV6")
    import_v6: Optional[list[BGPFilterRuleV6]] = Field(None, alias="importV6")

    def semantic_errors(self, path: str, ctx: CheckContext) -> Iterator[Error]:
        for alias, rules in (("exportV4", self.export_v4), ("importV4", self.import_v4),
                             ("exportV6", self.export_v6), ("importV6", self.import_v6)):
            for i, rule in enumerate(rules or ()):
                yield from rule.semantic_errors(field_path(path, f"{alias}[{i}]"), ctx)
