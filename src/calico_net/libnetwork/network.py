"""`calico`: Docker's network driver — a Profile per network, a veth and a
WorkloadEndpoint per container; the agent does the routes, proxy ARP and policy
from the WorkloadEndpoint exactly as for a CNI workload.

* CreateNetwork checks that calico-ipam made the network (its dummy gateway
  `0.0.0.0/0`), refuses driver options Calico does not support, and creates the
  network's Profile `libnetwork-<network id[:12]>`: it allows ingress from
  endpoints carrying the profile's label (applied through `labelsToApply`) and all
  egress, so containers of one network talk to each other and nothing else gets in
  until policy says so — as the CNI plugin's network profile. DeleteNetwork removes
  it.
* CreateEndpoint makes the veth pair in the host namespace: `cali<endpoint id[:11]>`
  (MAC ee:ee:ee:ee:ee:ee, up) and `tmp<endpoint id[:11]>`, which Docker moves into
  the container at Join and renames `<prefix>N` (prefix `cali`, as Calico, or
  CALICO_LIBNETWORK_IFPREFIX). Then the WorkloadEndpoint
  `<node>-libnetwork-libnetwork-<endpoint id>` in namespace `libnetwork`
  (orchestrator and workload `libnetwork`, libcalico-go's name). Any failure removes
  what the call made, so Docker never has half an endpoint.
* Join answers with the interface to move, gateway 169.254.1.1 and its connected
  /32 route (IPv6: fe80::ecee:eeff:feee:eeee), as Calico's CNI wiring has it.
* Leave removes the veth; DeleteEndpoint removes the WorkloadEndpoint (and a veth
  a failed Join left). Both succeed when there is nothing left to remove.
* The container's labels: Docker never names the container to a network driver, so
  a background thread asks the Docker API (network inspect -> container id ->
  container inspect) once the container has joined and writes its labels and
  `containerID` into the WorkloadEndpoint. Labels `org.projectcalico.label.<key>`
  become `<key>` (Calico's convention) and win over a plain label of the same key;
  other labels are taken as they are; one that is not a valid Calico label is
  logged and skipped. At start the plugin labels again the endpoints of this node
  that have no `containerID` yet (a restart while a thread was waiting).
"""
from __future__ import annotations

import ipaddress
import logging
import re
import threading
import time
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from calico_net.cni import dataplane
from calico_net.libnetwork.server import PluginError

log = logging.getLogger(__name__)

API_VERSION = "projectcalico.org/v3"
ORCHESTRATOR = "libnetwork"
NAMESPACE = "libnetwork"
LABEL_PREFIX = "org.projectcalico.label."
NAMESPACE_LABEL = "projectcalico.org/namespace"
ORCHESTRATOR_LABEL = "projectcalico.org/orchestrator"
NETWORK_ID_ANNOTATION = LABEL_PREFIX + "network.ID"
DUMMY_GATEWAY = {"0.0.0.0/0", "::/0"}
KNOWN_OPTIONS = {"com.docker.network.enable_ipv6"}
ROUTE_CONNECTED = 1
_ID_RE = re.compile(r"[0-9a-f]{12,64}\Z")
_MAC_RE = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}\Z")


def check_id(value: Any, what: str) -> str:
    """Docker's ids are hex; they become interface, key and resource names."""
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise PluginError(f"{what} {str(value)[:80]!r} is not a Docker id")
    return value


def profile_name(network_id: str) -> str:
    return "libnetwork-" + network_id[:12]


def wep_name(node: str, endpoint_id: str) -> str:
    """libcalico-go's CalculateWorkloadEndpointName for node/orchestrator/workload/endpoint."""
    return "-".join(p.replace("-", "--") for p in (node, ORCHESTRATOR, ORCHESTRATOR, endpoint_id))


def host_ifname(endpoint_id: str) -> str:
    return "cali" + endpoint_id[:11]


def temp_ifname(endpoint_id: str) -> str:
    return "tmp" + endpoint_id[:11]


