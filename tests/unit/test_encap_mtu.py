"""Underlay MTU autodetection and the workload MTU file (calico_net.agent.encap.mtu).

The kernel part runs in a network namespace of its own (real interfaces, real
rtnetlink); addresses 198.19.174.0/24 and fd00:198:19:174::/64.
"""
from __future__ import annotations

import json
import os
import subprocess
import uuid

import pytest

from calico_net.agent.config import DEFAULT_MTU_IFACE_PATTERN
from calico_net.agent.encap.mtu import LinkFacts, MtuFile, detect_mtu, read_links, underlay
from calico_net.agent.encap.state import Underlay
from calico_net.agent.felix.netlink import in_netns

LINKS = [
    LinkFacts("lo", 65536, True, ("127.0.0.1", "::1")),
    LinkFacts("eth0", 1500, True, ("198.19.174.1",)),
    LinkFacts("ens3", 9000, True, ()),
    LinkFacts("enp0s8", 1400, False, ()),     # down: not counted
    LinkFacts("cali12345", 1200, True, ()),   # a workload: never counted
    LinkFacts("tunl0", 1480, True, ()),
    LinkFacts("br0", 1300, True, ("fd00:198:19:174::1",)),
]


def test_pattern_is_felixs():
    assert detect_mtu(LINKS, DEFAULT_MTU_IFACE_PATTERN) == 1500   # eth0, ens3; not enp0s8 (down)
    assert detect_mtu(LINKS, r"^ens") == 9000
    assert detect_mtu(LINKS, r"^nothing") == 0
    # a search, like Go's MatchString: an unanchored pattern matches inside the name
    assert detect_mtu(LINKS, r"br") == 1300


def test_underlay_interfaces_and_fallback():
    assert underlay(LINKS, DEFAULT_MTU_IFACE_PATTERN, "198.19.174.1", "fd00:198:19:174::1") == \
        Underlay(iface="eth0", mtu=1500, iface_v6="br0")
    # nothing matches the pattern: the MTU of the interface holding the node's address
    assert underlay(LINKS, r"^nothing", "198.19.174.1", None) == Underlay(iface="eth0", mtu=1500)
    assert underlay(LINKS, r"^nothing", None, "fd00:198:19:174::1") == \
        Underlay(iface=None, mtu=1300, iface_v6="br0")
    assert underlay(LINKS, r"^nothing", "198.19.174.99", None) == Underlay()


def test_mtu_file_written_atomically_only_on_change(tmp_path):
    path = tmp_path / "calico" / "mtu"
    f = MtuFile(str(path))
    assert f.read() is None
    assert f.write(1450) is True
    assert path.read_text() == "1450\n" and oct(path.stat().st_mode & 0o777) == "0o644"
    ino, mtime = path.stat().st_ino, path.stat().st_mtime_ns
    assert f.write(1450) is False                       # same value: not touched
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (ino, mtime)
    assert f.write(0) is False and path.read_text() == "1450\n"   # unknown: left alone
    assert f.write(1480) is True and path.read_text() == "1480\n"
    assert path.stat().st_ino != ino                    # replaced by rename, not rewritten
    assert [p.name for p in path.parent.iterdir()] == ["mtu"]   # no temporary left over
    path.write_text("garbage")
    assert f.read() is None and f.write(1480) is True and f.read() == 1480


def test_cni_plugin_reads_what_the_agent_writes(tmp_path, monkeypatch):
    from calico_net.cni import config as cni_config

    path = tmp_path / "mtu"
    monkeypatch.setattr(cni_config, "DEFAULT_MTU_FILE", str(path))
    conf = cni_config.NetConf.parse(json.dumps({"cniVersion": "1.0.0", "name": "calico", "type": "calico",
                                                "ipam": {"type": "calico-ipam"}}))
    assert conf.mtu == 0 and conf.effective_mtu() == 1500   # no file yet: the default
    MtuFile(str(path)).write(1430)
    assert conf.effective_mtu() == 1430
    path.write_text("99999\n")                              # out of range: not taken
    assert conf.effective_mtu() == 1500
    pinned = cni_config.NetConf.parse(json.dumps({"cniVersion": "1.0.0", "name": "calico",
                                                  "type": "calico", "mtu": 1400,
                                                  "ipam": {"type": "calico-ipam"}}))
    assert pinned.effective_mtu() == 1400                   # an explicit "mtu" wins


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def netns():
    name = f"encmtu-{uuid.uuid4().hex[:8]}"
    _ip("netns", "add", name)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a network namespace")
def test_read_links_in_a_namespace(netns):
    ns = ["-n", netns]
    # veth pairs (no dummy module on every kernel); the peers' names match no pattern
    for name, peer, mtu in (("eth7", "x7", "1450"), ("ens9", "x9", "1400"), ("wan0", "x0", "1300")):
        _ip(*ns, "link", "add", name, "mtu", mtu, "type", "veth", "peer", "name", peer, "mtu", mtu)
    _ip(*ns, "addr", "add", "198.19.174.10/24", "dev", "eth7")
    _ip(*ns, "addr", "add", "fd00:198:19:174::10/64", "dev", "wan0", "nodad")
    _ip(*ns, "link", "set", "eth7", "up")
    _ip(*ns, "link", "set", "wan0", "up")
    with in_netns(netns):
        links = read_links()
    by_name = {link.name: link for link in links}
    assert by_name["eth7"] == LinkFacts("eth7", 1450, True, ("198.19.174.10",))
    assert by_name["ens9"].up is False and by_name["ens9"].mtu == 1400
    assert "fd00:198:19:174::10" in by_name["wan0"].addrs
    u = underlay(links, DEFAULT_MTU_IFACE_PATTERN, "198.19.174.10", "fd00:198:19:174::10")
    assert u == Underlay(iface="eth7", mtu=1450, iface_v6="wan0")   # ens9 is down
    _ip(*ns, "link", "set", "ens9", "up")
    with in_netns(netns):
        u = underlay(read_links(), DEFAULT_MTU_IFACE_PATTERN, "198.19.174.10", None)
    assert u.mtu == 1400   # the smallest matching up interface


def test_installed_conflist_follows_the_agents_file_unless_pinned(tmp_path, monkeypatch):
    from calico_net.cni import config as cni_config
    from calico_net.cni.install import install_conflist, main, render_conflist

    path = tmp_path / "mtu"
    monkeypatch.setattr(cni_config, "DEFAULT_MTU_FILE", str(path))
    conflist = render_conflist("http://198.19.174.1:2379")
    assert "mtu" not in conflist["plugins"][0]
    written, _ = install_conflist(tmp_path / "net.d", conflist)
    plugin = json.loads(written.read_text())["plugins"][0]
    conf = cni_config.NetConf.parse(json.dumps(dict(plugin, cniVersion="1.0.0", name="calico")))
    MtuFile(str(path)).write(1450)
    assert conf.effective_mtu() == 1450
    assert render_conflist("http://198.19.174.1:2379", mtu=1400)["plugins"][0]["mtu"] == 1400
    with pytest.raises(SystemExit) as exc:
        main(["--mtu", "100", "--conf-dir", str(tmp_path / "x"), "--bin-dir", str(tmp_path / "b")])
    assert exc.value.code == 2 and not (tmp_path / "x").exists()
