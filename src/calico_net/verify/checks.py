"""The checks of `calicoctl node verify`, run on one host against the datastore.

Each check is a function of a :class:`Env` (the datastore client, this node's name,
the BIRD socket, the agent's endpoints) returning a list of :class:`Result`. A check
only reads: nothing is rewritten, every failure names the fix instead. The checks
reuse the code that decides the state they compare against:

* BGP: the sessions confd's own builder (`confd.builder.build_bird_model`, fed by
  confd's `BGPIndex` from the same etcd prefixes, with confd's settings and secrets)
  decides for this node, compared with BIRD's protocols (`confd.birdctl`);
* block routes: IPAM's affinities and pools (`calico_net.ipam`) against the kernel's
  main table; a block in an IP-in-IP/VXLAN pool wants the agent's protocol-80 route
  with a gateway, a plain pool BIRD's route (docs/encapsulation.md);
* MTU: the agent's own underlay detection (`agent.encap.mtu`);
* IPAM: `calico_net.ipam.check.check`, as `calicoctl ipam check`;
* dataplane: the table inet calico and workload routes the agent's own code
  derives from the datastore for this node, against the live ones, by
  fingerprint (`calico_net.verify.dataplane`).
"""
from __future__ import annotations

import datetime
import ipaddress
import json
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable

OK, FAIL, SKIP = "ok", "fail", "skip"
CERT_WARN_DAYS = 30
ETCD_PROBE_TIMEOUT = 3.0
# Encapsulation overheads, as Felix's (docs/encapsulation.md)
IPIP_OVERHEAD, VXLAN_OVERHEAD = 20, 50
RTPROT_FELIX = "80"


@dataclass
class Result:
    check: str
    status: str
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, str]:
        out = {"check": self.check, "status": self.status, "detail": self.detail}
        if self.fix:
            out["fix"] = self.fix
        return out


@dataclass
class Env:
    """What the checks read: built once by the command from its flags and environment."""

    client: Any                      # EtcdClient
    etcd_config: Any                 # EtcdConfig (for per-member probes and the certificates)
    settings: Any                    # confd's ConfdSettings (node name, BIRD socket, secrets)
    backend: str = "bird"            # CALICO_NETWORKING_BACKEND
    readiness_url: str = "http://127.0.0.1:9099/readiness"
    mtu_file: str = "/var/lib/calico/mtu"
    mtu_iface_pattern: str = r"^((en|wl|ww|sl|ib)[opsx].*|(eth|wlan|wwan).*)"
    run: Callable[[list[str]], str] = field(default=lambda argv: _run(argv))

    @property
    def node(self) -> str:
        return str(self.settings.node_name)


def _run(argv: list[str]) -> str:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=15)
    if p.returncode != 0:
        raise OSError(f"{argv[0]} failed: {p.stderr.strip()[:200]}")
    return p.stdout


def _datastore(env: Env) -> Any:
    from calico_net.datastore.store import Datastore

    return Datastore(env.client)


def _ipam(env: Env) -> Any:
    from calico_net.ipam import IPAM

    return IPAM(env.client, _datastore(env))


# ------------------------------------------------------------------ etcd


def check_etcd(env: Env) -> list[Result]:
    from calico_net.datastore.config import EtcdConfig
    from calico_net.datastore.etcd import EtcdClient

    try:
        members = env.client.member_list()
    except Exception as e:  # noqa: BLE001 - any failure to reach etcd is the finding
        return [Result("etcd-members", FAIL, f"cannot list etcd members: {str(e)[:200]}",
                       "check ETCD_ENDPOINTS and that etcd runs and is reachable from this host")]
    out = []
    bad = []
    for m in members:
        name = str(m.get("name") or m.get("ID") or "?")
        urls = list(m.get("clientURLs") or [])
        if not urls:
            bad.append(f"{name}: not started (no client URL)")
            continue
        cfg = EtcdConfig(endpoints=urls, ca_cert_file=env.etcd_config.ca_cert_file,
                         cert_file=env.etcd_config.cert_file, key_file=env.etcd_config.key_file,
                         timeout=ETCD_PROBE_TIMEOUT)
        try:
            c = EtcdClient(cfg)
            try:
                st = c.status()
            finally:
                c.close()
            errors = st.get("errors") or []
            if errors:
                bad.append(f"{name}: {'; '.join(map(str, errors))[:200]}")
        except Exception as e:  # noqa: BLE001 - an unreachable member is the finding
            bad.append(f"{name} ({urls[0]}): unreachable ({str(e)[:120]})")
    if bad:
        out.append(Result("etcd-members", FAIL, f"{len(bad)} of {len(members)} member(s) unhealthy: "
                          + ", ".join(bad),
                          "start the stopped etcd member(s) or remove dead ones (etcdctl member remove)"))
    else:
        out.append(Result("etcd-members", OK, f"{len(members)} member(s) healthy"))
    out.extend(_cert_expiry(env))
    return out


