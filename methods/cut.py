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

from .base import Method, TranslationPair
from .shared.heads import ProjectionHeads, heads_for_encoder
from .shared.nce import patch_nce
from .shared.patches import encode_pair, sample_keys_queries


@dataclass
class CUTParams:
    lambda_NCE: float = 1.0
    nce_idt: bool = True
    nce_T: float = 0.07
    num_patches: int = 256
    netF_nc: int = 256
    use_mlp: bool = True
    flip_equivariance: bool = False
    nce_includes_all_negatives_from_minibatch: bool = False

    def validate(self):
        if self.nce_T <= 0:
            return f"nce_T must be positive, got {self.nce_T}"
        if self.num_patches < 0:
            return f"num_patches must be >= 0 (0 = every location), got {self.num_patches}"
        return None


@register_method("cut")
class CUT(Method):
    """CUT: patch-wise InfoNCE between input and output generator features (Park et al., ECCV 2020)."""

    Params = CUTParams
    presets = {
        "cut": {},
        "fastcut": {"lambda_NCE": 10.0, "nce_idt": False, "flip_equivariance": True},
    }

    def __init__(self, params: CUTParams):
        super().__init__(params)
        self.heads: ProjectionHeads | None = None

    @property
    def uses_identity(self) -> bool:
        return self.params.nce_idt and self.params.lambda_NCE > 0

    @property
    def flips_input(self) -> bool:
        return self.params.flip_equivariance

    def initialize(self, pair: TranslationPair) -> None:
        self.heads = heads_for_encoder(pair.encode, pair.source, self.params.netF_nc, self.params.use_mlp)

    def nce_loss(self, source: torch.Tensor, output: torch.Tensor, pair: TranslationPair,
                 flipped: bool = False) -> torch.Tensor:
        """lambda_NCE * mean over layers of the mean per-patch InfoNCE (CUT's calculate_NCE_loss)."""
        p = self.params
        source_feats, output_feats = encode_pair(pair.encode, source, output, flipped)
        z = sample_keys_queries(self.heads, source_feats, output_feats, p.num_patches)
        per_layer = [patch_nce(q, k, p.nce_T, p.nce_includes_all_negatives_from_minibatch).mean()
                     for q, k in zip(z.queries, z.keys)]
        return p.lambda_NCE * torch.stack(per_layer).mean()

    def generator_losses(self, pair: TranslationPair, computed: Any = None) -> dict[str, torch.Tensor]:
        if self.params.lambda_NCE <= 0:
            return {}
        nce_x = self.nce_loss(pair.source, pair.output, pair, pair.output_flipped)
        if not self.uses_identity:
            return {"NCE": nce_x}
        nce_y = self.nce_loss(pair.target, pair.identity, pair, pair.output_flipped)
        return {"NCE": 0.5 * nce_x, "NCE_Y": 0.5 * nce_y}