def _option_problem(options: dict[str, Any]) -> str | None:
    """Calico's refusal of `docker network create` flags it does not support."""
    for key in sorted(options):
        if key in KNOWN_OPTIONS:
            continue
        value = options[key]
        if isinstance(value, bool):
            if value:
                return f"Calico driver does not support the flag --{key.removeprefix('com.docker.network.')}."
        elif isinstance(value, dict):
            if value:
                flags = ", ".join(sorted(value))
                return f"Calico driver does not support the flag{'s' if len(value) > 1 else ''} {flags}."
        else:
            return f"Calico driver does not support the flag {key} ({value})."
    return None


def make_pair(endpoint_id: str, mtu: int, mac: str | None) -> str:
    """The veth pair, both ends in this namespace; the container-side MAC."""
    host, tmp = host_ifname(endpoint_id), temp_ifname(endpoint_id)
    with IPRoute() as ipr:
        for name in (host, tmp):
            if ipr.link_lookup(ifname=name):
                log.warning("removing stale interface %s", name)
                ipr.link("del", ifname=name)
        try:
            ipr.link("add", ifname=host, kind="veth", peer={"ifname": tmp, "mtu": mtu}, mtu=mtu)
            host_idx = ipr.link_lookup(ifname=host)[0]
            ipr.link("set", index=host_idx, address=dataplane.HOST_MAC)
            tmp_idx = ipr.link_lookup(ifname=tmp)[0]
            if mac:
                ipr.link("set", index=tmp_idx, address=mac)
            ipr.link("set", index=host_idx, state="up")
            return ipr.get_links(tmp_idx)[0].get_attr("IFLA_ADDRESS")
        except (NetlinkError, IndexError, ValueError) as e:
            remove_pair(endpoint_id)
            raise PluginError(f"could not create veth {host}: {e}") from None


def remove_pair(endpoint_id: str) -> bool:
    return dataplane.teardown("", host_ifname(endpoint_id), "")


def pair_exists(endpoint_id: str) -> bool:
    with IPRoute() as ipr:
        return bool(ipr.link_lookup(ifname=temp_ifname(endpoint_id)))


