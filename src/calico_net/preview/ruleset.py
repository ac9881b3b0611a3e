"""Table inet calico of one node as the agent would write it, from a `Snapshot`.

No second implementation: the agent's own `PolicyDataplane` is fed the snapshot's
documents the way the daemon feeds them (`daemon.Daemon._dispatch`: FelixConfigurations
first for the settings, made as the daemon makes them (`daemon.felix_settings`), an
endpoint the daemon refuses left out with the daemon's own checks, `routes.host_routes`/`routes.interface_problem`/`daemon._host_endpoint_problem`),
the overlay's allowed hosts come from the overlay's own `encap.state.desired`, and one
apply runs against a backend that touches no kernel. What it wrote is the `Ruleset`
the node's agent holds; `NftWriter.full_script` prints it as the agent loads it.

Two forms of the result:

* rendered: the agent's own rule lines and set elements (`objects_of_ruleset`),
  no tool needed;
* kernel: the script loaded into nftables in a throw-away network namespace and
  listed back (`canonical_listing`): exactly the text ``nft list table inet calico``
  shows on the host, so it compares line for line with a live listing.

Either becomes `Objects`: {"chain NAME" / "set NAME" / "map NAME": lines} with the
chain's rules in order and a set's elements sorted, the fingerprint set
``cali-meta`` left out. `parse_listing` reads a live listing into the same shape
(handles and counters dropped), and `fingerprint` hashes one.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
from typing import Any, Callable, Mapping

from .snapshot import Snapshot

log = logging.getLogger(__name__)

__all__ = ["Objects", "desired_dataplane", "desired_script", "objects_of_ruleset", "parse_listing",
           "canonical_listing", "kernel_form_available", "fingerprint", "NftFormError",
           "agent_config"]

Objects = dict[str, tuple[str, ...]]

META_SET = "cali-meta"


class NftFormError(RuntimeError):
    """The kernel form cannot be made here (no nft, no namespace, nft refused)."""


class _NoKernel:
    """An `NftBackend` that writes nothing: the dataplane's apply renders only."""

    def run(self, script: str, meanwhile: Callable[[], None] | None = None,
            on_spawn: Callable[[], None] | None = None) -> None:
        if meanwhile is not None:
            meanwhile()

    def list_table(self) -> None:
        return None

    def table_exists(self) -> bool:
        return False

    def read_counts(self) -> None:
        return None

    def read_fingerprint(self) -> None:
        return None

    def element_writer(self) -> None:
        return None


def agent_config(snap: Snapshot, node: str, env: Mapping[str, str] | None = None,
                 config_file: str | None = "") -> Any:
    """The agent's `Config` of `node`: `env` (FELIX_*) and `config_file` as on the
    host (default: neither; None: the agent's own default, $FELIX_CONFIGFILE or
    /etc/calico/felix.cfg), then FelixConfigurations ``node.<node>`` and ``default``."""
    from calico_net.agent.config import Config

    cfg = Config(node, env=dict(env or {}), config_file=config_file)
    for name in ("default", f"node.{node}"):
        doc = snap.docs.get(("FelixConfiguration", None, name))
        if doc is not None:
            cfg.set_felix_configuration(name, doc.get("spec") or {})
    return cfg


def _encap_hosts(snap: Snapshot, node: str, cfg: Any) -> tuple[Any, Any, int] | None:
    """What the overlay tells the policy dataplane (`set_encap_hosts`), or None
    when no pool is encapsulated (it tells nothing then)."""
    from calico_net.agent.encap.state import EncapSettings, Underlay, desired

    pools = {k[2]: dict(d.get("spec") or {}) for k, d in snap.docs.items() if k[0] == "IPPool"}
    nodes = {k[2]: dict(d.get("spec") or {}) for k, d in snap.docs.items() if k[0] == "Node"}
    want = desired(node, pools, nodes, {}, EncapSettings.from_values(cfg.values), Underlay())
    if want.ipip_sources is None and want.vxlan_sources is None:
        return None
    return want.ipip_sources, want.vxlan_sources, want.vxlan_port


def desired_dataplane(snap: Snapshot, node: str, env: Mapping[str, str] | None = None,
                      config_file: str | None = "") -> Any:
    """The agent's `PolicyDataplane` of `node` after one apply of `snap` (nothing
    written anywhere); its `rs` is the desired table."""
    from calico_net.agent.daemon import DATAPLANE_KINDS, _host_endpoint_problem, felix_settings
    from calico_net.agent.felix.policy import PolicyDataplane
    from calico_net.agent.felix.settings import FelixSettings
    from calico_net.agent.felix.routes import host_routes, interface_problem

    cfg = agent_config(snap, node, env, config_file)
    settings = felix_settings(cfg, FelixSettings)
    prefixes = tuple(settings.interface_prefixes)
    dp = PolicyDataplane(node, settings, nft=_NoKernel())
    for (kind, ns, name), doc in sorted(snap.docs.items(), key=lambda kv: (kv[0][0], kv[0][1] or "", kv[0][2])):
        if kind not in DATAPLANE_KINDS:
            continue
        problem = None
        spec = doc.get("spec") or {}
        if kind == "WorkloadEndpoint":
            problem = host_routes(spec.get("ipNetworks") or ())[1]
            ifname = spec.get("interfaceName") or None
            if problem is None and spec.get("node") == node and ifname is not None:
                problem = interface_problem(ifname, prefixes)
        elif kind == "HostEndpoint":
            problem = _host_endpoint_problem(dict(doc))
        if problem is not None:
            continue        # the daemon refuses it: treated as absent
        dp.update(kind, name, ns, dict(doc))
    hosts = _encap_hosts(snap, node, cfg)
    if hosts is not None:
        dp.set_encap_hosts(*hosts)
    dp.apply()
    return dp


