#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: calico.net contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""calico.net.network_policy: declare a namespaced Calico NetworkPolicy (typed options
and camelCase rules -> spec, then the shared read/compare/apply manager)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: network_policy
short_description: Manage Calico network policies of one namespace
version_added: 0.1.0
description:
  - Create, update or delete a Calico C(NetworkPolicy) - ordered allow/deny rules for the
    workload endpoints of one namespace that its O(selector) picks.
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
  namespace:
    description: Namespace of the policy and of the endpoints it applies to (C(metadata.namespace)).
    type: str
    default: default
  state:
    description: Whether the policy should exist.
    type: str
    choices: [present, absent]
    default: present
  order:
    description:
      - Policies apply in increasing order (C(spec.order)); a policy without order applies last.
    type: float
  selector:
    description: The endpoints of the namespace the policy applies to (C(spec.selector)). Calico's default is C(all()).
    type: str
  types:
    description:
      - Which directions the policy governs (C(spec.types)). Left out, Calico uses C(Ingress), plus
        C(Egress) when there are egress rules. A direction listed without rules denies all its traffic.
    type: list
    elements: str
    choices: [Ingress, Egress]
  service_account_selector:
    description:
      - Only endpoints whose service account matches (C(spec.serviceAccountSelector)), as Calico
        matches it - ANDed with O(selector), over the account's labels (C(pcsa.)-prefixed, from the
        C(ksa.<namespace>.<name>) profile the endpoint lists).
    type: str
seealso:
  - module: calico.net.global_network_policy
  - module: calico.net.network_set
  - name: Calico NetworkPolicy reference
    description: Fields and semantics of Calico's namespaced policy.
    link: https://docs.tigera.io/calico/latest/reference/resources/networkpolicy
"""

EXAMPLES = r"""
- name: Backends accept the frontends on 8080
  calico.net.network_policy:
    name: backend-from-frontend
    namespace: shop
    order: 200
    selector: tier == "backend"
    types: [Ingress]
    ingress:
      - action: Allow
        protocol: TCP
        source:
          selector: tier == "frontend"
        destination:
          ports: [8080]

- name: The database talks to nobody but DNS
  calico.net.network_policy:
    name: database-egress
    namespace: shop
    selector: tier == "database"
    types: [Egress]
    egress:
      - action: Allow
        protocol: UDP
        destination: {selector: k8s-app == "kube-dns", ports: [53]}
"""

RETURN = r"""
resource:
  description: The policy as stored (or as it would be stored in check mode); C(null) when absent.
  returned: success
  type: dict
  sample:
    apiVersion: projectcalico.org/v3
    kind: NetworkPolicy
    metadata: {name: backend-from-frontend, namespace: shop, resourceVersion: "51"}
    spec:
      order: 200
      selector: tier == "backend"
      types: [Ingress]
      ingress:
        - action: Allow
          protocol: TCP
          source: {selector: tier == "frontend"}
          destination: {ports: [8080]}
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
  sample:
    - path: spec.ingress[0].destination.ports
      message: ports require protocol TCP, UDP, SCTP or UDPLite (protocol is not set)
      option: ingress[0].destination.ports
"""

from ansible_collections.calico.net.plugins.module_utils.common import METADATA_ARGUMENT_SPEC, run_module
from ansible_collections.calico.net.plugins.module_utils.manager import declared_handler, number, option_paths

FIELDS = dict(
    order="order",
    selector="selector",
    types="types",
    ingress="ingress",
    egress="egress",
    service_account_selector="serviceAccountSelector",
)


def main():
    argument_spec = dict(
        name=dict(type="str", required=True),
        namespace=dict(type="str", default="default"),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        order=dict(type="float"),
        selector=dict(type="str"),
        types=dict(type="list", elements="str", choices=["Ingress", "Egress"]),
        ingress=dict(type="list", elements="dict"),
        egress=dict(type="list", elements="dict"),
        service_account_selector=dict(type="str"),
        **METADATA_ARGUMENT_SPEC,
    )
    handler = declared_handler("NetworkPolicy", FIELDS, namespaced=True, converters=dict(order=number))
    run_module(argument_spec, handler, option_paths=option_paths(FIELDS))


if __name__ == "__main__":
    main()
