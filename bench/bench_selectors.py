"""Benchmark the selector library: bulk matching with LabelIndex vs per-label-set
evaluate, and parse/compile cost.

Builds 10,000 realistic workload/host endpoint label sets and 1,000 realistic
selectors (==, !=, in, not in, has, !, &&, ||, contains/starts with/ends with,
global()) from a fixed seed, then prints:

  (a) time for LabelIndex.select of all 1,000 selectors over all 10,000 label
      sets (target: <= 2 s on 2 cores),
  (b) the same via Selector.evaluate per label set (by default measured on a
      10% sample of the label sets and extrapolated, as printed; --full runs all),
  (c) parse time of the 1,000 selectors (cold cache), plus compile time.

Wall and CPU times are both printed (the machines are shared).  Figures only;
nothing here asserts on time; it exits non-zero only if the index and evaluate
disagree.  Run: .venv/bin/python bench/bench_selectors.py [--full]
"""
from __future__ import annotations

import os
import platform
import random
import statistics
import sys
import time
from typing import Callable

from calico_net.model.selector import NAMESPACE_LABEL, LabelIndex, parse_selector

SEED = 20240601
N_LABEL_SETS = 10_000
N_SELECTORS = 1_000
EVAL_SAMPLE = 1_000  # label sets used for the per-labels evaluate comparison

NAMESPACES = [f"team-{i:02d}" for i in range(40)] + ["default", "kube-system", "monitoring",
                                                     "ingress", "payments", "checkout"]
APP_STEMS = ["web", "api", "db", "cache", "queue", "worker", "auth", "payments", "search",
             "frontend", "backend", "billing", "ledger", "notify", "metrics", "logs", "cart",
             "catalog", "reco", "gateway"]
APPS = [f"{stem}-{i}" if i else stem for stem in APP_STEMS for i in range(10)]  # 200 apps
TIERS = ["frontend", "backend", "data", "infra"]
ENVS = ["prod", "staging", "dev", "qa"]
TEAMS = [f"squad-{c}" for c in "abcdefghijklmnop"]
VERSIONS = [f"v{major}.{minor}" for major in range(1, 4) for minor in range(8)]
ZONES = ["zone-a", "zone-b", "zone-c"]


def make_label_sets(rng: random.Random) -> list[dict[str, str]]:
    sets: list[dict[str, str]] = []
    for i in range(N_LABEL_SETS):
        if rng.random() < 0.03:
            # Host endpoints: no namespace label (these are what global() selects).
            labels = {"kubernetes.io/hostname": f"node-{i % 300:03d}", "role": "host",
                      "topology.kubernetes.io/zone": rng.choice(ZONES)}
            if rng.random() < 0.3:
                labels["edge"] = "true"
            sets.append(labels)
            continue
        app = rng.choice(APPS)
        labels = {
            NAMESPACE_LABEL: rng.choice(NAMESPACES),
            "projectcalico.org/orchestrator": "k8s",
            "projectcalico.org/serviceaccount": f"sa-{app}",
            "app": app,
            "tier": rng.choice(TIERS),
            "env": rng.choices(ENVS, weights=[5, 2, 2, 1])[0],
            "pod-template-hash": f"{rng.getrandbits(40):010x}",
        }
        if rng.random() < 0.8:
            labels["version"] = rng.choice(VERSIONS)
        if rng.random() < 0.6:
            labels["team"] = rng.choice(TEAMS)
        if rng.random() < 0.1:
            labels["statefulset.kubernetes.io/pod-name"] = f"{app}-{rng.randrange(5)}"
        if rng.random() < 0.02:
            labels["quarantine"] = "true"
        if rng.random() < 0.25:
            labels["topology.kubernetes.io/zone"] = rng.choice(ZONES)
        sets.append(labels)
    return sets


def make_selectors(rng: random.Random) -> list[str]:
    def q(v: str) -> str:
        return f"'{v}'" if rng.random() < 0.3 else f'"{v}"'

    def some(xs: list[str], lo: int, hi: int) -> str:
        return ", ".join(q(x) for x in rng.sample(xs, rng.randint(lo, hi)))

    templates: list[tuple[int, Callable[[], str]]] = [
        (20, lambda: f"app == {q(rng.choice(APPS))}"),
        (12, lambda: f"app == {q(rng.choice(APPS))} && tier == {q(rng.choice(TIERS))}"),
        (12, lambda: f"{NAMESPACE_LABEL} == {q(rng.choice(NAMESPACES))} && app in {{{some(APPS, 2, 6)}}}"),
        (8, lambda: f"has(team) && env != {q(rng.choice(ENVS))}"),
        (6, lambda: f"tier in {{{some(TIERS, 1, 2)}}} && !has(quarantine)"),
        (6, lambda: f"app == {q(rng.choice(APPS))} || app == {q(rng.choice(APPS))}"),
        (6, lambda: f"!(env == {q(rng.choice(ENVS))}) && tier == {q(rng.choice(TIERS))}"),
        (5, lambda: f"app contains {q(rng.choice(APP_STEMS))} && env == 'prod'"),
        (4, lambda: f"app starts with {q(rng.choice(APP_STEMS) + '-')} || team ends with {q(rng.choice('abcdef'))}"),
        (5, lambda: f"{NAMESPACE_LABEL} in {{{some(NAMESPACES, 1, 3)}}} && version not in {{{some(VERSIONS, 1, 4)}}}"),
        (4, lambda: (f"(app == {q(rng.choice(APPS))} || role == 'host') && "
                     f"topology.kubernetes.io/zone == {q(rng.choice(ZONES))}")),
        (4, lambda: f"team in {{{some(TEAMS, 1, 4)}}} && (tier == 'data' || has(statefulset.kubernetes.io/pod-name))"),
        (3, lambda: f"global() && role == 'host' && !has(edge)"),
        (3, lambda: f"projectcalico.org/serviceaccount == {q('sa-' + rng.choice(APPS))}"),
        (2, lambda: f"!has({NAMESPACE_LABEL}) || {NAMESPACE_LABEL} == 'kube-system'"),
        (1, lambda: "all()"),
    ]
    weights = [w for w, _ in templates]
    makers = [m for _, m in templates]
    return [rng.choices(makers, weights=weights)[0]() for _ in range(N_SELECTORS)]


