"""Atomic checkpoints and the random-number state needed to resume bit-exactly.

Checkpoints are read with ``torch.load(weights_only=True)``: tensors, containers and plain Python
values only, plus the few non-tensor types a run's checkpoint holds, allowed by name
(``CHECKPOINT_GLOBALS``: the NumPy array of NumPy's random state). Anything else pickled into a file
(code to run on loading, an unexpected object) is refused with a ``CheckpointError``, whether the
file is the run's own or came from another machine."""
from __future__ import annotations

from benchmark.core.atomic import atomic_write
import pickletools
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import CheckpointError

FORMAT_VERSION = 1


def _numpy_array_globals() -> list:
    """What pickle needs to rebuild NumPy's random state (a uint32 array): its reconstructor, the
    array and dtype classes, and the uint32 dtype class (NumPy >= 1.25 pickles dtypes by class)."""
    try:
        from numpy._core.multiarray import _reconstruct  # NumPy 2
    except ImportError:  # NumPy 1
        from numpy.core.multiarray import _reconstruct
    allowed = [_reconstruct, np.ndarray, np.dtype]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed.append(dtypes.UInt32DType)
    return allowed


CHECKPOINT_GLOBALS = _numpy_array_globals()
"""The non-tensor types a run's checkpoint may hold besides torch's own (``weights_only`` allows
tensors, dicts, lists, tuples, strings, numbers and None)."""
_ALLOWED_NAMES = {f"{g.__module__}.{g.__qualname__}" for g in CHECKPOINT_GLOBALS}


def load_weights_only(path: Path, map_location: str | torch.device = "cpu", mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` with ``CHECKPOINT_GLOBALS`` allowed. An unreadable
    file, or one holding any other pickled object, raises ``CheckpointError`` naming the file and
    what was refused (:func:`load_failure`)."""
    try:
        with torch.serialization.safe_globals(CHECKPOINT_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure: refused or corrupt
        raise CheckpointError(
            f"checkpoint '{Path(path).absolute()}' cannot be read with torch.load(weights_only=True): "
            f"{load_failure(path, exc)}; expected a file written by i2i-bench, holding tensors and "
            "plain values only. Move it away to restart that run") from exc


def load_failure(path: Path | str, exc: Exception) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed, for a message: the pickled globals it
    refused and how to list them without running anything, or the first line of the error. Torch's
    own message is not passed on: it advises re-running with ``weights_only=False``, which would run
    whatever the file holds."""
    path = Path(path).absolute()
    found, inspect = _pickled_globals(path)
    refused = [g for g in found if g not in _ALLOWED_NAMES]
    if refused:
        return (f"it holds pickled object(s) that are not tensors or plain values: {', '.join(refused)} "
                f"(refused before anything in it ran). To inspect it without running it: {inspect} "
                "(never load it with weights_only=False unless you trust where it came from)")
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(exc).splitlines()]
    lines = [line for line in lines if line and "weights_only` set to `False`" not in line
             and "weights_only=False" not in line]
    detail = next((line for line in lines if "Unsupported" in line),
                  next((line for line in lines if "WeightsUnpickler" in line), lines[0] if lines else ""))
    return f"{type(exc).__name__}: {detail}"


def _pickled_globals(path: Path) -> tuple[list[str], str]:
    """The globals (module.name) the pickles in ``path`` would import, read without unpickling, and
    a command that lists them: torch's own reader for its zip format, else a scan of the opcodes of
    a plain pickle (torch's legacy format, or a pickle planted under a checkpoint's name)."""
    try:
        return (list(torch.serialization.get_unsafe_globals_in_checkpoint(path)),
                f"python -c \"import torch; print(torch.serialization.get_unsafe_globals_in_checkpoint('{path}'))\"")
    except Exception:  # noqa: BLE001 - not torch's zip format
        pass
    found: list[str] = []
    try:
        with open(path, "rb") as f:
            while True:  # torch's legacy format is several pickles one after another
                strings: list[str] = []
                for opcode, arg, _ in pickletools.genops(f):
                    if opcode.name == "GLOBAL":
                        found.append(str(arg).replace(" ", "."))
                    elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                        found.append(f"{strings[-2]}.{strings[-1]}")
                    elif isinstance(arg, str):
                        strings.append(arg)
    except Exception:  # noqa: BLE001 - the end of the file, or bytes that are no pickle
        pass
    return list(dict.fromkeys(found)), f"python -m pickletools '{path}' (GLOBAL lines)"


def rng_state() -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the states ``rng_state`` took; the CPU generator's state is moved back to the CPU
    (a checkpoint loaded with ``map_location='cuda'`` puts it on the GPU)."""
    torch.set_rng_state(state["torch"].cpu())
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def atomic_save(obj: Any, path: Path, what: str = "") -> None:
    """Write ``obj`` with torch.save to a temporary file beside ``path``, then rename it into place:
    a crash, a full disk or a refused write never leaves a half-written checkpoint where a good one
    was (``what`` names the file in the error, see :func:`benchmark.core.atomic.atomic_write`)."""
    with atomic_write(path, what=what) as f:
        torch.save(obj, f)


def save_checkpoint(path: Path, run_id: str, step: int, task_state: dict) -> None:
    atomic_save({"format": FORMAT_VERSION, "run_id": run_id, "step": step,
                 "task": task_state, "rng": rng_state()}, path,
                what=f"the checkpoint of run '{run_id}' at step {step}")


def load_checkpoint(path: Path, run_id: str, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    ckpt = load_weights_only(path, map_location)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint '{path}' is not an i2i-bench checkpoint of format {FORMAT_VERSION}")
    if ckpt.get("run_id") != run_id:
        raise CheckpointError(f"checkpoint '{path}' belongs to run '{ckpt.get('run_id')}', not '{run_id}'")
    return ckpt
