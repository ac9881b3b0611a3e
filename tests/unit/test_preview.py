"""calico_net.preview: per-node nftables and bird.cfg diffs of a planned change.

Pure cases on a two-node snapshot (the agent's own `PolicyDataplane` renders both
sides): a policy change shows the rule lines and the new selector set; an endpoint
added on one node changes only that node's maps (the other node's sets do not hold
it: no rule selects it); a BGP-only change renders no ruleset. The kernel form
(nft in a scratch namespace) lists what the rendered lines become. The BGPPeer case
runs the module's manager in check mode with diff against real etcd and compares
the previewed bird.cfg with what confd itself renders from etcd after the real run.
"""
from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # ansible_collections/ on the path

from calico_net.preview import Change, Snapshot, preview, text_report  # noqa: E402
from calico_net.preview.ruleset import canonical_listing, desired_dataplane, parse_listing  # noqa: E402

V3 = "projectcalico.org/v3"


def _wep(name, node, ip, iface, labels):
    return {"apiVersion": V3, "kind": "WorkloadEndpoint",
            "metadata": {"name": name, "namespace": "default",
                         "labels": {"projectcalico.org/namespace": "default",
                                    "projectcalico.org/orchestrator": "k8s", **labels}},
            "spec": {"node": node, "orchestrator": "k8s", "workload": name, "endpoint": "eth0",
                     "interfaceName": iface, "ipNetworks": [f"{ip}/32"], "profiles": ["kns.default"]}}


def _node(name, ip):
    return {"apiVersion": V3, "kind": "Node", "metadata": {"name": name},
            "spec": {"bgp": {"ipv4Address": f"{ip}/24"}}}


GNP = {"apiVersion": V3, "kind": "GlobalNetworkPolicy", "metadata": {"name": "db"},
       "spec": {"selector": "role == 'db'", "order": 10, "types": ["Ingress"],
                "ingress": [{"action": "Allow", "protocol": "TCP", "destination": {"ports": [8080]}}]}}
