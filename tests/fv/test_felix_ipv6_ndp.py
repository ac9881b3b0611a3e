"""IPv6 neighbour discovery between a workload and its host through the agent's base
chains (table inet calico as `render_base` writes it, loaded with `nft -f` into a
network namespace that stands for the host).

A workload is wired as the CNI plugin wires an IPv6 one: host side ``cali`` + 11 hex
chars with MAC ee:ee:ee:ee:ee:ee (so its link-local address is the workload's gateway
fe80::ecee:eeff:feee:eeee), a /128 route to it; the workload has its /128 and a default
route via that gateway. Neighbour solicitations and advertisements from the workload
reach the host's input hook, where the workload-to-host default action (Drop) would
otherwise drop them: then the host never resolves the workload (no replies to its own
pings) and the workload never resolves its gateway (no IPv6 off the workload at all).

- allowed: the host pings the workload (the workload's advertisement must get in);
  the workload resolves its gateway's MAC;
- denied, to the same host: the workload's echo request to the host is still dropped
  (the endpoint-to-host action applies to everything but neighbour discovery).
"""
from __future__ import annotations

import subprocess
import time
import uuid
from typing import Iterator

import pytest

from calico_net.agent.felix.base_chains import render_base
from calico_net.agent.felix.nft_writer import NftWriter
from calico_net.agent.felix.ruleset import Ruleset
from calico_net.agent.felix.settings import FelixSettings

pytestmark = pytest.mark.root

GATEWAY = "fe80::ecee:eeff:feee:eeee"
WL_ADDR = "2001:db8:231::7"


def sh(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=timeout)


def in_ns(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh("ip", "netns", "exec", ns, *args, check=check)


class _NoRunner:
    def element_writer(self) -> None:
        return None


@pytest.fixture
def host_and_workload() -> Iterator[tuple[str, str, str]]:
    tag = uuid.uuid4().hex[:6]
    host, wl, cali = f"cnfv-v6nd-h-{tag}", f"cnfv-v6nd-w-{tag}", f"cali{uuid.uuid4().hex[:11]}"
    sh("ip", "netns", "add", host)
    sh("ip", "netns", "add", wl)
    try:
        in_ns(host, "ip", "link", "set", "lo", "up")
        in_ns(host, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        in_ns(host, "ip", "link", "add", cali, "type", "veth", "peer", "name", "eth0", "netns", wl)
        in_ns(host, "ip", "link", "set", cali, "address", "ee:ee:ee:ee:ee:ee")
        in_ns(host, "sysctl", "-qw", f"net.ipv6.conf.{cali}.accept_ra=0")
        in_ns(host, "ip", "link", "set", cali, "up")
        in_ns(wl, "ip", "link", "set", "lo", "up")
        in_ns(wl, "ip", "link", "set", "eth0", "up")
        in_ns(wl, "ip", "-6", "addr", "add", f"{WL_ADDR}/128", "dev", "eth0", "nodad")
        in_ns(host, "ip", "-6", "route", "add", f"{WL_ADDR}/128", "dev", cali)
        # both link-local addresses usable (DAD done) before the default route and the probes
        deadline = time.monotonic() + 30
        while any("tentative" in in_ns(ns, "ip", "-6", "addr", "show", "dev", dev).stdout
                  or "fe80::" not in in_ns(ns, "ip", "-6", "addr", "show", "dev", dev).stdout
                  for ns, dev in ((host, cali), (wl, "eth0"))):
            assert time.monotonic() < deadline, "link-local addresses never left DAD"
            time.sleep(0.1)
        in_ns(wl, "ip", "-6", "route", "add", "default", "via", GATEWAY, "dev", "eth0")
        rs = Ruleset()
        render_base(rs, FelixSettings(interface_prefixes=("cali",)))
        script = NftWriter(_NoRunner()).full_script(rs)  # type: ignore[arg-type]
        subprocess.run(["ip", "netns", "exec", host, "nft", "-f", "-"], input=script, text=True,
                       check=True, capture_output=True, timeout=30)
        yield host, wl, cali
    finally:
        sh("ip", "netns", "del", wl, check=False)
        sh("ip", "netns", "del", host, check=False)


def test_workload_and_host_resolve_each_other_over_ipv6(host_and_workload) -> None:
    host, wl, cali = host_and_workload
    # the rule is there, before conntrack and the endpoint-to-host drop
    chain = in_ns(host, "nft", "list", "chain", "inet", "calico", "cali-input").stdout
    assert 'iifname "cali*" icmpv6 type 135-136 accept' in chain, chain
    assert chain.index("icmpv6 type 135-136") < chain.index('iifname "cali*" drop'), chain

    # allowed: the host reaches the workload (its NS out, the workload's NA back in)
    r = in_ns(host, "ping", "-c", "1", "-W", "3", WL_ADDR, check=False)
    assert r.returncode == 0, (r.stdout, r.stderr, in_ns(host, "ip", "-6", "neigh").stdout)

    # denied, same host: the workload's echo request to the host is dropped...
    r = in_ns(wl, "ping", "-c", "1", "-W", "2", f"{GATEWAY}%eth0", check=False)
    assert r.returncode != 0, r.stdout
    # ...but the workload resolved its gateway on the way (NS in, NA out)
    neigh = in_ns(wl, "ip", "-6", "neigh", "show", GATEWAY, "dev", "eth0").stdout
    assert "lladdr ee:ee:ee:ee:ee:ee" in neigh, neigh
