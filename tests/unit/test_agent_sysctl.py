"""Interface and host sysctls (calico_net.agent.felix.sysctl) on a fake /proc/sys."""
from __future__ import annotations

from calico_net.agent.felix.routes import Link
from calico_net.agent.felix.sysctl import Sysctls


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