def _cert_expiry(env: Env) -> list[Result]:
    files = [f for f in (env.etcd_config.cert_file, env.etcd_config.ca_cert_file) if f]
    if not files:
        return [Result("etcd-certificates", SKIP, "no TLS client certificate configured")]
    from cryptography import x509

    now = datetime.datetime.now(datetime.timezone.utc)
    worst: tuple[float, str] | None = None
    for path in files:
        try:
            with open(path, "rb") as f:
                cert = x509.load_pem_x509_certificate(f.read())
        except (OSError, ValueError) as e:
            return [Result("etcd-certificates", FAIL, f"cannot read {path}: {e}",
                           "point ETCD_CERT_FILE / ETCD_CA_CERT_FILE at readable PEM certificates")]
        days = (cert.not_valid_after_utc - now).total_seconds() / 86400
        if worst is None or days < worst[0]:
            worst = (days, path)
    assert worst is not None
    days, path = worst
    if days < CERT_WARN_DAYS:
        return [Result("etcd-certificates", FAIL,
                       f"{path} {'expired' if days < 0 else 'expires'} in {days:.0f} day(s)",
                       "renew the etcd certificates (the etcd role re-issues them) and restart the clients")]
    return [Result("etcd-certificates", OK, f"{int(days)} day(s) left ({path})")]


# ------------------------------------------------------------------ BGP


def expected_sessions(env: Env) -> dict[str, str]:
    """{BIRD protocol name: peer description} confd decides for this node, from the
    datastore as confd reads it."""
    from calico_net.agent.confd.builder import build_bird_model
    from calico_net.agent.confd.index import BGPIndex, watched_prefixes
    from calico_net.agent.confd.settings import SecretReader

    index = BGPIndex(env.node)
    kvs: list[Any] = []
    revision = 0
    for prefix in watched_prefixes(env.node):
        got, rev = env.client.get_prefix(prefix)
        kvs.extend(got)
        revision = max(revision, rev)
    index.load(kvs, revision)
    inp = index.render_input()
    model = build_bird_model(env.node, inp.nodes, inp.bgp_configs, inp.peers, inp.pools, inp.blocks,
                             passwords=SecretReader(env.settings.secrets_dir),
                             options=env.settings.options, filters=inp.filters)
    return {s.name: f"{s.kind} {s.neighbor}" for fam in model.families if fam.enabled
            for s in fam.sessions}


def check_bgp(env: Env) -> list[Result]:
    if env.backend in ("vxlan", "none"):
        return [Result("bgp-sessions", SKIP, f"CALICO_NETWORKING_BACKEND is {env.backend}: no BGP")]
    from calico_net.agent.confd.birdctl import BirdCtlError, bgp_sessions

    try:
        want = expected_sessions(env)
    except Exception as e:  # noqa: BLE001 - a render failure is the finding
        return [Result("bgp-sessions", FAIL, f"cannot compute this node's BGP sessions: {str(e)[:200]}",
                       "fix the node's BGP resources (Node spec.bgp, BGPConfiguration, BGPPeer)")]
    sock = env.settings.bird_socket
    try:
        have = {s.name: s for s in bgp_sessions(sock, timeout=5)}
    except (BirdCtlError, OSError) as e:
        return [Result("bgp-sessions", FAIL,
                       f"BIRD is not answering on {sock} ({str(e)[:120]}); {len(want)} session(s) expected",
                       "start BIRD on this node (calico-node's bird service) and check its log")]
    problems = []
    for name in sorted(want):
        s = have.get(name)
        if s is None:
            problems.append(f"{name} ({want[name]}): missing in BIRD")
        elif not s.info.startswith("Established"):
            problems.append(f"{name} ({want[name]}): {s.info or s.state}")
    unexpected = sorted(set(have) - set(want))
    for name in unexpected:
        problems.append(f"{name}: unexpected session (the datastore implies none)")
    if problems:
        return [Result("bgp-sessions", FAIL, "; ".join(problems),
                       "check the peer's BIRD and confd (calicoctl node status on both ends), "
                       "reachability of port 179, and that confd has rendered the current bird.cfg")]
    return [Result("bgp-sessions", OK, f"{len(want)} session(s) Established")]


# ------------------------------------------------------------------ routes


