"""Tunnel addresses (calico_net.agent.encap.addrs) against the session's real etcd:
which pools give a node an IP-in-IP or VXLAN address, the IPAM handle and attributes
it is held with, the Node fields it lands in, release when the pools change, the
compare-and-swap retry, idempotence, and `ipam check`'s view of tunnel addresses.

Addresses: pools in 198.19.96.0/21 (nodes at 198.19.103.x), IPv6 in fd00:198:19:a0::/64.
"""
from __future__ import annotations

import ipaddress
import time

import pytest

from calico_net.agent.encap import addrs
from calico_net.agent.encap.addrs import TunnelAddrAllocator, TunnelAddrError, reconcile
from calico_net.ipam import IPAM
from calico_net.ipam.check import check
from tests.integration.test_calicoctl import ctl  # noqa: F401 - fixture

net = ipaddress.ip_network
ip = ipaddress.ip_address


def pool(name, cidr, **spec):
    return {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": name},
            "spec": {"cidr": cidr, "blockSize": 26 if ":" not in cidr else 122, **spec}}


def node(name, addr="198.19.103.1/24", labels=None):
    return {"apiVersion": "projectcalico.org/v3", "kind": "Node",
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {"bgp": {"ipv4Address": addr}}}


@pytest.fixture
def ipam(etcd_client, datastore):
    return IPAM(etcd_client, datastore)


def spec_of(datastore, name="n1"):
    return datastore.get("Node", name)["spec"]


def revision(etcd_client) -> int:
    _, rev = etcd_client.get_prefix("/calico/resources/v3/projectcalico.org/nodes/")
    return rev


def mac_is_local_unicast(mac: str) -> bool:
    first = int(mac.split(":")[0], 16)
    return first & 0x02 == 0x02 and first & 0x01 == 0


def test_ipip_pool_gives_an_address_held_by_calicos_handle(datastore, ipam):
    datastore.create(node("n1"))
    datastore.create(pool("ipip", "198.19.96.0/22", ipipMode="Always"))
    out = reconcile(datastore, ipam, "n1")
    addr = out["ipv4IPIPTunnelAddr"]
    assert addr is not None and ip(addr) in net("198.19.96.0/22")
    assert out["ipv4VXLANTunnelAddr"] is None and out["vxlanTunnelMACAddr"] is None
    spec = spec_of(datastore)
    assert spec["bgp"] == {"ipv4Address": "198.19.103.1/24", "ipv4IPIPTunnelAddr": addr}
    a = ipam.get_assignment(addr)
    assert a.handle_id == "ipip-tunnel-addr-n1"
    assert a.attributes == {"node": "n1", "type": "ipipTunnelAddress"}
    assert a.block_affinity == "n1"  # from the node's own affine block, as Calico


def test_vxlan_pools_give_addresses_and_local_unicast_macs(datastore, ipam):
    datastore.create(node("n1"))
    datastore.create(pool("vx", "198.19.100.0/23", vxlanMode="CrossSubnet"))
    datastore.create(pool("vx6", "fd00:198:19:a0::/116", vxlanMode="Always"))
    out = reconcile(datastore, ipam, "n1")
    assert ip(out["ipv4VXLANTunnelAddr"]) in net("198.19.100.0/23")
    assert ip(out["ipv6VXLANTunnelAddr"]) in net("fd00:198:19:a0::/116")
    assert out["ipv4IPIPTunnelAddr"] is None
    assert mac_is_local_unicast(out["vxlanTunnelMACAddr"])
    assert mac_is_local_unicast(out["vxlanTunnelMACAddrV6"])
    assert out["vxlanTunnelMACAddr"] != out["vxlanTunnelMACAddrV6"]
    spec = spec_of(datastore)
    for f in addrs.RESULT_FIELDS[1:]:
        assert spec[f] == out[f]
    assert ipam.get_assignment(out["ipv4VXLANTunnelAddr"]).attributes["type"] == "vxlanTunnelAddress"
    assert ipam.get_assignment(out["ipv6VXLANTunnelAddr"]).handle_id == "vxlan-v6-tunnel-addr-n1"
    # a MAC the Node already has is kept
    again = reconcile(datastore, ipam, "n1")
    assert again == out


