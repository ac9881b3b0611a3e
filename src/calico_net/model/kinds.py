"""The resource kinds: their etcd plural, scope, and the names calicoctl accepts for them.

`KINDS` maps each kind ("GlobalNetworkPolicy") to a `KindInfo`. `plural` is the path
segment of Calico's etcd layout
(`/calico/resources/v3/projectcalico.org/<plural>/[<namespace>/]<name>`), and
`aliases` are the resource-type names calicoctl's resource manager registers for the
kind (`gnp`, `gnps`, `globalnetworkpolicy`, ...), matched case-insensitively by
`resolve_kind`.
"""
from __future__ import annotations

from dataclasses import dataclass

from calico_net.errors import UnknownKindError
from calico_net.model import resources as r


@dataclass(frozen=True)
class KindInfo:
    kind: str
    plural: str
    namespaced: bool
    aliases: tuple[str, ...]
    model: type[r.Resource]

    @property
    def list_kind(self) -> str:
        """The kind of a list of these (`calicoctl get -o yaml` of several)."""
        return f"{self.kind}List"


def _info(model: type[r.Resource], plural: str, *aliases: str) -> KindInfo:
    return KindInfo(kind=model.KIND, plural=plural, namespaced=model.NAMESPACED,
                    aliases=aliases, model=model)


# Aliases as calicoctl's resource manager registers them, so the same names work here.
KINDS: dict[str, KindInfo] = {
    info.kind: info
    for info in (
        _info(r.Node, "nodes", "node", "nodes", "no", "nos"),
        _info(r.IPPool, "ippools", "ippool", "ippools", "ipp", "ipps", "pool", "pools"),
        _info(r.BGPConfiguration, "bgpconfigurations",
              "bgpconfiguration", "bgpconfigurations", "bgpconfig", "bgpconfigs"),
        _info(r.BGPPeer, "bgppeers", "bgppeer", "bgppeers", "bgpp", "bgpps", "bp", "bps"),
        _info(r.BGPFilter, "bgpfilters", "bgpfilter", "bgpfilters"),
        _info(r.FelixConfiguration, "felixconfigurations",
              "felixconfiguration", "felixconfigurations", "felixconfig", "felixconfigs"),
        _info(r.Profile, "profiles", "profile", "profiles", "pro", "pros"),
        _info(r.NetworkPolicy, "networkpolicies",
              "networkpolicy", "networkpolicies", "policy", "np", "policies", "pol", "pols"),
        _info(r.GlobalNetworkPolicy, "globalnetworkpolicies",
              "globalnetworkpolicy", "globalnetworkpolicies", "gnp", "gnps"),
        _info(r.NetworkSet, "networksets", "networkset", "networksets", "netsets"),
        _info(r.GlobalNetworkSet, "globalnetworksets", "globalnetworkset", "globalnetworksets"),
        _info(r.WorkloadEndpoint, "workloadendpoints",
              "workloadendpoint", "workloadendpoints", "wep", "weps"),
        _info(r.HostEndpoint, "hostendpoints", "hostendpoint", "hostendpoints", "hep", "heps"),
        _info(r.IPReservation, "ipreservations",
              "ipreservation", "ipreservations", "reservation", "reservations"),
        _info(r.IPAMConfiguration, "ipamconfigurations",
              "ipamconfiguration", "ipamconfigurations", "ipamconfig", "ipamconfigs"),
        _info(r.Tier, "tiers", "tier", "tiers"),
        _info(r.StagedNetworkPolicy, "stagednetworkpolicies",
              "stagednetworkpolicy", "stagednetworkpolicies", "stagedpolicy", "snp",
              "stagedpolicies", "spol", "spols"),
        _info(r.StagedGlobalNetworkPolicy, "stagedglobalnetworkpolicies",
              "stagedglobalnetworkpolicy", "stagedglobalnetworkpolicies", "sgnp", "sgnps"),
        _info(r.StagedKubernetesNetworkPolicy, "stagedkubernetesnetworkpolicies",
              "stagedkubernetesnetworkpolicy", "stagedkubernetesnetworkpolicies",
              "stagedkubernetespolicy", "sknp", "stagedkubernetespolicies", "skpol", "skpols"),
        _info(r.KubeControllersConfiguration, "kubecontrollersconfigurations",
              "kubecontrollersconfiguration", "kubecontrollersconfigurations",
              "kubecontrollersconfig", "kubecontrollersconfigs"),
        _info(r.ClusterInformation, "clusterinformations",
              "clusterinformation", "clusterinformations", "clusterinfo", "clusterinfos"),
    )
}

_BY_NAME: dict[str, KindInfo] = {}
for _k in KINDS.values():
    for _alias in (_k.kind, _k.plural, *_k.aliases):
        _BY_NAME[_alias.lower()] = _k
_BY_PLURAL: dict[str, KindInfo] = {k.plural: k for k in KINDS.values()}


def resolve_kind(name: str) -> KindInfo:
    """The kind a calicoctl resource type names ("gnp", "IPPools", "GlobalNetworkPolicy")."""
    info = _BY_NAME.get(name.strip().lower())
    if info is None:
        raise UnknownKindError(name, sorted(k.lower() for k in KINDS))
    return info


def kind_for_plural(plural: str) -> KindInfo:
    """The kind stored under an etcd path segment ("globalnetworkpolicies")."""
    try:
        return _BY_PLURAL[plural]
    except KeyError:
        raise UnknownKindError(plural, sorted(_BY_PLURAL)) from None
