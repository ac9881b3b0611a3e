#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: calico.net contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""calico.net.host_endpoint: declare a Calico HostEndpoint (typed options -> spec, then
the shared read/compare/apply manager)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: host_endpoint
short_description: Manage Calico host endpoints
version_added: 0.1.0
description:
  - Create, update or delete a Calico C(HostEndpoint) - a host's interface that global network
    policy applies to, picked by its labels.
  - calico.net never stores an endpoint its dataplane would not program. One found by O(expected_ips)
    alone, without O(interface_name), is refused with the field path C(spec.interfaceName) and
    C(not supported by calico.net yet), and nothing is written.
  - The module declares the whole endpoint. The order of O(expected_ips) and O(ports) does not
    matter; the order of O(profiles) does (they apply in order).
  - Mind the failsafe ports (C(failsafe_inbound_host_ports) of M(calico.net.felix_configuration))
    before giving a host's main interface a deny-by-default policy.
author:
  - calico.net maintainers (@calico-net)
extends_documentation_fragment:
  - calico.net.etcd
  - calico.net.attributes
  - calico.net.metadata
options:
  name:
    description: Name of the endpoint (C(metadata.name)).
    type: str
    required: true
  state:
    description: Whether the endpoint should exist.
    type: str
    choices: [present, absent]
    default: present
  node:
    description: The node (host) the interface belongs to (C(spec.node)). Required when O(state=present).
    type: str
  interface_name:
    description:
      - The interface (C(spec.interfaceName)). calico.net needs it whenever the endpoint is present;
        Calico would accept O(expected_ips) instead.
      - C(*) is Calico's all-interfaces host endpoint - traffic to and from the host on every
        interface that is neither a named host endpoint's nor a workload's, failsafe ports first.
    type: str
  expected_ips:
    description:
      - The addresses the interface has (C(spec.expectedIPs)); used by policy rules that select this
        endpoint.
      - B(Refused today) on its own. Calico finds an endpoint by its O(expected_ips) alone when
        O(interface_name) is left out; calico.net refuses that with the field path C(spec.interfaceName)
        and C(not supported by calico.net yet). Give O(interface_name) as well.
    type: list
    elements: str
  profiles:
    description: Profiles applied to the endpoint, in order (C(spec.profiles)).
    type: list
    elements: str
  ports:
    description: Named ports that policy rules can refer to by name (C(spec.ports)).
    type: list
    elements: dict
    suboptions:
      name:
        description: The port's name.
        type: str
        required: true
      protocol:
        description: C(TCP), C(UDP) or C(SCTP).
        type: str
        required: true
      port:
        description: The port number.
        type: int
        required: true
seealso:
  - module: calico.net.global_network_policy
  - module: calico.net.felix_configuration
"""

EXAMPLES = r"""
- name: Protect node1's uplink
  calico.net.host_endpoint:
    name: node1-eth0
    node: node1
    interface_name: eth0
    expected_ips: [198.18.0.11]
    labels:
      host-endpoint: uplink
      rack: r1
    ports:
      - {name: ssh, protocol: TCP, port: 22}
"""

RETURN = r"""
resource:
  description: The host endpoint as stored (or as it would be stored in check mode); C(null) when absent.
  returned: success
  type: dict
  sample:
    apiVersion: projectcalico.org/v3
    kind: HostEndpoint
    metadata: {name: node1-eth0, labels: {host-endpoint: uplink}, resourceVersion: "14"}
    spec: {node: node1, interfaceName: eth0, expectedIPs: [198.18.0.11]}
diff:
  description: The endpoint before and after, as YAML text, in diff mode.
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
from ansible_collections.calico.net.plugins.module_utils.manager import declared_handler, option_paths

FIELDS = dict(
    node="node",
    interface_name="interfaceName",
    expected_ips="expectedIPs",
    profiles="profiles",
    ports="ports",
)


def main():
    argument_spec = dict(
        name=dict(type="str", required=True),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        node=dict(type="str"),
        interface_name=dict(type="str"),
        expected_ips=dict(type="list", elements="str"),
        profiles=dict(type="list", elements="str"),
        ports=dict(type="list", elements="dict", options=dict(
            name=dict(type="str", required=True),
            protocol=dict(type="str", required=True),
            port=dict(type="int", required=True),
        )),
        **METADATA_ARGUMENT_SPEC,
    )
    run_module(argument_spec, declared_handler("HostEndpoint", FIELDS), option_paths=option_paths(FIELDS),
               required_if=[("state", "present", ["node"])])


if __name__ == "__main__":
    main()