def test_random_mac_bits():
    for _ in range(200):
        assert mac_is_local_unicast(addrs.random_mac())


def test_node_selector_decides(datastore, ipam):
    datastore.create(node("n1", labels={"rack": "a"}))
    datastore.create(pool("ipip", "198.19.96.0/22", ipipMode="Always", nodeSelector="rack == 'b'"))
    out = reconcile(datastore, ipam, "n1")
    assert out["ipv4IPIPTunnelAddr"] is None
    assert ipam.get_handle("ipip-tunnel-addr-n1") is None
    doc = datastore.get("Node", "n1")
    doc["metadata"]["labels"] = {"rack": "b"}
    datastore.replace(doc)
    assert ip(reconcile(datastore, ipam, "n1")["ipv4IPIPTunnelAddr"]) in net("198.19.96.0/22")


def test_disabled_and_never_pools_give_nothing(datastore, ipam):
    datastore.create(node("n1"))
    datastore.create(pool("off", "198.19.96.0/22", ipipMode="Always", disabled=True))
    datastore.create(pool("plain", "198.19.100.0/23", vxlanMode="Never"))
    assert reconcile(datastore, ipam, "n1") == dict.fromkeys(addrs.RESULT_FIELDS)
    assert ipam.handles() == {}


def test_switch_from_ipip_to_vxlan_releases_and_reassigns(datastore, ipam, etcd_client):
    datastore.create(node("n1"))
    datastore.create(pool("p", "198.19.96.0/22", ipipMode="Always"))
    old = reconcile(datastore, ipam, "n1")["ipv4IPIPTunnelAddr"]
    doc = datastore.get("IPPool", "p")
    doc["spec"]["ipipMode"], doc["spec"]["vxlanMode"] = "Never", "Always"
    datastore.replace(doc)
    out = reconcile(datastore, ipam, "n1")
    assert out["ipv4IPIPTunnelAddr"] is None
    assert ip(out["ipv4VXLANTunnelAddr"]) in net("198.19.96.0/22")
    assert "ipv4IPIPTunnelAddr" not in spec_of(datastore)["bgp"]
    assert ipam.get_handle("ipip-tunnel-addr-n1") is None
    a = ipam.get_assignment(old)
    assert a is None or a.handle_id == "vxlan-tunnel-addr-n1"  # freed (and maybe reused)
    assert set(ipam.handles()) == {"vxlan-tunnel-addr-n1"}


def test_pool_deleted_releases_and_clears_the_fields(datastore, ipam):
    datastore.create(node("n1"))
    datastore.create(pool("vx", "198.19.100.0/23", vxlanMode="Always"))
    out = reconcile(datastore, ipam, "n1")
    assert out["ipv4VXLANTunnelAddr"] and out["vxlanTunnelMACAddr"]
    datastore.delete("IPPool", "vx")
    assert reconcile(datastore, ipam, "n1") == dict.fromkeys(addrs.RESULT_FIELDS)
    spec = spec_of(datastore)
    assert "ipv4VXLANTunnelAddr" not in spec and "vxlanTunnelMACAddr" not in spec
    assert spec["bgp"] == {"ipv4Address": "198.19.103.1/24"}  # the rest is kept
    assert ipam.get_assignment(out["ipv4VXLANTunnelAddr"]) is None
    assert ipam.handles() == {}


def test_second_run_writes_nothing(datastore, ipam, etcd_client):
    datastore.create(node("n1"))
    datastore.create(pool("ipip", "198.19.96.0/22", ipipMode="Always"))
    datastore.create(pool("vx6", "fd00:198:19:a0::/116", vxlanMode="Always"))
    first = reconcile(datastore, ipam, "n1")
    rev = revision(etcd_client)
    assert reconcile(datastore, ipam, "n1") == first
    assert reconcile(datastore, ipam, "n1") == first
    assert revision(etcd_client) == rev  # not a single etcd write


