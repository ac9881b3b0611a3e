"""confd with IP-in-IP and VXLAN pools, with real etcd, the real confd process per host
and real BIRD (the BGP fabric of tests/fv/bgp_util.py: two hosts and a top-of-rack
router).

What is checked is the split the overlay design makes: inside a pool whose ipipMode or
vxlanMode is not Never the agent programs the routes to other nodes' blocks, so BIRD
must write none of them into the kernel — yet it still learns and advertises every
block over BGP (the ToR, an external peer, keeps all of them), and still blackholes the
node's own blocks. Every "not in the kernel" is paired with the same route being there
under a Never pool, on the same fabric, before and after.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any, Iterator

import pytest

import bgp_util as bu

pytestmark = [pytest.mark.root]

CONVERGE = 60  # seconds: a hang guard on a loaded 2-core machine, not a timing claim


@pytest.fixture(scope="module")
def fabric(tmp_path_factory) -> Iterator[bu.Fabric]:
    f = bu.Fabric(tmp_path_factory.mktemp("overlayfv"), 2)
    try:
        f.setup()
        for h in f.hosts:
            f.add_workload(h)
        f.start_tor()
        # Every host peers with the ToR (a global BGPPeer), as an external router would.
        f.apply({"apiVersion": "projectcalico.org/v3", "kind": "BGPPeer",
                 "metadata": {"name": "tor"},
                 "spec": {"peerIP": bu.TOR_IP, "asNumber": bu.TOR_AS}})
        yield f
    except BaseException:
        print(f.diag())
        raise
    finally:
        f.teardown()


def set_pool_modes(f: bu.Fabric, **modes: str) -> None:
    """Rewrite the fabric's pool with these ipipMode/vxlanMode (the rest as created)."""
    doc: dict[str, Any] = f.ds.get("IPPool", "fv-pool")
    spec = doc["spec"]
    spec["ipipMode"] = modes.get("ipipMode", "Never")
    spec["vxlanMode"] = modes.get("vxlanMode", "Never")
    f.ds.replace(doc)


def others_blocks(f: bu.Fabric, h: bu.Host) -> set[str]:
    return set().union(*(f.blocks_of(o) for o in f.hosts if o is not h))


def bird_table_has(h: bu.Host, prefix: str) -> bool:
    """The block is in the host's BIRD table, learned over BGP (birdc, read only)."""
    p = subprocess.run(["birdc", "-s", h.sock, "show", "route", "for", prefix, "all"],
                       capture_output=True, text=True, timeout=10)
    return p.returncode == 0 and "BGP.origin" in p.stdout


def learned_in_kernel(f: bu.Fabric) -> dict[str, set[str]]:
    """Per host: the other hosts' blocks BIRD has written into its kernel."""
    return {h.name: others_blocks(f, h) & set(h.routes()) for h in f.hosts}


def all_in_kernel(f: bu.Fabric) -> bool:
    return all(others_blocks(f, h) <= set(h.routes()) for h in f.hosts)


def none_in_kernel(f: bu.Fabric) -> bool:
    return not any(learned_in_kernel(f).values())


def own_blackholes(f: bu.Fabric) -> bool:
    for h in f.hosts:
        routes = h.routes()
        if not all(routes.get(b, {}).get("type") == "blackhole" for b in f.blocks_of(h)):
            return False
    return True


def tor_has_every_block(f: bu.Fabric) -> bool:
    every = set().union(*(f.blocks_of(h) for h in f.hosts))
    return bool(every) and every <= set(f.tor_routes())


def diag(f: bu.Fabric) -> str:
    return (f"kernel: {learned_in_kernel(f)}\ntor: {sorted(f.tor_routes())}\n"
            f"pool: {f.ds.get('IPPool', 'fv-pool')['spec']}\n{f.diag()}")


def test_plain_pool_routes_are_written_by_bird(fabric: bu.Fabric) -> None:
    f = fabric
    set_pool_modes(f)
    bu.wait_for(lambda: all_in_kernel(f) and tor_has_every_block(f), CONVERGE,
                "every block in every other host's kernel and at the ToR", lambda: diag(f))
    assert own_blackholes(f), diag(f)


@pytest.mark.parametrize("modes", [
    {"vxlanMode": "Always"},
    {"vxlanMode": "CrossSubnet"},
    {"ipipMode": "Always"},
    {"ipipMode": "CrossSubnet"},
], ids=lambda m: "-".join(f"{k}={v}" for k, v in m.items()))
def test_overlay_pool_routes_leave_the_kernel_but_stay_in_bgp(
        fabric: bu.Fabric, modes: dict[str, str]) -> None:
    f = fabric
    # Start from the plain pool, with BIRD's routes in place (the "allowed" side).
    set_pool_modes(f)
    bu.wait_for(lambda: all_in_kernel(f), CONVERGE, "BIRD's routes with a Never pool",
                lambda: diag(f))
    try:
        set_pool_modes(f, **modes)
        bu.wait_for(lambda: none_in_kernel(f), CONVERGE,
                    f"BIRD to withdraw the learned routes from the kernel under {modes}",
                    lambda: diag(f))
        # Still learned and still advertised: only the kernel export changed.
        for h in f.hosts:
            for block in others_blocks(f, h):
                assert bird_table_has(h, block), f"{h.name} lost {block} from BGP\n{diag(f)}"
        assert tor_has_every_block(f), diag(f)
        assert own_blackholes(f), diag(f)
        for h in f.hosts:
            mesh = {"Mesh_" + o.ip.replace(".", "_") for o in f.hosts if o is not h}
            assert mesh <= h.established(), diag(f)
    finally:
        set_pool_modes(f)
    # And back: BIRD writes them again as soon as the pool is plain.
    bu.wait_for(lambda: all_in_kernel(f), CONVERGE, "BIRD's routes back with a Never pool",
                lambda: diag(f))


def test_pool_with_an_unknown_mode_is_skipped_not_fatal(fabric: bu.Fabric) -> None:
    f = fabric
    set_pool_modes(f)
    bu.wait_for(lambda: all_in_kernel(f), CONVERGE, "BIRD's routes with a Never pool",
                lambda: diag(f))
    # calicoctl would refuse this value; write it raw, as a broken client could.
    key = "/calico/resources/v3/projectcalico.org/ippools/fv-pool"
    kv = f.client.get(key)
    assert kv is not None, "pool key layout changed"
    good = kv.value
    doc = json.loads(good)
    doc["spec"]["vxlanMode"] = "always"
    try:
        f.client.put(key, json.dumps(doc))
        # The pool is skipped whole (its blocks are no longer accepted, so BIRD's routes
        # leave the kernel); confd keeps running and rendering.
        bu.wait_for(lambda: none_in_kernel(f), CONVERGE, "the skipped pool's routes to go",
                    lambda: diag(f))
        for h in f.hosts:
            assert h.confd is not None and h.confd.poll() is None, h.log_tail()
            assert "return false;  # no IP pools" in h.bird_cfg.read_text()
    finally:
        f.client.put(key, good)
    bu.wait_for(lambda: all_in_kernel(f), CONVERGE, "BIRD's routes back with the good pool",
                lambda: diag(f))
