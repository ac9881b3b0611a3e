"""The registry's data: one `Entry` per Calico field path of each kind (enforced with
the module that acts on it, no effect with the reason, refused with the reason), the
Calico fields the model refuses without modelling them, and the names under which
configuration kinds are read. `calico_net.model.registry` walks the models against it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

ENFORCED = "enforced"
NO_EFFECT = "no_effect"
REFUSED = "refused"


@dataclass(frozen=True)
class Entry:
    """One field's status; `where` is the enforcing module, or the reason."""

    status: str
    where: str
    quiet: tuple[Any, ...] = ()


def E(where: str) -> Entry:  # noqa: N802 - the table reads better with short names
    return Entry(ENFORCED, where)


def N(reason: str, *quiet: Any) -> Entry:  # noqa: N802
    return Entry(NO_EFFECT, reason, quiet)


def R(reason: str) -> Entry:  # noqa: N802
    return Entry(REFUSED, reason)


# --- reasons shared by many fields ------------------------------------------------------

STORED = "calico_net/datastore/store.py (stored and shown as written; Calico gives it no other meaning)"
NO_K8S = "no Kubernetes API server: nothing reads it"
NO_BPF = "eBPF dataplane not provided by calico.net (nftables only)"
NO_XDP = "XDP acceleration not provided by calico.net"
NO_WG = "WireGuard encryption not provided by calico.net"
NO_IPTABLES = "calico.net programs nftables (table inet calico), never iptables"
NO_OPENSTACK = "OpenStack integration not provided by calico.net"
NOT_YET = "not implemented by calico.net's agent yet"
NOT_YET_BGP = "not implemented by calico.net's confd yet"
FELIX_CFG = "calico_net/agent/config.py (PARAMS)"
ENCAP = "calico_net/agent/encap (overlay controller)"
RULES = "calico_net/agent/felix/rules.py"
CONFD = "calico_net/agent/confd/builder.py"
ADVERTISE = "calico_net/agent/confd/advertise.py"
PEERS = "calico_net/agent/confd/peers.py"

# --- per-kind tables ------------------------------------------------------------------------

_METADATA: dict[str, Entry] = {
    "metadata.name": E("calico_net/datastore/store.py (the resource's key)"),
    "metadata.namespace": E("calico_net/datastore/store.py (the key; policy scope in "
                            "calico_net/agent/felix/rules.py)"),
    "metadata.labels": E("calico_net/agent/felix/selector_sets.py (selectors match them; on "
                         "Nodes also calico_net/agent/confd/builder.py and calico_net/ipam/pools.py)"),
    "metadata.annotations": E(STORED),
    "metadata.uid": E("calico_net/datastore/store.py (set on create, kept on update)"),
    "metadata.creationTimestamp": E("calico_net/datastore/store.py (set on create)"),
    "metadata.resourceVersion": E("calico_net/datastore/store.py (etcd mod revision: "
                                  "compare-and-swap on replace/delete)"),
    "metadata.generateName": N("calicoctl generates no names: metadata.name is used"),
    "metadata.deletionTimestamp": N("no graceful deletion: delete removes the resource at once"),
    "metadata.deletionGracePeriodSeconds": N("no graceful deletion: delete removes the resource at once"),
    "metadata.ownerReferences": N(NO_K8S + " (no garbage collector follows owners)"),
    "metadata.selfLink": N(NO_K8S),
    "metadata.generation": N("not maintained by the etcd datastore (resourceVersion is)"),
    "metadata.finalizers": N("no finalizers run: delete removes the resource at once"),
    "metadata.clusterName": N(NO_K8S),
}

_RULE: dict[str, Entry] = {
    "action": E(RULES),
    "ipVersion": E(RULES),
    "protocol": E(RULES),
    "notProtocol": E(RULES),
    "icmp.type": E(RULES),
    "icmp.code": E(RULES),
    "notICMP.type": E(RULES),
    "notICMP.code": E(RULES),
    "metadata.annotations": N("rule annotations are not written as nftables rule comments"),
}
for _side in ("source", "destination"):
    for _f in ("nets", "notNets", "selector", "notSelector", "namespaceSelector", "ports",
               "notPorts", "serviceAccounts.names", "serviceAccounts.selector"):
        _RULE[f"{_side}.{_f}"] = E(RULES)


