# -*- coding: utf-8 -*-
# Copyright: calico.net contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The `ingress` and `egress` rule options of profile, network_policy and
global_network_policy: lists of Calico rules in Calico's own (camelCase) form."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  ingress:
    description:
      - Rules for traffic to the selected endpoints, in order - the first rule whose match
        criteria fit decides (C(spec.ingress)).
      - Each rule is a mapping in Calico's own form and spelling (camelCase), exactly as in a
        Calico manifest. See the examples.
      - "Rule keys - C(action) (required; C(Allow), C(Deny), C(Log) or C(Pass)), C(protocol) and
        C(notProtocol) (C(TCP), C(UDP), C(ICMP), C(ICMPv6), C(SCTP), C(UDPLite) or 1-255),
        C(ipVersion) (4 or 6), C(icmp) and C(notICMP) (with C(type) and C(code)), C(source) and
        C(destination), C(metadata) (with C(annotations))."
      - "C(source) and C(destination) take C(nets), C(notNets), C(selector), C(notSelector),
        C(namespaceSelector), C(serviceAccounts) (with C(names) and C(selector), matched as Calico
        matches them), C(ports) and C(notPorts) (numbers, C(lo:hi) ranges or named ports; they need a
        protocol with ports)."
      - "B(Refused today) - Calico's rule key C(http) and the C(source)/C(destination) key
        C(services) fail with their field path, such as C(spec.ingress[0].source.services), and
        C(not supported by calico.net yet), and nothing is written - the dataplane does not match HTTP
        requests or Kubernetes Services, and a rule it cannot enforce is never stored as if it were."
      - Rules are validated by the library; an error names the field path, such as
        C(spec.ingress[0].protocol).
      - The order of rules matters and is kept; within a rule the order of nets, ports and
        similar lists does not, and is ignored when comparing.
    type: list
    elements: dict
  egress:
    description:
      - Rules for traffic from the selected endpoints, in order (C(spec.egress)); the same form as O(ingress).
    type: list
    elements: dict
"""