class Timing:
    """Best-of-n wall-clock and CPU time of one measurement.  CPU time is printed
    too because these machines are shared: under load, wall time overstates."""

    def __init__(self, wall: float, cpu: float) -> None:
        self.wall, self.cpu = wall, cpu

    def __str__(self) -> str:
        return f"{self.wall:.3f} s wall / {self.cpu:.3f} s CPU"


def timed(fn: Callable[[], object], repeat: int = 3) -> tuple[Timing, object]:
    walls, cpus = [], []
    result: object = None
    for _ in range(repeat):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - wall0)
        cpus.append(time.process_time() - cpu0)
    return Timing(min(walls), min(cpus)), result


def main() -> None:
    full = "--full" in sys.argv[1:]
    eval_sample = N_LABEL_SETS if full else EVAL_SAMPLE
    rng = random.Random(SEED)
    label_sets = make_label_sets(rng)
    texts = make_selectors(rng)
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
          f"seed {SEED}; load average {os.getloadavg()[0]:.2f}")
    print(f"{len(label_sets):,} label sets (avg {statistics.mean(map(len, label_sets)):.1f} labels), "
          f"{len(texts):,} selectors ({len(set(texts)):,} distinct texts)")

    # (c) parsing, with a cold cache; then compiling each selector's evaluator.
    parse_selector.cache_clear()
    parse_t, parsed = timed(lambda: [parse_selector(t) for t in texts], repeat=1)
    assert isinstance(parsed, list)
    selectors = parsed
    cached_t, _ = timed(lambda: [parse_selector(t) for t in texts])
    distinct = list(dict.fromkeys(selectors))  # equal ASTs from different texts count once
    compile_t, _ = timed(lambda: [sel.compiled() for sel in distinct], repeat=1)

    # Index build.
    def build() -> LabelIndex:
        idx = LabelIndex()
        for i, labels in enumerate(label_sets):
            idx.add(i, labels)
        return idx

    build_t, index_obj = timed(build, repeat=1)
    assert isinstance(index_obj, LabelIndex)
    index = index_obj

    # (a) bulk selection via the index.
    select_t, select_results = timed(lambda: [index.select(sel) for sel in selectors])
    assert isinstance(select_results, list)
    total_matches = sum(len(r) for r in select_results)

    # (b) per-label-set evaluate on a sample, extrapolated to all label sets.
    sample_ids = list(range(0, N_LABEL_SETS, N_LABEL_SETS // eval_sample))[:eval_sample]
    sample = [(i, label_sets[i]) for i in sample_ids]

    def brute() -> list[set[int]]:
        out = []
        for sel in selectors:
            ev = sel.evaluate
            out.append({i for i, labels in sample if ev(labels)})
        return out

    brute_t, brute_results = timed(brute, repeat=1)
    assert isinstance(brute_results, list)
    sample_set = set(sample_ids)
    mismatches = sum(1 for got, want in zip(select_results, brute_results) if (got & sample_set) != want)
    evals = len(selectors) * len(sample)
    scale = N_LABEL_SETS / len(sample)
    n_sel = len(selectors)

    print()
    print(f"(a) LabelIndex.select, {n_sel:,} selectors x {N_LABEL_SETS:,} label sets: {select_t} "
          f"(best of 3; {select_t.cpu / n_sel * 1e3:.3f} ms CPU/selector; {total_matches:,} matches)")
    print(f"    index build, {N_LABEL_SETS:,} add() calls: {build_t}")
    if full:
        print(f"(b) Selector.evaluate on every label set, {n_sel:,} x {N_LABEL_SETS:,}: {brute_t} "
              f"({brute_t.cpu / evals * 1e9:.0f} ns CPU per evaluation)")
    else:
        print(f"(b) Selector.evaluate per label set, measured on a SAMPLE of {len(sample):,} label sets "
              f"(every {int(scale)}th), {n_sel:,} x {len(sample):,}: {brute_t} "
              f"({brute_t.cpu / evals * 1e9:.0f} ns CPU per evaluation)")
        print(f"    extrapolated x{scale:g} to all {N_LABEL_SETS:,} label sets: "
              f"~{brute_t.wall * scale:.1f} s wall / ~{brute_t.cpu * scale:.1f} s CPU "
              f"(run with --full to measure it)")
    print(f"    index speed-up (CPU): {brute_t.cpu * scale / select_t.cpu:.0f}x; "
          f"index and evaluate disagree on {mismatches} of {n_sel:,} selectors")
    print(f"(c) parse {len(texts):,} selectors, cold cache: {parse_t} "
          f"({parse_t.cpu / len(texts) * 1e6:.1f} us CPU each); cached re-parse: "
          f"{cached_t.cpu * 1e3:.2f} ms CPU")
    print(f"    compile {len(distinct):,} distinct selectors to evaluators: {compile_t} "
          f"({compile_t.cpu / len(distinct) * 1e6:.0f} us CPU each)")
    if mismatches:
        sys.exit("index and evaluate disagree")


if __name__ == "__main__":
    main()
