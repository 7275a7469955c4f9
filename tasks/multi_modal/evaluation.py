"""StarGAN v2's evaluation (``metrics/eval.py``), both modes, plus a structure score and sample grids.

For every ordered pair (source domain, target domain), source != target, and every source
validation image (the first ``evaluation.num_test_images`` of the domain's val split; 0 = all),
``num_outs_per_domain`` (10) outputs are generated:

* ``latent``: style codes from the mapping network applied to random ``z ~ N(0, I)``;
* ``reference``: style codes from the style encoder applied to different reference images of the
  target domain's val split (10 distinct images per source image when the split has at least 10).

``<mode>_FID``: FID between all outputs of a pair and the target domain's **training** images,
averaged over the D (D - 1) pairs. ``<mode>_LPIPS``: for each source image, the mean LPIPS over the
45 pairs of its 10 outputs; averaged over the images of a pair, then over pairs.

``<mode>_L1_diversity``: the same pairs as LPIPS, scored by their mean absolute pixel difference
(``benchmark.core.metrics.diversity.pairwise_l1_diversity``, pixels in [0, 1]): a diversity score
that needs no backbone (LPIPS on an untrained AlexNet says little), averaged like LPIPS.

``structure_score`` (datasets whose val images carry segmentation label maps, e.g.
``synthetic_seasons``): how well an output keeps the source's layout -- the Pearson correlation
between the output's edge magnitude (Sobel on luminance) and the boundaries of the source's label
map (pixels whose 3x3 neighbourhood holds two classes), averaged over every output of both modes.
The ``identity`` row (the inputs scored as outputs) gives the value of the real images.

Every random choice (latent codes, references, grid styles) comes from generators seeded with the
run's seed, so the evaluation of a checkpoint is reproducible.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.utils import make_grid

from benchmark.core.atomic import atomic_write
from benchmark.core.errors import BenchmarkError
from benchmark.core.metrics.diversity import pairwise_l1_diversity
from benchmark.core.metrics.fid import fid_from_features
from benchmark.core.metrics.inception import INCEPTION_SHA256
from benchmark.core.metrics.structure import edge_magnitude, pearson
from datasets.base import ImageSet

from benchmark.core.context import Evaluation, RunContext
from ..data import seeded_generator, to_model_range, to_uint8_rounded
from ..evaluation import count_images, mean_fid_statistics, real_features, sharded_inception_features

MODES = ("latent", "reference")


class Translator(Protocol):
    latent_dim: int

    def latent(self, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor: ...

    def reference(self, x: torch.Tensor, y: torch.Tensor, x_ref: torch.Tensor) -> torch.Tensor: ...


@dataclass
class EvalSettings:
    """The task options the evaluation reads."""
    num_outs_per_domain: int = 10
    lpips: bool = True
    lpips_backbone: str = "imagenet"
    structure_score: bool = True
    grid_styles: int = 3
    latent_dim: int = 16


# -- structure score --------------------------------------------------------------------------

def layout_boundaries(labels: torch.Tensor) -> torch.Tensor:
    """int (N, H, W) label maps -> 1.0 where the 3x3 neighbourhood holds more than one class."""
    lab = F.pad(labels[:, None].float(), (1, 1, 1, 1), mode="replicate")
    hi = F.max_pool2d(lab, 3, 1)
    lo = -F.max_pool2d(-lab, 3, 1)
    return (hi != lo).float()[:, 0]


def structure_correlation(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per image, Pearson correlation of ``edge_magnitude(images)`` with ``layout_boundaries(labels)``
    (0 where either map is constant); float64 (N,)."""
    return pearson(edge_magnitude(images), layout_boundaries(labels))


# -- helpers ------------------------------------------------------------------------------------

def reference_ids(num_refs: int, count: int, seed: int, trg: int, src: int, image: int) -> list[int]:
    """``count`` reference images for one source image: distinct while the target val split has
    enough images (then cycling through a seeded permutation)."""
    perm = torch.randperm(num_refs, generator=seeded_generator(seed, 12, trg, src, image)).tolist()
    return [perm[j % num_refs] for j in range(count)]


