"""Cluster-wide kinds Calico's components write about themselves: ClusterInformation
(the cluster's identity and version, written at agent start) and
KubeControllersConfiguration (calico-kube-controllers' settings: stored and shown,
nothing here reads them, as there is no Kubernetes).
"""
from __future__ import annotations

from typing import Any, Optional

from pydantic import Field

from calico_net.model.fields.bgp import Duration
from calico_net.model.fields.checks import bounded, enum_before, pattern_type
from calico_net.model.resources.base import CalicoModel

# versions, GUIDs, cluster types ("typha,kdd,k8s,bgp"): plain version-like characters
_INFO_TEXT = pattern_type(r"[A-Za-z0-9][-A-Za-z0-9_.,:+/ ]{0,252}", "at most 253 letters, digits, "
                          "' ', '-', '_', '.', ',', ':', '+' and '/'", "value", max_len=253)
EnabledDisabled = enum_before(("Enabled", "Disabled"), "mode")


class ClusterInformationSpec(CalicoModel):
    cluster_guid: Optional[_INFO_TEXT] = Field(None, alias="clusterGUID")
    cluster_type: Optional[_INFO_TEXT] = None
    calico_version: Optional[_INFO_TEXT] = None
    datastore_ready: Optional[bool] = None
    variant: Optional[_INFO_TEXT] = None


class KubeControllersConfigurationSpec(CalicoModel):
    log_severity_screen: Optional[enum_before(("None", "Debug", "Info", "Warning", "Error",
                                               "Fatal", "Panic"), "log severity")] = None
    health_checks: Optional[EnabledDisabled] = None
    etcd_v3_compaction_period: Optional[Duration] = None
    prometheus_metrics_port: Optional[bounded(0, 65535, "port")] = None
    debug_profile_port: Optional[bounded(0, 65535, "port")] = None
    # the per-controller sections are kept as written (nothing reads them)
    controllers: Optional[dict[str, Any]] = None
