#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: calico.net contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""calico.net.profile: declare a Calico Profile (rules and labels to apply -> spec,
then the shared read/compare/apply manager)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: profile
short_description: Manage Calico profiles
version_added: 0.1.0
description:
  - Create, update or delete a Calico C(Profile) - rules and labels shared by every endpoint
    that lists the profile in its C(profiles). Profile rules apply after all policies.
  - The module declares the whole profile - options left out are empty, and settings made
    outside Ansible are replaced.
author:
  - calico.net maintainers (@calico-net)
extends_documentation_fragment:
  - calico.net.etcd
  - calico.net.attributes
  - calico.net.rules
  - calico.net.metadata
options:
  name:
    description: Name of the profile (C(metadata.name)).
    type: str
    required: true
  state:
    description: Whether the profile should exist.
    type: str
    choices: [present, absent]
    default: present
  labels_to_apply:
    description:
      - Labels every endpoint with this profile gets, for policy selectors (C(spec.labelsToApply)).
        Values are strings; numbers and booleans are turned into their text.
    type: dict
seealso:
  - module: calico.net.host_endpoint
  - module: calico.net.network_policy
"""

EXAMPLES = r"""
- name: A profile that lets its members talk to each other
  calico.net.profile:
    name: shop
    labels_to_apply:
      app: shop
    ingress:
      - action: Allow
        source: {selector: app == "shop"}
    egress:
      - action: Allow
"""

RETURN = r"""
resource:
  description: The profile as stored (or as it would be stored in check mode); C(null) when absent.
  returned: success
  type: dict
  sample:
    apiVersion: projectcalico.org/v3
    kind: Profile
    metadata: {name: shop, resourceVersion: "5"}
    spec:
      labelsToApply: {app: shop}
      ingress: [{action: Allow, source: {selector: app == "shop"}}]
      egress: [{action: Allow}]
diff:
  description: The profile before and after, as YAML text, in diff mode.
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
from ansible_collections.calico.net.plugins.module_utils.manager import declared_handler, label_values, option_paths

FIELDS = dict(ingress="ingress", egress="egress", labels_to_apply="labelsToApply")


def main():
    argument_spec = dict(
        name=dict(type="str", required=True),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        ingress=dict(type="list", elements="dict"),
        egress=dict(type="list", elements="dict"),
        labels_to_apply=dict(type="dict"),
        **METADATA_ARGUMENT_SPEC,
    )
    handler = declared_handler("Profile", FIELDS, converters=dict(labelsToApply=label_values))
    run_module(argument_spec, handler, option_paths=option_paths(FIELDS))


if __name__ == "__main__":
    main()
