#!/usr/bin/env python3
"""The agent in a big cluster: few local endpoints, very many remote ones (issue 22).

Runs itself inside a fresh network namespace (`cnb-scale`) holding its own etcd on
127.0.0.1 and one tun device per local workload (named like CNI's `cali…`
interfaces). Puts, raw and in big transactions (the setup is not what is measured):
`--profiles` profiles, `--policies` GlobalNetworkPolicies (each applies to some local
endpoints; its rule's source selector matches remote endpoints by label), `--local`
WorkloadEndpoints on this node and `--remote` ones spread over `--nodes` other nodes.
Then, with the real `calico-node` process:

* the same run at 0 remote endpoints: ready time, RSS, peak RSS (VmHWM), CPU;
* at N remote endpoints: cold start to `/readiness` 200, its CPU, RSS, VmHWM, the
  nft ruleset's line count (and how many of those lines are set elements);
* remote label churn at `--churn` changes/s for `--churn-seconds`: each change moves
  one remote endpoint (a different one each time) from one rule-selector set to
  another; the time from the etcd write to the element's add in the kernel (seen by
  `nft monitor`), p50/p99/max; changes applied per second; agent and etcd CPU %;
* etcd's own CPU for each phase.

    .venv/bin/python bench/bench_scale.py --quick      # 20 local, 10k remote, 100 nodes
    .venv/bin/python bench/bench_scale.py --full       # the issue's sizes
    .venv/bin/python bench/bench_scale.py --local 100 --remote 100000 --nodes 1000 \\
        --policies 1000 --profiles 50 --churn 500 --churn-seconds 10
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NS = "cnb-scale"   # not cnfv-*: the FV suite clears those namespaces (and their processes)
NODE = "bench-node"
NET = ipaddress.ip_network("198.18.0.0/15")    # endpoint i gets NET[i + 1]
HOST_ADDR = "198.19.255.1/24"                  # above every endpoint address (<= 131,000 endpoints)
HEALTH = "http://127.0.0.1:9099/readiness"

QUICK = dict(local=20, remote=10_000, nodes=100, policies=200, profiles=20, churn=200, churn_seconds=5)
FULL = dict(local=100, remote=100_000, nodes=1000, policies=1000, profiles=50, churn=500, churn_seconds=10)


def sh(*cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run(list(cmd), capture_output=True, text=True, **kw)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {p.stderr.strip()}")
    return p


def outer(argv: list[str]) -> int:
    """Make the namespace, run the inner bench inside it, always clean up."""
    if os.geteuid() != 0:
        print("bench_scale needs root (network namespace, nftables)")
        return 1
    sh("ip", "netns", "del", NS, check=False)
    sh("ip", "netns", "add", NS)
    try:
        sh("ip", "-n", NS, "link", "set", "lo", "up")
        return subprocess.call(["ip", "netns", "exec", NS, sys.executable, __file__, "--inner", *argv])
    finally:
        sh("ip", "netns", "del", NS, check=False)


def iface(i: int) -> str:
    return f"cali{i:011x}"


def addr(i: int) -> str:
    return str(NET[i + 1])


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))] if s else float("nan")


def proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of process `pid` so far."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_children_cpu_s(pid: int) -> float:
    """CPU seconds of the children `pid` has waited for (the agent's: its parse
    worker, its nft processes)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def proc_sys_s(pid: int) -> float:
    """System CPU seconds of process `pid` so far (its netlink commits are kernel work)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[12]) / os.sysconf("SC_CLK_TCK")


def thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds so far of each of `pid`'s threads, by thread name (names repeat:
    summed)."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            head, _, rest = (task / "stat").read_text().rpartition(")")
        except OSError:
            continue   # the thread ended
        name = head.split("(", 1)[1]
        f = rest.split()
        out[name] = out.get(name, 0.0) + (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    return out


def status_mb(pid: int, field: str) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def labels(i: int, n_prof: int, role_shift: int = 0) -> dict[str, str]:
    """Endpoint i's labels: many endpoints share one label set, as in a real cluster
    (pods of one deployment); `role` is what the policies' rule selectors match."""
    k = i % max(1, n_prof)
    return {"app": f"app{i % 200}", "role": f"r{(i + role_shift) % 50}",
            "projectcalico.org/namespace": f"ns{k}", "projectcalico.org/orchestrator": "k8s"}


