"""The deciding half of the renderer: :func:`build_bird_model` turns Calico v3
resources (plain dicts, as the datastore holds them) into a :class:`~.birdmodel.BirdModel`
— who peers with whom, under which name, with which options, which prefixes are
exported and accepted — with no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from calico_net.agent.confd import advertise, birdtext, peers, values
from calico_net.agent.confd.birdmodel import (
    BFD_ANNOTATION,
    DEFAULT_AS_NUMBER,
    DEFAULT_RESTART_TIME,
    LOG_CLASSES,
    BirdModel,
    FamilyModel,
    IPAddress,
    IPNetwork,
    NodeInfo,
    node_info,
    PasswordSource,
    RenderError,
    RenderOptions,
    Session,
    check_name,
    hash_router_id,
    KIND_ORDER,
    meta_of,
    one_line,
    protocol_name,
    resolve_password,
    short_name,
    sort_ip,
    spec_of,
    subnets_pattern,
)
from calico_net.agent.confd.birdtext import (
    BirdTextError,
    bird_comment,
    check_bird_string,
    check_password,
)


def build_bird_model(
    node_name: str,
    nodes: Sequence[Mapping[str, Any]],
    bgp_configs: Sequence[Mapping[str, Any]],
    peers: Sequence[Mapping[str, Any]],
    pools: Sequence[Mapping[str, Any]],
    affine_blocks: Iterable[str],
    *,
    passwords: PasswordSource | None = None,
    options: RenderOptions | None = None,
    filters: Sequence[Mapping[str, Any]] = (),
) -> BirdModel:
    """Decide everything the configuration says.

    Semantics follow Calico's confd templates, expressed in BIRD 2 syntax:

    * node-to-node mesh (BGPConfiguration ``default`` ``spec.nodeToNodeMeshEnabled``,
      default on): every non-reflector node peers with every other non-reflector node
      (``Mesh_<ip>``); the session is made one-directional (the node with the lower
      address is passive, the higher one connects) as Calico does, so graceful restart is not raced.
    * route reflectors (Node ``spec.bgp.routeReflectorClusterID``): independent of the mesh
      switch, a reflector peers with every non-reflector node of its AS as ``rr client``
      (``RRClient_<ip>``) and with the other reflectors (``RR_<ip>``); a non-reflector peers
      with every reflector of its AS (``RR_<ip>``). With the mesh off, that is the only
      node-to-node peering.
    * BGPPeers: global ones (no ``node``/``nodeSelector``, ``Global_<ip>``) and per-node
      ones (``node`` or ``nodeSelector`` matching this node, ``Node_<ip>``); the remote side
      is ``peerIP`` (+ ``asNumber``) or every Node matched by ``peerSelector``. One session
      per remote address and port: node-specific beats global beats reflector beats mesh.
    * exported routes: only this node's affine blocks (a ``blackhole`` static route per
      block, so unused addresses are dropped locally and the block is the one route
      advertised), /32s (/128s) of borrowed addresses (a workload route through a
      workload interface to an address outside our blocks, learned from the kernel as
      Calico's BIRD does) and, for reflectors and eBGP peers, BGP routes learned from
      others — all only inside an IPPool whose BGP export is enabled; nothing more
      specific than an own block. Service CIDRs and communities: :mod:`.advertise`.
      Imports accept only prefixes inside an IPPool.
    * the kernel protocol programs BGP-learned pool routes and the own-block blackholes
      (``proto bird``); it learns only non-pool kernel routes (the underlay, so multihop
      next hops resolve), never the workload routes Felix programs. Routes learned
      inside an IP-in-IP or VXLAN pool (``ipipMode``/``vxlanMode`` not ``Never``) are
      not written: the agent programs those through the tunnel (BIRD 2 has no
      ``krt_tunnel``), as Calico's confd leaves VXLAN routes to Felix. They are still
      advertised over BGP exactly as in a plain pool.

    Strings are data, never syntax: every value from the datastore or the environment
    reaches ``bird.cfg`` through one function of :mod:`.birdtext` (quoted strings refuse
    ``"``, ``\\`` and control characters; symbols, numbers, addresses and prefixes are
    rebuilt from parsed values), and the template's ``finalize`` refuses any value that did
    not. The builder checks each object's values with the same functions, so an object
    carrying a value that cannot be written is skipped — noted in the output, listed in
    :attr:`BirdModel.rejected` — and the rest still renders.
    """
    return _Builder(
        node_name, nodes, bgp_configs, pools, affine_blocks,
        passwords=passwords, options=options or RenderOptions(), filters=filters,
    ).build(peers)


class _Builder:
    """The state of one model build: this node, the cluster settings, the sessions
    claimed so far and the notes on what was skipped."""

    def __init__(
        self,
        node_name: str,
        nodes: Sequence[Mapping[str, Any]],
        bgp_configs: Sequence[Mapping[str, Any]],
        pools: Sequence[Mapping[str, Any]],
        affine_blocks: Iterable[str],
        *,
        passwords: PasswordSource | None,
        options: RenderOptions,
        filters: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        self.node_name = node_name
        self.opts = options
        self.passwords = passwords
        self.notes: list[str] = []
        self.rejected: list[str] = []
        self.selectors = peers.Selectors(options.selector_parser)
        try:
            check_name(node_name, "this node's name")
        except BirdTextError as exc:
            raise RenderError(str(exc)) from None

        # Nodes. A malformed *other* node is skipped (it must not break our
        # sessions); a malformed own node is an error.
        self.nodes: dict[str, NodeInfo] = {}
        for res in nodes:
            name = str(meta_of(res).get("name", ""))
            try:
                self.nodes[name] = node_info(res)
            except (ValueError, TypeError) as exc:
                if name == node_name:
                    raise RenderError(f"Node {bird_comment(node_name)}: {exc}") from exc
                self.reject(f"Node {short_name(name)} skipped: {exc}")
        me = self.nodes.get(node_name)
        if me is None:
            raise RenderError(f"Node {node_name!r} not found")
        self.me = me
        self.node_by_ip: dict[IPAddress, NodeInfo] = {}
        for n in self.nodes.values():
            for ip in (n.ipv4, n.ipv6):
                if ip is not None:
                    self.node_by_ip[ip] = n

        # BGPConfiguration: "default", then "node.<name>" for the per-node fields.
        self.cfg_by_name = {str(meta_of(c).get("name", "")): c for c in bgp_configs}
        self.default_cfg = self.cfg_by_name.get("default", {})
        self.node_cfg = self.cfg_by_name.get(f"node.{node_name}", {})
        self.dspec = spec_of(self.default_cfg)
        try:
            self.default_as = values.as_number(self.dspec.get("asNumber", DEFAULT_AS_NUMBER))
        except ValueError as exc:
            raise RenderError(f"BGPConfiguration default: {exc}") from exc
        self.my_as = me.as_number or self.default_as
        self.mesh_enabled = self.dspec.get("nodeToNodeMeshEnabled", True) is not False
        self.bfd = self._bfd_switch()
        self.mesh_password = self._mesh_password()
        restart = self.dspec.get("nodeMeshMaxRestartTime")
        try:
            self.mesh_restart_time = (
                values.restart_time(restart, "nodeMeshMaxRestartTime")
                if restart else None)
        except ValueError as exc:
            raise RenderError(f"BGPConfiguration default: {exc}") from exc
        self._listen_ports: dict[str, int | None] = {}
        # bindMode NodeIP: BIRD binds each session's socket to the node's address.
        self.bind_node_ip = (spec_of(self.node_cfg).get("bindMode")
                             or self.dspec.get("bindMode")) == "NodeIP"
        self.filters, notes = peers.bgp_filters(list(filters))
        for note in notes:
            self.reject(note)

        self.adv = advertise.advertisements(self.dspec, self.reject, spec_of(self.node_cfg))
        self.families = self._families(pools, affine_blocks)
        # The first claim on (family, address, port) wins.
        self.claimed: dict[tuple[int, IPAddress, int | None], str] = {}

    def reject(self, note: str) -> None:
        """An object skipped because a value in it is invalid: noted in the output
        and listed in ``BirdModel.rejected`` (confd logs and counts these)."""
        self.notes.append(note)
        self.rejected.append(note)

    # -- settings

    def _bfd_switch(self) -> bool:
        if self.opts.bfd is not None:
            return self.opts.bfd
        for cfg in (self.node_cfg, self.default_cfg):
            val = values.switch((meta_of(cfg).get("annotations") or {}).get(BFD_ANNOTATION))
            if val is not None:
                return val
        return False

    def _mesh_password(self) -> str | None:
        ref = (self.dspec.get("nodeMeshPassword") or {}).get("secretKeyRef")
        if not ref:
            return None
        password = resolve_password(ref, self.passwords)
        try:
            # Every node reads the same secret; peering without it would only leave
            # sessions down on both ends, so keep the last good configuration instead.
            if password is None:
                raise BirdTextError("its secret cannot be read")
            return check_password(password, "nodeMeshPassword")
        except BirdTextError as exc:
            raise RenderError(f"BGPConfiguration default: nodeMeshPassword is unusable: {exc}") from None

    def _router_id(self) -> str:
        if self.opts.router_id == "hash":
            return hash_router_id(self.node_name)
        if self.opts.router_id:
            try:
                return str(ipaddress.IPv4Address(self.opts.router_id))
            except ValueError:
                raise RenderError(
                    f"router id {bird_comment(self.opts.router_id)!r} is neither an IPv4 "
                    "address nor 'hash'") from None
        if self.me.ipv4 is not None:
            return str(self.me.ipv4)
        raise RenderError(
            f"Node {self.node_name!r} has no IPv4 address for the router id; "
            "set the router_id option (an IPv4 address or 'hash')"
        )

    def _severity(self) -> str:
        nspec = spec_of(self.node_cfg)
        severity = str(
            nspec.get("logSeverityScreen") or self.dspec.get("logSeverityScreen") or "Info"
        ).lower()
        return severity if severity in LOG_CLASSES else "info"

    def node_as(self, n: NodeInfo) -> int:
        return n.as_number or self.default_as

    def listen_port_of(self, name: str) -> int | None:
        """The BGP port of node ``name`` (None: 179). An invalid listenPort is noted
        and ignored — every node ignores it alike, so both ends still agree."""
        if name in self._listen_ports:
            return self._listen_ports[name]
        port: int | None = None
        for cfg_name in (f"node.{name}", "default"):
            raw = spec_of(self.cfg_by_name.get(cfg_name, {})).get("listenPort")
            if not raw:
                continue
            try:
                port = values.tcp_port(raw)
            except ValueError as exc:
                self.reject(f"BGPConfiguration {cfg_name} listenPort ignored: {exc}")
                continue
            break
        self._listen_ports[name] = port
        return port

    def _families(
        self, pools: Sequence[Mapping[str, Any]], affine_blocks: Iterable[str]
    ) -> dict[int, FamilyModel]:
        # (pool, exported over BGP, encapsulated: the agent programs its routes)
        pool_nets: dict[int, list[tuple[IPNetwork, bool, bool]]] = {4: [], 6: []}
        for res in pools:
            spec = spec_of(res)
            try:
                net = ipaddress.ip_network(str(spec.get("cidr", "")).strip(), strict=False)
            except ValueError:
                self.reject(f"IPPool {short_name(meta_of(res).get('name'))} skipped: bad cidr")
                continue
            try:
                encap = values.pool_encapsulated(spec.get("ipipMode"), spec.get("vxlanMode"))
            except ValueError as exc:
                self.reject(f"IPPool {short_name(meta_of(res).get('name'))} skipped: {exc}")
                continue
            export = not spec.get("disableBGPExport", False) and (
                self.opts.export_disabled_pools or not spec.get("disabled", False)
            )
            pool_nets[net.version].append((net, export, encap))
        blocks: dict[int, list[IPNetwork]] = {4: [], 6: []}
        for cidr in affine_blocks:
            try:
                net = ipaddress.ip_network(cidr, strict=False)
            except (ValueError, TypeError):
                self.reject(f"affine block {cidr!r} skipped: not a CIDR")
                continue
            blocks[net.version].append(net)

        families: dict[int, FamilyModel] = {}
        for fam in (4, 6):
            pool_nets[fam].sort(key=lambda p: (p[0].network_address, p[0].prefixlen))
            blocks[fam].sort(key=lambda n: (n.network_address, n.prefixlen))
            my_ip = self.me.ip(fam)
            families[fam] = FamilyModel(
                family=fam,
                # IPv6 only with an address on this node and at least one IPv6 pool.
                enabled=my_ip is not None and (fam == 4 or bool(pool_nets[6])),
                source_address=str(my_ip) if my_ip is not None else None,
                export_pools=[str(n) for n, exp, _ in pool_nets[fam] if exp],
                accept_pools=[str(n) for n, _, _ in pool_nets[fam]],
                skipped_pools=[str(n) for n, exp, _ in pool_nets[fam] if not exp],
                encap_pools=[str(n) for n, _, enc in pool_nets[fam] if enc],
                blocks=[str(b) for b in blocks[fam]],
                block_subnets=[p for b in blocks[fam] if (p := subnets_pattern(b))],
                services=self.adv.services[fam],
                filter_funcs=[f for fs in self.filters.values() for f in fs if f.family == fam],
                communities=self.adv.communities[fam],
            )
        return families

    # -- sessions

    def rr_flags(self, peer_as: int, peer_cluster: str) -> tuple[bool, str | None]:
        """Calico's rule: a reflector treats an iBGP peer as its client unless the peer
        is a reflector of the same cluster."""
        cid = self.me.rr_cluster_id
        if cid and peer_as == self.my_as and peer_cluster != cid:
            return True, cid
        return False, None

    def add(self, session: Session, ip: IPAddress) -> None:
        key = (session.family, ip, session.port)
        if key in self.claimed:
            self.notes.append(
                f"{session.name} ({session.description}) skipped: "
                f"{ip} already peered as {self.claimed[key]}"
            )
            return
        self.claimed[key] = session.name
        self.families[session.family].sessions.append(session)

    def build(self, peers: Sequence[Mapping[str, Any]]) -> BirdModel:
        router_id = self._router_id()
        severity = self._severity()

        # Explicit BGPPeers: node-specific ones first, then global ones.
        node_specific: list[Mapping[str, Any]] = []
        global_peers: list[Mapping[str, Any]] = []
        for res in sorted(peers, key=lambda r: str(meta_of(r).get("name", ""))):
            try:
                scope = self._applies_to_me(spec_of(res))
            except Exception as exc:  # a bad selector breaks only this peer
                self.reject(f"BGPPeer {short_name(meta_of(res).get('name', ''))} skipped: {exc}")
                continue
            if scope is None:
                global_peers.append(res)
            elif scope:
                node_specific.append(res)
        for res in node_specific:
            self._explicit_peer(res, "node", "Node")
        for res in global_peers:
            self._explicit_peer(res, "global", "Global")
        # reversePeering Auto (Calico's default): a node a peerSelector picks peers
        # back with the nodes the BGPPeer is for; Manual leaves that to another BGPPeer.
        for res in sorted(peers, key=lambda r: str(meta_of(r).get("name", ""))):
            spec = spec_of(res)
            if not spec.get("peerSelector") or spec.get("reversePeering") == "Manual":
                continue
            try:
                picked = self.selectors.matches(str(spec["peerSelector"]), self.me.labels)
            except Exception:  # noqa: BLE001 - noted when the forward side was read
                continue
            if picked:
                self._explicit_peer(res, "node", "Node", reverse=True)

        for fam in (4, 6):
            if self.families[fam].enabled:
                self._reflector_sessions(fam)
        if self.mesh_enabled and not self.me.rr_cluster_id:
            for fam in (4, 6):
                if self.families[fam].enabled:
                    self._mesh_sessions(fam)

        for fm in self.families.values():
            fm.sessions.sort(key=lambda s: KIND_ORDER[s.kind])  # stable: keeps IP order

        opts = self.opts
        return BirdModel(
            node_name=self.node_name,
            router_id=router_id,
            as_number=self.my_as,
            mesh_enabled=self.mesh_enabled,
            rr_cluster_id=self.me.rr_cluster_id,
            listen_port=self.listen_port_of(self.node_name),
            log_target=opts.log_target,
            log_classes=LOG_CLASSES[severity],
            debug_protocols="all" if severity == "debug" else "{ states }",
            graceful_restart=opts.graceful_restart,
            default_restart_time=DEFAULT_RESTART_TIME,
            bfd=self.bfd,
            bfd_interval_ms=opts.bfd_interval_ms,
            bfd_multiplier=opts.bfd_multiplier,
            kernel_scan_time=opts.kernel_scan_time,
            kernel_metric=opts.kernel_metric,
            direct_interfaces=self._direct_interfaces(),
            families=[self.families[4], self.families[6]],
            notes=[one_line(n) for n in dict.fromkeys(self.notes)],  # dedup, in order
            rejected=[one_line(n) for n in dict.fromkeys(self.rejected)],
            workload_interfaces=opts.workload_interfaces,
        )

    def _direct_interfaces(self) -> list[tuple[bool, str]]:
        try:
            out = [birdtext.parse_iface_pattern(p, "direct_interfaces entry")
                   for p in self.opts.direct_interfaces]
        except BirdTextError as exc:
            raise RenderError(str(exc)) from None
        # BGPConfiguration ignoredInterfaces (node.<name> over default): excluded
        # before the option's own entries, as Calico puts them before its "*".
        ignored = (spec_of(self.node_cfg).get("ignoredInterfaces")
                   or self.dspec.get("ignoredInterfaces") or [])
        extra = []
        for i, glob in enumerate(ignored if isinstance(ignored, list) else []):
            try:
                extra.append((True, birdtext.parse_iface_pattern(str(glob), "ignoredInterfaces")[1]))
            except BirdTextError as exc:
                self.reject(f"BGPConfiguration ignoredInterfaces[{i}] skipped: {exc}")
        return extra + out

    def _applies_to_me(self, spec: Mapping[str, Any]) -> bool | None:
        """True/False for node-specific peers, None for global ones."""
        if spec.get("node"):
            return bool(spec["node"] == self.node_name)
        if spec.get("nodeSelector"):
            return self.selectors.matches(str(spec["nodeSelector"]), self.me.labels)
        return None

    def _other_nodes(self, fam: int) -> Iterator[tuple[NodeInfo, IPAddress, IPAddress]]:
        """(node, its address, our address) for every other node with an address in
        ``fam``, in address order."""
        my_ip = self.me.ip(fam)
        assert my_ip is not None
        for other in sorted(self.nodes.values(), key=lambda n: sort_ip(n.ip(fam))):
            oip = other.ip(fam)
            if other.name == self.node_name or oip is None:
                continue
            if oip == my_ip:
                self.reject(f"Node {other.name} skipped: it has this node's address")
                continue
            yield other, oip, my_ip

    def _reflector_sessions(self, fam: int) -> None:
        """Route reflector peerings: automatic, between nodes of the same AS."""
        for other, oip, my_ip in self._other_nodes(fam):
            if self.node_as(other) != self.my_as:
                continue
            if other.rr_cluster_id:
                prefix, kind = "RR", "reflector"
                desc = f"route reflector {other.name} (cluster {other.rr_cluster_id})"
            elif self.me.rr_cluster_id:
                prefix, kind = "RRClient", "reflector-client"
                desc = f"route reflector client {other.name}"
            else:
                continue
            self.add(self._node_session(prefix, kind, other, oip, my_ip, desc), oip)

    def _mesh_sessions(self, fam: int) -> None:
        """Node-to-node mesh between non-reflectors."""
        for other, oip, my_ip in self._other_nodes(fam):
            if other.rr_cluster_id:
                continue
            desc = f"node-to-node mesh peer {other.name}"
            self.add(self._node_session("Mesh", "mesh", other, oip, my_ip, desc), oip)

    def _node_session(
        self, prefix: str, kind: str, other: NodeInfo, oip: IPAddress, my_ip: IPAddress,
        desc: str,
    ) -> Session:
        """A session to another Calico node (mesh or reflector peering)."""
        port = self.listen_port_of(other.name)
        peer_as = self.node_as(other)
        rr_client, rr_cid = self.rr_flags(peer_as, other.rr_cluster_id)
        return Session(
            name=protocol_name(prefix, oip, None if port in (None, 179) else port),
            kind=kind,
            family=oip.version,
            neighbor=str(oip),
            port=port,
            as_number=peer_as,
            description=desc,
            source_address=str(my_ip),
            # One-directional, like Calico: the lower address waits for the higher one.
            passive=int(oip) > int(my_ip),
            rr_client=rr_client,
            rr_cluster_id=rr_cid,
            password=self.mesh_password,
            restart_time=self.mesh_restart_time,
            bfd=self.bfd,
        )

    def _peer_targets(self, spec: Mapping[str, Any], reverse: bool) -> list[tuple[IPAddress, int | None, int, str, str]]:
        """(address, port, AS, cluster id if one of our nodes, label) of each remote end.
        ``reverse``: this node matched the peerSelector, so the remote ends are the
        nodes the peering is for (node / nodeSelector; every node for a global one)."""
        out: list[tuple[IPAddress, int | None, int, str, str]] = []
        if spec.get("peerSelector"):
            for other in sorted(self.nodes.values(), key=lambda n: n.name):
                if other.name == self.node_name:
                    continue
                if reverse:
                    if spec.get("node"):
                        match = spec["node"] == other.name
                    elif spec.get("nodeSelector"):
                        match = self.selectors.matches(str(spec["nodeSelector"]), other.labels)
                    else:
                        match = True
                else:
                    match = self.selectors.matches(str(spec["peerSelector"]), other.labels)
                if match:
                    out += [(ip, self.listen_port_of(other.name), self.node_as(other),
                             other.rr_cluster_id, f"node {other.name}")
                            for ip in (other.ipv4, other.ipv6) if ip is not None]
        elif spec.get("peerIP"):
            ip, port = values.peer_address(str(spec["peerIP"]))
            if spec.get("asNumber") in (None, ""):
                raise ValueError("asNumber is required with peerIP")
            known = self.node_by_ip.get(ip)
            out.append((ip, port, values.as_number(spec["asNumber"]),
                        known.rr_cluster_id if known else "", str(ip)))
        else:
            raise ValueError("neither peerIP nor peerSelector is set")
        return out

    def _explicit_peer(self, res: Mapping[str, Any], kind: str, prefix: str,
                       reverse: bool = False) -> None:
        """Turn one BGPPeer that applies to this node into sessions (or notes)."""
        meta, spec = meta_of(res), spec_of(res)
        what = f"BGPPeer {meta.get('name', '')}"  # for the description
        who = f"BGPPeer {short_name(meta.get('name', ''))}"  # for notes
        try:
            check_name(meta.get("name", ""), "BGPPeer name")
            targets = self._peer_targets(spec, reverse)
            password = None
            ref = (spec.get("password") or {}).get("secretKeyRef")
            if ref:
                password = resolve_password(ref, self.passwords)
                if password is None:
                    raise ValueError("its password secret cannot be read")
                password = check_password(password, "its password")
            po = peers.peer_options(spec, password)
            funcs = []
            for name in po.filters:
                if name not in self.filters:
                    raise ValueError(f"its filter {short_name(name)} does not exist or is invalid")
                funcs += self.filters[name]
            peer_bfd = values.switch((meta.get("annotations") or {}).get(BFD_ANNOTATION))
            bfd = self.bfd if peer_bfd is None else peer_bfd
        except Exception as exc:  # a broken BGPPeer breaks only itself
            self.reject(f"{who} skipped: {exc}")
            return

        for ip, port, peer_as, peer_cluster, label in targets:
            fam = ip.version
            my_ip = self.me.ip(fam)
            if not self.families[fam].enabled or my_ip is None:
                self.notes.append(f"{who} -> {label} skipped: IPv{fam} is not enabled on this node")
                continue
            if ip == my_ip:
                self.notes.append(f"{who} -> {ip} skipped: that is this node's own address")
                continue
            local_as = po.local_as if po.local_as is not None else self.my_as
            rr_client, rr_cid = self.rr_flags(peer_as, peer_cluster)
            source = str(my_ip) if po.use_node_ip else None
            description = f"{what} ({label})"
            try:
                check_bird_string(description, "description")
            except BirdTextError as exc:
                self.reject(f"{who} -> {label} skipped: {exc}")
                continue
            self.add(
                Session(
                    name=protocol_name(prefix, ip, port), kind=kind, family=fam,
                    neighbor=str(ip), port=port, as_number=peer_as, description=description,
                    source_address=source, rr_client=rr_client, rr_cluster_id=rr_cid,
                    password=po.password,
                    # nextHopMode Keep; keepOriginalNextHop only towards eBGP peers, as
                    # Calico does (iBGP keeps it anyway).
                    next_hop_keep=po.next_hop_mode == "Keep" or (
                        po.keep_original and peer_as != local_as),
                    next_hop_self=po.next_hop_mode == "Self",
                    restart_time=po.restart_time, ttl_security_hops=po.ttl_hops,
                    allow_local_as=po.allow_local_as, keepalive_time=po.keepalive,
                    local_as=po.local_as,
                    strict_bind=self.bind_node_ip and source is not None,
                    import_filters=[f.name for f in funcs if (f.family, f.direction) == (fam, "import")],
                    export_filters=[f.name for f in funcs if (f.family, f.direction) == (fam, "export")],
                    # BIRD needs a fixed local address for multihop BFD.
                    bfd=bfd and source is not None,
                ),
                ip,
            )