def kernel_routes(env: Env, family: int) -> list[dict[str, Any]]:
    out = env.run(["ip", "-j", f"-{family}", "route", "show", "table", "main"])
    routes = json.loads(out or "[]")
    return routes if isinstance(routes, list) else []


def _norm_dst(dst: str, family: int) -> str:
    if dst == "default":
        return "0.0.0.0/0" if family == 4 else "::/0"
    return str(ipaddress.ip_network(dst if "/" in dst else f"{dst}/{32 if family == 4 else 128}",
                                    strict=False))


def _pool_mode(pools: list[dict[str, Any]], block: Any) -> str:
    """"encap" when the most specific pool holding the block has IP-in-IP or VXLAN on,
    "plain" when it has none, "" when no pool holds it."""
    best: tuple[int, str] | None = None
    for p in pools:
        spec = p.get("spec") or {}
        try:
            net = ipaddress.ip_network(str(spec.get("cidr")), strict=False)
        except ValueError:
            continue
        if net.version == block.version and block.subnet_of(net):
            encap = (spec.get("ipipMode") or "Never") != "Never" or (spec.get("vxlanMode") or "Never") != "Never"
            if best is None or net.prefixlen > best[0]:
                best = (net.prefixlen, "encap" if encap else "plain")
    return best[1] if best else ""


def check_block_routes(env: Env) -> list[Result]:
    ipam = _ipam(env)
    pools, _ = _datastore(env).list("IPPool")
    from calico_net.ipam import keys as ipam_keys

    # Only confirmed affinities are advertised (confd drops pending-deletion ones).
    remote = [a for a in ipam.affinities() if a.node != env.node and a.state == ipam_keys.AFFINITY_CONFIRMED]
    routes = {4: {}, 6: {}}  # family -> dst -> [routes]
    for fam in (4, 6):
        if any(a.cidr.version == fam for a in remote):
            for r in kernel_routes(env, fam):
                routes[fam].setdefault(_norm_dst(str(r.get("dst", "")), fam), []).append(r)
    missing = []
    for a in sorted(remote, key=lambda a: (a.cidr.version, a.cidr)):
        mode = _pool_mode(pools, a.cidr)
        if not mode:
            continue  # outside every pool: not routed by Calico
        have = routes[a.cidr.version].get(str(a.cidr), [])
        if mode == "encap":
            good = [r for r in have if str(r.get("protocol")) in (RTPROT_FELIX, "felix") and r.get("gateway")]
            want = "the agent's protocol-80 route via the tunnel"
        else:
            good = [r for r in have if r.get("protocol") == "bird" and r.get("type", "unicast") == "unicast"]
            want = "a BIRD route"
        if not good and env.backend in ("vxlan", "none") and mode == "plain":
            continue  # no BGP: plain pools are not routed between nodes by Calico
        if not good:
            missing.append(f"{a.cidr} (affine to {a.node}): {want} is missing")
    if missing:
        return [Result("block-routes", FAIL, "; ".join(missing),
                       "check the BGP session to the block's node (BIRD learns plain-pool blocks) or the "
                       "agent's overlay (IP-in-IP/VXLAN blocks); a route deleted by hand comes back on "
                       "BIRD's next kernel scan or the agent's next resync")]
    return [Result("block-routes", OK, f"{len(remote)} remote block(s) routed")]


def check_workload_routes(env: Env) -> list[Result]:
    weps, _ = _datastore(env).list("WorkloadEndpoint")
    mine = [w for w in weps if (w.get("spec") or {}).get("node") == env.node]
    tables: dict[int, dict[str, list[dict[str, Any]]]] = {}
    missing = []
    for w in mine:
        spec = w.get("spec") or {}
        iface = str(spec.get("interfaceName") or "")
        for net in list(spec.get("ipNetworks") or []):
            try:
                n = ipaddress.ip_network(str(net), strict=False)
            except ValueError:
                continue
            if n.version not in tables:
                tables[n.version] = {}
                for r in kernel_routes(env, n.version):
                    tables[n.version].setdefault(_norm_dst(str(r.get("dst", "")), n.version), []).append(r)
            if not any(r.get("dev") == iface for r in tables[n.version].get(str(n), [])):
                name = (w.get("metadata") or {}).get("name", "?")
                missing.append(f"{name}: no route {n} dev {iface}")
    if missing:
        return [Result("workload-routes", FAIL, "; ".join(missing),
                       "check calico-node's agent on this host (its log, /readiness); it programs the "
                       "workload routes and restores them on its next resync")]
    return [Result("workload-routes", OK, f"{len(mine)} local endpoint(s) routed")]


# ------------------------------------------------------------------ agent, MTU, IPAM


