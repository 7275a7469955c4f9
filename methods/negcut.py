"""NEGCUT and FastNEGCUT: Wang et al., "Instance-wise Hard Negative Example Generation for
Contrastive Learning in Unpaired Image-to-Image Translation", ICCV 2021 (WeilunWang/NEGCUT).

NEGCUT is CUT with the in-image negatives replaced by negatives that a generator N produces, and
that N learns adversarially to make hard. With z_hat = H_l(G_enc^l(G(x))) the projected output
patches (queries), z = H_l(G_enc^l(x)) the projected source patches (keys, detached) and

    v_l(x) = 1/|S_l| sum_{s in S_l} H'_l(G_enc^l(x))^s        (instance vector: every position)
    n_{l,j} = normalize( N_l([v_l(x) ; e_j]) ),  e_j ~ N(0, I_64),  j = 1..P    (P = 256)

where H' is an exponential moving average of the projection heads H (decay 0.9, updated after
every generator step), the per-patch loss is

    l(q, k+, n) = -log  exp(q.k+/tau) / ( exp(q.k+/tau) + sum_j exp(q.n_j/tau) )

and L_NCE = lambda_NCE * mean_l mean_s l(z_hat_l^s, z_l^s, n_l) (averaged 0.5/0.5 with the
identity term L_NCE(G(y), y) when ``nce_idt``). Each step, after the discriminator:

    N:      min_N  -L_NCE(z_hat.detach(), z.detach(), n)  +  lambda_MS * mean_l( -mean |n_{l,1..P/2} - n_{l,P/2+1..P}| )
    G, H:   min    lambda_GAN * L_GAN + L_NCE(z_hat, z, n)     (fresh noise and locations; N frozen)
    H' <- 0.9 H' + 0.1 H

The diversity ("mode seeking") term pushes the first half of each image's negatives away from the
second half. FastNEGCUT drops the identity term and uses lambda_NCE 10 with flip equivariance.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.core.registry import register_method

from .base import STANDALONE, AuxiliaryStep, MethodEnvironment, OptimizerDefaults, PatchPolicy, TranslationPair
from .shared.heads import ProjectionHeads, feature_channels, l2_normalize, xavier_init_
from .shared.nce import info_nce
from .shared.patch_contrastive import PatchNCEMethod, PatchNCEParams
from .shared.patches import all_locations, pair_features, sample_keys_queries


@dataclass
class NEGCUTParams(PatchNCEParams):
    """CUT's options (``num_patches`` is also the number of negatives generated per image and layer;
    ``nce_includes_all_negatives_from_minibatch``: each query also sees the negatives generated for
    the other images of the minibatch) and N's."""

    lambda_NCE: float = 1.0
    nce_idt: bool = True
    """Identity term NCE(G(y), y); official option default False, but NEGCUT_mode=NEGCUT (the
    default mode) sets it True."""
    lambda_MS_neg: float = 1.0
    """Weight of the negatives' diversity term in N's objective."""
    z_dim: int = 64
    """Width of the noise the negative generator N draws for each negative."""
    ema_decay: float = 0.9
    """H' <- decay H' + (1 - decay) H after every generator step (official ``accumulate``)."""
    lr_N: float | None = None
    """N's Adam learning rate; None = the task's lr, which is what the official code uses (its
    ``--lr_N`` option is parsed but never read)."""
    diversity_negatives: Literal["all", "last"] = "all"
    """'all': the diversity term averages over every set of negatives of N's step (source and
    identity pairs). 'last' = official: only the negatives of the step's last NCE computation
    (the identity pair's when nce_idt; no difference without it)."""
    detach_negatives: bool = False
    """False = official: in the generator step the negatives stay a function of G's source
    features (through the frozen N and H'), so L_NCE's gradient also reaches G's encoder along
    them. True: the negatives are constants for G."""

    weight_option = "lambda_NCE"
    identity_option = "nce_idt"

    def validate(self):
        if problem := super().validate():
            return problem
        if self.z_dim < 1:
            return f"z_dim must be >= 1, got {self.z_dim}"
        if not 0.0 <= self.ema_decay <= 1.0:
            return f"ema_decay must be in [0, 1], got {self.ema_decay}"
        if self.lr_N is not None and self.lr_N <= 0:
            return f"lr_N must be positive (or null for the task's lr), got {self.lr_N}"
        if self.lambda_MS_neg < 0:
            return f"lambda_MS_neg must be >= 0, got {self.lambda_MS_neg}"
        return None


def generated_negatives_nce(query: torch.Tensor, key: torch.Tensor, negatives: torch.Tensor,
                            tau: float = 0.07, negatives_from_minibatch: bool = False) -> torch.Tensor:
    """Per-patch InfoNCE with generated negatives (NEGCUT's ``LearnedPatchNCELoss``), shape (B, P).

    ``query`` and ``key`` are (B, P, D) unit vectors at the same P locations (``key`` is detached);
    ``negatives`` are (B, N, D). Logits are ``[q.k+, q.n_1, ..., q.n_N] / tau``; no entry is masked
    (the negatives are not the keys). With ``negatives_from_minibatch`` each query sees the B*N
    negatives of the whole minibatch."""
    key = key.detach()
    positive = (query * key).sum(-1, keepdim=True)  # (B, P, 1)
    if negatives_from_minibatch:
        pooled = negatives.reshape(-1, negatives.shape[-1])  # (B*N, D)
        logits = torch.einsum("bpd,nd->bpn", query, pooled)
    else:
        logits = torch.bmm(query, negatives.transpose(1, 2))  # (B, P, N)
    return info_nce(positive, logits, tau)


