"""Calico v3 resources (`apiVersion: projectcalico.org/v3`) as pydantic v2 models.

One model per kind (`IPPool`, `GlobalNetworkPolicy`, ...) with `metadata` and a
`...Spec`; field names are snake_case in Python and Calico's own JSON names on the
wire (`ipipMode`, `ipNATs`, `peerIP`, ...). This package declares the kinds
(`RESOURCE_CLASSES`) from their specs, which live in one module per family: `policy`,
`endpoints` (workload and host endpoints, nodes), `pools`, `ipam` (IP reservations and
the IPAM configuration), `bgp`, `felix` and `cluster` (ClusterInformation,
KubeControllersConfiguration), on the shared ground of `base`.

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

import typing
from typing import Any, Iterator, Literal, Optional

from pydantic import Field

from calico_net.model.fields.checks import show
from calico_net.model.resources.base import (
    API_VERSION, NOT_SUPPORTED_YET, CalicoModel, CheckContext, Error, Metadata, Resource,
    field_path, not_supported,
)
from calico_net.model.resources.bgp import (
    BGPConfigurationSpec, BGPFilterSpec, BGPPassword, BGPPeerSpec, Community, LogSeverity,
    PrefixAdvertisement, SecretKeyRef, ServiceIPBlock,
)
from calico_net.model.resources.endpoints import (
    IPNAT, EndpointPort, HostEndpointSpec, NodeAddress, NodeBGPSpec, NodeSpec, NodeStatus,
    NodeWireguardSpec, OrchestratorName, OrchRef, WorkloadEndpointPort, WorkloadEndpointSpec,
)
from calico_net.model.resources.felix import (
    MTU, EnabledDisabled, FelixConfigurationSpec, HealthTimeoutOverride, Mark, ProtoPort,
    RouteTableRange,
)
from calico_net.model.resources.cluster import (
    ClusterInformationSpec, KubeControllersConfigurationSpec, StoredMapping,
)
from calico_net.model.resources.policy import (
    BUILTIN_TIERS, DEFAULT_TIER, GNP_NAME_RE, NP_NAME_RE, TIER_NAME_RE, Action, EntityRule,
    GlobalNetworkPolicySpec, GlobalNetworkSetSpec, ICMPFields, IPVersion, NetworkPolicySpec,
    NetworkSetSpec, Order, PolicyType, ProfileSpec, Rule, RuleMetadata, ServiceAccountMatch,
    StagedGlobalNetworkPolicySpec, StagedKubernetesNetworkPolicySpec, StagedNetworkPolicySpec,
    TierSpec, policy_tier, tier_order_action,
)
from calico_net.model.resources.ipam import IPAM_CONFIG_NAME, IPAMConfigurationSpec, IPReservationSpec
from calico_net.model.resources.pools import (
    BLOCK_SIZE_RANGE, DEFAULT_BLOCK_SIZE, EncapMode, IPPoolSpec,
)

def resource_kind(kind: str, spec: type[CalicoModel], doc: str, *, namespaced: bool = False,
                  spec_required: bool = False, base: type[Resource] = Resource,
                  more: dict[str, tuple[Any, Any]] | None = None) -> type[Resource]:
    """The `Resource` subclass for `kind`: `kind` fixed to its name, `spec` a `spec`
    model (an empty one when the document has none, unless `spec_required`), `more`
    other top-level fields as name -> (type, default), `base` where a kind adds checks.
    """
    annotations: dict[str, Any] = {"kind": Literal[kind], "spec": spec}
    namespace: dict[str, Any] = {
        "__module__": __name__, "__qualname__": kind, "__doc__": doc,
        "KIND": kind, "NAMESPACED": namespaced, "kind": kind,
    }
    if not spec_required:
        namespace["spec"] = Field(default_factory=spec)
    for name, (annotation, default) in (more or {}).items():
        annotations[name] = annotation
        namespace[name] = default
    namespace["__annotations__"] = annotations
    return typing.cast("type[Resource]", type(kind, (base,), namespace))


class _NamedDefault(Resource):
    """IPAMConfiguration's name rule: the one configuration is called "default"."""

    def semantic_errors(self, path: str = "", ctx: CheckContext | None = None) -> Iterator[Error]:
        if self.metadata.name != IPAM_CONFIG_NAME:
            yield (field_path(path, "metadata.name"),
                   f"{show(self.metadata.name)} is not an IPAMConfiguration name (it must be \"default\")")
        yield from super().semantic_errors(path, ctx)


