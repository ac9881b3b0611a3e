#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: calico.net contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""calico.net.policy_explain_info: `calicoctl policy explain` as a module - why one flow is
allowed or denied. It resolves the endpoints with the CLI's own resolver and asks the
agent's explain library (`calico_net.agent.felix.explain`) for the answer; it computes
no verdict of its own."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: policy_explain_info
short_description: Explain why a flow is allowed or denied, like calicoctl policy explain
version_added: 0.1.0
description:
  - The verdict for one flow - from O(source) to O(destination) with O(protocol) and O(port) - and the
    exact path to it, the structure of C(calicoctl policy explain -o json) - for each policy in order (tier by
    tier in the agent's tier order, then within its tier) whether its selector picks each side, the rule that
    decided (its index, the rule, its nft lines), Pass (on to the next tier), the end-of-tier drop of a tier
    whose defaultAction is Deny, the profile fallback and default deny.
  - Computed from the datastore with the agent's own policy index and rule code (the library
    C(calicoctl policy explain) calls), so it answers as the nft ruleset on the nodes decides.
  - Read-only; check mode returns the same answer.
  - The first packet of a connection is explained (no conntrack); pre-DNAT, untracked and apply-on-forward
    host endpoint policy is named in C(steps[].notEvaluated), not evaluated; Felix settings come from the
    FelixConfiguration resources, not from a host's environment.
author:
  - calico.net maintainers (@calico-net)
extends_documentation_fragment:
  - calico.net.etcd
  - calico.net.attributes.info
options:
  source:
    description:
      - Where the flow comes from - a workload endpoint name, a host endpoint name, or an IP address
        (an endpoint's, or any other for traffic from outside the cluster). C(--from) of calicoctl.
    type: str
    required: true
  destination:
    description: Where the flow goes - as O(source). C(--to) of calicoctl.
    type: str
    required: true
  namespace:
    description:
      - Namespace of the workload endpoints O(source) and O(destination) name (C(-n) of calicoctl).
        Left out, any namespace, as long as the name is unique.
    type: str
  destination_namespace:
    description: Namespace of O(destination) when it differs from O(namespace) (C(--to-namespace)).
    type: str
  protocol:
    description: The flow's protocol; C(icmp) between IPv6 addresses is ICMPv6.
    type: str
    choices: [tcp, udp, sctp, icmp]
    default: tcp
  port:
    description: Destination port; required for C(tcp), C(udp) and C(sctp).
    type: int
  source_port:
    description: Source port. Left out, an ephemeral port, outside any rule's source ports.
    type: int
  icmp_type:
    description: ICMP type, with O(protocol=icmp) (8, echo request).
    type: int
    default: 8
  icmp_code:
    description: ICMP code, with O(protocol=icmp).
    type: int
    default: 0
seealso:
  - module: calico.net.network_policy
  - module: calico.net.global_network_policy
"""

EXAMPLES = r"""
- name: Why can the frontend not reach the backend's redis?
  calico.net.policy_explain_info:
    source: frontend-7d4b9
    destination: backend-5f6c8
    namespace: shop
    port: 6379
  register: why

- name: Show the verdict and the rule that decided it
  ansible.builtin.debug:
    msg: "{{ why.verdict }}: {{ why.decidedBy }} ({{ why.deciding_rule.rule | default('no rule') }})"

- name: Fail the play if a monitoring host cannot ping a workload
  calico.net.policy_explain_info:
    source: 198.18.0.10
    destination: 198.18.232.2
    protocol: icmp
  register: ping
  failed_when: ping.verdict != 'Allow'
"""

RETURN = r"""
verdict:
  description: C(Allow) or C(Deny).
  returned: success
  type: str
  sample: Deny
decidedBy:
  description: What decided, e.g. C(ingress of WorkloadEndpoint shop/be - NetworkPolicy shop/backend rule 0).
  returned: success
  type: str
flow:
  description: The flow explained - C(protocol), C(port), C(sourcePort), C(icmpType).
  returned: success
  type: dict
source:
  description: The source - C(kind), C(namespace), C(name), C(node), C(ip), C(profiles) of an endpoint, or only C(ip).
  returned: success
  type: dict
destination:
  description: The destination, as RV(source).
  returned: success
  type: dict
tiers:
  description:
    - The tiers in the agent's order (tier C(order) ascending, a tier without a Tier resource last, then the
      name), each with its C(name), C(order), C(defaultAction) and C(exists). Each policy's own tier is in
      the C(tier) of each of RV(policies); the tiers that applied in a step, with how each ended, in the C(tiers) of each of RV(steps).
  returned: success
  type: list
  elements: dict
policies:
  description:
    - Every policy in the agent's order - tier by tier (tier C(order) ascending, a tier without a Tier resource
      last, then the name), within a tier Calico's policy order - with C(tier), C(order), C(selector),
      C(selectsSource) and C(selectsDestination).
  returned: success
  type: list
  elements: dict