def _lpips_metric(settings: EvalSettings, ctx: RunContext):
    from benchmark.core.metrics.lpips_metric import get_lpips
    return get_lpips(ctx.device, ctx.weights_dir, settings.lpips_backbone, ctx.cache_dir)


# -- translation of one pair --------------------------------------------------------------------

@dataclass
class PairOutputs:
    images: torch.Tensor
    """uint8 (n * K, 3, H, W), image-major: the K outputs of source image 0, then of image 1, ..."""
    lpips_per_image: list[float]
    lpips_pairs: int


def translate_pair(translator: Translator, mode: str, sources: torch.Tensor, trg: int, src: int,
                   refs: ImageSet | None, settings: EvalSettings, ctx: RunContext,
                   distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None) -> PairOutputs:
    """The K outputs of every source image (uint8) and the LPIPS diversity of each group."""
    k_outs, device, bs = settings.num_outs_per_domain, ctx.device, ctx.evaluation.batch_size
    n = sources.shape[0]
    z_all = torch.randn(n, k_outs, settings.latent_dim,
                        generator=seeded_generator(ctx.seed, 11, trg, src))
    ref_all = [reference_ids(len(refs), k_outs, ctx.seed, trg, src, i) for i in range(n)] if refs is not None else None
    first, second = np.triu_indices(k_outs, 1)
    outputs, per_image, pairs = [], [], 0
    shard = ctx.distributed.shard(n, bs)  # under torchrun: this rank's whole batches of the n sources
    for start in range(shard.start, shard.stop, bs):
        stop = min(n, start + bs)
        x = to_model_range(sources[start:stop], device)
        y = torch.full((stop - start,), trg, dtype=torch.long, device=device)
        group = []
        with torch.no_grad():
            for j in range(k_outs):
                if mode == "latent":
                    out = translator.latent(x, y, z_all[start:stop, j].to(device))
                else:
                    x_ref = to_model_range(refs.images([ref_all[i][j] for i in range(start, stop)]), device)
                    out = translator.reference(x, y, x_ref)
                group.append(out.float())
        stack = torch.stack(group, 1)                                   # (b, K, 3, H, W)
        if distance is not None and k_outs > 1:
            a = stack[:, first].flatten(0, 1).clamp(-1, 1)
            b = stack[:, second].flatten(0, 1).clamp(-1, 1)
            d = distance(a, b).double().view(stop - start, len(first))
            pairs += int(d.numel())
            per_image += d.mean(1).tolist()
        outputs.append(to_uint8_rounded(stack.flatten(0, 1)))
    d = ctx.distributed
    if not d.enabled:
        return PairOutputs(torch.cat(outputs), per_image, pairs)
    # Gather the ranks' shards in order: the K outputs of each source image and its mean LPIPS.
    size = sources.shape[-2:]
    local = (torch.cat(outputs) if outputs else torch.zeros((0, 3, *size), dtype=torch.uint8))
    images = d.gather_shards(local.view(-1, k_outs, 3, *size), n, bs).flatten(0, 1)
    if distance is None or k_outs < 2:
        return PairOutputs(images, [], 0)
    gathered = d.gather_shards(torch.tensor(per_image, dtype=torch.float64), n, bs).tolist()
    return PairOutputs(images, gathered, n * len(first))


# -- the evaluation -----------------------------------------------------------------------------

