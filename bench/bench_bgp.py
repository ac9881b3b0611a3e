#!/usr/bin/env python3
"""BGP convergence on a real fabric: etcd → confd → BIRD → BGP → the peer's kernel.

Builds the FV fabric of tests/fv/bgp_util.py (host namespaces on a bridge, one etcd,
per host the real confd process and BIRD; BFD on through the ``calico-net.io/bfd``
annotation of BGPConfiguration ``default``) and measures:

1. new block: IPAM ``auto_assign`` on host A claims a new block (64 addresses of a /26
   pool, so every trial claims exactly one) → the block's route appears in host B's
   kernel. Timed from the start of the IPAM call to the netlink event seen by an
   ``ip monitor route`` running in B's namespace (so it includes the IPAM transaction,
   the etcd watch, confd's 50 ms coalescing, render, ``bird -p``, the file swap,
   ``birdc configure``, the BGP UPDATE and BIRD's kernel write).
2. dead BIRD: host A's BIRD is SIGKILLed (by PID) → every block of A gone from B's
   kernel. With BFD (300 ms × 5) B notices within 1.5 s; without BFD graceful restart
   keeps A's routes as stale for 120 s (measured up to ``--no-bfd-cap`` seconds with
   ``--compare-no-bfd``).
3. service CIDR: BGPConfiguration ``default`` gets a new ``serviceClusterIPs`` entry →
   the route is in a top-of-rack BIRD's kernel (it peers with every host). Timed from
   the etcd write to the ``ip monitor route`` event in the ToR's namespace.

Run as root: ``.venv/bin/python bench/bench_bgp.py [--trials 20] [--kill-trials 3]``.
Prints figures; asserts nothing (targets: p99 ≤ 2 s, routes gone ≤ 10 s with BFD).
"""

from __future__ import annotations

import argparse
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

MARKER = "198.18.250.0/24"  # a throw-away route that proves the monitor is listening


