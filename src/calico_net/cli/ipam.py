"""`calicoctl ipam`: show, check, release, configure and split IPAM.

    calicoctl ipam show [--show-blocks] [--ip ADDR] [-o table|json]
    calicoctl ipam check [--show-problem-ips] [-o table|json|FILE]
    calicoctl ipam release (--ip ADDR ... | --handle ID | --from-report FILE) [--force]
    calicoctl ipam split (--cidr CIDR | --name NAME) NUMBER
    calicoctl ipam configure --strictaffinity true|false
    calicoctl ipam gc [--apply] [--grace 10m] [--node-local] [-o table|json|yaml]

`show` prints each IPPool's size and use (the same table as Calico's), the use per
node, and with `--show-blocks` one row per block with the node it is affine to.
`check` cross-checks blocks, handles, affinities, Nodes and WorkloadEndpoints (see
`calico_net.ipam.check`) and exits 1 when it finds a problem, 0 when clean — unlike
Calico's, which always exits 0 — so scripts and tests can rely on it. `release`
refuses an address that a WorkloadEndpoint still carries unless `--force` is given.
`check -o FILE` also writes Calico's report, which `release --from-report` acts on,
and `split` divides a pool (both in `calico_net.cli.ipamreport`); `gc` collects
leaked objects (`calico_net.cli.ipamgc`).

Handlers take (args, ctx); ctx gives `.client` (EtcdClient), `.datastore` and `.out`.
Errors are raised and turned into exit codes by `calico_net.cli.main`.
"""
from __future__ import annotations

import argparse
import json
from typing import Any, Sequence

from calico_net.ipam.errors import IPAMError

EXIT_OK = 0
EXIT_PROBLEMS = 1


def register(subparsers: Any) -> None:
    from calico_net.cli.main import add_noun

    sub = add_noun(subparsers, "ipam", "IP address management: show, check, release, configure, split",
                   description="IP address management.")

    show = sub.add_parser("show", help="show pools, per-node use, blocks or one address")
    show.add_argument("--ip", help="show who holds this address")
    show.add_argument("--show-blocks", action="store_true", help="one row per allocation block")
    show.add_argument("-o", "--output", choices=("table", "json"), default="table")
    show.set_defaults(func=cmd_show)

    chk = sub.add_parser("check", help="find leaked addresses, unallocated endpoint addresses, stale affinities")
    chk.add_argument("--show-problem-ips", action="store_true", help="list every problem address")
    chk.add_argument("-o", "--output", default="table",
                     help="table (default), json, or a FILE to write the report "
                          "`ipam release --from-report` reads (the table is printed too)")
    chk.set_defaults(func=cmd_check)

    rel = sub.add_parser("release", help="release addresses by address or by handle")
    what = rel.add_mutually_exclusive_group(required=True)
    what.add_argument("--ip", action="append", help="an address to release (repeatable)")
    what.add_argument("--handle", help="release every address of this handle")
    what.add_argument("--from-report", metavar="FILE",
                      help="release the addresses a report of `ipam check -o FILE` lists as leaked "
                           "(refused when IPAM or endpoints changed since)")
    rel.add_argument("--force", action="store_true",
                     help="release even when a WorkloadEndpoint carries the address; with --from-report, "
                          "accept a report of another calicoctl version")
    rel.set_defaults(func=cmd_release)

    from calico_net.cli.ipamreport import register_split

    register_split(sub)

    from calico_net.cli.ipamgc import register_gc

    register_gc(sub)

    conf = sub.add_parser("configure", help="set cluster-wide IPAM options")
    conf.add_argument("--strictaffinity", choices=("true", "false"), type=str.lower,
                      help="never borrow addresses from another node's block")
    conf.set_defaults(func=cmd_configure)


def _ipam(ctx: Any):
    from calico_net.ipam import IPAM

    return IPAM(ctx.client, ctx.datastore)


def _pct(part: int, whole: int) -> str:
    return f"{part} ({(100 * part // whole) if whole else 0}%)"