def evaluate_multimodal(translator: Translator | None, dataset, settings: EvalSettings,
                        ctx: RunContext, lpips_distance: Callable | None = None,
                        source_sets: list[ImageSet] | None = None,
                        per_pair_file: str | None = "eval_per_pair.json") -> Evaluation:
    """StarGAN v2's latent- and reference-guided FID / LPIPS; ``translator=None`` scores the
    inputs themselves as outputs (K identical copies each: LPIPS 0). ``source_sets`` (one per
    domain; the validation split held out of the training images) replace the val split as sources
    and references, every image of them used; ``per_pair_file`` (None = not written) names the file
    in the run folder that gets the per-pair scores."""
    ev = ctx.evaluation
    domains = list(dataset.domains)
    n_dom, k_outs = len(domains), settings.num_outs_per_domain
    if n_dom < 2:
        raise BenchmarkError(f"multi-modal evaluation needs at least two domains, got {domains}")
    if source_sets is None:
        val_sets = [dataset.split("val", d) for d in domains]
        counts = [count_images(s, ev.num_test_images) for s in val_sets]
    else:
        val_sets = list(source_sets)
        counts = [len(s) for s in val_sets]
    sources = [s.images(range(c)) for s, c in zip(val_sets, counts)]
    with_labels = settings.structure_score and all(
        s.has_labels and s.label_info.kind == "segmentation" for s in val_sets)
    labels = [s.labels(range(c)) for s, c in zip(val_sets, counts)] if with_labels else None
    distance = None
    lpips_note = "off"
    if settings.lpips and translator is not None and lpips_distance is None and sources[0].shape[-1] < 32:
        raise BenchmarkError(f"multi-modal evaluation: LPIPS (AlexNet) needs images of at least 32 x 32, "
                             f"got {sources[0].shape[-1]} x {sources[0].shape[-1]}; set lpips: false")
    if settings.lpips and translator is not None:
        if lpips_distance is None:
            metric = _lpips_metric(settings, ctx)
            lpips_distance, lpips_note = metric.distance, metric.description
        else:
            lpips_note = "custom"
        distance = lpips_distance
    elif settings.lpips:
        lpips_note = "identity: the K outputs are copies of the input, so every LPIPS is 0"
    if translator is None:
        identity_feats = [sharded_inception_features(s, ctx) for s in sources]

    metrics: dict[str, float] = {}
    per_pair: dict[str, dict[str, float]] = {}
    generated = {m: 0 for m in MODES}
    lpips_pairs = {m: 0 for m in MODES}
    structure: list[torch.Tensor] = []
    stats_protocol: dict = {}
    for mode in MODES:
        fids, lps, l1s, pair_features = [], [], [], []
        for t, trg in enumerate(domains):
            real = real_features(dataset, "train", ctx, domain=trg)
            for s, src in enumerate(domains):
                if s == t:
                    continue
                task = f"{src}2{trg}"
                if translator is None:
                    fake = np.repeat(identity_feats[s], k_outs, axis=0)
                    images = sources[s].repeat_interleave(k_outs, dim=0)
                    per_image, pairs = [0.0] * counts[s], counts[s] * k_outs * (k_outs - 1) // 2
                else:
                    refs = val_sets[t] if mode == "reference" else None
                    out = translate_pair(translator, mode, sources[s], t, s, refs, settings, ctx, distance)
                    images, per_image, pairs = out.images, out.lpips_per_image, out.lpips_pairs
                    fake = sharded_inception_features(images, ctx)
                l1 = float(pairwise_l1_diversity(images.view(counts[s], k_outs, *images.shape[1:])).mean()) \
                    if k_outs > 1 else 0.0
                l1s.append(l1)
                per_pair[f"L1_diversity_{mode}/{task}"] = l1
                generated[mode] += int(images.shape[0])
                lpips_pairs[mode] += pairs
                fid = fid_from_features(fake, real)
                fids.append(fid)
                pair_features.append((fake, real))
                per_pair[f"FID_{mode}/{task}"] = fid
                if settings.lpips:
                    lp = float(np.mean(per_image)) if per_image else 0.0
                    lps.append(lp)
                    per_pair[f"LPIPS_{mode}/{task}"] = lp
                if labels is not None:
                    structure.append(structure_correlation(images, labels[s].repeat_interleave(k_outs, dim=0)))
        metrics[f"{mode}_FID"] = float(np.mean(fids))
        mode_stats, stats_protocol = mean_fid_statistics(pair_features, metrics[f"{mode}_FID"], ev,
                                                         cluster_size=k_outs, prefix=f"{mode}_")
        metrics.update(mode_stats)
        if settings.lpips:
            metrics[f"{mode}_LPIPS"] = float(np.mean(lps))
        metrics[f"{mode}_L1_diversity"] = float(np.mean(l1s))
    if labels is not None:
        metrics["structure_score"] = float(torch.cat(structure).mean())
    if per_pair_file and ctx.distributed.is_main:
        # All or nothing: a failed write must not leave the previous evaluation's file looking current.
        with atomic_write(ctx.run_dir / per_pair_file, "w", encoding="utf-8",
                          what="the per-pair metrics of the evaluation") as f:
            f.write(json.dumps(per_pair, indent=2, sort_keys=True))

    protocol = {
        "fid_network": f"TF-Inception (pytorch-fid weights, sha256 {INCEPTION_SHA256[:12]}); the official "
                       "StarGAN v2 code uses torchvision's ImageNet Inception",
        "fid_resize": ev.fid_resize,
        "fid_real": "target domain's train images; FID per (source, target) pair, averaged",
        "lpips": lpips_note,
        "L1_diversity": "mean absolute pixel difference (pixels in [0, 1]) over the pairs of the outputs "
                        "of one source, averaged as LPIPS; no backbone",
        "num_domains": n_dom,
        "domains": domains,
        "domain_pairs": n_dom * (n_dom - 1),
        "val_images_per_domain": counts,
        "outputs_per_image": k_outs,
        "images_per_mode": generated["latent"],
        "lpips_pairs_per_mode": lpips_pairs["latent"],
        "resolution": list(sources[0].shape[-2:]),
        **stats_protocol,
    }
    if labels is not None:
        protocol["structure_score"] = ("Pearson correlation of output Sobel edge magnitude with the "
                                       "source label map's boundaries, mean over all outputs")
    if generated["latent"] != generated["reference"] or lpips_pairs["latent"] != lpips_pairs["reference"]:
        raise BenchmarkError("multi-modal evaluation: the two modes produced different numbers of images")
    samples = grid_samples(translator, val_sets, settings, ctx)
    return Evaluation(metrics=metrics, protocol=protocol, samples=samples)


