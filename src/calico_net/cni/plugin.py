"""`calico`: the CNI plugin that attaches a workload (CNI spec 1.0: ADD, DEL, CHECK, VERSION).

ADD, in this order, each step undone in reverse if a later one fails — so a failed
ADD leaves no address without an endpoint and no dangling veth. The datastore steps
are undone even when their own write failed (a write that committed but whose reply
was lost looks the same), and while etcd cannot be reached the undo retries them for
up to `UNDO_RETRY_S`: an ADD that lost etcd mid-way frees its address as soon as etcd
answers again; past that bound the runtime's DEL frees it:

1. addresses from IPAM (calico-ipam in-process, or the configured IPAM plugin);
2. the network's profile, created when missing and no explicit `profiles` or
   `policy.type` is configured — as Calico's CNI does on etcd: it allows ingress from
   endpoints carrying the network's label (`has(<network>)`, applied by the profile's
   `labelsToApply`) and all egress, so workloads of one network talk to each other
   and nothing else gets in until policy says so;
3. the veth pair and the container's addresses and routes (`cni.dataplane`);
4. the WorkloadEndpoint `<node>-cni-<container id>-<ifname>`; with a service account
   (CNI_ARGS `K8S_POD_SERVICE_ACCOUNT`) it gets `serviceAccountName` and, after the
   network's profiles, the `ksa.<namespace>.<name>` profile through which Calico gives
   endpoints their service account's labels (skipped by the agent while it does not
   exist).

An ADD for an attachment whose endpoint exists and whose interfaces are intact
returns the existing result; when the endpoint exists but the interfaces do not
(a restarted container, a runtime that skipped DEL), the remains are removed and the
attachment is made again, keeping the handle's addresses.

DEL removes the veth first (so an address is never free while a container still
has it), then the endpoint, then the addresses; each step succeeds when there is
nothing to remove. If etcd cannot be reached, DEL still removes the veth and then
fails with code 11 so the runtime retries.

CHECK compares the interfaces, addresses, routes, endpoint and IPAM handle with what
ADD made (and with prevResult when the runtime passes it).
"""
from __future__ import annotations

import ipaddress
import logging
import sys
import time
from typing import Any, Sequence

from calico_net.cni import dataplane
from calico_net.cni.config import CNIEnv, NetConf, host_veth_name, wep_name
from calico_net.cni.errors import CHECK_FAILED, INVALID_NETWORK_CONFIG, CNIError
from calico_net.cni.ipam_plugin import (
    connect,
    delegate,
    format_ips,
    ipam_add,
    ipam_check,
    ipam_del,
    parse_human_args,
    result_ips,
    run_plugin,
)

log = logging.getLogger("calico_net.cni")

API_VERSION = "projectcalico.org/v3"
NAMESPACE_LABEL = "projectcalico.org/namespace"
ORCHESTRATOR_LABEL = "projectcalico.org/orchestrator"
ORCHESTRATOR = "cni"


# --- pieces -----------------------------------------------------------------------------


def _profiles(conf: NetConf) -> list[str]:
    return list(conf.profiles) if conf.profiles is not None else [conf.name]


def ensure_profile(conf: NetConf, datastore) -> bool:
    """Create the network's default profile when missing. True if it was created."""
    from calico_net.datastore.errors import ResourceAlreadyExists, ResourceNotFound
    from calico_net.errors import ValidationError

    if conf.profiles is not None or conf.policy_type:
        return False
    try:
        datastore.get("Profile", conf.name)
        return False
    except ResourceNotFound:
        pass
    profile = {
        "apiVersion": API_VERSION, "kind": "Profile", "metadata": {"name": conf.name},
        "spec": {
            "ingress": [{"action": "Allow", "source": {"selector": f"has({conf.name})"}}],
            "egress": [{"action": "Allow"}],
            "labelsToApply": {conf.name: ""},
        },
    }
    try:
        datastore.create(profile)
    except ResourceAlreadyExists:
        return False  # a concurrent ADD made it
    except ValidationError as e:
        raise CNIError(INVALID_NETWORK_CONFIG,
                       f'cannot create the profile for network "{conf.name}": {e}') from None
    log.info("created profile %s", conf.name)
    return True


