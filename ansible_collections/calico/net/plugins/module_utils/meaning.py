# -*- coding: utf-8 -*-
# Copyright: calico.net contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Compare Calico resources by what they mean, not how they are written.

`canonical(doc)` validates a document with `calico_net.model` and returns a form in
which two documents are equal exactly when Calico treats them the same:

* defaults are filled in (`blockSize: 26`, `ipipMode: Never`, `selector: all()`,
  policy `types` computed from the rules as Calico does when they are omitted);
* values are reduced to their meaning: CIDRs and IPs to their canonical text, ports
  to numbers or ranges, protocols to numbers, AS numbers to integers, durations to
  seconds, selectors to the selector library's canonical printing;
* lists whose order Calico ignores become sorted, duplicate-free lists (nets, ports,
  policy types, expected IPs, named ports, service IP blocks, ...). Lists whose order
  matters stay as they are: policy and profile rules (first match wins), an
  endpoint's profiles (applied in order), BGP filters;
* server-side metadata (uid, creationTimestamp, resourceVersion) and empty labels or
  annotations are dropped.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

try:
    from calico_net.model import (
        parse_asn, parse_duration, parse_peer_ip, parse_port, parse_protocol, parse_resource,
    )
    from calico_net.model.selector import SelectorError, parse_selector
except ImportError:  # reported by common.run_module
    pass

SERVER_METADATA = ("uid", "creationTimestamp", "resourceVersion", "generation")

# Lists whose order Calico ignores, by field name.
UNORDERED = frozenset((
    "nets", "notNets", "ports", "notPorts", "names", "types", "expectedIPs", "allowedUses",
    "serviceClusterIPs", "serviceExternalIPs", "serviceLoadBalancerIPs", "communities",
    "prefixAdvertisements", "ignoredInterfaces", "failsafeInboundHostPorts",
    "failsafeOutboundHostPorts", "kubeNodePortRanges", "externalNodesCIDRList",
    "routeTableRanges", "healthTimeoutOverrides", "performanceHints",
    "allowSpoofedSourcePrefixes", "labelsToApply",
))
SELECTORS = frozenset((
    "selector", "notSelector", "namespaceSelector", "nodeSelector", "peerSelector",
    "serviceAccountSelector", "localWorkloadSelector",
))
NETWORKS = frozenset((
    "nets", "notNets", "cidr", "externalNodesCIDRList", "allowSpoofedSourcePrefixes", "net",
    "ipNetworks", "podCIDRs",
))
ADDRESSES = frozenset((
    "expectedIPs", "reachableBy", "routeReflectorClusterID", "ipv4IPIPTunnelAddr",
    "ipv4VXLANTunnelAddr", "ipv6VXLANTunnelAddr", "natOutgoingAddress", "internalIP",
    "externalIP", "ipv4Gateway", "ipv6Gateway", "hostIP", "deviceRouteSourceAddress",
    "deviceRouteSourceAddressIPv6", "localWorkloadPeeringIPV4", "localWorkloadPeeringIPV6",
    "interfaceIPv4Address", "interfaceIPv6Address",
))
INTERFACE_ADDRESSES = frozenset(("ipv4Address", "ipv6Address"))
PORTS = frozenset(("ports", "notPorts", "natPortRange", "kubeNodePortRanges"))
PROTOCOLS = frozenset(("protocol", "notProtocol"))
AS_NUMBERS = frozenset(("asNumber", "localASNumber", "peerASN"))
_DURATION_KEY = re.compile(r"(Interval|Time|Timeout|TTL|Delay|KeepAlive)$")


def strip_server_metadata(doc: dict[str, Any] | None) -> dict[str, Any] | None:
    """The document without what the datastore adds (for diffs and comparisons)."""
    if doc is None:
        return None
    out = json.loads(json.dumps(doc))
    md = out.get("metadata") or {}
    for key in SERVER_METADATA:
        md.pop(key, None)
    for key in ("labels", "annotations"):
        if key in md and not md[key]:
            del md[key]
    return out


def canonical(doc: dict[str, Any]) -> Any:
    """The meaning of a document (see the module docstring). Raises ValidationError."""
    res = parse_resource(doc)
    full = res.model_dump(mode="json", by_alias=True, exclude_none=True)
    full.pop("apiVersion", None)
    md = full.get("metadata") or {}
    full["metadata"] = {k: v for k, v in md.items() if k not in SERVER_METADATA and v not in ({}, [], None)}
    spec = getattr(res, "spec", None)
    if spec is not None and hasattr(spec, "effective_types") and isinstance(full.get("spec"), dict):
        full["spec"]["types"] = spec.effective_types()
    return _norm(full, "")


def _norm(value: Any, key: str) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            nv = _norm(v, k)
            if nv in (None, [], {}):
                continue  # absent, empty list and empty mapping mean the same in Calico
            out[k] = nv
        return out
    if isinstance(value, list):
        items = [_norm_item(v, key) for v in value]
        if key in UNORDERED:
            unique = {json.dumps(i, sort_keys=True): i for i in items}
            items = [unique[k] for k in sorted(unique)]
        return items
    return _norm_scalar(value, key)


def _norm_item(value: Any, key: str) -> Any:
    if isinstance(value, (dict, list)):
        return _norm(value, key)
    return _norm_scalar(value, key)


def _norm_scalar(value: Any, key: str) -> Any:
    if value is None or isinstance(value, bool):
        return value
    try:
        if key in SELECTORS and isinstance(value, str):
            return str(parse_selector(value))
        if key in NETWORKS and isinstance(value, str):
            return str(ipaddress.ip_network(value, strict=False))
        if key in ADDRESSES and isinstance(value, str):
            return str(ipaddress.ip_address(value))
        if key in INTERFACE_ADDRESSES and isinstance(value, str):
            return str(ipaddress.ip_interface(value))
        if key == "peerIP" and isinstance(value, str):
            host, port = parse_peer_ip(value)
            return [str(ipaddress.ip_address(host)), port]
        if key in PORTS and isinstance(value, (int, str)):
            port = parse_port(value)
            return list(port) if isinstance(port, tuple) else port
        if key in PROTOCOLS and isinstance(value, (int, str)):
            if isinstance(value, str):
                value = {n.lower(): n for n in ("TCP", "UDP", "ICMP", "ICMPv6", "SCTP", "UDPLite")}.get(
                    value.lower(), value)
            return parse_protocol(value)
        if key in AS_NUMBERS and isinstance(value, (int, str)):
            return parse_asn(value)
        if isinstance(value, str) and _DURATION_KEY.search(key):
            return parse_duration(value)
    except (ValueError, KeyError, SelectorError):
        return value  # validation accepted it; compare the text
    if isinstance(value, float) and value.is_integer():
        return int(value)  # policy order 100 == 100.0
    return value
