"""`calico-node` / `python -m calico_net.agent`: run the per-host agent.

Reads `NODENAME` (default: the hostname), the etcd connection (`ETCD_ENDPOINTS`,
`ETCD_*_FILE`, or /etc/calico/calicoctl.cfg), Felix settings (`FELIX_*`,
/etc/calico/felix.cfg, FelixConfiguration — see `config.py`), starts the health and
metrics listeners and runs the daemon until SIGTERM/SIGINT. Stopping leaves the
dataplane as it is, so workloads keep their connectivity across a restart.

Logs go to stderr at LogSeverityScreen and, while LogFilePath is a path (Felix's
`none`, the built-in default here, turns it off), also to that file at
LogSeverityFile (`LogSetup`: the file is reopened when it is moved away, as by
logrotate; both follow a FelixConfiguration change without a restart); to syslog
(/dev/log) at LogSeveritySys, `None` by default here. With LogDebugFilenameRegex,
Debug lines come only from source files whose name matches.

At start, ClusterInformation `default` is created when absent and its version kept
current (`startup.ensure_cluster_information`, as calico/node's start-up does), from
a thread of its own that retries while etcd cannot be reached.

The overlay (IP-in-IP / VXLAN: `encap.controller`) is built here with its real
pieces: the kernel layer, the block affinity watch and the tunnel address allocator.

`--help` and `--version` answer and exit before anything starts; any other argument
is a usage error (exit 2).
"""
from __future__ import annotations

import argparse
import logging
import logging.handlers
import math
import os
import re
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from calico_net.agent.config import DEFAULT_CONFIG_FILE, PARAMS, Config
from calico_net.envhelp import datastore_env_help, environment_only_parser

if TYPE_CHECKING:
    from calico_net.agent import health as health_mod
    from calico_net.agent.encap.controller import EncapController

log = logging.getLogger("calico_net.agent")


def node_name(env: dict[str, str] | os._Environ[str] = os.environ) -> str:
    return env.get("NODENAME") or env.get("FELIX_FELIXHOSTNAME") or socket.gethostname()


def _environment_help() -> str:
    felix = "\n".join(f"    FELIX_{p.name.upper():33} default: {p.default if p.default != '' else '(empty)'}"
                      for p in PARAMS)
    return f"""\
environment:
  NODENAME                 this node's name (else FELIX_FELIXHOSTNAME, else the host name)
{datastore_env_help(25)}
  FELIX_CONFIGFILE         Felix's config file (default {DEFAULT_CONFIG_FILE})
  FELIX_<PARAM>            a Felix parameter; the environment wins over the config
                           file, FelixConfiguration node.<NODENAME> and default:
{felix}

SIGTERM/SIGINT stop the agent and leave the dataplane in place."""


def build_parser() -> argparse.ArgumentParser:
    return environment_only_parser(
        "calico-node",
        "calico.net per-host agent (Felix's part): workload routes, proxy ARP,\n"
        "sysctls, nftables policy and IP-in-IP/VXLAN overlays from etcd. It\n"
        "takes no arguments and is configured by the environment.",
        _environment_help())


LOG_FORMAT = "%(asctime)s [%(levelname)s][%(process)d] %(name)s: %(message)s"


class LogFile(logging.handlers.WatchedFileHandler):
    """The log file: reopened when moved away (logrotate), its directory made again
    when removed; a file that cannot be written never raises into the agent (the
    problem goes to stderr once, until writing works again)."""

    def __init__(self, path: str) -> None:
        super().__init__(path, encoding="utf-8")
        self.broken = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if not os.path.isdir(os.path.dirname(self.baseFilename)):
                os.makedirs(os.path.dirname(self.baseFilename), mode=0o755, exist_ok=True)
            super().emit(record)
            self.broken = False
        except Exception as e:  # noqa: BLE001 - a log write must not fail the agent
            if not self.broken:
                self.broken = True
                sys.stderr.write(f"cannot write the log file {self.baseFilename!r}: {e}\n")


