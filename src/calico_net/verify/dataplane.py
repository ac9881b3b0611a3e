"""The `dataplane` check of `calicoctl node verify`: does this host's table inet
calico and its set of workload routes match what the datastore says?

Nothing is rewritten; both are compared by fingerprint:

* ruleset: the table the agent would write here (`calico_net.preview.ruleset`:
  the agent's own `PolicyDataplane` fed the datastore, with this host's FELIX_*
  environment and config file) is loaded into nftables in a scratch network
  namespace and listed back, so it is in the kernel's words; the live ``nft list
  table inet calico`` is read the same way (handles, counters and the agent's
  ``cali-meta`` fingerprint set dropped). An endpoint chain no rule or map
  refers to is left out of the live side (the agent deletes unused ones lazily).
  The two hashes must agree; otherwise the failure names the chains, sets and
  maps that are missing, unexpected or different.
* workload routes: the agent's routes (protocol 80, main table) through a
  workload interface (an interface prefix, no gateway: the overlay's block routes
  through a tunnel are the block-routes check's) against the /32 and /128 of
  every WorkloadEndpoint of this node the agent accepts
  (`felix.routes.host_routes`, `interface_problem`) whose interface exists and
  is up, as (destination, interface) pairs.

A host without table inet calico at all runs no agent: skipped (the
agent-readiness check reports that).
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
from typing import Any

from calico_net.verify.checks import FAIL, OK, SKIP, Env, Result, _datastore

__all__ = ["check_dataplane", "live_objects", "expected_objects", "route_sets"]

_EP_CHAIN = re.compile(r"^chain (cali-(?:tw|fw)-[0-9a-f]{16})$")
SHOW_MAX = 8


def live_objects(text: str) -> dict[str, tuple[str, ...]]:
    """The live listing as objects, unused endpoint chains left out."""
    from calico_net.preview.ruleset import parse_listing

    objs = parse_listing(text)
    body = "\n".join(ln for lines in objs.values() for ln in lines)
    for name in list(objs):
        m = _EP_CHAIN.match(name)
        if m and m.group(1) not in body:
            del objs[name]
    return objs


def expected_objects(snap: Any, node: str) -> dict[str, tuple[str, ...]]:
    """The table the agent would write on this host, in nft's words."""
    from calico_net.preview.ruleset import canonical_listing, desired_dataplane, parse_listing

    dp = desired_dataplane(snap, node, env=os.environ, config_file=None)
    return parse_listing(canonical_listing(dp.ruleset_text()))


def _names(items: list[str]) -> str:
    more = f" (+{len(items) - SHOW_MAX} more)" if len(items) > SHOW_MAX else ""
    return ", ".join(items[:SHOW_MAX]) + more


def _ruleset(env: Env, snap: Any, text: str) -> Result:
    from calico_net.preview.ruleset import NftFormError, fingerprint

    try:
        want = expected_objects(snap, env.node)
    except NftFormError as e:
        return Result("ruleset-fingerprint", SKIP, f"cannot load the expected table in a scratch network "
                      f"namespace here ({str(e)[:200]})")
    have = live_objects(text)
    fw, fh = fingerprint(want), fingerprint(have)
    if fw == fh:
        return Result("ruleset-fingerprint", OK, f"{fh}: {len(have)} chains, sets and maps as the datastore says")
    missing = sorted(set(want) - set(have))
    extra = sorted(set(have) - set(want))
    differ = sorted(n for n in set(want) & set(have) if want[n] != have[n])
    parts = []
    if differ:
        parts.append(f"differ: {_names(differ)}")
    if missing:
        parts.append(f"missing: {_names(missing)}")
    if extra:
        parts.append(f"unexpected: {_names(extra)}")
    return Result("ruleset-fingerprint", FAIL,
                  f"live {fh} != expected {fw}; " + "; ".join(parts),
                  "the agent rewrites a drifted table on its next refresh (IptablesRefreshInterval): check "
                  "calico-node's log and readiness; if the agent is behind the datastore, restart calico-node; "
                  "`nft list table inet calico` shows the live lines")


