"""CUT and FastCUT: Park et al., "Contrastive Learning for Unpaired Image-to-Image Translation",
ECCV 2020 (taesungp/contrastive-unpaired-translation).

    L_PatchNCE(G, H, X) = E_x sum_l sum_s  l( z_hat_l^s, z_l^s, z_l^{S \\ s} )
    l(v, v+, v-) = -log  exp(v.v+/tau) / ( exp(v.v+/tau) + sum_n exp(v.v-_n/tau) )

with z = H_l(G_enc^l(x)) the projected source patches (keys) and z_hat = H_l(G_enc^l(G(x))) the
projected output patches (queries). CUT adds the identity term L_PatchNCE(G, H, Y) with weight 0.5
each; FastCUT drops it, uses lambda 10 and flip-equivariance augmentation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from benchmark.core.registry import register_method

from .base import Role, TranslationPair
from .shared.nce import patch_nce
from .shared.patch_contrastive import PatchNCEMethod, PatchNCEParams


@dataclass
class CUTParams(PatchNCEParams):
    lambda_NCE: float = 1.0
    nce_idt: bool = True

    weight_option = "lambda_NCE"
    identity_option = "nce_idt"


@register_method("cut")
class CUT(PatchNCEMethod):
    """CUT: patch-wise InfoNCE between input and output generator features (Park et al., ECCV 2020)."""

    Params = CUTParams
    presets = {
        "cut": {},
        "fastcut": {"lambda_NCE": 10.0, "nce_idt": False, "flip_equivariance": True},
        # models/sincut_model.py: CUT mode with lambda_NCE 4 (its patch settings -- one patch per crop,
        # negatives from the minibatch -- come from the single-image task).
        "sincut": {"lambda_NCE": 4.0},
    }

    def batch_coupling(self) -> str | None:
        """None: with ``nce_includes_all_negatives_from_minibatch`` the negatives are the keys of the
        whole batch, gathered from every process under torchrun (``patch_nce``)."""
        return None

    def nce_loss(self, pair: TranslationPair, source: Role, output: Role) -> torch.Tensor:
        """lambda_NCE * mean over layers of the mean per-patch InfoNCE (CUT's calculate_NCE_loss)."""
        p = self.params
        z = self.embed_patches(pair, source, output)
        per_layer = [patch_nce(q, k, p.nce_T, p.nce_includes_all_negatives_from_minibatch, self.environment.distributed).mean()
                     for q, k in zip(z.queries, z.keys)]
        return p.lambda_NCE * torch.stack(per_layer).mean()

    def generator_losses(self, pair: TranslationPair, computed: Any = None) -> dict[str, torch.Tensor]:
        if self.params.lambda_NCE <= 0:
            return {}
        nce_x = self.nce_loss(pair, "source", "output")
        if not self.uses_identity:
            return {"NCE": nce_x}
        nce_y = self.nce_loss(pair, "target", "identity")
        return {"NCE": 0.5 * nce_x, "NCE_Y": 0.5 * nce_y}
