#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: calico.net contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""calico.net.felix_configuration: set FelixConfiguration fields (typed options plus a
`settings` mapping merged into the stored spec, then the shared manager)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: felix_configuration
short_description: Manage Felix settings of the calico/node agents
version_added: 0.1.0
description:
  - Set fields of a Calico C(FelixConfiguration) - C(default) for every node or
    C(node.<nodename>) for one node. The agent reads them after its C(FELIX_*) environment
    and C(/etc/calico/felix.cfg), in Calico's order.
  - The common settings have options of their own; any other FelixConfiguration field can be set
    through O(settings) by its Calico name.
  - Only the settings given are managed - settings left out keep their stored value, unless
    O(purge=true).
  - Changes are detected by meaning (C(90s) equals C(1m30s); failsafe ports in any order).
author:
  - calico.net maintainers (@calico-net)
extends_documentation_fragment:
  - calico.net.etcd
  - calico.net.attributes
options:
  name:
    description: C(default), or C(node.<nodename>) for one node's settings.
    type: str
    default: default
  state:
    description: V(absent) deletes the whole configuration resource.
    type: str
    choices: [present, absent]
    default: present
  purge:
    description: Remove every spec field that is not given here, so the task declares the whole resource.
    type: bool
    default: false
  settings:
    description:
      - More FelixConfiguration spec fields, by their Calico names (C(routeRefreshInterval),
        C(nftablesMode), ...), validated like the rest. A V(null) value removes the field.
    type: dict
  log_severity_screen:
    description: Log level of the agent's standard error (C(spec.logSeverityScreen)). Calico's default is C(Info).
    type: str
    choices: [Trace, Debug, Info, Warning, Error, Fatal]
  log_severity_file:
    description: Log level of the log file (C(spec.logSeverityFile)).
    type: str
    choices: [Trace, Debug, Info, Warning, Error, Fatal]
  log_file_path:
    description:
      - The agent's log file (C(spec.logFilePath)), an absolute path; from the datastore only under V(/var/log/).
      - V(none), the default, disables file logging.
    type: str
  health_enabled:
    description: Serve C(/liveness) and C(/readiness) (C(spec.healthEnabled)).
    type: bool
  health_host:
    description: Address the health endpoint listens on (C(spec.healthHost)).
    type: str
  health_port:
    description: Port of the health endpoint (C(spec.healthPort)). Calico's default is 9099.
    type: int
  prometheus_metrics_enabled:
    description: Serve Prometheus metrics (C(spec.prometheusMetricsEnabled)).
    type: bool
  prometheus_metrics_port:
    description: Port of the metrics endpoint (C(spec.prometheusMetricsPort)). Calico's default is 9091.
    type: int
  ipip_enabled:
    description: Set up the IP-in-IP tunnel device (C(spec.ipipEnabled)).
    type: bool
  ipip_mtu:
    description: MTU of the IP-in-IP device (C(spec.ipipMTU)).
    type: int
  vxlan_enabled:
    description: Set up the VXLAN device (C(spec.vxlanEnabled)).
    type: bool
  vxlan_mtu:
    description: MTU of the VXLAN device (C(spec.vxlanMTU)).
    type: int
  vxlan_port:
    description: UDP port of VXLAN (C(spec.vxlanPort)).
    type: int
  vxlan_vni:
    description: VXLAN network identifier (C(spec.vxlanVNI)).
    type: int
  default_endpoint_to_host_action:
    description: What happens to traffic from workloads to their own host (C(spec.defaultEndpointToHostAction)). Calico's default is C(Drop).
    type: str
    choices: [Drop, Return, Accept]
  failsafe_inbound_host_ports:
    description:
      - Host ports that stay open inbound whatever the policy says (C(spec.failsafeInboundHostPorts)),
        for example SSH, etcd and BGP. Replaces the stored list when given.
    type: list
    elements: dict
    suboptions:
      protocol:
        description: C(TCP), C(UDP) or C(SCTP).
        type: str
        required: true
      port:
        description: The port.
        type: int
        required: true
      net:
        description:
          - Only for this peer network (Calico's C(net)) - the port is open only from its
            addresses. Left out, the port is open from every address.
        type: str
  failsafe_outbound_host_ports:
    description: Host ports that stay open outbound (C(spec.failsafeOutboundHostPorts)). Replaces the stored list when given.
    type: list
    elements: dict
    suboptions:
      protocol:
        description: C(TCP), C(UDP) or C(SCTP).
        type: str
        required: true
      port:
        description: The port.
        type: int
        required: true
      net:
        description:
          - Only for this peer network (Calico's C(net)) - the port is open only to its
            addresses. Left out, the port is open to every address.
        type: str
  route_refresh_interval:
    description: How often routes are read back and repaired, a duration (C(spec.routeRefreshInterval)).
    type: str
  reporting_interval:
    description: How often the agent reports its status, a duration (C(spec.reportingInterval)).
    type: str
  interface_prefix:
    description: Prefix of workload interface names (C(spec.interfacePrefix)). Calico's default is C(cali).
    type: str
  ipv6_support:
    description: Program IPv6 (C(spec.ipv6Support)).
    type: bool
  device_route_protocol:
    description: Protocol number the agent marks its routes with (C(spec.deviceRouteProtocol)).
    type: int
  wireguard_enabled:
    description: Encrypt traffic between nodes with WireGuard (C(spec.wireguardEnabled)).
    type: bool
seealso:
  - module: calico.net.resource
"""

EXAMPLES = r"""
- name: Cluster-wide agent settings
  calico.net.felix_configuration:
    log_severity_screen: Warning
    prometheus_metrics_enabled: true
    failsafe_inbound_host_ports:
      - {protocol: TCP, port: 22}
      - {protocol: TCP, port: 2379}
      - {protocol: TCP, port: 179}
    settings:
      nftablesMode: Enabled
      iptablesRefreshInterval: 90s

- name: Debug logging on one node
  calico.net.felix_configuration:
    name: node.node2
    log_severity_screen: Debug

- name: Remove a setting again
  calico.net.felix_configuration:
    settings:
      iptablesRefreshInterval: null
"""

RETURN = r"""
resource:
  description: The FelixConfiguration as stored (or as it would be stored in check mode); C(null) when deleted.
  returned: success
  type: dict
  sample:
    apiVersion: projectcalico.org/v3
    kind: FelixConfiguration
    metadata: {name: default, resourceVersion: "8"}
    spec: {logSeverityScreen: Warning, prometheusMetricsEnabled: true}
diff:
  description: The resource before and after, as YAML text, in diff mode.
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

from ansible_collections.calico.net.plugins.module_utils.common import run_module
from ansible_collections.calico.net.plugins.module_utils.manager import merged_handler, option_paths

FIELDS = dict(
    log_severity_screen="logSeverityScreen",
    log_severity_file="logSeverityFile",
    log_file_path="logFilePath",
    health_enabled="healthEnabled",
    health_host="healthHost",
    health_port="healthPort",
    prometheus_metrics_enabled="prometheusMetricsEnabled",
    prometheus_metrics_port="prometheusMetricsPort",
    ipip_enabled="ipipEnabled",
    ipip_mtu="ipipMTU",
    vxlan_enabled="vxlanEnabled",
    vxlan_mtu="vxlanMTU",
    vxlan_port="vxlanPort",
    vxlan_vni="vxlanVNI",
    default_endpoint_to_host_action="defaultEndpointToHostAction",
    failsafe_inbound_host_ports="failsafeInboundHostPorts",
    failsafe_outbound_host_ports="failsafeOutboundHostPorts",
    route_refresh_interval="routeRefreshInterval",
    reporting_interval="reportingInterval",
    interface_prefix="interfacePrefix",
    ipv6_support="ipv6Support",
    device_route_protocol="deviceRouteProtocol",
    wireguard_enabled="wireguardEnabled",
)
SEVERITIES = ["Trace", "Debug", "Info", "Warning", "Error", "Fatal"]


def drop_none(ports):
    """Suboptions left out come back as None; Calico's ProtoPort has no nulls."""
    return [{k: v for k, v in p.items() if v is not None} for p in ports]


def main():
    proto_port = dict(
        protocol=dict(type="str", required=True),
        port=dict(type="int", required=True),
        net=dict(type="str"),
    )
    argument_spec = dict(
        name=dict(type="str", default="default"),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        purge=dict(type="bool", default=False),
        settings=dict(type="dict"),
        log_severity_screen=dict(type="str", choices=SEVERITIES),
        log_severity_file=dict(type="str", choices=SEVERITIES),
        log_file_path=dict(type="str"),
        health_enabled=dict(type="bool"),
        health_host=dict(type="str"),
        health_port=dict(type="int"),
        prometheus_metrics_enabled=dict(type="bool"),
        prometheus_metrics_port=dict(type="int"),
        ipip_enabled=dict(type="bool"),
        ipip_mtu=dict(type="int"),
        vxlan_enabled=dict(type="bool"),
        vxlan_mtu=dict(type="int"),
        vxlan_port=dict(type="int"),
        vxlan_vni=dict(type="int"),
        default_endpoint_to_host_action=dict(type="str", choices=["Drop", "Return", "Accept"]),
        failsafe_inbound_host_ports=dict(type="list", elements="dict", options=proto_port),
        failsafe_outbound_host_ports=dict(type="list", elements="dict", options=proto_port),
        route_refresh_interval=dict(type="str"),
        reporting_interval=dict(type="str"),
        interface_prefix=dict(type="str"),
        ipv6_support=dict(type="bool"),
        device_route_protocol=dict(type="int"),
        wireguard_enabled=dict(type="bool"),
    )
    handler = merged_handler("FelixConfiguration", FIELDS, converters=dict(
        failsafeInboundHostPorts=drop_none, failsafeOutboundHostPorts=drop_none))
    run_module(argument_spec, handler, option_paths=option_paths(FIELDS))


if __name__ == "__main__":
    main()
