#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: calico.net contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""calico.net.bgp_peer: declare a Calico BGPPeer (typed options -> spec, then the shared
read/compare/apply manager)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: bgp_peer
short_description: Manage Calico BGP peers (ToR routers, route reflectors)
version_added: 0.1.0
description:
  - Create, update or delete a Calico C(BGPPeer) - a BGP session from all nodes, one node
    (O(node)) or the nodes a selector picks (O(node_selector)), to one address (O(peer_ip) and
    O(as_number)) or to the nodes another selector picks (O(peer_selector), route reflectors).
  - The module declares the whole peer - options left out are unset, and settings made outside
    Ansible are replaced.
  - Changes are detected by meaning (C(64513) equals C("64513"), C(90s) equals C(1m30s)).
author:
  - calico.net maintainers (@calico-net)
extends_documentation_fragment:
  - calico.net.etcd
  - calico.net.attributes
  - calico.net.metadata
options:
  name:
    description: Name of the peer resource (C(metadata.name)).
    type: str
    required: true
  state:
    description: Whether the peer should exist.
    type: str
    choices: [present, absent]
    default: present
  node:
    description: Only this node peers (C(spec.node)). Leave out, with O(node_selector), for all nodes.
    type: str
  node_selector:
    description: The nodes that peer (C(spec.nodeSelector)), e.g. C(rack == "r1"). Not with O(node).
    type: str
  peer_ip:
    description: The peer's address (C(spec.peerIP)); C(198.18.0.254), C(198.18.0.254:1790) or C([fd00::1]:1790).
    type: str
  as_number:
    description: The peer's AS number (C(spec.asNumber)), plain or dotted. Required with O(peer_ip).
    type: str
  peer_selector:
    description: Peer with the Calico nodes this selector picks (C(spec.peerSelector)), instead of O(peer_ip).
    type: str
  keep_original_next_hop:
    description: Do not change the next hop of routes sent to this peer (C(spec.keepOriginalNextHop)).
    type: bool
  next_hop_mode:
    description: How the next hop of routes sent to the peer is set (C(spec.nextHopMode)).
    type: str
    choices: [Auto, Self, Keep]
  source_address:
    description: C(UseNodeIP) (Calico's default) binds the session to the node's IP; C(None) lets the kernel choose (C(spec.sourceAddress)).
    type: str
    choices: [UseNodeIP, "None"]
  max_restart_time:
    description: Graceful restart time, a duration such as C(120s) (C(spec.maxRestartTime)).
    type: str
  keepalive_time:
    description: BGP keepalive time, a duration (C(spec.keepaliveTime)).
    type: str
  num_allowed_local_as_numbers:
    description: How often the local AS may appear in received AS paths (C(spec.numAllowedLocalASNumbers)).
    type: int
  ttl_security:
    description: Enable GTSM with this many hops (C(spec.ttlSecurity)).
    type: int
  reachable_by:
    description: A gateway address the peer is reachable through (C(spec.reachableBy)).
    type: str
  local_as_number:
    description: The AS number the nodes use on this session (C(spec.localASNumber)).
    type: str
  filters:
    description: Names of BGP filters to apply, in order (C(spec.filters)).
    type: list
    elements: str
seealso:
  - module: calico.net.bgp_configuration
  - module: calico.net.bgp_status_info
"""

EXAMPLES = r"""
- name: Every node in rack r1 peers with its top-of-rack router
  calico.net.bgp_peer:
    name: tor-r1
    node_selector: rack == "r1"
    peer_ip: 198.18.0.254
    as_number: 64513

- name: All nodes peer with the route reflectors
  calico.net.bgp_peer:
    name: to-route-reflectors
    node_selector: "!has(route-reflector)"
    peer_selector: has(route-reflector)

- name: One node peers with a router on a non-standard port
  calico.net.bgp_peer:
    name: node1-upstream
    node: node1
    peer_ip: 198.18.1.1:1790
    as_number: 64600
    max_restart_time: 90s

- name: Remove a peer
  calico.net.bgp_peer:
    name: node1-upstream
    state: absent
"""

RETURN = r"""
resource:
  description: The BGPPeer as stored (or as it would be stored in check mode); C(null) when absent.
  returned: success
  type: dict
  sample:
    apiVersion: projectcalico.org/v3
    kind: BGPPeer
    metadata: {name: tor-r1, resourceVersion: "33"}
    spec: {nodeSelector: rack == "r1", peerIP: 198.18.0.254, asNumber: 64513}
diff:
  description: The peer before and after, as YAML text, in diff mode.
  returned: when diff mode is on
  type: dict
  contains:
    before:
      description: The stored document (empty when it did not exist).
      type: str
      returned: always
    after:
      description: The document after the change (empty when deleted).
      type: str
      returned: always
errors:
  description: On a validation failure, each problem with its Calico field path and the module option to fix.
  returned: failure
  type: list
  elements: dict
"""

from ansible_collections.calico.net.plugins.module_utils.common import METADATA_ARGUMENT_SPEC, run_module
from ansible_collections.calico.net.plugins.module_utils.manager import as_number, declared_handler, option_paths

FIELDS = dict(
    node="node",
    node_selector="nodeSelector",
    peer_ip="peerIP",
    as_number="asNumber",
    peer_selector="peerSelector",
    keep_original_next_hop="keepOriginalNextHop",
    next_hop_mode="nextHopMode",
    source_address="sourceAddress",
    max_restart_time="maxRestartTime",
    keepalive_time="keepaliveTime",
    num_allowed_local_as_numbers="numAllowedLocalASNumbers",
    ttl_security="ttlSecurity",
    reachable_by="reachableBy",
    local_as_number="localASNumber",
    filters="filters",
)
CONVERTERS = dict(asNumber=as_number, localASNumber=as_number)


def main():
    argument_spec = dict(
        name=dict(type="str", required=True),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        node=dict(type="str"),
        node_selector=dict(type="str"),
        peer_ip=dict(type="str"),
        as_number=dict(type="str"),
        peer_selector=dict(type="str"),
        keep_original_next_hop=dict(type="bool"),
        next_hop_mode=dict(type="str", choices=["Auto", "Self", "Keep"]),
        source_address=dict(type="str", choices=["UseNodeIP", "None"]),
        max_restart_time=dict(type="str"),
        keepalive_time=dict(type="str"),
        num_allowed_local_as_numbers=dict(type="int"),
        ttl_security=dict(type="int"),
        reachable_by=dict(type="str"),
        local_as_number=dict(type="str"),
        filters=dict(type="list", elements="str"),
        **METADATA_ARGUMENT_SPEC,
    )
    run_module(argument_spec, declared_handler("BGPPeer", FIELDS, converters=CONVERTERS),
               option_paths=option_paths(FIELDS),
               mutually_exclusive=[("node", "node_selector"), ("peer_ip", "peer_selector")])


if __name__ == "__main__":
    main()
