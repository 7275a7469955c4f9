"""Hneg-SRC: Jung, Kwon and Ye, "Exploring Patch-wise Semantic Relation for Contrastive Learning in
Image-to-Image Translation Tasks", CVPR 2022 (jcy132/Hneg_SRC, folder Single-modal/).

CUT's framework (generator-encoder features at CUT's layers, projection heads H_l, 256 shared random
locations per layer) with two losses on the projected patches: queries q = H(G_enc(G(x))) of the
output and keys k = H(G_enc(x)) of the source (detached).

Semantic relation consistency (SRC), per image and layer, with q, k L2-normalised again:

    S^q = q q^T,  S^k = k k^T                        (patch-patch similarity, no temperature)
    P^q_i = softmax_j(S^q_ij),  P^k_i = softmax_j(S^k_ij)
    L_SRC = sum_i JSD(P^q_i || P^k_i),  JSD(a || b) = 0.5 KL(a || m) + 0.5 KL(b || m),  m = (a + b) / 2

(summed over the whole P x P matrix, as ``nn.KLDivLoss(reduction='sum')`` in the official code).

Hard negatives: weights from the detached source similarity at temperature gamma,

    w_ij = softmax_j(S^k_ij / gamma) / max_j softmax_j(S^k_ij / gamma)   (diagonal filled with -10)

and the hardness-weighted decoupled contrastive loss (tau = 0.07),

    L_hDCE(i) = log( sum_{j != i} exp((w_ij q_i.k_j - q_i.k_i) / tau) + exp((-10 - q_i.k_i) / tau) ),

the positive left out of the denominator (the own entry, filled with -10, stays as in CUT).
The generator objective (``compute_G_loss``) is

    L_G = L_GAN + 0.5 (lambda_HDCE L_hDCE(X) + lambda_HDCE L_hDCE(Y)) + lambda_SRC L_SRC(X),

each contrastive term averaged over layers; L_hDCE(Y) compares the identity translation G(y) with y
(``--dce_idt``), there is no L1 identity loss. A curriculum lowers gamma linearly from
``HDCE_gamma`` to ``HDCE_gamma_min`` over training (``--use_curriculum``), optionally dropping it to
1 after a point (``--step_gamma``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from benchmark.core.registry import register_method
from benchmark.core.schedules import linear_ramp

from .base import TranslationPair
from .shared.dce import hardness_weights, patch_hdce
from .shared.heads import ProjectionHeads, l2_normalize
from .shared.patch_contrastive import PatchNCEMethod, PatchNCEParams
from .shared.patches import PatchEmbeddings


@dataclass
class HnegSRCParams(PatchNCEParams):
    """CUT's options (``nce_includes_all_negatives_from_minibatch``: treat the minibatch as one
    image, with negatives, hardness weights and SRC relations over all B x P patches, the official
    SinCUT setting; False = per image) and Hneg-SRC's."""

    lambda_HDCE: float = 1.0
    lambda_SRC: float = 1.0
    dce_idt: bool = False
    """hDCE also on (real_B, G(real_B)), both terms weighted 0.5 (``--dce_idt``)."""
    use_curriculum: bool = False
    HDCE_gamma: float = 1.0
    HDCE_gamma_min: float = 1.0
    step_gamma: bool = False
    """With ``use_curriculum``: gamma = 1 once ``progress >= step_gamma_progress``."""
    step_gamma_progress: float = 0.5
    """Official ``--step_gamma_epoch 200`` of the default 200 + 200 epochs, as a fraction of training."""
    no_Hneg: bool = False
    """Plain decoupled NCE, no hardness weights (``--no_Hneg``)."""
    layer_reduction: Literal["mean", "sum"] = "mean"
    """How the per-layer hDCE and SRC losses combine: their mean (``Single-modal/``, ``Multimodal/``)
    or their sum (``Compression/``: summed over the four distillation hooks)."""
    contrastive: Literal["dce", "infonce"] = "dce"
    """The contrastive term: the decoupled loss of the paper ('dce'), or InfoNCE with the positive in
    the denominator ('infonce': the InfoNCE rows of the paper's Table 4 ablation, with SRC and / or
    the hardness weights on CUT's PatchNCE; the official code has no such switch)."""
    head_width: Literal["netF_nc", "features"] = "netF_nc"
    """Width of the projection heads: ``netF_nc`` (CUT's header, ``Single-modal/``, ``Multimodal/``) or
    the widest feature layer's width ('features': ``Compression/``'s ``SuperMLP``, 4 x the teacher's
    ngf, the width of every hook)."""
    head_init: Literal["xavier", "normal"] = "xavier"
    """The heads' initialisation, gain 0.02: xavier-normal (CUT's ``init_type xavier``) or normal(0,
    0.02) (``Compression/``: ``networks.init_net`` with its defaults)."""
    hardness_needs_src: bool = False
    """True = ``Compression/``'s ``SRC_Loss``: with lambda_SRC 0 the hardness weights are dropped
    (uniform negatives, as ``no_Hneg``); False = ``Single-modal/``: they are used whatever lambda_SRC."""
    hdce_value: Literal["dce", "official"] = "dce"
    """What the logged HDCE numbers are (the gradient is the same): the decoupled loss itself, or the
    official monitoring value (cross entropy with the positive in the denominator)."""

    weight_option = "lambda_HDCE"
    identity_option = "dce_idt"
    """The identity pair only enters hDCE (SRC compares x and G(x) only)."""

    def validate(self):
        if problem := super().validate():
            return problem
        if self.HDCE_gamma <= 0 or self.HDCE_gamma_min <= 0:
            return f"HDCE_gamma and HDCE_gamma_min must be positive, got {self.HDCE_gamma}, {self.HDCE_gamma_min}"
        if not 0.0 <= self.step_gamma_progress <= 1.0:
            return f"step_gamma_progress must be in [0, 1], got {self.step_gamma_progress}"
        if self.layer_reduction not in ("mean", "sum"):
            return f"layer_reduction must be 'mean' or 'sum', got {self.layer_reduction!r}"
        if self.contrastive not in ("dce", "infonce"):
            return f"contrastive must be 'dce' or 'infonce', got {self.contrastive!r}"
        if self.head_width not in ("netF_nc", "features") or self.head_init not in ("xavier", "normal"):
            return "head_width must be 'netF_nc' or 'features' and head_init 'xavier' or 'normal'"
        if self.hdce_value not in ("dce", "official"):
            return f"hdce_value must be 'dce' or 'official', got {self.hdce_value!r}"
        return None


