"""Interface and host sysctls (calico_net.agent.felix.sysctl) on a fake /proc/sys."""
from __future__ import annotations

import errno
import logging
import socket
import subprocess
import sys

import pytest

from calico_net.agent.felix.rtnetlink import Link
from calico_net.agent.felix.sysctl import PendingByName, PendingConfigure, Sysctls
from fakes import sys_class_net


def fake_proc(tmp_path, ifaces, ipv6=True):
    dirs = ["net/ipv4"] + [f"net/ipv4/conf/{i}" for i in ifaces] + [f"net/ipv4/neigh/{i}" for i in ifaces]
    if ipv6:
        dirs += ["net/ipv6/conf/all"] + [f"net/ipv6/conf/{i}" for i in ifaces]
    for d in dirs:
        (tmp_path / d).mkdir(parents=True, exist_ok=True)
    for i in ifaces:
        for f in ("rp_filter", "route_localnet", "proxy_arp", "forwarding"):
            (tmp_path / f"net/ipv4/conf/{i}/{f}").write_text("0\n")
        (tmp_path / f"net/ipv4/neigh/{i}/proxy_delay").write_text("80\n")
        if ipv6:
            for f in ("proxy_ndp", "forwarding", "accept_ra"):
                (tmp_path / f"net/ipv6/conf/{i}/{f}").write_text("0\n")
    (tmp_path / "net/ipv4/ip_forward").write_text("0\n")
    if ipv6:
        (tmp_path / "net/ipv6/conf/all/forwarding").write_text("0\n")
    return tmp_path


def read(root, rel):
    return (root / rel).read_text().strip()


def conf(**values):
    ids = {"forwarding": 1, "proxy_arp": 3, "route_localnet": 26}
    out = [0] * 33
    for k, v in values.items():
        out[ids[k] - 1] = v
    return tuple(out)


def test_proc_writes_and_host(tmp_path):
    root = fake_proc(tmp_path, ["cali1", "cali2"])
    s = Sysctls(str(root))
    assert s.configure_host() == 2 and s.configure_host() == 0
    assert read(root, "net/ipv4/ip_forward") == "1"
    failed = s.configure_interfaces([(Link(5, "cali1", True), True), (Link(6, "cali2", True), False),
                                     (Link(7, "gone", True), False)])
    assert failed == ["gone"]
    for f in ("route_localnet", "proxy_arp", "forwarding"):
        assert read(root, f"net/ipv4/conf/cali1/{f}") == "1"
    assert read(root, "net/ipv4/conf/cali1/rp_filter") == "0"   # nft does the RPF check
    assert read(root, "net/ipv4/neigh/cali1/proxy_delay") == "0"
    assert read(root, "net/ipv6/conf/cali1/proxy_ndp") == "1"
    assert read(root, "net/ipv6/conf/cali1/accept_ra") == "0"
    assert read(root, "net/ipv6/conf/cali2/proxy_ndp") == "0"   # no IPv6 address: left alone


def test_values_already_right_are_not_written(tmp_path):
    root = fake_proc(tmp_path, ["cali1"], ipv6=False)
    s = Sysctls(str(root))
    s.configure_interfaces([(Link(5, "cali1", True, conf(proxy_arp=1, forwarding=1, route_localnet=0)), False)])
    assert read(root, "net/ipv4/conf/cali1/route_localnet") == "1"
    assert read(root, "net/ipv4/conf/cali1/proxy_arp") == "0"   # reported right: untouched


def test_interface_configured_before_is_left_alone(tmp_path):
    root = fake_proc(tmp_path, ["cali1"], ipv6=False)
    s = Sysctls(str(root))
    s.configure_interfaces([(Link(5, "cali1", True, conf(proxy_arp=1, forwarding=1, route_localnet=1)), False)])
    assert read(root, "net/ipv4/conf/cali1/proxy_arp") == "0"        # reported right: untouched
    assert read(root, "net/ipv4/neigh/cali1/proxy_delay") == "80"


