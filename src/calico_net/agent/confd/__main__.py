"""``python -m calico_net.agent.confd``: run confd, the BIRD-configuration process.

In calico/node confd is a process of its own beside the agent (Felix's part) and BIRD;
the image's supervisor starts it. Environment (see docs/bgp.md for all of it):

  NODENAME                   this node (default: the hostname)
  ETCD_ENDPOINTS, ETCD_*_FILE  the datastore (or /etc/calico/calicoctl.cfg)
  CALICO_BIRD_CONFIG         bird.cfg to maintain (/etc/calico/confd/config/bird.cfg)
  CALICO_BIRD_SOCKET         BIRD's control socket (/var/run/calico/bird.ctl)
  CALICO_BGP_SECRETS_DIR     BGP passwords as <dir>/<secret name>/<key> (/etc/calico/bgp-secrets)
  CALICO_CONFD_HEALTHPORT    /liveness /readiness /metrics /status (9098, on 127.0.0.1)
  CALICO_CONFD_STATUS_FILE   status JSON (/var/run/calico/confd-status.json; empty: none)
  CALICO_CONFD_LOGSEVERITY   DEBUG, INFO (default), WARNING, ERROR

SIGTERM/SIGINT stop it; BIRD keeps running with the config it has. ``--help`` and
``--version`` answer and exit before anything starts; any other argument is a usage
error (exit 2).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence

from calico_net.envhelp import datastore_env_help, environment_only_parser

ENVIRONMENT_HELP = f"""\
environment (docs/bgp.md has all of it):
  NODENAME                      this node (default: the host name)
{datastore_env_help(30)}
  CALICO_BIRD_CONFIG            bird.cfg to maintain (/etc/calico/confd/config/bird.cfg)
  CALICO_BIRD_SOCKET            BIRD's control socket (/var/run/calico/bird.ctl)
  CALICO_BIRD_BINARY            BIRD binary for `bird -p -c` (bird)
  CALICO_BGP_SECRETS_DIR        BGP passwords as <dir>/<secret name>/<key> (/etc/calico/bgp-secrets)
  CALICO_BGP_PASSWORD_<NAME>_<KEY>  a BGP password when its file is absent
  CALICO_ROUTER_ID              an IPv4 address or "hash" (default: the node's IPv4 address)
  CALICO_CONFD_HEALTHENABLED    serve /liveness /readiness /metrics /status (true)
  CALICO_CONFD_HEALTHHOST       ... on this address (127.0.0.1)
  CALICO_CONFD_HEALTHPORT       ... and port (9098)
  CALICO_CONFD_STATUS_FILE      status JSON (/var/run/calico/confd-status.json; empty: none)
  CALICO_CONFD_COALESCE         seconds of quiet before rendering (0.05)
  CALICO_CONFD_REFRESH_INTERVAL periodic re-render, seconds (30)
  CALICO_CONFD_LOGSEVERITY      DEBUG, INFO (default), WARNING, ERROR

SIGTERM/SIGINT stop confd; BIRD keeps running with the config it has."""


def build_parser() -> argparse.ArgumentParser:
    return environment_only_parser(
        "calico-confd",
        "calico.net confd: keeps BIRD 2's configuration in step with etcd\n"
        "(render, `bird -p -c`, atomic swap, `configure`). It takes no\n"
        "arguments and is configured by the environment.",
        ENVIRONMENT_HELP)


def main(argv: Sequence[str] | None = None) -> int:
    from calico_net.agent.startup import parse_then_log

    severity = os.environ.get("CALICO_CONFD_LOGSEVERITY", "INFO").upper()
    parse_then_log(build_parser(), argv,
                   "%(asctime)s [%(levelname)s][%(process)d] confd %(name)s: %(message)s",
                   logging.getLevelNamesMapping().get(severity, logging.INFO))
    log = logging.getLogger("calico_net.agent.confd")
    from calico_net.agent.confd.runner import Confd, ConfdSettings
    from calico_net.datastore import DatastoreError
    from calico_net.datastore.etcd import EtcdClient, EtcdConfig

    try:
        settings = ConfdSettings.from_env()
        etcd = EtcdClient(EtcdConfig.from_sources())
    except (DatastoreError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    confd = Confd(settings, etcd)

    def stop(signum: int, _frame: object) -> None:
        log.info("received signal %d, stopping (BIRD keeps its config)", signum)
        confd.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("confd starting: node %s, etcd %s, config %s, BIRD socket %s",
             settings.node_name, ",".join(etcd.config.endpoints), settings.bird_config,
             settings.bird_socket)
    try:
        confd.run()
    finally:
        etcd.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