def curriculum_gamma(p: HnegSRCParams, progress: float) -> float:
    """The hardness temperature at ``progress`` in [0, 1] (``SRC_Loss.forward``): HDCE_gamma without
    the curriculum; else linear from HDCE_gamma to HDCE_gamma_min, and 1 from ``step_gamma_progress``
    on when ``step_gamma`` (the official applies step_gamma only inside the curriculum)."""
    if not p.use_curriculum:
        return p.HDCE_gamma
    if p.step_gamma and progress >= p.step_gamma_progress:
        return 1.0
    return linear_ramp(p.HDCE_gamma, p.HDCE_gamma_min, progress)


def patch_similarity(features: torch.Tensor) -> torch.Tensor:
    """(B, P, D) -> per-image similarity F F^T of the L2-normalised patches, (B, P, P)."""
    f = l2_normalize(features)
    return torch.bmm(f, f.transpose(1, 2))


def relation_jsd(query_similarity: torch.Tensor, key_similarity: torch.Tensor) -> torch.Tensor:
    """SRC per image, shape (B,): sum over rows i of JSD(softmax_j S^q_ij || softmax_j S^k_ij).

    The key similarity is detached. The official code softmaxes over dim 1 of the (symmetric)
    matrices, the transposes of these rows; the total over the matrix is the same."""
    log_q = F.log_softmax(query_similarity, dim=-1)
    log_k = F.log_softmax(key_similarity.detach(), dim=-1)
    log_m = torch.logaddexp(log_q, log_k) - math.log(2.0)
    kl_qm = (log_q.exp() * (log_q - log_m)).sum(dim=(-2, -1))
    kl_km = (log_k.exp() * (log_k - log_m)).sum(dim=(-2, -1))
    return 0.5 * (kl_qm + kl_km)


