#!/usr/bin/env python3
"""Docker with the calico drivers: time from `docker run` to the container's first
successful ping through policy.

Sets up what tests/fv/test_libnetwork.py's `DockerHost` sets up (its own network
namespace `cnlb-<pid>`, etcd beside it, the real agent, a real dockerd and
calico-libnetwork in it), starts one server container (label role=server) and a
GlobalNetworkPolicy that lets into role=server only role=client. Then, per run, it
starts a client container (`docker run -d --label org.projectcalico.label.role=client`)
and pings the server from inside the client's namespace every few milliseconds
until one echo comes back: the time from the start of `docker run` to that echo
includes Docker's start, the plugin's address and endpoint, the label read from
the Docker API and the agent's routes and nftables rules for the labelled endpoint.
The same is measured without the policy (the network's profile alone, no wait for
labels) for comparison. Each client is removed (`docker rm -f`) after its run.

    .venv/bin/python bench/bench_libnetwork.py [--runs 20]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NET = "198.18.143"
POOL = "198.19.122.0/24"


def _harness():
    spec = importlib.util.spec_from_file_location("ln_fv", REPO / "tests" / "fv" / "test_libnetwork.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["ln_fv"] = mod
    spec.loader.exec_module(mod)
    return mod


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]


def one_run(fv, host, i: int, server_ip: str, tag: str) -> dict[str, float]:
    name = f"bench-{tag}-{i}"
    t0 = time.monotonic()
    cid = host.docker("run", "-d", "--name", name, "--net", "lbnet", "--label",
                      "org.projectcalico.label.role=client", fv.IMAGE, "sleep", "3600").stdout.strip()
    t_run = time.monotonic()
    pid = json.loads(host.docker("inspect", cid).stdout)[0]["State"]["Pid"]
    deadline = t0 + 30
    while True:
        p = subprocess.run(["nsenter", "-t", str(pid), "-n", "ping", "-c1", "-W", "0.2", server_ip],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if p.returncode == 0:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name}: no echo from {server_ip} in 30 s")
    t_ping = time.monotonic()
    host.docker("rm", "-f", name)
    return {"docker_run_s": t_run - t0, "first_ping_s": t_ping - t0}


def series(fv, host, runs: int, server_ip: str, tag: str) -> dict[str, float]:
    res = [one_run(fv, host, i, server_ip, tag) for i in range(runs)]
    pings = [r["first_ping_s"] for r in res]
    starts = [r["docker_run_s"] for r in res]
    return {"runs": runs, "first_ping_p50_s": round(statistics.median(pings), 3),
            "first_ping_p99_s": round(pct(pings, 99), 3), "first_ping_max_s": round(max(pings), 3),
            "docker_run_p50_s": round(statistics.median(starts), 3),
            "docker_run_p99_s": round(pct(starts, 99), 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_libnetwork needs root (network namespaces, dockerd)")
        return 1
    fv = _harness()
    host = fv.DockerHost(NET, POOL, tag="lb")
    try:
        t = time.monotonic()
        host.start()
        setup_s = time.monotonic() - t
        host.docker("network", "create", "--driver", "calico", "--ipam-driver", "calico-ipam",
                    "--subnet", POOL, "lbnet")
        server = host.run("bench-server", "lbnet", {"org.projectcalico.label.role": "server"})
        fv.wait_for(lambda: host.weps().get(server.endpoint, {}).get("spec", {}).get("containerID"), 10,
                    "server labelled")
        no_policy = series(fv, host, args.runs, server.ip, "np")
        host.ds.create({
            "apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
            "metadata": {"name": "bench-clients-only"},
            "spec": {"order": 10, "selector": "role == 'server'", "types": ["Ingress"],
                     "ingress": [{"action": "Allow", "source": {"selector": "role == 'client'"}},
                                 {"action": "Deny"}]},
        })
        # the policy is in force: a container without the label gets no echo
        probe = host.run("bench-probe", "lbnet")
        time.sleep(2)
        assert not host.ping_from(probe, server.ip, timeout=0.5), "policy not in force"
        host.docker("rm", "-f", "bench-probe")
        with_policy = series(fv, host, args.runs, server.ip, "p")
        out = {"setup_s (netns, etcd, agent, dockerd, plugin, image)": round(setup_s, 2),
               "profile_only": no_policy, "through_label_policy": with_policy}
        print(json.dumps(out, indent=2))
        return 0
    finally:
        host.close()


if __name__ == "__main__":
    sys.exit(main())