def negatives_diversity(negatives: torch.Tensor) -> torch.Tensor:
    """-mean |n_{1..N/2} - n_{N/2+1..N}| over images, pairs and dimensions (the official loss on
    ``n_k[:, :P//2] - n_k[:, P//2:]``; with an odd N the last negative is left out)."""
    half = negatives.shape[1] // 2
    if half == 0:
        return negatives.new_zeros(())
    return -(negatives[:, :half] - negatives[:, half:2 * half]).abs().mean()


class NegativeGenerator(nn.Module):
    """One MLP per layer: [instance vector ; noise] -> Linear(d + z, hidden)-ReLU-Linear(hidden, d),
    then L2 normalisation (official ``Negative_Generator(use_conv=False)``, netN='neg_gen_momentum')."""

    def __init__(self, dims: Sequence[int], hidden: int = 256, z_dim: int = 64, init_gain: float = 0.02):
        super().__init__()
        self.z_dim = z_dim
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(d + z_dim, hidden), nn.ReLU(), nn.Linear(hidden, d)) for d in dims)
        xavier_init_(self, init_gain)

    def forward(self, instances: Sequence[torch.Tensor], noise: Sequence[torch.Tensor],
                frozen: bool = False) -> list[torch.Tensor]:
        """(B, d) instance vectors and (B, N, z) noise per layer -> (B, N, d) unit negatives.
        ``frozen``: use detached weights, so gradients reach the inputs but not N."""
        out = []
        for mlp, inst, z in zip(self.mlps, instances, noise):
            x = torch.cat([inst.unsqueeze(1).expand(-1, z.shape[1], -1), z], dim=-1)
            first, last = mlp[0], mlp[2]
            if frozen:
                x = F.linear(F.relu(F.linear(x, first.weight.detach(), first.bias.detach())),
                             last.weight.detach(), last.bias.detach())
            else:
                x = mlp(x)
            out.append(l2_normalize(x))
        return out


@dataclass
class PairView:
    """Encoder features of one (source, output) pair and the instance vectors of the source; what
    ``auxiliary_step`` hands ``generator_losses`` (one per compared pair) through the task."""

    source_feats: list[torch.Tensor]
    output_feats: list[torch.Tensor]
    instances: list[torch.Tensor]


