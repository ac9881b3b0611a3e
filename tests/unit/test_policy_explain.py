"""Unit tests of policy explain (calico_net.agent.felix.explain) on constructed
documents: the verdict and the path (policy order, the deciding rule, Pass, the
profile fallback, end-of-tier and default deny), from the agent's own index."""
from __future__ import annotations

import pytest

from calico_net.agent.felix.explain import Cluster, Packet, explain, find_endpoints, rule_matches
from calico_net.agent.felix.rules import compile_rule

NODE_A, NODE_B = "node-a", "node-b"


def wep(name, ns, ip, labels=None, profiles=None, node=NODE_A, ports=None):
    spec = {"node": node, "orchestrator": "k8s", "workload": name, "endpoint": "eth0",
            "interfaceName": "cali" + name.ljust(11, "0")[:11], "ipNetworks": [f"{ip}/32"],
            "profiles": profiles or []}
    if ports:
        spec["ports"] = ports
    return {"kind": "WorkloadEndpoint", "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
            "spec": spec}


def gnp(name, selector, order=None, **spec):
    spec = {"selector": selector, **spec}
    if order is not None:
        spec["order"] = order
    return {"kind": "GlobalNetworkPolicy", "metadata": {"name": name}, "spec": spec}


def np(name, ns, selector, order=None, **spec):
    d = gnp(name, selector, order, **spec)
    d["kind"] = "NetworkPolicy"
    d["metadata"]["namespace"] = ns
    return d


def profile(name, ingress=None, egress=None, labels=None):
    return {"kind": "Profile", "metadata": {"name": name},
            "spec": {"ingress": ingress or [], "egress": egress or [], "labelsToApply": labels or {}}}


ALLOW_ALL = [{"action": "Allow"}]
# 198.18.77.0/24 is this module's range
FE = wep("fe", "stars", "198.18.77.1", {"role": "frontend"}, ["kns.stars"])
BE = wep("be", "stars", "198.18.77.2", {"role": "backend"}, ["kns.stars"], node=NODE_B,
         ports=[{"name": "http", "protocol": "TCP", "port": 6379}])
CL = wep("cl", "client", "198.18.77.3", {"role": "client"}, ["kns.client"])
OTHER = wep("ot", "other", "198.18.77.4", {"role": "client"}, [])


def tcp(a, b, port):
    return Packet(a["spec"]["ipNetworks"][0][:-3], b["spec"]["ipNetworks"][0][:-3], 6, port)


def run(docs, a, b, pkt):
    cl = Cluster(docs)
    src = find_endpoints(cl, a["metadata"]["name"], a["metadata"]["namespace"])[0]
    dst = find_endpoints(cl, b["metadata"]["name"], b["metadata"]["namespace"])[0]
    return explain(cl, src, dst, pkt)


def test_no_policy_no_profile_is_default_deny():
    r = run([FE, OTHER], FE, OTHER, tcp(FE, OTHER, 80))
    assert r["verdict"] == "Deny"
    assert r["steps"][0]["direction"] == "Egress"
    assert "default deny" in r["decidedBy"]


def test_profile_fallback_allows_and_names_profile_rule():
    docs = [FE, CL, profile("kns.stars", ALLOW_ALL, ALLOW_ALL), profile("kns.client", ALLOW_ALL, ALLOW_ALL)]
    r = run(docs, CL, FE, tcp(CL, FE, 80))
    assert r["verdict"] == "Allow"
    eg, ing = r["steps"]
    assert eg["by"] == "Profile kns.client rule 0" and ing["by"] == "Profile kns.stars rule 0"
    assert ing["profiles"][0]["rules"][0]["rule"] == {"action": "Allow"}
    assert ing["profiles"][0]["rules"][0]["nft"] == ["meta mark set meta mark | 0x10000 return"]


