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

SIGTERM/SIGINT stop it; BIRD keeps running with the config it has.
"""

from __future__ import annotations

import logging
import signal
import sys
import os


def main(argv: list[str] | None = None) -> int:
    level = os.environ.get("CALICO_CONFD_LOGSEVERITY", "INFO").upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO), stream=sys.stderr,
        format="%(asctime)s [%(levelname)s][%(process)d] confd %(name)s: %(message)s",
    )
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
