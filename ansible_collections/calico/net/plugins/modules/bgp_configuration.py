#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: calico.net contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""calico.net.bgp_configuration: set BGPConfiguration fields (typed options merged into
the stored spec, then the shared read/compare/apply manager)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: bgp_configuration
short_description: Manage Calico's BGP configuration (AS number, node-to-node mesh, service IPs)
version_added: 0.1.0
description:
  - Set fields of a Calico C(BGPConfiguration) - C(default) for the whole cluster or
    C(node.<nodename>) for one node.
  - Only the settings given are managed - settings left out keep their stored value (and unset
    ones inherit from C(default) or Calico's defaults), unless O(purge=true).
  - Changes are detected by meaning (C(64512) equals C("64512"), the order of service IP blocks and
    communities does not matter).
author:
  - calico.net maintainers (@calico-net)
extends_documentation_fragment:
  - calico.net.etcd
  - calico.net.attributes
options:
  name:
    description: C(default), or C(node.<nodename>) for per-node settings.
    type: str
    default: default
  state:
    description: V(absent) deletes the whole configuration resource.
    type: str
    choices: [present, absent]
    default: present
  purge:
    description:
      - Remove every spec field that is not given here, so the task declares the whole resource.
    type: bool
    default: false
  as_number:
    description:
      - The cluster's (or node's) default AS number (C(spec.asNumber)), plain (C(64512)) or
        dotted (C(1.10)). Calico's default is 64512.
    type: str
  node_to_node_mesh_enabled:
    description: Whether every node peers with every other node (C(spec.nodeToNodeMeshEnabled)). Calico's default is C(true).
    type: bool
  log_severity_screen:
    description: BIRD's log level (C(spec.logSeverityScreen)). Calico's default is C(Info).
    type: str
    choices: [Trace, Debug, Info, Warning, Error, Fatal]
  listen_port:
    description: The port BIRD listens on for BGP (C(spec.listenPort)). Calico's default is 179.
    type: int
  bind_mode:
    description: C(NodeIP) makes BIRD listen only on the node's IP (C(spec.bindMode)).
    type: str
    choices: ["None", NodeIP]
  node_mesh_max_restart_time:
    description: Graceful restart time for mesh sessions, a duration such as C(120s) (C(spec.nodeMeshMaxRestartTime)).
    type: str
  service_cluster_ips:
    description: Service cluster CIDRs to advertise (C(spec.serviceClusterIPs)), as plain CIDR strings.
    type: list
    elements: str
  service_external_ips:
    description: Service external CIDRs to advertise (C(spec.serviceExternalIPs)), as plain CIDR strings.
    type: list
    elements: str
  service_load_balancer_ips:
    description: Load-balancer CIDRs to advertise (C(spec.serviceLoadBalancerIPs)), as plain CIDR strings.
    type: list
    elements: str
  communities:
    description: Named BGP communities (C(spec.communities)).
    type: list
    elements: dict
    suboptions:
      name:
        description: Name that O(prefix_advertisements[].communities) can use.
        type: str
        required: true
      value:
        description: The community, C(aa:nn) or C(aa:nn:mm).
        type: str
        required: true
  prefix_advertisements:
    description: Communities to attach to advertised prefixes (C(spec.prefixAdvertisements)).
    type: list
    elements: dict
    suboptions:
      cidr:
        description: The prefix.
        type: str
        required: true
      communities:
        description: Names from O(communities) or literal community values.
        type: list
        elements: str
        required: true
  ignored_interfaces:
    description: Interface name patterns BIRD must not use for direct routes (C(spec.ignoredInterfaces)).
    type: list
    elements: str
  node_mesh_password:
    description:
      - The TCP-MD5 password of every node-to-node mesh session (only in C(default), with the mesh on).
        Written to the secret file O(node_mesh_password_secrets_dir)/<name>/<key> (O(node_mesh_password_secret))
        on the managed host (directory mode 0700, file mode 0600); C(spec.nodeMeshPassword.secretKeyRef)
        names it. Every calico/node host needs that file - run the task on each, or give the file to them
        with the C(calico.net.calico_node) role (C(calico_node_bgp_secrets)) and set only
        O(node_mesh_password_secret) here.
      - 1 to 80 bytes; C(") and C(\) and control characters are refused, as confd refuses them. Never shown
        in the task's result, diff or errors. An empty string removes C(spec.nodeMeshPassword).
    type: str
  node_mesh_password_secret:
    description: The secret that holds the mesh password (C(spec.nodeMeshPassword.secretKeyRef)).
    type: dict
    suboptions:
      name:
        description: Secret name, a directory under O(node_mesh_password_secrets_dir).
        type: str
        default: bgp-secrets
      key:
        description: Key in the secret, the file name. Default - C(node-mesh).
        type: str
  node_mesh_password_secrets_dir:
    description: Where calico/node reads BGP secrets (C(CALICO_BGP_SECRETS_DIR) in the container).
    type: path
    default: /etc/calico/bgp-secrets
seealso:
  - module: calico.net.bgp_peer
  - module: calico.net.node
  - module: calico.net.bgp_status_info
"""

EXAMPLES = r"""
- name: Cluster AS 64512 with a full node-to-node mesh
  calico.net.bgp_configuration:
    as_number: 64512
    node_to_node_mesh_enabled: true
    log_severity_screen: Info

- name: Turn the mesh off once route reflectors are in place
  calico.net.bgp_configuration:
    node_to_node_mesh_enabled: false

- name: Advertise service CIDRs with a community
  calico.net.bgp_configuration:
    service_cluster_ips: [198.18.96.0/20]
    communities:
      - {name: services, value: "64512:300"}
    prefix_advertisements:
      - {cidr: 198.18.96.0/20, communities: [services]}

- name: MD5 on every mesh session (run on every calico/node host, so each has the secret file)
  calico.net.bgp_configuration:
    node_mesh_password: "{{ vault_mesh_password }}"

- name: A per-node setting
  calico.net.bgp_configuration:
    name: node.rr1
    log_severity_screen: Debug
"""

RETURN = r"""
resource:
  description: The BGPConfiguration as stored (or as it would be stored in check mode); C(null) when deleted.
  returned: success
  type: dict
  sample:
    apiVersion: projectcalico.org/v3
    kind: BGPConfiguration
    metadata: {name: default, resourceVersion: "12"}
    spec: {asNumber: 64512, nodeToNodeMeshEnabled: false, logSeverityScreen: Info}
diff:
  description: The resource before and after, as YAML text, in diff mode.
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
  description: Whether the mesh password's secret file was (or in check mode would be) written.
  returned: success
  type: bool
errors:
  description: On a validation failure, each problem with its Calico field path and the module option to fix.
  returned: failure
  type: list
  elements: dict
"""

from ansible_collections.calico.net.plugins.module_utils.bgp_secret import password_options, password_plan
from ansible_collections.calico.net.plugins.module_utils.common import datastore, run_module
from ansible_collections.calico.net.plugins.module_utils.manager import (
    Want, as_number, cidr_blocks, merged_build, option_paths, run_wants,
)

FIELDS = dict(
    as_number="asNumber",
    node_to_node_mesh_enabled="nodeToNodeMeshEnabled",
    log_severity_screen="logSeverityScreen",
    listen_port="listenPort",
    bind_mode="bindMode",
    node_mesh_max_restart_time="nodeMeshMaxRestartTime",
    service_cluster_ips="serviceClusterIPs",
    service_external_ips="serviceExternalIPs",
    service_load_balancer_ips="serviceLoadBalancerIPs",
    communities="communities",
    prefix_advertisements="prefixAdvertisements",
    ignored_interfaces="ignoredInterfaces",
)
CONVERTERS = dict(
    asNumber=as_number,
    serviceClusterIPs=cidr_blocks,
    serviceExternalIPs=cidr_blocks,
    serviceLoadBalancerIPs=cidr_blocks,
)


def handle(module):
    params = module.params
    secret = password_plan(params, "node_mesh_password", "nodeMeshPassword", default_key="node-mesh")
    merged = merged_build("BGPConfiguration", params, FIELDS, converters=CONVERTERS)

    def build(stored):
        doc = merged(stored)
        if secret.mode != "keep":  # kept as stored by the merge already (or purged)
            secret.apply((stored or {}).get("spec"), doc["spec"])
        return doc

    present = params["state"] == "present"
    want = Want("BGPConfiguration", params["name"], None, params["state"], build)
    # The file first: confd keeps its last configuration while the secret is unreadable.
    result = run_wants(module, datastore(params), [want], secret.write if present else None)
    result["secret_changed"] = secret.changed
    return result


def main():
    argument_spec = dict(
        name=dict(type="str", default="default"),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        purge=dict(type="bool", default=False),
        as_number=dict(type="str"),
        node_to_node_mesh_enabled=dict(type="bool"),
        log_severity_screen=dict(type="str", choices=["Trace", "Debug", "Info", "Warning", "Error", "Fatal"]),
        listen_port=dict(type="int"),
        bind_mode=dict(type="str", choices=["None", "NodeIP"]),
        node_mesh_max_restart_time=dict(type="str"),
        service_cluster_ips=dict(type="list", elements="str"),
        service_external_ips=dict(type="list", elements="str"),
        service_load_balancer_ips=dict(type="list", elements="str"),
        communities=dict(type="list", elements="dict", options=dict(
            name=dict(type="str", required=True),
            value=dict(type="str", required=True),
        )),
        prefix_advertisements=dict(type="list", elements="dict", options=dict(
            cidr=dict(type="str", required=True),
            communities=dict(type="list", elements="str", required=True),
        )),
        ignored_interfaces=dict(type="list", elements="str"),
        **password_options("node_mesh_password"),
    )
    run_module(argument_spec, handle,
               option_paths=option_paths(FIELDS, **{"spec.nodeMeshPassword": "node_mesh_password_secret"}))


if __name__ == "__main__":
    main()
