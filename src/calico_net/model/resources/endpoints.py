"""Endpoint and node specs: WorkloadEndpoint and HostEndpoint (addresses, named ports,
NAT), and Node (BGP addresses, tunnel addresses, orchestrator references, status).
"""
from __future__ import annotations

import ipaddress
from typing import Iterator, Optional

from pydantic import Field

from calico_net.model.fields.bgp import ASNumber
from calico_net.model.fields.checks import bounded, enum_before, pattern_type, show
from calico_net.model.fields.network import (
    CIDR, IP, MAC, HostInterfaceName, InterfaceName, IPv4, IPv4Interface, IPv6, IPv6Interface,
    Net, PortName, PortNumber, Protocol, cidr_problem, is_host_network, parse_cidr,
    parse_protocol,
)
from calico_net.model.fields.settings import WireguardPublicKey
from calico_net.model.fields.text import ContainerID, Name
from calico_net.model.resources.base import (
    CalicoModel, CheckContext, Error, field_path, not_supported,
)

# --- endpoints -----------------------------------------------------------------------------

_ENDPOINT_PORT_PROTOCOLS = {6: "TCP", 17: "UDP", 132: "SCTP"}


class EndpointPort(CalicoModel):
    """A named port of an endpoint, referenced by name from policy rules."""

    name: PortName
    protocol: Protocol
    port: PortNumber

    def semantic_errors(self, path: str, ctx: CheckContext) -> Iterator[Error]:
        if parse_protocol(self.protocol) not in _ENDPOINT_PORT_PROTOCOLS:
            yield (field_path(path, "protocol"),
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
        yield from port.semantic_errors(field_path(path, f"ports[{i}]"), ctx)
        if port.name in seen:
            yield field_path(path, f"ports[{i}].name"), f"{show(port.name)} is used by another port"
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
                yield (field_path(path, f"ipNetworks[{i}]"),
                       f"{show(net)} holds more than one address (a workload endpoint's "
                       "networks are single addresses: /32 for IPv4, /128 for IPv6)")
        nets = [parse_cidr(n) for n in self.ip_networks] if self.ip_nats else []
        for i, nat in enumerate(self.ip_nats or ()):
            ip = ipaddress.ip_address(nat.internal_ip)
            if not any(ip.version == n.version and ip in n for n in nets):
                yield (field_path(path, f"ipNATs[{i}].internalIP"),
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
            yield field_path(path, "interfaceName"), not_supported(
                "a host endpoint found by its expectedIPs alone; name its interface")
        yield from _ports_errors(self.ports, path, ctx)


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
        if cidr_problem(self.address, None, True, True, "address"):
            yield field_path(path, "address"), f"{show(self.address)} is not an IP address or address/prefix"


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
            yield from self.bgp.semantic_errors(field_path(path, "bgp"), ctx)
        for i, addr in enumerate(self.addresses or ()):
            yield from addr.semantic_errors(field_path(path, f"addresses[{i}]"), ctx)


class NodeStatus(CalicoModel):
    wireguard_public_key: Optional[WireguardPublicKey] = None
    wireguard_public_key_v6: Optional[WireguardPublicKey] = Field(None, alias="wireguardPublicKeyV6")
    pod_cidrs: Optional[list[CIDR]] = Field(None, alias="podCIDRs")


