#!/usr/bin/env python3
"""VXLAN without BIRD: a block claimed for one host -> its route in another host's kernel.

Builds the overlay FV cluster of tests/fv/encap_util.py with the ``vxlan`` networking
backend (three host namespaces on two routed subnets, one etcd, the real agent on every
host, no confd, no BIRD) and switches its pool to ``vxlanMode: Always``. The agents then
give every node a VXLAN tunnel address and program the routes to each other's blocks
themselves, from the datastore, as Felix's VXLAN manager does.

One sample: IPAM ``claim_affinity`` makes a free /26 of the pool affine to host A
(h1, subnet a); timed from the start of that call to the netlink event of the route
``<block> via <A's tunnel address> dev vxlan.calico onlink`` in host B's namespace (h3,
subnet b), seen by an ``ip -o monitor route`` running there. So it includes the IPAM
transaction, B's agent's etcd watch, its recomputation and the netlink write. The
affinity is then released and the route's removal is timed the same way (the second
figure), before the next sample starts.

The cluster's namespaces are named ``cnbench-enc-*`` (uplink 198.18.166.0/24), not the
FV tests' ``cnfv-enc-*``, so the bench may run while those tests do.

Run as root: ``.venv/bin/python bench/bench_encap_routes.py [--samples 50]``.
Prints figures; asserts nothing (target: p99 <= 1 s for the new route).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "fv"))
sys.path.insert(0, str(REPO / "tests"))

import bgp_util as bu  # noqa: E402
import encap_util as eu  # noqa: E402
from bench_bgp import fmt_ms, pct  # noqa: E402

# The bench's own names and uplink subnet, so a run next to the overlay FV tests (which
# clean up every namespace named cnfv-enc-*) neither breaks them nor is broken by them.
BENCH_PREFIX = "cnbench-enc-"
BENCH_ROOT_IF = "cnbenchenc0"
BENCH_UPLINK = "198.18.166"

MARKER = "198.18.249.0/24"  # a throw-away blackhole route that proves the monitor listens
ROUTE_TYPES = {"unicast", "blackhole", "unreachable", "prohibit", "local", "broadcast",
               "multicast", "throw", "anycast", "nat"}
CONVERGE = 60.0  # hang guard while the cluster settles


def _prefix(token: str) -> str:
    """`ip monitor` prints a /32 without its length."""
    return token if "/" in token else f"{token}/32"


class RouteMonitor:
    """``ip -o monitor route`` in a namespace; every event timestamped on arrival."""

    def __init__(self, ns: str) -> None:
        self.events: list[tuple[float, bool, str, str]] = []  # (t, added, prefix, line)
        self.cond = threading.Condition()
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, "ip", "-o", "monitor", "route"],
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        threading.Thread(target=self._read, daemon=True).start()
        # `ip monitor` subscribes some time after it starts: add the marker again until
        # an addition is seen (an event before the subscription is simply lost).
        deadline = time.monotonic() + 10
        while True:
            bu.sh("ip", "route", "replace", "blackhole", MARKER, ns=ns)
            seen = self.wait_for(lambda e: e[1] and e[2] == MARKER, 0, 0.5)
            bu.sh("ip", "route", "del", "blackhole", MARKER, ns=ns, check=False)
            if seen is not None:
                break
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"ip monitor in {ns} saw nothing")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            t = time.monotonic()
            parts = line.split()
            added = not (parts and parts[0] == "Deleted")
            if not added:
                parts = parts[1:]
            if parts and parts[0] in ROUTE_TYPES:
                parts = parts[1:]
            if not parts:
                continue
            with self.cond:
                self.events.append((t, added, _prefix(parts[0]), line.strip()))
                self.cond.notify_all()

    def wait_for(self, match, since: float, timeout: float) -> float | None:
        """Time of the first event at or after ``since`` that ``match`` accepts, or None."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for ev in self.events:
                    if ev[0] >= since and match(ev):
                        return ev[0]
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def forget_before(self, t: float) -> None:
        with self.cond:
            self.events = [e for e in self.events if e[0] >= t]

    def stop(self) -> None:
        bu.stop_process(self.proc, grace=2)


def isolate() -> None:
    """Give the harness (tests/fv/encap_util.py, whose names are module constants) the
    bench's names. Everything it builds and removes is found through these."""
    eu.PREFIX = BENCH_PREFIX
    eu.RT_NS = BENCH_PREFIX + "rt"
    eu.ROOT_IF = BENCH_ROOT_IF
    eu.UPLINK = BENCH_UPLINK
    eu.TOOL = Path("/tmp") / f"cnbench-enc-tool-{os.getpid()}.py"