def build_endpoint(conf: NetConf, env: CNIEnv, node: str, ips: list, wiring: dataplane.Wiring) -> dict[str, Any]:
    labels = dict(conf.labels)
    labels.update(env.arg_labels())
    labels[NAMESPACE_LABEL] = env.namespace
    labels[ORCHESTRATOR_LABEL] = ORCHESTRATOR
    profiles = _profiles(conf)
    sa = env.service_account
    if sa:
        profiles.append(f"ksa.{env.namespace}.{sa}")
    wep: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": "WorkloadEndpoint",
        "metadata": {"name": wep_name(node, env), "namespace": env.namespace, "labels": labels},
        "spec": {
            "node": node,
            "orchestrator": ORCHESTRATOR,
            "workload": env.workload,
            "containerID": env.container_id,
            "endpoint": env.ifname,
            "interfaceName": wiring.host_ifname,
            "mac": wiring.container_mac,
            "ipNetworks": [f"{a}/{32 if a.version == 4 else 128}" for a in ips],
            "profiles": profiles,
        },
    }
    if sa:
        wep["spec"]["serviceAccountName"] = sa
    return wep


def build_result(conf: NetConf, env: CNIEnv, ips: list, host_ifname: str, container_mac: str) -> dict[str, Any]:
    v = conf.cni_version
    routes = []
    if any(a.version == 4 for a in ips):
        routes.append({"dst": "0.0.0.0/0", "gw": dataplane.GATEWAY_V4})
    if any(a.version == 6 for a in ips):
        routes.append({"dst": "::/0", "gw": dataplane.GATEWAY_V6})
    out: dict[str, Any] = {
        "cniVersion": v,
        "interfaces": [
            {"name": host_ifname, "mac": dataplane.HOST_MAC},
            {"name": env.ifname, "mac": container_mac, "sandbox": env.netns},
        ],
        "ips": format_ips(ips, v, interface=1),
        "routes": routes,
        "dns": conf.dns or {},
    }
    return out


def _endpoint_ips(wep: dict[str, Any]) -> list:
    return [ipaddress.ip_interface(n).ip for n in (wep.get("spec") or {}).get("ipNetworks") or []]


def _get_endpoint(datastore, node: str, env: CNIEnv) -> dict[str, Any] | None:
    from calico_net.datastore.errors import ResourceNotFound

    try:
        return datastore.get("WorkloadEndpoint", wep_name(node, env), env.namespace)
    except ResourceNotFound:
        return None


def _delete_endpoint(datastore, node: str, env: CNIEnv) -> bool:
    from calico_net.datastore.errors import ResourceNotFound

    try:
        datastore.delete("WorkloadEndpoint", wep_name(node, env), env.namespace)
        return True
    except ResourceNotFound:
        return False


def _problems(expected_ips: list, state: dict[str, Any], host_ifname: str, container_ifname: str) -> list[str]:
    """How the interfaces differ from what ADD makes (empty: all as it should be)."""
    out = []
    host, cont = state.get("host"), state.get("container")
    if host is None:
        out.append(f"host interface {host_ifname} is missing")
    else:
        if host["mac"] != dataplane.HOST_MAC:
            out.append(f"host interface {host_ifname} has MAC {host['mac']}, not {dataplane.HOST_MAC}")
        if not host["up"]:
            out.append(f"host interface {host_ifname} is down")
    if cont is None:
        out.append(f"container interface {container_ifname} is missing")
        return out
    if not cont["up"]:
        out.append(f"container interface {container_ifname} is down")
    have = {ipaddress.ip_interface(a) for a in cont["addresses"]}
    for a in expected_ips:
        want = ipaddress.ip_interface(f"{a}/{32 if a.version == 4 else 128}")
        if want not in have:
            out.append(f"{container_ifname} lacks address {want}")
    gws = {(r["dst"], r["gw"]) for r in cont["routes"]}
    if any(a.version == 4 for a in expected_ips) and ("0.0.0.0/0", dataplane.GATEWAY_V4) not in gws:
        out.append(f"no default route via {dataplane.GATEWAY_V4}")
    if any(a.version == 6 for a in expected_ips) and ("::/0", dataplane.GATEWAY_V6) not in gws:
        out.append(f"no IPv6 default route via {dataplane.GATEWAY_V6}")
    return out


