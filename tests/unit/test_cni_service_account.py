"""The workload's service account through the CNI plugin (no kernel, no etcd): CNI_ARGS
`K8S_POD_SERVICE_ACCOUNT` becomes the endpoint's serviceAccountName and its
ksa.<namespace>.<name> profile, and the endpoint validates as the model reads it."""
from __future__ import annotations

import ipaddress
import json

import pytest

from calico_net import model
from calico_net.cni import config, dataplane
from calico_net.cni.errors import CNIError
from calico_net.cni.plugin import build_endpoint

BASE = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "abc-123", "CNI_NETNS": "/var/run/netns/x",
        "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni"}
WIRING = dataplane.Wiring(host_ifname="cali0123456789a", host_mac="ee:ee:ee:ee:ee:ee",
                          container_ifname="eth0", container_mac="02:00:00:00:00:01", netns="/var/run/netns/x")


def endpoint(args: str, **conf_over) -> dict:
    env = config.CNIEnv.from_environ(dict(BASE, CNI_ARGS=args))
    conf = config.NetConf.parse(json.dumps({"cniVersion": "1.0.0", "name": "net1", "type": "calico",
                                            "ipam": {"type": "calico-ipam"}, **conf_over}))
    return build_endpoint(conf, env, "node-1", [ipaddress.ip_address("198.19.0.5")], WIRING)


def test_service_account_gives_name_and_profile():
    wep = endpoint("IgnoreUnknown=1;K8S_POD_NAMESPACE=team-a;K8S_POD_SERVICE_ACCOUNT=builder")
    assert wep["spec"]["serviceAccountName"] == "builder"
    assert wep["spec"]["profiles"] == ["net1", "ksa.team-a.builder"]
    model.parse_resource(wep)
    wep = endpoint("K8S_POD_SERVICE_ACCOUNT=ci.builder", profiles=["p1", "p2"])
    assert wep["spec"]["profiles"] == ["p1", "p2", "ksa.default.ci.builder"]
    model.parse_resource(wep)


def test_no_service_account_changes_nothing():
    for args in ("", "K8S_POD_SERVICE_ACCOUNT="):
        wep = endpoint(args)
        assert "serviceAccountName" not in wep["spec"]
        assert wep["spec"]["profiles"] == ["net1"]


@pytest.mark.parametrize("sa", ["Builder", "a_b", "-a", "a.", "a" * 254, "a b", "a\nb"])
def test_bad_service_account_is_refused(sa):
    with pytest.raises(CNIError) as e:
        config.CNIEnv.from_environ(dict(BASE, CNI_ARGS=f"K8S_POD_SERVICE_ACCOUNT={sa}"))
    assert e.value.code == 4 and "K8S_POD_SERVICE_ACCOUNT" in e.value.msg