def test_many_interfaces_go_through_the_helper_process(tmp_path, monkeypatch):
    names = [f"cali{i}" for i in range(6)]
    root = fake_proc(tmp_path, names)
    s = Sysctls(str(root))
    monkeypatch.setattr(Sysctls, "HELPER_MIN", 3)
    items = [(Link(10 + i, n, True), i == 0) for i, n in enumerate(names)]
    items.append((Link(50, "gone", True), False))                      # no such directory
    items.append((Link(51, "ok", True, conf(proxy_arp=1, forwarding=1, route_localnet=1)), False))
    items.append((Link(52, "a/b", True), False))                       # refused by name
    pending = s.start_configure(items)
    assert pending._proc is not None                                    # really a process
    assert sorted(pending.wait()) == ["a/b", "gone"]
    for n in names:
        for f in ("route_localnet", "proxy_arp", "forwarding"):
            assert read(root, f"net/ipv4/conf/{n}/{f}") == "1"
        assert read(root, f"net/ipv4/neigh/{n}/proxy_delay") == "0"
    assert read(root, "net/ipv6/conf/cali0/proxy_ndp") == "1"
    assert read(root, "net/ipv6/conf/cali1/proxy_ndp") == "0"


def test_few_interfaces_are_written_inline(tmp_path):
    root = fake_proc(tmp_path, ["cali1"], ipv6=False)
    pending = Sysctls(str(root)).start_configure([(Link(5, "cali1", True), False)])
    assert pending._proc is None and pending.wait() == []
    assert read(root, "net/ipv4/conf/cali1/proxy_arp") == "1"


def _tree(root):
    return {str(p.relative_to(root)): p.read_text().strip() for p in sorted(root.rglob("*")) if p.is_file()}


def test_by_name_helper_writes_what_the_listing_path_writes(tmp_path, monkeypatch):
    # Interfaces in every starting state: fresh, partly ours, all ours (restart), all
    # ours but with IPv6, forwarding off. Both paths must leave identical trees.
    states = {"cali0": {}, "cali1": {"proxy_arp": 1}, "cali2": {"proxy_arp": 1, "route_localnet": 1, "forwarding": 1},
              "cali3": {"proxy_arp": 1, "route_localnet": 1, "forwarding": 1}, "cali4": {"forwarding": 0},
              "cali5": {"route_localnet": 1, "forwarding": 1}}
    v6 = {"cali3", "cali5"}
    roots = []
    for which in ("listing", "names"):
        root = fake_proc(tmp_path / which, list(states))
        for n, values in states.items():
            for k, v in {"forwarding": 1, **values}.items():
                (root / f"net/ipv4/conf/{n}/{k}").write_text(f"{v}\n")
        roots.append(root)
    monkeypatch.setattr(Sysctls, "HELPER_MIN", 2)
    full = {n: {"proxy_arp": 0, "route_localnet": 0, "forwarding": 1, **vals} for n, vals in states.items()}
    links = [(Link(10 + i, n, True, conf(**full[n])), n in v6) for i, n in enumerate(states)]
    assert Sysctls(str(roots[0])).start_configure(links).wait() == []
    net = sys_class_net(tmp_path / "class-net", {n: 10 + i for i, n in enumerate(states)})
    s = Sysctls(str(roots[1]), sys_class_net=net)
    result = s.start_configure_names([(n, n in v6) for n in states]).wait()
    assert result == {n: (10 + i, 0, "") for i, n in enumerate(states)}
    assert _tree(roots[0]) == _tree(roots[1])
    assert read(roots[1], "net/ipv4/neigh/cali2/proxy_delay") == "80"    # all ours: untouched
    assert read(roots[1], "net/ipv4/neigh/cali3/proxy_delay") == "0"     # IPv6 to do
    assert s.finish_by_name(result, links) == ([], [])


def test_by_name_helper_missing_and_failing_interfaces(tmp_path, caplog):
    root = fake_proc(tmp_path / "proc", ["cali1", "cali2", "cali3"], ipv6=False)
    net = sys_class_net(tmp_path / "class-net", {"cali1": 5, "cali2": 6, "cali3": 7, "nodir": 8})
    (root / "net/ipv4/conf/cali3/route_localnet").unlink()
    (root / "net/ipv4/conf/cali3/route_localnet").mkdir()          # refuses the open: EISDIR
    s = Sysctls(str(root), sys_class_net=net)
    names = ["cali1", "cali2", "cali3", "nodir", "absent", "a/b", "bad\tname"]
    result = s.start_configure_names([(n, False) for n in names]).wait()
    assert set(result) == {"cali1", "cali2", "cali3", "nodir", "absent"}      # the others are never sent
    assert result["cali1"] == (5, 0, "") and result["absent"][:2] == (0, errno.ENODEV)
    assert result["nodir"][:2] == (8, errno.ENOENT) and result["cali3"][:2] == (7, errno.EISDIR)
    assert read(root, "net/ipv4/conf/cali1/proxy_arp") == "1"
    # matched with a listing: cali2 was re-created (index 16 now), "absent" appeared since,
    # "a/b" was not sent; those are left to the usual path. nodir: gone, silently.
    links = [(Link(5, "cali1", True), False), (Link(16, "cali2", True), False), (Link(7, "cali3", True), False),
             (Link(8, "nodir", True), False), (Link(9, "absent", True), False), (Link(10, "a/b", True), False)]
    with caplog.at_level(logging.WARNING):
        rest, failed = s.finish_by_name(result, links)
    assert [link.name for link, _ in rest] == ["cali2", "absent", "a/b"]
    assert failed == ["cali3", "nodir"]
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["cannot configure cali3"]
    # the helper did not run: everything is written inline
    root2 = fake_proc(tmp_path / "proc2", ["cali1"], ipv6=False)
    rest, failed = Sysctls(str(root2)).finish_by_name(None, [(Link(5, "cali1", True), False)])
    assert rest == [] and failed == [] and read(root2, "net/ipv4/conf/cali1/proxy_arp") == "1"


