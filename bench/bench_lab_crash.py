#!/usr/bin/env python3
"""The calico/node crash drill in a running lab (`make lab`): SIGKILL calico/node on one
node while two workloads on two nodes exchange a continuous ping and a TCP stream.

Needs a lab that is up and configured (`make lab`, or `lab/up.sh` plus site.yml); it
reads the lab's inventory and ssh_config from lab/.state/ (or $CALICO_LAB_STATE_DIR).
It starts its own two workloads (`drill-src` on the first node, `drill-dst` on the
second, the victim) and removes them at the end; the demo's workloads are not touched.

What it does, in order:

1. snapshots the victim's dataplane: `nft -a list ruleset` (rule handles change when a
   rule is rewritten; packet counters are masked) and `ip route show table all`;
2. starts watchers and proves each attached before the kill: `ip -ts monitor route`
   on every node (a marker route in 198.18.253.0/24 must show up) and `nft monitor` on
   the victim (a marker table must show up); a poller on the victim (calico/node's
   PID, readiness) and on every peer (BGP session state to the victim, whether BIRD
   and the kernel still hold the victim's block);
3. runs `ping -D -i 0.01` drill-src -> drill-dst and a numbered line stream over
   `nc` (one line per 10 ms), then `kill -9` of calico/node's main process on the
   victim (a crash: `podman kill` would count as a user stop and podman would not
   restart it);
4. waits (hang guards only) for podman to restart calico/node, for its readiness, for
   the peers' sessions to be Established again and for BIRD's graceful-restart state
   to end, then lets traffic run a little longer and stops it;
5. prints the figures and a verdict per promise, and exits 1 when one is broken:
   - the workloads keep running (same PIDs, no restart),
   - ping loss <= 1 s (lost packets x interval), TCP stream unbroken and in order,
   - calico/node restarted by itself (restart policy), time to running and to ready,
   - the victim's ruleset and routes are the same after as before and the monitors
     saw no change to them (re-adopted, not rewritten),
   - the peers never dropped the victim's block from the kernel and BIRD kept it
     through the outage (graceful restart), BGP re-established.

    .venv/bin/python bench/bench_lab_crash.py [--victim calico-lab-node-2]
        [--observer calico-lab-node-1] [--settle 5]
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("CALICO_LAB_STATE_DIR", REPO / "lab" / ".state"))
WORKLOAD_IMAGE = "localhost/calico-lab-workload:latest"
BIRDC = "birdc -s /var/run/calico/bird.ctl"
HEALTH = "http://127.0.0.1:9099/readiness"
PING_INTERVAL = 0.01
TCP_PORT = 5001
MARK_NET = "198.18.253"  # marker routes (inside the nodes only): proves a monitor attached
UP = "bgp=up/Established"  # a peer poller's sample of a session that is up
D = "/tmp/calico-drill"  # the drill's files in every node


def nodes_from_inventory() -> list[str]:
    inv = STATE / "inventory.ini"
    if not inv.exists():
        sys.exit(f"no lab inventory at {inv}: run `make lab` first")
    out, on = [], False
    for line in inv.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            on = line == "[calico_nodes]"
        elif on and line and not line.startswith("#"):
            out.append(line.split()[0])
    return out


def ssh(node: str, script: str, check: bool = True, timeout: float = 120) -> str:
    """Run a bash script on a lab node (stdin), return stdout."""
    p = subprocess.run(
        ["ssh", "-F", str(STATE / "ssh_config"), "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
         node, "bash", "-s"],
        input=script, capture_output=True, text=True, timeout=timeout,
    )
    if check and p.returncode != 0:
        raise RuntimeError(f"{node}: rc={p.returncode}\n{script}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return p.stdout


def wait_for(pred, what: str, limit: float, step: float = 0.2):
    """Poll pred() until it returns something truthy; the limit is a hang guard."""
    deadline = time.monotonic() + limit
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting for {what} after {limit:g}s")
        time.sleep(step)


def bird_name(ip: str) -> str:
    return "Mesh_" + ip.replace(".", "_")


def node_ip(node: str) -> str:
    for line in (STATE / "inventory.ini").read_text().splitlines():
        if line.startswith(node + " ") and "ansible_host=" in line:
            return line.split("ansible_host=")[1].split()[0]
    raise RuntimeError(f"no address for {node} in the inventory")


def dataplane(node: str) -> tuple[str, str]:
    """The node's ruleset with handles (counters masked) and its routes."""
    nft = ssh(node, "nft -a list ruleset")
    nft = re.sub(r"counter packets \d+ bytes \d+", "counter", nft)
    routes = ssh(node, "ip route show table all")
    return nft, routes


