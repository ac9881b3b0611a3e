"""Calico BGP features on the multi-host fabric (tests/fv/bgp_util.py) with real
etcd, the real confd process and BIRD on every host and a BIRD top-of-rack router
(AS 65001): borrowed addresses advertised as /32s by the node that holds them, the
BGPConfiguration service CIDRs from every node, and communities from
prefixAdvertisements as the ToR sees them (``birdc show route all``), a BGPFilter on
one peer and a per-peer localASNumber (a second router, ext2), nextHopMode Keep through
a route reflector.

One fabric for the module; the tests run in file order and each one puts the
datastore back the way it found it. Service CIDRs: 198.18.200.0/24-198.18.203.0/24; a small IPPool 198.18.244.0/25.
"""

from __future__ import annotations

import re
import subprocess
from typing import Iterator

import pytest

import bgp_util as bu

pytestmark = [pytest.mark.root]

CONVERGE = 60  # seconds: a generous deadline on a loaded 2-core CI machine
CLUSTER_CIDR = "198.18.200.0/24"
EXTERNAL_CIDR = "198.18.201.0/24"
LB_CIDR = "198.18.202.0/24"
TCP_PORT = 8080
SMALL_POOL = "198.18.244.0/25"


@pytest.fixture(scope="module")
def fabric(tmp_path_factory) -> Iterator[bu.Fabric]:
    f = bu.Fabric(tmp_path_factory.mktemp("bgpfeat"), 3)
    try:
        f.setup()
        for h in f.hosts:
            f.add_workload(h)
        f.start_tor()
        f.apply({"apiVersion": "projectcalico.org/v3", "kind": "BGPPeer",
                 "metadata": {"name": "tor"},
                 "spec": {"peerIP": bu.TOR_IP, "asNumber": bu.TOR_AS}})
        bu.wait_for(lambda: all(_tor_established(f, h) for h in f.hosts), CONVERGE,
                    "ToR sessions Established", f.diag)
        yield f
    except BaseException:
        print(f.diag())
        raise
    finally:
        f.teardown()


def _tor_established(f: bu.Fabric, h: bu.Host) -> bool:
    return f"host_{h.name}" in bu.established(f.tor_sock)


def birdc(sock: str, *args: str) -> str:
    return subprocess.run(["birdc", "-s", sock, *args], capture_output=True, text=True,
                          timeout=15).stdout


def tor_route_all(f: bu.Fabric, prefix: str) -> str:
    return birdc(f.tor_sock, "show", "route", "all", "for", prefix)


def tor_next_hops(f: bu.Fabric, prefix: str) -> set[str]:
    """The hosts' addresses the ToR has a BGP route for exactly ``prefix`` from."""
    out = birdc(f.tor_sock, "show", "route", prefix, "all")
    hops = set()
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("BGP.next_hop:"):
            hops.add(line.split(":", 1)[1].strip())
    return hops


def _default_cfg(f: bu.Fabric) -> dict:
    return f.ds.get("BGPConfiguration", "default")


def _set_default_spec(f: bu.Fabric, **spec: object) -> None:
    doc = _default_cfg(f)
    for k, v in spec.items():
        if v is None:
            doc["spec"].pop(k, None)
        else:
            doc["spec"][k] = v
    f.ds.replace(doc)


