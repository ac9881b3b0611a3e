"""A quick validity check for the bulk kinds, for readers of many stored documents.

What it is for: the agent reads every resource at start (10,000 WorkloadEndpoints
and more) and must skip invalid ones. `parse_resource` (pydantic, then semantic
checks) costs ~100-150 us per endpoint plus the schema build on first use;
`quick_valid` decides the common shapes in a few microseconds.

How it is built: `quick_valid(doc)` returns True only when `parse_resource(doc)` is
certain to accept `doc`; False means "not decided here", and the caller must run
`parse_resource` (which gives the reason if the document is bad). It accepts only
WorkloadEndpoint, NetworkSet and GlobalNetworkSet documents made of the plain
fields listed below, each checked with the same per-value checks the models use
(`model.fields`); anything else — another kind, a field not listed (ports, ipNATs,
annotations, ...), a snake_case name, a value of another type — is left to
`parse_resource`. So it can only make a valid document cheaper, never let a bad
one through (the agent's unit tests compare the two on the invalid corpus and on
mutated documents).
"""
from __future__ import annotations

import functools
import re
import socket
from typing import Any

from calico_net.model.fields import (
    DNS1123_LABEL_RE,
    _check_timestamp,
    _cidr_problem,
    _label_key_problem,
    _label_value_ok,
    _MAC_RE,
    name_problem,
)

__all__ = ["quick_valid"]

API_VERSION = "projectcalico.org/v3"

_TOP = frozenset({"apiVersion", "kind", "metadata", "spec"})
_META = frozenset({"name", "namespace", "labels", "uid", "resourceVersion", "creationTimestamp"})
# WorkloadEndpointSpec fields decided here and their checks
_WEP_OPT_STR = frozenset({"orchestrator", "workload", "containerID", "pod", "endpoint",
                          "serviceAccountName"})
_WEP = _WEP_OPT_STR | {"node", "ipNetworks", "profiles", "interfaceName", "mac"}
_NETSET = frozenset({"nets"})
_NAMESPACED = {"WorkloadEndpoint": True, "NetworkSet": True, "GlobalNetworkSet": False}


def _name_ok(v: Any) -> bool:
    return type(v) is str and name_problem(v) is None


def _net_ok(v: Any) -> bool:
    # model.fields.Net: _cidr(v) with its defaults
    if type(v) is not str:
        return False
    if v.endswith("/32"):
        # an IPv4 host route, the common case: a dotted quad that inet_pton takes and
        # gives back unchanged is one _cidr accepts (no lru_cache churn for 10,000
        # distinct addresses)
        a = v[:-3]
        try:
            if socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, a)) == a:
                return True
        except OSError:
            pass
    return _cidr_problem(v, None, True, False, "CIDR") is None


# model.fields._check_interface_name, as one compiled pattern (\Z: no trailing newline)
_IFNAME_RE = re.compile(r"[A-Za-z0-9_.@:+-]{1,15}\Z")


def _ifname_ok(v: Any) -> bool:
    return type(v) is str and _IFNAME_RE.match(v) is not None and v not in (".", "..")


@functools.lru_cache(maxsize=4096)
def _timestamp_ok(ts: str) -> bool:
    try:
        _check_timestamp(ts)
    except Exception:  # noqa: BLE001 - the model's own check said no
        return False
    return True


def _labels_ok(labels: Any) -> bool:
    if type(labels) is not dict:
        return False
    for k, v in labels.items():
        if type(k) is not str or _label_key_problem(k) is not None:
            return False
        if type(v) is not str or len(v) > 63 or not _label_value_ok(v):
            return False
    return True


def _metadata_ok(md: Any, namespaced: bool) -> bool:
    if type(md) is not dict or not _META.issuperset(md):
        return False
    if not _name_ok(md.get("name")):
        return False
    ns = md.get("namespace")
    if ns is not None:
        if not namespaced:
            return False   # parse_resource reports a namespace on a global kind
        if type(ns) is not str or len(ns) > 63 or not DNS1123_LABEL_RE.match(ns):
            return False
    if "labels" in md and not _labels_ok(md["labels"]):
        return False
    uid = md.get("uid")
    if uid is not None and type(uid) is not str:
        return False
    ts = md.get("creationTimestamp")
    if ts is not None and (type(ts) is not str or not _timestamp_ok(ts)):
        return False
    if "resourceVersion" in md:
        rv = md["resourceVersion"]
        if type(rv) is not str and type(rv) is not int:
            return False
    return True


def _wep_spec_ok(spec: dict[str, Any]) -> bool:
    if not _WEP.issuperset(spec):
        return False
    for k in _WEP_OPT_STR:
        v = spec.get(k)
        if v is not None and type(v) is not str:
            return False
    node = spec.get("node")
    if node is not None and not _name_ok(node):
        return False
    if "ipNetworks" in spec:
        nets = spec["ipNetworks"]
        if type(nets) is not list or not all(_net_ok(n) for n in nets):
            return False
    if "profiles" in spec:
        profiles = spec["profiles"]
        if type(profiles) is not list or not all(_name_ok(p) for p in profiles):
            return False
    ifname = spec.get("interfaceName")
    if ifname is not None and not _ifname_ok(ifname):
        return False
    mac = spec.get("mac")
    if mac is not None and (type(mac) is not str or not _MAC_RE.match(mac)):
        return False
    return True


def _netset_spec_ok(spec: dict[str, Any]) -> bool:
    if not _NETSET.issuperset(spec):
        return False
    if "nets" in spec:
        nets = spec["nets"]
        if type(nets) is not list or not all(_net_ok(n) for n in nets):
            return False
    return True


def quick_valid(doc: Any) -> bool:
    """True if `parse_resource(doc)` certainly accepts `doc`; False if undecided."""
    if type(doc) is not dict or not _TOP.issuperset(doc) or doc.get("apiVersion") != API_VERSION:
        return False
    kind = doc.get("kind")
    namespaced = _NAMESPACED.get(kind) if type(kind) is str else None
    if namespaced is None or not _metadata_ok(doc.get("metadata"), namespaced):
        return False
    spec = doc.get("spec")
    if type(spec) is not dict:
        return False
    if kind == "WorkloadEndpoint":
        return _wep_spec_ok(spec)
    return _netset_spec_ok(spec)
