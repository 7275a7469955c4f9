"""Atomic file writes: write to a temporary file beside the target, then rename it into place, so a
crash never leaves a half-written file where a good one was. The file gets the permissions a plain
``open`` would give it (0666 less the umask), not the temporary file's 0600.

A write that fails for want of space or permission (a full disk, a quota, a read-only or foreign
folder) raises :class:`StorageError` naming the file, what was being written and the space left:
torch.save reports a full disk as ``RuntimeError: [enforce fail at inline_container.cc:672]
unexpected pos`` with the ``OSError`` only in its context, so the whole chain is searched."""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterator

from .errors import StorageError

STORAGE_ERRNOS = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some space or raise the quota",
                  errno.EFBIG: "free some space", errno.EROFS: "choose a writable output folder",
                  errno.EACCES: "choose a folder you may write to", errno.EPERM: "choose a folder you may write to"}
"""The errors of a write that the folder, not the program, causes, with what to do about each."""


def current_umask() -> int:
    """The process's umask: the permissions a file that ``open`` creates leaves out. Read from
    /proc where there is one (setting and restoring it, the only other way, is not thread-safe)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", encoding: str | None = None,
                 what: str = "") -> Iterator[IO]:
    """``with atomic_write(path) as f: ...`` writes ``path`` all at once or not at all; ``what``
    (e.g. "the checkpoint of run X at step 4") names the file in a :class:`StorageError`."""
    path = Path(path)
    make_folder(path.parent, what)
    try:
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise storage_error(exc, path, what) or exc
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp's 0600 would hide results from the group
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # frees the space the partial file took
        error = storage_error(exc, path, what)
        if error is None:
            raise
        raise error from exc


def make_folder(path: str | Path, what: str = "") -> Path:
    """``path.mkdir(parents=True, exist_ok=True)``, with a :class:`StorageError` when the disk or
    the permissions refuse it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise storage_error(exc, path, what or "a folder") or exc
    return path


def storage_error(exc: BaseException, path: str | Path, what: str = "") -> StorageError | None:
    """A :class:`StorageError` for ``exc`` (or an exception it was raised from) when that is a
    full disk, quota or permission error while writing ``path``; None for any other error."""
    cause: BaseException | None = exc
    seen = set()
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, StorageError):
            return cause
        if isinstance(cause, OSError) and cause.errno in STORAGE_ERRNOS:
            break
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    else:
        return None
    path = Path(path).absolute()
    reason = os.strerror(cause.errno)
    return StorageError(
        f"cannot write {what + ' to ' if what else ''}'{path}': {reason} "
        f"({errno.errorcode.get(cause.errno, cause.errno)}); {free_space(path)}. What that file held "
        f"before is kept; {STORAGE_ERRNOS[cause.errno]}, then run the same command again to resume")


def free_space(path: str | Path) -> str:
    """'<free> free of <total> on the file system of <folder>' for the nearest existing folder of ``path``."""
    folder = Path(path).absolute()
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    try:
        usage = shutil.disk_usage(folder)
    except OSError:
        return f"free space of '{folder}' unknown"
    return f"{format_bytes(usage.free)} free of {format_bytes(usage.total)} on the file system of '{folder}'"


def format_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"
