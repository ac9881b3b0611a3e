#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: calico.net contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""calico.net.node: set a Calico Node's BGP attributes and labels (merged into what the
agent registered, then the shared read/compare/apply manager)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: node
short_description: Manage a Calico node's BGP attributes and labels
version_added: 0.1.0
description:
  - Set the BGP attributes (AS number, addresses, route reflector cluster ID) and the labels
    of a Calico C(Node). The calico/node agent registers its Node itself; this module changes
    only what it is given and keeps everything else the agent wrote (tunnel addresses,
    orchestrator references, status).
  - A Node that does not exist yet is created with what is given.
  - Labels given are merged into the stored labels (a V(null) value removes a label), unless
    O(purge_labels=true). Node labels are what BGP peer and IP pool node selectors match.
author:
  - calico.net maintainers (@calico-net)
extends_documentation_fragment:
  - calico.net.etcd
  - calico.net.attributes
options:
  name:
    description: The node name (C(metadata.name)), the agent's C(NODENAME), by default the host name.
    type: str
    required: true
  state:
    description:
      - V(absent) deletes the Node resource and, unless O(cleanup=false), what belongs to the node,
        as C(calicoctl delete node) does - its workload endpoints, IPAM addresses (released by
        handle) and block affinities, the BGP peers with C(spec.node) naming it and its per-node
        FelixConfiguration and BGPConfiguration C(node.<name>). Stop calico/node on the host first.
    type: str
    choices: [present, absent]
    default: present
  as_number:
    description:
      - The node's own AS number (C(spec.bgp.asNumber)), overriding the cluster default.
        An empty string removes the override.
    type: str
  ipv4_address:
    description:
      - The node's IPv4 address with prefix length (C(spec.bgp.ipv4Address)), e.g. C(198.18.0.11/24).
        An empty string removes it.
    type: str
  ipv6_address:
    description: The node's IPv6 address with prefix length (C(spec.bgp.ipv6Address)). An empty string removes it.
    type: str
  route_reflector_cluster_id:
    description:
      - Make the node a route reflector with this cluster ID, an IPv4 address such as C(224.0.0.1)
        (C(spec.bgp.routeReflectorClusterID)). An empty string makes it an ordinary node again.
    type: str
  labels:
    description:
      - Labels to set on the node (C(metadata.labels)); values are strings (numbers and booleans are
        turned into text), V(null) removes a label.
    type: dict
  purge_labels:
    description: Remove stored labels that are not in O(labels).
    type: bool
    default: false
  cleanup:
    description:
      - With O(state=absent), also remove the node's endpoints, IPAM state, BGP peers and per-node
        configuration (listed in RV(cleaned)). V(false) deletes only the Node resource.
    type: bool
    default: true
seealso:
  - module: calico.net.bgp_peer
  - module: calico.net.bgp_configuration
"""

EXAMPLES = r"""
- name: Make rr1 a route reflector and label it for the BGP peer selectors
  calico.net.node:
    name: rr1
    route_reflector_cluster_id: 224.0.0.1
    labels:
      route-reflector: "true"

- name: Give node2 its own AS number and address
  calico.net.node:
    name: node2
    as_number: 64514
    ipv4_address: 198.18.0.12/24
    labels:
      rack: r2

- name: Drop the AS override and a label
  calico.net.node:
    name: node2
    as_number: ""
    labels:
      rack: null
"""

RETURN = r"""
resource:
  description: The Node as stored (or as it would be stored in check mode); C(null) when absent.
  returned: success
  type: dict
  sample:
    apiVersion: projectcalico.org/v3
    kind: Node
    metadata: {name: rr1, labels: {route-reflector: "true"}, resourceVersion: "90"}
    spec:
      bgp: {ipv4Address: 198.18.0.21/24, routeReflectorClusterID: 224.0.0.1}
cleaned:
  description:
    - With O(state=absent), what was removed besides the Node (or would be, in check mode), one
      line each, e.g. C(release IPAM handle calico.abc).
  returned: when state is absent
  type: list
  elements: str
  sample: ["delete WorkloadEndpoint default/node-3-cni-abc-eth0", "release IPAM handle calico.abc"]
diff:
  description: The node before and after, as YAML text, in diff mode.
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

from ansible_collections.calico.net.plugins.module_utils.common import datastore, run_module
from ansible_collections.calico.net.plugins.module_utils.manager import as_number, merged_handler

FIELDS = dict(
    as_number="asNumber",
    ipv4_address="ipv4Address",
    ipv6_address="ipv6Address",
    route_reflector_cluster_id="routeReflectorClusterID",
)
OPTION_PATHS = {f"spec.bgp.{field}": option for option, field in FIELDS.items()}
OPTION_PATHS.update({"metadata.labels": "labels", "metadata.name": "name"})


def cleanup_handler(base):
    """state=absent: first what belongs to the node, then the Node itself (by `base`,
    which also gives the diff), so nothing is left pointing at a deleted Node."""

    def handle(module):
        params = module.params
        if params["state"] != "absent" or not params["cleanup"]:
            return base(module)
        from calico_net.nodecleanup import clean_node, plan_node_cleanup

        ds = datastore(params)
        if module.check_mode:
            cleaned = plan_node_cleanup(params["name"], ds.client, ds, include_node=False)
        else:
            cleaned = clean_node(params["name"], ds.client, ds, include_node=False)
        result = base(module)
        result["cleaned"] = cleaned
        result["changed"] = bool(result.get("changed")) or bool(cleaned)
        return result

    return handle


def main():
    argument_spec = dict(
        name=dict(type="str", required=True),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        as_number=dict(type="str"),
        ipv4_address=dict(type="str"),
        ipv6_address=dict(type="str"),
        route_reflector_cluster_id=dict(type="str"),
        labels=dict(type="dict"),
        purge_labels=dict(type="bool", default=False),
        cleanup=dict(type="bool", default=True),
    )
    handler = merged_handler("Node", FIELDS, converters=dict(asNumber=as_number),
                             nested={field: "bgp" for field in FIELDS.values()})
    run_module(argument_spec, cleanup_handler(handler), option_paths=OPTION_PATHS)


if __name__ == "__main__":
    main()
