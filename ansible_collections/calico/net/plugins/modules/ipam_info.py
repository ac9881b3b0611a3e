#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: calico.net contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""calico.net.ipam_info: Calico IPAM usage per pool, block and node, and who holds an
address (`calicoctl ipam show`), read through calico_net.ipam."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ipam_info
short_description: Show Calico IPAM usage, like calicoctl ipam show
version_added: 0.1.0
description:
  - Report how the IP pools are used - per pool the blocks claimed and the addresses in use,
    per node its blocks - and every allocation block with its node affinity, like
    C(calicoctl ipam show --show-blocks).
  - With O(ip), also report who holds that address (C(calicoctl ipam show --ip)).
author:
  - calico.net maintainers (@calico-net)
extends_documentation_fragment:
  - calico.net.etcd
  - calico.net.attributes.info
options:
  node:
    description: Only the blocks affine to this node (pool totals are still cluster-wide).
    type: str
  ip:
    description: An address to look up in IPAM.
    type: str
seealso:
  - module: calico.net.ip_pool
"""

EXAMPLES = r"""
- name: IPAM usage
  calico.net.ipam_info:
  register: ipam

- name: Fail when a pool is nearly full
  ansible.builtin.assert:
    that: item.in_use < 0.9 * item.addresses
  loop: "{{ ipam.pools }}"

- name: Who holds 198.19.0.5?
  calico.net.ipam_info:
    ip: 198.19.0.5
  register: holder
"""

RETURN = r"""
pools:
  description: Usage per IP pool.
  returned: success
  type: list
  elements: dict
  contains:
    name: {description: The pool's name., type: str, returned: always, sample: pool-a}
    cidr: {description: The pool's network., type: str, returned: always, sample: 198.19.0.0/16}
    block_size: {description: The pool's block prefix length., type: int, returned: always, sample: 26}
    disabled: {description: Whether allocation from the pool is disabled., type: bool, returned: always}
    node_selector: {description: The pool's node selector., type: str, returned: always, sample: all()}
    addresses: {description: Addresses in the pool., type: int, returned: always, sample: 65536}
    blocks_total: {description: Blocks the pool can be cut into., type: int, returned: always, sample: 1024}
    blocks_claimed: {description: Blocks claimed by nodes., type: int, returned: always, sample: 3}
    in_use: {description: Addresses allocated., type: int, returned: always, sample: 12}
    free_in_blocks: {description: Free addresses in claimed blocks., type: int, returned: always, sample: 180}
    nodes:
      description: Per node name - C(blocks), C(in_use), C(free) and C(borrowed) (addresses of the node's blocks held by other nodes).
      type: dict
      returned: always
      sample: {node1: {blocks: 1, in_use: 4, free: 60, borrowed: 0}}
blocks:
  description: Every allocation block (of O(node), when given), ordered by address.
  returned: success
  type: list
  elements: dict
  contains:
    cidr: {description: The block., type: str, returned: always, sample: 198.19.0.0/26}
    node: {description: The node the block is affine to (null when none)., type: str, returned: always, sample: node1}
    in_use: {description: Addresses allocated., type: int, returned: always, sample: 4}
    free: {description: Free addresses., type: int, returned: always, sample: 60}
    strict_affinity: {description: Whether other nodes may not borrow from the block., type: bool, returned: always}
assignment:
  description: With O(ip) - who holds the address, or C(null) when it is free or in no block.
  returned: when O(ip) is given
  type: dict
  contains:
    ip: {description: The address., type: str, returned: always, sample: 198.19.0.5}
    block: {description: Its block., type: str, returned: always, sample: 198.19.0.0/26}
    handle_id: {description: The handle that holds it., type: str, returned: always, sample: k8s-pod-network.0a1b2c}
    node: {description: The node that holds it., type: str, returned: always, sample: node1}
    attributes: {description: The allocation's attributes., type: dict, returned: always}
"""

from ansible_collections.calico.net.plugins.module_utils.common import ModuleError, connect, run_module

try:
    import ipaddress

    from calico_net.datastore import Datastore
    from calico_net.ipam import IPAM
except ImportError:  # reported by run_module
    pass


def handle(module):
    params = module.params
    client = connect(params)
    ipam = IPAM(client, Datastore(client))
    result = dict(changed=False, pools=ipam.usage())
    blocks = []
    for b in sorted(ipam.blocks(), key=lambda b: (b.cidr.version, b.cidr)):
        if params.get("node") and b.host != params["node"]:
            continue
        blocks.append(dict(cidr=str(b.cidr), node=b.host, in_use=b.in_use, free=b.free,
                           strict_affinity=b.strict_affinity))
    result["blocks"] = blocks
    if params.get("ip"):
        try:
            ip = ipaddress.ip_address(params["ip"])
        except ValueError as e:
            raise ModuleError(f'ip: "{params["ip"]}" is not an IP address') from e
        a = ipam.get_assignment(ip)
        result["assignment"] = None if a is None else dict(
            ip=str(a.ip), block=str(a.block), handle_id=a.handle_id, node=a.node,
            attributes=dict(a.attributes))
    return result


def main():
    argument_spec = dict(
        node=dict(type="str"),
        ip=dict(type="str"),
    )
    run_module(argument_spec, handle)


if __name__ == "__main__":
    main()