class RouteMonitor:
    """``ip -o monitor route`` in a namespace; events timestamped on arrival."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self.events: list[tuple[float, bool, str, str]] = []  # (t, added, prefix, line)
        self.cond = threading.Condition()
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, "ip", "-o", "monitor", "route"],
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        threading.Thread(target=self._read, daemon=True).start()
        # Synchronise: wait until a route we add is seen.
        bu.sh("ip", "route", "add", MARKER, "via", f"{bu.FABRIC}.1", "proto", "static", ns=ns)
        self.wait_for(lambda e: e[1] and e[2] == MARKER, 0, 10)
        bu.sh("ip", "route", "del", MARKER, ns=ns)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            t = time.monotonic()
            parts = line.split()
            if not parts:
                continue
            added = parts[0] != "Deleted"
            prefix = parts[0] if added else (parts[1] if len(parts) > 1 else "")
            with self.cond:
                self.events.append((t, added, prefix, line.strip()))
                self.cond.notify_all()

    def wait_for(self, match, since: float, timeout: float) -> float | None:
        """Time of the first event after ``since`` that ``match`` accepts, or None."""
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

    def stop(self) -> None:
        bu.stop_process(self.proc, grace=2)


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def fmt_ms(v: float) -> str:
    return f"{v * 1000:.0f} ms"


def new_block_trials(f: bu.Fabric, a: bu.Host, b: bu.Host, mon: RouteMonitor,
                     trials: int) -> tuple[list[float], list[float]]:
    lat, ipam_t = [], []
    for i in range(trials):
        before = f.blocks_of(a)
        t0 = time.monotonic()
        f.ipam.auto_assign(f"bench-{a.name}-{i}", a.name, num_v4=64)
        t1 = time.monotonic()
        new = f.blocks_of(a) - before
        if not new:
            print(f"  trial {i}: no new block claimed?", file=sys.stderr)
            continue
        seen = []
        for block in new:
            t = mon.wait_for(lambda e, blk=block: e[1] and e[2] == blk and "proto bird" in e[3],
                             t0, 30)
            if t is None:
                print(f"  trial {i}: {block} never reached {b.name}\n{f.diag()}", file=sys.stderr)
                break
            seen.append(t)
        else:
            lat.append(max(seen) - t0)
            ipam_t.append(t1 - t0)
    return lat, ipam_t


def kill_trials(f: bu.Fabric, a: bu.Host, b: bu.Host, mon: RouteMonitor, trials: int,
                cap: float) -> list[float | None]:
    out: list[float | None] = []
    for i in range(trials):
        blocks = f.blocks_of(a)
        bu.wait_for(lambda: blocks <= set(b.routes()), 60, f"{a.name}'s blocks on {b.name}",
                    f.diag)
        t0 = time.monotonic()
        f.kill_bird(a)
        gone_at = []
        for block in blocks:
            t = mon.wait_for(lambda e, blk=block: not e[1] and e[2] == blk, t0, cap)
            if t is None:
                break
            gone_at.append(t)
        out.append(max(gone_at) - t0 if len(gone_at) == len(blocks) else None)
        # Bring A back and wait for the fabric to be whole again.
        f.start_bird(a)
        bu.wait_for(lambda: len(a.established()) >= len(f.hosts) - 1, 90,
                    f"{a.name} sessions back", f.diag)
    return out


def service_cidr_trials(f: bu.Fabric, trials: int) -> list[float]:
    """serviceClusterIPs written -> the CIDR in the ToR's kernel (BIRD's route)."""
    f.start_tor()
    f.apply({"apiVersion": "projectcalico.org/v3", "kind": "BGPPeer", "metadata": {"name": "tor"},
             "spec": {"peerIP": bu.TOR_IP, "asNumber": bu.TOR_AS}})
    bu.wait_for(lambda: all(f"host_{h.name}" in bu.established(f.tor_sock) for h in f.hosts), 120,
                "ToR sessions Established", f.diag)
    mon = RouteMonitor(bu.TOR_NS)
    lat = []
    try:
        for i in range(trials):
            cidr = f"198.18.203.{i % 250 + 1}/32"
            doc = f.ds.get("BGPConfiguration", "default")
            doc["spec"]["serviceClusterIPs"] = [{"cidr": cidr}]
            t0 = time.monotonic()
            f.ds.replace(doc)
            t = mon.wait_for(lambda e, c=cidr: e[1] and e[2] == c.split("/")[0] and "proto bird" in e[3],
                             t0, 30)
            if t is None:
                print(f"  trial {i}: {cidr} never reached the ToR\n{f.diag()}", file=sys.stderr)
                continue
            lat.append(t - t0)
    finally:
        mon.stop()
    return lat


def set_bfd(f: bu.Fabric, on: bool) -> None:
    doc = f.ds.get("BGPConfiguration", "default")
    doc["metadata"].setdefault("annotations", {})["calico-net.io/bfd"] = "true" if on else "false"
    f.ds.replace(doc)
    want = "protocol bfd" if on else None
    bu.wait_for(lambda: all((want in h.bird_cfg.read_text()) if want else
                            ("protocol bfd" not in h.bird_cfg.read_text()) for h in f.hosts),
                60, "BFD switched in every config")
    bu.wait_for(lambda: all(len(h.established()) >= len(f.hosts) - 1 for h in f.hosts), 90,
                "sessions up after the BFD switch", f.diag)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=3)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--kill-trials", type=int, default=3)
    ap.add_argument("--kill-cap", type=float, default=15.0,
                    help="seconds to wait for a dead BIRD's routes to go (BFD on)")
    ap.add_argument("--compare-no-bfd", action="store_true",
                    help="also kill BIRD once with BFD off (graceful restart keeps routes)")
    ap.add_argument("--no-bfd-cap", type=float, default=20.0)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="bench-bgp-"))
    f = bu.Fabric(tmp, args.hosts, bfd=True)
    mon = None
    try:
        t = time.monotonic()
        f.setup()
        a, b = f.hosts[0], f.hosts[1]
        for h in f.hosts:
            f.add_workload(h)
        bu.wait_for(lambda: all(len(h.established()) == len(f.hosts) - 1 for h in f.hosts),
                    120, "full mesh", f.diag)
        print(f"fabric: {args.hosts} hosts, full mesh with BFD up in {time.monotonic() - t:.1f} s "
              f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
        mon = RouteMonitor(b.ns)

        lat, ipam_t = new_block_trials(f, a, b, mon, args.trials)
        if lat:
            print(f"new block on {a.name} -> route in {b.name}'s kernel, {len(lat)} trials: "
                  f"p50 {fmt_ms(pct(lat, 50))}, p90 {fmt_ms(pct(lat, 90))}, "
                  f"p99 {fmt_ms(pct(lat, 99))}, max {fmt_ms(max(lat))}, "
                  f"mean {fmt_ms(statistics.mean(lat))} (target p99 <= 2 s)")
            print(f"  of which the IPAM auto_assign call (claim + 64 addresses): "
                  f"p50 {fmt_ms(pct(ipam_t, 50))}, max {fmt_ms(max(ipam_t))}")

        svc = service_cidr_trials(f, args.trials)
        if svc:
            print(f"serviceClusterIPs change -> route in the ToR's kernel, {len(svc)} trials: "
                  f"p50 {fmt_ms(pct(svc, 50))}, p90 {fmt_ms(pct(svc, 90))}, "
                  f"p99 {fmt_ms(pct(svc, 99))}, max {fmt_ms(max(svc))}")

        kills = kill_trials(f, a, b, mon, args.kill_trials, args.kill_cap)
        shown = ", ".join(f"{k:.2f} s" if k is not None else f"> {args.kill_cap:.0f} s"
                          for k in kills)
        print(f"BIRD on {a.name} SIGKILLed -> its {len(f.blocks_of(a))} blocks gone from "
              f"{b.name}'s kernel, BFD 300 ms x 5: {shown} (target <= 10 s)")

        if args.compare_no_bfd:
            set_bfd(f, False)
            k = kill_trials(f, a, b, mon, 1, args.no_bfd_cap)[0]
            print(f"  same without BFD: "
                  + (f"{k:.2f} s" if k is not None else
                     f"still routed after {args.no_bfd_cap:.0f} s (graceful restart keeps them "
                     "as stale for 120 s)"))
    finally:
        if mon is not None:
            mon.stop()
        f.teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
