# -*- coding: utf-8 -*-
# Copyright: calico.net contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""task_times: print the play's wall time and its slowest tasks at the end of a run.

A small aggregate callback for the molecule scenario (ansible-core has no profile_tasks;
that lives in ansible.posix, which this project does not depend on). Enabled through
the scenario's ansible.cfg (callbacks_enabled = task_times).
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: task_times
type: aggregate
short_description: Wall time of the run and its slowest tasks
description:
  - At the end of a playbook run, prints the total wall time and the ten slowest tasks.
requirements:
  - enable in ansible.cfg (callbacks_enabled)
"""

import time

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "task_times"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self.start = time.monotonic()
        self.current: tuple[str, float] | None = None
        self.times: list[tuple[float, str]] = []

    def _close(self) -> None:
        if self.current:
            name, t0 = self.current
            self.times.append((time.monotonic() - t0, name))
            self.current = None

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._close()
        self.current = (task.get_name(), time.monotonic())

    def v2_playbook_on_handler_task_start(self, task):
        self.v2_playbook_on_task_start(task, False)

    def v2_playbook_on_stats(self, stats):
        self._close()
        total = time.monotonic() - self.start
        self._display.display(f"task_times: run took {total:.1f}s; slowest tasks:")
        for secs, name in sorted(self.times, reverse=True)[:10]:
            self._display.display(f"task_times: {secs:7.1f}s  {name}")
