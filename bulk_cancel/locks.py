"""One advisory lock file per run ledger or job: overlapping runs (cron) cannot collide.

``flock`` locks die with their process, so a kill -9 never leaves a stale lock behind; the file
holds the holder's pid only to say who has it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


def take(lock_path: Path) -> int | str:
    """Lock *lock_path*: the open file descriptor, or the holder's pid if another has it."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        return holder
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def release(fd: int) -> None:
    """Unlock and close a descriptor from :func:`take`."""
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
