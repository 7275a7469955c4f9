"""Options of the compression task (Fast GAN Compression's ``train_supernet.py`` and
``evolution_search.py``) and the official per-dataset settings.

``auto`` values follow the data: an unpaired dataset gets the CycleGAN (horse2zebra) settings, a
paired one pix2pix's (Cityscapes / map2sat), as the official scripts do.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .teacher import TeacherOptions


@dataclass
class SearchOptions:
    """``evolution_search.py``: a population of sub-networks under a MACs budget, evolved by
    mutation and crossover, scored on a held-out part of the training set (never on test)."""

    population_size: int = 100
    mutation_ratio: float = 0.5
    parent_ratio: float = 0.25
    evolution_iters: int = 500
    mutate_prob: float = 0.2
    """Per-layer mutation probability (official scripts: horse2zebra 0.4, Cityscapes and map2sat 0.3)."""
    budget_macs: float = 3e9
    """MACs budget of a sub-network at the evaluation resolution (horse2zebra 3e9, Cityscapes 5.7e9,
    map2sat 4.6e9)."""
    criterion: Literal["auto", "fid", "mIoU"] = "auto"
    """What the search optimises: FID (lower is better) or the label score mIoU (higher); auto = mIoU
    when the held-out images carry segmentation labels and the dataset asks for a segmentation
    protocol, else FID."""
    weighted_sample: int = 1
    """Weight of the larger channel choices when sampling a random sub-network (horse2zebra: 2)."""
    held_out_images: int = 0
    """Training images of side A held out from supernet training for the search (train2: horse2zebra
    120, Cityscapes 200, map2sat 300); 0 = a tenth of the training set (at least 2)."""

    def validate(self):
        if self.population_size < 2:
            return f"search.population_size must be >= 2, got {self.population_size}"
        for name in ("mutation_ratio", "parent_ratio", "mutate_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                return f"search.{name} must be in [0, 1], got {value}"
        if self.evolution_iters < 0:
            return f"search.evolution_iters must be >= 0, got {self.evolution_iters}"
        if self.budget_macs <= 0:
            return f"search.budget_macs must be positive, got {self.budget_macs}"
        if self.held_out_images < 0:
            return f"search.held_out_images must be >= 0, got {self.held_out_images}"
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
    norm: Literal["instance", "batch"] = "instance"
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
    protocol: Literal["gan_compression", "cut"] = "gan_compression"
    """Test-time scoring. gan_compression: FID against the real statistics its scripts use
    (unpaired: every B image, train and test; paired: the test B images) and, for Cityscapes folders,
    DRN-D-105 mIoU against gtFine; cut: FID against test B and the CUT label protocol."""
    log_every: int = 50

    def validate(self):
        if self.batch_size < 1:
            return f"batch_size must be >= 1, got {self.batch_size}"
        if self.n_steps < 0 or self.n_steps_decay < 0 or self.n_steps + self.n_steps_decay < 1:
            return "n_steps and n_steps_decay must be >= 0 and their sum >= 1"
        if self.student_ngf < 1:
            return f"student_ngf must be >= 1, got {self.student_ngf}"
        for name in ("teacher", "search"):
            problem = getattr(self, name).validate()
            if problem:
                return problem
        return None


def resolved(options: CompressionOptions, paired: bool) -> dict:
    """The ``auto`` / 0 / negative options replaced by the official values for paired or unpaired data."""
    return {
        "channel_set": options.channel_set if options.channel_set != "auto" else ("pix2pix" if paired else "cyclegan"),
        "ndf": options.ndf or (128 if paired else 64),
        "gan_mode": options.gan_mode if options.gan_mode != "auto" else ("hinge" if paired else "lsgan"),
        "lambda_recon": options.lambda_recon or (100.0 if paired else 10.0),
        "lambda_distill": options.lambda_distill if options.lambda_distill >= 0 else (1.0 if paired else 0.01),
    }
