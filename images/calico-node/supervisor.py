#!/usr/bin/env python3
"""Entrypoint of the calico/node image: a small process supervisor for the agent, confd and BIRD.

It starts the per-host agent (``calico-node``) and, when ``CALICO_NETWORKING_BACKEND``
is ``bird`` (the default), confd (``calico-confd``, its own process as in Calico) and BIRD
in the foreground once confd has written BIRD's config. ``vxlan`` and ``none`` run the
agent alone, as calico/node does: with ``vxlan`` the agent routes every block through
VXLAN and nothing speaks BGP. Any other value is refused (exit 2) rather than guessed.

Docker hosts: ``CALICO_LIBNETWORK_ENABLED=true`` adds the libnetwork plugin
(``calico-libnetwork``: Docker's ``calico`` network and ``calico-ipam`` IPAM drivers on
/run/docker/plugins/calico.sock) as a further child, as calico/node v2 ran it; the
argument ``libnetwork`` instead runs the plugin alone, supervised the same way - the
separate plugin container, as Calico shipped calico/libnetwork-plugin (mount
/run/docker/plugins and the Docker socket; see docs/libnetwork.md).
A child that exits is restarted with exponential backoff, up to a limit; a child that
stays up for a while earns its restarts back. SIGTERM and SIGINT are forwarded to the
children, which get a grace period before SIGKILL, and the supervisor then exits 0. When
a child dies for good the supervisor stops the other one and exits non-zero, so podman
(or systemd) sees the container fail.

Built as a single file on the standard library only: it runs as PID 1 in the container,
reaps orphans, and uses a blocked-signal loop (``sigtimedwait``) rather than handlers so
that no signal is lost between checks.

Environment (all optional):
  CALICO_AGENT_CMD            agent command line (default ``calico-node``)
  CALICO_NETWORKING_BACKEND   ``bird`` (default), ``vxlan`` or ``none`` (the last two:
                              no confd, no BIRD)
  CALICO_CONFD_CMD            confd command line (default ``calico-confd``)
  CALICO_LIBNETWORK_ENABLED   ``true``: run the libnetwork plugin too (default ``false``)
  CALICO_LIBNETWORK_CMD       the plugin's command line (default ``calico-libnetwork``)
  CALICO_BIRD_CONFIG          BIRD config (default /etc/calico/confd/config/bird.cfg)
  CALICO_BIRD_SOCKET          BIRD control socket (default /var/run/calico/bird.ctl)
  CALICO_BIRD_CMD             BIRD command line; ``{config}`` and ``{socket}`` are
                              substituted (default ``bird -f -R -c {config} -s {socket}``:
                              ``-R``, graceful-restart recovery, as calico/node runs it)
  CALICO_SUPERVISOR_MAX_RESTARTS   restarts allowed per child (default 5)
  CALICO_SUPERVISOR_BACKOFF        first backoff in seconds, doubled each time (default 1)
  CALICO_SUPERVISOR_BACKOFF_MAX    backoff cap in seconds (default 30)
  CALICO_SUPERVISOR_STABLE         seconds of uptime that reset a child's count (default 60)
  CALICO_SUPERVISOR_GRACE          seconds between SIGTERM and SIGKILL on stop (default 8)
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

DEFAULT_BIRD_CONFIG = "/etc/calico/confd/config/bird.cfg"
DEFAULT_BIRD_SOCKET = "/var/run/calico/bird.ctl"
# -R (graceful-restart recovery), as Calico's calico/node starts BIRD: a BIRD that comes
# back after a crash then keeps the kernel routes its last run left (persist) until BGP
# has refilled its table, instead of pruning them at start, and tells its peers it kept
# forwarding (restart and forwarding bits), so they keep its routes until its End-of-RIB
# instead of flushing them when the session comes back. Without it, a calico/node crash
# drops every route to other nodes on this node and this node's blocks on its peers for
# up to a second.
DEFAULT_BIRD_CMD = "bird -f -R -c {config} -s {socket}"
WATCHED = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT}
POLL = 0.5  # seconds between checks while waiting for BIRD's config or a backoff


def log(msg: str) -> None:
    print(f"calico-node-supervisor: {msg}", file=sys.stderr, flush=True)


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    try:
        return float(raw) if raw else default
    except ValueError:
        log(f"ignoring {name}={raw!r}: not a number")
        return default


@dataclass
class Child:
    """One supervised program and its restart bookkeeping."""

    name: str
    argv: list[str]
    ready: Callable[[], bool] = lambda: True  # may it start now?
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    next_start: float = 0.0  # monotonic time before which it must not start
    waiting_logged: bool = False
    failed: bool = False
    last_rc: int = 0
    extra: dict[str, str] = field(default_factory=dict)


class Supervisor:
    def __init__(
        self,
        children: list[Child],
        max_restarts: int,
        backoff: float,
        backoff_max: float,
        stable: float,
        grace: float,
    ) -> None:
        self.children = children
        self.max_restarts = max_restarts
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.stable = stable
        self.grace = grace
        self.stopping: int | None = None  # the signal that asked us to stop

    # -- children ------------------------------------------------------------------------
    def _start(self, c: Child) -> None:
        def unblock() -> None:  # runs in the child between fork and exec
            signal.pthread_sigmask(signal.SIG_UNBLOCK, WATCHED)

        try:
            c.proc = subprocess.Popen(c.argv, start_new_session=True, preexec_fn=unblock)
        except OSError as exc:
            log(f"{c.name}: cannot start {shlex.join(c.argv)}: {exc}")
            c.proc = None
            self._died(c, 127)
            return
        c.started_at = time.monotonic()
        log(f"{c.name}: started pid {c.proc.pid}: {shlex.join(c.argv)}")

    def _died(self, c: Child, rc: int) -> None:
        now = time.monotonic()
        c.last_rc = rc
        if c.started_at and now - c.started_at >= self.stable:
            c.restarts = 0  # it ran long enough: forgive earlier crashes
        if c.restarts >= self.max_restarts:
            log(f"{c.name}: exited with {rc}; gave up after {c.restarts} restarts")
            c.failed = True
            return
        delay = min(self.backoff * (2**c.restarts), self.backoff_max)
        c.restarts += 1
        c.next_start = now + delay
        log(f"{c.name}: exited with {rc}; restart {c.restarts}/{self.max_restarts} in {delay:g}s")

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            rc = os.waitstatus_to_exitcode(status)
            for c in self.children:
                if c.proc is not None and c.proc.pid == pid:
                    c.proc.returncode = rc
                    c.proc = None
                    if self.stopping is None:
                        self._died(c, rc)
                    else:
                        log(f"{c.name}: stopped ({rc})")
                    break
            # anything else was an orphan re-parented to us (PID 1): reaped, nothing to do

    def _signal_all(self, sig: int, group: bool = False) -> None:
        for c in self.children:
            if c.proc is None:
                continue
            try:
                if group:
                    os.killpg(c.proc.pid, sig)
                else:
                    os.kill(c.proc.pid, sig)
            except ProcessLookupError:
                pass

    def _running(self) -> bool:
        return any(c.proc is not None for c in self.children)

    # -- main loop -----------------------------------------------------------------------
    def run(self) -> int:
        signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)
        while True:
            if self.stopping is None:
                failed = [c for c in self.children if c.failed]
                if failed:
                    self._shutdown(signal.SIGTERM, reason=f"{failed[0].name} died for good")
                    rc = failed[0].last_rc
                    # killed by a signal: the shell's 128+N; exited 0 (a daemon must not): 1
                    return rc if rc > 0 else (128 - rc if rc < 0 else 1)
                now = time.monotonic()
                for c in self.children:
                    if c.proc is None and not c.failed and now >= c.next_start:
                        if c.ready():
                            c.waiting_logged = False
                            self._start(c)
                        elif not c.waiting_logged:
                            log(f"{c.name}: waiting: {c.extra.get('waiting', 'not ready')}")
                            c.waiting_logged = True
            else:
                return self._shutdown(self.stopping, reason=f"got {signal.Signals(self.stopping).name}")
            info = signal.sigtimedwait(WATCHED, POLL)
            if info is None:
                continue
            if info.si_signo == signal.SIGCHLD:
                self._reap()
            else:
                self.stopping = info.si_signo

    def _shutdown(self, sig: int, reason: str) -> int:
        log(f"stopping ({reason})")
        self.stopping = sig
        self._signal_all(sig)
        deadline = time.monotonic() + self.grace
        while self._running() and time.monotonic() < deadline:
            # a second SIGTERM/SIGINT changes nothing: the grace period runs its course
            signal.sigtimedwait(WATCHED, max(0.0, min(POLL, deadline - time.monotonic())))
            self._reap()
        if self._running():
            log(f"children still running after {self.grace:g}s: SIGKILL")
            self._signal_all(signal.SIGKILL, group=True)
            while self._running():
                signal.sigtimedwait(WATCHED, POLL)
                self._reap()
        return 0


#: CALICO_NETWORKING_BACKEND values, calico/node's: which run BIRD (and confd)
BACKENDS = {"bird": True, "vxlan": False, "none": False}


class ConfigError(Exception):
    """A setting the supervisor refuses to start with."""


def networking_backend(env: dict[str, str]) -> str:
    """CALICO_NETWORKING_BACKEND, lower-cased; unset or empty is ``bird``. An unknown
    value is refused: starting BIRD (or not) on a misspelt value would silently give
    the node a different network than the one asked for."""
    backend = env.get("CALICO_NETWORKING_BACKEND", "").strip().lower() or "bird"
    if backend not in BACKENDS:
        raise ConfigError(
            f"CALICO_NETWORKING_BACKEND={backend!r} is not one of {', '.join(BACKENDS)}")
    return backend


#: CALICO_LIBNETWORK_ENABLED values
BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
#: the entrypoint argument that runs the libnetwork plugin alone
LIBNETWORK_MODE = "libnetwork"


def libnetwork_enabled(env: dict[str, str]) -> bool:
    """CALICO_LIBNETWORK_ENABLED: unset or empty is false; a value that is not a boolean
    is refused, as a misspelt backend is."""
    raw = env.get("CALICO_LIBNETWORK_ENABLED", "").strip().lower()
    if not raw:
        return False
    if raw not in BOOLEANS:
        raise ConfigError(f"CALICO_LIBNETWORK_ENABLED={raw!r} is not true or false")
    return BOOLEANS[raw]


def libnetwork_child(env: dict[str, str]) -> Child:
    return Child("libnetwork", shlex.split(env.get("CALICO_LIBNETWORK_CMD", "") or "calico-libnetwork"))


def build_children(env: dict[str, str], mode: str = "node") -> list[Child]:
    if mode == LIBNETWORK_MODE:
        return [libnetwork_child(env)]
    agent_cmd = shlex.split(env.get("CALICO_AGENT_CMD", "") or "calico-node")
    children = [Child("agent", agent_cmd)]
    if libnetwork_enabled(env):
        children.append(libnetwork_child(env))
    backend = networking_backend(env)
    if not BACKENDS[backend]:
        log(f"CALICO_NETWORKING_BACKEND={backend}: not starting confd and BIRD")
        return children
    children.append(Child("confd", shlex.split(env.get("CALICO_CONFD_CMD", "") or "calico-confd")))
    config = env.get("CALICO_BIRD_CONFIG", "") or DEFAULT_BIRD_CONFIG
    sock = env.get("CALICO_BIRD_SOCKET", "") or DEFAULT_BIRD_SOCKET
    template = env.get("CALICO_BIRD_CMD", "") or DEFAULT_BIRD_CMD
    argv = [a.format(config=config, socket=sock) for a in shlex.split(template)]
    os.makedirs(os.path.dirname(sock) or ".", exist_ok=True)
    children.append(
        Child("bird", argv, ready=lambda: os.path.exists(config), extra={"waiting": f"for {config}"})
    )
    return children


def main(argv: list[str]) -> int:
    mode = "node"
    if argv == [LIBNETWORK_MODE]:
        # `docker run calico/node libnetwork`: the plugin alone, supervised
        mode = LIBNETWORK_MODE
    elif argv:
        # `podman run calico/node bird --version`: run that instead of supervising.
        os.execvp(argv[0], argv)
    env = dict(os.environ)
    try:
        children = build_children(env, mode)
    except ConfigError as exc:
        log(f"refusing to start: {exc}")
        return 2
    sup = Supervisor(
        children,
        max_restarts=int(_env_float("CALICO_SUPERVISOR_MAX_RESTARTS", 5)),
        backoff=_env_float("CALICO_SUPERVISOR_BACKOFF", 1.0),
        backoff_max=_env_float("CALICO_SUPERVISOR_BACKOFF_MAX", 30.0),
        stable=_env_float("CALICO_SUPERVISOR_STABLE", 60.0),
        grace=_env_float("CALICO_SUPERVISOR_GRACE", 8.0),
    )
    return sup.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
