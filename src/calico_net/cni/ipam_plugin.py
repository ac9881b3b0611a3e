"""`calico-ipam`: the CNI IPAM plugin on calico_net.ipam, and the pieces `calico` shares.

ADD assigns one IPv4 address (`assign_ipv4`, default "true") and/or one IPv6 address
(`assign_ipv6`, default "false") from the node's affine blocks to the handle
``<network name>.<container id>``, from `ipv4_pools`/`ipv6_pools` when given; an ADD
for a handle that already holds addresses returns those (a retried ADD never takes
a second address). `IP=<addr>[,<addr>]` in CNI_ARGS asks for specific addresses.
DEL releases by handle and succeeds when there is nothing to release. CHECK verifies
the handle still holds the addresses of prevResult.

IPAM operations on one host are serialised by an flock on /var/run/calico/ipam.lock,
as Calico's plugin does: concurrent ADDs then share the node's blocks instead of
racing to claim one block each.

The `calico` plugin calls `ipam_add`/`ipam_del`/`ipam_check` in-process when the
network's ipam type is calico-ipam (saving a second interpreter start), and execs any
other IPAM plugin (host-local, ...) from CNI_PATH as the spec describes.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import errno
import fcntl
import ipaddress
import json
import logging
import os
import subprocess
import sys
import time
from typing import Any, Callable, Iterator, Sequence

from calico_net.cni.config import SUPPORTED_VERSIONS, CNIEnv, NetConf, check_plugin_name, handle_id
from calico_net.cni.errors import (
    CHECK_FAILED,
    DATASTORE,
    INTERNAL,
    INVALID_NETWORK_CONFIG,
    IPAM_DELEGATE,
    NO_POOL,
    POOL_EXHAUSTED,
    TRY_AGAIN_LATER,
    CNIError,
)

log = logging.getLogger("calico_net.cni")

LOCK_FILE = "/var/run/calico/ipam.lock"
LOCK_TIMEOUT = 90.0
ADDRESS_IN_USE = 107

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


# --- plumbing shared with the calico plugin --------------------------------------------


def setup_logging(conf: NetConf | None) -> None:
    root = logging.getLogger("calico_net")
    root.handlers[:] = []
    level = getattr(logging, (conf.log_level if conf else "info").upper(), logging.INFO)
    root.setLevel(min(level, logging.WARNING))
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(logging.WARNING)
    err.setFormatter(logging.Formatter("%(levelname)s calico-cni: %(message)s"))
    root.addHandler(err)
    if conf and conf.log_file_path:
        try:
            os.makedirs(os.path.dirname(conf.log_file_path) or ".", exist_ok=True)
            fh = logging.FileHandler(conf.log_file_path)
        except OSError:
            return
        fh.setLevel(level)
        fh.setFormatter(logging.Formatter("%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"))
        root.addHandler(fh)


def connect(conf: NetConf, environ: dict[str, str] | None = None):
    """An etcd client and Datastore from the network config, then ETCD_* variables."""
    from calico_net.datastore import Datastore, DatastoreError, EtcdClient, EtcdConfig

    env = os.environ if environ is None else environ
    dstype = env.get("DATASTORE_TYPE") or conf.raw.get("datastore_type") or "etcdv3"
    if dstype != "etcdv3":
        raise CNIError(INVALID_NETWORK_CONFIG, f'datastore type "{dstype}" is not supported (only etcdv3)')
    endpoints = conf.etcd_endpoints or env.get("ETCD_ENDPOINTS") or "http://127.0.0.1:2379"
    cfg = EtcdConfig(
        endpoints=[e.strip() for e in endpoints.split(",") if e.strip()],
        ca_cert_file=conf.etcd_ca_cert_file or env.get("ETCD_CA_CERT_FILE") or None,
        cert_file=conf.etcd_cert_file or env.get("ETCD_CERT_FILE") or None,
        key_file=conf.etcd_key_file or env.get("ETCD_KEY_FILE") or None,
        timeout=5.0,
    )
    try:
        cfg.check()
    except DatastoreError as e:
        raise CNIError(INVALID_NETWORK_CONFIG, f"etcd settings: {e}") from None
    client = EtcdClient(cfg)
    return client, Datastore(client)


def to_cni_error(exc: BaseException) -> CNIError:
    """The CNI error for anything raised while handling a command."""
    from calico_net.datastore.errors import DatastoreError, DatastoreUnavailable
    from calico_net.errors import ValidationError
    from calico_net.ipam.errors import (
        AddressInUseError,
        IPAMConflictError,
        NoPoolsError,
        NotInPoolError,
        PoolExhaustedError,
    )

    if isinstance(exc, CNIError):
        return exc
    if isinstance(exc, NoPoolsError):
        return CNIError(NO_POOL, f"no IP pool to assign from: {exc}")
    if isinstance(exc, PoolExhaustedError):
        return CNIError(POOL_EXHAUSTED, f"IP pool exhausted: {exc}")
    if isinstance(exc, (AddressInUseError, NotInPoolError)):
        return CNIError(ADDRESS_IN_USE, str(exc))
    if isinstance(exc, IPAMConflictError):
        return CNIError(TRY_AGAIN_LATER, str(exc))
    if isinstance(exc, DatastoreUnavailable):
        return CNIError(TRY_AGAIN_LATER, "cannot reach etcd; try again later", str(exc))
    if isinstance(exc, DatastoreError):
        return CNIError(DATASTORE, f"etcd refused the request: {exc}")
    if isinstance(exc, ValidationError):
        return CNIError(INVALID_NETWORK_CONFIG, f"invalid resource: {exc}")
    return CNIError(INTERNAL, f"internal error: {type(exc).__name__}: {exc}")


CNI_ENVIRONMENT_HELP = """\
A CNI runtime runs this plugin with no arguments: the network config (JSON) on
stdin, the request in the environment, the result (JSON) on stdout.