class _PolicyName(Resource):
    """Calico's name rule for (staged) NetworkPolicy and GlobalNetworkPolicy: a DNS
    label with at most one dot (namespaced: also knp.default./ossg.default. names)."""

    def semantic_errors(self, path: str = "", ctx: CheckContext | None = None) -> Iterator[Error]:
        name = self.metadata.name
        rx = NP_NAME_RE if self.NAMESPACED else GNP_NAME_RE
        if len(name) > 253 or not rx.fullmatch(name):
            yield (field_path(path, "metadata.name"),
                   f"{show(name)} is not a {self.KIND} name (lower case alphanumerics and '-', "
                   "with at most one '.')")
        yield from super().semantic_errors(path, ctx)


class _TierName(Resource):
    """Calico's Tier name rule: a DNS label (no dots: it is part of other names)."""

    def semantic_errors(self, path: str = "", ctx: CheckContext | None = None) -> Iterator[Error]:
        name = self.metadata.name
        if len(name) > 63 or not TIER_NAME_RE.fullmatch(name):
            yield (field_path(path, "metadata.name"),
                   f"{show(name)} is not a Tier name (lower case alphanumerics and '-', at most "
                   "63 characters, no dots)")
        yield from super().semantic_errors(path, ctx)


Node = resource_kind("Node", NodeSpec, "A host running calico/node: its BGP addresses and AS number.",
                     more={"status": (Optional[NodeStatus], None)})
IPPool = resource_kind("IPPool", IPPoolSpec, "A range workload addresses are allocated from, in "
                       "blocks of 2^(32-blockSize).", spec_required=True)
BGPConfiguration = resource_kind("BGPConfiguration", BGPConfigurationSpec,
                                 "Cluster-wide (`default`) or per-node (`node.<name>`) BGP settings.")
BGPPeer = resource_kind("BGPPeer", BGPPeerSpec,
                        "A BGP peering for all nodes, one node or a selection of nodes.")
BGPFilter = resource_kind("BGPFilter", BGPFilterSpec,
                          "Import and export rules a BGPPeer applies through its `filters`.")
# Any name is stored, as Calico does; only `default` and `node.<name>` are read by
# Felix, and the field registry (`model.registry`) warns about any other name.
FelixConfiguration = resource_kind("FelixConfiguration", FelixConfigurationSpec,
                                   "Felix settings: `default` for every node, `node.<name>` for "
                                   "one node.")
Profile = resource_kind("Profile", ProfileSpec,
                        "Rules and labels shared by the endpoints that list the profile.")
NetworkPolicy = resource_kind("NetworkPolicy", NetworkPolicySpec,
                              "Policy for the workload endpoints of one namespace.", namespaced=True,
                              base=_PolicyName)
GlobalNetworkPolicy = resource_kind("GlobalNetworkPolicy", GlobalNetworkPolicySpec,
                                    "Policy for endpoints of every namespace and for host endpoints.",
                                    base=_PolicyName)
Tier = resource_kind("Tier", TierSpec, "An ordered group of policies with a default action "
                     "(Deny or Pass) for endpoints its policies select but do not decide.",
                     base=_TierName)
StagedNetworkPolicy = resource_kind("StagedNetworkPolicy", StagedNetworkPolicySpec,
                                    "A NetworkPolicy staged for review: stored and shown, never "
                                    "enforced.", namespaced=True, base=_PolicyName)
StagedGlobalNetworkPolicy = resource_kind("StagedGlobalNetworkPolicy", StagedGlobalNetworkPolicySpec,
                                          "A GlobalNetworkPolicy staged for review: stored and "
                                          "shown, never enforced.", base=_PolicyName)
StagedKubernetesNetworkPolicy = resource_kind("StagedKubernetesNetworkPolicy",
                                              StagedKubernetesNetworkPolicySpec,
                                              "A Kubernetes NetworkPolicy staged for review: stored "
                                              "and shown, never enforced.", namespaced=True)
KubeControllersConfiguration = resource_kind("KubeControllersConfiguration",
                                             KubeControllersConfigurationSpec,
                                             "calico-kube-controllers' settings: stored and shown "
                                             "(no Kubernetes, no kube-controllers).",
                                             more={"status": (Optional[StoredMapping], None)})
