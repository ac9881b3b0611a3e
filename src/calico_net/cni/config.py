"""What a CNI invocation asks for: the network config on stdin and the CNI_* environment.

Network config keys are Calico's (`type: calico`, `etcd_endpoints`,
`etcd_ca_cert_file`, `etcd_cert_file`, `etcd_key_file`, `nodename`,
`nodename_file`, `log_level`, `log_file_path`, `mtu`, `policy: {type}`,
`ipam: {type: calico-ipam, assign_ipv4, assign_ipv6, ipv4_pools, ipv6_pools}`),
plus ours: `labels` (a map put on every endpoint of the network) and `profiles`
(the profiles endpoints get instead of the default, a profile named after the
network). CNI_ARGS may add labels as `LABEL_<key>=<value>` entries, a fixed address
as `IP=<addr>` (several comma-separated, as Calico's calico-ipam reads it), and
carries `K8S_POD_NAMESPACE` (the endpoint's namespace, default "default"),
`K8S_POD_NAME` (the workload name; podman sets it to the container name) and
`K8S_POD_SERVICE_ACCOUNT` (the workload's service account: Calico's CNI reads it from
the Kubernetes pod, which calico.net has not; podman's CNI backend passes the
`CNI_ARGS` of its own environment on to the plugin).

Derived names, all stable across ADD, CHECK and DEL of one attachment:

* handle id ``<network name>.<container id>`` (as Calico);
* WorkloadEndpoint ``<node>-cni-<container id>-<ifname>`` in the namespace, each
  part's "-" doubled, as libcalico-go's names package does;
* host-side interface ``cali`` + the first 11 hex digits of sha1("<namespace>.<container id>")
  (with ".<ifname>" appended when the interface is not eth0, so a container on two
  networks gets two distinct host interfaces).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
from dataclasses import dataclass, field
from typing import Any, Mapping

from calico_net.cni.errors import (
    DECODE_FAILURE,
    INCOMPATIBLE_VERSION,
    INVALID_ENVIRONMENT,
    INVALID_NETWORK_CONFIG,
    CNIError,
)

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0")
DEFAULT_NODENAME_FILE = "/var/lib/calico/nodename"
DEFAULT_MTU_FILE = "/var/lib/calico/mtu"
DEFAULT_MTU = 1500
DEFAULT_LOG_FILE = "/var/log/calico/cni/cni.log"
COMMANDS = ("ADD", "DEL", "CHECK", "VERSION")

#: libcni's rule for container ids and network names (pkg/utils: ValidateContainerID,
#: ValidateNetworkName); also a safe file name and etcd key component.
_ID_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]*", re.ASCII)
MAX_CONTAINER_ID = 256
#: A Kubernetes namespace name (DNS-1123 label), as Calico validates it.
_NAMESPACE_RE = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?", re.ASCII)
#: A service account name (DNS-1123 subdomain, at most 253 characters).
_SUBDOMAIN_RE = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*",
                           re.ASCII)


def check_container_id(value: str) -> str:
    if not _ID_RE.fullmatch(value) or len(value) > MAX_CONTAINER_ID:
        raise CNIError(INVALID_ENVIRONMENT, f"CNI_CONTAINERID {value!r:.80} is not a valid container id",
                       "expected [a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 256 characters")
    return value


def check_network_name(value: str) -> str:
    if not _ID_RE.fullmatch(value) or len(value) > 253:
        raise CNIError(INVALID_NETWORK_CONFIG, f"network name {value!r:.80} is not valid",
                       "expected [a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 253 characters")
    return value


def check_plugin_name(value: str) -> str:
    """A plugin (e.g. IPAM type) looked up by name in CNI_PATH: one file name."""
    if not _ID_RE.fullmatch(value) or len(value) > 255:
        raise CNIError(INVALID_NETWORK_CONFIG, f"plugin type {value!r:.80} must be a plugin name, "
                       "not a path")
    return value


def interface_name_problem(value: str) -> str | None:
    """Linux's (and libcni's ValidateInterfaceName) rule for an interface name."""
    if not value:
        return "it is empty"
    if len(value.encode()) > 15:
        return "it is longer than 15 bytes"
    if value in (".", ".."):
        return 'it is "." or ".."'
    for ch in value:
        if ch in "/:" or ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F:
            return f"it contains {ch!r}"
    return None


def check_netns_path(value: str) -> str:
    """CNI_NETNS: an absolute path to a namespace file (/proc/<pid>/ns/net,
    /var/run/netns/<name>) in printable ASCII, without ".." components. Never a bare
    name: pyroute2 would read that as /var/run/netns/<name> and might create it."""
    bad = (not value.startswith("/") or any(not 0x20 <= ord(c) < 0x7F for c in value)
           or ".." in value.split("/") or len(value) > 4096)
    if bad:
        raise CNIError(INVALID_ENVIRONMENT, f"CNI_NETNS {value!r:.120} is not an absolute path "
                       "to a network namespace")
    return value


def _version_tuple(v: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in v.split("."))
    except ValueError:
        return (99,)


def _truthy(value: Any, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise CNIError(INVALID_NETWORK_CONFIG, f'invalid boolean "{value}" in the network config')


@dataclass
class IPAMConf:
    type: str = "calico-ipam"
    assign_ipv4: bool = True
    assign_ipv6: bool = False
    ipv4_pools: list[str] = field(default_factory=list)
    ipv6_pools: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass
class NetConf:
    """The network configuration (one plugin's entry of a conflist, as libcni passes it)."""

    name: str
    cni_version: str
    type: str
    raw: dict[str, Any]
    ipam: IPAMConf
    etcd_endpoints: str | None = None
    etcd_ca_cert_file: str | None = None
    etcd_cert_file: str | None = None
    etcd_key_file: str | None = None
    nodename: str | None = None
    nodename_file: str = DEFAULT_NODENAME_FILE
    log_level: str = "info"
    log_file_path: str | None = DEFAULT_LOG_FILE
    mtu: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    profiles: list[str] | None = None
    policy_type: str = ""
    dns: dict[str, Any] = field(default_factory=dict)
    prev_result: dict[str, Any] | None = None

    @classmethod
    def parse(cls, data: bytes | str) -> "NetConf":
        try:
            doc = json.loads(data or b"")
        except ValueError as e:
            raise CNIError(DECODE_FAILURE, "the network config on stdin is not valid JSON", str(e)) from None
        if not isinstance(doc, dict):
            raise CNIError(DECODE_FAILURE, "the network config on stdin must be a JSON object")
        version = str(doc.get("cniVersion") or "0.3.1")
        if version not in SUPPORTED_VERSIONS:
            raise CNIError(INCOMPATIBLE_VERSION, f"CNI version {version} is not supported",
                           f"supported versions: {', '.join(SUPPORTED_VERSIONS)}")
        name = doc.get("name")
        if not isinstance(name, str) or not name.strip():
            raise CNIError(INVALID_NETWORK_CONFIG, 'the network config has no "name"')
        check_network_name(name.strip())
        ipam_doc = doc.get("ipam") or {}
        if not isinstance(ipam_doc, dict):
            raise CNIError(INVALID_NETWORK_CONFIG, '"ipam" must be an object')
        ipam = IPAMConf(
            type=check_plugin_name(str(ipam_doc.get("type") or "calico-ipam")),
            assign_ipv4=_truthy(ipam_doc.get("assign_ipv4"), True),
            assign_ipv6=_truthy(ipam_doc.get("assign_ipv6"), False),
            ipv4_pools=_str_list(ipam_doc.get("ipv4_pools"), "ipam.ipv4_pools"),
            ipv6_pools=_str_list(ipam_doc.get("ipv6_pools"), "ipam.ipv6_pools"),
            raw=ipam_doc,
        )
        if ipam.type == "calico-ipam" and not (ipam.assign_ipv4 or ipam.assign_ipv6):
            raise CNIError(INVALID_NETWORK_CONFIG, "ipam: assign_ipv4 and assign_ipv6 are both false")
        labels = doc.get("labels") or {}
        if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
            raise CNIError(INVALID_NETWORK_CONFIG, '"labels" must be a map of strings')
        profiles = doc.get("profiles")
        if profiles is not None:
            profiles = _str_list(profiles, "profiles")
        mtu = doc.get("mtu") or 0
        try:
            mtu = int(mtu)
        except (TypeError, ValueError):
            raise CNIError(INVALID_NETWORK_CONFIG, f'"mtu" must be a number, not "{mtu}"') from None
        if mtu and not 576 <= mtu <= 65535:
            raise CNIError(INVALID_NETWORK_CONFIG, f'"mtu" {mtu} is out of range (576-65535)')
        prev = doc.get("prevResult")
        return cls(
            name=name.strip(),
            cni_version=version,
            type=str(doc.get("type") or "calico"),
            raw=doc,
            ipam=ipam,
            etcd_endpoints=doc.get("etcd_endpoints") or None,
            etcd_ca_cert_file=doc.get("etcd_ca_cert_file") or None,
            etcd_cert_file=doc.get("etcd_cert_file") or None,
            etcd_key_file=doc.get("etcd_key_file") or None,
            nodename=doc.get("nodename") or None,
            nodename_file=doc.get("nodename_file") or DEFAULT_NODENAME_FILE,
            log_level=str(doc.get("log_level") or "info"),
            log_file_path=doc.get("log_file_path", DEFAULT_LOG_FILE) or None,
            mtu=mtu,
            labels=dict(labels),
            profiles=profiles,
            policy_type=str((doc.get("policy") or {}).get("type") or ""),
            dns=dict(doc.get("dns") or {}),
            prev_result=prev if isinstance(prev, dict) else None,
        )

    def node_name(self) -> str:
        """Calico's order: `nodename` in the config, the nodename file the agent
        writes, then the host name. The name becomes etcd key and file name
        components, so "/", "..", NUL, newline and the like are refused."""
        return self._checked_node_name(self._node_name())

    def _node_name(self) -> str:
        if self.nodename:
            return str(self.nodename)
        try:
            with open(self.nodename_file, encoding="utf-8") as f:
                text = f.read().strip()
            if text:
                return text
        except (OSError, UnicodeDecodeError):
            pass
        return socket.gethostname().split(".")[0].lower()

    @staticmethod
    def _checked_node_name(name: str) -> str:
        from calico_net.ipam.keys import check_node_name

        try:
            return check_node_name(name)
        except ValueError as e:
            raise CNIError(INVALID_NETWORK_CONFIG, f"invalid node name: {e}") from None

    def effective_mtu(self) -> int:
        """The config's "mtu"; without one, what the agent wrote to its MTU file (the
        underlay's MTU less the encapsulation's overhead), else 1500. A file value
        out of range is not taken."""
        if self.mtu:
            return self.mtu
        try:
            with open(DEFAULT_MTU_FILE, encoding="utf-8") as f:
                mtu = int(f.read(32).strip())
        except (OSError, ValueError):
            return DEFAULT_MTU
        return mtu if 576 <= mtu <= 65535 else DEFAULT_MTU


def _str_list(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise CNIError(INVALID_NETWORK_CONFIG, f'"{what}" must be a list of strings')


@dataclass
class CNIEnv:
    command: str
    container_id: str
    netns: str
    ifname: str
    args: dict[str, str]
    path: list[str]

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> "CNIEnv":
        env = os.environ if environ is None else environ
        command = env.get("CNI_COMMAND", "")
        if command not in COMMANDS:
            raise CNIError(INVALID_ENVIRONMENT, f'CNI_COMMAND "{command}" is not one of {", ".join(COMMANDS)}')
        out = cls(
            command=command,
            container_id=env.get("CNI_CONTAINERID", ""),
            netns=env.get("CNI_NETNS", ""),
            ifname=env.get("CNI_IFNAME", ""),
            args=parse_cni_args(env.get("CNI_ARGS", "")),
            path=[p for p in env.get("CNI_PATH", "").split(os.pathsep) if p],
        )
        if command == "VERSION":
            return out
        missing = [n for n, v in (("CNI_CONTAINERID", out.container_id), ("CNI_IFNAME", out.ifname)) if not v]
        if command in ("ADD", "CHECK") and not out.netns:
            missing.append("CNI_NETNS")
        if missing:
            raise CNIError(INVALID_ENVIRONMENT, f"{command} needs {', '.join(missing)} in the environment")
        check_container_id(out.container_id)
        problem = interface_name_problem(out.ifname)
        if problem:
            raise CNIError(INVALID_ENVIRONMENT,
                           f"CNI_IFNAME {out.ifname!r:.40} is not a valid interface name: {problem}")
        if command != "DEL":
            check_netns_path(out.netns)
        else:
            try:
                check_netns_path(out.netns)
            except CNIError:
                out.netns = ""  # DEL needs no namespace: it removes the host end only
        ns = out.args.get("K8S_POD_NAMESPACE")
        if ns is not None and ns != "" and not _NAMESPACE_RE.fullmatch(ns):
            raise CNIError(INVALID_ENVIRONMENT, f"CNI_ARGS K8S_POD_NAMESPACE {ns!r:.80} is not a "
                           "namespace name ([a-z0-9]([-a-z0-9]*[a-z0-9])?, at most 63 characters)")
        sa = out.args.get("K8S_POD_SERVICE_ACCOUNT")
        if sa and (len(sa) > 253 or not _SUBDOMAIN_RE.fullmatch(sa)):
            raise CNIError(INVALID_ENVIRONMENT, f"CNI_ARGS K8S_POD_SERVICE_ACCOUNT {sa!r:.80} is not "
                           "a service account name (a DNS-1123 subdomain, at most 253 characters)")
        return out

    @property
    def namespace(self) -> str:
        return self.args.get("K8S_POD_NAMESPACE") or "default"

    @property
    def workload(self) -> str:
        return self.args.get("K8S_POD_NAME") or self.container_id

    @property
    def service_account(self) -> str | None:
        return self.args.get("K8S_POD_SERVICE_ACCOUNT") or None

    def arg_labels(self) -> dict[str, str]:
        return {k[len("LABEL_"):]: v for k, v in self.args.items() if k.startswith("LABEL_") and len(k) > 6}


def parse_cni_args(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep:
            raise CNIError(INVALID_ENVIRONMENT, f'CNI_ARGS entry "{part}" is not KEY=VALUE')
        out[key.strip()] = value.strip()
    return out


def handle_id(conf: NetConf, env: CNIEnv) -> str:
    return f"{conf.name}.{env.container_id}"


def _escape(part: str) -> str:
    return part.replace("-", "--")


def wep_name(node: str, env: CNIEnv) -> str:
    """libcalico-go's name for a CNI-orchestrated endpoint."""
    return "-".join(_escape(p) for p in (node, "cni", env.container_id, env.ifname))


def host_veth_name(env: CNIEnv) -> str:
    stable = f"{env.namespace}.{env.container_id}"
    if env.ifname != "eth0":
        stable += f".{env.ifname}"
    return "cali" + hashlib.sha1(stable.encode()).hexdigest()[:11]


def version_ok(version: str) -> bool:
    return _version_tuple(version) <= _version_tuple("1.0.0")
