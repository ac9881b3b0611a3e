"""Cluster-wide kinds Calico's components write about themselves: ClusterInformation
(the cluster's identity and version, written at agent start) and
KubeControllersConfiguration (calico-kube-controllers' settings: stored and shown,
nothing here reads them, as there is no Kubernetes).
"""
from __future__ import annotations

import re
from typing import Annotated, Any, Optional

from pydantic import Field, PlainValidator

from calico_net.model.fields.bgp import Duration
from calico_net.model.fields.checks import bounded, enum_before, fail, pattern_type, show
from calico_net.model.fields.text import free_text_problem
from calico_net.model.resources.base import CalicoModel

# --- structures kept as written (nothing reads them): every key a plain name, every
# string printable text of bounded length, bounded depth

_DATA_KEY_RE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_./]{0,251}[A-Za-z0-9])?")
_DATA_TEXT_MAX = 4096
_DATA_DEPTH_MAX = 16


def _check_data(value: Any, where: str = "", depth: int = 0) -> Any:
    if depth > _DATA_DEPTH_MAX:
        raise fail(f"{where or 'value'}: nested more than {_DATA_DEPTH_MAX} levels deep")
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str) or not _DATA_KEY_RE.fullmatch(k):
                raise fail(f"{show(k)} is not a valid key (letters, digits, '-', '_', '.' and '/', "
                           "starting and ending with a letter or digit, at most 253 characters)")
            _check_data(v, f"{where}.{k}" if where else k, depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_data(v, f"{where}[{i}]", depth + 1)
    elif isinstance(value, str):
        problem = free_text_problem(value)
        if problem or len(value) > _DATA_TEXT_MAX:
            raise fail(f"{where or 'value'}: " + (problem or f"longer than {_DATA_TEXT_MAX} characters"))
    elif value is not None and not isinstance(value, (bool, int, float)):
        raise fail(f"{where or 'value'}: {show(value)} is not a JSON value")
    return value


def _check_mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise fail(f"{show(value)} is not a mapping")
    return _check_data(value)


#: a mapping kept as written (keys plain names, strings printable and bounded)
StoredMapping = Annotated[dict[str, Any], PlainValidator(_check_mapping)]
#: a list of mappings kept as written
StoredList = list[StoredMapping]

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
    controllers: Optional[StoredMapping] = None