# --- commands ---------------------------------------------------------------------------


def cmd_add(env: CNIEnv, conf: NetConf, stdin: bytes, client, datastore) -> dict[str, Any]:
    node = conf.node_name()
    host_if = host_veth_name(env)
    calico_ipam = conf.ipam.type == "calico-ipam"

    existing = _get_endpoint(datastore, node, env)
    if existing is not None:
        ips = _endpoint_ips(existing)
        state = dataplane.inspect(env.netns, host_if, env.ifname)
        spec = existing.get("spec") or {}
        if (spec.get("containerID") == env.container_id and spec.get("interfaceName") == host_if
                and not _problems(ips, state, host_if, env.ifname)):
            log.info("endpoint %s already attached: returning the existing result", existing["metadata"]["name"])
            return build_result(conf, env, ips, host_if, state["container"]["mac"])
        log.warning("endpoint %s exists but its interfaces do not match: attaching again",
                    existing["metadata"]["name"])
        dataplane.teardown(env.netns, host_if, env.ifname)
        _delete_endpoint(datastore, node, env)

    undo: list[tuple[str, Any]] = []
    try:
        if calico_ipam:
            # Registered before the assignment: one that committed but whose reply
            # was lost fails here, and its address is found and freed by handle.
            undo.append(("ipam", None))
            ips = ipam_add(conf, env, client, datastore)
        else:
            ipam_result = delegate(conf.ipam.type, "ADD", stdin, env) or {}
            undo.append(("delegate", None))
            ips = result_ips(ipam_result)
        if not ips:
            raise CNIError(INVALID_NETWORK_CONFIG, "IPAM returned no address")
        ensure_profile(conf, datastore)
        wiring = dataplane.setup(env.netns, host_if, env.ifname, ips, conf.effective_mtu())
        undo.append(("veth", None))
        wep = build_endpoint(conf, env, node, ips, wiring)
        # Registered before the write: a create that committed but whose reply was
        # lost (etcd cut off meanwhile) fails here, and must not leave an endpoint
        # behind for an address that the undo releases.
        undo.append(("endpoint", None))
        datastore.create(wep)
        log.info("attached %s: %s on %s, endpoint %s/%s", env.container_id, [str(a) for a in ips],
                 host_if, env.namespace, wep["metadata"]["name"])
        return build_result(conf, env, ips, host_if, wiring.container_mac)
    except BaseException:
        deadline = time.monotonic() + UNDO_RETRY_S
        for step, _ in reversed(undo):
            try:
                if step == "endpoint":
                    _retrying(step, deadline, lambda: _delete_endpoint(datastore, node, env))
                elif step == "veth":
                    dataplane.teardown(env.netns, host_if, env.ifname)
                elif step == "ipam":
                    _retrying(step, deadline, lambda: ipam_del(conf, env, client, datastore))
                elif step == "delegate":
                    delegate(conf.ipam.type, "DEL", stdin, env)
            except Exception:  # noqa: BLE001 - keep undoing, report the original error
                log.exception("undo of %s after a failed ADD failed%s", step,
                              "; the runtime's DEL of this container releases what is left"
                              if step in ("endpoint", "ipam") else "")
        raise


