"""Every console script answers `--help` and `--version` without starting anything.

Each script of pyproject.toml's [project.scripts] is run from this virtualenv's bin
directory inside a network namespace made for that one run (loopback up, so a
daemon that starts by mistake can bind its health port there). It must exit 0 within
the hang guard, print its usage (naming environment variables it reads) or its
version, and leave the namespace as it found it: no listening socket, no nftables
table. A process still running at the hang guard is inspected *before* it is killed,
so a daemon that started shows up as a listening socket in the failure message.

The environment points etcd at an address in 198.18.0.0/15 that nothing in the
namespace can reach (the namespace has no route at all), so a script that does try
to start cannot talk to anything outside it.
"""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import calico_net

VENV_BIN = Path(sys.executable).parent
HANG_GUARD = 20.0  # seconds; --help needs well under 2 s on this machine kind

#: script -> environment variables its --help must name (each one the code reads).
SCRIPTS: dict[str, tuple[str, ...]] = {
    "calicoctl": ("ETCD_ENDPOINTS",),
    "calico-node": ("NODENAME", "ETCD_ENDPOINTS", "ETCD_CA_CERT_FILE", "FELIX_HEALTHPORT"),
    "calico-libnetwork": ("NODENAME", "ETCD_ENDPOINTS", "CALICO_LIBNETWORK_SOCKET", "DOCKER_HOST"),
    "calico-confd": ("NODENAME", "ETCD_ENDPOINTS", "CALICO_BIRD_CONFIG", "CALICO_CONFD_HEALTHPORT"),
    "calico-node-startup": ("NODENAME", "IP_AUTODETECTION_METHOD", "AS", "ETCD_ENDPOINTS"),
    "calico": ("CNI_COMMAND", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "ETCD_ENDPOINTS"),
    "calico-ipam": ("CNI_COMMAND", "CNI_CONTAINERID", "CNI_ARGS", "ETCD_ENDPOINTS"),
}

ENV = {
    "PATH": f"{VENV_BIN}:/usr/sbin:/usr/bin:/sbin:/bin",
    "NODENAME": "fv-entry-node",
    "ETCD_ENDPOINTS": "http://198.18.255.254:2379",
    "CALICO_CONFD_STATUS_FILE": "",
    "CALICO_BIRD_CONFIG": "/nonexistent/calico-entry-points/bird.cfg",
    "CALICO_NODENAME_FILE": "/nonexistent/calico-entry-points/nodename",
    "LANG": "C.UTF-8",
}


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)


def test_pyproject_lists_exactly_these_scripts() -> None:
    """The table above covers every console script (a new one must be added here)."""
    import tomllib

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    scripts = tomllib.loads(pyproject.read_text())["project"]["scripts"]
    assert set(scripts) == set(SCRIPTS)


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"cnfv-ep-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    made = _ip("netns", "add", name)
    assert made.returncode == 0, made.stderr
    try:
        up = _ip("-n", name, "link", "set", "lo", "up")
        assert up.returncode == 0, up.stderr
        yield name
    finally:
        gone = _ip("netns", "del", name)
        assert gone.returncode == 0, gone.stderr


def _in_ns(ns: str, *cmd: str) -> str:
    proc = subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True,
                          timeout=30, check=False)
    assert proc.returncode == 0, f"{cmd}: {proc.stderr}"
    return proc.stdout.strip()


def _leftovers(ns: str) -> str:
    """What a started daemon would leave in the namespace ('' when nothing)."""
    sockets = _in_ns(ns, "ss", "-ltnuH")
    tables = _in_ns(ns, "nft", "list", "tables")
    out = []
    if sockets:
        out.append(f"listening sockets:\n{sockets}")
    if tables:
        out.append(f"nftables tables:\n{tables}")
    return "\n".join(out)


def _run(ns: str, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    exe = VENV_BIN / script
    assert exe.is_file(), f"{exe} is not installed (pip install -e . into the venv)"
    proc = subprocess.Popen(["ip", "netns", "exec", ns, str(exe), *args], env=ENV,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=HANG_GUARD)
    except subprocess.TimeoutExpired:
        state = _leftovers(ns)  # look before killing: this is what "started" means
        os.killpg(proc.pid, 9)
        out, err = proc.communicate()
        pytest.fail(f"{script} {' '.join(args)} still ran after {HANG_GUARD:.0f} s "
                    f"(it started something)\n{state}\nstderr:\n{err[-2000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_help(netns: str, script: str) -> None:
    proc = _run(netns, script, "--help")
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.stdout.startswith(f"usage: {script}"), proc.stdout
    missing = [v for v in SCRIPTS[script] if v not in proc.stdout]
    assert not missing, f"--help does not name {missing}:\n{proc.stdout}"
    assert _leftovers(netns) == ""


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_version(netns: str, script: str) -> None:
    proc = _run(netns, script, "--version")
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert calico_net.__version__ in proc.stdout, proc.stdout
    assert "usage:" not in proc.stdout
    assert _leftovers(netns) == ""


@pytest.mark.parametrize("script", sorted(set(SCRIPTS) - {"calicoctl"}))
def test_unknown_argument_is_a_usage_error(netns: str, script: str) -> None:
    """calicoctl has its own sub-commands; the others take no arguments at all."""
    proc = _run(netns, script, "--no-such-option")
    assert proc.returncode == 2, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.stderr.startswith(f"usage: {script}"), proc.stderr
    assert "--no-such-option" in proc.stderr
    assert proc.stdout == ""
    assert _leftovers(netns) == ""


@pytest.mark.parametrize("script", ["calico", "calico-ipam"])
def test_cni_version_command_is_still_the_cni_protocol(netns: str, script: str) -> None:
    """CNI_COMMAND=VERSION without arguments answers the runtime in JSON; --version
    with the same environment answers a person."""
    import json

    exe = str(VENV_BIN / script)
    env = dict(ENV, CNI_COMMAND="VERSION")
    proc = subprocess.run(["ip", "netns", "exec", netns, exe], env=env, input="{}",
                          capture_output=True, text=True, timeout=HANG_GUARD, check=False)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert "1.0.0" in doc["supportedVersions"]
    human = subprocess.run(["ip", "netns", "exec", netns, exe, "--version"], env=env,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=HANG_GUARD, check=False)
    assert human.returncode == 0, human.stderr
    assert human.stdout.startswith(f"{script} (calico.net) {calico_net.__version__}")
    assert _leftovers(netns) == ""