def test_nothing_needed_writes_nothing(datastore, ipam, etcd_client):
    datastore.create(node("n1"))
    rev = revision(etcd_client)
    assert reconcile(datastore, ipam, "n1") == dict.fromkeys(addrs.RESULT_FIELDS)
    assert revision(etcd_client) == rev


def test_allowed_uses_without_tunnel_is_not_used(datastore, ipam):
    datastore.create(node("n1"))
    datastore.create(pool("wl", "198.19.96.0/22", ipipMode="Always", allowedUses=["Workload"]))
    assert reconcile(datastore, ipam, "n1")["ipv4IPIPTunnelAddr"] is None
    datastore.create(pool("both", "198.19.100.0/23", ipipMode="Always", allowedUses=["Workload", "Tunnel"]))
    assert ip(reconcile(datastore, ipam, "n1")["ipv4IPIPTunnelAddr"]) in net("198.19.100.0/23")


def test_an_address_ipam_does_not_hold_is_replaced(datastore, ipam):
    datastore.create(pool("ipip", "198.19.96.0/22", ipipMode="Always"))
    doc = node("n1")
    doc["spec"]["bgp"]["ipv4IPIPTunnelAddr"] = "198.19.96.77"  # set by hand, never assigned
    datastore.create(doc)
    out = reconcile(datastore, ipam, "n1")["ipv4IPIPTunnelAddr"]
    assert out != "198.19.96.77"
    assert ipam.get_assignment(out).handle_id == "ipip-tunnel-addr-n1"
    # a workload's address written into the field is not taken over (nor freed)
    wl, _ = ipam.auto_assign("wl-1", "n1", attrs={"pod": "p"})
    doc = datastore.get("Node", "n1")
    doc["spec"]["bgp"]["ipv4IPIPTunnelAddr"] = str(wl[0])
    datastore.replace(doc)
    out2 = reconcile(datastore, ipam, "n1")["ipv4IPIPTunnelAddr"]
    assert out2 != str(wl[0]) and ipam.get_assignment(wl[0]).handle_id == "wl-1"
    assert ipam.ips_by_handle("ipip-tunnel-addr-n1") == [ip(out2)]


def test_ipam_check_knows_tunnel_addresses(datastore, ipam):
    datastore.create(node("n1"))
    datastore.create(pool("ipip", "198.19.96.0/22", ipipMode="Always"))
    addr = reconcile(datastore, ipam, "n1")["ipv4IPIPTunnelAddr"]
    report = check(ipam)
    assert report.clean, report.to_json()
    assert report.allocations == 1
    # the Node loses its reference: the address is leaked, reported with its handle
    doc = datastore.get("Node", "n1")
    del doc["spec"]["bgp"]["ipv4IPIPTunnelAddr"]
    datastore.replace(doc)
    report = check(ipam)
    assert [(x.ip, x.handle_id, x.node) for x in report.allocations_without_endpoints] == [
        (addr, "ipip-tunnel-addr-n1", "n1")]
    # the Node holding another address than the allocation is a leak as well
    doc = datastore.get("Node", "n1")
    doc["spec"]["bgp"]["ipv4IPIPTunnelAddr"] = "198.19.96.200"
    datastore.replace(doc)
    assert [x.ip for x in check(ipam).allocations_without_endpoints] == [addr]
    # reconcile puts it right, and the check is clean again
    reconcile(datastore, ipam, "n1")
    assert check(ipam).clean
    # the node gone: leaked too
    datastore.delete("Node", "n1")
    assert [x.handle_id for x in check(ipam).allocations_without_endpoints] == ["ipip-tunnel-addr-n1"]


def test_ipam_check_vxlan_fields(datastore, ipam):
    datastore.create(node("n1"))
    datastore.create(pool("vx", "198.19.100.0/23", vxlanMode="Always"))
    datastore.create(pool("vx6", "fd00:198:19:a0::/116", vxlanMode="Always"))
    out = reconcile(datastore, ipam, "n1")
    assert check(ipam).clean
    doc = datastore.get("Node", "n1")
    del doc["spec"]["ipv6VXLANTunnelAddr"]
    datastore.replace(doc)
    assert [x.ip for x in check(ipam).allocations_without_endpoints] == [out["ipv6VXLANTunnelAddr"]]


