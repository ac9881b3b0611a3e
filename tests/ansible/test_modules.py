"""calico.net modules against the session's real etcd, through ansible-playbook.

One test per integration target (ansible_collections/calico/net/tests/integration/targets):
every case in a target runs its module four times - check mode, for real, check mode
again, for real again - and asserts that the first two report the same diff and a
change, the last two no change; bad input must fail with the field path at fault and
leave the etcd keyspace byte for byte as it was. The assertions live in the targets
(setup_calico_net/tasks/*.yml); this driver runs each target once on a clean keyspace
and fails with the tail of Ansible's output.
"""
from __future__ import annotations

import pytest

from playbook_runner import module_targets, run_target

pytestmark = pytest.mark.slow


@pytest.fixture
def clean_etcd(etcd):
    client = etcd.client()
    client.delete_prefix("/calico/")
    yield etcd
    client.delete_prefix("/calico/")
    client.close()


@pytest.mark.parametrize("target", module_targets())
def test_module_target(target, clean_etcd, tmp_path):
    run = run_target(target, clean_etcd.env(), tmp_path)
    assert run.returncode == 0, f"ansible-playbook failed for target {target}:\n{run.tail()}"
