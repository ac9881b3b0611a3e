"""Value types of Calico's v3 API: names, labels, CIDRs, ports, protocols, AS numbers...

Each type is an `Annotated` pydantic type whose validator checks the user's value and
returns it *unchanged* (a CIDR keeps the user's text, a port stays an int or a string),
so a document read, stored and printed again is the document the user wrote. Code that
needs the meaning of a value calls the matching `parse_*` helper
(`parse_port("1000:2000") == (1000, 2000)`, `parse_asn("64512.10") == 4194304010`).

Failures are raised as `PydanticCustomError("calico", ...)` carrying a finished,
human message (`"TCPX" is not a protocol (TCP, UDP, ...)`); `model.validation`
turns them into field-path errors. A message shows the value through `show`, so it is
one bounded line whatever the value held.

Every pattern is matched whole (`fullmatch`, or an end-of-text anchor), never with `$`,
which also matches before a trailing newline; length limits are checked before any
pattern or cache sees the value.

The types live in one module per family, all importable from here:
`checks` (messages and the check builders), `text` (names, labels, identifiers,
timestamps, selectors), `network` (addresses, interfaces, ports, protocols), `bgp`
(AS numbers, communities, durations) and `settings` (Felix and BGP settings text).
"""
from __future__ import annotations

from calico_net.model.fields.bgp import (
    ASNumber, CommunityValue, Duration, community_problem, parse_asn, parse_duration,
)
from calico_net.model.fields.checks import (
    SHOW_MAX, bounded, enum_before, fail, int_range, pattern_problem, pattern_type,
    refuse_problem, regexp_problem, show,
)
from calico_net.model.fields.network import (
    CIDR, IFACE_EXCLUDE_ALLOWED, IFACE_LIST_ALLOWED, IFACE_LIST_RE, INTERFACE_NAME_ALLOWED, IP,
    MAC, MAC_RE, PORT_PROTOCOLS, PROTOCOL_NAMES, PROTOCOL_NUMBERS, HostInterfaceName,
    InterfaceExcludeList, InterfaceName, InterfacePrefixList, IPAddress, IPNetwork, IPv4,
    IPv4Interface, IPv6, IPv6Interface, Net, PeerIP, Port, PortName, PortNumber, PortRange,
    Protocol, check_ip, check_port, cidr_problem, iface_exclude_problem, iface_list_problem,
    interface_name_problem, ip_version, is_host_network, named_port_problem, parse_cidr,
    parse_iface_list, parse_ip, parse_peer_ip, parse_port, parse_protocol,
)
from calico_net.model.fields.settings import (
    FilePath, HealthTimeoutName, HostAddress, Hostname, IgnoredInterface, InterfaceFilter,
    KeyValueList, LogPrefix, Region, SecretKey, WireguardPublicKey, regexp_type,
)
from calico_net.model.fields.text import (
    CONTAINER_ID_MAX, CONTAINER_ID_RE, DNS1123_LABEL, DNS1123_LABEL_RE, DNS1123_SUBDOMAIN_RE,
    RESOURCE_VERSION_RE, UID, UID_MAX, UID_RE, Annotations, ContainerID, Labels, Name,
    Namespace, ResourceVersion, Selector, Timestamp, check_name, check_namespace,
    check_selector, check_timestamp, free_text_problem, label_key_problem, label_value_ok,
    name_problem, selector_problem,
)

__all__ = [
    "ASNumber", "Annotations", "CIDR", "CONTAINER_ID_MAX", "CONTAINER_ID_RE", "CommunityValue",
    "ContainerID", "DNS1123_LABEL", "DNS1123_LABEL_RE", "DNS1123_SUBDOMAIN_RE", "Duration",
    "FilePath", "HealthTimeoutName", "HostAddress", "HostInterfaceName", "Hostname",
    "IFACE_EXCLUDE_ALLOWED", "IFACE_LIST_ALLOWED", "IFACE_LIST_RE", "INTERFACE_NAME_ALLOWED",
    "IP", "IPAddress", "IPNetwork", "IPv4", "IPv4Interface", "IPv6", "IPv6Interface",
    "IgnoredInterface", "InterfaceExcludeList", "InterfaceFilter", "InterfaceName",
    "InterfacePrefixList", "KeyValueList", "Labels", "LogPrefix", "MAC", "MAC_RE", "Name",
    "Namespace", "Net", "PORT_PROTOCOLS", "PROTOCOL_NAMES", "PROTOCOL_NUMBERS", "PeerIP", "Port",
    "PortName", "PortNumber", "PortRange", "Protocol", "RESOURCE_VERSION_RE", "Region",
    "ResourceVersion", "SHOW_MAX", "SecretKey", "Selector", "Timestamp", "UID", "UID_MAX",
    "UID_RE", "WireguardPublicKey", "bounded", "check_ip", "check_name", "check_namespace",
    "check_port", "check_selector", "check_timestamp", "cidr_problem", "community_problem",
    "enum_before", "fail", "free_text_problem", "iface_exclude_problem", "iface_list_problem",
    "int_range", "interface_name_problem", "ip_version", "is_host_network", "label_key_problem",
    "label_value_ok", "name_problem", "named_port_problem", "parse_asn", "parse_cidr",
    "parse_duration", "parse_iface_list", "parse_ip", "parse_peer_ip", "parse_port",
    "parse_protocol", "pattern_problem", "pattern_type", "refuse_problem", "regexp_problem",
    "regexp_type", "selector_problem", "show",
]