class ConflictOnce:
    """The real Datastore, except that just before the first Node write someone else
    changes the Node (a label): the write's compare-and-swap must fail and be redone."""

    def __init__(self, ds):
        self.ds = ds
        self.conflicts = 0

    def get(self, *a, **kw):
        return self.ds.get(*a, **kw)

    def list(self, *a, **kw):
        return self.ds.list(*a, **kw)

    def replace(self, doc):
        if self.conflicts == 0:
            self.conflicts += 1
            other = self.ds.get("Node", doc["metadata"]["name"])
            other["metadata"]["labels"] = {"touched": "yes"}
            self.ds.replace(other)
        return self.ds.replace(doc)


def test_a_concurrent_node_update_is_retried_and_kept(datastore, ipam):
    datastore.create(node("n1"))
    datastore.create(pool("ipip", "198.19.96.0/22", ipipMode="Always"))
    racer = ConflictOnce(datastore)
    out = reconcile(racer, ipam, "n1")
    assert racer.conflicts == 1
    doc = datastore.get("Node", "n1")
    assert doc["metadata"]["labels"] == {"touched": "yes"}
    assert doc["spec"]["bgp"]["ipv4IPIPTunnelAddr"] == out["ipv4IPIPTunnelAddr"]
    # the retry kept the address it had assigned: one address on the handle
    assert ipam.ips_by_handle("ipip-tunnel-addr-n1") == [ip(out["ipv4IPIPTunnelAddr"])]


def test_bad_pool_is_skipped_and_the_rest_still_works(datastore, ipam, etcd_client):
    import json

    datastore.create(node("n1"))
    datastore.create(pool("good", "198.19.100.0/23", vxlanMode="Always"))
    bad = pool("bad", "198.19.96.0/22", ipipMode="Always", nodeSelector="rack ==")
    etcd_client.put("/calico/resources/v3/projectcalico.org/ippools/bad", json.dumps(bad))
    out = reconcile(datastore, ipam, "n1")
    assert out["ipv4IPIPTunnelAddr"] is None
    assert ip(out["ipv4VXLANTunnelAddr"]) in net("198.19.100.0/23")


def test_missing_node_is_an_error_and_assigns_nothing(datastore, ipam):
    datastore.create(pool("ipip", "198.19.96.0/22", ipipMode="Always"))
    with pytest.raises(TunnelAddrError, match="does not exist"):
        reconcile(datastore, ipam, "n1")
    assert ipam.handles() == {}


def test_a_failed_write_releases_what_the_pass_assigned(datastore, ipam):
    class RefuseWrites:
        def __init__(self, ds):
            self.ds = ds

        def get(self, *a, **kw):
            return self.ds.get(*a, **kw)

        def list(self, *a, **kw):
            return self.ds.list(*a, **kw)

        def replace(self, doc):
            from calico_net.datastore.errors import DatastoreError

            raise DatastoreError("refused")

    datastore.create(node("n1"))
    datastore.create(pool("ipip", "198.19.96.0/22", ipipMode="Always"))
    with pytest.raises(Exception, match="refused"):
        reconcile(RefuseWrites(datastore), ipam, "n1")
    assert ipam.handles() == {}
    assert ip(reconcile(datastore, ipam, "n1")["ipv4IPIPTunnelAddr"]) in net("198.19.96.0/22")