class NetworkDriver:
    def __init__(self, ctx) -> None:
        self.ctx = ctx   # main.Context

    def routes(self) -> dict[str, Any]:
        empty = lambda req: {}  # noqa: E731
        return {
            # local: Docker keeps the network in its own store; the state Calico needs
            # is in etcd either way.
            "NetworkDriver.GetCapabilities": lambda req: {"Scope": "local", "ConnectivityScope": "global"},
            "NetworkDriver.CreateNetwork": self.create_network,
            "NetworkDriver.DeleteNetwork": self.delete_network,
            "NetworkDriver.CreateEndpoint": self.create_endpoint,
            "NetworkDriver.DeleteEndpoint": self.delete_endpoint,
            "NetworkDriver.EndpointOperInfo": lambda req: {"Value": {}},
            "NetworkDriver.Join": self.join,
            "NetworkDriver.Leave": self.leave,
            "NetworkDriver.DiscoverNew": empty,
            "NetworkDriver.DiscoverDelete": empty,
            "NetworkDriver.ProgramExternalConnectivity": empty,
            "NetworkDriver.RevokeExternalConnectivity": empty,
            "NetworkDriver.AllocateNetwork": lambda req: {"Options": {}},
            "NetworkDriver.FreeNetwork": empty,
        }

    # --- networks -----------------------------------------------------------------
    def create_network(self, req: dict[str, Any]) -> dict[str, Any]:
        from calico_net.datastore.errors import ResourceAlreadyExists

        network_id = check_id(req.get("NetworkID"), "NetworkID")
        options = req.get("Options") or {}
        problem = _option_problem(options) if isinstance(options, dict) else "Options must be a mapping"
        if problem:
            raise PluginError(problem)
        for data in (req.get("IPv4Data") or []) + (req.get("IPv6Data") or []):
            if not isinstance(data, dict) or data.get("Gateway") not in DUMMY_GATEWAY:
                raise PluginError("Non-Calico IPAM driver is used: create the network with --ipam-driver "
                                  "calico-ipam (Calico's driver needs Calico's IPAM)")
        try:
            self.ctx.datastore.create(self._profile(network_id))
            log.info("network %s: created profile %s", network_id, profile_name(network_id))
        except ResourceAlreadyExists:
            pass
        return {}

    def _profile(self, network_id: str) -> dict[str, Any]:
        name = profile_name(network_id)
        return {
            "apiVersion": API_VERSION, "kind": "Profile",
            "metadata": {"name": name, "annotations": {NETWORK_ID_ANNOTATION: network_id}},
            "spec": {
                "ingress": [{"action": "Allow", "source": {"selector": f"has({name})"}}],
                "egress": [{"action": "Allow"}],
                "labelsToApply": {name: ""},
            },
        }

    def ensure_profile(self, network_id: str) -> None:
        from calico_net.datastore.errors import ResourceAlreadyExists, ResourceNotFound

        try:
            self.ctx.datastore.get("Profile", profile_name(network_id))
        except ResourceNotFound:
            try:
                self.ctx.datastore.create(self._profile(network_id))
            except ResourceAlreadyExists:
                pass

    def delete_network(self, req: dict[str, Any]) -> dict[str, Any]:
        from calico_net.datastore.errors import ResourceNotFound

        network_id = check_id(req.get("NetworkID"), "NetworkID")
        try:
            self.ctx.datastore.delete("Profile", profile_name(network_id))
            log.info("network %s: deleted profile %s", network_id, profile_name(network_id))
        except ResourceNotFound:
            pass
        return {}

    # --- endpoints ----------------------------------------------------------------
    def _endpoint(self, network_id: str, endpoint_id: str, ips: list, mac: str) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION, "kind": "WorkloadEndpoint",
            "metadata": {"name": wep_name(self.ctx.node, endpoint_id), "namespace": NAMESPACE,
                         "labels": {NAMESPACE_LABEL: NAMESPACE, ORCHESTRATOR_LABEL: ORCHESTRATOR},
                         "annotations": {NETWORK_ID_ANNOTATION: network_id}},
            "spec": {
                "node": self.ctx.node, "orchestrator": ORCHESTRATOR, "workload": ORCHESTRATOR,
                "endpoint": endpoint_id, "interfaceName": host_ifname(endpoint_id), "mac": mac,
                "ipNetworks": [f"{a}/{32 if a.version == 4 else 128}" for a in ips],
                "profiles": [profile_name(network_id)],
            },
        }

    def create_endpoint(self, req: dict[str, Any]) -> dict[str, Any]:
        from calico_net.datastore.errors import ResourceNotFound

        network_id = check_id(req.get("NetworkID"), "NetworkID")
        endpoint_id = check_id(req.get("EndpointID"), "EndpointID")
        iface = req.get("Interface") or {}
        if not isinstance(iface, dict):
            raise PluginError("Interface must be a mapping")
        ips = []
        for key in ("Address", "AddressIPv6"):
            text = iface.get(key) or ""
            if text:
                try:
                    ips.append(ipaddress.ip_interface(text).ip)
                except ValueError:
                    raise PluginError(f"Interface {key} {str(text)[:80]!r} is not an address") from None
        if not ips:
            raise PluginError("No address assigned for endpoint")
        mac_wanted = iface.get("MacAddress") or None
        if mac_wanted is not None and not _MAC_RE.match(str(mac_wanted)):
            raise PluginError(f"MacAddress {str(mac_wanted)[:40]!r} is not a MAC address")
        name = wep_name(self.ctx.node, endpoint_id)
        # Read first: with etcd away this fails before anything is made.
        try:
            self.ctx.datastore.get("WorkloadEndpoint", name, NAMESPACE)
            log.warning("endpoint %s exists already: replacing it", name)
            self.ctx.datastore.delete("WorkloadEndpoint", name, NAMESPACE)
        except ResourceNotFound:
            pass
        self.ensure_profile(network_id)
        mac = make_pair(endpoint_id, self.ctx.mtu(), mac_wanted)
        try:
            self.ctx.datastore.create(self._endpoint(network_id, endpoint_id, ips, mac))
        except BaseException:
            remove_pair(endpoint_id)
            raise
        log.info("endpoint %s: %s on %s", name, [str(a) for a in ips], host_ifname(endpoint_id))
        self.ctx.label_later(network_id, endpoint_id)
        return {"Interface": {} if mac_wanted else {"MacAddress": mac}}

    def delete_endpoint(self, req: dict[str, Any]) -> dict[str, Any]:
        from calico_net.datastore.errors import ResourceNotFound

        endpoint_id = check_id(req.get("EndpointID"), "EndpointID")
        remove_pair(endpoint_id)
        try:
            self.ctx.datastore.delete("WorkloadEndpoint", wep_name(self.ctx.node, endpoint_id), NAMESPACE)
        except ResourceNotFound:
            pass
        log.info("endpoint %s deleted", endpoint_id)
        return {}

    def join(self, req: dict[str, Any]) -> dict[str, Any]:
        from calico_net.datastore.errors import ResourceNotFound

        endpoint_id = check_id(req.get("EndpointID"), "EndpointID")
        check_id(req.get("NetworkID"), "NetworkID")
        try:
            wep = self.ctx.datastore.get("WorkloadEndpoint", wep_name(self.ctx.node, endpoint_id), NAMESPACE)
        except ResourceNotFound:
            raise PluginError(f"endpoint {endpoint_id} was never created") from None
        spec = wep.get("spec") or {}
        if not pair_exists(endpoint_id):
            # a Join after a Leave (which removes the pair): make it again, same MAC
            # (when the stored one is a MAC at all; else the kernel picks one)
            mac = spec.get("mac")
            make_pair(endpoint_id, self.ctx.mtu(), mac if isinstance(mac, str) and _MAC_RE.match(mac) else None)
        nets = [ipaddress.ip_interface(n) for n in spec.get("ipNetworks") or []]
        resp: dict[str, Any] = {
            "InterfaceName": {"SrcName": temp_ifname(endpoint_id), "DstPrefix": self.ctx.if_prefix},
            "StaticRoutes": [],
            "DisableGatewayService": False,
        }
        if any(n.version == 4 for n in nets):
            resp["Gateway"] = dataplane.GATEWAY_V4
            resp["StaticRoutes"].append({"Destination": dataplane.GATEWAY_V4 + "/32",
                                         "RouteType": ROUTE_CONNECTED, "NextHop": ""})
        if any(n.version == 6 for n in nets):
            resp["GatewayIPv6"] = dataplane.GATEWAY_V6
            resp["StaticRoutes"].append({"Destination": dataplane.GATEWAY_V6 + "/128",
                                         "RouteType": ROUTE_CONNECTED, "NextHop": ""})
        return resp

    def leave(self, req: dict[str, Any]) -> dict[str, Any]:
        endpoint_id = check_id(req.get("EndpointID"), "EndpointID")
        remove_pair(endpoint_id)
        return {}


