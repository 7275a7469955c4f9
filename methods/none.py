"""The GAN-only control: the task's framework with no patch-wise correspondence loss."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from benchmark.core.registry import register_method

from .base import Method, PatchPolicy, TranslationPair


@dataclass
class NoParams:
    pass


@register_method("none")
class NoMethod(Method):
    """GAN-only control: the task's own losses and nothing else."""

    Params = NoParams
    presets = {"none": {}}

    @classmethod
    def patch_settings(cls, policy: PatchPolicy, params) -> dict:
        return {}  # no patches: nothing to follow

    def generator_losses(self, pair: TranslationPair, computed: Any = None) -> dict[str, torch.Tensor]:
        return {}