def _tcp_server(w: bu.Workload) -> subprocess.Popen:
    code = ("import socket\n"
            "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            f"s.bind(('0.0.0.0', {TCP_PORT})); s.listen(8); print('up', flush=True)\n"
            "while True:\n"
            "    c, _ = s.accept(); c.sendall(b'hello'); c.close()\n")
    p = subprocess.Popen(["ip", "netns", "exec", w.ns, bu.PYTHON, "-c", code],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "up"
    return p


def _tcp_ok(src: bu.Workload, ip: str) -> bool:
    code = (f"import socket; c = socket.create_connection(({ip!r}, {TCP_PORT}), timeout=2); "
            "assert c.recv(5) == b'hello'")
    return subprocess.run(["ip", "netns", "exec", src.ns, bu.PYTHON, "-c", code],
                          capture_output=True, timeout=15).returncode == 0


def _remove_workload(f: bu.Fabric, w: bu.Workload) -> None:
    bu.sh("ip", "link", "del", w.iface, ns=w.host.ns, check=False)
    bu.sh("ip", "netns", "del", w.ns, check=False)
    w.host.workloads.remove(w)


def _in(ip: str, cidr: str) -> bool:
    import ipaddress

    return ipaddress.ip_address(ip) in ipaddress.ip_network(cidr)


# ------------------------------------------------------------------ borrowed addresses


def test_borrowed_address_is_advertised_by_its_node_and_withdrawn(fabric: bu.Fabric) -> None:
    f = fabric
    h1, h2, h3 = f.hosts
    f.ipam.set_config(strict_affinity=False)
    # A pool of two blocks, the only enabled one: h1 and h3 claim one each, so h2
    # finds no free block and borrows an address from one of theirs.
    f.apply({"apiVersion": "projectcalico.org/v3", "kind": "IPPool",
             "metadata": {"name": "fv-feat-small"},
             "spec": {"cidr": SMALL_POOL, "blockSize": 26}})
    _set_pool_disabled(f, "fv-pool", True)
    made: list[bu.Workload] = []
    try:
        made += [f.add_workload(h1, "sa"), f.add_workload(h3, "sb")]
        w = f.add_workload(h2, "borrow")
        made.append(w)
        assert not any(_in(w.ip, b) for b in f.blocks_of(h2)), (w.ip, f.blocks_of(h2))
        owner = next(h for h in (h1, h3) if any(_in(w.ip, b) for b in f.blocks_of(h)))
        third = h3 if owner is h1 else h1
        host32 = f"{w.ip}/32"

        # The holder advertises the /32; the block owner, the third node and the ToR
        # route it to h2, while the owner's block route stays aggregated.
        # (Other nodes pass on what they learned to the eBGP ToR too, as Calico's
        # nodes do, and one of those paths may arrive first: the path from h2 itself
        # must be there.)
        bu.wait_for(lambda: f.tor_routes().get(w.ip) and h2.ip in tor_next_hops(f, host32) and all(
            o.routes().get(w.ip) for o in (owner, third)), CONVERGE,
            f"{host32} routed at the ToR (a path from {h2.name}), {owner.name} and {third.name}", f.diag)
        for o in (owner, third):
            assert o.routes()[w.ip].get("gateway") == h2.ip, o.routes()[w.ip]
        (block,) = [b for b in f.blocks_of(owner) if _in(w.ip, b)]
        assert owner.ip in tor_next_hops(f, block)

        src = third.workloads[0]
        server = _tcp_server(w)
        try:
            assert bu.wait_for(lambda: f.ping(src, w.ip), 20, f"ping {third.name} -> {w.ip}")
            assert _tcp_ok(src, w.ip)
            # The owner's workload in the same block stays reachable beside it.
            assert f.ping(src, owner.workloads[-1].ip)
        finally:
            server.kill()
            server.wait()

        _remove_workload(f, w)
        made.remove(w)
        bu.wait_for(lambda: w.ip not in f.tor_routes() and all(
            w.ip not in o.routes() for o in (owner, third)), CONVERGE,
            f"{host32} withdrawn everywhere", f.diag)
        assert not f.ping(src, w.ip)  # gone: the owner's blackhole drops it
        assert f.ping(src, owner.workloads[-1].ip)  # and the block still works
    finally:
        for m in made:
            _remove_workload(f, m)
        for handle in ("fv-h1-sa", "fv-h3-sb", "fv-h2-borrow"):
            _release_handle(f, handle)
        _set_pool_disabled(f, "fv-pool", False)
        for h in f.hosts:
            for b in f.blocks_of(h):
                if _in(b.split("/")[0], SMALL_POOL):
                    f.ipam.release_affinity(h.name, b)
        f.delete("IPPool", "fv-feat-small")


def _set_pool_disabled(f: bu.Fabric, name: str, disabled: bool) -> None:
    doc = f.ds.get("IPPool", name)
    doc["spec"]["disabled"] = disabled
    f.ds.replace(doc)


def _release_handle(f: bu.Fabric, handle: str) -> None:
    from calico_net.ipam import errors

    try:
        f.ipam.release_by_handle(handle)
    except errors.IPAMError:
        pass


# ------------------------------------------------------------------ services + communities


def test_service_cidrs_from_every_node_with_communities(fabric: bu.Fabric) -> None:
    f = fabric
    hosts = {h.ip for h in f.hosts}
    try:
        _set_default_spec(
            f,
            serviceClusterIPs=[{"cidr": CLUSTER_CIDR}],
            serviceExternalIPs=[{"cidr": EXTERNAL_CIDR}],
            serviceLoadBalancerIPs=[{"cidr": LB_CIDR}],
            communities=[{"name": "lb", "value": "65001:100"},
                         {"name": "lb-large", "value": "64512:300:7"}],
            prefixAdvertisements=[
                {"cidr": LB_CIDR, "communities": ["lb", "lb-large"]},
                {"cidr": bu.POOL_CIDR, "communities": ["65001:200"]},
            ],
        )
        for cidr in (CLUSTER_CIDR, EXTERNAL_CIDR, LB_CIDR):
            bu.wait_for(lambda c=cidr: tor_next_hops(f, c) >= hosts, CONVERGE,
                        f"{cidr} at the ToR from every node", f.diag)
        lb = tor_route_all(f, LB_CIDR)
        assert "BGP.community: (65001,100)" in lb, lb
        assert "BGP.large_community: (64512, 300, 7)" in lb, lb
        cluster = tor_route_all(f, CLUSTER_CIDR)
        assert "(65001,100)" not in cluster and "community" not in cluster, cluster
        # The pool's prefixAdvertisement community rides on the nodes' block routes.
        block = sorted(b for b in f.blocks_of(f.hosts[0]) if _in(b.split("/")[0], bu.POOL_CIDR))[0]
        bu.wait_for(lambda: "BGP.community: (65001,200)" in tor_route_all(f, block),
                    CONVERGE, f"community on {block}", f.diag)
        # Never written into a node's kernel (they are only advertised).
        for h in f.hosts:
            assert not any(d.startswith("198.18.20") for d in h.routes()), h.routes()

        # Aggregation Disabled: no LoadBalancer CIDR (Calico would send per-Service
        # /32s, and there are no Services); the other CIDRs stay.
        _set_default_spec(f, serviceLoadBalancerAggregation="Disabled")
        bu.wait_for(lambda: not tor_next_hops(f, LB_CIDR), CONVERGE, "LB CIDR withdrawn",
                    f.diag)
        assert tor_next_hops(f, CLUSTER_CIDR) >= hosts
    finally:
        _set_default_spec(f, serviceClusterIPs=None, serviceExternalIPs=None,
                          serviceLoadBalancerIPs=None, communities=None,
                          prefixAdvertisements=None, serviceLoadBalancerAggregation=None)
    bu.wait_for(lambda: not tor_next_hops(f, CLUSTER_CIDR), CONVERGE, "services withdrawn",
                f.diag)


def test_filter_keeps_a_prefix_off_one_peer_and_local_as_per_peer(fabric: bu.Fabric) -> None:
    """A BGPFilter on the ToR's BGPPeer rejects the LoadBalancer CIDR there only: a second
    router (ext2, peering with h1 through a BGPPeer with localASNumber 65010) still gets it,
    and its session runs with h1 in AS 65010."""
    f = fabric
    h1 = f.hosts[0]
    local_as = 65010
    if bu.EXT2_NS not in bu.sh("ip", "netns", "list"):
        f._attach(bu.EXT2_NS, "ext2", [f"{bu.EXT2_IP}/24"])
    cfg = f.router_config(bu.EXT2_IP, bu.EXT2_AS, [h1]).replace(
        f"as {bu.CLUSTER_AS};", f"as {local_as};")
    f.ext2 = f._start_router(bu.EXT2_NS, "ext2", cfg)
    try:
        f.apply({"apiVersion": "projectcalico.org/v3", "kind": "BGPFilter",
                 "metadata": {"name": "no-lb"},
                 "spec": {"exportV4": [{"cidr": LB_CIDR, "matchOperator": "Equal",
                                        "action": "Reject"}]}})
        f.apply({"apiVersion": "projectcalico.org/v3", "kind": "BGPPeer",
                 "metadata": {"name": "ext2"},
                 "spec": {"node": h1.name, "peerIP": bu.EXT2_IP, "asNumber": bu.EXT2_AS,
                          "localASNumber": local_as}})
        _set_default_spec(f, serviceClusterIPs=[{"cidr": CLUSTER_CIDR}],
                          serviceLoadBalancerIPs=[{"cidr": LB_CIDR}])
        # Before the filter: the ToR has the LB CIDR (the allowed half of the pair).
        bu.wait_for(lambda: tor_next_hops(f, LB_CIDR), CONVERGE, "LB CIDR at the ToR", f.diag)
        tor_peer = f.ds.get("BGPPeer", "tor")
        tor_peer["spec"]["filters"] = ["no-lb"]
        f.ds.replace(tor_peer)

        bu.wait_for(lambda: "host_h1" in bu.established(f.ext2_sock), CONVERGE,
                    "ext2 session with h1 Established", f.diag)
        proto = birdc(f.ext2_sock, "show", "protocols", "all", "host_h1")
        assert re.search(rf"Neighbor AS:\s+{local_as}\n", proto), proto
        bu.wait_for(lambda: not tor_next_hops(f, LB_CIDR), CONVERGE,
                    "LB CIDR gone from the ToR", f.diag)
        ext2 = bu.wait_for(lambda: (lambda out: out if f"BGP.next_hop: {h1.ip}" in out else "")(
            birdc(f.ext2_sock, "show", "route", "all", "for", LB_CIDR)), CONVERGE,
            "LB CIDR at ext2 from h1", f.diag)
        assert f"BGP.as_path: {local_as}" in ext2, ext2
        # The same filter lets everything else through to the ToR.
        assert tor_next_hops(f, CLUSTER_CIDR) >= {h.ip for h in f.hosts}
        assert all(h.ip in tor_next_hops(f, b) for h in f.hosts for b in f.blocks_of(h)
                   if _in(b.split("/")[0], bu.POOL_CIDR))
    finally:
        tor_peer = f.ds.get("BGPPeer", "tor")
        tor_peer["spec"].pop("filters", None)
        f.ds.replace(tor_peer)
        f.delete("BGPPeer", "ext2")
        f.delete("BGPFilter", "no-lb")
        _set_default_spec(f, serviceClusterIPs=None, serviceLoadBalancerIPs=None)
        bu.stop_process(f.ext2)


def _path_next_hop(f: bu.Fabric, prefix: str, proto: str) -> str | None:
    """BGP.next_hop of the ToR's path for ``prefix`` learned through ``proto``."""
    out = birdc(f.tor_sock, "show", "route", "for", prefix, "protocol", proto, "all")
    m = re.search(r"BGP\.next_hop:\s+(\S+)", out)
    return m.group(1) if m else None


def test_next_hop_keep_through_a_reflector(fabric: bu.Fabric) -> None:
    """Mesh off, h1 a route reflector: h2's block reaches the ToR through h1 with
    next hop h1 under nextHopMode Auto (eBGP sets itself), with next hop h2 under Keep."""
    f = fabric
    h1, h2, _ = f.hosts
    (block,) = sorted(b for b in f.blocks_of(h2) if _in(b.split("/")[0], bu.POOL_CIDR))[:1]
    node_peer = {"apiVersion": "projectcalico.org/v3", "kind": "BGPPeer",
                 "metadata": {"name": "tor-h1"},
                 "spec": {"node": h1.name, "peerIP": bu.TOR_IP, "asNumber": bu.TOR_AS,
                          "nextHopMode": "Auto"}}
    try:
        _set_default_spec(f, nodeToNodeMeshEnabled=False)
        f.update_node(h1, lambda d: d["spec"]["bgp"].update(routeReflectorClusterID="198.18.255.1"))
        f.apply(node_peer)
        rr = "RRClient_" + h2.ip.replace(".", "_")
        bu.wait_for(lambda: rr in h1.established(), CONVERGE, "h1 reflects for h2", f.diag)
        bu.wait_for(lambda: _path_next_hop(f, block, "host_h1") == h1.ip, CONVERGE,
                    f"{block} from h1 with next hop h1 (Auto)", f.diag)
        node_peer["spec"]["nextHopMode"] = "Keep"
        f.apply(node_peer)
        bu.wait_for(lambda: _path_next_hop(f, block, "host_h1") == h2.ip, CONVERGE,
                    f"{block} from h1 with next hop h2 (Keep)", f.diag)
        assert "next hop keep;" in h1.bird_cfg.read_text()
    finally:
        f.delete("BGPPeer", "tor-h1")
        f.update_node(h1, lambda d: d["spec"]["bgp"].pop("routeReflectorClusterID", None))
        _set_default_spec(f, nodeToNodeMeshEnabled=True)
    bu.wait_for(lambda: all(_tor_established(f, h) for h in f.hosts), CONVERGE,
                "ToR sessions back", f.diag)
