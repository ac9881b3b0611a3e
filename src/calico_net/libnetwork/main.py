"""`calico-libnetwork`: configuration from the environment, the request loop.

Environment (Calico's names where Calico had one):

* ETCD_ENDPOINTS, ETCD_CA_CERT_FILE, ETCD_CERT_FILE, ETCD_KEY_FILE: etcd, as for
  calicoctl (and /etc/calico/calicoctl.cfg);
* NODENAME (or CALICO_NODENAME): this node; else the agent's nodename file
  /var/lib/calico/nodename, else the host name;
* CALICO_LIBNETWORK_SOCKET: the plugin socket (/run/docker/plugins/calico.sock);
  Docker finds both drivers, `calico` and `calico-ipam`, through it when a
  `calico-ipam.sock` symlink sits beside it (made here when missing);
* DOCKER_HOST: the Docker API, for container labels (unix:///var/run/docker.sock);
* CALICO_LIBNETWORK_IFPREFIX: the container interface's prefix (cali);
* CALICO_LIBNETWORK_VETH_MTU, else the agent's MTU file (FELIX_MTUFILEPATH,
  /var/lib/calico/mtu), else 1500;
* CALICO_LIBNETWORK_LABEL_POLL_TIMEOUT: seconds to wait for Docker to name the
  container of a new endpoint (5);
* CALICO_LIBNETWORK_LOG_LEVEL: debug, info (default), warning.

Requests are served one at a time (one lock around every handler and the label
writes): the etcd client and the IPAM object are not shared between threads, and a
Docker host starts containers far slower than a request takes.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from typing import Any, Callable, Sequence

from calico_net.envhelp import datastore_env_help
from calico_net.libnetwork.server import Handler, PluginError, make_server

log = logging.getLogger("calico_net.libnetwork")

DEFAULT_SOCKET = "/run/docker/plugins/calico.sock"
NODENAME_FILE = "/var/lib/calico/nodename"
DEFAULT_MTU_FILE = "/var/lib/calico/mtu"
DEFAULT_MTU = 1500
LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def node_name(env: dict[str, str]) -> str:
    from calico_net.ipam.keys import check_node_name

    name = env.get("NODENAME") or env.get("CALICO_NODENAME") or ""
    if not name:
        try:
            with open(NODENAME_FILE, encoding="utf-8") as f:
                name = f.read().strip()
        except (OSError, UnicodeDecodeError):
            name = ""
    return check_node_name(name or socket.gethostname().split(".")[0].lower())


class Context:
    """What the drivers share: the node, etcd, and the one request lock."""

    def __init__(self, env: dict[str, str]) -> None:
        from calico_net.datastore import Datastore, EtcdClient, EtcdConfig

        self.env = env
        self.node = node_name(env)
        self.client = EtcdClient(EtcdConfig.from_sources(env, timeout=float(env.get("ETCD_TIMEOUT") or 5)))
        self.datastore = Datastore(self.client)
        self.lock = threading.RLock()
        self.if_prefix = env.get("CALICO_LIBNETWORK_IFPREFIX") or "cali"
        self.lock_dir = env.get("CALICO_LIBNETWORK_LOCK_DIR") or "/var/run/calico"
        self.labeller: Any = None
        self._ipam = None

    def ipam(self):
        from calico_net.ipam import IPAM

        if self._ipam is None:
            self._ipam = IPAM(self.client, self.datastore, host_lock_dir=self.lock_dir)
        return self._ipam

    def mtu(self) -> int:
        text = self.env.get("CALICO_LIBNETWORK_VETH_MTU")
        if not text:
            try:
                with open(self.env.get("FELIX_MTUFILEPATH") or DEFAULT_MTU_FILE, encoding="utf-8") as f:
                    text = f.read(32).strip()
            except OSError:
                return DEFAULT_MTU
        try:
            mtu = int(text)
        except ValueError:
            return DEFAULT_MTU
        return mtu if 576 <= mtu <= 65535 else DEFAULT_MTU

    def label_later(self, network_id: str, endpoint_id: str) -> None:
        if self.labeller is not None:
            self.labeller.start(network_id, endpoint_id)


def guarded(ctx: Context, method: str, fn: Callable[[dict[str, Any]], dict[str, Any]]) -> Handler:
    """One request at a time; errors Docker should show, worded for its user."""
    from calico_net.cni.errors import CNIError
    from calico_net.datastore.errors import DatastoreError, DatastoreUnavailable
    from calico_net.errors import CalicoNetError

    def run(req: dict[str, Any]) -> dict[str, Any]:
        with ctx.lock:
            try:
                return fn(req)
            except DatastoreUnavailable as e:
                raise PluginError(f"calico: {method}: etcd is unreachable ({e}); nothing was made, try again") from None
            except (DatastoreError, CalicoNetError, CNIError, ValueError) as e:
                raise PluginError(f"calico: {method}: {e}") from None
    return run


def build_routes(ctx: Context) -> dict[str, Handler]:
    from calico_net.libnetwork.ipam import IpamDriver
    from calico_net.libnetwork.network import NetworkDriver

    routes: dict[str, Handler] = {}
    for method, fn in {**IpamDriver(ctx).routes(), **NetworkDriver(ctx).routes()}.items():
        routes[method] = guarded(ctx, method, fn)
    routes["Plugin.Activate"] = lambda req: {"Implements": ["NetworkDriver", "IpamDriver"]}
    return routes


def _ipam_socket(path: str) -> None:
    """Docker looks a driver up by its name: calico-ipam.sock must lead here too."""
    link = os.path.join(os.path.dirname(path), "calico-ipam.sock")
    if os.path.basename(path) == "calico.sock" and not os.path.lexists(link):
        os.symlink("calico.sock", link)


ENVIRONMENT_HELP = f"""\
environment (docs/libnetwork.md has all of it):
  NODENAME                      this node (else /var/lib/calico/nodename, else the host name)
{datastore_env_help(30)}
  ETCD_TIMEOUT                  seconds per etcd request (5)
  CALICO_LIBNETWORK_SOCKET      plugin socket (/run/docker/plugins/calico.sock; a
                                calico-ipam.sock symlink is made beside it)
  DOCKER_HOST                   Docker API, for container labels (unix:///var/run/docker.sock)
  CALICO_LIBNETWORK_IFPREFIX    container interface prefix (cali)
  CALICO_LIBNETWORK_VETH_MTU    veth MTU (else the agent's FELIX_MTUFILEPATH file, else 1500)
  CALICO_LIBNETWORK_LABEL_POLL_TIMEOUT  seconds to wait for Docker to name a container (5)
  CALICO_LIBNETWORK_LOCK_DIR    IPAM's per-host lock files (/var/run/calico)
  CALICO_LIBNETWORK_LOG_LEVEL   debug, info (default), warning, error

SIGTERM/SIGINT stop the plugin; endpoints and addresses stay in etcd."""


def build_parser():
    from calico_net.envhelp import environment_only_parser

    return environment_only_parser(
        "calico-libnetwork",
        "calico.net's Docker drivers: the `calico` network driver and the\n"
        "`calico-ipam` IPAM driver, one remote plugin on a unix socket. It takes\n"
        "no arguments and is configured by the environment.",
        ENVIRONMENT_HELP)


def main(argv: Sequence[str] | None = None) -> int:
    from calico_net.libnetwork.dockerapi import DockerAPI
    from calico_net.libnetwork.network import Labeller

    build_parser().parse_args(argv)
    env = dict(os.environ)
    level = LOG_LEVELS.get((env.get("CALICO_LIBNETWORK_LOG_LEVEL") or "info").lower(), logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s")
    try:
        ctx = Context(env)
    except Exception as e:  # noqa: BLE001 - a bad setting: say which and stop
        log.error("cannot start: %s", e)
        return 2
    path = env.get("CALICO_LIBNETWORK_SOCKET") or DEFAULT_SOCKET
    ctx.labeller = Labeller(ctx, DockerAPI(env.get("DOCKER_HOST") or "unix:///var/run/docker.sock"),
                            timeout=float(env.get("CALICO_LIBNETWORK_LABEL_POLL_TIMEOUT") or 5))
    srv = make_server(path, build_routes(ctx))
    _ipam_socket(path)
    try:
        resumed = ctx.labeller.resume()
        if resumed:
            log.info("labelling %d endpoints left without a container by a previous run", resumed)
    except Exception as e:  # noqa: BLE001 - etcd away at start: serve anyway, requests will say so
        log.warning("could not look for unlabelled endpoints: %s", e)

    def stop(signum, frame):  # noqa: ARG001
        threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("calico-libnetwork serving %s for node %s", path, ctx.node)
    try:
        srv.serve_forever(poll_interval=0.2)
    finally:
        srv.server_close()
        # a socket left behind would make Docker wait on a dead plugin, not fail over
        try:
            os.unlink(path)
        except OSError:
            pass
        ctx.client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
