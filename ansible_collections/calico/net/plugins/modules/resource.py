#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: calico.net contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""calico.net.resource: any Calico v3 document(s), like `calicoctl apply` / `delete`
(documents read from `definition` or `src`, then the shared manager)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: resource
short_description: Apply or delete any Calico v3 resource, like calicoctl apply
version_added: 0.1.0
description:
  - Apply (create or replace) or delete Calico v3 resources given as documents, the way
    C(calicoctl apply -f) and C(calicoctl delete -f) do. Every kind Calico's etcd datastore
    holds is accepted - C(IPPool), C(BGPConfiguration), C(BGPPeer), C(FelixConfiguration),
    C(Profile), C(NetworkPolicy), C(GlobalNetworkPolicy), C(NetworkSet), C(GlobalNetworkSet),
    C(HostEndpoint), C(WorkloadEndpoint) and C(Node).
  - Every document is validated before anything is written; all documents to create or replace
    are written in one etcd transaction, so either all of them land or none does. With
    O(state=absent) the documents are deleted one by one.
  - Documents are validated as C(calicoctl apply) validates them. Fields the dataplane cannot enforce
    yet - rule C(http) and C(services), host endpoints without C(interfaceName), IPAMConfiguration
    C(kubeVirtVMAddressPersistence) and a non-zero C(ipCooldownSeconds) - are refused with their field
    path and C(not supported by calico.net yet), and a workload endpoint's C(ipNetworks) must be
    single addresses (C(/32), C(/128)).
  - Documents are compared with what is stored by meaning (defaults filled in, order ignored
    where Calico ignores it), so an unchanged manifest reports no change.
  - Each document replaces the stored resource as a whole, as C(calicoctl apply) does.
author:
  - calico.net maintainers (@calico-net)
extends_documentation_fragment:
  - calico.net.etcd
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff mode.
    support: full
  idempotent:
    description: When run twice in a row with the same arguments, the second run reports no change.
    support: full
options:
  definition:
    description:
      - The resource document (a mapping with C(apiVersion), C(kind), C(metadata) and C(spec)),
        a list of documents, or YAML/JSON text of one or more documents (a C(List) kind is expanded).
      - Mutually exclusive with O(src).
    type: raw
    aliases: [resource_definition]
  src:
    description:
      - Path of a YAML or JSON manifest B(on the managed host), as read by C(calicoctl -f).
      - To use a file from the controller, pass O(definition) with C(lookup('file', ...)) or
        C(lookup('template', ...)) instead.
    type: path
  kind:
    description:
      - Kind of the resource to delete when O(state=absent) and no documents are given; any name
        calicoctl accepts (C(GlobalNetworkPolicy), C(gnp), C(ippools), ...).
    type: str
  name:
    description: Name of the resource to delete when O(state=absent) and no documents are given.
    type: str
  namespace:
    description:
      - Namespace for namespaced kinds (C(NetworkPolicy), C(NetworkSet), C(WorkloadEndpoint)) whose
        documents do not set C(metadata.namespace), like C(calicoctl -n). Default C(default).
      - A document that names another namespace is refused.
    type: str
  state:
    description:
      - V(present) creates or replaces the resources, V(absent) deletes them (only their kind,
        name and namespace are read).
    type: str
    choices: [present, absent]
    default: present
seealso:
  - module: calico.net.resource_info
  - name: Calico resource reference
    description: The Calico v3 API resources these documents describe.
    link: https://docs.tigera.io/calico/latest/reference/resources/overview
"""

EXAMPLES = r"""
- name: Apply a manifest kept next to the playbook
  calico.net.resource:
    definition: "{{ lookup('file', 'calico/policies.yaml') }}"

- name: Apply one document written inline
  calico.net.resource:
    definition:
      apiVersion: projectcalico.org/v3
      kind: GlobalNetworkSet
      metadata:
        name: upstream-dns
        labels:
          role: dns
      spec:
        nets: [198.18.53.0/24]

- name: Apply a manifest that already sits on the managed host
  calico.net.resource:
    src: /etc/calico/manifests/bgp.yaml

- name: Delete a policy by kind and name
  calico.net.resource:
    kind: NetworkPolicy
    namespace: shop
    name: allow-frontend
    state: absent
"""

RETURN = r"""
resources:
  description:
    - The documents as stored (with C(metadata.resourceVersion)), or as they would be stored when
      check mode predicts a change, in input order. C(null) entries for deleted resources.
  returned: success
  type: list
  elements: dict
  sample:
    - apiVersion: projectcalico.org/v3
      kind: GlobalNetworkSet
      metadata:
        name: upstream-dns
        labels:
          role: dns
        resourceVersion: "17"
      spec:
        nets: [198.18.53.0/24]
