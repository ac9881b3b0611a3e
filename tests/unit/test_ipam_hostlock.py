"""The per-node IPAM host lock: exclusion between open files, the block hint, fork,
and going on without a lock when the directory is unusable."""
from __future__ import annotations

import fcntl
import ipaddress
import os

import pytest

from calico_net.ipam.hostlock import HostLock

NET = ipaddress.ip_network("198.19.0.0/26")


def _held_elsewhere(path: str) -> bool:
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_lock_excludes_other_open_files(tmp_path):
    one = HostLock(str(tmp_path), "node-a")
    assert one.acquire()
    assert _held_elsewhere(one.path)
    one.release()
    assert not _held_elsewhere(one.path)
    one.close()


def test_nodes_have_separate_locks(tmp_path):
    a, b = HostLock(str(tmp_path), "node-a"), HostLock(str(tmp_path), "node-b")
    assert a.acquire() and b.acquire()  # would block if they shared a file
    assert a.path != b.path
    a.close()
    b.close()


def test_hint_round_trip_and_only_while_held(tmp_path):
    one = HostLock(str(tmp_path), "node-a")
    assert one.acquire()
    assert one.read_hint() is None  # a new file has none
    one.write_hint(NET, 42, b'{"cidr": "198.19.0.0/26"}')
    one.release()
    assert one.read_hint() is None  # not held: no hint
    two = HostLock(str(tmp_path), "node-a")
    assert two.acquire()
    assert two.read_hint() == (NET, 42, b'{"cidr": "198.19.0.0/26"}')
    two.write_hint(NET, 43, b"{}")  # shorter: no stale tail left behind
    assert two.read_hint() == (NET, 43, b"{}")
    two.close()
    one.close()


def test_damaged_hint_is_ignored(tmp_path):
    lock = HostLock(str(tmp_path), "node-a")
    assert lock.acquire()
    with open(lock.path, "wb") as f:
        f.write(b"garbage without a header")
    assert lock.read_hint() is None
    lock.close()


def test_unusable_directory_means_no_lock(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    lock = HostLock(str(blocker / "sub"), "node-a")
    assert lock.acquire() is False
    assert lock.read_hint() is None
    lock.write_hint(NET, 1, b"{}")  # does nothing, raises nothing
    lock.release()
    lock.close()


def test_forked_child_takes_its_own_lock(tmp_path):
    lock = HostLock(str(tmp_path), "node-a")
    assert lock.acquire()
    lock.release()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            # the inherited descriptor would share the parent's lock; the child opens its own
            code = 0 if lock.acquire() and _held_elsewhere(lock.path) else 2
            lock.release()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    lock.close()


@pytest.mark.parametrize("node", ["node-a", "node.with.dots", "n"])
def test_lock_file_name(tmp_path, node):
    assert HostLock(str(tmp_path), node).path == os.path.join(str(tmp_path), f"ipam-{node}.lock")


def test_dropping_the_object_closes_the_file(tmp_path):
    lock = HostLock(str(tmp_path), "node-a")
    assert lock.acquire()
    fd = lock._fd
    del lock
    with pytest.raises(OSError):
        os.fstat(fd)  # closed, and with it the lock is gone
    assert not _held_elsewhere(os.path.join(str(tmp_path), "ipam-node-a.lock"))
