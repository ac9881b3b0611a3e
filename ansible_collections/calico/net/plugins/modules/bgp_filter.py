#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: calico.net contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""calico.net.bgp_filter: declare a Calico BGPFilter (typed rule options -> spec, then the
shared read/compare/apply manager)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: bgp_filter
short_description: Manage Calico BGP filters (import and export rules per peer)
version_added: 0.1.0
description:
  - Create, update or delete a Calico C(BGPFilter) - ordered import and export rules, per address
    family, that BGP peers apply when they name the filter in their C(filters)
    (O(calico.net.bgp_peer#module:filters)).
  - Rules are evaluated in order and the first that matches decides (C(Accept) or C(Reject)); a route
    no rule matches goes on to Calico's own import and export rules, as in Calico.
  - The module declares the whole filter - rule lists left out are unset, and settings made outside
    Ansible are replaced.
  - Changes are detected by meaning (C(198.18.233.0/24) equals C(198.18.233.7/24) as Calico normalises it).
author:
  - calico.net maintainers (@calico-net)
extends_documentation_fragment:
  - calico.net.etcd
  - calico.net.attributes
  - calico.net.metadata
options:
  name:
    description: Name of the filter resource (C(metadata.name)), the name peers list in C(filters).
    type: str
    required: true
  state:
    description: Whether the filter should exist.
    type: str
    choices: [present, absent]
    default: present
  export_v4:
    description: Rules for IPv4 routes sent to the peer (C(spec.exportV4)), in order.
    type: list
    elements: dict
    suboptions: &rule
      action:
        description: What a matching route gets (C(action)).
        type: str
        required: true
        choices: [Accept, Reject]
      cidr:
        description: The prefix the route is compared with (C(cidr)), of the rule's family. Set with O(export_v4[].match_operator).
        type: str
      match_operator:
        description:
          - How the route is compared with O(export_v4[].cidr) (C(matchOperator)) - C(Equal) the same prefix,
            C(NotEqual) any other, C(In) the prefix or one inside it, C(NotIn) none of those.
        type: str
        choices: [Equal, NotEqual, In, NotIn]
      prefix_length:
        description:
          - With C(In) or C(NotIn), only routes whose prefix length is in this range (C(prefixLength)).
            Left-out C(min) is the cidr's own length, left-out C(max) 32 (IPv4) or 128 (IPv6).
        type: dict
        suboptions:
          min:
            description: Shortest prefix length matched.
            type: int
          max:
            description: Longest prefix length matched.
            type: int
      source:
        description: C(RemotePeers) matches only routes learned from BGP peers, not the node's own (C(source)).
        type: str
        choices: [RemotePeers]
      interface:
        description:
          - Routes through interfaces of this name (C(interface)); C(*) is a wildcard, as in C(eth*).
        type: str
  import_v4:
    description: Rules for IPv4 routes learned from the peer (C(spec.importV4)), in order; the same rule options as O(export_v4).
    type: list
    elements: dict
    suboptions: *rule
  export_v6:
    description: Rules for IPv6 routes sent to the peer (C(spec.exportV6)), in order; the same rule options as O(export_v4).
    type: list
    elements: dict
    suboptions: *rule
  import_v6:
    description: Rules for IPv6 routes learned from the peer (C(spec.importV6)), in order; the same rule options as O(export_v4).
    type: list
    elements: dict
    suboptions: *rule
seealso:
  - module: calico.net.bgp_peer
  - module: calico.net.bgp_configuration
  - name: Calico BGPFilter reference
    description: The Calico resource this module manages.
    link: https://docs.tigera.io/calico/latest/reference/resources/bgpfilter
"""

EXAMPLES = r"""
- name: Keep one prefix off the ToR, send the rest
  calico.net.bgp_filter:
    name: no-lab-prefix
    export_v4:
      - action: Reject
        cidr: 198.18.233.0/24
        match_operator: In
        prefix_length: {min: 24, max: 32}

- name: Accept only the fabric's routes from the peer
  calico.net.bgp_filter:
    name: from-fabric
    import_v4:
      - {action: Accept, cidr: 198.18.0.0/15, match_operator: In, source: RemotePeers}
      - {action: Reject}

- name: Apply it to a peer
  calico.net.bgp_peer:
    name: tor-r1
    node_selector: rack == "r1"
    peer_ip: 198.18.0.254
    as_number: 64513
    filters: [no-lab-prefix, from-fabric]

- name: Remove a filter
  calico.net.bgp_filter:
    name: no-lab-prefix
    state: absent
"""

RETURN = r"""
resource:
  description: The BGPFilter as stored (or as it would be stored in check mode); C(null) when absent.
  returned: success
  type: dict
  sample:
    apiVersion: projectcalico.org/v3
    kind: BGPFilter
    metadata: {name: no-lab-prefix, resourceVersion: "41"}
    spec:
      exportV4:
        - {action: Reject, cidr: 198.18.233.0/24, matchOperator: In, prefixLength: {min: 24, max: 32}}
diff:
  description: The filter before and after, as YAML text, in diff mode.
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
  description:
    - On a validation failure, each problem with its Calico field path (C(spec.exportV4[0].matchOperator))
      and the module option to fix (C(export_v4[0].match_operator)).
  returned: failure
  type: list
  elements: dict
"""

import re

from ansible_collections.calico.net.plugins.module_utils.common import (
    METADATA_ARGUMENT_SPEC, ModuleError, datastore, run_module, snake_option,
)
from ansible_collections.calico.net.plugins.module_utils.manager import (
    Want, metadata_from, new_document, option_paths, run_wants,
)

try:
    from calico_net.errors import ValidationError
except ImportError:  # reported by run_module
    pass

# module option -> Calico spec field, for the four rule lists
FIELDS = dict(export_v4="exportV4", import_v4="importV4", export_v6="exportV6", import_v6="importV6")
# rule option -> Calico rule field
RULE_FIELDS = dict(action="action", cidr="cidr", match_operator="matchOperator",
                   prefix_length="prefixLength", source="source", interface="interface")
_RULE_OPTIONS = {field: option for option, field in RULE_FIELDS.items()}
OPTION_PATHS = option_paths(FIELDS)

RULE_SPEC = dict(
    action=dict(type="str", required=True, choices=["Accept", "Reject"]),
    cidr=dict(type="str"),
    match_operator=dict(type="str", choices=["Equal", "NotEqual", "In", "NotIn"]),
    prefix_length=dict(type="dict", options=dict(min=dict(type="int"), max=dict(type="int"))),
    source=dict(type="str", choices=["RemotePeers"]),
    interface=dict(type="str"),
)


def rule_document(rule):
    """One rule's options -> the Calico rule; options Ansible filled with None are left out,
    so a rule means only what was written."""
    out = {}
    for option, field in RULE_FIELDS.items():
        value = rule.get(option)
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if v is not None}
        if value is not None:
            out[field] = value
    return out


def option_for(path):
    """The module option a Calico field path comes from, rule fields included:
    `spec.exportV4[0].matchOperator` -> `export_v4[0].match_operator` (the shared mapping
    stops at the list and would leave the rule field in Calico's spelling)."""
    option = snake_option(path, OPTION_PATHS)
    if option is None:
        return None
    return re.sub(r"(\]\.)([A-Za-z]+)", lambda m: m.group(1) + _RULE_OPTIONS.get(m.group(2), m.group(2)), option)


def handle(module):
    params = module.params

    def build(stored):
        doc = new_document("BGPFilter", params["name"])
        doc["spec"] = {field: [rule_document(r) for r in params[option]]
                       for option, field in FIELDS.items() if params.get(option) is not None}
        return metadata_from(params, doc)

    want = Want("BGPFilter", params["name"], None, params["state"], build)
    try:
        return run_wants(module, datastore(params), [want])
    except ValidationError as e:
        # run_module would name the option only down to the rule list; name the rule's option
        errors = []
        for path, message in e.errors:
            item = dict(path=path, message=message)
            option = option_for(path)
            if option:
                item["option"] = option
            errors.append(item)
        options = sorted({i["option"] for i in errors if "option" in i})
        hint = f" (module option{'s' if len(options) > 1 else ''}: {', '.join(options)})" if options else ""
        raise ModuleError(str(e) + hint, errors=errors) from e


def main():
    argument_spec = dict(
        name=dict(type="str", required=True),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        **{option: dict(type="list", elements="dict", options=RULE_SPEC) for option in FIELDS},
        **METADATA_ARGUMENT_SPEC,
    )
    run_module(argument_spec, handle, option_paths=OPTION_PATHS)


if __name__ == "__main__":
    main()
