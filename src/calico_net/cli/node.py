"""`calicoctl node`: verbs about this host. `status` shows its BGP sessions, read from
BIRD's control socket; `checksystem` and `diags` are in `calico_net.cli.nodecheck`.

Like Calico's, they run on the node itself (or inside the calico/node container) and
need no datastore: the sessions come from BIRD (`birdctl.bgp_sessions`).
"""
from __future__ import annotations

import argparse
import json
import os

DEFAULT_SOCKET = "/var/run/calico/bird.ctl"

TYPE_NAMES = {
    "mesh": "node-to-node mesh",
    "global": "global",
    "node": "node specific",
    "reflector": "route reflector",
    "reflector-client": "route reflector client",
}


def cmd_status(args: argparse.Namespace, ctx) -> int:
    from calico_net.agent.confd.birdctl import BirdCtlError, bgp_sessions

    path = args.bird_socket
    if not os.path.exists(path):
        raise OSError(f"BIRD is not running on this host (no control socket at {path})")
    try:
        sessions = bgp_sessions(path)
    except BirdCtlError as e:
        raise OSError(f"cannot read BGP status from BIRD at {path}: {e}") from e
    if args.output == "json":
        ctx.out.write(json.dumps([s.__dict__ for s in sessions], indent=2) + "\n")
        return 0
    out = ctx.out
    out.write("Calico process is running.\n")
    # as Calico prints it: one table per address family ("No IPv6 peers found." when empty)
    v6 = [s for s in sessions if ":" in (s.peer_address or "")]
    v4 = [s for s in sessions if s not in v6]
    for family, group in (("IPv4", v4), ("IPv6", v6)):
        out.write(f"\n{family} BGP status\n")
        if not group:
            out.write(f"No {family} peers found.\n")
            continue
        rows = [["PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"]]
        for s in group:
            rows.append([s.peer_address or s.name, TYPE_NAMES.get(s.peer_type, s.peer_type), s.state,
                         s.since, s.info])
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        sep = "+" + "+".join("-" * (w + 2) for w in widths) + "+\n"
        out.write(sep)
        for i, r in enumerate(rows):
            out.write("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |\n")
            if i == 0:
                out.write(sep)
        out.write(sep)
    return 0


def add_bird_socket(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bird-socket", default=os.environ.get("CALICO_BIRD_SOCKET", DEFAULT_SOCKET),
                        help=f"BIRD control socket (default {DEFAULT_SOCKET}, or $CALICO_BIRD_SOCKET)")


def register(sub: argparse._SubParsersAction) -> None:
    from calico_net.cli.main import add_noun

    nsub = add_noun(sub, "node", "this node: BGP status, system check, diagnostics")
    st = nsub.add_parser("status", help="BGP sessions of this node, from BIRD")
    add_bird_socket(st)
    st.add_argument("-o", "--output", default="table", choices=["table", "json"])
    st.set_defaults(func=cmd_status)

    from calico_net.cli import nodecheck

    nodecheck.register(nsub, add_bird_socket)
    from calico_net.cli import verify

    verify.register(nsub)
