"""FV: FelixConfiguration logFilePath / logSeverityFile on the real agent process.

The shared FV agent (tests/fv/conftest.py) logs to stderr at Info. A FelixConfiguration
turns file logging on (a file under /var/log/, the only place the datastore may choose),
at Debug: the file gets debug lines the screen does not; at Warning, a later Info line
is not in the file; `none` closes it.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.root

L = None
CONVERGE = 60
V3 = "projectcalico.org/v3"
LOG_DIR = Path(f"/var/log/cnt2-{os.getpid()}")


@pytest.fixture(autouse=True, scope="module")
def _bind_helpers(fvlib):
    global L
    L = fvlib


@pytest.fixture
def log_dir():
    shutil.rmtree(LOG_DIR, ignore_errors=True)
    try:
        yield LOG_DIR
    finally:
        shutil.rmtree(LOG_DIR, ignore_errors=True)


def felix(spec: dict) -> dict:
    return {"apiVersion": V3, "kind": "FelixConfiguration", "metadata": {"name": "default"}, "spec": spec}


def read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def test_log_file_path_and_severity_follow_felix_configuration(clean, log_dir):
    env = clean
    path = log_dir / "felix.log"
    env.ds.apply_all([felix({"logFilePath": str(path), "logSeverityFile": "Debug",
                             "defaultEndpointToHostAction": "Accept"})])
    # each health request is a debug line (agent/httpserve.py)
    L.wait_for(lambda: env.agent.readiness() and "[DEBUG]" in read(path), CONVERGE,
               "debug lines in the log file", env.agent)
    text = read(path)
    assert f"[{env.agent.pid}]" in text     # the agent process's own lines
    assert "[DEBUG]" not in env.agent.log_tail(400)   # the screen stays at Info
    # Warning: the Info line of the next change is not written to the file
    env.ds.apply_all([felix({"logFilePath": str(path), "logSeverityFile": "Warning",
                             "defaultEndpointToHostAction": "Return"})])
    L.wait_for(lambda: "DefaultEndpointToHostAction changed to 'Return'" in env.agent.log_tail(400), CONVERGE,
               "the change logged on the screen", env.agent)
    assert "DefaultEndpointToHostAction changed to 'Accept'" in read(path)
    assert "DefaultEndpointToHostAction changed to 'Return'" not in read(path)
    size = len(read(path))
    # none: file logging stops (the screen still logs the change)
    env.ds.apply_all([felix({"logFilePath": "none", "logSeverityFile": "Debug",
                             "defaultEndpointToHostAction": "Drop"})])
    L.wait_for(lambda: "DefaultEndpointToHostAction changed to 'Drop'" in env.agent.log_tail(400), CONVERGE,
               "the change logged on the screen", env.agent)
    env.agent.readiness()
    assert len(read(path)) == size
    # a path the datastore may not choose is refused with its value, on the screen
    env.ds.apply_all([felix({"logFilePath": "/etc/cnt2-felix.log"})])
    L.wait_for(lambda: "/etc/cnt2-felix.log" in env.agent.log_tail(400), CONVERGE,
               "the refused path logged", env.agent)
    assert not Path("/etc/cnt2-felix.log").exists()
