"""Calico v3 resources: models, validation and the kind registry.

Public API (everything else in this package is an implementation detail):

* `parse_documents(text)` -> list of dicts (multi-document YAML, JSON, List kinds);
* `parse_resource(doc)` -> `Resource`, or `calico_net.errors.ValidationError` whose
  str() reads `GlobalNetworkPolicy "deny-all": spec.ingress[0].protocol: "TCPX" is not
  a protocol (...)` and whose `.errors` lists (field path, message) pairs;
* `Resource` objects: `.kind`, `.metadata` (`.name`, `.namespace`, `.labels`), `.spec`
  (defaults readable as attributes) and `.to_dict()` (the document as written);
* `KINDS`, `KindInfo`, `resolve_kind(name)` (calicoctl's names and aliases);
* `check_pool_overlap(pools)`;
* value helpers `parse_port`, `parse_protocol`, `parse_asn`, `parse_cidr`,
  `parse_duration`, `parse_peer_ip`.

Built on pydantic v2 (see docs/model.md for why and for the validation decisions);
the selector language lives in `calico_net.model.selector`.
"""
from __future__ import annotations

from calico_net.errors import ParseError, UnknownKindError, ValidationError
from calico_net.model.fields import (
    parse_asn, parse_cidr, parse_duration, parse_peer_ip, parse_port, parse_protocol,
)
from calico_net.model.kinds import KINDS, KindInfo, kind_for_plural, resolve_kind
from calico_net.model.resources import (
    API_VERSION, BGPConfiguration, BGPPeer, FelixConfiguration, GlobalNetworkPolicy,
    GlobalNetworkSet, HostEndpoint, IPPool, Metadata, NetworkPolicy, NetworkSet, Node,
    Profile, Resource, Rule, WorkloadEndpoint,
)
from calico_net.model.validation import (
    check_pool_overlap, parse_documents, parse_resource, validate_resource,
)

__all__ = [
    "API_VERSION", "BGPConfiguration", "BGPPeer", "FelixConfiguration", "GlobalNetworkPolicy",
    "GlobalNetworkSet", "HostEndpoint", "IPPool", "KINDS", "KindInfo", "Metadata",
    "NetworkPolicy", "NetworkSet", "Node", "ParseError", "Profile", "Resource", "Rule",
    "UnknownKindError", "ValidationError", "WorkloadEndpoint", "check_pool_overlap",
    "kind_for_plural", "parse_asn", "parse_cidr", "parse_documents", "parse_duration",
    "parse_peer_ip", "parse_port", "parse_protocol", "parse_resource", "resolve_kind",
    "validate_resource",
]