class DebugFileFilter(logging.Filter):
    """LogDebugFilenameRegex: a Debug line passes only when the name of the source
    file that logged it matches (searched, as Go's regexp.MatchString); other levels
    always pass."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self._text: str | None = None
        self._re: re.Pattern[str] | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG:
            return True
        text = self.config.values.get("LogDebugFilenameRegex")
        if text is None:
            return True
        if text != self._text:
            self._text, self._re = text, re.compile(text)
        assert self._re is not None
        return self._re.search(record.filename) is not None


SYSLOG_FORMAT = "calico-felix[%(process)d]: [%(levelname)s] %(name)s: %(message)s"


class SysLog(logging.handlers.SysLogHandler):
    """The syslog handler: a failed send is reported on stderr once, never as a
    traceback per line."""

    broken = False

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        if not self.broken:
            self.broken = True
            sys.stderr.write(f"cannot send to syslog at {self.address!r}; its lines are lost\n")


class LogSetup:
    """The agent's log handlers from the config: the screen (stderr) at
    LogSeverityScreen; the file LogFilePath (None: none) at LogSeverityFile; syslog
    at LogSeveritySys (None: none). `apply` is a `Config` listener, so a changed
    FelixConfiguration takes effect at once."""

    #: where syslog listens (Felix's: the local syslog socket)
    syslog_address = "/dev/log"

    def __init__(self, config: Config, screen: logging.Handler) -> None:
        self.config = config
        self.screen = screen
        self.syslog: logging.Handler | None = None
        self.syslog_failed = False
        self.file: logging.Handler | None = None
        self.path: str | None = None
        self.failed: str | None = None   # the path that could not be opened (logged once)
        self.debug_filter = DebugFileFilter(config)
        screen.addFilter(self.debug_filter)

    def apply(self, _changed: object = None) -> None:
        root = logging.getLogger()
        path = self.config.values["LogFilePath"]
        if path != self.path:
            self.path = path
            if self.file is not None:
                root.removeHandler(self.file)
                self.file.close()
                self.file = None
            if path is not None:
                try:
                    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
                    handler = LogFile(path)
                    handler.addFilter(self.debug_filter)
                except OSError as e:
                    # as Felix: a log file that cannot be opened leaves the screen log
                    if self.failed != path:
                        log.error("cannot log to %r: %s; logging to stderr only", path, e)
                    self.failed = path
                else:
                    handler.setFormatter(logging.Formatter(LOG_FORMAT))
                    root.addHandler(handler)
                    self.file = handler
                    self.failed = None
        self._apply_syslog(root)
        self.screen.setLevel(self.config.screen_level)
        levels = [self.config.screen_level]
        if self.file is not None:
            self.file.setLevel(self.config.file_level)
            levels.append(self.config.file_level)
        if self.syslog is not None:
            self.syslog.setLevel(self.config.sys_level)
            levels.append(self.config.sys_level)
        root.setLevel(min(levels))

    def _apply_syslog(self, root: logging.Logger) -> None:
        """LogSeveritySys None: no syslog handler; else one. As C's openlog, a socket
        that is not there yet is connected when a line is sent (`SysLog` reports a
        line it cannot send once on stderr)."""
        wanted = self.config.sys_level <= logging.CRITICAL
        if not wanted:
            self.syslog_failed = False
            if self.syslog is not None:
                root.removeHandler(self.syslog)
                self.syslog.close()
                self.syslog = None
            return
        if self.syslog is not None or self.syslog_failed:
            return
        try:
            handler = SysLog(address=self.syslog_address)
        except OSError as e:
            self.syslog_failed = True
            log.error("cannot log to syslog at %s: %s; LogSeveritySys has no effect",
                      self.syslog_address, e)
            return
        handler.setFormatter(logging.Formatter(SYSLOG_FORMAT))
        handler.addFilter(self.debug_filter)
        root.addHandler(handler)
        self.syslog = handler


#: Felix's name for the reporter the agent's main loop is (its liveness)
MAIN_LOOP_REPORTER = "InternalDataplaneMainLoop"


class HealthOverrides:
    """HealthTimeoutOverrides as libcalico-go's health aggregator takes them: the
    override for InternalDataplaneMainLoop is the main loop's liveness timeout (0: it
    never times out); names of reporters calico.net does not have are logged once.
    A `Config` listener: a change applies at once, as Felix's global overrides do."""

    def __init__(self, config: Config, state: "health_mod.HealthState") -> None:
        self.config = config
        self.state = state
        self.default = state.liveness_timeout
        self.warned: set[str] = set()

    def apply(self, _changed: object = None) -> None:
        overrides = dict(self.config.values["HealthTimeoutOverrides"])
        timeout = overrides.pop(MAIN_LOOP_REPORTER, None)
        self.state.liveness_timeout = (self.default if timeout is None
                                       else math.inf if timeout == 0 else timeout)
        for name in overrides:
            if name not in self.warned:
                self.warned.add(name)
                log.warning("HealthTimeoutOverrides: calico.net has no health reporter %r (its one "
                            "reporter is %s); ignored", name, MAIN_LOOP_REPORTER)