environment:
  CNI_COMMAND       ADD, DEL, CHECK or VERSION (VERSION prints the CNI spec versions
                    this plugin supports, as JSON: the CNI protocol's version query)
  CNI_CONTAINERID   the container's id ([A-Za-z0-9][A-Za-z0-9_.-]*)
  CNI_NETNS         path of the container's network namespace (ADD, CHECK)
  CNI_IFNAME        interface name inside the container (eth0)
  CNI_ARGS          KEY=VALUE;... : K8S_POD_NAMESPACE, K8S_POD_NAME, IP=<addr>[,<addr>]{labels}
  CNI_PATH          directories to search for a delegated IPAM plugin
  ETCD_ENDPOINTS    etcd URLs when the network config has no etcd_endpoints
                    (default http://127.0.0.1:2379)
  ETCD_CA_CERT_FILE, ETCD_CERT_FILE, ETCD_KEY_FILE
                    etcd TLS files when the network config names none
  DATASTORE_TYPE    only etcdv3

`--help` and `--version` are for people and never touch the datastore or the
host; any other argument is a usage error (exit 2)."""


def parse_human_args(prog: str, description: str, argv: Sequence[str] | None,
                     labels: bool = False) -> None:
    """`--help`/`--version` for people (exit 0); any other argument: usage, exit 2.
    Without arguments this returns and the plugin speaks CNI."""
    from calico_net import __version__

    args = sys.argv[1:] if argv is None else list(argv)
    if not args:
        return
    parser = argparse.ArgumentParser(
        prog=prog, description=description,
        epilog=CNI_ENVIRONMENT_HELP.format(labels=", LABEL_<key>=<value>" if labels else ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=(
        f"{prog} (calico.net) {__version__}; CNI spec versions {', '.join(SUPPORTED_VERSIONS)}"))
    parser.parse_args(args)


def run_plugin(handler: Callable[[CNIEnv, NetConf | None, bytes], Any], what: str) -> int:
    """Read stdin and the environment, run the command, print the result or the error."""
    stdin = sys.stdin.buffer.read()
    conf: NetConf | None = None
    version = "1.0.0"
    try:
        env = CNIEnv.from_environ()
        if env.command == "VERSION":
            print(json.dumps({"cniVersion": "1.0.0", "supportedVersions": list(SUPPORTED_VERSIONS)}))
            return 0
        conf = NetConf.parse(stdin)
        version = conf.cni_version
        setup_logging(conf)
        log.info("%s %s container %s ifname %s netns %s", what, env.command, env.container_id, env.ifname, env.netns)
        result = handler(env, conf, stdin)
        if result is not None:
            print(json.dumps(result))
        return 0
    except BaseException as e:  # noqa: BLE001 - every failure becomes CNI error JSON
        if isinstance(e, CNIError):
            err = e
        else:
            err = to_cni_error(e)
            if err.code == INTERNAL:
                log.exception("%s failed", what)
        if isinstance(e, (CNIError,)) or err.code != INTERNAL:
            log.error("%s failed: %s %s", what, err.msg, err.details)
        print(err.dumps(version))
        return 1


@contextlib.contextmanager
def host_lock(path: str = LOCK_FILE, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Serialise IPAM on this host (Calico's /var/run/calico/ipam.lock)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() > deadline:
                    raise CNIError(TRY_AGAIN_LATER, f"timed out waiting for the IPAM lock {path}") from None
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def format_ips(ips: list[IPAddress], version: str, interface: int | None = None) -> list[dict[str, Any]]:
    out = []
    for a in ips:
        entry: dict[str, Any] = {"address": f"{a}/{32 if a.version == 4 else 128}"}
        if version != "1.0.0":
            entry["version"] = str(a.version)
        if interface is not None:
            entry["interface"] = interface
        out.append(entry)
    return out


def result_ips(result: dict[str, Any]) -> list[IPAddress]:
    return [ipaddress.ip_interface(e["address"]).ip for e in result.get("ips") or []]


# --- calico-ipam ------------------------------------------------------------------------


def _attrs(conf: NetConf, env: CNIEnv, node: str) -> dict[str, str]:
    attrs = {"node": node, "timestamp": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")}
    if "K8S_POD_NAMESPACE" in env.args:
        attrs["namespace"] = env.args["K8S_POD_NAMESPACE"]
    if "K8S_POD_NAME" in env.args:
        attrs["pod"] = env.args["K8S_POD_NAME"]
    return attrs


def ipam_add(conf: NetConf, env: CNIEnv, client, datastore) -> list[IPAddress]:
    from calico_net.ipam import IPAM

    node = conf.node_name()
    hid = handle_id(conf, env)
    # Beside the host lock, IPAM's own per-node lock file hands each ADD the block the
    # previous one wrote, so its compare-and-swap normally needs no re-read first.
    ipam = IPAM(client, datastore, host_lock_dir=os.path.dirname(LOCK_FILE))
    with host_lock():
        existing = ipam.ips_by_handle(hid)
        if existing:
            log.info("handle %s already holds %s: returning them", hid, [str(a) for a in existing])
            return sorted(existing, key=lambda a: (a.version, int(a)))
        wanted = [w for w in env.args.get("IP", "").split(",") if w.strip()]
        if wanted:
            got: list[IPAddress] = []
            try:
                for w in wanted:
                    try:
                        addr = ipaddress.ip_address(w.strip())
                    except ValueError:
                        raise CNIError(INVALID_NETWORK_CONFIG, f'CNI_ARGS IP "{w}" is not an address') from None
                    got.append(ipam.assign_ip(addr, hid, node, _attrs(conf, env, node)))
            except BaseException:
                if got:
                    ipam.release_ips(got)
                raise
            return got
        v4, v6 = ipam.auto_assign(
            hid, node,
            num_v4=1 if conf.ipam.assign_ipv4 else 0,
            num_v6=1 if conf.ipam.assign_ipv6 else 0,
            pools_v4=conf.ipam.ipv4_pools or None,
            pools_v6=conf.ipam.ipv6_pools or None,
            attrs=_attrs(conf, env, node),
        )
    log.info("assigned %s to handle %s on node %s", [str(a) for a in v4 + v6], hid, node)
    return v4 + v6


def ipam_del(conf: NetConf, env: CNIEnv, client, datastore) -> list[IPAddress]:
    from calico_net.ipam import IPAM

    hid = handle_id(conf, env)
    with host_lock():
        released = IPAM(client, datastore).release_by_handle(hid)
    log.info("released %s of handle %s", [str(a) for a in released], hid)
    return released


def ipam_check(conf: NetConf, env: CNIEnv, client, datastore, expected: list[IPAddress]) -> None:
    from calico_net.ipam import IPAM

    hid = handle_id(conf, env)
    held = set(IPAM(client, datastore).ips_by_handle(hid))
    missing = [str(a) for a in expected if a not in held]
    if missing or not held:
        raise CNIError(CHECK_FAILED, f"IPAM handle {hid} does not hold {', '.join(missing) or 'any address'}")


def _ipam_command(env: CNIEnv, conf: NetConf | None, stdin: bytes) -> dict[str, Any] | None:
    assert conf is not None
    client, datastore = connect(conf)
    try:
        if env.command == "ADD":
            ips = ipam_add(conf, env, client, datastore)
            out: dict[str, Any] = {"cniVersion": conf.cni_version, "ips": format_ips(ips, conf.cni_version)}
            if conf.dns:
                out["dns"] = conf.dns
            return out
        if env.command == "DEL":
            ipam_del(conf, env, client, datastore)
            return None
        prev = conf.prev_result or {}
        ipam_check(conf, env, client, datastore, result_ips(prev))
        return None
    finally:
        client.close()


# --- delegation to another IPAM plugin (host-local, ...) --------------------------------


def delegate(ipam_type: str, command: str, stdin: bytes, env: CNIEnv) -> dict[str, Any] | None:
    """Run another IPAM plugin found in CNI_PATH with the same stdin and environment."""
    check_plugin_name(ipam_type)  # one file name: no "/", "..", NUL or newline
    for d in env.path:
        exe = os.path.join(d, ipam_type)
        if os.path.isfile(exe) and os.access(exe, os.X_OK):
            break
    else:
        raise CNIError(INVALID_NETWORK_CONFIG, f'IPAM plugin "{ipam_type}" not found in CNI_PATH '
                                               f'({os.pathsep.join(env.path) or "empty"})')
    penv = dict(os.environ)
    penv["CNI_COMMAND"] = command
    proc = subprocess.run([exe], input=stdin, env=penv, capture_output=True, timeout=120)
    text = proc.stdout.decode(errors="replace").strip()
    if proc.returncode != 0:
        try:
            doc = json.loads(text)
            msg, details = doc.get("msg", text), doc.get("details", "")
        except ValueError:
            msg, details = text or proc.stderr.decode(errors="replace").strip(), ""
        raise CNIError(IPAM_DELEGATE, f"IPAM plugin {ipam_type} {command} failed: {msg}", details)
    if command != "ADD":
        return None
    try:
        return json.loads(text)
    except ValueError:
        raise CNIError(IPAM_DELEGATE, f"IPAM plugin {ipam_type} returned no JSON result", text[:400]) from None


def main(argv: Sequence[str] | None = None) -> int:
    parse_human_args(
        "calico-ipam",
        "calico.net's CNI IPAM plugin: addresses from the node's affine blocks in etcd.",
        argv)
    return run_plugin(_ipam_command, "calico-ipam")


if __name__ == "__main__":
    sys.exit(main())