@register_method("hnegsrc")
class HnegSRC(PatchNCEMethod):
    """Hneg-SRC: semantic relation consistency + hardness-weighted decoupled PatchNCE (Jung et al., CVPR 2022)."""

    Params = HnegSRCParams
    presets = {
        # Single-modal/readme.md, horse2zebra command.
        "hnegsrc": {"dce_idt": True, "lambda_HDCE": 0.1, "lambda_SRC": 0.05, "use_curriculum": True,
                    "HDCE_gamma": 50.0, "HDCE_gamma_min": 10.0},
        # Compression/ (options/supernet_options.py defaults, which its scripts keep): header on the
        # four hooks, SRC and hDCE summed over them, gamma 50 -> 10 over the epochs, no identity term;
        # its SuperMLP as wide as the hooks' features (4 x the teacher's ngf), init_net's normal(0,
        # 0.02), and no hardness weights when lambda_SRC is 0 (distillers/base_resnet_distiller.py,
        # models/contra_loss.py).
        "hnegsrc_compression": {"dce_idt": False, "lambda_HDCE": 0.1, "lambda_SRC": 10.0, "nce_T": 0.07,
                                "use_curriculum": True, "HDCE_gamma": 50.0, "HDCE_gamma_min": 10.0,
                                "num_patches": 256, "layer_reduction": "sum", "head_width": "features",
                                "head_init": "normal", "hardness_needs_src": True},
        # Single-modal/readme.md, cityscapes command (trained there with --direction BtoA).
        "hnegsrc_city": {"dce_idt": True, "lambda_HDCE": 0.1, "lambda_SRC": 0.1, "use_curriculum": True,
                         "HDCE_gamma": 50.0, "HDCE_gamma_min": 10.0, "step_gamma": True,
                         "step_gamma_progress": 0.5},
        # Single-modal/readme.md, Monet (single-image, --model sincut) command; one patch per crop and
        # the minibatch's crops as negatives come from the single-image task.
        "hnegsrc_single": {"dce_idt": True, "lambda_HDCE": 4.0, "lambda_SRC": 10.0, "use_curriculum": True,
                           "HDCE_gamma": 200.0, "HDCE_gamma_min": 40.0},
    }

    def projection_heads(self, channels) -> ProjectionHeads:
        p = self.params
        return ProjectionHeads(channels, p.netF_nc if p.head_width == "netF_nc" else None, p.use_mlp,
                               init=p.head_init)

    @property
    def uniform_negatives(self) -> bool:
        """No hardness weights: ``no_Hneg``, or lambda_SRC 0 where hardness comes with SRC."""
        p = self.params
        return p.no_Hneg or (p.hardness_needs_src and p.lambda_SRC == 0)

    def _group(self, z: PatchEmbeddings) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(queries, keys), each (B, P, D) per image, or (1, B*P, D) when negatives come from the
        whole minibatch."""
        if not self.params.nce_includes_all_negatives_from_minibatch:
            return z.queries, z.keys
        queries, keys = ([x.reshape(1, -1, x.shape[-1]) for x in side] for side in (z.queries, z.keys))
        return queries, keys

    def hdce(self, queries, keys, weights) -> torch.Tensor:
        """lambda_HDCE * mean (or sum) over layers of the mean per-patch hDCE (``calculate_HDCE_loss``)."""
        p = self.params
        decoupled = p.contrastive == "dce"
        per_layer = [patch_hdce(q, k, w, p.nce_T, p.hdce_value, decoupled).mean()
                     for q, k, w in zip(queries, keys, weights)]
        return p.lambda_HDCE * self._over_layers(per_layer)

    def _over_layers(self, per_layer: list[torch.Tensor]) -> torch.Tensor:
        stacked = torch.stack(per_layer)
        return stacked.sum() if self.params.layer_reduction == "sum" else stacked.mean()

    def relations(self, queries, keys, gamma: float, with_src: bool = True):
        """Per layer: hardness weights from the key similarity, and lambda_SRC * mean (or sum) over
        layers of the per-image SRC, averaged over the images of the batch (``calculate_R_loss``)."""
        p = self.params
        weights, src = [], []
        for q, k in zip(queries, keys):
            key_sim = patch_similarity(k.detach())
            weights.append(None if self.uniform_negatives else hardness_weights(key_sim, gamma))
            if with_src:
                src.append(relation_jsd(patch_similarity(q), key_sim).mean())
        return weights, (p.lambda_SRC * self._over_layers(src) if with_src else None)

    def generator_losses(self, pair: TranslationPair, computed: Any = None) -> dict[str, torch.Tensor]:
        p = self.params
        if p.lambda_HDCE <= 0 and p.lambda_SRC <= 0:
            return {}
        # The official draws the locations on fake_B's features (the shapes of real_A's, so the same
        # draw) and reuses them for real_A, idt_B and real_B.
        z = self.embed_patches(pair, "source", "output")
        queries, keys = self._group(z)
        gamma = curriculum_gamma(p, pair.progress)
        weights, src = self.relations(queries, keys, gamma, with_src=p.lambda_SRC > 0)
        terms: dict[str, torch.Tensor] = {}
        if p.lambda_HDCE > 0:
            hdce_x = self.hdce(queries, keys, weights)
            if self.uses_identity:
                z_y = self.embed_patches(pair, "target", "identity", ids=z.ids)
                queries_y, keys_y = self._group(z_y)
                weights_y, _ = self.relations(queries_y, keys_y, gamma, with_src=False)
                terms["HDCE"] = 0.5 * hdce_x
                terms["HDCE_Y"] = 0.5 * self.hdce(queries_y, keys_y, weights_y)
            else:
                terms["HDCE"] = hdce_x
        if src is not None:
            terms["SRC"] = src
        return terms
