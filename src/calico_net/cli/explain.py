"""`calicoctl policy explain`: why a flow is allowed or denied.

It reads, once, every resource the agent's policy dataplane is fed (endpoints,
network sets, profiles, policies, IP pools) and hands them to
`calico_net.agent.felix.explain`, which answers with the agent's own index and rule
code. This module only resolves the command line into endpoints and a packet and
prints the answer: a readable trace by default, or the structure as YAML/JSON.
"""
from __future__ import annotations

import argparse
import ipaddress
from typing import Any

from calico_net.errors import printable

# What the agent feeds its policy dataplane (daemon.DATAPLANE_KINDS), and the
# FelixConfigurations its settings come from
KINDS = ("WorkloadEndpoint", "HostEndpoint", "Profile", "NetworkPolicy", "GlobalNetworkPolicy",
         "NetworkSet", "GlobalNetworkSet", "IPPool", "FelixConfiguration", "Tier")


def _resolve(cl: Any, ref: str, namespace: str | None, what: str) -> tuple[Any, str]:
    """(endpoint or None, its IP) for `--from`/`--to`."""
    from calico_net.agent.felix.explain import find_endpoints

    found = find_endpoints(cl, ref, namespace)
    try:
        ip: str | None = str(ipaddress.ip_address(ref))
    except ValueError:
        ip = None
    if not found:
        if ip is None:
            raise ValueError(f"{what} {printable(ref, quote=True)}: no workload or host endpoint "
                             "of that name (give its --namespace, or an IP address)")
        return None, ip
    if len(found) > 1 and ip is None and len({(m.kind, m.namespace) for m in found}) > 1:
        names = ", ".join(f"{m.kind} {m.namespace or ''}/{m.name}" for m in found[:5])
        raise ValueError(f"{what} {printable(ref, quote=True)} names several endpoints ({printable(names, 400)}): "
                         "give --namespace")
    m = found[0]
    if ip is None:
        addrs = m.addrs4 + m.addrs6
        if not addrs:
            raise ValueError(f"{what} {m.kind} {printable(m.name)} has no address")
        ip = addrs[0]
    return m, ip