def desired_script(dp: Any) -> str:
    """The full ``nft -f`` script of a dataplane's desired table."""
    return dp.ruleset_text()


def _elem_text(key: str, value: str | None) -> str:
    return key if value is None else f"{key} : {value}"


def objects_of_ruleset(rs: Any) -> Objects:
    """The rendered form of a `Ruleset` (the agent's own lines)."""
    out: Objects = {}
    for name, c in rs.chains.items():
        head = []
        if c.hook:
            head.append(c.hook.rstrip(";") + ";")
        if c.comment:
            head.append(f'comment "{c.comment}"')
        out[f"chain {name}"] = tuple(head) + tuple(c.rules)
    for name, s in rs.sets.items():
        if name == META_SET:
            continue
        out[f"{'map' if s.is_map else 'set'} {name}"] = (s.decl,) + tuple(
            sorted(_elem_text(k, v) for k, v in s.elements.items()))
    return out


# ---------------------------------------------------------------- the kernel's form

_HANDLE = re.compile(r"\s*# handle \d+\s*$")
_COUNTER = re.compile(r"\bcounter packets \d+ bytes \d+")


def _split_elements(text: str) -> list[str]:
    """Elements of an ``elements = { ... }`` body, split at top-level commas."""
    out, depth, cur = [], 0, []
    for ch in text:
        if ch in "{[(":
            depth += 1
        elif ch in "}])":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        out.append("".join(cur).strip())
    return [" ".join(e.split()) for e in out if e]


def parse_listing(text: str) -> Objects:
    """``nft list table inet calico`` (with or without ``-a``) as `Objects`:
    chain lines in order, set properties then elements sorted; handles and
    counters' numbers dropped; ``cali-meta`` left out."""
    out: Objects = {}
    lines = [_HANDLE.sub("", ln).rstrip() for ln in text.splitlines()]
    i = 0
    n = len(lines)
    while i < n:
        s = lines[i].strip()
        m = re.match(r"^(chain|set|map) (\S+) \{$", s)
        if not m:
            i += 1
            continue
        what, name = m.group(1), m.group(2).strip('"')
        body: list[str] = []
        depth = 1
        i += 1
        while i < n and depth:
            t = lines[i].strip()
            depth += t.count("{") - t.count("}")
            if depth > 0 or t != "}":
                body.append(t)
            i += 1
        if what == "chain":
            out[f"chain {name}"] = tuple(_COUNTER.sub("counter", b) for b in body if b)
            continue
        if name == META_SET:
            continue
        joined = " ".join(b for b in body if b)
        props, elems = joined, []
        em = re.search(r"elements = \{(.*)\}", joined)
        if em:
            props = joined[:em.start()].strip()
            elems = _split_elements(em.group(1))
        out[f"{what} {name}"] = (" ".join(props.split()),) + tuple(sorted(elems))
    return out


def _unshare_argv() -> list[str]:
    if os.geteuid() == 0:
        return ["unshare", "--net"]
    return ["unshare", "--user", "--map-root-user", "--net"]


def kernel_form_available() -> bool:
    """Whether `canonical_listing` can run here (nft and unshare present)."""
    return bool(shutil.which("nft") and shutil.which("unshare"))


def canonical_listing(script: str, nft: str = "nft", timeout: float = 60) -> str:
    """`script` loaded into nftables in a new, empty network namespace and listed
    back: nft's own text for it. Raises `NftFormError` when that cannot be done."""
    argv = _unshare_argv() + ["sh", "-c", f'{nft} -f - && {nft} list table inet calico']
    try:
        p = subprocess.run(argv, input=script, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NftFormError(f"cannot run nft in a scratch namespace: {exc}") from None
    if p.returncode != 0:
        raise NftFormError(f"nft in a scratch namespace failed: {p.stderr.strip()[:300]}")
    return p.stdout


def fingerprint(objs: Objects) -> str:
    """An order-independent hash of `objs` (16 hex digits)."""
    h = hashlib.sha256()
    for name in sorted(objs):
        h.update(name.encode() + b"\0" + "\n".join(objs[name]).encode() + b"\0\0")
    return h.hexdigest()[:16]
