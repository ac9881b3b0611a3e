"""calico.net modules against real etcd, through ansible-playbook.

One test per integration target (ansible_collections/calico/net/tests/integration/targets):
every case in a target runs its module four times - check mode, for real, check mode
again, for real again - and asserts that the first two report the same diff and a
change, the last two no change; bad input must fail with the field path at fault and
leave the etcd keyspace byte for byte as it was. The assertions live in the targets
(setup_calico_net/tasks/*.yml); this driver runs each target once on a clean keyspace
and fails with the tail of Ansible's output.

Speed: a module run costs about a second of CPU (Python, Ansible's module machinery,
importing calico_net), so the targets run in two lanes at once, each lane with its own
etcd (a bad-input case compares the whole keyspace before and after, so two targets must
never share one). The first test starts all selected targets; each test then reports its
own target's outcome.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from playbook_runner import TARGETS_DIR, PlaybookRun, module_targets, run_target, start_etcd

# The first test runs every target (several minutes), so the per-test timeout is wide.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

LANES = 2
TARGETS = module_targets()


def _cost(target: str) -> int:
    return len((TARGETS_DIR / target / "tasks" / "main.yml").read_text())


@pytest.fixture(scope="module")
def target_runs(request, tmp_path_factory) -> dict[str, PlaybookRun]:
    wanted = sorted({item.callspec.params["target"] for item in request.session.items
                     if item.originalname == "test_module_target" and item.module.__name__ == __name__},
                    key=_cost, reverse=True)
    lanes: list[list[str]] = [[] for _ in range(LANES)]
    for target in wanted:  # longest first, each to the least loaded lane
        min(lanes, key=lambda lane: sum(map(_cost, lane))).append(target)
    results: dict[str, PlaybookRun] = {}
    errors: list[BaseException] = []
    servers = []

    def lane(targets: list[str], server) -> None:
        try:
            client = server.client()
            for target in targets:
                client.delete_prefix("/calico/")
                started = time.monotonic()
                results[target] = run_target(target, server.env(), Path(tmp_path_factory.mktemp(target)))
                print(f"{target}: {time.monotonic() - started:.0f} s, rc={results[target].returncode}")
            client.close()
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    try:
        threads = []
        for targets in lanes:
            if not targets:
                continue
            server = start_etcd()
            servers.append(server)
            threads.append(threading.Thread(target=lane, args=(targets, server)))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for server in servers:
            server.stop()
    if errors:
        raise errors[0]
    return results


@pytest.mark.parametrize("target", TARGETS)
def test_module_target(target, target_runs):
    run = target_runs[target]
    assert run.returncode == 0, f"ansible-playbook failed for target {target}:\n{run.tail()}"
