"""The FelixConfiguration spec: Felix's settings as fields (unset means "inherit"),
with failsafe ports, route table ranges and health timeout overrides.
"""
from __future__ import annotations

from typing import Any, Iterator, Optional

from pydantic import Field, model_validator

from calico_net.model.fields.bgp import Duration
from calico_net.model.fields.checks import bounded, enum_before, enum_ci
from calico_net.model.fields.network import (
    IP, InterfaceExcludeList, InterfaceName, InterfacePrefixList, IPv4, IPv6, Net, PortNumber,
    PortRange,
)
from calico_net.model.fields.settings import (
    FilePath, HealthTimeoutName, HostAddress, Hostname, InterfaceFilter, KeyValueList, LogPrefix,
    Region, regexp_type,
)
from calico_net.model.fields.text import Selector
from calico_net.model.resources.base import (
    CalicoModel, CheckContext, Error, field_path,
)

# Felix's log levels, matched case-blind as Calico's validator does (BGPConfiguration's
# logSeverityScreen keeps the BGP model's own rule).
LogSeverity = enum_ci(("Trace", "Debug", "Info", "Warning", "Error", "Fatal"), "log severity")

# --- Felix ---------------------------------------------------------------------------------


class ProtoPort(CalicoModel):
    """A failsafe port: protocol, port and (optionally) the peer network it applies to."""

    protocol: enum_before(("TCP", "UDP", "SCTP", "tcp", "udp", "sctp"), "failsafe protocol")
    port: PortNumber
    net: Optional[Net] = None


class RouteTableRange(CalicoModel):
    min: bounded(1, 4294967295, "route table index")
    max: bounded(1, 4294967295, "route table index")

    def semantic_errors(self, path: str, ctx: CheckContext) -> Iterator[Error]:
        if self.min > self.max:
            yield field_path(path, "min"), f"{self.min} is greater than max {self.max}"


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
    iptables_backend: Optional[enum_ci(("Legacy", "NFT", "Auto"), "iptables backend")] = None
    nftables_mode: Optional[enum_before(("Disabled", "Enabled", "Auto"), "nftables mode")] = None
    nftables_refresh_interval: Optional[Duration] = None
    nftables_filter_allow_action: Optional[enum_ci(("Accept", "Return"), "action")] = None
    nftables_mangle_allow_action: Optional[enum_ci(("Accept", "Return"), "action")] = None
    nftables_filter_deny_action: Optional[enum_ci(("Drop", "Reject"), "action")] = None
    nftables_mark_mask: Optional[Mark] = None
    xdp_refresh_interval: Optional[Duration] = Field(None, alias="xdpRefreshInterval")
    netlink_timeout: Optional[Duration] = None
    metadata_addr: Optional[Hostname] = None
    metadata_port: Optional[PortNumber] = None
    openstack_region: Optional[Region] = None
    interface_prefix: Optional[InterfacePrefixList] = None
    interface_exclude: Optional[InterfaceExcludeList] = None
    chain_insert_mode: Optional[enum_ci(("Insert", "Append"), "chain insert mode")] = None
    default_endpoint_to_host_action: Optional[enum_ci(("Drop", "Return", "Accept"), "action")] = None
    iptables_filter_allow_action: Optional[enum_ci(("Accept", "Return"), "action")] = None
    iptables_mangle_allow_action: Optional[enum_ci(("Accept", "Return"), "action")] = None
    iptables_filter_deny_action: Optional[enum_ci(("Drop", "Reject"), "action")] = None
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
    bpf_log_level: Optional[enum_ci(("Off", "Info", "Debug"), "BPF log level")] = None
    bpf_data_iface_pattern: Optional[regexp_type("interface pattern")] = None
    bpf_connect_time_load_balancing_enabled: Optional[bool] = None
    bpf_external_service_mode: Optional[enum_ci(("Tunnel", "DSR"), "BPF external service mode")] = None
    bpf_kube_proxy_iptables_cleanup_enabled: Optional[bool] = None
    route_source: Optional[enum_ci(("CalicoIPAM", "WorkloadIPs"), "route source")] = None
    route_table_range: Optional[RouteTableRange] = None
    route_table_ranges: Optional[list[RouteTableRange]] = None
    route_sync_disabled: Optional[bool] = None
    service_loop_prevention: Optional[enum_ci(("Drop", "Reject", "Disabled"), "value")] = None
    workload_source_spoofing: Optional[enum_ci(("Disabled", "Any"), "value")] = None
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
    # Calico's newer per-selection FelixConfiguration: which nodes it applies to. Its
    # "not on default/node.*" rule is a Kubernetes CRD rule, which an etcd-backed
    # calicoctl does not apply either; the agent never reads the field (registry).
    node_selector: Optional[Selector] = None

    def semantic_errors(self, path: str, ctx: CheckContext) -> Iterator[Error]:
        if self.route_table_range is not None:
            yield from self.route_table_range.semantic_errors(field_path(path, "routeTableRange"), ctx)
        for i, rng in enumerate(self.route_table_ranges or ()):
            yield from rng.semantic_errors(field_path(path, f"routeTableRanges[{i}]"), ctx)


