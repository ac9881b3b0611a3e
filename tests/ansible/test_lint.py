"""ansible-lint, production profile, zero findings on what the collection ships: its
roles, playbooks and modules (`ansible_collections/calico/net/.ansible-lint`).

Runs offline, with the collection in place (ANSIBLE_COLLECTIONS_PATH = the repository)
so the playbooks' calico.net roles and modules resolve. ansible-lint comes from the
test extra; missing, the test fails rather than skips.
"""
from __future__ import annotations

import os
import subprocess

import pytest

from playbook_runner import COLLECTION, REPO, VENV_BIN

pytestmark = pytest.mark.slow


def test_ansible_lint_production_profile_has_no_findings(tmp_path):
    lint = VENV_BIN / "ansible-lint"
    if not lint.exists():
        pytest.fail(f"{lint} is missing: the test extra of pyproject.toml must include ansible-lint")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO), NO_COLOR="1", HOME=str(tmp_path),
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-local"), PATH=f"{VENV_BIN}:{os.environ.get('PATH', '')}")
    proc = subprocess.run([str(lint), "--nocolor", "--format=pep8", "roles/", "playbooks/", "plugins/"],
                          cwd=COLLECTION, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert "Profile 'production' was required, and it passed" in proc.stdout, proc.stdout[-3000:]
    assert "0 failure(s), 0 warning(s)" in proc.stdout