@register_method("negcut")
class NEGCUT(PatchNCEMethod):
    """NEGCUT: PatchNCE against adversarially generated instance-wise hard negatives (Wang et al., ICCV 2021)."""

    Params = NEGCUTParams
    presets = {
        "negcut": {},
        "fastnegcut": {"lambda_NCE": 10.0, "nce_idt": False, "flip_equivariance": True},
    }

    def __init__(self, params: NEGCUTParams, environment: MethodEnvironment = STANDALONE):
        super().__init__(params, environment)
        self.ema_heads: ProjectionHeads | None = None
        self.negative_generator: NegativeGenerator | None = None

    # -- life cycle --------------------------------------------------------------------------------
    def initialize(self, pair: TranslationPair) -> None:
        p = self.params
        channels = feature_channels(pair)
        self.heads = self.projection_heads(channels)
        # The official netF_ is a second PatchSampleF with its own random init, then averaged.
        self.ema_heads = self.projection_heads(channels).requires_grad_(False)
        dims = [p.netF_nc if p.use_mlp else c for c in channels]
        self.negative_generator = NegativeGenerator(dims, p.netF_nc, p.z_dim)
        self.to(pair.source.device)

    @classmethod
    def patch_settings(cls, policy: PatchPolicy, params: NEGCUTParams) -> dict | str:
        if policy.patches_per_image is None:
            return {}
        return (f"num_patches is also the number of negatives N generates per image: with "
                f"{policy.patches_per_image} per image its diversity term needs two and vanishes, and "
                "in the single-image task its NCE measured exactly 0.0 from the second step on (N's "
                "negatives and the heads collapse), so it would report a loss that trains nothing")

    def build_optimizers(self, defaults: OptimizerDefaults) -> None:
        self.optimizers["heads"] = torch.optim.Adam(
            self.heads.parameters(), lr=defaults.lr, betas=defaults.betas, weight_decay=defaults.weight_decay)
        lr_n = defaults.lr if self.params.lr_N is None else self.params.lr_N
        self.optimizers["negative_generator"] = torch.optim.Adam(
            self.negative_generator.parameters(), lr=lr_n, betas=defaults.betas,
            weight_decay=defaults.weight_decay)

    # -- pieces ------------------------------------------------------------------------------------
    def draw_noise(self, batch: int, count: int, device: torch.device) -> torch.Tensor:
        """(batch, count, z_dim) standard normal noise from the global (CPU) torch RNG, as the
        official code draws it, so runs are seeded and resumable on any device. Under torchrun every
        process draws the noise of the whole batch and keeps its own rows: the noise, and the RNG
        state after it, are one process's."""
        z_dim = self.params.z_dim
        return self.environment.distributed.draw_rows(lambda n: torch.randn(n, count, z_dim), batch).to(device)

    def instance_vectors(self, source_feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Mean over every position of the EMA heads' embeddings: (B, d) per layer."""
        return [e.mean(dim=1) for e in self.ema_heads(all_locations(source_feats))]

    def encode_views(self, pair: TranslationPair) -> list[PairView]:
        """Features of (source, output), and of (target, identity) when the identity term is on."""
        sides = [("source", "output")]
        if self.uses_identity:
            sides.append(("target", "identity"))
        views = []
        for source, output in sides:
            # Unless detached, the instance vectors send gradients into the source's features.
            source_feats, output_feats = pair_features(pair, source, output,
                                                       fresh_keys=not self.params.detach_negatives)
            if self.params.detach_negatives:
                with torch.no_grad():
                    instances = self.instance_vectors([f.detach() for f in source_feats])
            else:
                instances = self.instance_vectors(source_feats)
            views.append(PairView(source_feats, output_feats, instances))
        return views

    def queries_keys_negatives(self, view: PairView, frozen: bool, detach: bool):
        """Fresh random locations and noise: per layer (queries, keys, negatives). ``detach``: the
        queries, keys and N's input carry no graph (N's step)."""
        p = self.params
        with torch.set_grad_enabled(torch.is_grad_enabled() and not detach):
            z = sample_keys_queries(self.heads, view.source_feats, view.output_feats, p.num_patches)
        instances = [v.detach() for v in view.instances] if detach else view.instances
        noise = [self.draw_noise(v.shape[0], p.num_patches or idx.numel(), v.device)
                 for v, idx in zip(instances, z.ids)]
        negatives = self.negative_generator(instances, noise, frozen=frozen)
        return z.queries, z.keys, negatives

    def _nce(self, queries, keys, negatives) -> torch.Tensor:
        """lambda_NCE * mean over layers of the mean per-patch loss (official calculate_NCE_loss)."""
        p = self.params
        per_layer = [generated_negatives_nce(q, k, n, p.nce_T, p.nce_includes_all_negatives_from_minibatch).mean()
                     for q, k, n in zip(queries, keys, negatives)]
        return p.lambda_NCE * torch.stack(per_layer).mean()

    def negative_objective(self, views: Sequence[PairView]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """N's loss (official compute_N_loss): -L_NCE + lambda_MS * diversity. Returns
        (loss, L_NCE, diversity); only N's parameters are in its graph."""
        p = self.params
        nces, diversities = [], []
        for view in views:
            queries, keys, negatives = self.queries_keys_negatives(view, frozen=False, detach=True)
            nces.append(self._nce(queries, keys, negatives))
            diversities.append(torch.stack([negatives_diversity(n) for n in negatives]).mean())
        nce = torch.stack(nces).mean()  # 0.5 * (NCE + NCE_Y) with the identity term
        diversity = torch.stack(diversities).mean() if p.diversity_negatives == "all" else diversities[-1]
        return -nce + p.lambda_MS_neg * diversity, nce, diversity

    # -- steps -------------------------------------------------------------------------------------
    def auxiliary_step(self, pair: TranslationPair) -> AuxiliaryStep:
        """One Adam step of N on its adversarial objective. The encoder features and instance
        vectors (``list[PairView]``) are returned for this step's generator losses (G and H' do not
        change in between, so they equal what the official code recomputes)."""
        if self.params.lambda_NCE <= 0:
            return AuxiliaryStep()
        views = self.encode_views(pair)
        optimizer = self.optimizers["negative_generator"]
        optimizer.zero_grad(set_to_none=True)
        loss, nce, diversity = self.negative_objective(views)
        loss.backward()
        optimizer.step()
        return AuxiliaryStep({"N": loss.item(), "N_div": diversity.item()}, computed=views)

    def generator_losses(self, pair: TranslationPair,
                         computed: list[PairView] | None = None) -> dict[str, torch.Tensor]:
        """L_NCE with fresh locations and noise through the frozen N; ``computed``: the views of
        this step's ``auxiliary_step`` (else the features are encoded here)."""
        if self.params.lambda_NCE <= 0:
            return {}
        views = computed if computed is not None else self.encode_views(pair)
        losses = [self._nce(*self.queries_keys_negatives(view, frozen=True, detach=False)) for view in views]
        if len(losses) == 1:
            return {"NCE": losses[0]}
        return {"NCE": 0.5 * losses[0], "NCE_Y": 0.5 * losses[1]}

    @torch.no_grad()
    def after_generator_step(self) -> None:
        """H' <- decay H' + (1 - decay) H (official ``accumulate(netF_, netF)``)."""
        decay = self.params.ema_decay
        for ema, current in zip(self.ema_heads.parameters(), self.heads.parameters()):
            ema.mul_(decay).add_(current, alpha=1.0 - decay)