def cmd_explain(args: argparse.Namespace, ctx: Any) -> int:
    from calico_net.agent.felix.explain import PROTOCOLS, Cluster, Packet, endpoint_summary, explain

    docs: list[Any] = []
    for kind in KINDS:
        items, _rev = ctx.datastore.list(kind)
        docs.extend(items)
    cl = Cluster(docs)
    src, src_ip = _resolve(cl, args.source, args.namespace, "--from")
    dst, dst_ip = _resolve(cl, args.destination, args.to_namespace or args.namespace, "--to")
    if ipaddress.ip_address(src_ip).version != ipaddress.ip_address(dst_ip).version:
        raise ValueError(f"--from {src_ip} and --to {dst_ip} are not of one IP version")
    proto = PROTOCOLS[args.protocol]
    if proto == 1 and ipaddress.ip_address(src_ip).version == 6:
        proto = 58
    if proto in (6, 17, 132) and args.port is None:
        raise ValueError(f"--port is needed for {args.protocol}")
    for name, v, hi in (("--port", args.port, 65535), ("--source-port", args.source_port, 65535),
                        ("--icmp-type", args.icmp_type, 255), ("--icmp-code", args.icmp_code, 255)):
        if v is not None and not 0 <= v <= hi:
            raise ValueError(f"{name} {v} is out of range (0-{hi})")
    pkt = Packet(src_ip, dst_ip, proto, args.port if proto in (6, 17, 132) else None, args.source_port,
                 args.icmp_type if proto in (1, 58) else None, args.icmp_code if proto in (1, 58) else None)
    res = explain(cl, src, dst, pkt)
    live = None
    if args.live:
        from calico_net.agent.felix.explain_live import compare, trace_flow

        if not 0 < args.live_wait <= 600:
            raise ValueError("--live-wait is seconds, 1 to 600")
        ctx.err.write(f"tracing the flow on this host for {args.live_wait:g} s: send it now\n")
        live = compare(res, trace_flow(pkt, wait=args.live_wait))
    body = {"verdict": res["verdict"], "decidedBy": res["decidedBy"],
            "flow": {"protocol": args.protocol, "sourcePort": pkt.sport, "port": pkt.dport,
                     "icmpType": pkt.icmp_type},
            "source": endpoint_summary(src, src_ip), "destination": endpoint_summary(dst, dst_ip),
            "tiers": res["tiers"], "policies": res["policies"], "steps": res["steps"]}
    if live is not None:
        body["live"] = live
    if args.output == "json":
        import orjson

        ctx.out.write(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n")
    elif args.output == "yaml":
        import yaml

        from calico_net.cli.resources import YAML_DUMPER

        ctx.out.write(yaml.dump(body, Dumper=YAML_DUMPER, default_flow_style=False, sort_keys=False))
    else:
        _print_text(body, ctx.out)
    return 0


def _who(e: dict[str, Any]) -> str:
    if "kind" not in e:
        return f"{e['ip']} (no endpoint)"
    ns = f"{e['namespace']}/" if e.get("namespace") else ""
    return printable(f"{e['kind']} {ns}{e['name']} ({e['ip']}, node {e['node']})", 400)


def _rule_text(rule: Any) -> str:
    import orjson

    return printable(orjson.dumps(rule).decode(), 400)


def _print_text(body: dict[str, Any], out: Any) -> None:
    f = body["flow"]
    port = f" port {f['port']}" if f["port"] is not None else (
        f" type {f['icmpType']}" if f["icmpType"] is not None else "")
    out.write(f"Verdict:     {body['verdict']}\nDecided by:  {printable(body['decidedBy'], 400)}\n")
    out.write(f"Flow:        {f['protocol']}{port}\nSource:      {_who(body['source'])}\n"
              f"Destination: {_who(body['destination'])}\n\n")
    out.write("Tiers in order:\n")
    for t in body["tiers"]:
        order = "none (no Tier: after all others)" if t["order"] is None else f"{t['order']:g}"
        out.write(printable(f"  {t['name']} order={order} defaultAction={t['defaultAction']}", 400) + "\n")
    if not body["tiers"]:
        out.write("  (none)\n")
    out.write("Policies in order (selects source / destination):\n")
    for p in body["policies"]:
        ns = f"{p['namespace']}/" if p["namespace"] else ""
        mark = lambda b: "yes" if b else "no"  # noqa: E731
        out.write(printable(f"  [{p['tier']}] {p['kind']} {ns}{p['name']} order={p['order']} "
                            f"selector={p['selector']}: "
                            f"{mark(p['selectsSource'])} / {mark(p['selectsDestination'])}", 600) + "\n")
    if not body["policies"]:
        out.write("  (none)\n")
    for st in body["steps"]:
        out.write("\n")
        if "failsafe" in st:
            out.write(f"Failsafe {st['failsafe']} port: accepted before any host endpoint policy\n")
            continue
        if "endpointToHost" in st:
            out.write(f"Workload to its own host: defaultEndpointToHostAction {st['endpointToHost']}\n")
            continue
        out.write(printable(f"{st['direction']} of {st['endpoint']} on node {st['node']}:", 400) + "\n")
        for t in st.get("tiers", ()):
            out.write(printable(f"  tier {t['name']}: {t.get('result', '')}", 400) + "\n")
        for label, items in (("policy", st["policies"]), ("profile", st["profiles"])):
            for p in items:
                name = f"[{p['tier']}] {p['kind']} {p['namespace'] + '/' if p.get('namespace') else ''}" \
                    f"{p['name']}" if label == "policy" else f"Profile {p['name']}"
                out.write(printable(f"  {name}: {p['result']}", 400) + "\n")
                for r in p["rules"]:
                    state = "MATCHED" if r["matched"] else "no match"
                    out.write(f"    rule {r['index']} {state}: {_rule_text(r['rule'])}\n")
                    for line in r["nft"]:
                        out.write(f"      nft: {printable(line, 600)}\n")
                    if r.get("note"):
                        out.write(f"      ({printable(r['note'], 400)})\n")
        if st.get("pass"):
            out.write(printable(f"  Pass from {st['pass']}: on to the next tier (after the last: "
                                f"the profiles)", 400) + "\n")
        for skipped in st.get("notEvaluated", ()):
            out.write(printable(f"  not evaluated (pre-DNAT/untracked): {skipped}", 400) + "\n")
        out.write(printable(f"  => {st['verdict']}: {st['by']}", 400) + "\n")
    live = body.get("live")
    if live is not None:
        out.write("\nLive (nft trace on this host): ")
        if not live["traced"]:
            out.write("no packet of the flow was seen\n")
        elif live["kernel"] is None:
            out.write("the flow passed no policy or profile decision here\n")
        else:
            k = live["kernel"]
            out.write(printable(f"decided in {k['chain']} at rule {k['position']} ({k['verdict']}): {k['rule']}",
                                600) + "\n")
            out.write("  the same rule as explained\n" if live["agrees"] else
                      "  NOT the rule explained (the datastore and this host's ruleset differ?)\n")


def register(sub: argparse._SubParsersAction) -> None:
    from calico_net.cli.main import add_noun

    psub = add_noun(sub, "policy", "policy tools: explain a flow")
    p = psub.add_parser(
        "explain", help="why a flow is allowed or denied",
        description="The verdict for one flow and the exact path to it: the tiers in order, "
                    "for each policy whether it selects each side, the rule that decided "
                    "(printed, with its nft lines), Pass to the next tier, the end of each tier "
                    "(its defaultAction), the profile fallback and default deny; computed with "
                    "the agent's own policy index and rule code from the datastore.")
    p.add_argument("--from", dest="source", required=True,
                   help="source: workload endpoint name, host endpoint name, or an IP address")
    p.add_argument("--to", dest="destination", required=True,
                   help="destination: workload endpoint name, host endpoint name, or an IP address")
    p.add_argument("--protocol", default="tcp", choices=["tcp", "udp", "sctp", "icmp"])
    p.add_argument("--port", type=int, default=None, help="destination port (tcp, udp, sctp)")
    p.add_argument("--source-port", type=int, default=None,
                   help="source port (default: an ephemeral port, outside any rule's source ports)")
    p.add_argument("--icmp-type", type=int, default=8, help="ICMP type (default 8, echo request)")
    p.add_argument("--icmp-code", type=int, default=0)
    p.add_argument("-n", "--namespace", default=None,
                   help="namespace of the workload endpoints named (default: any, if unique)")
    p.add_argument("--to-namespace", default=None, help="namespace of --to, when it differs")
    p.add_argument("--live", action="store_true",
                   help="also trace the flow through this host's ruleset (nft trace, needs root; run "
                        "it on the endpoint's node and send the traffic meanwhile) and compare the rule "
                        "that decided with the one explained")
    p.add_argument("--live-wait", type=float, default=10.0, help="seconds to trace (default 10)")
    p.add_argument("-o", "--output", default="text", choices=["text", "yaml", "json"])
    p.set_defaults(func=cmd_explain)
