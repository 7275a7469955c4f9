"""What the patch-contrastive methods (CUT, NEGCUT, Hneg-SRC, GraphCL) share: their common options
and checks, the identity pair and flip-equivariance switches, and, for the methods that compare the
generator encoder's own features in CUT's way, projection heads sized from the first batch and the
projected keys and queries of a pair of images.

Every such method compares corresponding patches of the source x and the translation G(x) and,
when its identity switch is on and its loss weight positive, of the target-domain image y and its
identity translation G(y). The option names are CUT's (``nce_T``, ``num_patches``, ``netF_nc``,
...), kept by every method that took them over; each method names its own loss weight and identity
switch (``lambda_NCE`` / ``nce_idt``, ``lambda_HDCE`` / ``dce_idt``, ``lambda_GNN`` / ``gnn_idt``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

import torch

from ..base import STANDALONE, Method, MethodEnvironment, PatchPolicy, Role, TranslationPair
from .heads import ProjectionHeads, feature_channels
from .patches import PatchEmbeddings, pair_features, sample_keys_queries


@dataclass
class PatchContrastiveParams:
    """Options of every patch-contrastive method. Subclasses add theirs and name, in
    ``weight_option`` and ``identity_option``, the fields of their loss weight and identity switch."""

    nce_T: float = 0.07
    """Temperature tau of the contrastive loss."""
    num_patches: int = 256
    """Sampled patch locations per feature layer, shared by the images of a pair (0 = every location)."""
    netF_nc: int = 256
    """Width of the learned patch embedding."""
    flip_equivariance: bool = False
    """Randomly flip the generator's input horizontally (the output's features are flipped back)."""

    weight_option: ClassVar[str]
    identity_option: ClassVar[str]

    @property
    def loss_weight(self) -> float:
        return getattr(self, self.weight_option)

    @property
    def identity_term(self) -> bool:
        """The identity pair (y, G(y)) is compared too: its switch is on and the loss is used."""
        return getattr(self, self.identity_option) and self.loss_weight > 0

    def validate(self) -> str | None:
        """The first problem with these options, or None; subclasses check theirs after these."""
        if self.nce_T <= 0:
            return f"nce_T must be positive, got {self.nce_T}"
        if self.num_patches < 0:
            return f"num_patches must be >= 0 (0 = every location), got {self.num_patches}"
        return None


@dataclass
class PatchNCEParams(PatchContrastiveParams):
    """Options of the methods on CUT's PatchNCE set-up: projection heads H_l on the generator
    encoder's features, negatives from the same image or the whole minibatch."""

    use_mlp: bool = True
    """H_l = Linear-ReLU-Linear then L2 normalisation (CUT's 'mlp_sample'); False: L2 normalisation only."""
    nce_includes_all_negatives_from_minibatch: bool = False
    """Negatives from every image of the minibatch, not only from the query's own image."""


class PatchContrastiveMethod(Method):
    """Base of the patch-contrastive methods: the task's identity pair and flip switches follow the
    options."""

    params: PatchContrastiveParams

    @property
    def uses_identity(self) -> bool:
        return self.params.identity_term

    @property
    def flips_input(self) -> bool:
        return self.params.flip_equivariance


class PatchNCEMethod(PatchContrastiveMethod):
    """Base of the methods that compare projected generator-encoder features (CUT, NEGCUT, Hneg-SRC):
    ``self.heads`` are built on the first batch, sized from the encoder's features."""

    params: PatchNCEParams

    @classmethod
    def patch_settings(cls, policy: PatchPolicy, params) -> dict:
        """SinCUT's way: ``num_patches`` locations per image, and with negatives across the batch
        ``nce_includes_all_negatives_from_minibatch``."""
        overrides = {}
        if policy.patches_per_image is not None:
            overrides["num_patches"] = policy.patches_per_image
        if policy.negatives_across_batch:
            overrides["nce_includes_all_negatives_from_minibatch"] = True
        return overrides

    def __init__(self, params: PatchNCEParams, environment: MethodEnvironment = STANDALONE):
        super().__init__(params, environment)
        self.heads: ProjectionHeads | None = None

    def batch_coupling(self) -> str | None:
        if self.params.nce_includes_all_negatives_from_minibatch:
            return "nce_includes_all_negatives_from_minibatch takes negatives from the other images of the batch"
        return None

    def projection_heads(self, channels: Sequence[int]) -> ProjectionHeads:
        """New (randomly initialised, CPU) heads for encoder features of ``channels``."""
        return ProjectionHeads(channels, self.params.netF_nc, self.params.use_mlp)

    def initialize(self, pair: TranslationPair) -> None:
        """CUT's data-dependent initialisation: heads sized from the encoder's features."""
        self.heads = self.projection_heads(feature_channels(pair)).to(pair.source.device)

    def embed_patches(self, pair: TranslationPair, source: Role, output: Role,
                      ids: Sequence[torch.Tensor] | None = None) -> PatchEmbeddings:
        """Keys z = H(G_enc(source)) and queries z_hat = H(G_enc(output)) at ``num_patches`` random
        locations per layer (or at ``ids``), for the images of two roles of ``pair`` (e.g.
        "source", "output")."""
        source_feats, output_feats = pair_features(pair, source, output)
        return sample_keys_queries(self.heads, source_feats, output_feats, self.params.num_patches, ids)
