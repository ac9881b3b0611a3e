"""Bench: how long confd takes to render and check BIRD configuration.

Prints, for node-to-node meshes of growing size (and 50 global peers on top), the
time to build the model and render the template, the size of the result, and the
time ``bird -p -c`` takes to parse it. Figures only; no assertions.

    .venv/bin/python bench/bench_confd_render.py
"""

from __future__ import annotations

import ipaddress
import shutil
import statistics
import time

from calico_net.agent.confd.render import render_bird_config, validate_bird_config


def resources(n_nodes: int, n_global: int) -> tuple[list[dict], list[dict], list[dict]]:
    base = int(ipaddress.IPv4Address("198.18.0.10"))
    nodes = [
        {
            "kind": "Node",
            "metadata": {"name": f"node-{i:04d}"},
            "spec": {"bgp": {"ipv4Address": f"{ipaddress.IPv4Address(base + i)}/15"}},
        }
        for i in range(n_nodes)
    ]
    peers = [
        {"kind": "BGPPeer", "metadata": {"name": f"tor-{i:02d}"},
         "spec": {"peerIP": f"198.19.255.{i + 1}", "asNumber": 65000 + i}}
        for i in range(n_global)
    ]
    pools = [{"kind": "IPPool", "metadata": {"name": "p"}, "spec": {"cidr": "198.19.0.0/17"}}]
    return nodes, peers, pools


def timed(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main() -> None:
    bird = shutil.which("bird") or "/usr/sbin/bird"
    print(f"{'nodes':>6} {'peers':>6} {'render ms':>10} {'bytes':>9} {'bird -p ms':>11}")
    for n_nodes, n_global in ((3, 0), (100, 0), (100, 50), (500, 50), (1000, 50)):
        nodes, peers, pools = resources(n_nodes, n_global)
        blocks = [f"198.19.{i}.0/26" for i in range(4)]
        render_s, text = timed(
            lambda: render_bird_config("node-0000", nodes, [], peers, pools, blocks), 5
        )
        parse_s, _ = timed(lambda: validate_bird_config(str(text), bird_binary=bird), 3)
        print(f"{n_nodes:>6} {n_global:>6} {render_s * 1000:>10.1f} {len(str(text)):>9} "
              f"{parse_s * 1000:>11.1f}")


if __name__ == "__main__":
    main()
