"""Bench: the policy dataplane (index → nft) at 10,000 local endpoints.

Runs itself inside a throwaway network namespace (``cnfv-pol-bench``, deleted at the
end) so ``table inet calico`` there touches nothing else; the agent runs nft in its
own namespace too, so nft is called directly (no ``ip netns exec`` per call).

Prints:
  * cold start: 10,000 endpoints, 1,000 policies, 100 profiles → time from the first
    update() to the applied table (index, render, nft write broken down), against
    loading the very same ruleset text with one ``nft -f`` (table deleted first);
  * one endpoint added at 10,000 → apply latency p50/p99 (``--adds`` samples);
  * one endpoint's labels changed (moves between selectors) → p50/p99;
  * one policy's rules changed → p50/p99;
  * alongside wall times, this process's CPU time (``time.process_time``; nft's own
    CPU is not in it), since a shared machine inflates wall times;
  * refresh() (read back + compare) and a restarted dataplane adopting the table;
  * RSS of this process.

Usage: sudo .venv/bin/python bench/bench_policy.py [--endpoints 10000] [--policies 1000]
       [--profiles 100] [--adds 50]
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NS = "cnfv-pol-bench"
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))


def pct(values: list[float], p: float) -> float:
    v = sorted(values)
    k = min(len(v) - 1, max(0, int(round(p / 100 * (len(v) - 1)))))
    return v[k]


def fmt_ms(values: list[float]) -> str:
    return (f"p50 {pct(values, 50) * 1000:7.1f} ms   p99 {pct(values, 99) * 1000:7.1f} ms   "
            f"max {max(values) * 1000:7.1f} ms   (n={len(values)})")


def wep(i: int, n_profiles: int, labels_extra: dict[str, str] | None = None) -> dict:
    ns = f"ns-{i % 20}"
    labels = {"app": f"app-{i % 200}", "tier": ("fe", "be", "db")[i % 3],
              "env": ("prod", "dev")[i % 2], **(labels_extra or {})}
    return {
        "kind": "WorkloadEndpoint",
        "metadata": {"name": f"wep-{i}", "namespace": ns, "labels": labels},
        "spec": {"node": "bench-node", "orchestrator": "k8s", "interfaceName": f"cali{i:011x}",
                 "ipNetworks": [f"198.19.{i // 250}.{i % 250 + 1}/32"],
                 "profiles": [f"prof-{i % n_profiles}"],
                 "ports": [{"name": "http", "protocol": "TCP", "port": 8080}]},
    }


def policy(p: int, port_shift: int = 0) -> tuple[str, str, str | None, dict]:
    if p < 800:
        spec = {
            "order": p % 50,
            "selector": f"app == 'app-{p % 200}'",
            "ingress": [
                {"action": "Allow", "protocol": "TCP",
                 "source": {"selector": f"app == 'app-{(p + 1) % 200}'"},
                 "destination": {"ports": [80 + p % 10 + port_shift, "8000:8100"]}},
                {"action": "Allow", "protocol": "TCP",
                 "source": {"selector": f"tier == 'fe' && app == 'app-{(p + 2) % 200}'"},
                 "destination": {"ports": ["http"]}},
                {"action": "Deny", "source": {"nets": ["198.18.128.0/24"]}},
            ],
            "egress": [
                {"action": "Allow", "destination": {"selector": f"app == 'app-{(p + 7) % 200}'"}},
                {"action": "Pass"},
            ],
        }
        return "GlobalNetworkPolicy", f"gnp-{p}", None, {
            "kind": "GlobalNetworkPolicy", "metadata": {"name": f"gnp-{p}"}, "spec": spec}
    ns = f"ns-{p % 20}"
    spec = {
        "order": 100 + p % 10,
        "selector": f"tier == '{('fe', 'be', 'db')[p % 3]}'",
        "ingress": [{"action": "Allow", "protocol": "TCP",
                     "source": {"selector": f"app == 'app-{p % 200}'"},
                     "destination": {"ports": [5000 + p % 100 + port_shift]}}],
    }
    return "NetworkPolicy", f"np-{p}", ns, {
        "kind": "NetworkPolicy", "metadata": {"name": f"np-{p}", "namespace": ns}, "spec": spec}


def profile(i: int) -> dict:
    return {"kind": "Profile", "metadata": {"name": f"prof-{i}"},
            "spec": {"labelsToApply": {"prof": f"prof-{i}"},
                     "ingress": [{"action": "Allow", "source": {"selector": f"prof == 'prof-{i}'"}},
                                 {"action": "Allow", "protocol": "TCP",
                                  "source": {"selector": "env == 'prod'"}, "destination": {"ports": [443]}}],
                     "egress": [{"action": "Allow"}]}}


def breakdown(stats: list) -> str:
    med = lambda xs: statistics.median(xs) * 1000  # noqa: E731
    nl = sum(1 for s in stats if s.netlink)
    return (f"median index {med([s.index_seconds for s in stats]):.1f} ms, render "
            f"{med([s.render_seconds for s in stats]):.1f} ms, write "
            f"{med([s.write_seconds for s in stats]):.1f} ms; {nl}/{len(stats)} as netlink "
            f"element batches, the rest one nft -f")


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def inner(args: argparse.Namespace) -> None:
    from calico_net.agent.felix.nft import NftRunner
    from calico_net.agent.felix.policy import PolicyDataplane

    n_ep, n_pol, n_prof = args.endpoints, args.policies, args.profiles
    print(f"policy dataplane bench: {n_ep} local endpoints, {n_pol} policies, {n_prof} profiles "
          f"(netns {NS}, {os.cpu_count()} CPUs)")

    def load(dp: PolicyDataplane) -> None:
        for i in range(n_prof):
            dp.update("Profile", f"prof-{i}", None, profile(i))
        for p in range(n_pol):
            kind, name, ns, doc = policy(p)
            dp.update(kind, name, ns, doc)
        dp.update("IPPool", "pool", None, {"kind": "IPPool", "metadata": {"name": "pool"},
                                           "spec": {"cidr": "198.19.0.0/16", "natOutgoing": True}})
        for i in range(n_ep):
            doc = wep(i, n_prof)
            dp.update("WorkloadEndpoint", doc["metadata"]["name"], doc["metadata"]["namespace"], doc)

    # --- cold start (wall and this process's CPU time: the machine may be shared)
    t0 = time.perf_counter()
    c0 = time.process_time()
    dp = PolicyDataplane("bench-node", nft=NftRunner())
    load(dp)
    t_upd = time.perf_counter() - t0
    c1 = time.process_time()
    st = dp.apply()
    t_cold = time.perf_counter() - t0
    c_cold = time.process_time() - c0
    text = dp.ruleset_text()
    n_chains = len(dp.rs.chains)
    n_sets = len(dp.rs.sets)
    n_elems = sum(len(s.elements) for s in dp.rs.sets.values())
    print(f"\ncold start: {t_cold:6.2f} s to programmed  (update() x{n_ep + n_pol + n_prof + 1}: "
          f"{t_upd:.2f} s, index {st.index_seconds:.2f} s, render {st.render_seconds:.2f} s, "
          f"nft write {st.write_seconds:.2f} s)")
    print(f"  CPU of this process: {c_cold:.2f} s (update() {c1 - c0:.2f} s, apply() "
          f"{c_cold - (c1 - c0):.2f} s; nft's own CPU is not included)")
    print(f"  table: {text.count(chr(10))} script lines, {n_chains} chains, {n_sets} sets/maps, "
          f"{n_elems} elements; RSS {rss_mb():.0f} MB")

    # --- same text with one nft -f
    with tempfile.NamedTemporaryFile("w", suffix=".nft", delete=False) as f:
        f.write(text)
        path = f.name
    baseline = []
    for _ in range(3):
        subprocess.run(["nft", "delete", "table", "inet", "calico"], check=True)
        t = time.perf_counter()
        subprocess.run(["nft", "-f", path], check=True)
        baseline.append(time.perf_counter() - t)
    os.unlink(path)
    b = min(baseline)
    print(f"  baseline: the same ruleset with one `nft -f`: {b:.2f} s (best of 3: "
          + ", ".join(f"{x:.2f}" for x in baseline) + f") → agent/nft = {t_cold / b:.2f}x")
    # the table now is the baseline's load of the same text; make the writer rewrite
    # it so handles/state are the dataplane's own again
    dp.writer.write(dp.rs, full=True)

    # --- one endpoint added at n_ep
    adds = []
    stats = []
    cpu: list[float] = []
    for k in range(args.adds):
        i = n_ep + k
        doc = wep(i, n_prof)
        dp.update("WorkloadEndpoint", doc["metadata"]["name"], doc["metadata"]["namespace"], doc)
        t = time.perf_counter()
        c = time.process_time()
        stats.append(dp.apply())
        adds.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    print(f"\none endpoint added at {n_ep}:            {fmt_ms(adds)}")
    print("   " + breakdown(stats) + f"; CPU of this process {fmt_ms(cpu)}")

    # --- one endpoint's labels changed (leaves some selectors, joins others)
    moves = []
    stats = []
    for k in range(args.adds):
        i = k * 37 % n_ep
        doc = wep(i, n_prof, {"app": f"app-{(i + 1) % 200}"})
        dp.update("WorkloadEndpoint", doc["metadata"]["name"], doc["metadata"]["namespace"], doc)
        t = time.perf_counter()
        stats.append(dp.apply())
        moves.append(time.perf_counter() - t)
    print(f"one endpoint relabelled at {n_ep}:        {fmt_ms(moves)}")
    print("   " + breakdown(stats))
    # relabel within known combinations: only set/map elements change
    moves = []
    stats = []
    for k in range(args.adds):
        i = (k * 41 + 5) % n_ep
        doc = wep(i, n_prof, {"env": "prod" if i % 2 else "dev"})   # env flips
        dp.update("WorkloadEndpoint", doc["metadata"]["name"], doc["metadata"]["namespace"], doc)
        t = time.perf_counter()
        stats.append(dp.apply())
        moves.append(time.perf_counter() - t)
    print(f"one endpoint relabelled, same policies: {fmt_ms(moves)}")
    print("   " + breakdown(stats))

    # --- one policy's rules changed
    pols = []
    stats = []
    cpu = []
    for k in range(args.adds):
        p = (k * 13) % n_pol
        kind, name, ns, doc = policy(p, port_shift=1 + k)
        dp.update(kind, name, ns, doc)
        t = time.perf_counter()
        c = time.process_time()
        stats.append(dp.apply())
        pols.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    print(f"one policy changed at {n_ep} endpoints:  {fmt_ms(pols)}")
    print("   " + breakdown(stats) + f"; CPU of this process {fmt_ms(cpu)}")

    # --- refresh and restart adoption
    t = time.perf_counter()
    drift = dp.refresh()
    t_ref = time.perf_counter() - t
    print(f"\nrefresh() (netlink read-back + compare): {t_ref:.2f} s (drift: {drift})")
    t = time.perf_counter()
    dp2 = PolicyDataplane("bench-node", nft=NftRunner())
    load(dp2)
    for k in range(args.adds):
        doc = wep(n_ep + k, n_prof)
        dp2.update("WorkloadEndpoint", doc["metadata"]["name"], doc["metadata"]["namespace"], doc)
    for k in range(args.adds):
        i = k * 37 % n_ep
        doc = wep(i, n_prof, {"app": f"app-{(i + 1) % 200}"})
        dp2.update("WorkloadEndpoint", doc["metadata"]["name"], doc["metadata"]["namespace"], doc)
    for k in range(args.adds):
        i = (k * 41 + 5) % n_ep
        doc = wep(i, n_prof, {"env": "prod" if i % 2 else "dev"})
        dp2.update("WorkloadEndpoint", doc["metadata"]["name"], doc["metadata"]["namespace"], doc)
    for k in range(args.adds):
        p = (k * 13) % n_pol
        kind, name, ns, doc = policy(p, port_shift=1 + k)
        dp2.update(kind, name, ns, doc)
    s2 = dp2.apply()
    print(f"restarted dataplane, same state: {time.perf_counter() - t:.2f} s, "
          f"adopted the live table without writing: {s2.adopted}")
    print(f"\nmax RSS of this process: {rss_mb():.0f} MB (two dataplanes were alive at the end)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoints", type=int, default=10000)
    ap.add_argument("--policies", type=int, default=1000)
    ap.add_argument("--profiles", type=int, default=100)
    ap.add_argument("--adds", type=int, default=50)
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inner:
        inner(args)
        return
    if os.geteuid() != 0:
        sys.exit("bench_policy.py needs root (network namespace, nftables)")
    subprocess.run(["ip", "netns", "del", NS], stderr=subprocess.DEVNULL)
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        rc = subprocess.call(["ip", "netns", "exec", NS, sys.executable, __file__, "--inner",
                              "--endpoints", str(args.endpoints), "--policies", str(args.policies),
                              "--profiles", str(args.profiles), "--adds", str(args.adds)])
    finally:
        subprocess.run(["ip", "netns", "del", NS])
    sys.exit(rc)


if __name__ == "__main__":
    main()