def _rules() -> dict[str, Entry]:
    out = {}
    for direction in ("ingress", "egress"):
        for path, entry in _RULE.items():
            out[f"spec.{direction}[].{path}"] = entry
    return out


_POLICY_COMMON = {
    **_rules(),
    "spec.tier": E("calico_net/agent/felix/policy.py (tiers in order, each ending in its "
                   "defaultAction; the tier must exist: calico_net/cli/resources.py)"),
    "spec.order": E("calico_net/agent/felix/policy.py"),
    "spec.selector": E(RULES),
    "spec.types": E("calico_net/agent/felix/policy.py"),
    "spec.serviceAccountSelector": E(RULES),
    "spec.performanceHints": N("a scheduling hint for Felix's calculation graph; "
                               "calico.net computes every policy the same way"),
}

_FELIX_ENFORCED = {
    "logSeverityScreen", "failsafeInboundHostPorts", "failsafeOutboundHostPorts",
    "routeRefreshInterval", "iptablesRefreshInterval", "defaultEndpointToHostAction",
    "interfacePrefix", "healthEnabled", "healthHost", "healthPort",
    "prometheusMetricsEnabled", "prometheusMetricsHost", "prometheusMetricsPort",
    "vxlanVNI", "vxlanPort", "vxlanMTU", "vxlanMTUV6", "ipipMTU", "mtuIfacePattern",
    "allowIPIPPacketsFromWorkloads", "allowVXLANPacketsFromWorkloads",
    "natOutgoingAddress", "natPortRange", "logFilePath", "logSeverityFile",
    "logPrefix", "nftablesRefreshInterval", "prometheusProcessMetricsEnabled",
    "disableConntrackInvalidCheck", "logDebugFilenameRegex", "logSeveritySys",
    "prometheusGoMetricsEnabled", "healthTimeoutOverrides", "nftablesFilterDenyAction",
}
_FELIX_WHERE = {
    "vxlanVNI": ENCAP, "vxlanPort": ENCAP, "vxlanMTU": ENCAP, "vxlanMTUV6": ENCAP,
    "ipipMTU": ENCAP, "mtuIfacePattern": ENCAP + " (calico_net/agent/encap/mtu.py)",
    "allowIPIPPacketsFromWorkloads": "calico_net/agent/felix/encap_rules.py",
    "allowVXLANPacketsFromWorkloads": "calico_net/agent/felix/encap_rules.py",
    "failsafeInboundHostPorts": "calico_net/agent/felix/base_chains.py",
    "failsafeOutboundHostPorts": "calico_net/agent/felix/base_chains.py",
    "defaultEndpointToHostAction": "calico_net/agent/felix/base_chains.py",
    "interfacePrefix": "calico_net/agent/felix/base_chains.py",
    "routeRefreshInterval": "calico_net/agent/daemon.py",
    "iptablesRefreshInterval": "calico_net/agent/daemon.py (the nftables refresh)",
    "healthEnabled": "calico_net/agent/health.py", "healthHost": "calico_net/agent/health.py",
    "healthPort": "calico_net/agent/health.py",
    "prometheusMetricsEnabled": "calico_net/agent/metrics.py",
    "prometheusMetricsHost": "calico_net/agent/metrics.py",
    "prometheusMetricsPort": "calico_net/agent/metrics.py",
    "natOutgoingAddress": "calico_net/agent/felix/base_chains.py (cali-nat-postrouting)",
    "natPortRange": "calico_net/agent/felix/base_chains.py (cali-nat-postrouting)",
    "logFilePath": "calico_net/agent/__main__.py (LogSetup; from a FelixConfiguration "
                   "only a file under /var/log/)",
    "logSeverityFile": "calico_net/agent/__main__.py (LogSetup)",
    "logPrefix": "calico_net/agent/felix/rules.py (Log rules; A-Z a-z 0-9 space : / _ . - only, "
                 "%-specifiers are not expanded)",
    "nftablesRefreshInterval": "calico_net/agent/daemon.py (the nftables refresh; wins over "
                               "iptablesRefreshInterval set in the same source)",
    "prometheusProcessMetricsEnabled": "calico_net/agent/metrics.py",
    "disableConntrackInvalidCheck": "calico_net/agent/felix/base_chains.py",
    "logDebugFilenameRegex": "calico_net/agent/__main__.py (DebugFileFilter)",
    "logSeveritySys": "calico_net/agent/__main__.py (LogSetup; /dev/log, off unless set)",
    "prometheusGoMetricsEnabled": "calico_net/agent/metrics.py (the runtime's metrics: "
                                  "python_gc_* and python_info stand in for Go's go_*)",
    "healthTimeoutOverrides": "calico_net/agent/__main__.py (HealthOverrides: "
                              "InternalDataplaneMainLoop is the main loop's liveness)",
    "nftablesFilterDenyAction": "calico_net/agent/felix/chains.py (end-of-tier and no-profile drops; "
                                "Deny rules in rules.py: drop or reject)",
}