def stars_docs():
    return [FE, BE, CL, OTHER,
            profile("kns.stars", ALLOW_ALL, ALLOW_ALL), profile("kns.client", ALLOW_ALL, ALLOW_ALL),
            # order 10: anything into stars not from a client-labelled endpoint passes to the profiles
            gnp("pass-non-clients", "projectcalico.org/namespace == 'stars'", order=10, types=["Ingress"],
                ingress=[{"action": "Log", "protocol": "TCP"},
                         {"action": "Pass", "source": {"notSelector": "role == 'client'"}},
                         {"action": "Deny", "protocol": "TCP", "destination": {"ports": [9090]}}]),
            # namespaced: only the client namespace's clients, and only to named port http of backends
            np("backend", "stars", "role == 'backend'", order=20, types=["Ingress"],
               ingress=[{"action": "Allow", "protocol": "TCP",
                         "source": {"namespaceSelector": "projectcalico.org/name == 'client'"},
                         "destination": {"ports": ["http"]}}]),
            np("frontend", "stars", "role == 'frontend'", order=20, types=["Ingress"],
               ingress=[{"action": "Allow", "protocol": "TCP", "source": {"selector": "role == 'client'"}}])]


def test_deny_rule_named_with_index_and_policy_order():
    r = run(stars_docs(), CL, FE, tcp(CL, FE, 9090))
    assert r["verdict"] == "Deny"
    ing = r["steps"][1]
    assert ing["by"] == "GlobalNetworkPolicy pass-non-clients rule 2"
    rules = ing["policies"][0]["rules"]
    assert [x["matched"] for x in rules] == [True, False, True]     # Log matched and went on
    assert rules[2]["rule"]["destination"] == {"ports": [9090]}
    sel = {p["name"]: p for p in r["policies"]}
    assert [p["name"] for p in r["policies"]] == ["pass-non-clients", "backend", "frontend"]
    assert sel["frontend"]["selectsDestination"] and not sel["frontend"]["selectsSource"]
    assert not sel["backend"]["selectsDestination"]


def test_namespaced_rule_selector_stays_in_its_namespace():
    # the NetworkPolicy's source selector role == 'client' only matches in stars: the
    # client namespace's client falls off the end of the tier
    r = run(stars_docs(), CL, FE, tcp(CL, FE, 8080))
    assert r["verdict"] == "Deny"
    assert r["steps"][1]["by"].startswith("end of tier default")
    assert [p["result"] for p in r["steps"][1]["policies"]] == ["no match", "no match"]


def test_pass_skips_to_profiles():
    r = run(stars_docs(), FE, BE, tcp(FE, BE, 9090))
    ing = r["steps"][1]
    assert ing["pass"] == "GlobalNetworkPolicy pass-non-clients"
    assert [p["name"] for p in ing["policies"]] == ["pass-non-clients"]     # backend never consulted
    assert r["verdict"] == "Allow" and ing["by"] == "Profile kns.stars rule 0"


def test_named_port_and_namespace_selector():
    docs = stars_docs()
    assert run(docs, CL, BE, tcp(CL, BE, 6379))["verdict"] == "Allow"
    r = run(docs, CL, BE, tcp(CL, BE, 6380))
    assert r["verdict"] == "Deny" and r["steps"][1]["by"].startswith("end of tier")
    # another namespace's client: namespaceSelector does not pick it
    r = run(docs, OTHER, BE, tcp(OTHER, BE, 6379))
    assert r["verdict"] == "Deny" and r["steps"][0]["by"].startswith("no policy")   # no profile at all


def test_ip_source_and_networkset_cidr():
    docs = [FE, profile("kns.stars", [{"action": "Deny", "source": {"selector": "ext == 'yes'"}},
                                      {"action": "Allow", "source": {"nets": ["198.18.78.0/24"]}}]),
            {"kind": "GlobalNetworkSet", "metadata": {"name": "ext", "labels": {"ext": "yes"}},
             "spec": {"nets": ["198.18.78.128/25"]}}]
    cl = Cluster(docs)
    (fe,) = find_endpoints(cl, "198.18.77.1")
    r = explain(cl, None, fe, Packet("198.18.78.200", "198.18.77.1", 6, 80))
    assert r["verdict"] == "Deny" and r["steps"][0]["by"] == "Profile kns.stars rule 0"
    r = explain(cl, None, fe, Packet("198.18.78.1", "198.18.77.1", 6, 80))
    assert r["verdict"] == "Allow" and r["steps"][0]["by"] == "Profile kns.stars rule 1"
    r = explain(cl, None, fe, Packet("198.18.79.1", "198.18.77.1", 6, 80))
    assert r["verdict"] == "Deny"