def wep(i: int, node: str, n_prof: int, role_shift: int = 0) -> dict:
    k = i % max(1, n_prof)
    return {"apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
            "metadata": {"name": f"{node}-k8s-pod{i}-eth0", "namespace": f"ns{k}",
                         "uid": f"00000000-0000-0000-0000-{i:012d}",
                         "creationTimestamp": "2026-01-01T00:00:00Z",
                         "labels": labels(i, n_prof, role_shift)},
            "spec": {"node": node, "orchestrator": "k8s", "workload": f"pod{i}", "pod": f"pod{i}",
                     "endpoint": "eth0", "interfaceName": iface(i), "ipNetworks": [f"{addr(i)}/32"],
                     "profiles": [f"kns.ns{k}"] if n_prof else []}}


def remote_node(i: int, n_nodes: int) -> str:
    return f"node-{i % n_nodes:04d}"


def config_docs(n_pol: int, n_prof: int) -> list[dict]:
    profiles = [{"apiVersion": "projectcalico.org/v3", "kind": "Profile",
                 "metadata": {"name": f"kns.ns{k}", "uid": f"10000000-0000-0000-0000-{k:012d}",
                              "creationTimestamp": "2026-01-01T00:00:00Z"},
                 "spec": {"ingress": [{"action": "Allow", "source": {"selector": f"ns == 'ns{k}'"}}],
                          "egress": [{"action": "Allow"}], "labelsToApply": {"ns": f"ns{k}"}}}
                for k in range(n_prof)]
    policies = [{"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
                 "metadata": {"name": f"pol-{p}", "uid": f"20000000-0000-0000-0000-{p:012d}",
                              "creationTimestamp": "2026-01-01T00:00:00Z"},
                 "spec": {"order": p, "selector": f"app == 'app{p % 200}'", "types": ["Ingress"],
                          "ingress": [{"action": "Allow", "protocol": "TCP",
                                       "source": {"selector": f"role == 'r{p % 50}'"},
                                       "destination": {"ports": [1000 + p % 1000]}}]}}
                for p in range(n_pol)]
    return profiles + policies


def put_raw(client, docs: list[dict]) -> None:
    """Raw puts, 5,000 per transaction (no validation: setup, not measured)."""
    import orjson

    from calico_net.datastore.etcd import op_put
    from calico_net.datastore.store import resource_key

    ops = []
    for d in docs:
        md = d["metadata"]
        ops.append(op_put(resource_key(d["kind"], md["name"], md.get("namespace")), orjson.dumps(d)))
        if len(ops) == 5000:
            client.txn([], ops)
            ops = []
    if ops:
        client.txn([], ops)


class Agent:
    """One real `calico-node` process in this namespace."""

    def __init__(self, etcd_endpoints: str, tag: str) -> None:
        env = dict(os.environ, NODENAME=NODE, ETCD_ENDPOINTS=etcd_endpoints, FELIX_HEALTHHOST="127.0.0.1",
                   FELIX_HEALTHPORT="9099", FELIX_LOGSEVERITYSCREEN=os.environ.get("BENCH_AGENT_LOG", "Warning"),
                   FELIX_MTUFILEPATH=f"/tmp/bench-scale-{tag}.mtu", PYTHONFAULTHANDLER="1")
        self.log = f"/tmp/bench-scale-{tag}.log"
        self.t0 = time.perf_counter()
        # BENCH_AGENT_PREFIX: a command to run the agent under (a profiler), "{tag}"
        # replaced by the run's tag, e.g. "py-spy record -r 250 -f raw -o /tmp/p-{tag}.txt --" (no -d:
        # py-spy stops the agent when its duration ends)
        prefix = os.environ.get("BENCH_AGENT_PREFIX", "").replace("{tag}", tag).split()
        self.proc = subprocess.Popen([*prefix, str(Path(sys.executable).parent / "calico-node")], env=env,
                                     stdout=open(self.log, "w"), stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        while prefix and self.proc.poll() is None:   # the figures are the agent's, not the profiler's
            kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
            if kids:
                self.pid = int(kids[0])
                break
            time.sleep(0.005)

    def wait_ready(self, limit: float = 600.0) -> float:
        import requests

        while time.perf_counter() - self.t0 < limit:
            try:
                if requests.get(HEALTH, timeout=1).status_code == 200:
                    return time.perf_counter() - self.t0
            except requests.RequestException:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"calico-node exited (log {self.log})")
            time.sleep(0.02)
        raise RuntimeError(f"calico-node not ready in {limit} s (log {self.log})")

    def stop(self) -> None:
        if self.pid != self.proc.pid:
            # under a profiler: stop the agent; the profiler writes its file and
            # ends when the agent has
            try:
                os.kill(self.pid, 15)
                self.proc.wait(30)
                return
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_measured(etcd, tag: str, label: str) -> tuple[Agent, dict]:
    """Start calico-node, wait for /readiness 200, let it settle, report."""
    e0 = proc_cpu_s(etcd.proc.pid)
    a = Agent(etcd.endpoints, tag)
    ready = a.wait_ready()
    cpu, kids = proc_cpu_s(a.pid), proc_children_cpu_s(a.pid)
    ecpu = proc_cpu_s(etcd.proc.pid) - e0
    time.sleep(2)   # what it holds once idle, not mid-apply
    fig = dict(ready=ready, cpu=cpu, child_cpu=kids, rss=status_mb(a.pid, "VmRSS"),
               hwm=status_mb(a.pid, "VmHWM"), etcd_cpu=ecpu)
    print(f"{label}: ready after {ready:.2f} s (CPU {cpu:.2f} s, and {kids:.2f} s in its finished "
          f"child processes: the parse worker, nft), RSS {fig['rss']:.0f} MB, "
          f"peak RSS {fig['hwm']:.0f} MB; etcd CPU during start {ecpu:.2f} s", flush=True)
    return a, fig


