"""Atomic checkpoints and the random-number state needed to resume bit-exactly."""
from __future__ import annotations

from benchmark.core.atomic import atomic_write
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import CheckpointError

FORMAT_VERSION = 1


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


def atomic_save(obj: Any, path: Path) -> None:
    """Write ``obj`` with torch.save to a temporary file beside ``path``, then rename it into place:
    a crash never leaves a half-written checkpoint where a good one was."""
    with atomic_write(path) as f:
        torch.save(obj, f)


def save_checkpoint(path: Path, run_id: str, step: int, task_state: dict) -> None:
    atomic_save({"format": FORMAT_VERSION, "run_id": run_id, "step": step,
                 "task": task_state, "rng": rng_state()}, path)


def load_checkpoint(path: Path, run_id: str, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise CheckpointError(f"checkpoint '{path}' cannot be read ({type(exc).__name__}: {exc}); "
                              "expected a file written by i2i-bench. Move it away to restart that run") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint '{path}' is not an i2i-bench checkpoint of format {FORMAT_VERSION}")
    if ckpt.get("run_id") != run_id:
        raise CheckpointError(f"checkpoint '{path}' belongs to run '{ckpt.get('run_id')}', not '{run_id}'")
    return ckpt
