#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: calico.net contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""calico.net.ip_pool: declare a Calico IPPool (typed options -> spec, then the shared
read/compare/apply manager)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ip_pool
short_description: Manage Calico IP pools
version_added: 0.1.0
description:
  - Create, update or delete a Calico C(IPPool), the range that workload addresses are
    allocated from in blocks of 2^(32 - O(block_size)) addresses.
  - The module declares the whole pool - options left out take Calico's defaults, and
    settings made outside Ansible are replaced.
  - Changes are detected by meaning, not text. For example a pool declared without
    O(block_size) equals a stored pool that spells out Calico's default C(blockSize=26).
  - The pool is refused when it overlaps another enabled pool.
author:
  - calico.net maintainers (@calico-net)
extends_documentation_fragment:
  - calico.net.etcd
  - calico.net.attributes
  - calico.net.metadata
options:
  name:
    description: Name of the pool (C(metadata.name)).
    type: str
    required: true
  state:
    description: Whether the pool should exist.
    type: str
    choices: [present, absent]
    default: present
  cidr:
    description:
      - The pool's network (C(spec.cidr)), for example C(198.19.0.0/16) or C(fd00:198:19::/48).
      - Required when O(state=present).
    type: str
  block_size:
    description:
      - Prefix length of the blocks the pool is cut into (C(spec.blockSize)).
      - Calico's default is 26 for IPv4 (20-32 allowed) and 122 for IPv6 (116-128).
    type: int
  ipip_mode:
    description:
      - When to encapsulate workload traffic in IP-in-IP (C(spec.ipipMode)). Calico's default is C(Never).
      - Enforced - calico/node routes other nodes' blocks of the pool through C(tunl0) (V(Always)), or
        only those of nodes outside its own subnet (V(CrossSubnet) - a node in the same subnet, by its
        C(spec.bgp.ipv4Address) prefix, is reached by a plain route over the underlay).
      - IPv4 pools only; at most one of O(ipip_mode) and O(vxlan_mode) may be other than V(Never).
    type: str
    choices: [Never, Always, CrossSubnet]
  vxlan_mode:
    description:
      - When to encapsulate workload traffic in VXLAN (C(spec.vxlanMode)). Calico's default is C(Never).
      - Enforced - calico/node routes other nodes' blocks of the pool through C(vxlan.calico)
        (C(vxlan-v6.calico) for IPv6; VNI 4096, UDP 4789), always or (V(CrossSubnet)) only to nodes
        outside its own subnet, as for O(ipip_mode). Needed for the V(vxlan) networking backend,
        which runs no BGP.
    type: str
    choices: [Never, Always, CrossSubnet]
  nat_outgoing:
    description: Masquerade traffic from the pool to destinations outside all pools (C(spec.natOutgoing)). Default C(false).
    type: bool
  disabled:
    description: Stop allocating new addresses from the pool (C(spec.disabled)). Default C(false).
    type: bool
  disable_bgp_export:
    description: Do not advertise the pool's blocks over BGP (C(spec.disableBGPExport)). Default C(false).
    type: bool
  node_selector:
    description: Selector of the nodes that may allocate from the pool (C(spec.nodeSelector)). Default C(all()).
    type: str
  allowed_uses:
    description: What the pool's addresses may be used for (C(spec.allowedUses)). Calico's default is C(Workload) and C(Tunnel).
    type: list
    elements: str
    choices: [Workload, Tunnel, LoadBalancer]
  assignment_mode:
    description: C(Automatic) pools are used by IPAM without being asked for by name (C(spec.assignmentMode)).
    type: str
    choices: [Automatic, Manual]
seealso:
  - module: calico.net.ipam_info
  - module: calico.net.resource
"""

EXAMPLES = r"""
- name: Workload pool with IP-in-IP between subnets and NAT to the outside
  calico.net.ip_pool:
    name: pool-a
    cidr: 198.19.0.0/16
    block_size: 26
    ipip_mode: CrossSubnet
    nat_outgoing: true

- name: Workload pool with VXLAN to every other node (the vxlan backend, no BGP)
  calico.net.ip_pool:
    name: pool-vxlan
    cidr: 198.19.0.0/16
    vxlan_mode: Always
    ipip_mode: Never
    nat_outgoing: true

- name: Pool only for the racks labelled rack=r1
  calico.net.ip_pool:
    name: rack-r1
    cidr: 198.18.128.0/20
    node_selector: rack == "r1"
    etcd_endpoints: https://198.18.0.11:2379
    etcd_ca_cert_file: /etc/calico/certs/ca.pem
    etcd_cert_file: /etc/calico/certs/client.pem
    etcd_key_file: /etc/calico/certs/client-key.pem

- name: Stop allocating from the old pool (existing addresses stay)
  calico.net.ip_pool:
    name: pool-old
    cidr: 198.19.0.0/16
    disabled: true

- name: Remove a pool
  calico.net.ip_pool:
    name: pool-old
    state: absent
"""

RETURN = r"""
resource:
  description:
    - The pool as stored (with C(metadata.resourceVersion)), or as it would be stored when check
      mode predicts a change. C(null) when O(state=absent).
  returned: success
  type: dict
  sample:
    apiVersion: projectcalico.org/v3
    kind: IPPool
    metadata:
      name: pool-a
      uid: 6f0f0c1e-6a4c-4a43-8f53-4e3c2a1b9d10
      creationTimestamp: "2026-01-31T12:00:00Z"
      resourceVersion: "42"
    spec:
      cidr: 198.19.0.0/16
      blockSize: 26
      ipipMode: CrossSubnet
      natOutgoing: true
diff:
  description: The pool before and after, as YAML text, in diff mode.
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
    - path: spec.cidr
      message: '"198.19.0.1/16" has host bits set (did you mean 198.19.0.0/16?)'
      option: cidr
"""

from ansible_collections.calico.net.plugins.module_utils.common import METADATA_ARGUMENT_SPEC, run_module
from ansible_collections.calico.net.plugins.module_utils.manager import declared_handler, option_paths

FIELDS = dict(
    cidr="cidr",
    block_size="blockSize",
    ipip_mode="ipipMode",
    vxlan_mode="vxlanMode",
    nat_outgoing="natOutgoing",
    disabled="disabled",
    disable_bgp_export="disableBGPExport",
    node_selector="nodeSelector",
    allowed_uses="allowedUses",
    assignment_mode="assignmentMode",
)


def main():
    argument_spec = dict(
        name=dict(type="str", required=True),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        cidr=dict(type="str"),
        block_size=dict(type="int"),
        ipip_mode=dict(type="str", choices=["Never", "Always", "CrossSubnet"]),
        vxlan_mode=dict(type="str", choices=["Never", "Always", "CrossSubnet"]),
        nat_outgoing=dict(type="bool"),
        disabled=dict(type="bool"),
        disable_bgp_export=dict(type="bool"),
        node_selector=dict(type="str"),
        allowed_uses=dict(type="list", elements="str", choices=["Workload", "Tunnel", "LoadBalancer"]),
        assignment_mode=dict(type="str", choices=["Automatic", "Manual"]),
        **METADATA_ARGUMENT_SPEC,
    )
    run_module(argument_spec, declared_handler("IPPool", FIELDS), option_paths=option_paths(FIELDS),
               required_if=[("state", "present", ["cidr"])])


if __name__ == "__main__":
    main()
