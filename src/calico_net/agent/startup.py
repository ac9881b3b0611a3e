"""calico/node start-up: register this host's Node resource before the agent runs.

What Calico's ``calico-node -startup`` does for BGP, run once by the image before the
agent, confd and BIRD (``python -m calico_net.agent.startup``):

* the node name: ``NODENAME``, else ``HOSTNAME``, else ``/var/lib/calico/nodename``
  from an earlier start, else the host name (lower case); written back to
  ``/var/lib/calico/nodename`` (``CALICO_NODENAME_FILE``) for the CNI plugin;
* ``spec.bgp.ipv4Address`` from ``IP``: an explicit ``198.18.0.11/24`` (a bare address
  takes its prefix length from the interface that holds it), ``autodetect`` (also
  the behaviour when ``IP`` is unset and the Node has no address yet) using
  ``IP_AUTODETECTION_METHOD``, or ``none``; ``IP6``/``IP6_AUTODETECTION_METHOD``
  likewise, where unset means keep what the Node has (none for a new one);
* autodetection methods, as Calico's: ``first-found`` (first address of the first
  interface not excluded — lo, docker*, cali*, veth*, … see ``DEFAULT_EXCLUDES``),
  ``interface=REGEX[,REGEX]``, ``skip-interface=REGEX[,REGEX]``, ``can-reach=DEST``
  (the source address the kernel would use towards DEST: a route lookup through an
  unconnected UDP socket's ``connect``, no packet is sent) and ``cidr=CIDR[,CIDR]``;
* ``spec.bgp.asNumber`` from ``AS`` (unset: keep; the cluster default applies);
* every other field of an existing Node (labels, annotations, reflector cluster id,
  …) is kept; the update is a compare-and-swap, retried on conflict;
* another Node already using the same address is an error (exit 1), as in Calico;
* ``CALICO_NETWORKING_BACKEND``: ``bird`` (default) and ``vxlan`` need a node address
  (BGP peers with it; VXLAN and IP-in-IP tunnels end at it), ``none`` does not; any
  other value is refused;
* ClusterInformation ``default`` (`ensure_cluster_information`, as libcalico-go's
  ``EnsureInitialized``): created when absent with a random ``clusterGUID`` (32 hex
  digits), ``calicoVersion`` (``v`` + the package version), ``clusterType`` (from
  ``CLUSTER_TYPE``, when set) and ``datastoreReady: true``, by a create that fails if
  another node got there first; when present, only the version is brought up to date,
  a missing GUID or ready flag filled in and ``CLUSTER_TYPE``'s types added (a
  compare-and-swap, retried on conflict): the GUID and an explicit
  ``datastoreReady: false`` are never overwritten. The agent does the same when it
  starts (`calico_net.agent.__main__`), so a host running only the agent has it too;
* then this node's tunnel addresses (IP-in-IP, VXLAN) are reconciled once
  (`calico_net.agent.encap.addrs`), so the agent and confd start with them; an IPAM
  problem there is logged and does not fail start-up: the agent's allocator retries.

How it is built: :func:`list_interfaces` (pyroute2) and :func:`route_source` are the
only I/O on the host; :func:`autodetect` and :func:`desired_bgp` are pure and take
interface lists, so unit tests inject them.

``--help`` and ``--version`` answer and exit before anything is read or registered;
any other argument is a usage error (exit 2).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import re
import socket
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

from calico_net.envhelp import datastore_env_help, environment_only_parser

log = logging.getLogger("calico_net.agent.startup")

NODENAME_FILE = "/var/lib/calico/nodename"

#: CALICO_NETWORKING_BACKEND values: bird (BGP), vxlan (no BIRD; the agent programs
#: every route), none (no routing by calico-node)
BACKENDS = ("bird", "vxlan", "none")

#: Calico's DEFAULT_INTERFACES_TO_EXCLUDE for first-found (regexes, searched). Go's
#: ``$`` is the end of the text; Python's also matches before a final newline, so
#: ``\Z`` stands for it here.
DEFAULT_EXCLUDES = (
    "^docker.*", "^cbr.*", "^dummy.*", "^virbr.*", "^lxcbr.*", "^veth.*", r"^lo\Z",
    "^cali.*", "^tunl.*", "^flannel.*", "^kube-ipvs.*", "^cni.*", "^vxlan.calico.*",
    "^vxlan-v6.calico.*", r"^wireguard.cali\Z", r"^wg-v6.cali\Z", "^nodelocaldns.*",
)

IPInterface = Union[ipaddress.IPv4Interface, ipaddress.IPv6Interface]


class StartupError(RuntimeError):
    """Start-up cannot register this node; str() is the one-line reason."""


@dataclass(frozen=True)
class Interface:
    """One host interface and its addresses (in the kernel's order)."""

    name: str
    index: int
    addresses: tuple[IPInterface, ...]
    up: bool = True


# ---------------------------------------------------------------------- host I/O


def list_interfaces() -> list[Interface]:
    """The interfaces of the current network namespace, by index (pyroute2)."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        links = {}
        for link in ipr.get_links():
            links[link["index"]] = (link.get_attr("IFLA_IFNAME"), bool(link["flags"] & 1))
        addrs: dict[int, list[IPInterface]] = {}
        for a in ipr.get_addr():
            ip = a.get_attr("IFA_LOCAL") or a.get_attr("IFA_ADDRESS")
            if not ip:
                continue
            addrs.setdefault(a["index"], []).append(
                ipaddress.ip_interface(f"{ip}/{a['prefixlen']}"))
    return [
        Interface(name, idx, tuple(addrs.get(idx, ())), up)
        for idx, (name, up) in sorted(links.items())
    ]


def route_source(dest: str, version: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The local address the kernel picks to reach ``dest`` (route lookup only:
    ``connect`` on a UDP socket sends nothing)."""
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    try:
        infos = socket.getaddrinfo(dest, 80, family, socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise StartupError(f"can-reach={dest}: cannot resolve it as IPv{version}: {exc}") from None
    for *_, sockaddr in infos:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            try:
                s.connect(sockaddr)
            except OSError:
                continue
            return ipaddress.ip_address(s.getsockname()[0].split("%")[0])
    return None


# ---------------------------------------------------------------- autodetection


def _usable(addr: IPInterface, version: int) -> bool:
    ip = addr.ip
    return ip.version == version and not (ip.is_link_local or ip.is_loopback or ip.is_multicast)


def _regexes(text: str, what: str) -> list[re.Pattern[str]]:
    out = []
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        try:
            out.append(re.compile(part))
        except re.error as exc:
            raise StartupError(f"{what}={part}: not a valid regular expression: {exc}") from None
    if not out:
        raise StartupError(f"{what}= needs at least one regular expression")
    return out


def _first(
    interfaces: Sequence[Interface],
    version: int,
    include: Sequence[re.Pattern[str]] | None = None,
    exclude: Sequence[re.Pattern[str]] = (),
    cidrs: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network] = (),
) -> IPInterface | None:
    for iface in interfaces:
        if not iface.up:
            continue
        if include is not None and not any(r.search(iface.name) for r in include):
            continue
        if any(r.search(iface.name) for r in exclude):
            continue
        for addr in iface.addresses:
            if not _usable(addr, version):
                continue
            if cidrs and not any(addr.ip in c for c in cidrs if c.version == version):
                continue
            return addr
    return None


def find_interface_address(
    interfaces: Sequence[Interface], ip: ipaddress.IPv4Address | ipaddress.IPv6Address
) -> IPInterface | None:
    """The address (with its prefix length) of the interface holding ``ip``."""
    for iface in interfaces:
        for addr in iface.addresses:
            if addr.ip == ip:
                return addr
    return None


def autodetect(
    method: str,
    version: int,
    interfaces: Sequence[Interface],
    *,
    route_source: Callable[[str, int], Any] = route_source,
) -> IPInterface:
    """This host's address for ``version`` by a Calico autodetection ``method``."""
    method = (method or "first-found").strip()
    default_excl = [re.compile(r) for r in DEFAULT_EXCLUDES]
    if method == "first-found":
        found = _first(interfaces, version, exclude=default_excl)
    elif method.startswith("interface="):
        found = _first(interfaces, version, include=_regexes(method[10:], "interface"))
    elif method.startswith("skip-interface="):
        excl = _regexes(method[15:], "skip-interface") + [re.compile(r"^lo\Z")]
        found = _first(interfaces, version, exclude=excl)
    elif method.startswith("cidr="):
        try:
            cidrs = [ipaddress.ip_network(c.strip(), strict=False)
                     for c in method[5:].split(",") if c.strip()]
        except ValueError as exc:
            raise StartupError(f"{method}: {exc}") from None
        found = _first(interfaces, version, exclude=default_excl, cidrs=cidrs)
    elif method.startswith("can-reach="):
        dest = method[10:].strip()
        if not dest:
            raise StartupError("can-reach= needs a destination address or name")
        src = route_source(dest, version)
        if src is None:
            raise StartupError(f"can-reach={dest}: no IPv{version} route to it")
        found = find_interface_address(interfaces, src)
        if found is None:  # e.g. an address on a device we do not list: no subnet known
            found = ipaddress.ip_interface(f"{src}/{src.max_prefixlen}")
    else:
        raise StartupError(
            f"IP{'6' if version == 6 else ''}_AUTODETECTION_METHOD={method!r} is not one of "
            "first-found, interface=REGEX, skip-interface=REGEX, can-reach=DEST, cidr=CIDR")
    if found is None:
        raise StartupError(f"no IPv{version} address found by autodetection method {method!r}")
    return found


def _explicit(value: str, version: int, interfaces: Sequence[Interface]) -> IPInterface:
    var = "IP" if version == 4 else "IP6"
    try:
        addr = ipaddress.ip_interface(value.strip())
    except ValueError:
        raise StartupError(f"{var}={value!r} is not an IPv{version} address") from None
    if addr.version != version:
        raise StartupError(f"{var}={value!r} is not an IPv{version} address")
    if "/" not in value:
        # Calico: a bare address takes the subnet of the interface that holds it.
        found = find_interface_address(interfaces, addr.ip)
        if found is not None:
            return found
    return addr


def resolve_address(
    env_value: str | None,
    method: str | None,
    version: int,
    existing: str | None,
    interfaces: Callable[[], Sequence[Interface]],
    *,
    route_source: Callable[[str, int], Any] = route_source,
) -> str | None:
    """The ``ipvNAddress`` to store, from the env value and what the Node has."""
    value = (env_value or "").strip()
    if value.lower() == "none":
        return None
    if value.lower() == "autodetect" or (not value and not existing and version == 4):
        return str(autodetect(method or "first-found", version, interfaces(),
                              route_source=route_source))
    if not value:
        return existing or None
    return str(_explicit(value, version, interfaces()))


# ------------------------------------------------------------------------ the node


def node_name(env: Mapping[str, str], nodename_file: str = NODENAME_FILE) -> str:
    for var in ("NODENAME", "HOSTNAME"):
        if env.get(var, "").strip():
            return env[var].strip().lower() if var == "HOSTNAME" else env[var].strip()
    try:
        with open(nodename_file, encoding="utf-8") as fh:
            name = fh.read().strip()
        if name:
            return name
    except OSError:
        pass
    return socket.gethostname().strip().lower()


def desired_bgp(
    existing_bgp: Mapping[str, Any] | None,
    env: Mapping[str, str],
    interfaces: Callable[[], Sequence[Interface]],
    *,
    route_source: Callable[[str, int], Any] = route_source,
) -> dict[str, Any]:
    """The Node's new ``spec.bgp`` from its old one and the environment."""
    bgp = dict(existing_bgp or {})
    v4 = resolve_address(env.get("IP"), env.get("IP_AUTODETECTION_METHOD"), 4,
                         bgp.get("ipv4Address"), interfaces, route_source=route_source)
    v6 = resolve_address(env.get("IP6"), env.get("IP6_AUTODETECTION_METHOD"), 6,
                         bgp.get("ipv6Address"), interfaces, route_source=route_source)
    for field_name, value in (("ipv4Address", v4), ("ipv6Address", v6)):
        if value:
            bgp[field_name] = value
        else:
            bgp.pop(field_name, None)
    as_text = env.get("AS", "").strip()
    if as_text:
        from calico_net.agent.confd.values import as_number

        try:
            bgp["asNumber"] = as_number(as_text)
        except ValueError as exc:
            raise StartupError(f"AS={as_text!r}: {exc}") from None
    return bgp


def _address_conflict(nodes: Sequence[Mapping[str, Any]], name: str, bgp: Mapping[str, Any]) -> str | None:
    mine = {}
    for f in ("ipv4Address", "ipv6Address"):
        if bgp.get(f):
            mine[f] = ipaddress.ip_interface(bgp[f]).ip
    for other in nodes:
        oname = (other.get("metadata") or {}).get("name")
        if oname == name:
            continue
        obgp = (other.get("spec") or {}).get("bgp") or {}
        for f, ip in mine.items():
            if obgp.get(f):
                try:
                    if ipaddress.ip_interface(obgp[f]).ip == ip:
                        return f'Node "{oname}" already uses {ip}'
                except ValueError:
                    continue
    return None


def networking_backend(env: Mapping[str, str]) -> str:
    """``CALICO_NETWORKING_BACKEND`` (lower-cased; unset or empty is bird)."""
    raw = env.get("CALICO_NETWORKING_BACKEND", "")
    backend = raw.strip().lower() or "bird"
    if backend not in BACKENDS:
        raise StartupError(f"CALICO_NETWORKING_BACKEND={raw!r} is not one of {', '.join(BACKENDS)}")
    return backend


def register_node(
    datastore: Any,
    name: str,
    env: Mapping[str, str],
    *,
    interfaces: Callable[[], Sequence[Interface]] = list_interfaces,
    route_source: Callable[[str, int], Any] = route_source,
    attempts: int = 10,
) -> dict[str, Any]:
    """Create or update Node ``name``; returns the stored document."""
    from calico_net.datastore.errors import (
        ResourceAlreadyExists,
        ResourceConflict,
        ResourceNotFound,
    )

    backend = networking_backend(env)
    for _ in range(attempts):
        try:
            existing: dict[str, Any] | None = datastore.get("Node", name)
        except ResourceNotFound:
            existing = None
        spec = dict((existing or {}).get("spec") or {})
        bgp = desired_bgp(spec.get("bgp"), env, interfaces, route_source=route_source)
        if not bgp.get("ipv4Address") and not bgp.get("ipv6Address"):
            if backend != "none":
                need = "BGP" if backend == "bird" else "VXLAN"
                raise StartupError(
                    "this node has no IPv4 or IPv6 address (IP=none and IP6 unset/none); "
                    f"{need} needs one (or set CALICO_NETWORKING_BACKEND=none)")
            spec.pop("bgp", None)
        else:
            spec["bgp"] = bgp
        nodes, _ = datastore.list("Node")
        conflict = _address_conflict(nodes, name, bgp)
        if conflict:
            raise StartupError(f"cannot register node {name}: {conflict}")
        if existing is None:
            doc = {"apiVersion": "projectcalico.org/v3", "kind": "Node",
                   "metadata": {"name": name}, "spec": spec}
            try:
                return datastore.create(doc)
            except ResourceAlreadyExists:
                continue  # created meanwhile: read it and merge
        if (existing.get("spec") or {}) == spec:
            return existing
        doc = dict(existing)
        doc["spec"] = spec
        try:
            return datastore.replace(doc)  # CAS on metadata.resourceVersion
        except (ResourceConflict, ResourceNotFound):
            time.sleep(0.05)
            continue
    raise StartupError(f"Node {name} kept changing underneath; gave up after {attempts} attempts")


def assign_tunnel_addresses(datastore: Any, ipam: Any, name: str) -> dict[str, str | None] | None:
    """Reconcile this node's tunnel addresses once; None (logged) when that fails:
    start-up goes on, and the agent's allocator retries."""
    from calico_net.agent.encap.addrs import reconcile

    try:
        return reconcile(datastore, ipam, name)
    except Exception as exc:  # noqa: BLE001 - IPAM or datastore trouble must not stop the node
        log.warning("tunnel addresses of node %s not reconciled yet: %s (the agent retries)", name, exc)
        log.debug("tunnel address failure", exc_info=True)
        return None


CLUSTER_INFO_NAME = "default"


def calico_version() -> str:
    """What ClusterInformation's calicoVersion records for this build: `v<version>`."""
    from calico_net import __version__

    return f"v{__version__}"


def ensure_cluster_information(datastore: Any, version: str | None = None, cluster_type: str = "",
                               attempts: int = 10) -> dict[str, Any]:
    """ClusterInformation "default" as libcalico-go's ensureClusterInformation leaves it
    (see the module docstring); returns the stored document."""
    from calico_net.datastore.errors import ResourceAlreadyExists, ResourceConflict, ResourceNotFound

    version = calico_version() if version is None else version
    wanted_types = [t for t in cluster_type.strip().strip(",").split(",") if t.strip()]
    for _ in range(attempts):
        try:
            doc = datastore.get("ClusterInformation", CLUSTER_INFO_NAME)
        except ResourceNotFound:
            spec: dict[str, Any] = {"clusterGUID": uuid.uuid4().hex, "calicoVersion": version,
                                    "datastoreReady": True}
            if wanted_types:
                spec["clusterType"] = ",".join(wanted_types)
            try:
                created = datastore.create({"apiVersion": "projectcalico.org/v3", "kind": "ClusterInformation",
                                            "metadata": {"name": CLUSTER_INFO_NAME}, "spec": spec})
            except ResourceAlreadyExists:
                log.info("ClusterInformation default: another node created it first")
                continue
            log.info("ClusterInformation default created: cluster GUID %s, version %s",
                     spec["clusterGUID"], version)
            return created
        spec = dict(doc.get("spec") or {})
        before = dict(spec)
        if version and spec.get("calicoVersion") != version:
            spec["calicoVersion"] = version
        if not spec.get("clusterGUID"):
            spec["clusterGUID"] = uuid.uuid4().hex
        if spec.get("datastoreReady") is None:
            spec["datastoreReady"] = True
        if wanted_types:
            have = [t for t in str(spec.get("clusterType") or "").split(",") if t]
            merged = have + [t for t in wanted_types if t not in have]
            spec["clusterType"] = ",".join(merged)
        if spec == before:
            return doc
        new = dict(doc)
        new["spec"] = spec
        try:
            updated = datastore.replace(new)        # carries resourceVersion: compare-and-swap
        except (ResourceConflict, ResourceNotFound):
            log.info("ClusterInformation default changed meanwhile; reading it again")
            continue
        log.info("ClusterInformation default updated: version %s", spec.get("calicoVersion"))
        return updated
    raise StartupError(f"ClusterInformation default: still changing after {attempts} attempts")


def write_nodename(name: str, path: str = NODENAME_FILE) -> None:
    from calico_net.agent.confd.render import write_if_changed

    write_if_changed(path, name, mode=0o644)


ENVIRONMENT_HELP = f"""\
environment:
  NODENAME                  this node's name (else HOSTNAME, lower-cased, else the
                            nodename file from an earlier start, else the host name)
  HOSTNAME                  see NODENAME
  CALICO_NODENAME_FILE      where the name is kept for the CNI plugin (/var/lib/calico/nodename)
  IP                        198.18.0.11/24, a bare address, "autodetect" or "none"
                            (unset: keep the Node's address, autodetect when it has none)
  IP_AUTODETECTION_METHOD   first-found (default), interface=REGEX[,REGEX],
                            skip-interface=REGEX[,REGEX], can-reach=DEST, cidr=CIDR[,CIDR]
  IP6, IP6_AUTODETECTION_METHOD   likewise for IPv6 (unset: keep; none for a new Node)
  AS                        the Node's AS number (65010 or asdot 1.10; unset: keep)
  CALICO_NETWORKING_BACKEND bird (default) or vxlan need a node address; "none" allows
                            a Node without one
{datastore_env_help(26)}

exit status: 0 registered, 1 cannot register, 2 bad usage or datastore settings."""


def build_parser() -> argparse.ArgumentParser:
    return environment_only_parser(
        "calico-node-startup",
        "calico.net start-up: register this host's Node (name, BGP addresses, AS)\n"
        "in etcd before the agent, confd and BIRD start. It takes no\n"
        "arguments and is configured by the environment.",
        ENVIRONMENT_HELP)


def parse_then_log(parser: argparse.ArgumentParser, argv: Sequence[str] | None, fmt: str,
                   level: int = logging.INFO) -> None:
    """How calico/node's helper programs (start-up, confd) begin: arguments first, so
    --help/--version and a wrong argument do nothing else, then logging to stderr."""
    parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    logging.basicConfig(level=level, stream=sys.stderr, format=fmt)


def main(argv: Sequence[str] | None = None) -> int:
    parse_then_log(build_parser(), argv, "%(asctime)s [%(levelname)s] startup: %(message)s")
    from calico_net.datastore import Datastore, DatastoreError
    from calico_net.datastore.etcd import EtcdClient, EtcdConfig

    env = os.environ
    nodename_file = env.get("CALICO_NODENAME_FILE") or NODENAME_FILE
    name = node_name(env, nodename_file)
    from calico_net.ipam.keys import check_node_name

    try:
        check_node_name(name)  # an etcd key component: no "/", NUL, newline, ".."
    except ValueError as exc:
        log.error("cannot register node: %s", exc)
        return 1
    try:
        client = EtcdClient(EtcdConfig.from_sources())
    except DatastoreError as exc:
        log.error("%s", exc)
        return 2
    try:
        datastore = Datastore(client)
        doc = register_node(datastore, name, env)
        ensure_cluster_information(datastore, cluster_type=env.get("CLUSTER_TYPE", ""))
        write_nodename(name, nodename_file)
        from calico_net.ipam import IPAM

        tunnels = assign_tunnel_addresses(datastore, IPAM(client, datastore), name) or {}
    except StartupError as exc:
        log.error("%s", exc)
        return 1
    except DatastoreError as exc:
        log.error("cannot register node %s: %s", name, exc)
        return 1
    finally:
        client.close()
    bgp = (doc.get("spec") or {}).get("bgp") or {}
    log.info("node %s registered: IPv4 %s, IPv6 %s, AS %s", name,
             bgp.get("ipv4Address", "none"), bgp.get("ipv6Address", "none"),
             bgp.get("asNumber", "cluster default"))
    held = {k: v for k, v in tunnels.items() if v}
    if held:
        log.info("node %s tunnel addresses: %s", name, ", ".join(f"{k} {v}" for k, v in held.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
