"""Run ansible-playbook against localhost for the calico.net module tests.

The module tests are integration targets inside the collection
(`ansible_collections/calico/net/tests/integration/targets/<name>/tasks/main.yml`), each
a role whose cases run every module four times (check mode, for real, check mode again,
for real again) and assert on the results themselves. This helper writes a one-play
playbook that applies such a target to localhost, with the collection used in place
(ANSIBLE_COLLECTIONS_PATH = the repository), the venv's python as the modules'
interpreter (it has `calico_net`), diff mode on, and ETCD_ENDPOINTS pointing at the
test etcd.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from etcd_server import EtcdServer, start_etcd as _start_etcd

REPO = Path(__file__).resolve().parents[2]
COLLECTION = REPO / "ansible_collections" / "calico" / "net"
TARGETS_DIR = COLLECTION / "tests" / "integration" / "targets"
VENV_BIN = Path(sys.executable).parent


@dataclass
class PlaybookRun:
    returncode: int
    output: str

    def tail(self, lines: int = 80) -> str:
        return "\n".join(self.output.splitlines()[-lines:])


def ansible_env(base_env: dict[str, str], tmp: Path) -> dict[str, str]:
    env = dict(base_env)
    env.update(
        ANSIBLE_COLLECTIONS_PATH=str(REPO),
        ANSIBLE_ROLES_PATH=str(TARGETS_DIR),
        ANSIBLE_LOCAL_TEMP=str(tmp / "ansible-local"),
        ANSIBLE_REMOTE_TEMP=str(tmp / "ansible-remote"),
        ANSIBLE_RETRY_FILES_ENABLED="0",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_HOST_KEY_CHECKING="0",
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
        ANSIBLE_CONFIG=str(tmp / "ansible.cfg"),  # ignore any ansible.cfg around
        ANSIBLE_PIPELINING="1",
    )
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
    (tmp / "ansible.cfg").write_text("[defaults]\n")
    return env


def run_playbook(playbook: Path | str, env: dict[str, str], tmp: Path, *, extra_vars: dict[str, Any] | None = None,
                 diff: bool = True, check: bool = False, timeout: float = 900) -> PlaybookRun:
    tmp.mkdir(parents=True, exist_ok=True)
    inventory = tmp / "inventory.ini"
    inventory.write_text(f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    cmd = [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), str(playbook)]
    if diff:
        cmd.append("--diff")
    if check:
        cmd.append("--check")
    if extra_vars:
        vars_file = tmp / "extra-vars.yml"
        vars_file.write_text(yaml.safe_dump(extra_vars))
        cmd += ["-e", f"@{vars_file}"]
    proc = subprocess.run(cmd, env=ansible_env(env, tmp), cwd=tmp, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)
    return PlaybookRun(proc.returncode, proc.stdout)


def run_tasks(tmp: Path, env: dict[str, str], tasks: list[dict], *, extra: tuple[str, ...] = (),
              **play_keys) -> tuple[int, str]:
    """A one-play playbook of `tasks` (plus play keywords: roles, vars) on localhost, run
    with `--diff -vvv` - all an operator could see of a converge - and its output."""
    tmp.mkdir(parents=True, exist_ok=True)
    inventory = tmp / "inventory.ini"
    inventory.write_text(f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    playbook = tmp / "play.yml"
    playbook.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, **play_keys,
                                         "tasks": tasks}], sort_keys=False))
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), str(playbook),
                           "--diff", "-vvv", *extra],
                          env=ansible_env(env, tmp), cwd=tmp, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=300)
    return proc.returncode, proc.stdout


def run_target(target: str, env: dict[str, str], tmp: Path, *, extra_vars: dict[str, Any] | None = None,
               tasks_from: str = "main") -> PlaybookRun:
    """Apply the integration target `target` (a role) to localhost; `tasks_from` picks
    one of its task files for targets that run in phases."""
    tmp.mkdir(parents=True, exist_ok=True)
    playbook = tmp / f"{target}-{tasks_from}.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": f"calico.net integration target {target} ({tasks_from})",
        "hosts": "localhost",
        "gather_facts": False,
        "tasks": [{"ansible.builtin.import_role": {"name": target, "tasks_from": tasks_from}}],
    }], sort_keys=False))
    return run_playbook(playbook, env, tmp, extra_vars=extra_vars)


def module_targets() -> list[str]:
    """Targets that need nothing but the session etcd (others have their own drivers)."""
    special = {"bgp_status_info", "etcd_member", "policy_example"}
    return sorted(
        d.name for d in TARGETS_DIR.iterdir()
        if (d / "tasks" / "main.yml").exists() and not d.name.startswith("setup_") and d.name not in special
    )


# --- throw-away etcd servers for parallel lanes -------------------------------------


def start_etcd(name: str = "ansible-lane") -> EtcdServer:
    """An etcd of the lane's own, its data on tmpfs when there is one (etcd fsyncs every
    write, and a busy disk makes that the slowest part of a module test)."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    return _start_etcd(name=name, data_parent=base)
