"""A quick validity check for the bulk kinds, for readers of many stored documents.

What it is for: the agent reads every resource at start (every WorkloadEndpoint of
the cluster and more) and must skip invalid ones. `parse_resource` (pydantic, then
semantic checks) is far slower per document and builds each kind's schema on first
use; `quick_valid` decides the common shapes with plain dict and string checks.

How it is built: `quick_valid(doc)` returns True only when `parse_resource(doc)` is
certain to accept `doc`; False means "not decided here", and the caller must run
`parse_resource` (which gives the reason if the document is bad). It accepts only
WorkloadEndpoint, NetworkSet, GlobalNetworkSet, GlobalNetworkPolicy, NetworkPolicy
and Profile documents made of the plain fields listed below (rules: action,
protocol, notProtocol, source/destination with nets, selectors and ports), each
checked with the same per-value checks the models use (`model.fields`) and the
semantic rules that apply to those fields (ports need a port protocol, global()
only in a namespaceSelector, types must cover the rules given and not repeat,
source and destination nets must share an IP version, an endpoint's ipNetworks are
single addresses, a policy order is finite); anything else — another
kind, a field not listed (endpoint ports, ipNATs, annotations, icmp, ipVersion,
serviceAccountSelector, rule serviceAccounts, doNotTrack, preDNAT, applyOnForward,
the fields calico.net refuses, ...), a snake_case name, a value of another type — is left to
`parse_resource`. So it can only make a valid document cheaper, never let a bad
one through (the agent's unit tests compare the two on the invalid corpus and on
mutated documents).
"""
from __future__ import annotations

import functools
import math
import socket
from typing import Any

from calico_net.model.fields.network import (
    MAC_RE,
    PORT_PROTOCOLS,
    PROTOCOL_NUMBERS,
    check_port,
    cidr_problem,
    interface_name_problem,
    is_host_network,
)
from calico_net.model.fields.text import (
    CONTAINER_ID_MAX,
    CONTAINER_ID_RE,
    DNS1123_LABEL_RE,
    RESOURCE_VERSION_RE,
    UID_MAX,
    UID_RE,
    check_timestamp,
    label_key_problem,
    label_value_ok,
    name_problem,
    selector_problem,
)

__all__ = ["quick_valid"]

API_VERSION = "projectcalico.org/v3"

_TOP = frozenset({"apiVersion", "kind", "metadata", "spec"})
_META = frozenset({"name", "namespace", "labels", "uid", "resourceVersion", "creationTimestamp"})
# WorkloadEndpointSpec fields decided here and their checks
_WEP_IDS = frozenset({"orchestrator", "workload", "pod", "endpoint", "containerID"})
_WEP = _WEP_IDS | {"serviceAccountName", "node", "ipNetworks", "profiles", "interfaceName", "mac"}
_NETSET = frozenset({"nets"})
_NAMESPACED = {"WorkloadEndpoint": True, "NetworkSet": True, "GlobalNetworkSet": False,
               "GlobalNetworkPolicy": False, "NetworkPolicy": True, "Profile": False}
# policy and profile specs: the fields decided here
_GNP = frozenset({"order", "selector", "types", "ingress", "egress", "namespaceSelector"})
_NP = frozenset({"order", "selector", "types", "ingress", "egress"})
_PROFILE = frozenset({"ingress", "egress", "labelsToApply"})
_RULE = frozenset({"action", "protocol", "notProtocol", "source", "destination"})
_ENTITY = frozenset({"nets", "notNets", "selector", "notSelector", "namespaceSelector",
                     "ports", "notPorts"})
_ACTIONS = frozenset({"Allow", "Deny", "Log", "Pass"})
_TYPES = ("Ingress", "Egress")


# Verdicts on values many documents repeat (profile and node names, label pairs),
# kept per distinct value; bounded by clearing when full.
_CACHE_MAX = 8192
_NAME_OK: dict[str, bool] = {}
_LABEL_OK: dict[tuple[str, str], bool] = {}


