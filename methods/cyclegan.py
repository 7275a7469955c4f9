"""CycleGAN: Zhu et al., "Unpaired Image-to-Image Translation using Cycle-Consistent Adversarial
Networks", ICCV 2017 (junyanz/pytorch-CycleGAN-and-pix2pix): the first row of every single-modal
table of the papers this benchmark reproduces.

CycleGAN is a framework rather than a loss on one generator: it needs a second generator
G_B: B -> A and a discriminator on domain A, so the method asks the task for it
(:data:`~methods.base.CYCLE_CONSISTENCY`, ``cycle_consistency()``) and adds no loss of its own; the
task trains the two-sided step of ``tasks/cyclegan.py`` (the compression task's CycleGAN teacher is
trained by the same code) and evaluates G_A as it evaluates every method's generator.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from benchmark.core.registry import register_method

from .base import CYCLE_CONSISTENCY, CycleConsistency, Method, PatchPolicy, TranslationPair


@dataclass
class CycleGANParams:
    """The official defaults (``models/cycle_gan_model.py``, ``modify_commandline_options``)."""

    lambda_A: float = 10.0
    """Weight of the cycle term A -> B -> A."""
    lambda_B: float = 10.0
    """Weight of the cycle term B -> A -> B."""
    lambda_identity: float = 0.5
    """Identity terms |G_A(b) - b| and |G_B(a) - a|, weighted lambda_identity x lambda_B and
    lambda_identity x lambda_A (0 = none)."""

    def validate(self) -> str | None:
        for name in ("lambda_A", "lambda_B", "lambda_identity"):
            if not getattr(self, name) >= 0:
                return f"{name} must be >= 0, got {getattr(self, name)!r}"
        return None


@register_method("cyclegan")
class CycleGAN(Method):
    """CycleGAN baseline: two generators, cycle-consistency and identity losses (Zhu et al., ICCV 2017)."""

    Params = CycleGANParams
    presets = {"cyclegan": {}}
    required_capabilities = frozenset({CYCLE_CONSISTENCY})
    # The official settings where they differ from the single-modal task's (CUT's) defaults: an image
    # pool of 50 per direction (train_options.py), init normal 0.02 (base_options.py), strided
    # convolutions and transposed convolutions (CycleGAN has no antialiased sampling). ResNet-9 with
    # ngf 64, a 3-layer PatchGAN with ndf 64, instance norm, lsgan, Adam 2e-4 (0.5, 0.999), linear
    # decay and no dropout are the task's defaults already.
    task_defaults = {"pool_size": 50, "init_type": "normal", "antialias": False, "antialias_up": False}

    @classmethod
    def patch_settings(cls, policy: PatchPolicy, params) -> dict:
        return {}  # no patches: nothing to follow

    def cycle_consistency(self) -> CycleConsistency:
        p = self.params
        return CycleConsistency(p.lambda_A, p.lambda_B, p.lambda_identity)

    def generator_losses(self, pair: TranslationPair, computed: Any = None) -> dict[str, torch.Tensor]:
        return {}  # every term is the framework's (tasks/cyclegan.py)
