"""calicoctl figures, run as an operator runs it (subprocess), against a fresh etcd:

* `calicoctl apply -f` of 1,000 GlobalNetworkPolicies (one transaction; target <= 3 s)
* `calicoctl get workloadendpoints -A -o json` with 10,000 endpoints stored (target <= 2 s)

Prints figures; asserts nothing about time.
Run: .venv/bin/python bench/bench_calicoctl.py
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from etcd_server import start_etcd, stop_etcd  # noqa: E402

from calico_net.datastore.etcd import op_put  # noqa: E402

CALICOCTL = str(Path(sys.executable).parent / "calicoctl")


def gnps(n: int, variant: int = 0) -> str:
    docs = []
    for i in range(n):
        docs.append(f"""apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: policy-{i:04d}
spec:
  order: {100 + i + variant}
  selector: app == "app-{i % 50}" && tier in {{"web", "api"}}
  types: [Ingress, Egress]
  ingress:
  - action: Allow
    protocol: TCP
    source:
      selector: role == "client-{i % 20}"
    destination:
      ports: [80, 443, "8000:8100"]
  - action: Deny
  egress:
  - action: Allow
    protocol: UDP
    destination:
      ports: [53]
""")
    return "---\n".join(docs)


def timed(args: list[str], env: dict[str, str], stdin: str | None = None) -> tuple[float, subprocess.CompletedProcess]:
    t = time.perf_counter()
    proc = subprocess.run([CALICOCTL, *args], input=stdin, capture_output=True, text=True, env=env)
    took = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"calicoctl {args} failed: {proc.stderr}")
    return took, proc


def main() -> None:
    server = start_etcd()
    env = server.env()
    try:
        with tempfile.TemporaryDirectory() as d:
            runs = []
            for variant in range(3):
                path = os.path.join(d, f"gnps{variant}.yaml")
                Path(path).write_text(gnps(1000, variant))
                took, _ = timed(["apply", "-f", path], env)
                runs.append(took)
            print(f"calicoctl apply -f 1,000 GNPs: first (create) {runs[0]:.2f} s, "
                  f"then updates {runs[1]:.2f} s, {runs[2]:.2f} s (target <= 3 s)")

        client = server.client()
        for start in range(0, 10000, 1000):
            ops = []
            for i in range(start, start + 1000):
                doc = {
                    "apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
                    "metadata": {"name": f"node-{i % 3}-cni-{i:08x}-eth0", "namespace": f"ns-{i % 10}",
                                 "labels": {"app": f"app-{i % 50}", "tier": "web"},
                                 "uid": f"uid-{i}", "creationTimestamp": "2026-11-29T00:00:00Z"},
                    "spec": {"node": f"node-{i % 3}", "orchestrator": "cni", "workload": f"w{i}",
                             "endpoint": "eth0", "interfaceName": f"cali{i:011x}",
                             "ipNetworks": [f"198.19.{i // 256}.{i % 256}/32"], "profiles": ["default"]},
                }
                key = (f"/calico/resources/v3/projectcalico.org/workloadendpoints/"
                       f"{doc['metadata']['namespace']}/{doc['metadata']['name']}")
                ops.append(op_put(key, json.dumps(doc)))
            client.txn([], ops)
        times = []
        for _ in range(3):
            took, proc = timed(["get", "workloadendpoints", "-A", "-o", "json"], env)
            times.append(took)
        n = len(json.loads(proc.stdout)["items"])
        print(f"calicoctl get -A -o json of {n:,} WorkloadEndpoints: median {statistics.median(times):.2f} s "
              f"(runs {', '.join(f'{t:.2f}' for t in times)}; target <= 2 s)")
        took, _ = timed(["version"], env)
        print(f"calicoctl start-up (version): {took:.2f} s")
    finally:
        stop_etcd(server)


if __name__ == "__main__":
    main()
