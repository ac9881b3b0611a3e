#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: calico.net contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""calico.net.network_set: declare a namespaced Calico NetworkSet (nets and labels,
then the shared read/compare/apply manager)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: network_set
short_description: Manage Calico network sets of one namespace
version_added: 0.1.0
description:
  - Create, update or delete a Calico C(NetworkSet) - labelled networks of one namespace that
    the selectors in policy rules can match, like endpoints.
  - The module declares the whole set. The order of O(nets) does not matter.
author:
  - calico.net maintainers (@calico-net)
extends_documentation_fragment:
  - calico.net.etcd
  - calico.net.attributes
  - calico.net.metadata
options:
  name:
    description: Name of the set (C(metadata.name)).
    type: str
    required: true
  namespace:
    description: Namespace of the set (C(metadata.namespace)).
    type: str
    default: default
  state:
    description: Whether the set should exist.
    type: str
    choices: [present, absent]
    default: present
  nets:
    description: The networks (CIDRs or addresses) of the set (C(spec.nets)).
    type: list
    elements: str
seealso:
  - module: calico.net.global_network_set
  - module: calico.net.network_policy
"""

EXAMPLES = r"""
- name: The payment provider's networks, for the shop's egress policy
  calico.net.network_set:
    name: payment-provider
    namespace: shop
    labels:
      external: payment
    nets:
      - 198.18.200.0/24
      - 198.18.201.10
"""

RETURN = r"""
resource:
  description: The network set as stored (or as it would be stored in check mode); C(null) when absent.
  returned: success
  type: dict
  sample:
    apiVersion: projectcalico.org/v3
    kind: NetworkSet
    metadata: {name: payment-provider, namespace: shop, labels: {external: payment}, resourceVersion: "9"}
    spec: {nets: [198.18.200.0/24, 198.18.201.10]}
diff:
  description: The set before and after, as YAML text, in diff mode.
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

FIELDS = dict(nets="nets")


def main():
    argument_spec = dict(
        name=dict(type="str", required=True),
        namespace=dict(type="str", default="default"),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        nets=dict(type="list", elements="str"),
        **METADATA_ARGUMENT_SPEC,
    )
    run_module(argument_spec, declared_handler("NetworkSet", FIELDS, namespaced=True),
               option_paths=option_paths(FIELDS))


if __name__ == "__main__":
    main()
