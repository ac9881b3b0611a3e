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

The selector language lives in `calico_net.model.selector`.

Decisions:

* pydantic v2: the twelve kinds are dozens of nested record types with Calico's camelCase
  names; declaring them once gives parsing, unknown-field rejection (extra="forbid"),
  strict types (a quoted "true" is not a boolean, as in Calico's Go structs), aliases,
  exclude_unset dumps (the round-trip guarantee) and error locations for field paths,
  all from the pydantic-core fast path. Every message is rewritten here so operators
  never see pydantic's wording.
* Values are stored as written (no normalisation): "198.19.0.0/16" stays text, a port
  stays 80 or "1000:2000", an AS number stays 64512 or "64512.10", `order` stays an
  int or a float. So `to_dict()` returns exactly the user's document; `parse_*`
  helpers give the meaning.
* CIDRs with host bits set ("198.19.1.5/16") are rejected with a hint naming the
  network, where Calico would silently mask them: keeping the text unchanged and
  masking would make etcd, `calicoctl get` and the dataplane disagree. Interface
  addresses (Node `bgp.ipv4Address: 198.18.0.11/24`) keep their host bits, as in
  Calico; bare addresses are accepted wherever Calico's `nets` accept them.
* Ports: 1-65535, "lo:hi" with lo <= hi, or a named port (IANA service-name rules);
  ports need protocol TCP, UDP, SCTP or UDPLite, as in Calico.
* Namespaced kinds may omit metadata.namespace (the caller - calicoctl's `-n` or
  "default" - fills it in); a namespace on a global kind is an error.
* FelixConfiguration and BGPConfiguration take any name, as in Calico (only
  "default" and "node.<nodename>" have an effect: `model.registry` warns about the
  others); only the "default" BGPConfiguration may carry the node-mesh
  password/restart time.
* Overlap is checked between *enabled* pools only (`check_pool_overlap`).
* Strings are data, never syntax: every string field has a grammar (Calico's where it
  has one, else the plain characters such values are made of), matched whole (a
  trailing newline never passes) and bounded in length; address text may hold only
  address characters (no IPv6 zone). Only annotation values are free text, and even
  they refuse NUL and other control characters. Messages show values through
  `fields.show`: escaped and at most 80 characters.
* Never fail open: a Calico field the dataplane does not enforce is refused with its
  path and "not supported by calico.net yet" (`resources.not_supported`): a
  HostEndpoint without interfaceName (found by its expectedIPs alone), rule http and
  services. docs/policy.md lists every policy field.
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