def ruleset_lines() -> tuple[int, int, int]:
    """(lines, lines inside set element lists, sets) of the agent's nft table."""
    text = sh("nft", "list", "table", "inet", "calico").stdout
    lines = text.splitlines()
    in_elems = 0
    inside = False
    sets = 0
    for ln in lines:
        s = ln.strip()
        if s.startswith("set "):
            sets += 1
        if s.startswith("elements = {"):
            inside = True
        if inside:
            in_elems += 1
            if s.endswith("}"):
                inside = False
    return len(lines), in_elems, sets


class Monitor:
    """`nft monitor` in this namespace: the first time each address is added to a set."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}
        self.wanted: set[str] = set()
        self.lock = threading.Lock()
        # stdbuf: nft's stdout is a pipe, which stdio would otherwise buffer
        self.proc = subprocess.Popen(["stdbuf", "-oL", "nft", "monitor", "new", "elements"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            t = time.perf_counter()
            if "add element" not in line or "{" not in line:
                continue
            body = line.split("{", 1)[1].rsplit("}", 1)[0]
            with self.lock:
                for e in body.split(","):
                    e = e.strip()
                    if e in self.wanted and e not in self.seen:
                        self.seen[e] = t

    def want(self, ip: str) -> None:
        with self.lock:
            self.wanted.add(ip)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def churn(etcd, agent: Agent, args, first_remote: int) -> dict:
    """Move remote endpoints, one per change, from role r_k to r_(k+1) at the given rate."""
    client = etcd.client()
    mon = Monitor()
    try:
        return _churn(client, mon, agent, etcd, args, first_remote)
    finally:
        mon.stop()      # also when the run fails: no `nft monitor` left behind


def _churn(client, mon: "Monitor", agent: Agent, etcd, args, first_remote: int) -> dict:
    import orjson

    from calico_net.datastore.store import resource_key
    # `nft monitor` reads the whole ruleset before it reports (seconds at 100k set
    # elements): a change it reports says it is listening; one made before then is
    # missed, so the change is made again (to another set) every 2 s until seen
    i = first_remote + args.remote - 1
    mon.want(addr(i))
    t = time.perf_counter()
    k = 0
    while addr(i) not in mon.seen and time.perf_counter() - t < 120:
        d = wep(i, remote_node(i, args.nodes), args.profiles, role_shift=2 + k % 2)
        client.put(resource_key("WorkloadEndpoint", d["metadata"]["name"], d["metadata"]["namespace"]),
                   orjson.dumps(d))
        k += 1
        t_put = time.perf_counter()
        while addr(i) not in mon.seen and time.perf_counter() - t_put < 2:
            time.sleep(0.02)
    if addr(i) not in mon.seen:
        print("nft monitor saw no change in 120 s", flush=True)
    print(f"nft monitor listening after {time.perf_counter() - t:.1f} s ({k} warm-up changes)", flush=True)
    with mon.lock:
        mon.seen.clear()
        mon.wanted.clear()
    n = int(args.churn * args.churn_seconds)
    step = max(1, args.remote // max(1, n))
    written: dict[str, float] = {}
    # BENCH_CHURN_PROFILE: a profiler attached to the agent for the churn, "{pid}" and
    # "{seconds}" replaced, e.g. "py-spy record -r 100 -f raw -o /tmp/churn.txt -d {seconds} --pid {pid}"
    prof_cmd = os.environ.get("BENCH_CHURN_PROFILE", "")
    prof = subprocess.Popen(prof_cmd.replace("{pid}", str(agent.pid)).replace(
        "{seconds}", str(int(args.churn_seconds))).split()) if prof_cmd else None
    threads0 = thread_cpu_s(agent.pid)
    a0, s0, e0, t0 = proc_cpu_s(agent.pid), proc_sys_s(agent.pid), proc_cpu_s(etcd.proc.pid), time.perf_counter()
    behind = 0
    for j in range(n):
        due = t0 + j / args.churn
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
        elif now - due > 0.05:
            behind += 1
        i = first_remote + (j * step) % args.remote
        d = wep(i, remote_node(i, args.nodes), args.profiles, role_shift=1)
        ip = addr(i)
        mon.want(ip)
        written[ip] = time.perf_counter()
        client.put(resource_key("WorkloadEndpoint", d["metadata"]["name"], d["metadata"]["namespace"]),
                   orjson.dumps(d))
    t_writes = time.perf_counter() - t0
    deadline = time.perf_counter() + 30
    while len(mon.seen) < n and time.perf_counter() < deadline:
        time.sleep(0.05)
    t_all = (max(mon.seen.values()) if mon.seen else time.perf_counter()) - t0
    acpu, ecpu = proc_cpu_s(agent.pid) - a0, proc_cpu_s(etcd.proc.pid) - e0
    asys = proc_sys_s(agent.pid) - s0
    threads = {name: cpu - threads0.get(name, 0.0) for name, cpu in thread_cpu_s(agent.pid).items()}
    mon.stop()
    if prof is not None:
        prof.wait(60)
    if len(mon.seen) < n:
        # the agent missed changes: its threads' stacks into its log (faulthandler)
        print(f"only {len(mon.seen)} of {n} changes reached nft; agent stacks in {agent.log}", flush=True)
        agent.proc.send_signal(6)
        agent.proc.wait(30)
    lat = [(mon.seen[ip] - t) * 1000 for ip, t in written.items() if ip in mon.seen]
    fig = dict(n=n, seen=len(lat), rate_written=n / t_writes, rate_applied=len(lat) / max(t_all, 1e-9),
               p50=pct(lat, 50), p99=pct(lat, 99), max=max(lat) if lat else float("nan"),
               agent_cpu_pct=100 * acpu / t_all, agent_sys_pct=100 * asys / t_all,
               etcd_cpu_pct=100 * ecpu / t_all, behind=behind)
    print(f"remote label churn: {n} changes written at {fig['rate_written']:.0f}/s "
          f"({behind} written >50 ms late), {len(lat)} seen in nft, applied {fig['rate_applied']:.0f}/s; "
          f"etcd write -> element in nft: p50 {fig['p50']:.1f} ms, p99 {fig['p99']:.1f} ms, "
          f"max {fig['max']:.1f} ms; agent CPU {fig['agent_cpu_pct']:.1f} % of one core "
          f"({fig['agent_sys_pct']:.1f} % of it system), "
          f"etcd CPU {fig['etcd_cpu_pct']:.1f} %", flush=True)
    busy = sorted(((100 * cpu / t_all, name) for name, cpu in threads.items() if cpu > 0), reverse=True)
    print("  agent CPU by thread (% of one core): "
          + ", ".join(f"{name} {share:.1f}" for share, name in busy), flush=True)
    return fig


def inner(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(REPO / "src"))
    sys.path.insert(0, str(REPO / "tests"))
    from etcd_server import start_etcd, stop_etcd

    print(f"load average {' '.join(open('/proc/loadavg').read().split()[:3])}", flush=True)
    print(f"== scale bench: {args.local} local endpoints, {args.remote} remote on {args.nodes} nodes, "
          f"{args.policies} policies, {args.profiles} profiles, churn {args.churn}/s for {args.churn_seconds} s",
          flush=True)
    batch = f"tuntap add dev eth0 mode tun\nlink set eth0 up\naddr add {HOST_ADDR} dev eth0\n"
    batch += "".join(f"tuntap add dev {iface(i)} mode tun\nlink set {iface(i)} up\n" for i in range(args.local))
    sh("ip", "-batch", "-", input=batch)
    etcd = start_etcd()
    agents: list[Agent] = []
    try:
        client = etcd.client()
        put_raw(client, config_docs(args.policies, args.profiles)
                + [wep(i, NODE, args.profiles) for i in range(args.local)])

        # --- same run, 0 remote endpoints ---------------------------------------------
        a, zero = start_measured(etcd, "zero", "0 remote endpoints")
        agents.append(a)
        zero_lines = ruleset_lines()
        a.stop()
        agents.remove(a)
        sh("nft", "delete", "table", "inet", "calico", check=False)

        t = time.perf_counter()
        first = args.local
        for s in range(first, first + args.remote, 20_000):
            put_raw(client, [wep(i, remote_node(i, args.nodes), args.profiles)
                             for i in range(s, min(first + args.remote, s + 20_000))])
        print(f"setup: {args.remote} remote endpoints put in {time.perf_counter() - t:.1f} s", flush=True)

        # --- N remote endpoints: cold start, memory, ruleset ----------------------------
        a, full = start_measured(etcd, "full", f"{args.remote} remote endpoints")
        agents.append(a)
        lines, elem_lines, sets = ruleset_lines()
        print(f"nft ruleset: {lines} lines ({elem_lines} of them set element lists, {sets} sets); "
              f"at 0 remote: {zero_lines[0]} lines", flush=True)
        per_ep_kb = (full["rss"] - zero["rss"]) * 1024 / max(1, args.remote)
        print(f"RSS at 0 vs {args.remote} remote endpoints: {zero['rss']:.0f} -> {full['rss']:.0f} MB "
              f"({per_ep_kb:.2f} KB per remote endpoint)", flush=True)

        # --- remote churn ------------------------------------------------------------------
        ch = churn(etcd, a, args, first)
        rss_after = status_mb(a.pid, "VmRSS")
        hwm_after = status_mb(a.pid, "VmHWM")
        print(f"after churn: RSS {rss_after:.0f} MB, peak RSS {hwm_after:.0f} MB", flush=True)
        print(f"SUMMARY remote={args.remote} cold_start_s={full['ready']:.2f} (target <= 2.5) "
              f"cold_cpu_s={full['cpu']:.2f} cold_child_cpu_s={full['child_cpu']:.2f} rss_mb={full['rss']:.0f} (target <= 250) "
              f"peak_rss_mb={max(full['hwm'], hwm_after):.0f} rss0_mb={zero['rss']:.0f} "
              f"per_remote_kb={per_ep_kb:.2f} nft_lines={lines} nft_elem_lines={elem_lines} "
              f"churn_applied_per_s={ch['rate_applied']:.0f} churn_agent_cpu_pct={ch['agent_cpu_pct']:.1f} "
              f"(target <= 20) churn_p99_ms={ch['p99']:.1f} (target <= 100) "
              f"churn_seen={ch['seen']}/{ch['n']} etcd_cpu_start_s={full['etcd_cpu']:.2f} "
              f"etcd_cpu_churn_pct={ch['etcd_cpu_pct']:.1f} churn_agent_sys_pct={ch['agent_sys_pct']:.1f} "
              f"loadavg={open('/proc/loadavg').read().split()[0]}", flush=True)
    finally:
        for a in agents:
            a.stop()
        sh("nft", "delete", "table", "inet", "calico", check=False)
        stop_etcd(etcd)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (the default)")
    ap.add_argument("--full", action="store_true", help="the issue's sizes")
    for k, v in QUICK.items():
        ap.add_argument("--" + k.replace("_", "-"), type=type(v), default=None)
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    base = FULL if args.full else QUICK
    for k, v in base.items():
        if vars(args)[k] is None:
            vars(args)[k] = v
    if args.local + args.remote >= NET.num_addresses - 512:
        ap.error("too many endpoints for 198.18.0.0/15")
    if args.inner:
        return inner(args)
    return outer(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