# FelixConfiguration fields with no effect, with the reason and the values calico.net
# already honours by what it is (quiet: no warning).
_FELIX_NO_EFFECT: dict[str, Entry] = {
    "useInternalDataplaneDriver": N("calico.net's agent is the dataplane driver", True),
    "dataplaneDriver": N("calico.net's agent is the dataplane driver"),
    "dataplaneWatchdogTimeout": N(NOT_YET),
    "ipv6Support": N("IPv6 is always handled where addresses and pools are IPv6", True),
    "interfaceRefreshInterval": N("interfaces are watched through netlink, not polled"),
    "iptablesPostWriteCheckInterval": N(NO_IPTABLES),
    "iptablesLockFilePath": N(NO_IPTABLES),
    "iptablesLockTimeout": N(NO_IPTABLES),
    "iptablesLockProbeInterval": N(NO_IPTABLES),
    "featureDetectOverride": N("calico.net detects no iptables/kernel features to override"),
    "featureGates": N(NOT_YET),
    "floatingIPs": N(NO_OPENSTACK, "Disabled"),
    "ipsetsRefreshInterval": N("no ipsets: selectors are nftables sets refreshed with the table"),
    "maxIpsetSize": N("no ipsets: nftables sets have no such limit here"),
    "iptablesBackend": N(NO_IPTABLES, "NFT", "nft", "Auto", "auto"),
    "nftablesMode": N("calico.net always programs nftables", "Enabled", "Auto"),
    "nftablesFilterAllowAction": N(NOT_YET + " (allowed packets are accepted by mark)"),
    "nftablesMangleAllowAction": N(NOT_YET),
    "nftablesMarkMask": N(NOT_YET + " (fixed mark bits 0x10000/0x20000)"),
    "xdpRefreshInterval": N(NO_XDP),
    "netlinkTimeout": N(NOT_YET),
    "metadataAddr": N(NO_OPENSTACK),
    "metadataPort": N(NO_OPENSTACK),
    "openstackRegion": N(NO_OPENSTACK),
    "interfaceExclude": N(NOT_YET),
    "chainInsertMode": N("calico.net's table has base chains of its own and hooks "
                         "no other chain", "Insert", "insert"),
    "iptablesFilterAllowAction": N(NO_IPTABLES),
    "iptablesMangleAllowAction": N(NO_IPTABLES),
    "iptablesFilterDenyAction": N(NO_IPTABLES),
    "ipipEnabled": N("IP-in-IP follows the IPPools' ipipMode"),
    "vxlanEnabled": N("VXLAN follows the IPPools' vxlanMode"),
    "reportingInterval": N("no endpoint status reporting", "0s", "0"),
    "reportingTTL": N("no endpoint status reporting"),
    "endpointReportingEnabled": N("no endpoint status reporting", False),
    "endpointReportingDelay": N("no endpoint status reporting"),
    "iptablesMarkMask": N(NO_IPTABLES),
    "prometheusWireGuardMetricsEnabled": N(NO_WG, False),
    "kubeNodePortRanges": N("no kube-proxy integration: " + NO_K8S),
    "policySyncPathPrefix": N("no policy sync API (application-layer policy) in calico.net"),
    "usageReportingEnabled": N("calico.net reports no usage", False),
    "usageReportingInitialDelay": N("calico.net reports no usage"),
    "usageReportingInterval": N("calico.net reports no usage"),
    "deviceRouteSourceAddress": N(NOT_YET),
    "deviceRouteSourceAddressIPv6": N(NOT_YET),
    "deviceRouteProtocol": N(NOT_YET),
    "removeExternalRoutes": N(NOT_YET),
    "externalNodesCIDRList": N(NOT_YET),
    "debugMemoryProfilePath": N("a Go profiler setting"),
    "debugDisableLogDropping": N("the agent never drops log lines (Felix drops them when its log "
                                 "queue is full)", True),
    "iptablesNATOutgoingInterfaceFilter": N(NO_IPTABLES),
    "sidecarAccelerationEnabled": N("sidecar acceleration (eBPF) not provided by calico.net", False),
    "xdpEnabled": N(NO_XDP, False),
    "genericXDPEnabled": N(NO_XDP, False),
    "bpfEnabled": N(NO_BPF, False),
    "bpfDisableUnprivileged": N(NO_BPF),
    "bpfLogLevel": N(NO_BPF),
    "bpfDataIfacePattern": N(NO_BPF),
    "bpfConnectTimeLoadBalancingEnabled": N(NO_BPF, False),
    "bpfExternalServiceMode": N(NO_BPF),
    "bpfKubeProxyIptablesCleanupEnabled": N(NO_BPF, False),
    "routeSource": N(NOT_YET + " (routes come from workload endpoints)", "WorkloadIPs", "workloadips"),
    "routeTableRange": N(NOT_YET + " (routes go to the main table)"),
    "routeTableRanges": N(NOT_YET + " (routes go to the main table)"),
    "routeSyncDisabled": N(NOT_YET, False),
    "serviceLoopPrevention": N("no Kubernetes Services: " + NO_K8S),
    "workloadSourceSpoofing": N(NOT_YET + " (spoofed sources are always dropped)", "Disabled",
                                "disabled"),
    "ipForwarding": N(NOT_YET + " (the host's forwarding sysctls are left as they are)"),
    "awsSrcDstCheck": N("no AWS integration in calico.net", "DoNothing"),
    "wireguardEnabled": N(NO_WG, False),
    "wireguardEnabledV6": N(NO_WG, False),
    "wireguardListeningPort": N(NO_WG),
    "wireguardListeningPortV6": N(NO_WG),
    "wireguardRoutingRulePriority": N(NO_WG),
    "wireguardInterfaceName": N(NO_WG),
    "wireguardInterfaceNameV6": N(NO_WG),
    "wireguardMTU": N(NO_WG),
    "wireguardMTUV6": N(NO_WG),
    "wireguardHostEncryptionEnabled": N(NO_WG, False),
    "wireguardPersistentKeepAlive": N(NO_WG),
    "nodeSelector": N("the agent reads only the FelixConfigurations named default and "
                      "node.<nodename>, never one chosen by a selector"),
}


