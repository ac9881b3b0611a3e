"""`calicoctl node preview -f FILE`: what applying (or, with --delete, deleting)
the file's resources would do to every node's table inet calico and bird.cfg.

Nothing is written. The datastore is read once (`calico_net.preview.read_snapshot`),
the file's documents are validated as `calicoctl apply` validates them, and
`calico_net.preview.preview` renders each node's ruleset with the agent's code and
its bird.cfg with confd's, before and after. Output: unified diffs per node that
changes, or `-o json`. Exit 0 either way (a preview is not a check).
"""
from __future__ import annotations

import argparse
import json
from typing import Any


def cmd_preview(args: argparse.Namespace, ctx: Any) -> int:
    from calico_net.cli.resources import load_documents
    from calico_net.preview import Change, preview_datastore, text_report

    docs = load_documents(args.filename, args.namespace)
    if args.delete:
        changes = []
        for d in docs:
            md = d.get("metadata") or {}
            changes.append(Change.delete(d["kind"], md["name"], md.get("namespace")))
    else:
        changes = [Change.put(d) for d in docs]
    nodes = preview_datastore(ctx.datastore, changes, nodes=args.node or None, form=args.form)
    if args.output == "json":
        ctx.out.write(json.dumps({"nodes": [n.to_json() for n in nodes]}, indent=2) + "\n")
    else:
        ctx.out.write(text_report(nodes))
    return 0


def register(nsub: argparse._SubParsersAction) -> None:
    """Add `preview` under the `node` noun."""
    p = nsub.add_parser(
        "preview", help="show each node's nftables and bird.cfg diff a change would cause",
        description="Render every node's table inet calico (the agent's code) and bird.cfg "
                    "(confd's code) from the datastore, and again with the file's resources "
                    "applied (or deleted): the unified diffs of the nodes that change. Nothing "
                    "is written.")
    p.add_argument("-f", "--filename", required=True, help="resources to apply (YAML or JSON, as for apply)")
    p.add_argument("-n", "--namespace", default=None, help="namespace of namespaced resources without one")
    p.add_argument("--delete", action="store_true", help="preview deleting the file's resources instead")
    p.add_argument("--node", action="append", default=None,
                   help="only this node (repeatable; default: every calico Node)")
    p.add_argument("--form", default="auto", choices=["auto", "kernel", "rendered"],
                   help="nftables lines as `nft list` prints them (kernel: nft in a scratch network "
                        "namespace), as the agent writes them (rendered), or kernel where possible (auto)")
    p.add_argument("-o", "--output", default="text", choices=["text", "json"])
    p.set_defaults(func=cmd_preview)