diff:
  description:
    - Before and after as YAML text, in diff mode. With several documents, each is headed by a
      C(# Kind name) comment.
  returned: when diff mode is on
  type: dict
  contains:
    before:
      description: The stored documents (empty when none existed).
      type: str
      returned: always
    after:
      description: The documents after the change (empty when deleted).
      type: str
      returned: always
errors:
  description: On a validation failure, each problem with its Calico field path.
  returned: failure
  type: list
  elements: dict
  sample:
    - path: spec.ingress[0].protocol
      message: '"TCPX" is not a protocol (TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or 1-255)'
"""

from ansible_collections.calico.net.plugins.module_utils.common import ModuleError, datastore, run_module
from ansible_collections.calico.net.plugins.module_utils.manager import ResourceManager, Want

try:
    from calico_net.errors import UnknownKindError, ValidationError
    from calico_net.model import parse_documents, parse_resource, resolve_kind
except ImportError:  # reported by run_module
    pass


def read_documents(params):
    definition, src = params.get("definition"), params.get("src")
    if src is not None:
        try:
            with open(src, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise ModuleError(f"cannot read src {src}: {e.strerror}") from e
        return parse_documents(text)
    if isinstance(definition, str):
        return parse_documents(definition)
    if isinstance(definition, dict):
        definition = [definition]
    if isinstance(definition, list):
        # Let parse_documents expand List kinds and report non-mappings.
        docs = []
        for item in definition:
            docs.extend(parse_documents_obj(item))
        return docs
    raise ModuleError("definition must be a mapping, a list of mappings or YAML text")


def parse_documents_obj(item):
    if isinstance(item, dict):
        kind = item.get("kind")
        if isinstance(kind, str) and kind.endswith("List") and isinstance(item.get("items"), list):
            return list(item["items"])
        return [item]
    raise ModuleError(f"definition: every document must be a mapping, found {type(item).__name__}")


def identity(doc, default_namespace):
    """(kind, name, namespace) of a document, as the manager needs it; the document's
    namespace is filled from `namespace` for namespaced kinds, like `calicoctl -n`."""
    kind = doc.get("kind")
    md = doc.get("metadata")
    if not isinstance(kind, str) or not isinstance(md, dict) or not isinstance(md.get("name"), str):
        raise ValidationError(kind if isinstance(kind, str) else None, None,
                              [("", "a document needs kind and metadata.name")])
    try:
        info = resolve_kind(kind)
    except UnknownKindError:
        parse_resource(doc)  # raises with Calico's "did you mean" hint and the field path
        raise
    ns = None
    if info.namespaced:
        ns = md.get("namespace")
        if ns and default_namespace and ns != default_namespace:
            raise ModuleError(f'{info.kind} "{md["name"]}": metadata.namespace "{ns}" does not match '
                              f'namespace "{default_namespace}"')
        ns = ns or default_namespace or "default"
    return info.kind, md["name"], ns


def handle(module):
    params = module.params
    state = params["state"]
    wants = []
    if params.get("definition") is None and params.get("src") is None:
        if state == "present":
            raise ModuleError("state=present needs definition or src")
        if not params.get("kind") or not params.get("name"):
            raise ModuleError("state=absent needs definition, src, or kind and name")
        info = resolve_kind(params["kind"])
        ns = (params.get("namespace") or "default") if info.namespaced else None
        wants.append(Want(info.kind, params["name"], ns, "absent"))
    else:
        docs = read_documents(params)
        if not docs:
            raise ModuleError("no resources found in the input")
        for doc in docs:
            if not isinstance(doc, dict):
                raise ModuleError("every document must be a mapping")
            kind, name, ns = identity(doc, params.get("namespace"))
            if ns is not None:
                doc = dict(doc, metadata=dict(doc["metadata"], namespace=ns))

            def build(stored, doc=doc):
                return doc

            wants.append(Want(kind, name, ns, state, build))
    manager = ResourceManager(datastore(params), check_mode=module.check_mode, diff=module._diff)
    return manager.run(wants)


def main():
    argument_spec = dict(
        definition=dict(type="raw", aliases=["resource_definition"]),
        src=dict(type="path"),
        kind=dict(type="str"),
        name=dict(type="str"),
        namespace=dict(type="str"),
        state=dict(type="str", choices=["present", "absent"], default="present"),
    )
    run_module(argument_spec, handle, mutually_exclusive=[("definition", "src")])


if __name__ == "__main__":
    main()
