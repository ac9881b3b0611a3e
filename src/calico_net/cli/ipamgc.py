"""`calicoctl ipam gc [--apply] [--grace 10m] [--node-local [--node NAME]] [-o table|json|yaml]`.

The command around `calico_net.ipam.gc`: parses the options, runs a dry run (the
default) or the collection, and prints the report — per object what it is, why it is
garbage and how old it is; with `--apply` also what was deleted and what was left
because it changed while gc ran. Exit code 0 either way (a dry run that finds garbage
is not a failure); `ipam check` is the command that exits 1 on problems.
"""
from __future__ import annotations

import argparse
import json
import re
import socket
from typing import Any

_DURATION = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h))+|0")
_UNITS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
NODENAME_FILE = "/var/lib/calico/nodename"


def duration(text: str) -> float:
    """A Go-style duration ("10m", "1h30m", "45s", "0") in seconds."""
    if not _DURATION.fullmatch(text):
        raise argparse.ArgumentTypeError(f"not a duration (like 10m, 90s, 1h): {text!r}")
    return sum(float(n) * _UNITS[u] for n, u in re.findall(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)", text))


def register_gc(sub: Any) -> None:
    gc = sub.add_parser("gc", help="find (and with --apply delete) leaked addresses, handles, "
                                   "endpoints and affinities of gone nodes",
                        description="Garbage-collect IPAM and endpoints: a dry run by default.")
    gc.add_argument("--apply", action="store_true", help="delete what is found (default: only report)")
    gc.add_argument("--grace", type=duration, default=duration("10m"), metavar="DURATION",
                    help="never collect an allocation or endpoint younger than this (default 10m)")
    gc.add_argument("--node-local", action="store_true",
                    help="also collect this host's endpoints whose interface is gone")
    gc.add_argument("--node", help="this host's node name for --node-local (default: "
                                   f"{NODENAME_FILE}, then the host name)")
    gc.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")
    gc.set_defaults(func=cmd_gc)


def _local_node(args: argparse.Namespace) -> str | None:
    from calico_net.ipam.keys import check_node_name

    if not args.node_local:
        return None
    if args.node:
        return check_node_name(args.node)
    try:
        with open(NODENAME_FILE, encoding="utf-8") as f:
            text = f.read().strip()
        if text:
            return check_node_name(text)
    except (OSError, UnicodeDecodeError):
        pass
    return check_node_name(socket.gethostname().split(".")[0].lower())


def _age(seconds: int | None) -> str:
    if seconds is None:
        return "unknown"
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h" if seconds < 172800 else f"{seconds // 86400}d"


def cmd_gc(args: argparse.Namespace, ctx: Any) -> int:
    from calico_net.cli.ipam import _table
    from calico_net.ipam.gc import collect

    result = collect(ctx.client, ctx.datastore, apply=args.apply, grace=args.grace,
                     local_node=_local_node(args))
    doc = result.to_json()
    if args.output == "json":
        print(json.dumps(doc, indent=2), file=ctx.out)
        return 0
    if args.output == "yaml":
        import yaml

        ctx.out.write(yaml.safe_dump(doc, default_flow_style=False, sort_keys=False))
        return 0
    if args.apply:
        rows = [(f["kind"], f["name"], f["reason"], _age(f["age"]), "deleted") for f in doc["applied"]]
        rows += [(f["kind"], f["name"], f["reason"], _age(f["age"]), "skipped: changed meanwhile")
                 for f in doc["skipped"]]
        rows += [(f["kind"], f["name"], f["reason"], _age(f["age"]), "kept: younger than --grace")
                 for f in doc["findings"] if f.get("protected")]
    else:
        rows = [(f["kind"], f["name"], f["reason"], _age(f["age"]),
                 "kept: younger than --grace" if f.get("protected") else "would delete")
                for f in doc["findings"]]
    if rows:
        print(_table(("KIND", "NAME", "REASON", "AGE", "ACTION"), rows), file=ctx.out)
    if args.apply:
        print(f"Deleted {len(doc['applied'])} object(s); {len(doc['skipped'])} skipped.", file=ctx.out)
    else:
        n = sum(1 for f in doc["findings"] if not f.get("protected"))
        print(f"Found {n} object(s) to collect (dry run: nothing deleted; --apply deletes).", file=ctx.out)
    return 0
