"""The `calico.net.bird` role with IPv6 (dual-stack): bird.conf gets an ipv6 kernel
protocol and a v6 session template, every calico/node client is peered at its IPv6
address beside its IPv4 one (calico_node_ip6, else its first global IPv6 address from
its facts), and the file passes BIRD's own parser (`bird -p`, the role's validate step).
Without bird_ipv6 an IPv6 neighbour is refused by the preflight, naming it.

The role runs on localhost (tags bird_preflight,bird_configure: no apt, no service) as a
route reflector; the clients are inventory hosts that are never contacted.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from playbook_runner import VENV_BIN, ansible_env

pytestmark = [pytest.mark.slow, pytest.mark.root]

INVENTORY = """\
[route_reflectors]
localhost ansible_connection=local ansible_python_interpreter={python}

[calico_nodes]
node-a ansible_host=198.18.213.11 calico_node_ip6=2001:db8:213::11/64
node-b ansible_host=198.18.213.12 calico_node_ip6=autodetect ansible_all_ipv6_addresses='["fe80::1", "2001:db8:213::12"]'
"""


def run_role(tmp: Path, role_vars: dict, play_vars: dict | None = None) -> tuple[int, str]:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "inventory.ini").write_text(INVENTORY.format(python=sys.executable))
    (tmp / "play.yml").write_text(yaml.safe_dump([{
        "hosts": "route_reflectors", "gather_facts": False,
        "vars": {"_bird_started": {"changed": True}, **(play_vars or {})},
        "roles": [{"role": "calico.net.bird", "bird_config_file": str(tmp / "bird.conf"),
                   "bird_address": "198.18.213.1", **role_vars}]}], sort_keys=False))
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", "inventory.ini", "play.yml",
                           "--tags", "bird_preflight,bird_configure"],
                          env=ansible_env(dict(os.environ), tmp), cwd=tmp, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=300)
    return proc.returncode, proc.stdout


def test_bird_role_renders_ipv6_sessions_for_every_client(tmp_path):
    # the cluster's v6 pool (an inventory variable, as for site.yml) turns bird_ipv6 on
    rc, out = run_role(tmp_path, {"bird_address6": "2001:db8:213::1"},
                       {"calico_ipv6_pool_cidr": "2001:db8:19::/48"})
    assert rc == 0, out
    conf = (tmp_path / "bird.conf").read_text()
    assert re.search(r"protocol kernel kernel_ipv6 \{\n  ipv6 \{", conf), conf
    assert re.search(r"template bgp calico_peer6 \{\n  local 2001:db8:213::1 as 64512;", conf), conf
    # both clients, each over IPv4 and IPv6, as route reflector clients
    for v4, v6 in (("198.18.213.11", "2001:db8:213::11"), ("198.18.213.12", "2001:db8:213::12")):
        peer4 = "Peer_" + v4.replace(".", "_")
        peer6 = "Peer_" + v6.replace(":", "_")
        assert f"protocol bgp {peer4} from calico_peer {{\n  neighbor {v4} as 64512;\n  rr client;" in conf, conf
        assert f"protocol bgp {peer6} from calico_peer6 {{\n  neighbor {v6} as 64512;\n  rr client;" in conf, conf
    assert "fe80::1" not in conf
    # BIRD itself accepts it (the role's validate ran it too)
    parsed = subprocess.run(["bird", "-p", "-c", str(tmp_path / "bird.conf")], capture_output=True, text=True)
    assert parsed.returncode == 0, parsed.stderr


def test_bird_role_ipv4_only_refuses_an_ipv6_neighbour(tmp_path):
    rc, out = run_role(tmp_path, {"bird_neighbors": [{"name": "node-v6", "address": "2001:db8:213::21"},
                                                     {"name": "node-v4", "address": "198.18.213.21"}]})
    assert rc != 0, out
    assert "Check the mode, addresses and neighbours" in out and "node-v6 2001:db8:213::21" in out, out
    assert not (tmp_path / "bird.conf").exists()
    # the same neighbours with bird_ipv6 on render and parse
    rc, out = run_role(tmp_path / "v6", {"bird_ipv6": True, "bird_address6": "2001:db8:213::1",
                                         "bird_neighbors": [{"name": "node-v6", "address": "2001:db8:213::21"},
                                                            {"name": "node-v4", "address": "198.18.213.21"}]})
    assert rc == 0, out
    conf = (tmp_path / "v6" / "bird.conf").read_text()
    assert "protocol bgp Peer_2001_db8_213__21 from calico_peer6 {" in conf, conf
    assert "protocol bgp Peer_198_18_213_21 from calico_peer {" in conf, conf