def test_uncompilable_policy_denies():
    docs = [FE, CL, profile("kns.client", ALLOW_ALL, ALLOW_ALL), profile("kns.stars", ALLOW_ALL, ALLOW_ALL),
            gnp("broken", "all()", ingress=[{"action": "Allow", "source": {"selector": "role == "}}])]
    r = run(docs, CL, FE, tcp(CL, FE, 80))
    assert r["verdict"] == "Deny"
    assert "cannot be compiled" in r["steps"][1]["policies"][0]["rules"][0]["note"]


@pytest.mark.parametrize("rule,pkt,want", [
    ({"action": "Allow", "protocol": "UDP"}, Packet("198.18.77.1", "198.18.77.2", 6, 53), False),
    ({"action": "Allow", "protocol": "TCP", "destination": {"ports": ["1000:2000"]}},
     Packet("198.18.77.1", "198.18.77.2", 6, 1500), True),
    ({"action": "Allow", "protocol": "TCP", "destination": {"notPorts": [1500]}},
     Packet("198.18.77.1", "198.18.77.2", 6, 1500), False),
    ({"action": "Allow", "protocol": "TCP", "source": {"ports": [1500]}},
     Packet("198.18.77.1", "198.18.77.2", 6, 1500), False),        # ephemeral source port
    ({"action": "Allow", "protocol": "ICMP", "icmp": {"type": 8}},
     Packet("198.18.77.1", "198.18.77.2", 1, icmp_type=8), True),
    ({"action": "Allow", "protocol": "ICMP", "notICMP": {"type": 8}},
     Packet("198.18.77.1", "198.18.77.2", 1, icmp_type=8), False),
    ({"action": "Allow", "notProtocol": "TCP"}, Packet("198.18.77.1", "198.18.77.2", 17, 53), True),
    ({"action": "Allow", "ipVersion": 6}, Packet("198.18.77.1", "198.18.77.2", 17, 53), False),
    ({"action": "Allow", "destination": {"notNets": ["198.18.77.0/30"]}},
     Packet("198.18.77.1", "198.18.77.2", 17, 53), False),
])
def test_rule_matches_terms(rule, pkt, want):
    cl = Cluster([])
    assert rule_matches(compile_rule(rule), pkt, cl.index("n")) is want


class _Store:
    def __init__(self, docs):
        self.docs = docs

    def list(self, kind, namespace=None, **_kw):
        return [d for d in self.docs if d["kind"] == kind], 1


def _cli(docs, *argv):
    import io
    import types

    from calico_net.cli.main import build_parser

    args = build_parser().parse_args(["policy", "explain", *argv])
    ctx = types.SimpleNamespace(datastore=_Store(docs), out=io.StringIO(), err=io.StringIO())
    rc = args.func(args, ctx)
    return rc, ctx.out.getvalue()


def test_cli_text_json_and_errors():
    import json

    docs = stars_docs()
    rc, text = _cli(docs, "--from", "cl", "--to", "fe", "--port", "9090")
    assert rc == 0
    assert text.startswith("Verdict:     Deny\nDecided by:  ingress of WorkloadEndpoint stars/fe")
    assert "rule 2 MATCHED: {\"action\":\"Deny\"" in text and "nft: meta l4proto 6 tcp dport 9090 drop" in text
    rc, out = _cli(docs, "--from", "198.18.77.3", "--to", "be", "-n", "stars", "--port", "6379", "-o", "json")
    body = json.loads(out)
    assert body["verdict"] == "Allow" and body["source"]["name"] == "cl"
    assert body["steps"][1]["by"] == "NetworkPolicy stars/backend rule 0"
    with pytest.raises(ValueError, match="no workload or host endpoint"):
        _cli(docs, "--from", "nope", "--to", "fe", "--port", "1")
    with pytest.raises(ValueError, match="out of range"):
        _cli(docs, "--from", "cl", "--to", "fe", "--port", "70000")