def _table(headers: Sequence[str], rows: list[Sequence[Any]]) -> str:
    cols = [[str(h)] + [str(r[i]) for r in rows] for i, h in enumerate(headers)]
    widths = [max(len(c) for c in col) for col in cols]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [line, "| " + " | ".join(str(h).center(w) for h, w in zip(headers, widths)) + " |", line]
    for r in rows:
        out.append("| " + " | ".join(str(v).ljust(w) for v, w in zip(r, widths)) + " |")
    out.append(line)
    return "\n".join(out)


# --- show --------------------------------------------------------------------------


def cmd_show(args: argparse.Namespace, ctx: Any) -> int:
    ipam = _ipam(ctx)
    if args.ip:
        return _show_ip(ipam, args, ctx)
    usage = ipam.usage()
    blocks = ipam.blocks() if args.show_blocks else []
    if args.output == "json":
        doc: dict[str, Any] = {"pools": usage}
        if args.show_blocks:
            doc["blocks"] = [{"cidr": str(b.cidr), "node": b.host, "size": b.size, "inUse": b.in_use,
                              "free": b.free, "strictAffinity": b.strict_affinity} for b in blocks]
        print(json.dumps(doc, indent=2), file=ctx.out)
        return EXIT_OK
    rows: list[Sequence[Any]] = []
    for p in usage:
        total = p["addresses"]
        state = " (disabled)" if p["disabled"] else ""
        rows.append((f"IP Pool{state}", p["cidr"], total, _pct(p["in_use"], total), _pct(total - p["in_use"], total)))
        if args.show_blocks:
            for b in sorted((b for b in blocks if _in(b.cidr, p["cidr"])), key=lambda b: int(b.cidr.network_address)):
                rows.append(("Block", str(b.cidr), b.size, _pct(b.in_use, b.size),
                             f"{_pct(b.free, b.size)}  {('-> ' + b.host) if b.host else '(no affinity)'}"))
    print(_table(("GROUPING", "CIDR", "IPS TOTAL", "IPS IN USE", "IPS FREE"), rows), file=ctx.out)
    per_node: dict[str, dict[str, int]] = {}
    for p in usage:
        for node, n in p["nodes"].items():
            acc = per_node.setdefault(node or "(no affinity)", {"blocks": 0, "in_use": 0, "free": 0})
            for k in acc:
                acc[k] += n[k]
    if per_node:
        print(file=ctx.out)
        print(_table(("NODE", "AFFINE BLOCKS", "IPS IN USE", "IPS FREE IN BLOCKS"),
                     [(n, v["blocks"], v["in_use"], v["free"]) for n, v in sorted(per_node.items())]), file=ctx.out)
    return EXIT_OK


def _in(block: Any, pool_cidr: str) -> bool:
    import ipaddress

    net = ipaddress.ip_network(pool_cidr)
    return block.version == net.version and block.subnet_of(net)


def _show_ip(ipam: Any, args: argparse.Namespace, ctx: Any) -> int:
    from calico_net.ipam.check import endpoints_using

    a = ipam.get_assignment(args.ip)
    users = endpoints_using(ipam, [args.ip]).get(str(a.ip) if a else args.ip.split("/")[0], [])
    if args.output == "json":
        doc = None if a is None else {"ip": str(a.ip), "block": str(a.block), "handle": a.handle_id,
                                      "attributes": a.attributes, "blockAffinity": a.block_affinity,
                                      "endpoints": users}
        print(json.dumps(doc, indent=2), file=ctx.out)
        return EXIT_OK
    if a is None:
        print(f"IP {args.ip} is not assigned", file=ctx.out)
        return EXIT_OK
    print(f"IP {a.ip} is in use", file=ctx.out)
    print(f"Block: {a.block} (affine to {a.block_affinity or 'no node'})", file=ctx.out)
    print(f"Handle: {a.handle_id}", file=ctx.out)
    print("Attributes:", file=ctx.out)
    for k, v in sorted(a.attributes.items()):
        print(f"  {k}: {v}", file=ctx.out)
    print(f"Endpoints: {', '.join(users) if users else '(none)'}", file=ctx.out)
    return EXIT_OK