def wait_for(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_allocator_thread_follows_pokes_and_retries(datastore, etcd_client):
    alloc = TunnelAddrAllocator(etcd_client, "n1")
    alloc.BACKOFF_MIN = 0.1
    try:
        alloc.start()
        # no Node yet: the pass fails, is logged and retried without a poke
        wait_for(lambda: alloc.failures >= 1)
        datastore.create(node("n1"))
        wait_for(lambda: alloc.runs >= 1)
        assert alloc.last == dict.fromkeys(addrs.RESULT_FIELDS)
        datastore.create(pool("vx", "198.19.100.0/23", vxlanMode="Always"))
        runs = alloc.runs
        alloc.poke()
        got = wait_for(lambda: spec_of(datastore).get("ipv4VXLANTunnelAddr"))
        assert ip(got) in net("198.19.100.0/23")
        # the pass that wrote the address counts itself after the write
        wait_for(lambda: alloc.runs > runs)
        # a burst of pokes is one pass
        runs = alloc.runs
        for _ in range(20):
            alloc.poke()
        wait_for(lambda: alloc.runs > runs)
        time.sleep(alloc.DEBOUNCE * 2)
        assert alloc.runs == runs + 1
    finally:
        alloc.stop()
    assert alloc._thread is not None and not alloc._thread.is_alive()


def test_removal_frees_an_address_whose_handle_record_is_gone(datastore, ipam, etcd_client):
    from calico_net.ipam import keys

    datastore.create(node("n1"))
    datastore.create(pool("vx", "198.19.100.0/23", vxlanMode="Always"))
    addr = reconcile(datastore, ipam, "n1")["ipv4VXLANTunnelAddr"]
    etcd_client.delete(keys.handle_key("vxlan-tunnel-addr-n1"))  # lost by hand
    datastore.delete("IPPool", "vx")
    reconcile(datastore, ipam, "n1")
    assert ipam.get_assignment(addr) is None
    assert "ipv4VXLANTunnelAddr" not in spec_of(datastore)


def test_release_from_report_frees_a_tunnel_address_its_node_dropped(ctl, datastore, ipam, tmp_path):
    import json

    datastore.create(node("n1"))
    datastore.create(node("n2", addr="198.19.103.2/24"))
    datastore.create(pool("ipip", "198.19.96.0/22", ipipMode="Always"))
    kept = reconcile(datastore, ipam, "n2")["ipv4IPIPTunnelAddr"]
    dropped = reconcile(datastore, ipam, "n1")["ipv4IPIPTunnelAddr"]
    doc = datastore.get("Node", "n1")
    del doc["spec"]["bgp"]["ipv4IPIPTunnelAddr"]
    datastore.replace(doc)
    report = tmp_path / "report.json"
    ctl("ipam", "check", "-o", str(report), ok=False)
    allocs = json.loads(report.read_text())["allocations"]
    assert allocs[dropped][0]["inUse"] is False and allocs[dropped][0]["handle"] == "ipip-tunnel-addr-n1"
    assert allocs[kept][0]["inUse"] is True
    assert "Released 1 IPs successfully" in ctl("ipam", "release", "--from-report", str(report)).stdout
    assert ipam.get_assignment(dropped) is None
    assert ipam.get_assignment(kept).handle_id == "ipip-tunnel-addr-n2"
    assert ctl("ipam", "check").returncode == 0


def test_pools_with_a_spec_of_the_wrong_shape_are_skipped(datastore, ipam, etcd_client):
    import json

    datastore.create(node("n1"))
    datastore.create(pool("good", "198.19.100.0/23", vxlanMode="Always"))
    bad = pool("bad-uses", "198.19.96.0/22", ipipMode="Always", allowedUses="Tunnel")
    etcd_client.put("/calico/resources/v3/projectcalico.org/ippools/bad-uses", json.dumps(bad))
    out = reconcile(datastore, ipam, "n1")
    assert out["ipv4IPIPTunnelAddr"] is None
    assert ip(out["ipv4VXLANTunnelAddr"]) in net("198.19.100.0/23")


def test_tunnel_pools_skips_documents_of_the_wrong_shape():
    # (pure: documents Datastore.list never returns, e.g. metadata that is not an object)
    docs = [{"kind": "IPPool", "metadata": {"name": "s"}, "spec": "x"},
            {"kind": "IPPool", "metadata": [], "spec": {"cidr": "198.19.98.0/24", "vxlanMode": "Always"}},
            {"kind": "IPPool", "metadata": {"name": "c"}, "spec": {"vxlanMode": "Always"}},
            pool("ok", "198.19.100.0/23", vxlanMode="Always")]
    assert [p.name for p in addrs.tunnel_pools(docs, {}, addrs.VXLAN)] == ["ok"]
    assert addrs.tunnel_pools(docs, {}, addrs.IPIP) == []
