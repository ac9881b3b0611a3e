"""RouteManager against an in-memory kernel (calico_net.agent.felix.routes)."""
from __future__ import annotations

import socket

from calico_net.agent.felix.routes import RouteManager, endpoint_routes
from calico_net.agent.felix.rtnetlink import Link
from fakes import FakeKernel

V4 = socket.AF_INET
V6 = socket.AF_INET6


def mk(links=(Link(1, "lo", True), Link(7, "cali1", True), Link(8, "cali2", True)), table=None):
    k = FakeKernel(list(links), dict(table or {}))
    rm = RouteManager(k)
    rm.set_links(k.links())
    return k, rm


def test_endpoint_routes_v4_v6():
    assert endpoint_routes(["198.19.0.1/32", "fd00::1/128", "junk"]) == [(V4, "198.19.0.1", 32), (V6, "fd00::1", 128)]


def test_add_remove_and_only_diffs():
    k, rm = mk()
    rm.set_endpoint("a", "cali1", ["198.19.0.1/32", "fd00::1/128"])
    rm.set_endpoint("b", "cali2", ["198.19.0.2/32"])
    st = rm.apply()
    assert (st.added, st.removed) == (3, 0)
    assert k.table == {(V4, "198.19.0.1", 32): 7, (V6, "fd00::1", 128): 7, (V4, "198.19.0.2", 32): 8}
    k.writes.clear()
    rm.set_endpoint("b", "cali2", ["198.19.0.2/32"])  # unchanged
    assert not rm.apply() and k.writes == []
    rm.remove_endpoint("a")
    st = rm.apply()
    assert (st.added, st.removed) == (0, 2)
    assert k.table == {(V4, "198.19.0.2", 32): 8}


def test_start_with_routes_already_right_writes_nothing_and_removes_stale():
    right = {(V4, "198.19.0.1", 32): 7}
    k, rm = mk(table={**right, (V4, "198.19.9.9", 32): 8})
    rm.set_endpoint("a", "cali1", ["198.19.0.1/32"])
    st = rm.apply()
    assert [op.op for op in k.writes] == ["delete"]
    assert k.table == right and st.removed == 1 and st.added == 0


def test_interface_appearing_later_and_going_down():
    k, rm = mk(links=[Link(1, "lo", True)])
    rm.set_endpoint("a", "cali9", ["198.19.0.9/32"])
    assert not rm.apply()
    assert rm.interfaces_to_configure() == []
    link = Link(12, "cali9", True)
    k.link_list.append(link)
    rm.link_update(link, False)
    assert rm.interfaces_to_configure() == [(Link(12, "cali9", True), False)]
    rm.mark_configured("cali9")
    assert rm.apply().added == 1 and k.table == {(V4, "198.19.0.9", 32): 12}
    # Deleted and re-created with a new index: routes follow, sysctls rewritten.
    rm.link_update(link, True)
    k.table.clear()
    new = Link(13, "cali9", True)
    k.link_list[-1] = new
    rm.link_update(new, False)
    assert rm.interfaces_to_configure() == [(Link(13, "cali9", True), False)]
    assert rm.apply().added == 1 and k.table == {(V4, "198.19.0.9", 32): 13}


def test_resync_repairs_drift_and_ignores_foreign():
    k, rm = mk()
    rm.set_endpoint("a", "cali1", ["198.19.0.1/32"])
    rm.set_endpoint("b", "cali2", ["198.19.0.2/32"])
    rm.apply()
    del k.table[(V4, "198.19.0.1", 32)]          # someone deleted ours
    k.table[(V4, "198.19.0.2", 32)] = 7          # someone pointed ours elsewhere
    st = rm.resync()
    assert st.added == 2 and k.table == {(V4, "198.19.0.1", 32): 7, (V4, "198.19.0.2", 32): 8}
    assert not rm.resync()


def test_duplicate_address_first_key_wins():
    k, rm = mk()
    rm.set_endpoint("b", "cali2", ["198.19.0.5/32"])
    rm.set_endpoint("a", "cali1", ["198.19.0.5/32"])
    rm.apply()
    assert k.table == {(V4, "198.19.0.5", 32): 7}
    rm.remove_endpoint("a")
    rm.apply()
    assert k.table == {(V4, "198.19.0.5", 32): 8}


def test_endpoint_moves_interface():
    k, rm = mk()
    rm.set_endpoint("a", "cali1", ["198.19.0.1/32"])
    rm.apply()
    rm.set_endpoint("a", "cali2", ["198.19.0.1/32"])
    rm.apply()
    assert k.table == {(V4, "198.19.0.1", 32): 8}
    assert rm.local_interfaces() == {"cali2"}