# --- labels from the Docker API -------------------------------------------------------


def container_labels(labels: Any) -> dict[str, str]:
    """The WorkloadEndpoint labels for a container's Docker labels (see the module doc)."""
    from calico_net.model.fields.text import label_key_problem, label_value_ok

    out: dict[str, str] = {}
    if not isinstance(labels, dict):
        return out
    prefixed = {}
    for key, value in labels.items():
        if not isinstance(key, str) or not isinstance(value, str):
            continue
        if key.startswith(LABEL_PREFIX):
            prefixed[key[len(LABEL_PREFIX):]] = value
        else:
            out[key] = value
    out.update(prefixed)
    good = {}
    for key, value in out.items():
        problem = label_key_problem(key)
        if problem or not label_value_ok(value) or key in (NAMESPACE_LABEL, ORCHESTRATOR_LABEL):
            log.warning("container label %r=%r is not a usable Calico label: skipped", key[:80], value[:80])
            continue
        good[key] = value
    return good


class Labeller:
    """Writes a container's labels into its WorkloadEndpoint once Docker can say
    which container it is (Calico's populateWorkloadEndpointWithLabels)."""

    def __init__(self, ctx, docker, timeout: float, interval: float = 0.05) -> None:
        self.ctx, self.docker, self.timeout, self.interval = ctx, docker, timeout, interval

    def start(self, network_id: str, endpoint_id: str) -> threading.Thread:
        t = threading.Thread(target=self.run, args=(network_id, endpoint_id), daemon=True,
                             name=f"labels-{endpoint_id[:12]}")
        t.start()
        return t

    def _container_id(self, network_id: str, endpoint_id: str) -> str | None:
        from calico_net.libnetwork.dockerapi import DockerAPIError

        try:
            net = self.docker.network(network_id)
        except DockerAPIError as e:
            log.debug("network inspect: %s", e)
            return None
        for cid, info in (net.get("Containers") or {}).items():
            if isinstance(info, dict) and info.get("EndpointID") == endpoint_id and not cid.startswith("ep-"):
                return cid
        return None

    def run(self, network_id: str, endpoint_id: str) -> bool:
        from calico_net.datastore.errors import DatastoreError, ResourceConflict, ResourceNotFound
        from calico_net.libnetwork.dockerapi import DockerAPIError

        deadline = time.monotonic() + self.timeout
        cid = None
        while cid is None:
            cid = self._container_id(network_id, endpoint_id)
            if cid is None:
                if time.monotonic() > deadline:
                    log.warning("endpoint %s: Docker named no container for it in %.1fs; no labels",
                                endpoint_id, self.timeout)
                    return False
                time.sleep(self.interval)
        try:
            info = self.docker.container(cid)
        except DockerAPIError as e:
            log.warning("endpoint %s: container %s: %s; no labels", endpoint_id, cid, e)
            return False
        labels = container_labels((info.get("Config") or {}).get("Labels"))
        name = wep_name(self.ctx.node, endpoint_id)
        while time.monotonic() <= deadline + 5:
            try:
                with self.ctx.lock:
                    wep = self.ctx.datastore.get("WorkloadEndpoint", name, NAMESPACE)
                    if (wep.get("spec") or {}).get("endpoint") != endpoint_id:
                        return False
                    wep["metadata"].setdefault("labels", {}).update(labels)
                    wep["spec"]["containerID"] = cid
                    self.ctx.datastore.replace(wep)
                log.info("endpoint %s: container %s, labels %s", endpoint_id, cid[:12], sorted(labels))
                return True
            except ResourceNotFound:
                return False  # deleted meanwhile
            except (ResourceConflict, DatastoreError) as e:
                log.warning("endpoint %s: labels not written yet: %s", endpoint_id, e)
                time.sleep(0.2)
        return False

    def resume(self) -> int:
        """Label the endpoints of this node a previous run left without a container."""
        weps, _ = self.ctx.datastore.list("WorkloadEndpoint", NAMESPACE)
        n = 0
        for wep in weps:
            spec, meta = wep.get("spec"), wep.get("metadata")
            if not isinstance(spec, dict) or not isinstance(meta, dict):
                continue   # not one of ours (ours always have both); the agent reports it
            notes = meta.get("annotations")
            nid = notes.get(NETWORK_ID_ANNOTATION) if isinstance(notes, dict) else None
            if spec.get("node") != self.ctx.node or spec.get("containerID") or not nid:
                continue
            try:
                self.start(check_id(nid, "network id"), check_id(spec.get("endpoint"), "endpoint id"))
                n += 1
            except PluginError as e:
                log.warning("endpoint %s: %s", meta.get("name"), e)
        return n
