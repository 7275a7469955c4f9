"""The single-image task: SinCUT (CUT's ``models/sincut_model.py``, Park et al. ECCV 2020, Fig. 9)
with any method plugin -- translation learned from one source image and one target image.

Per step, as ``SinCUTModel`` (a ``CUTModel``) does: a batch of ``batch_size`` zoom-and-patch crops of
each image (:mod:`.sampler`); the generator runs once on cat(crops A, crops B); then

    D:  0.5 (L_GAN(D(G(a)), fake) + L_GAN(D(b), real)) + lambda_R1 * 0.5 * E_b |grad_b D(b)|^2
    G:  lambda_GAN L_GAN(D(G(a)), real) + (the method's losses) + lambda_identity |G(b) - b|_1

with the non-saturating GAN loss, the StyleGAN2 networks of :mod:`.networks` and Adam (lr 0.002,
betas (0, 0.99)). The method sees the same :class:`methods.base.TranslationPair` as in the other
tasks (source crops, their translations, the target crops and their identity translations, the
encoder at SinCUT's layers '0,2,4'); the task's patch policy -- one patch per crop, negatives
from the other crops of the batch (``patch_policy``) -- is followed by every method in its own way
(``Method.patch_settings``) or the pair is refused when the config is loaded. Test: the whole source image, once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from benchmark.core.context import Evaluation, RunContext
from benchmark.core.errors import ConfigError
from benchmark.core.registry import register_task
from methods.base import OUTPUT_GRADIENT, OptimizerDefaults, PatchPolicy

from ..adversarial_steps import GeneratorDiscriminatorSteps
from ..base import (Task, checkpoint_size, distribute, linear_decay_schedulers, restore_training_state,
                    schedule_refusal, training_state)
from ..data import to_model_range
from ..evaluation import on_main_rank
from ..networks import GANLoss
from .evaluation import SingleImageEvalSettings, evaluate_single_image
from .networks import StyleGAN2Discriminator, StyleGAN2Generator, r1_penalty
from .sampler import ZoomAndPatch


@dataclass
class SingleImageOptions:
    # -- networks (sincut_model.py defaults, stylegan_networks.py) ------------------------------
    ngf: int = 10
    ndf: int = 8
    n_downsampling: int = 1
    """``stylegan2_G_num_downsampling``."""
    n_blocks: int = 6
    """ResBlocks of G, half in the encoder and half in the decoder (``StyleGAN2Generator``'s default)."""
    inject_noise: bool = True
    """Add StyleGAN2's per-pixel noise in the decoder's upsampling layers (SinCUT's generator)."""
    feature_layers: list[int] = field(default_factory=lambda: [0, 2, 4])
    """Encoder layers the methods see (SinCUT's ``nce_layers='0,2,4'``)."""
    # -- objective ------------------------------------------------------------------------------
    gan_mode: Literal["nonsaturating", "lsgan", "vanilla", "hinge"] = "nonsaturating"
    lambda_GAN: float = 1.0
    lambda_R1: float = 1.0
    lambda_identity: float = 1.0
    """Weight of the pixel identity loss |G(b) - b|_1."""
    # -- optimisation ---------------------------------------------------------------------------
    lr: float = 0.002
    beta1: float = 0.0
    beta2: float = 0.99
    batch_size: int = 16
    n_steps: int = 50000
    """Steps at the initial learning rate: the official 8 epochs of 100,000 crops at batch 16."""
    n_steps_decay: int = 50000
    """Steps of linear decay to zero (the official 8 decay epochs)."""
    # -- data (zoom_and_patch) ------------------------------------------------------------------
    crop_size: int = 64
    random_scale_max: float = 3.0
    flip: bool = True
    sampler: Literal["intended", "official"] = "intended"
    """'intended': one zoom per batch and distinct grid cells within a batch (what the official
    dataset means); 'official': zoom and cell drawn per crop (what its shuffled loader does)."""
    # -- evaluation -----------------------------------------------------------------------------
    sifid_channels: Literal[64, 192] = 192
    """SIFID features: 192 = SinGAN's (Conv2d_4a_3x3), 64 = its block 0 (Conv2d_2b_3x3)."""
    structure_sigma: float = 2.0
    """Gaussian blur (pixels) before the edge maps of the structure score."""
    lpips: bool = True
    lpips_backbone: Literal["imagenet", "untrained"] = "imagenet"
    """'untrained' opts into LPIPS with a random AlexNet trunk when the ImageNet weights are absent."""

    def validate(self):
        problem = schedule_refusal(self)
        if problem:
            return problem
        if self.crop_size < 16 or self.crop_size & (self.crop_size - 1):
            return f"crop_size must be a power of two >= 16 (the StyleGAN2 discriminator's input), got {self.crop_size}"
        if self.random_scale_max < 1:
            return f"random_scale_max must be >= 1, got {self.random_scale_max}"
        if min(self.ngf, self.ndf) < 1 or self.n_downsampling < 0 or self.n_blocks < 0:
            return "ngf and ndf must be >= 1, n_downsampling and n_blocks >= 0"
        if self.crop_size // 2 ** self.n_downsampling < 4:
            return f"crop_size {self.crop_size} is too small for {self.n_downsampling} downsamplings"
        if not self.feature_layers:
            return "feature_layers must name at least one encoder layer (SinCUT: [0, 2, 4])"
        if min(self.lambda_R1, self.lambda_identity, self.lambda_GAN) < 0 or self.structure_sigma < 0:
            return "lambda_GAN, lambda_R1, lambda_identity and structure_sigma must be >= 0"
        return None


@register_task("single_image")
class SingleImageTask(GeneratorDiscriminatorSteps, Task):
    """Single-image translation in SinCUT's framework: StyleGAN2 G and D on zoom-and-patch crops."""

    Options = SingleImageOptions
    trains_distributed = True
    dataset_kinds = ("single_image",)
    capabilities = frozenset({OUTPUT_GRADIENT})
    patch_policy = PatchPolicy(patches_per_image=1, negatives_across_batch=True,
                               why="each crop is a zoomed patch of the one training image: SinCUT's one "
                                   "patch per crop, its negatives the other crops of the batch")

    @classmethod
    def required_weights(cls, options: SingleImageOptions) -> list[str]:
        if not options.lpips:
            return []
        return ["lpips_alex_linear"] + ([] if options.lpips_backbone == "untrained" else ["alexnet"])

    # -- set-up ------------------------------------------------------------------------------------
    def _networks(self) -> tuple[StyleGAN2Generator, StyleGAN2Discriminator]:
        o = self.options
        return (StyleGAN2Generator(o.ngf, o.crop_size, o.n_downsampling, o.n_blocks, o.inject_noise),
                StyleGAN2Discriminator(o.ndf, o.crop_size))

    def checkpoint_size(self) -> int:
        """G and D."""
        return checkpoint_size(self._networks())

    def setup(self) -> None:
        o, device = self.options, self.ctx.device
        self.netG, self.netD = (net.to(device) for net in self._networks())
        self.layers = list(o.feature_layers)
        n = self.netG.num_encoder_layers
        if any(not 0 <= i < n for i in self.layers) or self.layers != sorted(set(self.layers)):
            raise ConfigError(f"single_image: feature_layers {self.layers} must be increasing encoder layer "
                              f"indices in 0..{n - 1} (0 = the input image, 2 = after the downsampling ResBlock)")
        self.gan_loss = GANLoss(o.gan_mode).to(device)
        self.samplers = []
        for side, name in enumerate("AB"):
            image = self.dataset.image(name)
            if min(image.shape[-2:]) < o.crop_size:
                raise ConfigError(f"single_image: image {name} is {tuple(image.shape[-2:])}, smaller than "
                                  f"crop_size {o.crop_size}")
            self.samplers.append(ZoomAndPatch(image, o.crop_size, o.batch_size, o.random_scale_max, o.flip,
                                              self.ctx.seed, side, o.sampler))
        defaults = OptimizerDefaults(o.lr, (o.beta1, o.beta2))
        self.opt_G = torch.optim.Adam(self.netG.parameters(), lr=o.lr, betas=defaults.betas)
        self.opt_D = torch.optim.Adam(self.netD.parameters(), lr=o.lr, betas=defaults.betas)
        real_a, real_b = self._batch(0)
        self.method.to(device)
        self.method.initialize(self._pair(real_a, real_a, real_b, real_b, False))
        self._decide_feature_reuse(real_a, real_b, self.with_identity)
        self.method.build_optimizers(defaults)
        self.schedulers = linear_decay_schedulers(self._optimizers(), o.n_steps, o.n_steps_decay)
        # torchrun: each rank its share of every batch, gradients averaged before every step.
        distribute(self.ctx, self.method, self._modules(), self._optimizers())

    @property
    def with_identity(self) -> bool:
        """Whether a step also translates the target crops (the task's identity loss or the method's)."""
        return self.options.lambda_identity > 0 or self.method.uses_identity

    def _batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The crops of batch ``step`` (this rank's share of them under torchrun) on the device, in [-1, 1]."""
        local = self.ctx.distributed.local
        return tuple(to_model_range(local(s.batch(step)), self.ctx.device) for s in self.samplers)

    def _translate_batch(self, real_a: torch.Tensor, real_b: torch.Tensor, with_identity: bool):
        """The shared translation step; under torchrun the generator's noise is that of the global
        batch (``Distributed.draw_rows``), so every rank draws what one process draws."""
        d = self.ctx.distributed
        if not d.enabled:
            return super()._translate_batch(real_a, real_b, with_identity)
        parts = 2 if with_identity else 1
        with self.netG.noise_drawn_by(
                lambda shape: d.draw_rows(lambda n: torch.randn(n, *shape[1:]), shape[0], parts)):
            return super()._translate_batch(real_a, real_b, with_identity)

    # -- one step ----------------------------------------------------------------------------------
    def discriminator_loss(self, fake_b: torch.Tensor, real_b: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """0.5 (L_GAN(D(fake), 0) + L_GAN(D(real), 1)) + lambda_R1 * R1 on the real crops."""
        o = self.options
        loss_fake = self.gan_loss(self.netD(fake_b.detach()), False)
        real = real_b.detach().requires_grad_(o.lambda_R1 > 0)
        pred_real = self.netD(real)
        loss_real = self.gan_loss(pred_real, True)
        loss = 0.5 * (loss_fake + loss_real)
        r1 = o.lambda_R1 * r1_penalty(pred_real, real) if o.lambda_R1 > 0 else loss.new_zeros(())
        return loss + r1, {"D_fake": loss_fake.item(), "D_real": loss_real.item(), "D_R1": r1.item()}

    def train_step(self) -> dict[str, float]:
        o, method = self.options, self.method
        real_a, real_b = self._batch(self.step)
        fake_b, idt_b, flipped, translated = self._translate_batch(real_a, real_b, self.with_identity)
        loss_d, logs = self._update_discriminator(lambda: self.discriminator_loss(fake_b, real_b))
        pair = self._pair(real_a, fake_b, real_b, idt_b, flipped, translated)
        aux = method.auxiliary_step(pair)
        logs.update(aux.logs)

        def identity_loss() -> dict[str, torch.Tensor]:
            if o.lambda_identity <= 0:
                return {}
            idt = torch.flip(idt_b, dims=[3]) if flipped else idt_b
            return {"idt": o.lambda_identity * F.l1_loss(idt, real_b)}

        logs.update(self._update_generator(pair, aux.computed, identity_loss))
        logs["D"] = loss_d.item()
        return logs

    # -- checkpoints -------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return training_state(self.step, self._modules(), self._optimizers(), self.schedulers)

    def load_state_dict(self, state: dict) -> None:
        self.step = restore_training_state(state, self._modules(), self._optimizers(), self.schedulers)

    # -- evaluation --------------------------------------------------------------------------------
    @staticmethod
    def eval_settings(o: SingleImageOptions) -> SingleImageEvalSettings:
        return SingleImageEvalSettings(o.sifid_channels, o.structure_sigma, o.lpips, o.lpips_backbone)

    def evaluate(self) -> Evaluation:
        # One image: under torchrun rank 0 translates and scores it and hands the result to every rank.
        return on_main_rank(lambda: evaluate_single_image(self.translate, self.dataset,
                                                          self.eval_settings(self.options), self.ctx), self.ctx)

    @classmethod
    def validation_refusal(cls, options) -> str | None:
        return ("it trains on one source and one target image: no image can be held out for a "
                "validation split, and its test input is the training image itself, so any choice "
                "among its checkpoints is a choice on the test image (report the last checkpoint)")

    identity_options = ("sifid_channels", "structure_sigma", "lpips", "lpips_backbone")
    """What :meth:`eval_settings` reads."""

    @classmethod
    def evaluate_identity(cls, options, dataset, ctx: RunContext) -> Evaluation:
        return on_main_rank(lambda: evaluate_single_image(None, dataset, cls.eval_settings(options), ctx), ctx)