def test_ipv4_replace_message_is_the_generic_encoding():
    # The one-pack fast path for IPv4 replaces must produce exactly what the
    # attribute-by-attribute encoding does (the IPv6 and delete paths use it).
    import struct as _struct

    from calico_net.agent.felix import netlink as n
    from calico_net.agent.felix import rtnetlink as r
    for dst, ln, oif, table in (("198.19.0.1", 32, 7, 254), ("198.18.4.0", 30, 1 << 20, 1000)):
        op = r.RouteOp("replace", (socket.AF_INET, dst, ln), oif)
        got = r.route_message(op, 80, table)
        rtm_table = table if table < 256 else 252
        body = r._RTMSG.pack(socket.AF_INET, ln, 0, 0, rtm_table, 80, r.RT_SCOPE_LINK, r.RTN_UNICAST, 0)
        body += n.attr(r.RTA_DST, socket.inet_pton(socket.AF_INET, dst))
        body += n.attr(r.RTA_OIF, _struct.pack("=i", oif))
        body += n.attr(r.RTA_TABLE, _struct.pack("=I", table))
        assert got == (r.RTM_NEWROUTE, n.NLM_F_REPLACE | n.NLM_F_CREATE, body)


# --- endpoints can never take over host interfaces or routes ------------------------

def test_host_routes_only_host_addresses():
    from calico_net.agent.felix.routes import host_routes
    assert host_routes(["198.19.0.1/32", "198.19.0.2", "fd00::1/128"]) == (
        [(V4, "198.19.0.1", 32), (V4, "198.19.0.2", 32), (V6, "fd00::1", 128)], None)
    for wide in ("0.0.0.0/0", "::/0", "198.19.0.0/24", "198.19.0.0/31", "fd00::/127"):
        routes, problem = host_routes(["198.19.0.1/32", wide])
        assert routes == [(V4, "198.19.0.1", 32)] and wide in problem and "wider than a host" in problem
    for junk in ("198.19.0.1/32\n", "198.19.0.1 /32", "x/32", 5):
        routes, problem = host_routes([junk])
        assert routes == [] and problem


def test_interface_problem():
    from calico_net.agent.felix.routes import interface_problem
    assert interface_problem("cali1", ("cali",)) is None
    assert interface_problem("tap1", ("cali", "tap")) is None
    for bad in ("eth0", "lo", "cal", "", None, 3):
        assert "interface prefix" in interface_problem(bad, ("cali", "tap"))


def test_endpoint_on_a_host_interface_or_wider_than_a_host_is_refused():
    k, rm = mk(links=(Link(1, "lo", True), Link(2, "eth0", True), Link(7, "cali1", True)))
    assert rm.set_endpoint("a", "cali1", ["198.19.0.1/32"]) is None
    assert "eth0" in rm.set_endpoint("b", "eth0", ["198.19.0.2/32"])
    assert "0.0.0.0/0" in rm.set_endpoint("c", "cali1", ["0.0.0.0/0"])
    assert "::/0" in rm.set_endpoint("d", "cali1", ["198.19.0.4/32", "::/0"])
    rm.apply()
    assert k.table == {(V4, "198.19.0.1", 32): 7}
    assert set(rm.endpoints) == {"a"} and rm.local_interfaces() == {"cali1"}
    assert [link.name for link, _ in rm.interfaces_to_configure()] == ["cali1"]
    # a good endpoint turning bad is forgotten: its route goes
    assert rm.set_endpoint("a", "eth0", ["198.19.0.1/32"])
    rm.apply()
    assert k.table == {} and rm.local_interfaces() == set()
    # other prefixes
    k, rm = mk(links=(Link(2, "eth0", True), Link(9, "tap9", True)))
    rm.iface_prefixes = ("cali", "tap")
    assert rm.set_endpoint("t", "tap9", ["198.19.0.9/32"]) is None
    rm.apply()
    assert k.table == {(V4, "198.19.0.9", 32): 9}


def test_never_writes_anything_but_a_host_route_and_removes_wide_ones_found():
    # a wide protocol-80 route (an older agent installed it) is removed, never re-added
    k, rm = mk(links=(Link(2, "eth0", True), Link(7, "cali1", True)), table={(V4, "0.0.0.0", 0): 2})
    rm.claims[(V4, "0.0.0.0", 0)] = {"x": "cali1"}     # even if the bookkeeping wanted it
    rm.apply()
    assert (V4, "0.0.0.0", 0) not in k.table
    assert not [op for op in k.writes if op.op == "replace"]


def test_forget_marks_only_our_routes_for_rewriting():
    k, rm = mk()
    rm.set_endpoint("a", "cali1", ["198.19.0.1/32", "fd00::1/128"])
    rm.apply()
    del k.table[(V4, "198.19.0.1", 32)]          # another process deleted it
    # the route through another interface, or one we never had, is not ours
    assert rm.forget({(V4, "198.19.0.1", 32): 8, (V4, "198.19.0.7", 32): 7}) == 0
    assert not rm.apply()
    assert rm.forget({(V4, "198.19.0.1", 32): 7}) == 1
    k.writes.clear()
    st = rm.apply()
    assert (st.added, st.removed) == (1, 0) and len(k.writes) == 1
    assert k.table == {(V4, "198.19.0.1", 32): 7, (V6, "fd00::1", 128): 7}
