"""Build a cached file once when several processes want it at the same time (parallel workers or
``run`` commands at the start of a suite all asking for the same teacher, segmenter or real-image
features): the first takes a lock beside the cache entry and builds it, the others wait for the lock
and then load what it built.

The lock is an OS-level lock (``flock``, through ``filelock``): the OS releases it when its process
dies, so a killed process leaves nothing that blocks; the next waiter finds no cached file and
builds it itself."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Iterator

from filelock import FileLock, Timeout

__all__ = ["waiting_lock"]


@contextlib.contextmanager
def waiting_lock(path: str | Path, waiting: str, log: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the lock file ``path`` for the ``with`` block; when another process holds it, say
    ``waiting`` to ``log`` and wait for it. The caller checks its cache again inside the block (the
    other process may have built the entry meanwhile) and builds it only when it is still missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if log is not None:
            log(waiting)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()
