"""Options of the compression task (Fast GAN Compression's ``train_supernet.py`` and
``evolution_search.py``) and the official per-dataset settings.

``auto`` values follow the data: an unpaired dataset gets the CycleGAN (horse2zebra) settings, a
paired one pix2pix's (Cityscapes / map2sat), as the official scripts do.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from benchmark.core.errors import ConfigError

from ..base import schedule_refusal
from .search import EvolutionOptions
from .teacher import TeacherOptions


@dataclass
class SearchOptions:
    """``evolution_search.py``: a population of sub-networks under a MACs budget, evolved by
    mutation and crossover, scored on a held-out part of the training set (never on test). Defaults
    are the official ones (``options/evolution_options.py``); the per-dataset scripts set
    ``mutate_prob``, ``budget`` and (horse2zebra) ``weighted_sample``."""

    population_size: int = 100
    """Sub-networks per generation (``--population_size``)."""
    mutation_ratio: float = 0.5
    """Share of a generation's children made by mutation; the rest by crossover."""
    parent_ratio: float = 0.25
    """Share of a generation, the best scored, kept as parents."""
    iterations: int = 500
    """``--evolution_iters``."""
    mutate_prob: float = 0.2
    """Per-layer mutation probability (official scripts: horse2zebra 0.4, Cityscapes and map2sat 0.3)."""
    budget: float = 3e9
    """MACs budget of a sub-network at the evaluation resolution (horse2zebra 3e9, Cityscapes 5.7e9,
    map2sat 4.6e9)."""
    weighted_sample: float = 1.0
    """Weight of the channel choices of the first generation (horse2zebra: 2; 1 = uniform)."""
    weight_strategy: Literal["arithmetic", "geometric"] = "arithmetic"
    """How ``weighted_sample`` weights the channel choices (both favour the smaller widths)."""
    rank_last_generation: bool = True
    """Rank the last generation's children too (official: False: they are scored, never ranked)."""
    criterion: Literal["auto", "fid", "mIoU"] = "auto"
    """What the search optimises: FID (lower is better) or mIoU (higher); auto = mIoU when the
    held-out images carry segmentation labels, else FID (official: mIoU for Cityscapes only)."""
    held_out_images: int = 0
    """Training images held out from supernet training for the search (train2: horse2zebra 120 of
    each side, Cityscapes 200, map2sat 300); 0 = a tenth of the training set (at least 2)."""

    def evolution_options(self) -> EvolutionOptions:
        return EvolutionOptions(
            population_size=self.population_size, mutation_ratio=self.mutation_ratio,
            parent_ratio=self.parent_ratio, iterations=self.iterations, mutate_prob=self.mutate_prob,
            budget=self.budget, weighted_sample=self.weighted_sample, weight_strategy=self.weight_strategy,
            rank_last_generation=self.rank_last_generation)

    def validate(self):
        if self.held_out_images < 0:
            return f"search.held_out_images must be >= 0, got {self.held_out_images}"
        try:
            self.evolution_options()
        except ConfigError as exc:
            return f"search: {exc}"
        return None


@dataclass
class CompressionOptions:
    teacher: TeacherOptions = field(default_factory=TeacherOptions)
    """Where the teacher comes from: a checkpoint, or trained here once per dataset and seed."""
    student_ngf: int = 64
    """Widest student (the supernet's ngf); its sub-networks take their channels from ``channel_set``."""
    channel_set: Literal["auto", "cyclegan", "pix2pix"] = "auto"
    """The official per-layer channel choices (``channels-64-cycleGAN`` / ``channels-64-pix2pix``);
    auto = cyclegan for unpaired data, pix2pix for paired."""
    channel_choices: list[list[int]] | None = None
    """Per-layer channel choices of your own (8 lists, each at most ``student_ngf``) in place of
    ``channel_set``, e.g. a narrower space for small images."""
    norm: Literal["instance", "none"] = "instance"
    ndf: int = 0
    """Discriminator width; 0 = the official choice for the data (unpaired 64, paired 128)."""
    n_layers_D: int = 3
    gan_mode: Literal["auto", "lsgan", "hinge", "vanilla"] = "auto"
    """auto = lsgan for unpaired data (horse2zebra script), hinge for paired (the default)."""
    lambda_gan: float = 1.0
    lambda_recon: float = 0.0
    """Weight of the L1 reconstruction (to the teacher's output when unpaired, to the target when
    paired); 0 = the official value for the data (unpaired 10, paired 100; map2sat's script: 10)."""
    lambda_distill: float = -1.0
    """Weight of the distillation MSE; negative = the official value (unpaired 0.01, paired 1;
    map2sat's script: 0.01)."""
    method_features: Literal["student", "mapped"] = "student"
    """The student side of the method's patch loss: the student's own activations at the hooks
    (Hneg-SRC's compression code: its header is a SuperMLP on them, which equals the head on the
    activations zero-padded to the full width), or the activations after the distillation mapping."""
    lr: float = 2e-4
    beta1: float = 0.5
    batch_size: int = 1
    n_steps: int = 1000
    """Steps at the initial learning rate (nepochs, counted in steps)."""
    n_steps_decay: int = 1000
    """Steps of linear decay to zero (nepochs_decay, counted in steps)."""
    flip: bool = True
    init_type: Literal["normal", "xavier", "kaiming", "orthogonal"] = "normal"
    init_gain: float = 0.02
    search: SearchOptions = field(default_factory=SearchOptions)
    """The evolution search for the best sub-network under a MACs budget, after supernet training."""
    protocol: Literal["gan_compression", "cut"] = "gan_compression"
    """Test-time scoring. gan_compression: FID against the real statistics its scripts use
    (unpaired: every B image, train and test; paired: the test B images) and, for Cityscapes folders,
    DRN-D-105 mIoU against gtFine; cut: FID against test B and the CUT label protocol."""
    log_every: int = 50
    """Not used: the suite's ``log_every`` sets how often losses are logged. Kept so that the
    configs of earlier runs still match; another value is refused, as it would change nothing."""

    def validate(self):
        problem = schedule_refusal(self)
        if problem:
            return problem
        if self.student_ngf < 1:
            return f"student_ngf must be >= 1, got {self.student_ngf}"
        if self.channel_choices is not None:
            if len(self.channel_choices) != 8 or any(not c for c in self.channel_choices):
                return f"channel_choices must be 8 non-empty lists of widths, got {self.channel_choices}"
            if max(max(c) for c in self.channel_choices) > self.student_ngf or min(min(c) for c in self.channel_choices) < 1:
                return f"channel_choices must lie in [1, student_ngf = {self.student_ngf}], got {self.channel_choices}"
        elif self.student_ngf != 64:
            return ("the official channel sets are for student_ngf 64; with another student_ngf give "
                    "channel_choices (8 lists of widths at most student_ngf)")
        for name in ("teacher", "search"):
            problem = getattr(self, name).validate()
            if problem:
                return problem
        return None


def resolved(options: CompressionOptions, paired: bool) -> dict:
    """The ``auto`` / 0 / negative options replaced by the official values for paired or unpaired data."""
    return {
        "channel_set": ("custom" if options.channel_choices is not None else options.channel_set
                        if options.channel_set != "auto" else ("pix2pix" if paired else "cyclegan")),
        "ndf": options.ndf or (128 if paired else 64),
        "gan_mode": options.gan_mode if options.gan_mode != "auto" else ("hinge" if paired else "lsgan"),
        "lambda_recon": options.lambda_recon or (100.0 if paired else 10.0),
        "lambda_distill": options.lambda_distill if options.lambda_distill >= 0 else (1.0 if paired else 0.01),
    }