# --- check -------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace, ctx: Any) -> int:
    from calico_net.ipam.check import check

    ipam = _ipam(ctx)
    to_file = args.output not in ("table", "json")
    if to_file:
        from calico_net.cli.ipamreport import build_report, ipam_revision, write_report
        from calico_net.cli.main import cluster_information

        before = ipam_revision(ctx.client)
    report = check(ipam)
    if to_file:
        write_report(args.output, build_report(ipam, report, ctx.client, cluster_information(ctx), before))
        print(f"Report written to {args.output}", file=ctx.out)
    if args.output == "json":
        print(json.dumps(report.to_json(), indent=2), file=ctx.out)
        return EXIT_OK if report.clean else EXIT_PROBLEMS
    out = ctx.out
    print(f"Checked {report.blocks} blocks, {report.allocations} allocations, "
          f"{report.endpoints} workload endpoints, {report.nodes} nodes.", file=out)
    sections = [
        ("allocations without endpoints (leaked)", [
            f"{x.ip}  handle {x.handle_id}  node {x.node}  block {x.block}" for x in report.allocations_without_endpoints]),
        ("endpoint addresses without allocations", [
            f"{x['ip']}  {x['endpoint']}" for x in report.endpoints_without_allocations]),
        ("addresses carried by more than one endpoint", [
            f"{x['ip']}  {', '.join(x['endpoints'])}" for x in report.duplicate_endpoint_ips]),
        ("blocks affine to nodes that do not exist", [
            f"{x['block']}  node {x['node']}  ({x['inUse']} in use)" for x in report.blocks_of_missing_nodes]),
        ("affinity inconsistencies", report.affinity_mismatches),
        ("handle inconsistencies", report.handle_mismatches),
        ("blocks whose value cannot be read (left out of every count)", [
            f"{x['key']}  {x['reason']}" for x in report.unreadable_blocks]),
    ]
    for title, lines in sections:
        print(f"Found {len(lines)} {title}.", file=out)
        shown = lines if args.show_problem_ips else lines[:10]
        for line in shown:
            print(f"  {line}", file=out)
        if len(shown) < len(lines):
            print(f"  ... and {len(lines) - len(shown)} more (--show-problem-ips lists all)", file=out)
    print("IPAM is consistent." if report.clean else f"{report.problems} problem(s) found.", file=out)
    return EXIT_OK if report.clean else EXIT_PROBLEMS


# --- release -----------------------------------------------------------------------


class AddressInUseByEndpoint(IPAMError):
    pass


def cmd_release(args: argparse.Namespace, ctx: Any) -> int:
    from calico_net.ipam.block import parse_ip
    from calico_net.ipam.check import endpoints_using

    ipam = _ipam(ctx)
    if args.from_report:
        from calico_net.cli.ipamreport import release_from_report

        return release_from_report(args, ctx, ipam)
    if args.handle:
        ips = ipam.ips_by_handle(args.handle)
        if ipam.get_handle(args.handle) is None:
            raise IPAMError(f'handle "{args.handle}" does not exist')
    else:
        ips = [parse_ip(i) for i in args.ip]
    if not args.force:
        users = endpoints_using(ipam, ips)
        if users:
            what = "; ".join(f"{ip} by {', '.join(names)}" for ip, names in sorted(users.items()))
            raise AddressInUseByEndpoint(f"refusing to release addresses still in use ({what}); use --force")
    if args.handle:
        released = ipam.release_by_handle(args.handle)
        print(f"Released {len(released)} address(es) of handle {args.handle}: "
              + ", ".join(map(str, released)), file=ctx.out)
        return EXIT_OK
    not_allocated = ipam.release_ips(ips)
    for a in ips:
        if a not in not_allocated:
            print(f"Released {a}", file=ctx.out)
    if not_allocated:
        raise IPAMError("not assigned, nothing released: " + ", ".join(map(str, not_allocated)))
    return EXIT_OK


# --- configure ---------------------------------------------------------------------


def cmd_configure(args: argparse.Namespace, ctx: Any) -> int:
    ipam = _ipam(ctx)
    if args.strictaffinity is None:
        cfg = ipam.get_config()
    else:
        cfg = ipam.set_config(strict_affinity=args.strictaffinity == "true")
    print(f"StrictAffinity: {str(cfg.strict_affinity).lower()}", file=ctx.out)
    print(f"AutoAllocateBlocks: {str(cfg.auto_allocate_blocks).lower()}", file=ctx.out)
    return EXIT_OK
