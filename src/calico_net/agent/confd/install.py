"""Putting a rendered bird.cfg in place: :func:`validate_bird_config` runs
``bird -p -c`` on it (BIRD's own verdict, its message kept and any password line
hidden) and :func:`write_if_changed` swaps a file atomically, touching nothing when
the bytes are the same.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from calico_net.agent.confd.birdctl import BirdError


class BirdConfigError(BirdError):
    """``bird -p`` rejected a configuration; the message is BIRD's, ``line`` the line
    of bird.cfg it points at (when it names one)."""

    @property
    def line(self) -> int | None:
        return self.number


def _find_bird(bird_binary: str) -> str:
    found = shutil.which(bird_binary)
    if found:
        return found
    for d in ("/usr/sbin", "/usr/local/sbin", "/sbin"):
        cand = os.path.join(d, bird_binary)
        if os.access(cand, os.X_OK):
            return cand
    raise BirdConfigError(f"BIRD binary {bird_binary!r} not found")


def validate_bird_config(text: str, bird_binary: str = "bird", timeout: float = 30) -> None:
    """Run ``bird -p -c`` on ``text``; raise :class:`BirdConfigError` with BIRD's
    message (file name replaced by ``bird.cfg``; the offending line is quoted unless
    it carries a password)."""
    binary = _find_bird(bird_binary)
    fd, path = tempfile.mkstemp(prefix="bird-check-", suffix=".cfg")
    try:
        with os.fdopen(fd, "w") as fh:  # mkstemp: mode 0600, passwords stay private
            fh.write(text)
        proc = subprocess.run(
            [binary, "-p", "-c", path],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    finally:
        os.unlink(path)
    if proc.returncode == 0:
        return
    message = (proc.stderr.strip() or proc.stdout.strip() or f"exit {proc.returncode}")
    message = message.replace(path, "bird.cfg")
    line_no = None
    m = re.search(r"bird\.cfg:([0-9]+):", message)
    if m:
        line_no = int(m.group(1))
        lines = text.splitlines()
        if 0 < line_no <= len(lines):
            quoted = lines[line_no - 1].strip()
            if "password" in quoted:
                quoted = "<line with a password>"
            message += f"\n  line {line_no}: {quoted}"
    raise BirdConfigError(message, line_no)


def write_if_changed(path: str | os.PathLike[str], text: str, mode: int = 0o640) -> bool:
    """Atomically replace ``path`` with ``text`` (temp file in the same directory,
    fsync, rename, fsync of the directory). Returns False, touching nothing, when the
    file already holds exactly these bytes. ``mode`` defaults to 0640 because the
    configuration may carry BGP passwords."""
    target = Path(path)
    data = text.encode()
    try:
        if target.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=str(target.parent))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(str(target.parent), os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return True