steps:
  description:
    - The chains the flow passes in order (egress of the source, ingress of the destination, failsafe ports,
      workload to host), each with its endpoint C(chain), its C(tiers) in order (C(name), C(order),
      C(defaultAction), C(result) - the deciding action, C(Pass (<policy>)) or the end of the tier with its
      defaultAction),
      its policies (each with its C(tier)) and profiles, their rules (C(index), C(rule), C(nft), C(matched)),
      C(verdict) and C(by) (naming the tier of a deciding policy outside C(default), or C(end of tier <name>)) -
      as C(calicoctl policy explain -o json) prints them.
  returned: success
  type: list
  elements: dict
deciding_rule:
  description:
    - The rule that decided, taken from the last step - C(kind), C(namespace), C(name) of its policy or
      profile, C(index), C(action), C(rule), C(nft), C(chain), C(positions), C(endpoint), C(direction).
    - C(null) when no rule decided (the end-of-tier drop of a tier, default deny after the profiles, a failsafe port,
      the workload-to-host action, a flow no policy applies to).
  returned: success
  type: dict
"""

import ipaddress

from ansible_collections.calico.net.plugins.module_utils.common import ModuleError, datastore, run_module

try:
    from calico_net.agent.felix.explain import PROTOCOLS, Cluster, Packet, endpoint_summary, explain
    from calico_net.cli.explain import KINDS, _resolve
except ImportError:  # reported by run_module
    pass

_PORT_PROTOCOLS = (6, 17, 132)
_ICMP_PROTOCOLS = (1, 58)


def deciding_rule(result):
    """The rule that decided, from the step that ended the walk (explain stops at the
    step that decides, so it is the last); None when no rule decided."""
    step = result["steps"][-1] if result["steps"] else {}
    where = step.get("rule")
    # the end-of-tier drop and the drop after the profiles are lines of the endpoint
    # chain itself: no policy or profile rule decided
    if where is None or where.get("chain") == step.get("chain"):
        return None
    # profiles are walked only when no policy decided, so a profile entry means a profile decided
    if step["profiles"]:
        entry, kind, namespace = step["profiles"][-1], "Profile", None
    else:
        entry = step["policies"][-1]
        kind, namespace = entry["kind"], entry["namespace"]
    rule = entry["rules"][-1]
    return dict(kind=kind, namespace=namespace, name=entry["name"], index=rule["index"],
                action=rule["action"], rule=rule["rule"], nft=rule["nft"], chain=where["chain"],
                positions=where["positions"], endpoint=step["endpoint"], direction=step["direction"])


def handle(module):
    params = module.params
    for option, high in (("port", 65535), ("source_port", 65535), ("icmp_type", 255), ("icmp_code", 255)):
        value = params[option]
        if value is not None and not 0 <= value <= high:
            raise ModuleError(f"{option} {value} is out of range (0-{high})")
    store = datastore(params)
    docs = []
    for kind in KINDS:
        items, _revision = store.list(kind)
        docs.extend(items)
    cl = Cluster(docs)
    try:
        src, src_ip = _resolve(cl, params["source"], params["namespace"], "source")
        dst, dst_ip = _resolve(cl, params["destination"], params["destination_namespace"] or params["namespace"],
                               "destination")
    except ValueError as e:  # an unknown or ambiguous name: the resolver's message
        # it speaks of calicoctl's flag; here the option of that name is meant
        raise ModuleError(str(e).replace("--namespace", "namespace")) from e
    src_family, dst_family = ipaddress.ip_address(src_ip).version, ipaddress.ip_address(dst_ip).version
    if src_family != dst_family:
        raise ModuleError(f"source {src_ip} and destination {dst_ip} are not of one IP version")
    proto = PROTOCOLS[params["protocol"]]
    if proto == 1 and src_family == 6:
        proto = 58
    ports = proto in _PORT_PROTOCOLS
    icmp = proto in _ICMP_PROTOCOLS
    pkt = Packet(src_ip, dst_ip, proto, params["port"] if ports else None, params["source_port"],
                 params["icmp_type"] if icmp else None, params["icmp_code"] if icmp else None)
    res = explain(cl, src, dst, pkt)
    # the keys and shape of `calicoctl policy explain -o json`
    return dict(changed=False, verdict=res["verdict"], decidedBy=res["decidedBy"],
                flow={"protocol": params["protocol"], "sourcePort": pkt.sport, "port": pkt.dport,
                      "icmpType": pkt.icmp_type},
                source=endpoint_summary(src, src_ip), destination=endpoint_summary(dst, dst_ip),
                tiers=res["tiers"], policies=res["policies"], steps=res["steps"],
                deciding_rule=deciding_rule(res))


def main():
    argument_spec = dict(
        source=dict(type="str", required=True),
        destination=dict(type="str", required=True),
        namespace=dict(type="str"),
        destination_namespace=dict(type="str"),
        protocol=dict(type="str", choices=["tcp", "udp", "sctp", "icmp"], default="tcp"),
        port=dict(type="int"),
        source_port=dict(type="int"),
        icmp_type=dict(type="int", default=8),
        icmp_code=dict(type="int", default=0),
    )
    run_module(argument_spec, handle,
               required_if=[("protocol", p, ["port"]) for p in ("tcp", "udp", "sctp")])


if __name__ == "__main__":
    main()
