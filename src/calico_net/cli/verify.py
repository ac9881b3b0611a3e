"""`calicoctl node verify`: is this host's part of the fabric healthy?

Runs the checks of :mod:`calico_net.verify.checks` on this host, against the
datastore, and prints one row per check (check, status, detail, and for a failure
the fix) or, with `-o json`, `{"node", "ok", "checks": [...]}`. Exit 1 when any check
failed. It reads confd's environment (NODENAME, CALICO_BIRD_SOCKET,
CALICO_BGP_SECRETS_DIR, ...) so it computes the same BGP sessions confd does, and
Felix's (FELIX_*, FELIX_CONFIGFILE) for the agent's readiness port, the MTU file and
the ruleset the agent would write here (the dataplane check's fingerprints).
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Any

from calico_net.errors import printable

CHECK_NAMES = ("etcd", "bgp", "block-routes", "workload-routes", "readiness", "mtu", "ipam", "dataplane")


def cmd_verify(args: argparse.Namespace, ctx: Any) -> int:
    from calico_net.agent.confd.settings import ConfdSettings
    from calico_net.datastore.config import EtcdConfig
    from calico_net.verify.checks import FAIL, Env, run_checks

    env = dict(os.environ)
    if args.node:
        env["NODENAME"] = args.node
    if args.bird_socket:
        env["CALICO_BIRD_SOCKET"] = args.bird_socket
    settings = ConfdSettings.from_env(env)
    port = env.get("FELIX_HEALTHPORT") or "9099"
    ve = Env(
        client=ctx.client,
        etcd_config=EtcdConfig.from_sources(config_file=ctx.config_file),
        settings=settings,
        backend=(env.get("CALICO_NETWORKING_BACKEND") or "bird").lower(),
        readiness_url=args.readiness_url or f"http://127.0.0.1:{port}/readiness",
        mtu_file=env.get("FELIX_MTUFILEPATH") or "/var/lib/calico/mtu",
    )
    if env.get("FELIX_MTUIFACEPATTERN"):
        ve.mtu_iface_pattern = env["FELIX_MTUIFACEPATTERN"]
    results = run_checks(ve, set(args.skip or ()))
    failed = [r for r in results if r.status == FAIL]
    if args.output == "json":
        ctx.out.write(json.dumps({"node": ve.node, "ok": not failed,
                                  "checks": [r.to_json() for r in results]}, indent=2) + "\n")
    else:
        rows = [("CHECK", "STATUS", "DETAIL")] + [
            (r.check, r.status.upper(), printable(r.detail, 2000)) for r in results]
        w0 = max(len(r[0]) for r in rows)
        w1 = max(len(r[1]) for r in rows)
        for c, s, d in rows:
            ctx.out.write(f"{c.ljust(w0)}  {s.ljust(w1)}  {d}\n")
        for r in failed:
            ctx.out.write(f"\nFIX {r.check}: {printable(r.fix, 2000)}")
        ctx.out.write(f"\n{'FAILED' if failed else 'OK'}: {len(failed)} failed check(s) on {ve.node}\n")
    return 1 if failed else 0


def register(nsub: argparse._SubParsersAction) -> None:
    """Add `verify` under the `node` noun (calico_net.cli.node passes its subparsers)."""
    p = nsub.add_parser("verify", help="check this host's fabric: etcd, BGP, routes, agent, MTU, IPAM, "
                                       "ruleset and route fingerprints",
                          description="Verify this host against the datastore; exit 1 on any failure, "
                                      "each with its fix.")
    p.add_argument("-o", "--output", default="table", choices=["table", "json"])
    p.add_argument("--node", default=None, help="this node's name (default $NODENAME, else the hostname)")
    p.add_argument("--bird-socket", default=None,
                   help="BIRD control socket (default $CALICO_BIRD_SOCKET, else /var/run/calico/bird.ctl)")
    p.add_argument("--readiness-url", default=None,
                   help="the agent's readiness endpoint (default http://127.0.0.1:$FELIX_HEALTHPORT/readiness)")
    p.add_argument("--skip", action="append", choices=CHECK_NAMES, help="leave a check out (repeatable)")
    p.set_defaults(func=cmd_verify)
    from calico_net.cli import preview

    preview.register(nsub)