def route_sets(env: Env, weps: list[dict[str, Any]], prefixes: tuple[str, ...]) -> tuple[set[tuple[str, str]],
                                                                                         set[tuple[str, str]]]:
    """(expected, live) workload routes of this node as (destination, interface)."""
    from calico_net.agent.felix.routes import host_routes, interface_problem

    links: dict[str, bool] = {}
    for ln in json.loads(env.run(["ip", "-j", "link", "show"]) or "[]"):
        links[str(ln.get("ifname"))] = "UP" in (ln.get("flags") or [])
    want: set[tuple[str, str]] = set()
    for w in weps:
        spec = w.get("spec") or {}
        if spec.get("node") != env.node:
            continue
        iface = spec.get("interfaceName") or None
        routes, problem = host_routes(spec.get("ipNetworks") or ())
        if problem is None and iface is not None:
            problem = interface_problem(iface, prefixes)
        if problem is not None or iface is None or not links.get(iface):
            continue
        for _af, addr, plen in routes:
            want.add((f"{addr}/{plen}", iface))
    have: set[tuple[str, str]] = set()
    for fam in (4, 6):
        for r in json.loads(env.run(["ip", "-j", f"-{fam}", "route", "show", "table", "main", "proto", "80"])
                            or "[]"):
            dev = str(r.get("dev", ""))
            if r.get("gateway") or not dev.startswith(prefixes):
                continue        # the overlay's block routes (through a tunnel), not a workload's
            dst = str(r.get("dst", ""))
            net = ipaddress.ip_network(dst if "/" in dst else f"{dst}/{32 if fam == 4 else 128}", strict=False)
            have.add((str(net), dev))
    return want, have


def _digest(items: set[tuple[str, str]]) -> str:
    return hashlib.sha256("\n".join(sorted(f"{a} {b}" for a, b in items)).encode()).hexdigest()[:16]


def _routes(env: Env, snap: Any) -> Result:
    from calico_net.preview.ruleset import agent_config

    prefixes = tuple(agent_config(snap, env.node, os.environ, None).values["InterfacePrefix"])
    weps = [d for k, d in snap.docs.items() if k[0] == "WorkloadEndpoint"]
    want, have = route_sets(env, weps, prefixes)
    if want == have:
        return Result("route-fingerprint", OK, f"{_digest(have)}: {len(have)} workload route(s) as the datastore says")
    missing = [f"{d} dev {i}" for d, i in sorted(want - have)]
    extra = [f"{d} dev {i}" for d, i in sorted(have - want)]
    parts = []
    if missing:
        parts.append(f"missing: {_names(missing)}")
    if extra:
        parts.append(f"unexpected: {_names(extra)}")
    return Result("route-fingerprint", FAIL, f"live {_digest(have)} != expected {_digest(want)}; " + "; ".join(parts),
                  "the agent restores its routes on its next route refresh (RouteRefreshInterval) or resync: "
                  "check calico-node's log; an unexpected route is for an endpoint the datastore no longer "
                  "places on this node (its WorkloadEndpoint was deleted or moved)")


def check_dataplane(env: Env) -> list[Result]:
    from calico_net.preview import read_snapshot

    try:
        text = env.run(["nft", "list", "table", "inet", "calico"])
    except OSError as e:
        if "No such file" in str(e) or "does not exist" in str(e):
            return [Result("ruleset-fingerprint", SKIP, "no table inet calico on this host: the agent has "
                           "not run here (see agent-readiness)"),
                    Result("route-fingerprint", SKIP, "no agent on this host (no table inet calico)")]
        return [Result("ruleset-fingerprint", FAIL, f"cannot list table inet calico: {str(e)[:200]}",
                       "run node verify as root on the host (or in calico-node's container)")]
    snap = read_snapshot(_datastore(env))
    return [_ruleset(env, snap, text), _routes(env, snap)]