def start_workload(node: str, name: str) -> str:
    ssh(node, f"""
podman rm -f -t 0 --ignore {name} >/dev/null
podman image exists {WORKLOAD_IMAGE} || podman load -q -i /opt/calico/images/calico-lab-workload.tar >/dev/null
podman run -d --name {name} --network calico --cap-add NET_RAW {WORKLOAD_IMAGE} >/dev/null
""")
    ip = ssh(node, f"podman inspect -f '{{{{(index .NetworkSettings.Networks \"calico\").IPAddress}}}}' {name}").strip()
    if not ip:
        raise RuntimeError(f"{name} on {node} has no calico address")
    return ip


def ctr_state(node: str, name: str) -> str:
    return ssh(node, f"podman inspect -f '{{{{.State.Status}}}} {{{{.State.Pid}}}} {{{{.RestartCount}}}}' {name}").strip()


def start_monitors(nodes: list[str], victim: str) -> None:
    """ip monitor on every node, nft monitor on the victim; each proven attached."""
    for i, n in enumerate(nodes):
        mark = f"{MARK_NET}.{i + 1}/32"
        ssh(n, f"""
mkdir -p {D}; rm -f {D}/*.log {D}/*.pid
setsid ip -ts monitor route >{D}/route.log 2>&1 </dev/null & echo $! >{D}/route-mon.pid
""")
        # keep adding and deleting the marker until the monitor has printed it: a monitor
        # that has not subscribed yet misses events, and this proves it has
        wait_for(lambda: "Deleted" in ssh(n, f"""
ip route add unreachable {mark} 2>/dev/null; ip route del unreachable {mark} 2>/dev/null
grep '{mark.split('/')[0]}' {D}/route.log || true"""), f"ip monitor attached on {n}", 30)
    ssh(victim, f"setsid nft monitor >{D}/nft.log 2>&1 </dev/null & echo $! >{D}/nft-mon.pid")
    wait_for(lambda: "calico_drill_mark" in ssh(victim, f"""
nft add table inet calico_drill_mark; nft delete table inet calico_drill_mark
cat {D}/nft.log"""), f"nft monitor attached on {victim}", 30)


def start_pollers(victim: str, peers: list[str], victim_ip: str, block: str) -> None:
    ssh(victim, f"""
setsid bash -c 'while :; do
  t=$(date +%s.%N); pid=$(podman inspect -f "{{{{.State.Pid}}}}" calico-node 2>/dev/null)
  rd=$(curl -s -o /dev/null -m 1 -w "%{{http_code}}" {HEALTH})
  echo "$t pid=$pid ready=$rd"; sleep 0.05
done' >{D}/victim.log 2>&1 </dev/null & echo $! >{D}/poll.pid
""")
    proto = bird_name(victim_ip)
    for p in peers:
        ssh(p, f"""
setsid bash -c 'while :; do
  t=$(date +%s.%N)
  st=$({BIRDC} show protocols {proto} 2>/dev/null | awk "\\$1 == \\"{proto}\\" {{print \\$4 \\"/\\" \\$7}}")
  br=$({BIRDC} show route for {block} 2>/dev/null | grep -c "{block}")
  kr=$(ip route show {block} proto bird | grep -c via)
  echo "$t bgp=${{st:-none}} bird=$br kernel=$kr"; sleep 0.05
done' >{D}/peer.log 2>&1 </dev/null & echo $! >{D}/poll.pid
""")


