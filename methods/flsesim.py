"""F-LSeSim: Zheng, Cham and Cai, "The Spatially-Correlative Loss for Various Image Translation
Tasks", CVPR 2021 (lyndonzheng/F-LSeSim: models/sc_model.py, models/losses.py).

Spatially-correlative maps. For a feature map f (VGG16 relu3_1, relu4_1, relu4_3, optionally through
learned 1x1-conv heads), centred by its spatial mean, and a query location i with the key locations
K(i) of a patch_size x patch_size window around it (the whole map when the window is not smaller
than the map):

    S_i = tanh( f_i . f_K(i) / (10 C) )                 (default: f / sqrt(C), dot product, tanh(./10))
    S_i = (f_i / ||f_i||) . (f_K(i) / ||f_K(i)||)        (use_norm: cosine similarity)

The structure loss compares the maps of the source x and the translation G(x) at the same 256 random
query locations, after keeping only the entries of each row at or above its (int(N/4)+1)-th largest
value in the output's map (zeroing the others in both maps):

    L_cos = mean_i  rho( 1 - cos(S_i^x, S_i^G(x)) ),   rho = SmoothL1 (L1 with use_norm)
    L_l1  = mean    rho( (N/n) S^x - (N/n) S^G(x) ),    n = int(N/4)

and the generator adds lambda_spatial * mean over layers of it (FSeSim: fixed VGG features).

LSeSim (learned_attn) first trains the heads, before each generator step and with their own optimiser,
with an InfoNCE loss on L2-normalised maps: for the maps s (source x), t (x' = G(x) detached, or a
colour-jittered copy of x with augment) and o (an 'other' image: y, or a jittered y, flipped in H and W)

    L_F = -log exp(s_i.t_i/T) / ( sum_j exp(s_i.t_j/T) + sum_j exp(s_i.o_j/T) + sum_j exp(t_i.o_j/T) )

and the generator loss then uses the learned heads' maps (the heads get no gradient from it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
import torchvision.transforms as T
import torchvision.transforms.v2.functional as TF
from torch import nn

from benchmark.core.distributed import SINGLE_PROCESS, Distributed
from benchmark.core.registry import register_method

from .base import (OUTPUT_GRADIENT, STANDALONE, AuxiliaryStep, Method, MethodEnvironment, OptimizerDefaults,
                   PatchPolicy, TranslationPair)
from .shared.nce import info_nce
from .shared.patches import sample_locations
from .shared.vgg import VGG16_LAYERS, FrozenVGG16, backbone_notes, vgg16_weight_keys


@dataclass
class FLSeSimParams:
    lambda_spatial: float = 10.0
    """Weight of the spatially-correlative loss between the source's and the output's self-similarity maps."""
    lambda_spatial_idt: float = 0.0
    """Weight of the spatially-correlative loss between y and G(y) (official default 0)."""
    lambda_identity: float = 0.0
    """Weight of the L1 identity loss |y - G(y)| (official default 0)."""
    attn_layers: list[str] = field(default_factory=lambda: ["relu3_1", "relu4_1", "relu4_3"])
    """VGG16 layers (official '--attn_layers 4,7,9', indices into their VGG16 wrapper's outputs)."""
    patch_nums: int = 256
    """Query locations per layer (shared by every image); <= 0: every location with whole-map keys."""
    patch_size: int = 64
    """Side of the key window around each query (whole map when not smaller than the map)."""
    loss_mode: Literal["cos", "l1"] = "cos"
    """How two self-similarity maps are compared: cosine similarity of each location's row, or L1."""
    use_norm: bool = False
    """Cosine similarity maps (and an L1 criterion) instead of tanh(dot / 10) maps (and SmoothL1)."""
    learned_attn: bool = False
    """LSeSim: learned 1x1-conv heads on the VGG features, trained with InfoNCE before each G step."""
    augment: bool = False
    """LSeSim: add colour-jittered copies of x (positives) and y (negatives) to the head training."""
    T: float = 0.07
    """Temperature of the heads' InfoNCE loss."""
    head_init_gain: float = 0.02
    """Std of the heads' normal initialisation (official SpatialCorrelativeLoss init_type 'normal')."""
    official_window_rows: bool = False
    """Reproduce the official window placement for non-square maps (row = id // height); the default
    uses row = id // width. Identical for square maps."""
    vgg_weights: Literal["imagenet", "untrained"] = "imagenet"

    def validate(self):
        if self.T <= 0:
            return f"T must be positive, got {self.T}"
        if self.patch_size < 1:
            return f"patch_size must be >= 1, got {self.patch_size}"
        if not self.attn_layers:
            return "attn_layers must name at least one VGG16 layer"
        unknown = [name for name in self.attn_layers if name not in VGG16_LAYERS]
        if unknown:
            return f"unknown VGG16 layer {unknown[0]!r} in attn_layers; valid: {', '.join(VGG16_LAYERS)}"
        if self.augment and not self.learned_attn:
            return "augment only affects the learned heads' training: set learned_attn too"
        return None


# --- spatially-correlative maps -------------------------------------------------------------------

def window_key_ids(ids: torch.Tensor, height: int, width: int, patch_size: int,
                   official_rows: bool = False) -> torch.Tensor:
    """Flat key positions (P, patch_size**2) of the patch_size x patch_size window around each query
    position in ``ids``, shifted to lie inside the map (official PatchSim.select_patch)."""
    stride = height if official_rows else width
    rows, cols = ids // stride, ids % stride
    top = (rows - patch_size // 2).clamp(0, height - patch_size)
    left = (cols - patch_size // 2).clamp(0, width - patch_size)
    offsets = torch.arange(patch_size, device=ids.device)
    r = (top[:, None] + offsets)[:, :, None]
    c = (left[:, None] + offsets)[:, None, :]
    return (r * width + c).reshape(ids.shape[0], -1)


def correlation_map(feat: torch.Tensor, ids: torch.Tensor | None, patch_size: int, use_norm: bool,
                    official_rows: bool = False) -> torch.Tensor:
    """Spatially-correlative map (B, P, K) of ``feat`` (B, C, H, W) for the query positions ``ids``
    (P flat positions, or None for all H*W with whole-map keys)."""
    batch, channels, height, width = feat.shape
    feat = feat - feat.mean(dim=(2, 3), keepdim=True)
    feat = F.normalize(feat, dim=1) if use_norm else feat / math.sqrt(channels)
    flat = feat.flatten(2)  # (B, C, HW)
    if ids is None:
        sim = torch.bmm(flat.transpose(1, 2), flat)
    else:
        ids = ids.to(feat.device)
        queries = flat[:, :, ids].transpose(1, 2)  # (B, P, C)
        if patch_size < height and patch_size < width:
            keys = flat[:, :, window_key_ids(ids, height, width, patch_size, official_rows)]  # (B, C, P, K)
            sim = torch.einsum("bpc,bcpk->bpk", queries, keys)
        else:
            sim = torch.bmm(queries, flat)  # (B, P, HW)
    return sim if use_norm else torch.tanh(sim / 10)


def structure_loss(sim_src: torch.Tensor, sim_tgt: torch.Tensor, mode: str = "cos",
                   use_norm: bool = False) -> torch.Tensor:
    """Official SpatialCorrelativeLoss.compare_sim without an 'other' map: keep, per row, the entries
    of the output map ``sim_tgt`` at or above its (int(N/4)+1)-th largest value (zero the rest in both
    maps), then the 'cos' or 'l1' comparison; the criterion is L1 with use_norm, else SmoothL1."""
    n = sim_src.shape[-1]
    num = int(n / 4)
    threshold = sim_tgt.sort(dim=-1, descending=True).values[..., num:num + 1]
    keep = sim_tgt >= threshold
    src = torch.where(keep, sim_src, torch.zeros_like(sim_src))
    tgt = torch.where(keep, sim_tgt, torch.zeros_like(sim_tgt))
    criterion = F.l1_loss if use_norm else F.smooth_l1_loss
    if mode == "cos":
        cos = F.cosine_similarity(src, tgt, dim=-1)
        return criterion(cos, torch.ones_like(cos))
    if mode == "l1":
        scale = n / max(num, 1)
        return criterion(scale * src, scale * tgt)
    raise ValueError(f"unknown loss_mode {mode!r}; valid: cos, l1")


def map_nce(sim_src: torch.Tensor, sim_tgt: torch.Tensor, sim_other: torch.Tensor, tau: float) -> torch.Tensor:
    """The heads' contrastive loss (official compare_sim with an 'other' map), per query (B, P): the
    positive of source row i is target row i; the negatives are the other target rows, every 'other'
    row, and the similarities of target row i with every 'other' row (all on L2-normalised rows)."""
    s, t, o = (F.normalize(x, dim=-1) for x in (sim_src, sim_tgt, sim_other))
    batch, patches, _ = s.shape
    self_sim = torch.bmm(s, t.transpose(1, 2))  # (B, P, P)
    positive = self_sim.diagonal(dim1=1, dim2=2).unsqueeze(-1)
    off_diagonal = ~torch.eye(patches, dtype=torch.bool, device=s.device)
    negatives = torch.cat([self_sim[:, off_diagonal].view(batch, patches, patches - 1),
                           torch.bmm(s, o.transpose(1, 2)), torch.bmm(t, o.transpose(1, 2))], dim=-1)
    return info_nce(positive, negatives, tau)


# --- LSeSim's learned heads and colour jitter -----------------------------------------------------

class AttentionHeads(nn.Module):
    """Per layer a 1x1 conv C -> max(32, C // 4), ReLU, 1x1 conv (official create_conv), initialised
    with N(0, gain) weights and zero biases."""

    def __init__(self, channels: Sequence[int], init_gain: float = 0.02):
        super().__init__()
        self.convs = nn.ModuleList()
        for c in channels:
            out = max(32, c // 4)
            self.convs.append(nn.Sequential(nn.Conv2d(c, out, 1), nn.ReLU(), nn.Conv2d(out, out, 1)))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, init_gain)
                nn.init.zeros_(m.bias)

    def forward(self, feats: Sequence[torch.Tensor], train: bool = True) -> list[torch.Tensor]:
        """With ``train=False`` the weights are used detached: gradients reach the features only."""
        if train:
            return [conv(f) for conv, f in zip(self.convs, feats)]
        out = []
        for conv, f in zip(self.convs, feats):
            weights = {name: p.detach() for name, p in conv.named_parameters()}
            out.append(torch.func.functional_call(conv, weights, (f,)))
        return out


JITTER = dict(brightness=(0.5, 1.5), contrast=(0.5, 1.5), saturation=(0.5, 1.5), hue=(-0.3, 0.3))
"""torchvision ColorJitter(brightness=0.5, contrast=0.5, saturation=0.5, hue=0.3) ranges."""


def color_jitter(images: torch.Tensor, share: Distributed = SINGLE_PROCESS) -> torch.Tensor:
    """ColorJitter(0.5, 0.5, 0.5, 0.3) of each image of a [-1, 1] batch, with its own random factors
    and order (torchvision's ColorJitter.get_params, i.e. the global torch RNG), on any device.
    ``share``: under torchrun ``images`` are this process's rows of the whole batch; the factors of
    every image of the whole batch are drawn, in order, as one process draws them, and this
    process's applied."""
    n = images.shape[0]
    mine = share.rows(n * share.world_size) if share.enabled else slice(0, n)
    scaled = (images + 1) / 2
    out = []
    for i in range(n * share.world_size):
        order, b, c, s, h = T.ColorJitter.get_params(
            JITTER["brightness"], JITTER["contrast"], JITTER["saturation"], JITTER["hue"])
        if not mine.start <= i < mine.stop:
            continue
        image = scaled[i - mine.start]
        for op in order.tolist():
            if op == 0:
                image = TF.adjust_brightness(image, b)
            elif op == 1:
                image = TF.adjust_contrast(image, c)
            elif op == 2:
                image = TF.adjust_saturation(image, s)
            else:
                image = TF.adjust_hue(image, h)
        out.append(image)
    return torch.stack(out) * 2 - 1


# --- the method -------------------------------------------------------------------------------------

@dataclass
class PairFeatures:
    """VGG16 features of the source x (no gradient) and of the translation G(x) (with gradient),
    per layer: what LSeSim's head step computes and hands the generator loss of the same step."""

    source: list[torch.Tensor]
    output: list[torch.Tensor]


@register_method("flsesim")
class FLSeSim(Method):
    """F/LSeSim: spatially-correlative loss on fixed or learned VGG16 self-similarity maps (Zheng et al., 2021)."""

    Params = FLSeSimParams
    presets = {
        "fsesim": {},
        # The learned version needs local windows: the author sets --patch_size 32 for it
        # (lyndonzheng/F-LSeSim issue #1; scripts/train_sc.sh: '--learned_attn --augment').
        "lsesim": {"learned_attn": True, "augment": True, "patch_size": 32},
    }
    task_defaults = {"lr": 1e-4, "pool_size": 50}
    """options/train_options.py defaults used by scripts/train_sc.sh (CUT's are 2e-4 and 0)."""

    required_capabilities = frozenset({OUTPUT_GRADIENT})  # its loss is on the output's pixels (frozen VGG16)

    @classmethod
    def required_weights(cls, params: FLSeSimParams) -> list[str]:
        return vgg16_weight_keys(params.vgg_weights)

    @classmethod
    def patch_settings(cls, policy: PatchPolicy, params: FLSeSimParams) -> dict | str:
        return ("its loss compares the self-similarity maps of patch_nums query locations within each image "
                "and has no setting that limits them per image or takes its comparisons across the batch"
                if policy.limits else {})

    def __init__(self, params: FLSeSimParams, environment: MethodEnvironment = STANDALONE):
        super().__init__(params, environment)
        self.vgg: FrozenVGG16 | None = None
        self.heads: AttentionHeads | None = None

    @property
    def uses_identity(self) -> bool:
        return self.params.lambda_spatial_idt > 0 or self.params.lambda_identity > 0

    def initialize(self, pair: TranslationPair) -> None:
        p = self.params
        device = pair.source.device
        self.vgg = FrozenVGG16(p.attn_layers, p.vgg_weights, self.environment.weights_dir).to(device)
        if p.learned_attn:
            self.heads = AttentionHeads(self.vgg.channels(pair.source), p.head_init_gain).to(device)

    def build_optimizers(self, defaults: OptimizerDefaults) -> None:
        # The heads are trained in auxiliary_step with their own Adam (official optimizer_F), never
        # with the generator: no 'heads' entry.
        if self.heads is not None:
            self.optimizers["attn"] = torch.optim.Adam(
                self.heads.parameters(), lr=defaults.lr, betas=defaults.betas, weight_decay=defaults.weight_decay)

    # -- maps ---------------------------------------------------------------------------------------
    def _maps(self, feats: Sequence[Sequence[torch.Tensor]], train_heads: bool = False) -> list[list[torch.Tensor]]:
        """Correlation maps of several images' features at shared random query locations:
        result[k][l] is the map of image set k at layer l."""
        p = self.params
        if self.heads is not None:
            feats = [self.heads(f, train=train_heads) for f in feats]
        ids = sample_locations(feats[0], p.patch_nums) if p.patch_nums > 0 else [None] * len(feats[0])
        return [[correlation_map(f, i, p.patch_size, p.use_norm, p.official_window_rows)
                 for f, i in zip(fs, ids)] for fs in feats]

    def pair_features(self, source: torch.Tensor, output: torch.Tensor) -> PairFeatures:
        """VGG16 features of source (no gradient needed: it is data) and output (with gradient)."""
        with torch.no_grad():
            src_feats = self.vgg(source)
        return PairFeatures(src_feats, self.vgg(output))

    def spatial_loss(self, source: torch.Tensor, output: torch.Tensor,
                     features: PairFeatures | None = None) -> torch.Tensor:
        """Mean over layers of the structure loss between the maps of source and output (official
        SCModel.Spatial_Loss with other=None); gradients reach ``output`` only. ``features``: those
        of (source, output) when already computed."""
        features = features if features is not None else self.pair_features(source, output)
        src_maps, out_maps = self._maps([features.source, features.output])
        per_layer = [structure_loss(s, o, self.params.loss_mode, self.params.use_norm)
                     for s, o in zip(src_maps, out_maps)]
        return torch.stack(per_layer).mean()

    # -- LSeSim's head training ------------------------------------------------------------------------
    def head_loss(self, pair: TranslationPair, features: PairFeatures | None = None) -> torch.Tensor:
        """Official SCModel.backward_F: InfoNCE on the learned maps of (x, G(x) detached, flip(y)) and,
        with augment, of (x, jitter(x), flip(jitter(y))). ``features``: those of (x, G(x)) when
        already computed."""
        n = pair.source.shape[0]
        features = features if features is not None else self.pair_features(pair.source, pair.output)
        src_feats, out_feats = features.source, features.output
        with torch.no_grad():  # the VGG16 is frozen (official: in optimizer_F with lr 0)
            images = [pair.target.flip(dims=[2, 3])]
            if self.params.augment:
                images += [color_jitter(pair.source, self.environment.distributed),
                           color_jitter(pair.target, self.environment.distributed).flip(dims=[2, 3])]
            others = [f.split(n) for f in self.vgg(torch.cat(images))]
        # per layer: x, G(x) (detached), flip(y)[, jitter(x), flip(jitter(y))]
        chunks = [(s, o.detach(), *rest) for s, o, rest in zip(src_feats, out_feats, others)]
        if self.params.augment:  # batches cat(x, x), cat(G(x), jitter(x)), cat(flip(y), flip(jitter(y)))
            src = [torch.cat([c[0], c[0]]) for c in chunks]
            tgt = [torch.cat([c[1], c[3]]) for c in chunks]
            oth = [torch.cat([c[2], c[4]]) for c in chunks]
        else:
            src, tgt, oth = ([c[k] for c in chunks] for k in range(3))
        maps = self._maps([src, tgt, oth], train_heads=True)
        per_layer = [map_nce(s, t, o, self.params.T).mean() for s, t, o in zip(*maps)]
        return torch.stack(per_layer).mean()

    def auxiliary_step(self, pair: TranslationPair) -> AuxiliaryStep:
        """LSeSim: one Adam step of the heads. The VGG16 features of x and G(x) are returned for the
        generator loss of this step (the VGG16 is frozen: they are what it would recompute)."""
        if self.heads is None:
            return AuxiliaryStep()
        opt = self.optimizers["attn"]
        opt.zero_grad(set_to_none=True)
        features = self.pair_features(pair.source, pair.output)
        loss = self.head_loss(pair, features)
        loss.backward()
        opt.step()
        return AuxiliaryStep({"spatial": loss.item()}, computed=features)

    # -- generator ----------------------------------------------------------------------------------------
    def generator_losses(self, pair: TranslationPair,
                         computed: PairFeatures | None = None) -> dict[str, torch.Tensor]:
        """``computed``: the features of (source, output) from this step's ``auxiliary_step``."""
        p = self.params
        terms = {}
        if p.lambda_spatial > 0:
            terms["G_s"] = p.lambda_spatial * self.spatial_loss(pair.source, pair.output, computed)
        if p.lambda_spatial_idt > 0:
            terms["G_s_idt_B"] = p.lambda_spatial_idt * self.spatial_loss(pair.target, pair.identity)
        if p.lambda_identity > 0:
            terms["idt_B"] = p.lambda_identity * F.l1_loss(pair.identity, pair.target)
        return terms

    def protocol_notes(self) -> dict[str, str]:
        return backbone_notes(self.vgg, self.params.vgg_weights)