def free_blocks(c: eu.Cluster, count: int) -> list[str]:
    """`count` /26 blocks of the pool that no node holds."""
    taken = {str(b.cidr) for b in c.ipam.blocks(4)}
    out = []
    for net in ipaddress.ip_network(eu.POOL_CIDR).subnets(new_prefix=26):
        if str(net) not in taken:
            out.append(str(net))
        if len(out) == count:
            return out
    raise RuntimeError(f"the pool {eu.POOL_CIDR} has only {len(out)} free blocks, {count} wanted")


def tunnel_addr(c: eu.Cluster, h: eu.EncHost) -> str | None:
    return (c.node(h).get("spec") or {}).get("ipv4VXLANTunnelAddr")


def settle(c: eu.Cluster, a: eu.EncHost, b: eu.EncHost) -> str:
    """Wait for the overlay: tunnel addresses on every Node, and B routing A's
    existing blocks through vxlan.calico. Returns A's tunnel address."""
    bu.wait_for(lambda: all(tunnel_addr(c, h) for h in c.hosts), CONVERGE,
                "a VXLAN tunnel address on every Node", c.diag)
    gw = tunnel_addr(c, a)
    assert gw is not None

    def routed() -> bool:
        routes = b.routes("80")
        return all((r := routes.get(blk)) is not None and r.get("dev") == "vxlan.calico"
                   and r.get("gateway") == gw for blk in c.blocks_of(a))
    bu.wait_for(routed, CONVERGE, f"{b.name} routes {a.name}'s blocks via vxlan.calico", c.diag)
    return gw


def samples(c: eu.Cluster, a: eu.EncHost, b: eu.EncHost, gw: str, mon: RouteMonitor, n: int,
            timeout: float) -> tuple[list[float], list[float], list[float], int]:
    add_lat, del_lat, ipam_t = [], [], []
    missed = 0
    # a few blocks used in turn: each is released (and its route seen gone) before reuse
    rotation = free_blocks(c, 4)
    for i in range(n):
        block = rotation[i % len(rotation)]
        t0 = time.monotonic()
        claimed, failed = c.ipam.claim_affinity(a.name, block)
        t1 = time.monotonic()
        if failed or not claimed:
            raise RuntimeError(f"sample {i}: could not claim {block} for {a.name}")
        t = mon.wait_for(lambda e, blk=block: e[1] and e[2] == blk and "vxlan.calico" in e[3]
                         and f"via {gw} " in e[3], t0, timeout)
        if t is None:
            missed += 1
            print(f"  sample {i}: {block} not in {b.name}'s kernel after {timeout:.0f} s\n"
                  f"{c.diag()}", file=sys.stderr)
        else:
            add_lat.append(t - t0)
            ipam_t.append(t1 - t0)
        t2 = time.monotonic()
        c.ipam.release_affinity(a.name, block, must_be_empty=True)
        t = mon.wait_for(lambda e, blk=block: not e[1] and e[2] == blk, t2, timeout)
        if t is None:
            bu.wait_for(lambda blk=block: blk not in b.routes("80"), CONVERGE,
                        f"{block} gone from {b.name}", c.diag)
        else:
            del_lat.append(t - t2)
        mon.forget_before(time.monotonic())
    return add_lat, del_lat, ipam_t, missed


def line(what: str, values: list[float]) -> str:
    return (f"{what}, {len(values)} samples: p50 {fmt_ms(pct(values, 50))}, "
            f"p90 {fmt_ms(pct(values, 90))}, p99 {fmt_ms(pct(values, 99))}, "
            f"max {fmt_ms(max(values))}, mean {fmt_ms(statistics.mean(values))}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--timeout", type=float, default=10.0,
                    help="seconds one sample waits for its route before counting it missed")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2

    isolate()
    tmp = Path(tempfile.mkdtemp(prefix="bench-encap-"))
    c = eu.Cluster(tmp)
    mon = None
    try:
        t = time.monotonic()
        c.setup(bgp=False)
        c.set_pool(vxlan="Always")
        a, b = c.host("h1"), c.host("h3")
        gw = settle(c, a, b)
        print(f"cluster: {len(c.hosts)} hosts, backend vxlan (no BIRD), pool {eu.POOL_CIDR} "
              f"vxlanMode Always, ready in {time.monotonic() - t:.1f} s "
              f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
        mon = RouteMonitor(b.ns)
        add_lat, del_lat, ipam_t, missed = samples(c, a, b, gw, mon, args.samples, args.timeout)
        if add_lat:
            print(line(f"block claimed for {a.name} -> route via vxlan.calico in {b.name}'s kernel",
                       add_lat) + " (target p99 <= 1 s)")
            print(f"  of which the IPAM claim_affinity call: p50 {fmt_ms(pct(ipam_t, 50))}, "
                  f"max {fmt_ms(max(ipam_t))}")
        if del_lat:
            print(line(f"affinity released -> route gone from {b.name}'s kernel", del_lat))
        if missed:
            print(f"{missed} of {args.samples} samples never saw their route within {args.timeout:.0f} s")
    finally:
        if mon is not None:
            mon.stop()
        c.teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