DOCS = [_node("n1", "198.18.5.1"), _node("n2", "198.18.5.2"),
        _wep("a", "n1", "198.19.1.1", "cali1111aaaa", {"role": "db"}),
        _wep("b", "n2", "198.19.1.2", "cali2222bbbb", {"role": "web"}), GNP,
        {"apiVersion": V3, "kind": "Profile", "metadata": {"name": "kns.default"},
         "spec": {"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}]}},
        {"apiVersion": V3, "kind": "IPPool", "metadata": {"name": "pool"},
         "spec": {"cidr": "198.19.0.0/16", "natOutgoing": True}}]


def _gnp_web_9090():
    return {**GNP, "spec": {**GNP["spec"], "ingress": [
        {"action": "Allow", "protocol": "TCP", "source": {"selector": "role == 'web'"},
         "destination": {"ports": [9090]}}]}}


def test_policy_change_shows_rule_lines_and_new_set():
    got = {p.node: p for p in preview(Snapshot.of(DOCS), [Change.put(_gnp_web_9090())], form="rendered")}
    assert set(got) == {"n1", "n2"}        # the agent writes every policy's chains on every node
    p = got["n1"]
    assert not p.bird_changed
    names = {c.name: c for c in p.nft}
    chain = next(c for n, c in names.items() if n.startswith("chain cali-pi-"))
    assert [ln for ln in chain.removed()] == ["meta l4proto 6 tcp dport 8080 meta mark set meta mark | 0x10000 return"]
    (added,) = chain.added()
    assert "tcp dport 9090" in added and "ip saddr @s4_" in added
    sets = [c for n, c in names.items() if n.startswith("set s4_")]
    assert len(sets) == 1 and sets[0].before is None and sets[0].after == ("type ipv4_addr", "198.19.1.2")
    assert "+" + added in p.nft_diff() and "=== node n1" in text_report([p])


def test_endpoint_added_changes_only_its_node():
    new = _wep("c", "n1", "198.19.1.3", "cali3333cccc", {"role": "other"})
    got = preview(Snapshot.of(DOCS), [Change.put(new)], form="rendered")
    assert [p.node for p in got] == ["n1"]
    names = {c.name for c in got[0].nft}
    # its maps' elements, and the chain of its (new) combination: profile only, no policy
    assert names == {"map cali-wl-from", "map cali-wl-to", "chain cali-tw-6fe292a583edb924"}, names
    assert next(c for c in got[0].nft if c.name.startswith("chain")).before is None
    assert any('"cali3333cccc" : jump cali-tw-' in ln for c in got[0].nft for ln in c.added())


def test_bgp_change_renders_no_ruleset_and_delete_reverts():
    peer = {"apiVersion": V3, "kind": "BGPPeer", "metadata": {"name": "tor"},
            "spec": {"peerIP": "198.18.5.254", "asNumber": 65001}}
    got = preview(Snapshot.of(DOCS), [Change.put(peer)])
    assert [p.node for p in got] == ["n1", "n2"] and all(not p.nft and p.bird_changed for p in got)
    assert "+protocol bgp Global_198_18_5_254 from calico_bgp_v4 {" in got[0].bird_diff()
    back = preview(Snapshot.of(DOCS + [peer]), [Change.delete("BGPPeer", "tor")])
    assert back[0].bird_before == got[0].bird_after and back[0].bird_after == got[0].bird_before


def test_bad_form_is_refused():
    with pytest.raises(ValueError, match="form: 'pretty' is not one of auto, kernel, rendered"):
        preview(Snapshot.of(DOCS), [], form="pretty")


@pytest.mark.skipif(not shutil.which("nft") or not shutil.which("unshare"), reason="needs nft and unshare")
def test_kernel_form_is_nfts_own_listing():
    got = {p.node: p for p in preview(Snapshot.of(DOCS), [Change.put(_gnp_web_9090())], form="kernel")}
    p = got["n1"]
    assert p.nft_form == "kernel"
    chain = next(c for c in p.nft if c.name.startswith("chain cali-pi-"))
    # nft prints the mark in full width and drops the l4proto match implied by "tcp dport"
    assert chain.removed() == ["tcp dport 8080 meta mark set meta mark | 0x00010000 return"]
    # the listing parses back to the same objects every time (order of set elements aside)
    text = canonical_listing(desired_dataplane(Snapshot.of(DOCS), "n1").ruleset_text())
    assert parse_listing(text) == parse_listing(text.replace("\t", "  "))
    assert "cali-meta" not in " ".join(parse_listing(text))


# ------------------------------------------------------------ BGPPeer against confd, real etcd


def _wait(cond, timeout=20.0, what=""):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_bgp_peer_preview_equals_confds_render(datastore, etcd_client, tmp_path, bird_binary):
    from ansible_collections.calico.net.plugins.module_utils.manager import ResourceManager, Want, new_document
    from calico_net.agent.confd.runner import Confd
    from calico_net.agent.confd.settings import ConfdSettings

    datastore.apply_all([_node("n1", "198.18.5.1"), _node("n2", "198.18.5.2"), DOCS[-1]])
    settings = ConfdSettings(
        node_name="n1", bird_config=str(tmp_path / "bird.cfg"), bird_socket=str(tmp_path / "bird.ctl"),
        bird_binary=bird_binary, secrets_dir=str(tmp_path / "secrets"), status_file=None,
        health_enabled=False, coalesce=0.01, coalesce_max=0.1, backoff_initial=0.05,
        backoff_max=0.2, probe_interval=0.5)
    confd = Confd(settings, etcd_client, reload=lambda: None)
    cfg = Path(settings.bird_config)
    t = threading.Thread(target=confd.run, daemon=True)
    t.start()
    try:
        def want(check):
            def build(_stored):
                doc = new_document("BGPPeer", "tor")
                doc["spec"] = {"peerIP": "198.18.5.254", "asNumber": 65001, "node": "n1"}
                return doc
            return ResourceManager(datastore, check_mode=check, diff=True).run([Want("BGPPeer", "tor", build=build)])

        checked = want(True)
        (n1,) = checked["preview"]                  # the peer is n1's only: n2 is not shown
        assert n1["node"] == "n1" and "nftables" not in n1
        assert "+protocol bgp Node_198_18_5_254" in n1["bird"]["diff"]
        assert checked["diff"]["prepared"].startswith("=== node n1: bird.cfg change")
        from calico_net.preview import read_snapshot
        from calico_net.preview.bird import render_node_bird

        before = render_node_bird(read_snapshot(datastore), "n1")
        _wait(lambda: cfg.exists() and cfg.read_text() == before, what="confd's bird.cfg = the preview's before")
        real = want(False)
        assert real["diff"] == checked["diff"] and real["preview"] == checked["preview"]
        after = render_node_bird(read_snapshot(datastore), "n1")
        _wait(lambda: cfg.read_text() == after, what="confd's bird.cfg = the preview's after")
        # and the preview's diff is exactly the difference of confd's two files
        import difflib
        assert n1["bird"]["diff"] == "\n".join(difflib.unified_diff(
            before.splitlines(), cfg.read_text().splitlines(), "n1: bird.cfg", "n1: bird.cfg",
            lineterm="", n=3)) + "\n"
    finally:
        confd.stop()
        t.join(10)
    assert not t.is_alive()


def test_preview_off_by_environment(datastore, monkeypatch):
    from ansible_collections.calico.net.plugins.module_utils.manager import ResourceManager, Want, new_document

    monkeypatch.setenv("CALICO_NET_PREVIEW", "0")

    def build(_stored):
        return dict(new_document("GlobalNetworkPolicy", "x"), spec={"selector": "all()"})

    r = ResourceManager(datastore, check_mode=True, diff=True).run([Want("GlobalNetworkPolicy", "x", build=build)])
    assert "preview" not in r and "prepared" not in r["diff"]
    assert os.environ["CALICO_NET_PREVIEW"] == "0"


def test_listing_parse_drops_handles_counters_and_unused_endpoint_chains():
    from calico_net.preview.ruleset import fingerprint
    from calico_net.verify.dataplane import live_objects

    text = """table inet calico { # handle 7
\tset cali-meta { # handle 3
\t\ttype ifname
\t\telements = { "0123456789abcde" }
\t}
\tset s4_aa { # handle 4
\t\ttype ipv4_addr
\t\telements = { 198.19.1.2,
\t\t\t     198.19.1.1 }
\t}
\tchain cali-tw-0123456789abcdef { # handle 9
\t\tjump cali-pi-0123456789abcdef # handle 10
\t\tcounter packets 12 bytes 3400 drop # handle 11
\t}
\tchain cali-tw-fedcba9876543210 { # handle 12
\t\tdrop # handle 13
\t}
\tmap cali-wl-to { # handle 5
\t\ttype ifname : verdict
\t\telements = { "cali1" : jump cali-tw-0123456789abcdef }
\t}
}
"""
    objs = live_objects(text)
    assert objs == {
        "set s4_aa": ("type ipv4_addr", "198.19.1.1", "198.19.1.2"),
        "chain cali-tw-0123456789abcdef": ("jump cali-pi-0123456789abcdef", "counter drop"),
        "map cali-wl-to": ("type ifname : verdict", '"cali1" : jump cali-tw-0123456789abcdef'),
    }
    # handles, counter values and element order do not change the fingerprint
    other = text.replace("# handle 10", "# handle 99").replace("packets 12 bytes 3400", "packets 0 bytes 0")
    other = other.replace("198.19.1.2,\n\t\t\t     198.19.1.1", "198.19.1.1, 198.19.1.2")
    assert fingerprint(live_objects(other)) == fingerprint(objs)
    assert fingerprint(live_objects(text.replace("198.19.1.1 }", "198.19.1.3 }"))) != fingerprint(objs)


def test_calicoctl_node_preview(datastore, tmp_path):
    import io
    import json
    import types

    from calico_net.cli.main import build_parser

    datastore.apply_all(DOCS)
    f = tmp_path / "change.yaml"
    f.write_text(json.dumps(_gnp_web_9090()))

    def run(*argv):
        args = build_parser().parse_args(["node", "preview", "-f", str(f), *argv])
        ctx = types.SimpleNamespace(datastore=datastore, out=io.StringIO(), err=io.StringIO())
        assert args.func(args, ctx) == 0
        return ctx.out.getvalue()

    text = run("--node", "n1", "--form", "rendered")
    assert text.startswith("=== node n1: nftables change\n") and "=== node n2" not in text
    assert "+meta l4proto 6 ip saddr @s4_" in text
    body = json.loads(run("-o", "json", "--form", "rendered", "--delete"))
    assert [n["node"] for n in body["nodes"]] == ["n1", "n2"]
    (gone,) = [o for o in body["nodes"][0]["nftables"]["objects"] if o["name"].startswith("chain cali-pi-")]
    assert gone["state"] == "removed"
