"""`molecule test` of the calico.net default scenario, inside `make test`.

The scenario (ansible_collections/calico/net/extensions/molecule/default) starts three
lab nodes of its own (systemd Debian 12 containers from the lab's images, network
calico-molecule 198.18.1.0/24), converges site.yml (etcd with TLS, calico/node, BGP
mesh, the default pool), converges again and requires changed=0, verifies with testinfra
(etcd over TLS and refusing plaintext, calico/node ready everywhere, BGP Established in
a full mesh, workloads on different nodes reaching each other, the sample policy
allowing and denying what it should) and destroys the nodes — also when a step fails.

Molecule runs as a subprocess from the collection root with this venv first on PATH,
holding an exclusive lock (/var/tmp/calico-molecule/lock) for the whole run: the
scenario's nodes have fixed names, so a second run started meanwhile (another pytest
of the same tree) waits for the first instead of tearing its nodes down.
Each step's wall time is printed (and written to /var/tmp/calico-molecule/timings.log);
a verify check that testinfra skipped for any reason but "not an etcd member" (a check
about etcd members, on the ToR peer) fails the test.
"""
from __future__ import annotations

import fcntl
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from playbook_runner import COLLECTION, VENV_BIN

pytestmark = [pytest.mark.slow, pytest.mark.root]

SCENARIO = COLLECTION / "extensions" / "molecule" / "default"
STATE = Path("/var/tmp/calico-molecule")
TIMINGS = STATE / "timings.log"
LOCK = STATE / "lock"
STEP_RE = re.compile(r"(?:\[default > (\w+)\]|default\s+➜\s+(\w+):)\s+Executing\s*$")
ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def molecule_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
    env.update(NO_COLOR="1", PY_COLORS="0", ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               MOLECULE_NO_LOG="false")
    for k in ("ANSIBLE_CONFIG", "ANSIBLE_COLLECTIONS_PATH", "ANSIBLE_COLLECTIONS_PATHS", "MOLECULE_GLOB"):
        env.pop(k, None)
    return env


@pytest.mark.timeout(2400)
def test_molecule_default_scenario(tmp_path):
    log_path = tmp_path / "molecule.log"
    steps: list[tuple[str, float]] = []
    STATE.mkdir(parents=True, exist_ok=True)
    with LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also on a crash
        t0 = time.monotonic()
        rc = run_molecule(log_path, steps)
        end = time.monotonic()
    report_and_check(rc, t0, end, steps, log_path)


def run_molecule(log_path: Path, steps: list[tuple[str, float]]) -> int:
    with log_path.open("w") as log:
        proc = subprocess.Popen([str(VENV_BIN / "molecule"), "test", "-s", "default"], cwd=COLLECTION,
                                env=molecule_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = ANSI_RE.sub("", raw)
            log.write(line)
            m = STEP_RE.search(line)
            if m:
                steps.append((m.group(1) or m.group(2), time.monotonic()))
        return proc.wait()


PER_HOST_SKIPS = {"not an etcd member"}


def report_and_check(rc: int, t0: float, end: float, steps: list[tuple[str, float]], log_path: Path) -> None:
    report = [f"{name}: {((steps[i + 1][1] if i + 1 < len(steps) else end) - start):.0f}s"
              for i, (name, start) in enumerate(steps)]
    summary = f"molecule test: {end - t0:.0f}s ({', '.join(report)})"
    print(summary)
    TIMINGS.parent.mkdir(parents=True, exist_ok=True)
    with TIMINGS.open("a") as fh:
        fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')}\trc={rc}\t{summary}\n")
    output = log_path.read_text()
    # Per-host applicability is the only skip the scenario's checks may make.
    skipped = sorted(set(re.findall(r"SKIPPED \[\d+\] [^:]+:\d+: (.+)", output)) - PER_HOST_SKIPS)
    assert not skipped, f"molecule verify skipped checks: {skipped}"
    assert rc == 0, f"molecule test failed (rc={rc}); {summary}\n" + "\n".join(output.splitlines()[-150:])
