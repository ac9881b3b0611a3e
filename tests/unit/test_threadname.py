"""The agent's threads carry their names in the kernel (calico_net.agent.threadname)."""
from __future__ import annotations

import threading

from calico_net.agent.threadname import name_os_thread


def _kernel_name_after(name_arg, thread_name):
    got = {}

    def run():
        name_os_thread(name_arg)
        got["comm"] = open(f"/proc/self/task/{threading.get_native_id()}/comm").read().strip()

    t = threading.Thread(target=run, name=thread_name)
    t.start()
    t.join()
    return got["comm"]


def test_a_thread_is_named_in_the_kernel_as_in_python():
    assert _kernel_name_after(None, "syncer") == "syncer"
    # Linux keeps 15 bytes of a name
    assert _kernel_name_after("a-very-long-thread-name", "x") == "a-very-long-thr"