def check_readiness(env: Env) -> list[Result]:
    try:
        with urllib.request.urlopen(env.readiness_url, timeout=3) as resp:
            code = resp.status
    except urllib.error.HTTPError as e:
        code = e.code
    except (urllib.error.URLError, OSError) as e:
        return [Result("agent-readiness", FAIL, f"{env.readiness_url}: {e}",
                       "start calico-node on this host; check FELIX_HEALTHENABLED/FELIX_HEALTHPORT")]
    if code != 200:
        return [Result("agent-readiness", FAIL, f"{env.readiness_url} answered {code}",
                       "read calico-node's log: the agent has not applied a full datastore snapshot")]
    return [Result("agent-readiness", OK, f"{env.readiness_url} answered 200")]


def check_mtu(env: Env) -> list[Result]:
    from calico_net.agent.encap.mtu import MtuFile, read_links, underlay

    pools, _ = _datastore(env).list("IPPool")
    node_ip = None
    try:
        node = _datastore(env).get("Node", env.node)
        addr = ((node.get("spec") or {}).get("bgp") or {}).get("ipv4Address")
        node_ip = str(addr).split("/")[0] if addr else None
    except Exception:  # noqa: BLE001 - no Node: autodetection by pattern only
        pass
    under = underlay(read_links(), env.mtu_iface_pattern, node_ip, None)
    overheads = []
    for p in pools:
        spec = p.get("spec") or {}
        if (spec.get("vxlanMode") or "Never") != "Never":
            overheads.append(("VXLAN", VXLAN_OVERHEAD))
        if (spec.get("ipipMode") or "Never") != "Never":
            overheads.append(("IP-in-IP", IPIP_OVERHEAD))
    have = MtuFile(env.mtu_file).read()
    if not under.mtu:
        return [Result("mtu", SKIP, "underlay MTU not detectable on this host")]
    want = under.mtu - max((o for _, o in overheads), default=0)
    what = "/".join(sorted({n for n, _ in overheads})) or "no encapsulation"
    if have is None:
        if overheads:
            return [Result("mtu", FAIL, f"no workload MTU file at {env.mtu_file}; want {want} "
                            f"(underlay {under.mtu}, {what})",
                            "start calico-node (its agent writes the file) or set FELIX_MTUFILEPATH")]
        return [Result("mtu", OK, f"underlay {under.mtu}, {what}, no MTU file (the CNI config's MTU applies)")]
    if have > want:
        return [Result("mtu", FAIL, f"workload MTU {have} in {env.mtu_file} exceeds underlay {under.mtu} "
                        f"less {what} overhead = {want}",
                        "lower ipipMTU/vxlanMTU (FelixConfiguration) or raise the underlay MTU; "
                        "the agent rewrites the file and new workloads take it")]
    return [Result("mtu", OK, f"workload MTU {have} fits underlay {under.mtu} with {what}")]


def check_ipam(env: Env) -> list[Result]:
    from calico_net.ipam.check import check

    report = check(_ipam(env))
    if report.clean:
        return [Result("ipam", OK, f"{report.blocks} block(s), {report.allocations} allocation(s), clean")]
    data = report.to_json()
    parts = [f"{k}: {json.dumps(v)[:300]}" for k, v in data.items() if k != "summary" and v]
    return [Result("ipam", FAIL, f"{report.problems} problem(s): " + "; ".join(parts),
                   "run calicoctl ipam check --show-problem-ips, then calicoctl ipam release for leaks; "
                   "restore or release a corrupted block affinity")]


def check_dataplane(env: Env) -> list[Result]:
    """Ruleset and workload-route fingerprints (`calico_net.verify.dataplane`)."""
    from calico_net.verify.dataplane import check_dataplane as check

    return check(env)


CHECKS: tuple[tuple[str, Callable[[Env], list[Result]]], ...] = (
    ("etcd", check_etcd), ("bgp", check_bgp), ("block-routes", check_block_routes),
    ("workload-routes", check_workload_routes), ("readiness", check_readiness),
    ("mtu", check_mtu), ("ipam", check_ipam), ("dataplane", check_dataplane),
)


def run_checks(env: Env, skip: set[str] = frozenset()) -> list[Result]:
    """Every check, in order; a check that raises becomes a failure, the rest still run."""
    out: list[Result] = []
    for name, fn in CHECKS:
        if name in skip:
            out.append(Result(name, SKIP, "skipped on request (--skip)"))
            continue
        try:
            out.extend(fn(env))
        except Exception as e:  # noqa: BLE001 - one broken check must not hide the others
            out.append(Result(name, FAIL, f"check failed to run: {e.__class__.__name__}: {str(e)[:200]}",
                              "see the detail; rerun with -l debug"))
    return out