def test_trace_parsing_and_decisions():
    from calico_net.agent.felix import explain_live as live

    assert "ip saddr 198.18.77.3/32 ip daddr 198.18.77.1/32 meta l4proto 6 th dport 9090 meta nftrace set 1" \
        in live.trace_script(Packet("198.18.77.3", "198.18.77.1", 6, 9090))
    lines = [
        "trace id aa inet calico cali-forward rule iifname \"cali*\" jump cali-from-wl # handle 9 (verdict jump x)",
        "trace id aa inet calico cali-pi-0123456789abcdef rule meta l4proto tcp log prefix \"p\" # handle 5 "
        "(verdict continue)",
        "trace id aa inet calico cali-po-0123456789abcdef rule meta mark set meta mark | 0x00010000 return "
        "# handle 6 (verdict return)",
        "trace id aa inet calico cali-fw-0123456789abcdef rule meta mark & 0x00010000 == 0x00010000 return "
        "# handle 7 (verdict return)",
        "trace id aa inet calico cali-pi-0123456789abcdef rule tcp dport 9090 drop # handle 8 (verdict drop)",
        "trace id bb inet calico cali-pi-0123456789abcdef rule tcp dport 9090 drop # handle 8 (verdict drop)",
        "trace id aa inet other cali-pi-0123456789abcdef rule drop # handle 1 (verdict drop)",
    ]
    hits = []
    for line in lines:
        m = live._RULE.match(line)
        if m and m.group(2) == "inet" and m.group(3) == "calico":
            hits.append(live.Hit(m.group(1), m.group(4), int(m.group(6)), m.group(7), m.group(5)))
    got = [(h.chain[:7], h.handle, h.verdict) for h in live.decisions(hits)]
    assert got == [("cali-po", 6, "return"), ("cali-pi", 8, "drop")]
    with pytest.raises(ValueError):
        live.rule_positions("cali-pi-0123; flush ruleset")


HEP = {"kind": "HostEndpoint", "metadata": {"name": "node-a-eth0", "labels": {"hep": "eth0"}},
       "spec": {"node": NODE_A, "interfaceName": "eth0", "expectedIPs": ["198.18.77.10"]}}
HEP_POLICY = gnp("host-web", "hep == 'eth0'", types=["Ingress"],
                 ingress=[{"action": "Allow", "protocol": "TCP", "destination": {"ports": [80]}}])


def test_host_endpoint_ingress_failsafe_and_endpoint_to_host_action():
    docs = [HEP, HEP_POLICY, FE, profile("kns.stars", ALLOW_ALL, ALLOW_ALL)]
    cl = Cluster(docs)
    (hep,) = find_endpoints(cl, "198.18.77.10")
    ext = "198.18.78.1"
    r = explain(cl, None, hep, Packet(ext, "198.18.77.10", 6, 80))
    assert r["verdict"] == "Allow" and r["decidedBy"].endswith("GlobalNetworkPolicy host-web rule 0")
    r = explain(cl, None, hep, Packet(ext, "198.18.77.10", 6, 81))
    assert r["verdict"] == "Deny" and "end of tier" in r["decidedBy"]
    r = explain(cl, None, hep, Packet(ext, "198.18.77.10", 6, 22))     # failsafe inbound ssh
    assert r["verdict"] == "Allow" and r["decidedBy"] == "failsafe inbound port"
    (fe,) = find_endpoints(cl, "fe", "stars")
    r = explain(cl, fe, hep, Packet("198.18.77.1", "198.18.77.10", 6, 80))
    assert r["verdict"] == "Deny" and "defaultEndpointToHostAction Drop" in r["decidedBy"]
    # the node's FelixConfiguration wins over the default one, as in the agent
    fc = [{"kind": "FelixConfiguration", "metadata": {"name": "default"},
           "spec": {"defaultEndpointToHostAction": "Drop", "failsafeInboundHostPorts": []}},
          {"kind": "FelixConfiguration", "metadata": {"name": f"node.{NODE_A}"},
           "spec": {"defaultEndpointToHostAction": "Accept"}}]
    cl = Cluster(docs + fc)
    (fe,) = find_endpoints(cl, "fe", "stars")
    (hep,) = find_endpoints(cl, "node-a-eth0")
    r = explain(cl, fe, hep, Packet("198.18.77.1", "198.18.77.10", 6, 80))
    assert r["verdict"] == "Allow" and "Accept" in r["decidedBy"]
    r = explain(cl, None, hep, Packet(ext, "198.18.77.10", 6, 22))     # no failsafe ports now
    assert r["verdict"] == "Deny"