def _felix() -> dict[str, Entry]:
    out = {f"spec.{f}": E(_FELIX_WHERE.get(f, FELIX_CFG)) for f in _FELIX_ENFORCED}
    for f, entry in _FELIX_NO_EFFECT.items():
        out[f"spec.{f}"] = entry
    out["spec.failsafeInboundHostPorts"] = out["spec.failsafeOutboundHostPorts"] = E(
        "calico_net/agent/felix/base_chains.py")
    return out


_ENDPOINT_PORTS = {
    "spec.ports[].name": E("calico_net/agent/felix/selector_sets.py (named ports)"),
    "spec.ports[].protocol": E("calico_net/agent/felix/selector_sets.py (named ports)"),
    "spec.ports[].port": E("calico_net/agent/felix/selector_sets.py (named ports)"),
}

REGISTRY: dict[str, dict[str, Entry]] = {
    "Node": {
        "spec.bgp.asNumber": E(CONFD),
        "spec.bgp.ipv4Address": E(CONFD + "; calico_net/agent/encap (tunnel endpoints)"),
        "spec.bgp.ipv6Address": E(CONFD + "; calico_net/agent/encap (tunnel endpoints)"),
        "spec.bgp.ipv4IPIPTunnelAddr": E("calico_net/agent/encap/addrs.py"),
        "spec.bgp.routeReflectorClusterID": E(CONFD),
        "spec.ipv4VXLANTunnelAddr": E("calico_net/agent/encap/addrs.py"),
        "spec.vxlanTunnelMACAddr": E("calico_net/agent/encap/addrs.py"),
        "spec.ipv6VXLANTunnelAddr": E("calico_net/agent/encap/addrs.py"),
        "spec.vxlanTunnelMACAddrV6": E("calico_net/agent/encap/addrs.py"),
        "spec.orchRefs": N("no Kubernetes node controller: " + NO_K8S),
        "spec.wireguard": N(NO_WG),
        "spec.addresses": N(NOT_YET + " (node addresses come from spec.bgp)"),
        "status.wireguardPublicKey": N(NO_WG),
        "status.wireguardPublicKeyV6": N(NO_WG),
        "status.podCIDRs": N(NO_K8S),
    },
    "IPPool": {
        "spec.cidr": E("calico_net/ipam/pools.py; calico_net/agent/felix/base_chains.py; "
                       "calico_net/agent/confd/builder.py"),
        "spec.vxlanMode": E(ENCAP + "; " + CONFD),
        "spec.ipipMode": E(ENCAP + "; " + CONFD),
        "spec.natOutgoing": E("calico_net/agent/felix/base_chains.py (masquerade sets)"),
        "spec.disabled": E("calico_net/ipam/pools.py; " + CONFD),
        "spec.disableBGPExport": E(CONFD),
        "spec.blockSize": E("calico_net/ipam/pools.py"),
        "spec.nodeSelector": E("calico_net/ipam/pools.py; calico_net/agent/encap/addrs.py"),
        "spec.allowedUses": E("calico_net/ipam/pools.py"),
        "spec.assignmentMode": E("calico_net/ipam/pools.py"),
    },
    "BGPConfiguration": {
        "spec.logSeverityScreen": E(CONFD),
        "spec.nodeToNodeMeshEnabled": E(CONFD),
        "spec.asNumber": E(CONFD),
        "spec.listenPort": E(CONFD),
        "spec.nodeMeshPassword.secretKeyRef.name": E(CONFD),
        "spec.nodeMeshPassword.secretKeyRef.key": E(CONFD),
        "spec.nodeMeshPassword.secretKeyRef.optional": N(NOT_YET_BGP),
        "spec.nodeMeshMaxRestartTime": E(CONFD),
        "spec.serviceLoadBalancerIPs[].cidr": E(ADVERTISE),
        "spec.serviceExternalIPs[].cidr": E(ADVERTISE),
        "spec.serviceClusterIPs[].cidr": E(ADVERTISE),
        "spec.serviceLoadBalancerAggregation": E(ADVERTISE),
        "spec.communities[].name": E(ADVERTISE),
        "spec.communities[].value": E(ADVERTISE),
        "spec.prefixAdvertisements[].cidr": E(ADVERTISE),
        "spec.prefixAdvertisements[].communities": E(ADVERTISE),
        "spec.bindMode": E(CONFD),
        "spec.ignoredInterfaces": E(CONFD),
        "spec.localWorkloadPeeringIPV4": N(NOT_YET_BGP),
        "spec.localWorkloadPeeringIPV6": N(NOT_YET_BGP),
        "spec.programClusterRoutes": N(NOT_YET_BGP, "Enabled"),
    },
    "BGPPeer": {
        "spec.node": E(CONFD),
        "spec.nodeSelector": E(CONFD),
        "spec.peerIP": E(CONFD),
        "spec.asNumber": E(CONFD),
        "spec.peerSelector": E(CONFD),
        "spec.keepOriginalNextHop": E(CONFD),
        "spec.nextHopMode": E(PEERS),
        "spec.password.secretKeyRef.name": E(CONFD),
        "spec.password.secretKeyRef.key": E(CONFD),
        "spec.password.secretKeyRef.optional": N(NOT_YET_BGP),
        "spec.sourceAddress": E(PEERS),
        "spec.maxRestartTime": E(PEERS),
        "spec.numAllowedLocalASNumbers": E(PEERS),
        "spec.ttlSecurity": E(PEERS),
        "spec.reachableBy": N(NOT_YET_BGP),
        "spec.filters": E(PEERS),
        "spec.keepaliveTime": E(PEERS),
        "spec.localASNumber": E(PEERS),
        "spec.localWorkloadSelector": N(NOT_YET_BGP),
        "spec.reversePeering": E(CONFD),
    },
    "BGPFilter": {
        f"spec.{d}[].{f}": E(PEERS)
        for d in ("exportV4", "importV4", "exportV6", "importV6")
        for f in ("cidr", "source", "interface", "matchOperator", "action", "prefixLength.min",
                  "prefixLength.max")
    },
    "FelixConfiguration": _felix(),
    "Profile": {
        **_rules(),
        "spec.labelsToApply": E("calico_net/agent/felix/records.py"),
    },
    "NetworkPolicy": dict(_POLICY_COMMON),
    "GlobalNetworkPolicy": {
        **_POLICY_COMMON,
        "spec.doNotTrack": E("calico_net/agent/felix/hostprotect.py"),
        "spec.preDNAT": E("calico_net/agent/felix/hostprotect.py"),
        "spec.applyOnForward": E("calico_net/agent/felix/hostprotect.py"),
        "spec.namespaceSelector": E(RULES),
    },
    "NetworkSet": {"spec.nets": E("calico_net/agent/felix/selector_sets.py")},
    "GlobalNetworkSet": {"spec.nets": E("calico_net/agent/felix/selector_sets.py")},
    "WorkloadEndpoint": {
        "spec.orchestrator": E("calico_net/agent/felix/records.py (the orchestrator label)"),
        "spec.workload": E(STORED),
        "spec.node": E("calico_net/agent/felix/records.py (programmed on that node only)"),
        "spec.containerID": E("calico_net/cni/plugin.py (the endpoint's identity)"),
        "spec.pod": E("calico_net/cni/plugin.py (the endpoint's identity)"),
        "spec.endpoint": E("calico_net/cni/plugin.py (the endpoint's identity)"),
        "spec.serviceAccountName": E("calico_net/agent/felix/records.py (service-account label)"),
        "spec.ipNetworks": E("calico_net/agent/felix/routes.py; calico_net/agent/felix/selector_sets.py"),
        "spec.ipNATs[].internalIP": N(NOT_YET + " (no 1:1 NAT is set up)"),
        "spec.ipNATs[].externalIP": N(NOT_YET + " (no 1:1 NAT is set up)"),
        "spec.ipv4Gateway": E(STORED),
        "spec.ipv6Gateway": E(STORED),
        "spec.profiles": E("calico_net/agent/felix/policy.py (profile chains)"),
        "spec.interfaceName": E("calico_net/agent/felix/records.py (the interface's dispatch)"),
        "spec.mac": E(STORED),
        **_ENDPOINT_PORTS,
        "spec.ports[].hostPort": N(NOT_YET + " (no host port forwarding)"),
        "spec.ports[].hostIP": N(NOT_YET + " (no host port forwarding)"),
        "spec.allowSpoofedSourcePrefixes": N(NOT_YET + " (the reverse-path check drops them)"),
    },
    "HostEndpoint": {
        "spec.node": E("calico_net/agent/felix/records.py (programmed on that node only)"),
        "spec.interfaceName": E("calico_net/agent/felix/hostprotect.py (refused when absent: "
                                "a host endpoint found by its expectedIPs alone)"),
        "spec.expectedIPs": E("calico_net/agent/felix/selector_sets.py"),
        "spec.profiles": E("calico_net/agent/felix/policy.py (profile chains)"),
        **_ENDPOINT_PORTS,
    },
    "IPReservation": {"spec.reservedCIDRs": E("calico_net/ipam/reservations.py")},
    "IPAMConfiguration": {
        "spec.strictAffinity": E("calico_net/ipam/affinity.py"),
        "spec.maxBlocksPerHost": E("calico_net/ipam/assign.py"),
        "spec.autoAllocateBlocks": E("calico_net/ipam/assign.py"),
        "spec.kubeVirtVMAddressPersistence": R("calico.net runs no KubeVirt workloads"),
        "spec.ipCooldownSeconds": R("released addresses are reused in FIFO order, without a "
                                    "cool-down (0 is accepted)"),
    },
}
STAGED = "staged policies are stored and shown, never enforced (as in Calico)"
NO_KUBE_CONTROLLERS = "calico-kube-controllers' settings: " + NO_K8S + " (no kube-controllers runs)"
REGISTRY.update({
    "Tier": {
        "spec.order": E("calico_net/agent/felix/policy.py (tiers in (order, name) order)"),
        "spec.defaultAction": E("calico_net/agent/felix/policy.py (end of tier: Deny drops, "
                                "Pass goes on to the next tier)"),
    },
    "StagedNetworkPolicy": {"spec": N(STAGED)},
    "StagedGlobalNetworkPolicy": {"spec": N(STAGED)},
    "StagedKubernetesNetworkPolicy": {"spec": N(STAGED)},
    "KubeControllersConfiguration": {"spec": N(NO_KUBE_CONTROLLERS),
                                     "status": N(NO_KUBE_CONTROLLERS)},
    "ClusterInformation": {
        "spec.clusterGUID": E("calico_net/cli/main.py (calicoctl version; written at agent start)"),
        "spec.clusterType": E("calico_net/cli/main.py (calicoctl version; written at agent start)"),
        "spec.calicoVersion": E("calico_net/cli/main.py (calicoctl version; written at agent start)"),
        "spec.datastoreReady": E(STORED),
        "spec.variant": E(STORED),
    },
})
for _table in REGISTRY.values():
    for _path, _entry in _METADATA.items():
        _table.setdefault(_path, _entry)
    _table.setdefault("apiVersion", E("calico_net/model/validation.py (projectcalico.org/v3)"))
    _table.setdefault("kind", E("calico_net/model/kinds.py"))

#: Calico fields the model refuses outright (not model fields): path -> reason.
REFUSED_UNMODELLED: dict[str, dict[str, str]] = {
    kind: {f"spec.{d}[].{p}": reason for d in ("ingress", "egress") for p, reason in (
        ("http", "HTTP matches need Calico's application-layer policy"),
        ("source.services", "Kubernetes Service matches need a Kubernetes datastore"),
        ("destination.services", "Kubernetes Service matches need a Kubernetes datastore"))}
    for kind in ("NetworkPolicy", "GlobalNetworkPolicy", "Profile")
}

#: Names a configuration kind is read under; any other name is stored without effect.
EFFECTIVE_NAMES = {"FelixConfiguration": re.compile(r"default|node\..+"),
                   "BGPConfiguration": re.compile(r"default|node\..+")}

