"""What a row's results are made from besides its config: the dataset as its files are (its
``identity``: for a folder dataset a digest of every file's content) and the files that task options
name (``Task.input_files``: the compression task's teacher checkpoint). Each run records them in
metrics.json under ``inputs``; results made from other inputs than those there now are stale
(``benchmark.run_folder``). A value that cannot be read here is None and is not compared."""
from __future__ import annotations

import hashlib
import inspect
from pathlib import Path

from .core.errors import DataError
from .core.hashing import cached_sha256

INPUTS = "inputs"
"""The key of metrics.json that records them."""
CODE = "code"
"""The key of metrics.json that records the code of the row's method and task (:func:`code_digests`)."""


def file_digest(path: str | Path) -> str | None:
    """``sha256:<hex>`` of the file at ``path``; None when it cannot be read here."""
    try:
        return "sha256:" + cached_sha256(Path(path).expanduser())
    except OSError:
        return None


def dataset_identity(dataset) -> str | None:
    """``dataset.identity``; None when its files cannot be read here."""
    try:
        return dataset.identity
    except DataError:
        return None


def row_inputs(identity: str | None, files: dict[str, str] | None = None) -> dict[str, str | None]:
    """The inputs of a row made from the dataset of ``identity`` and the option ``files`` (name ->
    path), as they are now."""
    return {"dataset": identity, **{name: file_digest(path) for name, path in (files or {}).items()}}


def inputs_of_run(run, identity: str | None) -> dict[str, str | None]:
    """The inputs of ``run`` (a ``benchmark.config.Run``) made from the dataset of ``identity``: with
    the files its task's options name."""
    return row_inputs(identity, run.task.cls.input_files(run.task_options))


def input_changes(recorded, now: dict[str, str | None] | None) -> tuple[str, ...]:
    """``'<name>: then <recorded>, now <now>'`` for each input that ``recorded`` holds and that
    differs now (an input not readable here, or not recorded by an earlier version, is not compared)."""
    if not isinstance(recorded, dict) or not now:
        return ()
    return tuple(f"{name}: then {recorded[name]}, now {value}" for name, value in now.items()
                 if value is not None and name in recorded and recorded[name] != value)


def code_digests(*classes: type) -> dict[str, str]:
    """``module: sha256:<12 hex>`` of the source file of each class (a method's, a task's): the
    report warns where the runs of one table were made with different versions of that code (an
    edited plugin, an upgrade between seeds). Not a reason to refuse results: most edits change no
    number."""
    out = {}
    for cls in classes:
        try:
            source = Path(inspect.getsourcefile(cls) or "").read_bytes()
        except (OSError, TypeError):
            continue
        out[cls.__module__] = "sha256:" + hashlib.sha256(source).hexdigest()[:12]
    return out
