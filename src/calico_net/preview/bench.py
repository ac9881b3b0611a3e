"""Timing of a preview: `python -m calico_net.preview.bench [NODES] [ENDPOINTS]`.

A synthetic snapshot (NODES calico Nodes, ENDPOINTS WorkloadEndpoints spread over
them, one profile, one pool, one GlobalNetworkPolicy) and a change of the policy's
rule that adds a selector set; prints the seconds of `preview` in the rendered and
the kernel form (after one warm-up render, so imports are not counted).
"""
from __future__ import annotations

import sys
import time
from typing import Any

from .core import preview
from .ruleset import desired_dataplane, kernel_form_available
from .snapshot import Change, Snapshot

V3 = "projectcalico.org/v3"


def _docs(nodes: int, endpoints: int) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = [
        {"apiVersion": V3, "kind": "Profile", "metadata": {"name": "kns.default"},
         "spec": {"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}]}},
        {"apiVersion": V3, "kind": "IPPool", "metadata": {"name": "pool"},
         "spec": {"cidr": "198.19.0.0/16", "natOutgoing": True}},
        _policy(8080, None)]
    for n in range(nodes):
        docs.append({"apiVersion": V3, "kind": "Node", "metadata": {"name": f"n{n}"},
                     "spec": {"bgp": {"ipv4Address": f"198.18.{n // 250}.{n % 250 + 1}/16"}}})
    for i in range(endpoints):
        docs.append({"apiVersion": V3, "kind": "WorkloadEndpoint",
                     "metadata": {"name": f"w{i}", "namespace": "default",
                                  "labels": {"role": ("db", "web", "x")[i % 3]}},
                     "spec": {"node": f"n{i % nodes}", "workload": f"w{i}", "endpoint": "eth0",
                              "interfaceName": f"cali{i:011d}",
                              "ipNetworks": [f"198.19.{i // 250}.{i % 250 + 1}/32"],
                              "profiles": ["kns.default"]}})
    return docs


def _policy(port: int, source: str | None) -> dict[str, Any]:
    rule: dict[str, Any] = {"action": "Allow", "protocol": "TCP", "destination": {"ports": [port]}}
    if source:
        rule["source"] = {"selector": source}
    return {"apiVersion": V3, "kind": "GlobalNetworkPolicy", "metadata": {"name": "db"},
            "spec": {"selector": "role == 'db'", "order": 10, "types": ["Ingress"], "ingress": [rule]}}


def main(argv: list[str]) -> int:
    nodes = int(argv[0]) if argv else 10
    endpoints = int(argv[1]) if len(argv) > 1 else 1000
    snap = Snapshot.of(_docs(nodes, endpoints))
    desired_dataplane(snap, "n0")
    forms = ["rendered"] + (["kernel"] if kernel_form_available() else [])
    for form in forms:
        t = time.perf_counter()
        got = preview(snap, [Change.put(_policy(9090, "role == 'web'"))], form=form)
        print(f"{nodes} nodes, {endpoints} endpoints, {form} form: {len(got)} node(s) change, "
              f"{time.perf_counter() - t:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
