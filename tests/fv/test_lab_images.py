"""Tests for the calico/node image's supervisor and, when built, the lab images.

The supervisor (images/calico-node/supervisor.py) is exercised as a real process tree:
fake "agent" and "bird" commands (sleep, sh, a small Python child) stand in for the real
programs, and the tests send real signals and look at real exit codes. The image tests build
localhost/calico/node:latest first with lab/build-images.sh (cached by recipe, and shared
with molecule and `make lab`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SUPERVISOR = REPO / "images" / "calico-node" / "supervisor.py"
CALICO_NODE_IMAGE = "localhost/calico/node:latest"

# A child that writes its pid and the signals it gets to a file, then exits 0 on SIGTERM.
FAKE_CHILD = r"""
import os, signal, sys, time
out = sys.argv[1]
with open(out, "a") as f:
    f.write(f"start {os.getpid()} {' '.join(sys.argv[2:])}\n")
def term(signum, frame):
    with open(out, "a") as f:
        f.write(f"signal {signum}\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
while True:
    time.sleep(0.05)
"""


def _wait_for(pred, what: str, limit: float = 30.0) -> None:
    """Poll until pred() is true; fail (not a timing assertion: a hang guard) after limit."""
    deadline = time.monotonic() + limit
    while not pred():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); it is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


class Sup:
    """A running supervisor with fake children; killed (by PID) at teardown."""

    def __init__(self, tmp: Path, env: dict[str, str], argv: list[str] | None = None) -> None:
        self.tmp = tmp
        self.fake = tmp / "fake_child.py"
        self.fake.write_text(FAKE_CHILD)
        full = dict(os.environ)
        full.update(
            {
                "CALICO_BIRD_CONFIG": str(tmp / "bird.cfg"),
                "CALICO_BIRD_SOCKET": str(tmp / "run" / "bird.ctl"),
                "CALICO_BIRD_CMD": f"{sys.executable} {self.fake} {tmp / 'bird.log'} -c {{config}} -s {{socket}}",
                "CALICO_AGENT_CMD": f"{sys.executable} {self.fake} {tmp / 'agent.log'}",
                "CALICO_CONFD_CMD": f"{sys.executable} {self.fake} {tmp / 'confd.log'}",
                "CALICO_SUPERVISOR_BACKOFF": "0.02",
                "CALICO_SUPERVISOR_GRACE": "5",
            }
        )
        full.update(env)
        self.out_path = tmp / "supervisor.out"
        with open(self.out_path, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(SUPERVISOR), *(argv or [])],
                env=full,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.out_path.read_text()

    def log(self, name: str) -> list[str]:
        p = self.tmp / f"{name}.log"
        return p.read_text().splitlines() if p.exists() else []

    def pids(self, name: str) -> list[int]:
        return [int(line.split()[1]) for line in self.log(name) if line.startswith("start ")]

    def wait(self) -> tuple[int, str]:
        self.proc.wait(timeout=60)
        return self.proc.returncode, self.output()

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for name in ("agent", "confd", "bird"):
            for pid in self.pids(name):
                if _pid_alive(pid):
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture
def sup(tmp_path: Path):
    made: list[Sup] = []

    def start(env: dict[str, str] | None = None, argv: list[str] | None = None) -> Sup:
        s = Sup(tmp_path, env or {}, argv)
        made.append(s)
        return s

    yield start
    for s in made:
        s.cleanup()


def test_sigterm_is_forwarded_and_exit_is_clean(sup, tmp_path: Path) -> None:
    s = sup()
    _wait_for(lambda: s.pids("agent"), "agent start")
    (tmp_path / "bird.cfg").write_text("# rendered by confd\n")
    _wait_for(lambda: s.pids("bird"), "bird start once its config exists")
    assert s.log("bird")[0].endswith(f"-c {tmp_path / 'bird.cfg'} -s {tmp_path / 'run' / 'bird.ctl'}")
    assert (tmp_path / "run").is_dir(), "the control socket's directory is made"
    s.proc.send_signal(signal.SIGTERM)
    rc, out = s.wait()
    assert rc == 0, out
    assert f"signal {signal.SIGTERM.value}" in s.log("agent")
    assert f"signal {signal.SIGTERM.value}" in s.log("bird")
    assert f"signal {signal.SIGTERM.value}" in s.log("confd")
    assert not any(_pid_alive(p) for p in s.pids("agent") + s.pids("confd") + s.pids("bird"))


def test_sigint_is_forwarded_too(sup) -> None:
    s = sup({"CALICO_NETWORKING_BACKEND": "none"})
    _wait_for(lambda: s.pids("agent"), "agent start")
    s.proc.send_signal(signal.SIGINT)
    rc, out = s.wait()
    assert rc == 0, out
    assert "got SIGINT" in out
    assert not _pid_alive(s.pids("agent")[0])


def test_bird_waits_for_its_config(sup, tmp_path: Path) -> None:
    s = sup()
    _wait_for(lambda: s.pids("agent"), "agent start")
    _wait_for(lambda: "bird: waiting: for" in s.output(), "the supervisor to wait for bird.cfg")
    assert s.proc.poll() is None
    assert s.pids("bird") == []
    (tmp_path / "bird.cfg").write_text("")
    _wait_for(lambda: s.pids("bird"), "bird start")
    s.proc.send_signal(signal.SIGTERM)
    assert s.wait()[0] == 0


def test_backend_none_runs_no_bird(sup, tmp_path: Path) -> None:
    (tmp_path / "bird.cfg").write_text("")
    s = sup({"CALICO_NETWORKING_BACKEND": "none"})
    _wait_for(lambda: s.pids("agent"), "agent start")
    s.proc.send_signal(signal.SIGTERM)
    rc, out = s.wait()
    assert rc == 0
    assert s.pids("bird") == [] and s.pids("confd") == []
    assert "not starting confd and BIRD" in out


@pytest.mark.parametrize("backend", ["vxlan", "VXLAN"])
def test_backend_vxlan_runs_the_agent_without_confd_and_bird(sup, tmp_path: Path, backend: str) -> None:
    # bird.cfg exists, so only the backend keeps BIRD from starting.
    (tmp_path / "bird.cfg").write_text("")
    s = sup({"CALICO_NETWORKING_BACKEND": backend})
    _wait_for(lambda: s.pids("agent"), "agent start")
    _wait_for(lambda: "not starting confd and BIRD" in s.output(), "the backend to be logged")
    assert "CALICO_NETWORKING_BACKEND=vxlan: not starting confd and BIRD" in s.output()
    s.proc.send_signal(signal.SIGTERM)
    rc, out = s.wait()
    assert rc == 0, out
    assert s.pids("bird") == [] and s.pids("confd") == []


@pytest.mark.parametrize("backend", ["bird", "BIRD", ""])
def test_backend_bird_runs_confd_and_bird(sup, tmp_path: Path, backend: str) -> None:
    (tmp_path / "bird.cfg").write_text("")
    s = sup({"CALICO_NETWORKING_BACKEND": backend})
    _wait_for(lambda: s.pids("agent") and s.pids("confd") and s.pids("bird"), "all three to start")
    s.proc.send_signal(signal.SIGTERM)
    rc, out = s.wait()
    assert rc == 0, out
    assert "not starting" not in out


def test_bird_runs_with_graceful_restart_recovery_by_default(tmp_path: Path) -> None:
    """BIRD starts with -R, as in Calico's calico/node: without it a restarted calico/node
    pruned the node's BGP routes and its peers flushed its block (the lab crash drill)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("calico_node_supervisor", SUPERVISOR)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(mod)
    finally:
        del sys.modules[spec.name]
    env = {"CALICO_BIRD_CONFIG": str(tmp_path / "bird.cfg"), "CALICO_BIRD_SOCKET": str(tmp_path / "bird.ctl")}
    bird = [c for c in mod.build_children(env) if c.name == "bird"]
    assert bird and bird[0].argv == ["bird", "-f", "-R", "-c", env["CALICO_BIRD_CONFIG"],
                                     "-s", env["CALICO_BIRD_SOCKET"]]


@pytest.mark.parametrize("backend", ["gobgp", "vxlan-v6", "bird,vxlan"])
def test_unknown_backend_is_refused(sup, tmp_path: Path, backend: str) -> None:
    (tmp_path / "bird.cfg").write_text("")
    s = sup({"CALICO_NETWORKING_BACKEND": backend})
    rc, out = s.wait()
    assert rc == 2, out
    assert f"refusing to start: CALICO_NETWORKING_BACKEND={backend!r} is not one of bird, vxlan, none" in out
    assert s.pids("agent") == [] and s.pids("confd") == [] and s.pids("bird") == []


def test_child_restarted_with_backoff_then_gives_up(sup) -> None:
    s = sup(
        {
            "CALICO_AGENT_CMD": "sh -c 'echo crash >&2; exit 3'",
            "CALICO_NETWORKING_BACKEND": "none",
            "CALICO_SUPERVISOR_MAX_RESTARTS": "3",
        }
    )
    rc, out = s.wait()
    assert rc == 3, out
    assert out.splitlines().count("crash") == 4  # first run + 3 restarts
    assert "restart 3/3" in out and "gave up after 3 restarts" in out


def test_death_for_good_stops_the_other_child(sup, tmp_path: Path) -> None:
    (tmp_path / "bird.cfg").write_text("")
    s = sup(
        {
            "CALICO_AGENT_CMD": "sh -c 'sleep 0.3; exit 1'",
            "CALICO_SUPERVISOR_MAX_RESTARTS": "1",
        }
    )
    rc, out = s.wait()
    assert rc == 1, out
    assert "agent died for good" in out
    bird = s.pids("bird")
    assert bird, out
    assert f"signal {signal.SIGTERM.value}" in s.log("bird")
    assert not any(_pid_alive(p) for p in bird)


def test_child_killed_by_signal_exits_128_plus_n(sup) -> None:
    s = sup(
        {
            "CALICO_AGENT_CMD": "sh -c 'kill -9 $$'",
            "CALICO_NETWORKING_BACKEND": "none",
            "CALICO_SUPERVISOR_MAX_RESTARTS": "0",
        }
    )
    rc, out = s.wait()
    assert rc == 128 + 9, out


def test_missing_agent_binary_counts_as_a_death(sup) -> None:
    s = sup(
        {
            "CALICO_AGENT_CMD": "/nonexistent/calico-node",
            "CALICO_NETWORKING_BACKEND": "none",
            "CALICO_SUPERVISOR_MAX_RESTARTS": "1",
        }
    )
    rc, out = s.wait()
    assert rc == 127, out
    assert "cannot start" in out


def test_arguments_run_instead_of_supervising(sup) -> None:
    s = sup(argv=["sh", "-c", "echo direct; exit 7"])
    rc, out = s.wait()
    assert (rc, out.strip()) == (7, "direct")


# --- the built image ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def calico_node_image() -> str:
    """The lab images, built by the lab's own scripts: cached by recipe, so this costs
    seconds when they are current (molecule and `make lab` reuse the same build)."""
    for script in ("bootstrap-host.sh", "build-images.sh"):
        proc = subprocess.run(["bash", str(REPO / "lab" / script)], capture_output=True, text=True,
                              timeout=1800)
        assert proc.returncode == 0, f"lab/{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert subprocess.run(["podman", "image", "exists", CALICO_NODE_IMAGE]).returncode == 0
    return CALICO_NODE_IMAGE


needs_image = pytest.mark.usefixtures("calico_node_image")


@pytest.fixture
def ctr_name():
    name = f"calico-lab-test-{uuid.uuid4().hex[:8]}"
    yield name
    subprocess.run(["podman", "rm", "-f", "-t", "0", "--ignore", name], capture_output=True)


def _podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=check, timeout=300)


