"""Install the CNI plugins and the `calico` network for CNI runtimes (podman, containerd).

    python -m calico_net.cni.install --etcd-endpoints http://198.18.0.11:2379 \\
        [--bin-dir /usr/lib/cni] [--conf-dir /etc/cni/net.d] [--name calico] [--nodename N] \\
        [--mtu 1450] [--ipv6] [--pool NAME_OR_CIDR ...] [--etcd-ca-cert-file F --etcd-cert-file F --etcd-key-file F]

writes two things, idempotently (a file is rewritten only when its bytes change):

* `<bin-dir>/calico` and `<bin-dir>/calico-ipam`: tiny shell wrappers that `exec` this
  installation's entry points (the runtime finds plugins by name in its CNI plugin
  directories; Debian's podman looks in /usr/lib/cni among others);
* `<conf-dir>/<name>.conflist`: a CNI 1.0.0 network list with the `calico` plugin and
  `calico-ipam`, the network config keys Calico uses.

Podman 4 from Debian uses netavark unless told otherwise; CNI plugins only run with
the CNI backend: set `network_backend = "cni"` under `[network]` in
/etc/containers/containers.conf on hosts that attach containers with this plugin
(`--containers-conf` prints the lines; docs/ipam.md explains). Then
`podman run --network calico ...` attaches containers through the plugin.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Sequence

DEFAULT_BIN_DIR = "/usr/lib/cni"
DEFAULT_CONF_DIR = "/etc/cni/net.d"
PLUGINS = ("calico", "calico-ipam")


def render_conflist(
    etcd_endpoints: str,
    *,
    name: str = "calico",
    nodename: str | None = None,
    mtu: int | None = None,
    ipv4: bool = True,
    ipv6: bool = False,
    pools_v4: Sequence[str] = (),
    pools_v6: Sequence[str] = (),
    etcd_ca_cert_file: str | None = None,
    etcd_cert_file: str | None = None,
    etcd_key_file: str | None = None,
    log_level: str = "info",
    log_file_path: str = "/var/log/calico/cni/cni.log",
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    plugin: dict[str, Any] = {
        "type": "calico",
        "etcd_endpoints": etcd_endpoints,
        "log_level": log_level,
        "log_file_path": log_file_path,
        "ipam": {
            "type": "calico-ipam",
            "assign_ipv4": "true" if ipv4 else "false",
            "assign_ipv6": "true" if ipv6 else "false",
        },
    }
    if mtu:
        # pinned; without it the plugin takes the agent's MTU file (the underlay's MTU
        # less the encapsulation's overhead), so the conflist never goes stale
        plugin["mtu"] = mtu
    if pools_v4:
        plugin["ipam"]["ipv4_pools"] = list(pools_v4)
    if pools_v6:
        plugin["ipam"]["ipv6_pools"] = list(pools_v6)
    if nodename:
        plugin["nodename"] = nodename
    for key, value in (("etcd_ca_cert_file", etcd_ca_cert_file), ("etcd_cert_file", etcd_cert_file),
                       ("etcd_key_file", etcd_key_file)):
        if value:
            plugin[key] = value
    if labels:
        plugin["labels"] = dict(labels)
    return {"cniVersion": "1.0.0", "name": name, "plugins": [plugin]}


def wrapper_script(entry_point: str) -> str:
    return ("#!/bin/sh\n"
            "# calico.net CNI plugin: runs the Python entry point of this installation.\n"
            f"exec {shlex.quote(entry_point)} \"$@\"\n")


def _write_if_changed(path: Path, text: str, mode: int) -> bool:
    try:
        if path.read_text() == text and (path.stat().st_mode & 0o777) == mode:
            return False
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)  # runtimes never see a half-written file
    return True


def install_plugins(bin_dir: str | Path, entry_dir: str | Path | None = None) -> list[Path]:
    """Write the wrappers; returns the files that changed."""
    entry_dir = Path(entry_dir or Path(sys.executable).parent)
    changed = []
    for name in PLUGINS:
        target = entry_dir / name
        if not target.exists():
            raise FileNotFoundError(f"{target} does not exist: is calico-net installed in {entry_dir.parent}?")
        path = Path(bin_dir) / name
        if _write_if_changed(path, wrapper_script(str(target)), 0o755):
            changed.append(path)
    return changed


def install_conflist(conf_dir: str | Path, conflist: dict[str, Any]) -> tuple[Path, bool]:
    from calico_net.cni.config import check_network_name

    # The network name is the file name: one component, libcni's rule.
    path = Path(conf_dir) / f"{check_network_name(str(conflist['name']))}.conflist"
    return path, _write_if_changed(path, json.dumps(conflist, indent=2) + "\n", 0o644)


def containers_conf_lines(bin_dir: str) -> str:
    # json.dumps: a TOML basic string takes JSON's escapes, so a quote in the
    # directory name stays inside the string.
    dirs = [bin_dir, "/usr/local/libexec/cni", "/usr/libexec/cni", "/usr/local/lib/cni",
            "/usr/lib/cni", "/opt/cni/bin"]
    return ("[network]\n"
            'network_backend = "cni"\n'
            f"cni_plugin_dirs = [{', '.join(json.dumps(d) for d in dirs)}]\n")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m calico_net.cni.install", description=__doc__.split("\n")[0])
    ap.add_argument("--etcd-endpoints", default=os.environ.get("ETCD_ENDPOINTS", "http://127.0.0.1:2379"))
    ap.add_argument("--etcd-ca-cert-file", default=os.environ.get("ETCD_CA_CERT_FILE"))
    ap.add_argument("--etcd-cert-file", default=os.environ.get("ETCD_CERT_FILE"))
    ap.add_argument("--etcd-key-file", default=os.environ.get("ETCD_KEY_FILE"))
    ap.add_argument("--bin-dir", default=DEFAULT_BIN_DIR)
    ap.add_argument("--conf-dir", default=DEFAULT_CONF_DIR)
    ap.add_argument("--name", default="calico", help="network name (and default profile)")
    ap.add_argument("--nodename", default=None, help="default: /var/lib/calico/nodename, then the hostname")
    ap.add_argument("--mtu", type=int, default=None,
                    help="pin the workloads' MTU (576-65535); default: the agent's /var/lib/calico/mtu, "
                         "else 1500")
    ap.add_argument("--ipv6", action="store_true", help="also assign an IPv6 address")
    ap.add_argument("--pool", action="append", default=[], help="restrict IPv4 assignment to this pool")
    ap.add_argument("--containers-conf", action="store_true",
                    help="only print the containers.conf lines podman needs to use CNI")
    args = ap.parse_args(argv)
    from calico_net.cni.config import check_network_name
    from calico_net.cni.errors import CNIError

    try:
        check_network_name(args.name)
    except CNIError as e:
        ap.error(e.msg)
    if args.mtu is not None and not 576 <= args.mtu <= 65535:
        ap.error(f"--mtu {args.mtu} is out of range (576-65535)")
    if args.containers_conf:
        print(containers_conf_lines(args.bin_dir), end="")
        return 0
    for path in install_plugins(args.bin_dir):
        print(f"installed {path}")
    conflist = render_conflist(
        args.etcd_endpoints, name=args.name, nodename=args.nodename, mtu=args.mtu, ipv6=args.ipv6,
        pools_v4=args.pool, etcd_ca_cert_file=args.etcd_ca_cert_file, etcd_cert_file=args.etcd_cert_file,
        etcd_key_file=args.etcd_key_file,
    )
    path, changed = install_conflist(args.conf_dir, conflist)
    print(f"{'wrote' if changed else 'unchanged'} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