def _name_ok(v: Any) -> bool:
    if type(v) is not str:
        return False
    ok = _NAME_OK.get(v)
    if ok is None:
        if len(_NAME_OK) >= _CACHE_MAX:
            _NAME_OK.clear()
        ok = _NAME_OK[v] = name_problem(v) is None
    return ok


def _net_ok(v: Any, host: bool = False) -> bool:
    # model.fields.Net: cidr_problem with Net's settings; `host`: also one address, as
    # a WorkloadEndpoint's ipNetworks must be
    if type(v) is not str:
        return False
    if v.endswith("/32"):
        # an IPv4 host route, the common case: a dotted quad that inet_pton takes and
        # gives back unchanged is one Net accepts (and distinct addresses, one per
        # endpoint, would only churn cidr_problem's cache)
        a = v[:-3]
        try:
            if socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, a)) == a:
                return True
        except OSError:
            pass
    return cidr_problem(v, None, True, False, "CIDR") is None and (not host or is_host_network(v))


def _ifname_ok(v: Any) -> bool:
    # model.fields.InterfaceName
    return type(v) is str and interface_name_problem(v) is None


@functools.lru_cache(maxsize=4096)
def _timestamp_ok(ts: str) -> bool:
    try:
        check_timestamp(ts)
    except Exception:  # noqa: BLE001 - the model's own check said no
        return False
    return True


def _labels_ok(labels: Any) -> bool:
    if type(labels) is not dict:
        return False
    for k, v in labels.items():
        if type(k) is not str or type(v) is not str:
            return False
        ok = _LABEL_OK.get((k, v))
        if ok is None:
            if len(_LABEL_OK) >= _CACHE_MAX:
                _LABEL_OK.clear()
            ok = _LABEL_OK[(k, v)] = (label_key_problem(k) is None and len(v) <= 63
                                      and bool(label_value_ok(v)))
        if not ok:
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
        if type(ns) is not str or len(ns) > 63 or not DNS1123_LABEL_RE.fullmatch(ns):
            return False
    if "labels" in md and not _labels_ok(md["labels"]):
        return False
    uid = md.get("uid")
    if uid is not None and (type(uid) is not str or len(uid) > UID_MAX or not UID_RE.fullmatch(uid)):
        return False
    ts = md.get("creationTimestamp")
    if ts is not None and (type(ts) is not str or not _timestamp_ok(ts)):
        return False
    if "resourceVersion" in md:
        rv = md["resourceVersion"]
        if type(rv) is not str or not RESOURCE_VERSION_RE.fullmatch(rv):
            return False        # an int, or anything else, is left to the model
    return True


def _wep_spec_ok(spec: dict[str, Any]) -> bool:
    if not _WEP.issuperset(spec):
        return False
    for k in _WEP_IDS:
        v = spec.get(k)
        if v is not None and (type(v) is not str or len(v) > CONTAINER_ID_MAX
                              or not CONTAINER_ID_RE.fullmatch(v)):
            return False
    sa = spec.get("serviceAccountName")
    if sa is not None and not _name_ok(sa):
        return False
    node = spec.get("node")
    if node is not None and not _name_ok(node):
        return False
    if "ipNetworks" in spec:
        nets = spec["ipNetworks"]
        if type(nets) is not list or not all(_net_ok(n, host=True) for n in nets):
            return False    # a workload's networks are single addresses
    if "profiles" in spec:
        profiles = spec["profiles"]
        if type(profiles) is not list or not all(_name_ok(p) for p in profiles):
            return False
    ifname = spec.get("interfaceName")
    if ifname is not None and not _ifname_ok(ifname):
        return False
    mac = spec.get("mac")
    if mac is not None and (type(mac) is not str or not MAC_RE.fullmatch(mac)):
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


@functools.lru_cache(maxsize=8192)
def _selector_ok(text: str) -> bool:
    return selector_problem(text) is None


def _protocol_number(v: Any) -> int | None:
    """The values model.fields.Protocol accepts, as a number; else None."""
    if type(v) is int:
        return v if 1 <= v <= 255 else None
    if type(v) is str:
        return PROTOCOL_NUMBERS.get(v)
    return None


