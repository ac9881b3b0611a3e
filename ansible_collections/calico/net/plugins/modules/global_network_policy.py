#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: calico.net contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""calico.net.global_network_policy: declare a Calico GlobalNetworkPolicy (typed options
and camelCase rules -> spec, then the shared read/compare/apply manager)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: global_network_policy
short_description: Manage Calico global network policies
version_added: 0.1.0
description:
  - Create, update or delete a Calico C(GlobalNetworkPolicy) - ordered allow/deny rules for
    the workload endpoints of every namespace, and for host endpoints, that its O(selector) picks.
  - Workload endpoints carry the label C(projectcalico.org/namespace), so a global policy can
    pick the endpoints of some namespaces only; C(global()) in O(namespace_selector) picks
    non-namespaced resources.
  - The module declares the whole policy - options left out take Calico's defaults and settings
    made outside Ansible are replaced.
  - Changes are detected by meaning - rule order matters, but C(types) left out equals the types
    Calico derives from the rules, ports C(80) and C("80") are the same, and so are nets in any order.
  - calico.net never stores a policy its dataplane would not enforce. The rule keys C(http) and
    C(services) are refused with the field path and C(not supported by calico.net yet), and nothing
    is written.
author:
  - calico.net maintainers (@calico-net)
extends_documentation_fragment:
  - calico.net.etcd
  - calico.net.attributes
  - calico.net.rules
  - calico.net.metadata
options:
  name:
    description: Name of the policy (C(metadata.name)).
    type: str
    required: true
  state:
    description: Whether the policy should exist.
    type: str
    choices: [present, absent]
    default: present
  order:
    description: Policies apply in increasing order (C(spec.order)); a policy without order applies last.
    type: float
  selector:
    description: The endpoints the policy applies to (C(spec.selector)). Calico's default is C(all()).
    type: str
  namespace_selector:
    description: Only endpoints of the namespaces this selector picks (C(spec.namespaceSelector)).
    type: str
  service_account_selector:
    description:
      - Only endpoints whose service account matches (C(spec.serviceAccountSelector)), as Calico
        matches it - ANDed with O(selector), over the account's labels (C(pcsa.)-prefixed, from the
        C(ksa.<namespace>.<name>) profile the endpoint lists).
    type: str
  types:
    description:
      - Which directions the policy governs (C(spec.types)). Left out, Calico uses C(Ingress), plus
        C(Egress) when there are egress rules. A direction listed without rules denies all its traffic.
    type: list
    elements: str
    choices: [Ingress, Egress]
  do_not_track:
    description:
      - Apply to untracked traffic, before connection tracking (C(spec.doNotTrack)); host endpoints only.
        Needs O(apply_on_forward=true), as in Calico. An Allow does not create connection state, so the
        replies need a rule of their own.
    type: bool
  pre_dnat:
    description:
      - Apply before DNAT (C(spec.preDNAT)); host endpoints only, ingress only (no egress rules).
        Needs O(apply_on_forward=true), as in Calico.
    type: bool
  apply_on_forward:
    description:
      - Apply to traffic forwarded through host endpoints too (C(spec.applyOnForward)), in Felix's
        order with workload policy.
    type: bool
seealso:
  - module: calico.net.network_policy
  - module: calico.net.global_network_set
  - module: calico.net.host_endpoint
"""

EXAMPLES = r"""
- name: Default deny for every workload, DNS allowed out
  calico.net.global_network_policy:
    name: default-deny
    order: 2000
    selector: projectcalico.org/namespace != "kube-system"
    types: [Ingress, Egress]
    egress:
      - action: Allow
        protocol: UDP
        destination:
          selector: k8s-app == "kube-dns"
          ports: [53]

- name: Keep SSH open on host endpoints from the management network
  calico.net.global_network_policy:
    name: host-ssh
    order: 10
    selector: has(host-endpoint)
    ingress:
      - action: Allow
        protocol: TCP
        source: {nets: [198.18.0.0/24]}
        destination: {ports: [22]}
"""

RETURN = r"""
resource:
  description: The policy as stored (or as it would be stored in check mode); C(null) when absent.
  returned: success
  type: dict
  sample:
    apiVersion: projectcalico.org/v3
    kind: GlobalNetworkPolicy
    metadata: {name: default-deny, resourceVersion: "70"}
    spec: {order: 2000, selector: all(), types: [Ingress, Egress]}
diff:
  description: The policy before and after, as YAML text, in diff mode.
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
from ansible_collections.calico.net.plugins.module_utils.manager import declared_handler, number, option_paths

FIELDS = dict(
    order="order",
    selector="selector",
    namespace_selector="namespaceSelector",
    service_account_selector="serviceAccountSelector",
    types="types",
    ingress="ingress",
    egress="egress",
    do_not_track="doNotTrack",
    pre_dnat="preDNAT",
    apply_on_forward="applyOnForward",
)


def main():
    argument_spec = dict(
        name=dict(type="str", required=True),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        order=dict(type="float"),
        selector=dict(type="str"),
        namespace_selector=dict(type="str"),
        service_account_selector=dict(type="str"),
        types=dict(type="list", elements="str", choices=["Ingress", "Egress"]),
        ingress=dict(type="list", elements="dict"),
        egress=dict(type="list", elements="dict"),
        do_not_track=dict(type="bool"),
        pre_dnat=dict(type="bool"),
        apply_on_forward=dict(type="bool"),
        **METADATA_ARGUMENT_SPEC,
    )
    handler = declared_handler("GlobalNetworkPolicy", FIELDS, converters=dict(order=number))
    run_module(argument_spec, handler, option_paths=option_paths(FIELDS))


if __name__ == "__main__":
    main()