def stop_bg(node: str) -> None:
    """Stop this drill's background processes on a node (by their recorded PIDs)."""
    ssh(node, f"for f in {D}/*.pid; do [ -e \"$f\" ] && kill $(cat \"$f\") 2>/dev/null; rm -f \"$f\"; done; true",
        check=False)


def read_log(node: str, name: str) -> list[str]:
    return ssh(node, f"cat {D}/{name} 2>/dev/null || true").splitlines()


def ping_figures(lines: list[str]) -> dict:
    seqs, stamps = [], []
    for line in lines:
        m = re.match(r"\[(\d+\.\d+)\] \d+ bytes from .*icmp_seq=(\d+)", line)
        if m:
            stamps.append(float(m.group(1)))
            seqs.append(int(m.group(2)))
    if not seqs:
        return {"received": 0, "lost": None, "loss_ms": None, "max_gap_ms": None}
    sent = max(seqs)
    got = set(seqs)
    lost = sum(1 for s in range(1, sent + 1) if s not in got)
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return {"received": len(got), "sent": sent, "lost": lost,
            "loss_ms": lost * PING_INTERVAL * 1000, "max_gap_ms": max(gaps, default=0) * 1000}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    nodes = nodes_from_inventory()
    if len(nodes) < 2:
        sys.exit("the drill needs at least 2 nodes")
    ap.add_argument("--observer", default=nodes[0])
    ap.add_argument("--victim", default=nodes[1])
    ap.add_argument("--settle", type=float, default=5.0,
                    help="seconds of traffic before the kill and after recovery")
    a = ap.parse_args()
    victim, observer = a.victim, a.observer
    peers = [n for n in nodes if n != victim]
    vip = node_ip(victim)
    results: list[tuple[str, bool, str]] = []

    def verdict(name: str, ok: bool, detail: str) -> None:
        results.append((name, ok, detail))

    print(f"victim {victim} ({vip}), observer {observer}, peers {', '.join(peers)}")
    try:
        for n in nodes:
            stop_bg(n)
        dst = start_workload(victim, "drill-dst")
        src = start_workload(observer, "drill-src")
        wait_for(lambda: ssh(observer, f"podman exec drill-src ping -c 1 -W 2 {dst} >/dev/null && echo ok",
                             check=False).strip(), f"drill-src -> drill-dst ({dst}) reachable", 60)
        route = ssh(observer, f"ip -o route show match {dst} proto bird").split()
        block = route[0] if route else ""
        if not block:
            raise RuntimeError(f"{observer} has no BIRD route to {dst}; is BGP up?")
        wl_before = {n: ctr_state(n, w) for n, w in ((victim, "drill-dst"), (observer, "drill-src"))}
        nft_before, routes_before = dataplane(victim)
        cn_before = ctr_state(victim, "calico-node")
        print(f"drill-src {src} -> drill-dst {dst} (block {block}); calico-node before: {cn_before}")

        start_monitors(nodes, victim)
        start_pollers(victim, peers, vip, block)
        # traffic: ping with timestamps, and a numbered line every 10 ms over one TCP connection
        ssh(victim, f"podman exec -d drill-dst sh -c 'nc -l {TCP_PORT} >/tmp/rx'")
        wait_for(lambda: ssh(victim, f"podman exec drill-dst sh -c 'cat /proc/net/tcp' | grep -c ':{TCP_PORT:04X} 00000000:0000 0A'",
                             check=False).strip() not in ("", "0"), "nc listening in drill-dst", 30)
        ssh(observer, f"podman exec -d drill-src sh -c 'ping -D -i {PING_INTERVAL} {dst} >/tmp/ping.log 2>&1'")
        ssh(observer, f"podman exec -d drill-src sh -c 'i=0; while :; do i=$((i+1)); echo $i; sleep 0.01; done "
                      f"| nc {dst} {TCP_PORT} 2>/tmp/tx.err'")
        time.sleep(a.settle)  # traffic before the crash (a baseline, not a wait for a state)

        t_kill = float(ssh(victim, """
pid=$(podman inspect -f '{{.State.Pid}}' calico-node); date +%s.%N; kill -9 "$pid"
""").strip())
        print(f"SIGKILL calico/node main process on {victim}")

        def victim_samples():
            out = []
            for line in read_log(victim, "victim.log"):
                parts = line.split()
                if len(parts) == 3 and float(parts[0]) > t_kill:
                    out.append((float(parts[0]), parts[1][4:], parts[2][6:]))
            return out

        old_pid = cn_before.split()[1]
        wait_for(lambda: any(p not in ("", "0", old_pid) for _, p, _ in victim_samples()),
                 "calico-node restarted by podman", 120, 0.5)
        wait_for(lambda: any(p not in ("", "0", old_pid) and r == "200" for _, p, r in victim_samples()),
                 "calico-node ready again", 180, 0.5)

        def peers_established():
            for p in peers:
                if p == victim:
                    continue
                lines = [ln.split() for ln in read_log(p, "peer.log")]
                after = [ln for ln in lines if len(ln) == 4 and float(ln[0]) > t_kill]
                if not after or after[-1][1] != UP or not any(x[1] != UP for x in after):
                    return False
            return True

        wait_for(peers_established, "peers' BGP sessions to the victim Established again", 180, 0.5)
        # graceful restart over: BIRD on the peers marks nothing stale any more
        wait_for(lambda: all("stale" not in ssh(p, f"{BIRDC} show route for {block} all", check=False).lower()
                             for p in peers), "graceful restart state ended on the peers", 300, 0.5)
        time.sleep(a.settle)  # traffic after recovery, to see it flow again

        tcp_alive = ssh(observer, "podman exec drill-src pgrep -x nc >/dev/null && echo yes || echo no").strip()
        rx_alive = ssh(victim, "podman exec drill-dst pgrep -x nc >/dev/null && echo yes || echo no").strip()
        ssh(observer, "podman exec drill-src sh -c 'pkill -INT ping; pkill -x nc; true'", check=False)
        for n in nodes:
            stop_bg(n)

        # ---- figures
        vs = victim_samples()
        t_down = next((t for t, p, _ in vs if p in ("", "0")), None)
        t_run = next((t for t, p, _ in vs if p not in ("", "0", old_pid)), None)
        t_ready = next((t for t, p, r in vs if p not in ("", "0", old_pid) and r == "200"), None)
        cn_after = ctr_state(victim, "calico-node")
        restarted = t_run is not None and cn_after.split()[0] == "running"
        print("\n== calico/node")
        print(f"  seen down after      {((t_down or t_kill) - t_kill) * 1000:8.0f} ms")
        print(f"  running again after  {((t_run or t_kill) - t_kill) * 1000:8.0f} ms   (podman's restart policy)")
        print(f"  ready again after    {((t_ready or t_kill) - t_kill) * 1000:8.0f} ms   ({HEALTH})")
        print(f"  state before / after {cn_before} / {cn_after}   (status pid restarts)")
        verdict("calico/node came back by itself", restarted and t_ready is not None,
                f"running after {((t_run or t_kill) - t_kill):.2f}s, ready after {((t_ready or t_kill) - t_kill):.2f}s")

        wl_after = {n: ctr_state(n, w) for n, w in ((victim, "drill-dst"), (observer, "drill-src"))}
        verdict("workloads kept running (same PID, no restart)", wl_after == wl_before,
                f"before {wl_before} after {wl_after}")

        pf = ping_figures(ssh(observer, "podman exec drill-src cat /tmp/ping.log", check=False).splitlines())
        print("\n== traffic drill-src -> drill-dst")
        print(f"  ping: {pf.get('sent')} sent every {PING_INTERVAL * 1000:.0f} ms, {pf['lost']} lost "
              f"= {pf['loss_ms']} ms of packets; longest gap between replies {pf['max_gap_ms']:.0f} ms")
        verdict("ping loss <= 1 s", pf["loss_ms"] is not None and pf["loss_ms"] <= 1000 and pf["received"] > 0,
                f"{pf['loss_ms']} ms lost, longest gap {pf['max_gap_ms']:.0f} ms")
        rx = ssh(victim, "podman exec drill-dst cat /tmp/rx", check=False).split()
        nums = [int(x) for x in rx if x.isdigit()]
        in_order = bool(nums) and nums == list(range(1, len(nums) + 1))
        print(f"  tcp: {len(nums)} lines received, in order and complete: {in_order}; "
              f"connection alive until stopped: sender {tcp_alive}, receiver {rx_alive}")
        verdict("TCP stream unbroken", in_order and tcp_alive == "yes" and rx_alive == "yes",
                f"{len(nums)} lines, in order {in_order}, alive {tcp_alive}/{rx_alive}")

        # ---- the victim's dataplane: re-adopted, not rewritten
        nft_after, routes_after = dataplane(victim)
        nft_log = read_log(victim, "nft.log")
        last_mark = max(i for i, ln in enumerate(nft_log) if "calico_drill_mark" in ln)
        # after the marker table's deletion and the generation line of that transaction
        nft_events = [ln for ln in nft_log[last_mark + 1:] if ln.strip()]
        if nft_events and nft_events[0].startswith("# new generation"):
            nft_events = nft_events[1:]
        route_events = [ln for ln in read_log(victim, "route.log") if MARK_NET + "." not in ln and ln.strip()]
        print(f"\n== {victim}'s dataplane across the restart")
        print(f"  nft ruleset (with handles) identical: {nft_after == nft_before}; nft monitor events: {len(nft_events)}")
        print(f"  routes identical: {routes_after == routes_before}; route monitor events: {len(route_events)}")
        for ln in (nft_events[:10] + route_events[:10]):
            print(f"    {ln}")
        verdict("ruleset re-adopted, not rewritten", nft_after == nft_before and not nft_events,
                f"{len(nft_events)} nft events")
        verdict("routes re-adopted, not rewritten", routes_after == routes_before and not route_events,
                f"{len(route_events)} route events")

        # ---- the peers: graceful restart kept the victim's block
        print(f"\n== peers during the outage (block {block} via {vip})")
        for p in peers:
            lines = [ln.split() for ln in read_log(p, "peer.log")]
            after = [ln for ln in lines if len(ln) == 4 and float(ln[0]) > t_kill]
            down = [ln for ln in after if ln[1] != UP]
            bird_missing = [ln for ln in after if ln[2] == "bird=0"]
            kernel_missing = [ln for ln in after if ln[3] == "kernel=0"]
            dels = [ln for ln in read_log(p, "route.log") if "Deleted" in ln and block in ln]
            t_est = next((float(ln[0]) for ln in after if down and float(ln[0]) > float(down[0][0])
                          and ln[1] == UP), None)
            print(f"  {p}: session not Established for {len(down)} samples "
                  f"({(float(down[-1][0]) - float(down[0][0])) * 1000 if down else 0:.0f} ms), "
                  f"Established again {((t_est or t_kill) - t_kill):.2f}s after the kill; "
                  f"block missing in BIRD {len(bird_missing)} / kernel {len(kernel_missing)} of {len(after)} samples; "
                  f"kernel route deletions {len(dels)}")
            for ln in dels[:5]:
                print(f"    {ln}")
            verdict(f"{p} kept the block through the outage (graceful restart)",
                    not bird_missing and not kernel_missing and not dels and bool(after),
                    f"{len(bird_missing)} BIRD / {len(kernel_missing)} kernel samples without it, {len(dels)} deletions")
            verdict(f"{p} BGP re-established", bool(down) and t_est is not None,
                    f"down {len(down)} samples, back after {((t_est or t_kill) - t_kill):.2f}s")
    finally:
        for n in nodes:
            stop_bg(n)
        for n, w in ((victim, "drill-dst"), (observer, "drill-src")):
            ssh(n, f"podman rm -f -t 0 --ignore {w} >/dev/null", check=False)

    print("\n== verdict")
    for name, ok, detail in results:
        print(f"  {'PASS' if ok else 'FAIL'}  {name}: {detail}")
    return 0 if results and all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
