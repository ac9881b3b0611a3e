#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: calico.net contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""calico.net.resource_info: read Calico v3 resources, like `calicoctl get -o yaml`
(one kind, optionally one name, a namespace and a label selector)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: resource_info
short_description: Read Calico v3 resources, like calicoctl get
version_added: 0.1.0
description:
  - Return the stored Calico resources of one kind, like C(calicoctl get <kind> -o yaml) -
    all of them, one by name, those of a namespace, or those whose labels match a Calico selector.
author:
  - calico.net maintainers (@calico-net)
extends_documentation_fragment:
  - calico.net.etcd
  - calico.net.attributes.info
options:
  kind:
    description:
      - The kind, by any name calicoctl accepts (C(IPPool), C(ippools), C(pool), C(gnp), C(networkpolicy), ...).
    type: str
    required: true
  name:
    description: Only the resource of this name. A name that does not exist gives an empty list, not an error.
    type: str
  namespace:
    description:
      - For namespaced kinds, only this namespace. Left out, resources of all namespaces are returned
        (like C(calicoctl get -A)). Ignored for cluster-wide kinds.
    type: str
  selector:
    description:
      - Only resources whose labels match this Calico selector, e.g. C(tier == "frontend" && has(env)).
    type: str
seealso:
  - module: calico.net.resource
"""

EXAMPLES = r"""
- name: All IP pools
  calico.net.resource_info:
    kind: IPPool
  register: pools

- name: Show their CIDRs
  ansible.builtin.debug:
    msg: "{{ pools.resources | map(attribute='spec.cidr') | list }}"

- name: The policies of one namespace that carry a label
  calico.net.resource_info:
    kind: networkpolicy
    namespace: shop
    selector: has(owner)

- name: One node
  calico.net.resource_info:
    kind: node
    name: node1
  register: node1
"""

RETURN = r"""
resources:
  description: The matching resources, as stored (with C(metadata.resourceVersion)), ordered by namespace and name.
  returned: success
  type: list
  elements: dict
  sample:
    - apiVersion: projectcalico.org/v3
      kind: IPPool
      metadata: {name: pool-a, resourceVersion: "3", uid: 5cc8693b-008e-4953-9459-1338c495c25b, creationTimestamp: "2026-01-31T12:00:00Z"}
      spec: {cidr: 198.19.0.0/16, ipipMode: CrossSubnet, natOutgoing: true}
kind:
  description: The kind's canonical name.
  returned: success
  type: str
  sample: IPPool
"""

from ansible_collections.calico.net.plugins.module_utils.common import ModuleError, datastore, run_module

try:
    from calico_net.datastore import ResourceNotFound
    from calico_net.model import resolve_kind
    from calico_net.model.selector import SelectorError, parse_selector
except ImportError:  # reported by run_module
    pass


def handle(module):
    params = module.params
    info = resolve_kind(params["kind"])
    ns = params.get("namespace") if info.namespaced else None
    selector = None
    if params.get("selector") is not None:
        try:
            selector = parse_selector(params["selector"])
        except SelectorError as e:
            raise ModuleError(f'selector "{params["selector"]}" is not valid: {e}') from e
    store = datastore(params)
    if params.get("name"):
        if info.namespaced and not ns:
            docs, _revision = store.list(info.kind)
            docs = [d for d in docs if d["metadata"]["name"] == params["name"]]
        else:
            try:
                docs = [store.get(info.kind, params["name"], ns)]
            except ResourceNotFound:
                docs = []
    else:
        docs, _revision = store.list(info.kind, ns)
    if selector is not None:
        docs = [d for d in docs if selector.evaluate((d.get("metadata") or {}).get("labels") or {})]
    docs.sort(key=lambda d: ((d["metadata"].get("namespace") or ""), d["metadata"]["name"]))
    return dict(changed=False, resources=docs, kind=info.kind)


def main():
    argument_spec = dict(
        kind=dict(type="str", required=True),
        name=dict(type="str"),
        namespace=dict(type="str"),
        selector=dict(type="str"),
    )
    run_module(argument_spec, handle)


if __name__ == "__main__":
    main()