# -- sample grids -------------------------------------------------------------------------------

def grid_samples(translator: Translator | None, val_sets: list[ImageSet], settings: EvalSettings,
                 ctx: RunContext) -> dict[str, torch.Tensor]:
    """``input`` / ``output`` rows (column c: source domain c mod D, a latent style to another
    domain) for the report, and ``grid``: one composed image, a row per source domain (its first val
    image), columns = the source, then ``grid_styles`` latent styles for every target domain (the
    same codes in every row)."""
    n_dom, device = len(val_sets), ctx.device
    n_cols = max(1, ctx.evaluation.grid_images)
    inputs, outputs = [], []
    for c in range(n_cols):
        s, rnd = c % n_dom, c // n_dom
        img = val_sets[s].image(rnd % len(val_sets[s]))
        t = (s + 1 + rnd % (n_dom - 1)) % n_dom
        inputs.append(img)
        if translator is None:
            outputs.append(img)
            continue
        z = torch.randn(1, settings.latent_dim, generator=seeded_generator(ctx.seed, 13, c))
        with torch.no_grad():
            out = translator.latent(to_model_range(img[None], device), torch.tensor([t], device=device), z.to(device))
        outputs.append(to_uint8_rounded(out)[0])
    tiles = []
    styles = max(1, settings.grid_styles)
    codes = {(t, k): torch.randn(1, settings.latent_dim,
                                 generator=seeded_generator(ctx.seed, 14, t, k))
             for t in range(n_dom) for k in range(styles)}
    for s in range(n_dom):
        src = val_sets[s].image(0)
        tiles.append(src)
        x = to_model_range(src[None], device)
        for t in range(n_dom):
            for k in range(styles):
                if translator is None:
                    tiles.append(src)
                    continue
                with torch.no_grad():
                    out = translator.latent(x, torch.tensor([t], device=device), codes[(t, k)].to(device))
                tiles.append(to_uint8_rounded(out)[0])
    grid = make_grid(torch.stack(tiles), nrow=1 + n_dom * styles, padding=2, pad_value=255)
    return {"input": torch.stack(inputs), "output": torch.stack(outputs), "grid": grid[None]}