@pytest.mark.slow
@needs_image
def test_image_has_bird_nft_and_calico_net(ctr_name: str) -> None:
    out = _podman(
        "run", "--rm", "--name", ctr_name, "--network", "none", CALICO_NODE_IMAGE, "sh", "-c",
        "bird --version 2>&1; nft --version; ip -V; "
        "python3 -c 'import calico_net, pyroute2, jinja2, yaml, pydantic; print(\"calico_net ok\")'; "
        "for b in calico-node calicoctl calico calico-ipam; do command -v $b; done; "
        "ls /opt/calico/wheels",
    ).stdout
    assert "BIRD version 2" in out
    assert "nftables v1" in out
    assert "calico_net ok" in out
    for exe in ("calico-node", "calicoctl", "calico", "calico-ipam"):
        assert f"/{exe}\n" in out
    assert "calico_net-" in out


@pytest.mark.slow
@needs_image
def test_image_supervisor_stops_cleanly_on_podman_stop(ctr_name: str) -> None:
    _podman(
        "run", "-d", "--name", ctr_name, "--network", "none",
        "-e", "CALICO_AGENT_CMD=sleep 1000", "-e", "CALICO_NETWORKING_BACKEND=none",
        CALICO_NODE_IMAGE,
    )
    _wait_for(lambda: "agent: started" in _podman("logs", ctr_name).stderr + _podman("logs", ctr_name).stdout,
              "agent start in the container", limit=120)
    _podman("stop", "-t", "20", ctr_name)
    state = _podman("inspect", "--format", "{{.State.ExitCode}}", ctr_name).stdout.strip()
    assert state == "0"


@pytest.mark.slow
@needs_image
def test_image_exits_nonzero_when_agent_dies_for_good(ctr_name: str) -> None:
    p = _podman(
        "run", "--name", ctr_name, "--network", "none",
        "-e", "CALICO_AGENT_CMD=sh -c 'exit 5'", "-e", "CALICO_NETWORKING_BACKEND=none",
        "-e", "CALICO_SUPERVISOR_MAX_RESTARTS=1", "-e", "CALICO_SUPERVISOR_BACKOFF=0.1",
        CALICO_NODE_IMAGE,
        check=False,
    )
    assert p.returncode == 5, p.stderr