#: How long the undo of a failed ADD keeps retrying its datastore steps (removing
#: the endpoint, releasing the addresses) while etcd cannot be reached: an ADD that
#: failed because etcd went away mid-way frees its address as soon as etcd answers
#: again within this bound, without waiting for the runtime's DEL.
UNDO_RETRY_S = 30.0
UNDO_RETRY_PAUSE_S = 1.0


def _retrying(step: str, deadline: float, action) -> Any:
    """Run `action`, again after DatastoreUnavailable until `deadline` (monotonic)."""
    from calico_net.datastore.errors import DatastoreUnavailable

    while True:
        try:
            return action()
        except DatastoreUnavailable as e:
            if time.monotonic() + UNDO_RETRY_PAUSE_S >= deadline:
                raise
            log.warning("undo of %s after a failed ADD: %s; trying again", step, e)
            time.sleep(UNDO_RETRY_PAUSE_S)


def cmd_del(env: CNIEnv, conf: NetConf, stdin: bytes) -> None:
    node = conf.node_name()
    host_if = host_veth_name(env)
    dataplane.teardown(env.netns, host_if, env.ifname)
    client, datastore = connect(conf)
    try:
        existing = _get_endpoint(datastore, node, env)
        if existing is not None and (existing.get("spec") or {}).get("containerID") in (None, env.container_id):
            _delete_endpoint(datastore, node, env)
        if conf.ipam.type == "calico-ipam":
            ipam_del(conf, env, client, datastore)
        else:
            delegate(conf.ipam.type, "DEL", stdin, env)
    finally:
        client.close()
    log.info("detached %s (%s)", env.container_id, host_if)


def cmd_check(env: CNIEnv, conf: NetConf, stdin: bytes, client, datastore) -> None:
    node = conf.node_name()
    host_if = host_veth_name(env)
    problems: list[str] = []
    wep = _get_endpoint(datastore, node, env)
    if wep is None:
        raise CNIError(CHECK_FAILED, f"WorkloadEndpoint {env.namespace}/{wep_name(node, env)} does not exist")
    ips = _endpoint_ips(wep)
    spec = wep.get("spec") or {}
    if spec.get("interfaceName") != host_if:
        problems.append(f"endpoint names interface {spec.get('interfaceName')}, expected {host_if}")
    if spec.get("node") != node:
        problems.append(f"endpoint is on node {spec.get('node')}, not {node}")
    if conf.prev_result:
        prev = set(result_ips(conf.prev_result))
        if prev != set(ips):
            problems.append(f"endpoint addresses {sorted(map(str, ips))} differ from prevResult {sorted(map(str, prev))}")
    problems += _problems(ips, dataplane.inspect(env.netns, host_if, env.ifname), host_if, env.ifname)
    if problems:
        raise CNIError(CHECK_FAILED, "CHECK failed: " + problems[0], "; ".join(problems))
    if conf.ipam.type == "calico-ipam":
        ipam_check(conf, env, client, datastore, ips)
    else:
        delegate(conf.ipam.type, "CHECK", stdin, env)


def _command(env: CNIEnv, conf: NetConf | None, stdin: bytes) -> dict[str, Any] | None:
    assert conf is not None
    if conf.type not in ("calico", "calico-net"):
        log.warning('network config type is "%s"; running as calico', conf.type)
    if env.command == "DEL":
        cmd_del(env, conf, stdin)
        return None
    client, datastore = connect(conf)
    try:
        if env.command == "ADD":
            return cmd_add(env, conf, stdin, client, datastore)
        cmd_check(env, conf, stdin, client, datastore)
        return None
    finally:
        client.close()


def main(argv: Sequence[str] | None = None) -> int:
    parse_human_args(
        "calico",
        "calico.net's CNI plugin: attaches a workload (veth, addresses, routes,\n"
        "WorkloadEndpoint in etcd).",
        argv, labels=True)
    return run_plugin(_command, "calico")


if __name__ == "__main__":
    sys.exit(main())