@pytest.mark.parametrize("links", [False, True])
def test_by_name_helper_asks_the_kernel_for_indexes(tmp_path, links):
    # The default sys_class_net: the real lookup (SIOCGIFINDEX) in this network namespace;
    # with `links`, the lookups (index and up flag) come first, before any write.
    root = fake_proc(tmp_path, ["lo"], ipv6=False)
    pending = Sysctls(str(root)).start_configure_names([("lo", False), ("calinosuchif0", False)], links=links)
    if links:
        assert pending.links() == [("lo", socket.if_nametoindex("lo"), True)]
        assert pending.links() is None                   # once
    result = pending.wait()
    assert result["lo"] == (socket.if_nametoindex("lo"), 0, "")
    assert result["calinosuchif0"][:2] == (0, errno.ENODEV)
    assert read(root, "net/ipv4/conf/lo/proxy_arp") == "1"


def test_by_name_helper_lookups_first_then_writes(tmp_path):
    # The lookups are reported before the helper writes anything, and whether or not
    # they are read, the result of the writes is the same.
    names = ["cali1", "Lcali2", "absent"]
    net = sys_class_net(tmp_path / "class-net", {"cali1": 5, "Lcali2": 6})
    results = []
    for read_links in (True, False):
        root = fake_proc(tmp_path / f"proc-{read_links}", names[:2], ipv6=False)
        pending = Sysctls(str(root), sys_class_net=net).start_configure_names(
            [(n, False) for n in names], links=True)
        if read_links:
            found = pending.links()
            assert found == [("cali1", 5, True), ("Lcali2", 6, True)]
        results.append(pending.wait())
        assert read(root, "net/ipv4/conf/Lcali2/proxy_arp") == "1"
    assert results[0] == results[1]
    assert results[0]["Lcali2"] == (6, 0, "") and results[0]["absent"][:2] == (0, errno.ENODEV)


def test_a_failed_helper_falls_back_and_says_why(caplog):
    def failing():
        return subprocess.Popen([sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    with caplog.at_level("WARNING"):
        assert PendingByName(proc=failing()).wait() is None
        assert PendingConfigure(["x"], proc=failing(), fallback=lambda: ["inline"]).wait() == ["inline"]
        assert PendingConfigure(["x"], proc=failing()).wait() == ["x"]
    assert [r.getMessage() for r in caplog.records].count("sysctl helper failed (boom); writing inline") == 3


def test_names_that_are_not_one_interface_are_never_written(tmp_path):
    # "all" and "default" are directories of /proc/sys/net/ipv4/conf that configure
    # every interface; the others are not one path component or one helper line
    from calico_net.agent.felix.sysctl import _checked, _sendable
    for bad in ("all", "default", "", ".", "..", "a/b", "a\nb", "a\tb", "a=b", "a b", "x" * 16):
        assert not _sendable(bad)
        with pytest.raises(ValueError):
            _checked(bad)
    assert _sendable("cali1") and _checked("cali1") == "cali1"
    proc = tmp_path / "proc"
    (proc / "net/ipv4/conf/all").mkdir(parents=True)
    (proc / "net/ipv4/conf/all/proxy_arp").write_text("0\n")
    s = Sysctls(str(proc))
    failed = s.configure_interfaces([(Link(3, "all", True), False)])
    assert failed == ["all"] and (proc / "net/ipv4/conf/all/proxy_arp").read_text() == "0\n"