def record_cluster_information(etcd: object, stopping: threading.Event, first_delay: float = 1.0) -> bool:
    """ClusterInformation `default` as calico/node's start-up leaves it
    (`startup.ensure_cluster_information`), from a thread of its own so an etcd that
    is down at start delays nothing: retried with a growing pause (up to a minute)
    until it is done or the agent stops. True once recorded."""
    from calico_net.agent.startup import StartupError, ensure_cluster_information
    from calico_net.datastore import Datastore, DatastoreError

    delay = first_delay
    while not stopping.is_set():
        try:
            ensure_cluster_information(Datastore(etcd), cluster_type=os.environ.get("CLUSTER_TYPE", ""))
            return True
        except (DatastoreError, StartupError) as e:
            log.warning("cannot record ClusterInformation default yet: %s; again in %.0f s", e, delay)
        if stopping.wait(delay):
            break
        delay = min(delay * 2, 60.0)
    return False


def _overlay(name: str, config: Config, etcd: object) -> "EncapController":
    """The overlay's real pieces: the kernel layer is made (pyroute2 imported) and the
    affinity watch started only once a pool is encapsulated; the tunnel address
    allocator shares the agent's etcd client."""
    from calico_net.agent.encap.addrs import TunnelAddrAllocator
    from calico_net.agent.encap.controller import EncapController
    from calico_net.agent.encap.watch import AffinityWatcher

    def watcher(on_snapshot, on_update):  # type: ignore[no-untyped-def]
        return AffinityWatcher(etcd, on_snapshot=on_snapshot, on_update=on_update)

    # BIRD writes blackholes for this node's blocks; without it the agent does (Felix's way)
    backend = os.environ.get("CALICO_NETWORKING_BACKEND", "bird").strip().lower() or "bird"
    return EncapController(name, config, watcher_factory=watcher, allocator=TunnelAddrAllocator(etcd, name),
                           own_blackholes=backend != "bird")


def main(argv: Sequence[str] | None = None) -> int:
    # Arguments first: --help/--version (and a wrong argument) must start nothing.
    build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    screen = logging.StreamHandler(sys.stderr)
    screen.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.getLogger().addHandler(screen)
    logging.getLogger().setLevel(logging.INFO)
    name = node_name()
    from calico_net.ipam.keys import check_node_name

    try:
        check_node_name(name)  # an etcd key component: no "/", NUL, newline, ".."
    except ValueError as e:
        log.error("NODENAME: %s", e)
        return 2
    config = Config(name)
    logsetup = LogSetup(config, screen)
    logsetup.apply()
    config.listeners.append(logsetup.apply)
    from calico_net.agent import health as health_mod
    from calico_net.agent import metrics as metrics_mod
    from calico_net.agent.daemon import Daemon
    from calico_net.datastore import DatastoreError
    from calico_net.datastore.etcd import EtcdClient, EtcdConfig

    try:
        etcd = EtcdClient(EtcdConfig.from_sources())
    except DatastoreError as e:
        log.error("%s", e)
        return 2
    stopping = threading.Event()
    threading.Thread(target=record_cluster_information, args=(etcd, stopping),
                     name="cluster-information", daemon=True).start()
    metrics = metrics_mod.Metrics()
    metrics.process_metrics = config.values["PrometheusProcessMetricsEnabled"]
    metrics.runtime_metrics = config.values["PrometheusGoMetricsEnabled"]
    state = health_mod.HealthState()
    overrides = HealthOverrides(config, state)
    overrides.apply()
    config.listeners.append(overrides.apply)
    servers = []
    try:
        if config.values["HealthEnabled"]:
            servers.append(health_mod.serve(state, config.values["HealthHost"], config.values["HealthPort"]))
        if config.values["PrometheusMetricsEnabled"]:
            servers.append(metrics_mod.serve(metrics, config.values["PrometheusMetricsHost"],
                                             config.values["PrometheusMetricsPort"]))
    except OSError as e:
        log.error("cannot listen for health/metrics: %s", e)
        return 2
    daemon = Daemon(name, config, etcd, metrics=metrics, health=state, encap=_overlay(name, config, etcd))
    if config.values["PrometheusMetricsEnabled"]:
        # Felix's cluster-wide counts and resync figures, read from the daemon per scrape
        metrics.add_collector(metrics_mod.DaemonCollector(daemon, metrics))

    def stop(signum: int, _frame: object) -> None:
        log.info("received signal %d, stopping (the dataplane is left in place)", signum)
        daemon.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("calico-node agent starting: node %s, etcd %s", name, ",".join(etcd.config.endpoints))
    try:
        daemon.run()
    finally:
        stopping.set()
        for s in servers:
            s.shutdown()
        etcd.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
