#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: calico.net contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""calico.net.bgp_status_info: the BGP sessions of this host's BIRD, read from its
control socket (`calicoctl node status`), peers named from the Node resources."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: bgp_status_info
short_description: Show the BGP sessions of a node, like calicoctl node status
version_added: 0.1.0
description:
  - Read the BGP sessions of the managed host's BIRD from its control socket, the way
    C(calicoctl node status) does - peer address, type (node-to-node mesh, global or
    node-specific peer, route reflector), state and the time it entered it.
  - When the datastore can be reached, each session also names the Calico node the peer address
    belongs to; otherwise C(peer_node) is null and a warning says why.
  - Runs on the managed host (the node), which must be able to open BIRD's socket.
author:
  - calico.net maintainers (@calico-net)
extends_documentation_fragment:
  - calico.net.etcd
  - calico.net.attributes.info
options:
  socket:
    description: Path of BIRD's control socket on the managed host.
    type: path
    default: /var/run/calico/bird.ctl
  timeout:
    description: Seconds to wait for BIRD to answer.
    type: float
    default: 10
  all_protocols:
    description: Also return BIRD's other protocols (device, kernel, direct, static) in RV(protocols).
    type: bool
    default: false
seealso:
  - module: calico.net.bgp_peer
  - module: calico.net.node
"""

EXAMPLES = r"""
- name: BGP sessions of every node
  calico.net.bgp_status_info:
  register: bgp

- name: Every session is up
  ansible.builtin.assert:
    that: bgp.sessions | rejectattr('established') | list | length == 0
    fail_msg: "{{ bgp.sessions | rejectattr('established') | map(attribute='peer_address') | list }} not established"

- name: Wait until the mesh is up
  calico.net.bgp_status_info:
    socket: /var/run/calico/bird.ctl
  register: bgp
  until: bgp.sessions | length > 0 and bgp.sessions | rejectattr('established') | list | length == 0
  retries: 30
  delay: 2
"""

RETURN = r"""
sessions:
  description: The BGP sessions, in BIRD's order.
  returned: success
  type: list
  elements: dict
  contains:
    name:
      description: BIRD's protocol name.
      type: str
      returned: always
      sample: Mesh_198_18_0_12
    peer_address:
      description: The peer's address.
      type: str
      returned: always
      sample: 198.18.0.12
    peer_node:
      description: The Calico node with that address; null when not known.
      type: str
      returned: always
      sample: node2
    peer_type:
      description: C(mesh), C(global), C(node), C(reflector), C(reflector-client) or C(other).
      type: str
      returned: always
      sample: mesh
    peer_as:
      description: The peer's AS number; null when BIRD does not report it.
      type: int
      returned: always
      sample: 64512
    state:
      description: BIRD's protocol state - C(up), C(start), C(down) and so on.
      type: str
      returned: always
      sample: up
    since:
      description: When the protocol entered that state, to the second (BIRD's fraction of a second moves between two reads).
      type: str
      returned: always
      sample: "2026-01-31 12:00:00"
    info:
      description: The BGP state and last error, the way BIRD shows them.
      type: str
      returned: always
      sample: Established
    bgp_state:
      description: The BGP state machine's state.
      type: str
      returned: always
      sample: Established
    established:
      description: Whether the session is established.
      type: bool
      returned: always
      sample: true
protocols:
  description: With O(all_protocols), every BIRD protocol with BIRD's details.
  returned: when O(all_protocols=true)
  type: list
  elements: dict
  sample:
    - name: kernel1
      proto: Kernel
      table: master4
      state: up
      since: "12:00:00"
      info: ""
      details: {}
      channels: {ipv4: {State: UP}}
"""

import dataclasses
import ipaddress

from ansible_collections.calico.net.plugins.module_utils.common import ModuleError, datastore, run_module

try:
    from calico_net.agent.confd.birdctl import BirdCtlError, show_protocols
    from calico_net.datastore import DatastoreError
except ImportError:  # reported by run_module
    pass


def node_addresses(module):
    """peer address -> Calico node name, from the Node resources (best effort)."""
    try:
        nodes, _revision = datastore(module.params).list("Node")
    except DatastoreError as e:
        module.warn(f"peer_node is unknown: cannot read the Node resources ({e})")
        return {}
    out = {}
    for node in nodes:
        bgp = (node.get("spec") or {}).get("bgp") or {}
        for field in ("ipv4Address", "ipv6Address"):
            if bgp.get(field):
                out[str(ipaddress.ip_interface(bgp[field]).ip)] = node["metadata"]["name"]
    return out


def handle(module):
    params = module.params
    try:
        protocols = show_protocols(params["socket"], detail=True, timeout=params["timeout"])
    except (BirdCtlError, OSError) as e:
        raise ModuleError(f"cannot read BGP status from BIRD's socket {params['socket']}: {e}") from e
    bgp = [p for p in protocols if p.proto == "BGP"]
    names = node_addresses(module) if bgp else {}
    sessions = []
    for p in bgp:
        addr = p.neighbor_address
        try:
            addr_key = str(ipaddress.ip_address(addr)) if addr else None
        except ValueError:
            addr_key = addr
        sessions.append(dict(
            name=p.name,
            peer_address=addr,
            peer_node=names.get(addr_key),
            peer_type=p.peer_type or "other",
            peer_as=p.neighbor_as,
            state=p.state,
            since=p.since,
            info=" ".join(p.info.split()),
            bgp_state=p.bgp_state or (p.info.split() or [None])[0],
            established=(p.bgp_state or p.info).startswith("Established"),
        ))
    result = dict(changed=False, sessions=sessions)
    if params["all_protocols"]:
        result["protocols"] = [dataclasses.asdict(p) for p in protocols]
    return result


def main():
    argument_spec = dict(
        socket=dict(type="path", default="/var/run/calico/bird.ctl"),
        timeout=dict(type="float", default=10),
        all_protocols=dict(type="bool", default=False),
    )
    run_module(argument_spec, handle)


if __name__ == "__main__":
    main()