ClusterInformation = resource_kind("ClusterInformation", ClusterInformationSpec,
                                   "The cluster's identity and Calico version (named `default`).")
NetworkSet = resource_kind("NetworkSet", NetworkSetSpec, "Named, labelled networks of one namespace "
                           "that policy selectors can match.", namespaced=True)
GlobalNetworkSet = resource_kind("GlobalNetworkSet", GlobalNetworkSetSpec,
                                 "Named, labelled networks that any policy's selectors can match.")
WorkloadEndpoint = resource_kind("WorkloadEndpoint", WorkloadEndpointSpec, "A workload's interface: "
                                 "node, host-side interface name, addresses, profiles.",
                                 namespaced=True)
HostEndpoint = resource_kind("HostEndpoint", HostEndpointSpec, "A host interface (or all of them, "
                             "`*`) that policy applies to.", spec_required=True)
IPReservation = resource_kind("IPReservation", IPReservationSpec, "Addresses and CIDRs that IPAM "
                              "never hands out automatically.")
IPAMConfiguration = resource_kind("IPAMConfiguration", IPAMConfigurationSpec, "The cluster's IPAM "
                                  "settings (named `default`): strict affinity, block limits.",
                                  base=_NamedDefault)

RESOURCE_CLASSES: tuple[type[Resource], ...] = (
    Node, IPPool, BGPConfiguration, BGPPeer, FelixConfiguration, Profile, NetworkPolicy,
    GlobalNetworkPolicy, NetworkSet, GlobalNetworkSet, WorkloadEndpoint, HostEndpoint,
    IPReservation, IPAMConfiguration, BGPFilter, Tier, StagedNetworkPolicy,
    StagedGlobalNetworkPolicy, StagedKubernetesNetworkPolicy, KubeControllersConfiguration,
    ClusterInformation,
)

__all__ = [
    "API_VERSION", "Action", "BUILTIN_TIERS", "ClusterInformation", "ClusterInformationSpec",
    "DEFAULT_TIER", "KubeControllersConfiguration", "KubeControllersConfigurationSpec",
    "StagedGlobalNetworkPolicy", "StagedGlobalNetworkPolicySpec", "StagedKubernetesNetworkPolicy",
    "StagedKubernetesNetworkPolicySpec", "StagedNetworkPolicy", "StagedNetworkPolicySpec", "Tier",
    "TierSpec", "policy_tier", "tier_order_action", "BGPConfiguration", "BGPConfigurationSpec", "BGPFilter",
    "BGPFilterSpec", "BGPPassword", "BGPPeer",
    "BGPPeerSpec", "BLOCK_SIZE_RANGE", "CalicoModel", "CheckContext", "Community",
    "DEFAULT_BLOCK_SIZE", "EnabledDisabled", "EncapMode", "EndpointPort", "EntityRule", "Error",
    "FelixConfiguration", "FelixConfigurationSpec", "GlobalNetworkPolicy",
    "GlobalNetworkPolicySpec", "GlobalNetworkSet", "GlobalNetworkSetSpec",
    "HealthTimeoutOverride", "HostEndpoint", "HostEndpointSpec", "ICMPFields", "IPAMConfiguration",
    "IPAMConfigurationSpec", "IPAM_CONFIG_NAME", "IPNAT", "IPPool", "IPPoolSpec", "IPReservation",
    "IPReservationSpec", "IPVersion", "LogSeverity", "MTU", "Mark", "Metadata", "NOT_SUPPORTED_YET",
    "NetworkPolicy", "NetworkPolicySpec", "NetworkSet", "NetworkSetSpec", "Node", "NodeAddress",
    "NodeBGPSpec", "NodeSpec", "NodeStatus", "NodeWireguardSpec", "OrchRef", "OrchestratorName",
    "Order", "PolicyType", "PrefixAdvertisement", "Profile", "ProfileSpec", "ProtoPort",
    "RESOURCE_CLASSES", "Resource", "RouteTableRange", "Rule", "RuleMetadata", "SecretKeyRef",
    "ServiceAccountMatch", "ServiceIPBlock", "WorkloadEndpoint", "WorkloadEndpointPort",
    "WorkloadEndpointSpec", "field_path", "not_supported", "resource_kind",
]