def _port_ok(v: Any) -> bool:
    if type(v) is not int and type(v) is not str:
        return False
    try:
        check_port(v)
    except Exception:  # noqa: BLE001 - the model's own check said no
        return False
    return True


def _entity_ok(ent: Any, proto: int | None) -> bool:
    if type(ent) is not dict or not _ENTITY.issuperset(ent):
        return False
    for k in ("nets", "notNets"):
        nets = ent.get(k)
        if nets is not None and (type(nets) is not list or not all(_net_ok(n) for n in nets)):
            return False
    for k in ("selector", "notSelector", "namespaceSelector"):
        sel = ent.get(k)
        if sel is None:
            continue
        if type(sel) is not str or not _selector_ok(sel):
            return False
        if k != "namespaceSelector" and "global(" in sel.replace(" ", ""):
            return False    # global() only in a namespaceSelector
    for k in ("ports", "notPorts"):
        ports = ent.get(k)
        if ports is None:
            continue
        if type(ports) is not list or not all(_port_ok(p) for p in ports):
            return False
        if ports and proto not in PORT_PROTOCOLS:
            return False    # ports need a port protocol
    return True


def _rule_ok(rule: Any) -> bool:
    if type(rule) is not dict or not _RULE.issuperset(rule):
        return False
    action = rule.get("action")
    if type(action) is not str or action not in _ACTIONS:
        return False
    proto = None
    if rule.get("protocol") is not None:
        proto = _protocol_number(rule["protocol"])
        if proto is None:
            return False
    if rule.get("notProtocol") is not None and _protocol_number(rule["notProtocol"]) is None:
        return False
    versions = []
    for side in ("source", "destination"):
        ent = rule.get(side)
        if ent is None:
            continue
        if not _entity_ok(ent, proto):
            return False
        versions.append({6 if ":" in n else 4 for n in ent.get("nets") or ()})
    if len(versions) == 2 and versions[0] and versions[1] and not versions[0] & versions[1]:
        return False        # source and destination nets of different IP versions
    return True


def _rules_ok(rules: Any) -> bool:
    return type(rules) is list and all(_rule_ok(r) for r in rules)


def _policy_spec_ok(spec: dict[str, Any], fields: frozenset[str]) -> bool:
    if not fields.issuperset(spec):
        return False
    order = spec.get("order")
    if order is not None:
        if type(order) is float:
            if not math.isfinite(order):
                return False    # NaN and infinities are refused
        elif type(order) is not int or not -2**63 <= order < 2**63:
            return False        # another type, or an int too big for a float: the model decides
    for k in ("selector", "namespaceSelector"):
        sel = spec.get(k)
        if sel is not None and (type(sel) is not str or not _selector_ok(sel)):
            return False
    if "selector" in spec and spec["selector"] is None:
        return False        # Selector is not Optional
    for k in ("ingress", "egress"):
        if k in spec and not _rules_ok(spec[k]):
            return False
    if "types" in spec:
        types = spec["types"]
        if types is None:
            return True
        if type(types) is not list or any(type(t) is not str or t not in _TYPES for t in types):
            return False
        if len(set(types)) != len(types):
            return False
        if spec.get("ingress") and "Ingress" not in types:
            return False
        if spec.get("egress") and "Egress" not in types:
            return False
    return True


def _profile_spec_ok(spec: dict[str, Any]) -> bool:
    if not _PROFILE.issuperset(spec):
        return False
    for k in ("ingress", "egress"):
        if k in spec and not _rules_ok(spec[k]):
            return False
    lta = spec.get("labelsToApply")
    return lta is None or _labels_ok(lta)


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
    if kind == "GlobalNetworkPolicy":
        return _policy_spec_ok(spec, _GNP)
    if kind == "NetworkPolicy":
        return _policy_spec_ok(spec, _NP)
    if kind == "Profile":
        return _profile_spec_ok(spec)
    return _netset_spec_ok(spec)