def test_endpoint_the_agent_does_not_program():
    bad = wep("bad", "stars", "198.18.77.5", {"role": "frontend"}, ["kns.stars"])
    bad["spec"]["interfaceName"] = "eth7"          # not a workload interface prefix
    docs = [bad, FE, profile("kns.stars", ALLOW_ALL, ALLOW_ALL)]
    r = run(docs, FE, bad, tcp(FE, bad, 80))
    assert r["verdict"] == "Deny" and "not programmed" in r["decidedBy"]
    assert run(docs, bad, FE, tcp(bad, FE, 80))["verdict"] == "Deny"
    good = dict(bad, spec=dict(bad["spec"], interfaceName="calibad0000000"[:15]))
    assert run([good, FE, profile("kns.stars", ALLOW_ALL, ALLOW_ALL)], FE, good, tcp(FE, good, 80))["verdict"] == "Allow"


def test_bad_documents_are_skipped_the_rest_explained():
    wide = wep("wide", "stars", "198.18.77.6", {"role": "client"}, ["kns.stars"])
    wide["spec"]["ipNetworks"] = ["198.18.77.0/24"]          # refused by the agent: absent here too
    docs = [wide, {"kind": "WorkloadEndpoint", "metadata": ["junk"]}, "junk", FE,
            profile("kns.stars", [{"action": "Deny", "source": {"selector": "role == 'client'"}}] + ALLOW_ALL)]
    cl = Cluster(docs)
    assert find_endpoints(cl, "wide", "stars") == []
    (fe,) = find_endpoints(cl, "fe", "stars")
    r = explain(cl, None, fe, Packet("198.18.77.6", "198.18.77.1", 6, 80))
    assert r["verdict"] == "Allow" and r["steps"][0]["by"] == "Profile kns.stars rule 1"


def test_reject_deny_action_is_what_explain_shows():
    # nftablesFilterDenyAction Reject: the node writes `reject` where Drop writes
    # `drop`, in the rules and in the endpoint chain (so the chain's name differs too)
    reject = [{"kind": "FelixConfiguration", "metadata": {"name": "default"},
               "spec": {"nftablesFilterDenyAction": "Reject"}}]
    dropped = run(stars_docs(), CL, FE, tcp(CL, FE, 9090))
    rejected = run(stars_docs() + reject, CL, FE, tcp(CL, FE, 9090))
    assert dropped["verdict"] == rejected["verdict"] == "Deny"
    d_ing, r_ing = dropped["steps"][1], rejected["steps"][1]
    assert d_ing["by"] == r_ing["by"] == "GlobalNetworkPolicy pass-non-clients rule 2"
    d_rule, r_rule = d_ing["policies"][0]["rules"][2], r_ing["policies"][0]["rules"][2]
    assert d_rule["nft"][-1].endswith(" drop") and r_rule["nft"][-1].endswith(" reject")
    assert r_rule["nft"][-1][:-len("reject")] == d_rule["nft"][-1][:-len("drop")]
    assert not any(" drop" in line or line == "drop" for line in r_rule["nft"])
    assert d_ing["chain"] != r_ing["chain"]
