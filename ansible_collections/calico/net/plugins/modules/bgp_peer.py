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
    Ansible are replaced; the one exception is the MD5 password (C(spec.password)), kept as stored
    unless O(password) or O(password_secret) is given.
  - O(password) writes the secret file calico/node reads (O(password_secrets_dir)/<name>/<key>) on the
    host the module runs on, then stores the peer with C(spec.password.secretKeyRef) naming it.
    Every calico/node host that has the session needs that file - run the task on each of them, or
    give the file to them with the C(calico.net.calico_node) role (C(calico_node_bgp_secrets)) and set
    only O(password_secret) here.
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
  password:
    description:
      - The TCP-MD5 password of the session. Written to the secret file O(password_secrets_dir)/<name>/<key>
        (O(password_secret)) on the managed host (directory mode 0700, file mode 0600), and the peer's
        C(spec.password.secretKeyRef) names that secret.
      - 1 to 80 bytes; C(") and C(\) and control characters are refused, as confd refuses them (BIRD 2's strings
        have no escapes). The same password must be set on the other end (for the C(calico.net.bird) role,
        C(bird_password)).
      - Never shown in the task's result, diff or errors.
      - An empty string removes C(spec.password) (the secret file is left as it is).
      - Left out (and O(password_secret) too), a password already stored is kept.
    type: str
  password_secret:
    description:
      - The secret that holds the password (C(spec.password.secretKeyRef)). Without O(password) the
        module only sets the reference; the file must then exist on every calico/node host.
    type: dict
    suboptions:
      name:
        description: Secret name, a directory under O(password_secrets_dir).
        type: str
        default: bgp-secrets
      key:
        description: Key in the secret, the file name. Default - the peer's name.
        type: str
  password_secrets_dir:
    description: Where calico/node reads BGP secrets (C(CALICO_BGP_SECRETS_DIR) in the container).
    type: path
    default: /etc/calico/bgp-secrets
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

- name: A ToR session with an MD5 password (run on every calico/node host, so each has the secret file)
  calico.net.bgp_peer:
    name: tor-r2
    node_selector: rack == "r2"
    peer_ip: 198.18.0.253
    as_number: 64513
    password: "{{ vault_tor_r2_password }}"
    password_secret: {name: bgp-secrets, key: tor-r2}

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
secret_changed:
  description: Whether the secret file was (or in check mode would be) written.
  returned: success
  type: bool
errors:
  description: On a validation failure, each problem with its Calico field path and the module option to fix.
  returned: failure
  type: list
  elements: dict
"""

from ansible_collections.calico.net.plugins.module_utils.bgp_secret import password_options, password_plan
from ansible_collections.calico.net.plugins.module_utils.common import METADATA_ARGUMENT_SPEC, datastore, run_module
from ansible_collections.calico.net.plugins.module_utils.manager import (
    Want, as_number, metadata_from, new_document, option_paths, run_wants, spec_from,
)

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


def handle(module):
    params = module.params
    secret = password_plan(params, "password", "password", default_key=params["name"])

    def build(stored):
        doc = new_document("BGPPeer", params["name"])
        doc["spec"] = spec_from(params, FIELDS, CONVERTERS)
        secret.apply((stored or {}).get("spec"), doc["spec"])
        return metadata_from(params, doc)

    present = params["state"] == "present"
    want = Want("BGPPeer", params["name"], None, params["state"], build)
    # The file first: confd skips a peer whose secret it cannot read.
    result = run_wants(module, datastore(params), [want], secret.write if present else None)
    result["secret_changed"] = secret.changed
    return result


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
        **password_options("password"),
        **METADATA_ARGUMENT_SPEC,
    )
    run_module(argument_spec, handle,
               option_paths=option_paths(FIELDS, **{"spec.password": "password_secret"}),
               mutually_exclusive=[("node", "node_selector"), ("peer_ip", "peer_selector")])


if __name__ == "__main__":
    main()
