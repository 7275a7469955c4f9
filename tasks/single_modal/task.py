"""The single-modal task: CUT's one-sided GAN framework (taesungp/contrastive-unpaired-translation).

Per step (CUT's ``optimize_parameters``): the generator runs once on cat(real_A, real_B) when the
method uses an identity pair; D is updated with 0.5 * (L_GAN(D(fake), 0) + L_GAN(D(real_B), 1));
then G and the method's heads with lambda_GAN * L_GAN(D(fake), 1) + the method's losses.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from benchmark.core.context import Evaluation, RunContext
from benchmark.core.registry import register_task
from methods.base import OptimizerDefaults

from ..adversarial_steps import GeneratorDiscriminatorSteps
from ..base import Task, linear_decay_schedulers, restore_training_state, training_state
from ..data import UnpairedBatches, to_model_range
from ..evaluation import evaluate_translation
from ..validation import TranslationValidation, hold_out_sides
from ..image_pool import ImagePool
from ..networks import GANLoss, NLayerDiscriminator, ResnetGenerator, cut_layer_ids, init_weights


@dataclass
class SingleModalOptions:
    ngf: int = 64
    ndf: int = 64
    n_blocks: int = 9
    n_layers_D: int = 3
    normG: Literal["instance", "batch", "none"] = "instance"
    normD: Literal["instance", "batch", "none"] = "instance"
    antialias: bool = True
    antialias_up: bool = True
    init_type: Literal["xavier", "normal", "kaiming", "orthogonal"] = "xavier"
    init_gain: float = 0.02
    gan_mode: Literal["lsgan", "vanilla", "nonsaturating", "hinge"] = "lsgan"
    lambda_GAN: float = 1.0
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    batch_size: int = 1
    n_steps: int = 1000
    """Steps at the initial learning rate (CUT's n_epochs, counted in steps)."""
    n_steps_decay: int = 1000
    """Steps of linear decay to zero (CUT's n_epochs_decay, counted in steps)."""
    pool_size: int = 0
    flip: bool = True
    feature_layers: list[int] | None = None
    """Generator layers whose features methods see; None = CUT's '0,4,8,12,16' for this depth."""
    log_every: int = 50

    def validate(self):
        if self.batch_size < 1:
            return f"batch_size must be >= 1, got {self.batch_size}"
        if self.n_steps < 0 or self.n_steps_decay < 0 or self.n_steps + self.n_steps_decay < 1:
            return "n_steps and n_steps_decay must be >= 0 and their sum >= 1"
        if self.n_blocks < 1:
            return f"n_blocks must be >= 1, got {self.n_blocks}"
        return None


@register_task("single_modal")
class SingleModalTask(GeneratorDiscriminatorSteps, Task):
    """Single-modal unpaired translation in CUT's framework: ResNet G, PatchGAN D, one-sided GAN."""

    Options = SingleModalOptions
    dataset_kinds = ("unpaired", "paired")
    """Paired data trains it too, as unpaired data (CUT trains Cityscapes label->photo unpaired)."""

    def setup(self) -> None:
        o, device = self.options, self.ctx.device
        self.netG = init_weights(ResnetGenerator(3, 3, o.ngf, o.n_blocks, o.normG, o.antialias, o.antialias_up),
                                 o.init_type, o.init_gain).to(device)
        self.netD = init_weights(NLayerDiscriminator(3, o.ndf, o.n_layers_D, o.normD, o.antialias),
                                 o.init_type, o.init_gain).to(device)
        self.layers = list(o.feature_layers) if o.feature_layers is not None else cut_layer_ids(o.n_blocks, o.antialias)
        self.gan_loss = GANLoss(o.gan_mode).to(device)
        self.pool = ImagePool(o.pool_size)
        train_a, train_b = self.dataset.split("train", "A"), self.dataset.split("train", "B")
        train_a, train_b, val = hold_out_sides(train_a, train_b, self.ctx.validation,
                                               paired=self.dataset.kind == "paired")
        self.validation = TranslationValidation(val, self.dataset, self.ctx) if val is not None else None
        crop = self.dataset.split("test", "A").image(0).shape[-1]
        self.batches = UnpairedBatches(train_a, train_b, o.batch_size, crop, o.flip, self.ctx.seed)
        defaults = OptimizerDefaults(o.lr, (o.beta1, o.beta2))
        self.opt_G = torch.optim.Adam(self.netG.parameters(), lr=o.lr, betas=defaults.betas)
        self.opt_D = torch.optim.Adam(self.netD.parameters(), lr=o.lr, betas=defaults.betas)
        # Data-dependent initialisation of the method's heads on the first batch.
        real_a, real_b = self._batch(0)
        self.method.to(device)
        self.method.initialize(self._pair(real_a, real_a, real_b, real_b, False))
        self.method.build_optimizers(defaults)
        self.schedulers = linear_decay_schedulers(self._optimizers(), o.n_steps, o.n_steps_decay)

    def _optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.opt_G, self.opt_D, *self.method.optimizers.values()]

    def _batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = self.batches.batch(step)
        return to_model_range(a, self.ctx.device), to_model_range(b, self.ctx.device)

    def train_step(self) -> dict[str, float]:
        real_a, real_b = self._batch(self.step)
        fake_b, idt_b, flipped = self._translate_batch(real_a, real_b, self.method.uses_identity)

        def d_loss():
            fake_for_d = self.pool.query(fake_b.detach())
            return 0.5 * (self.gan_loss(self.netD(fake_for_d), False) + self.gan_loss(self.netD(real_b), True)), {}

        loss_d, _ = self._update_discriminator(d_loss)
        # The method's own step (e.g. a negative generator), then generator and heads.
        pair = self._pair(real_a, fake_b, real_b, idt_b, flipped)
        aux = self.method.auxiliary_step(pair)
        logs = dict(aux.logs)
        logs.update(D=loss_d.item(), **self._update_generator(pair, aux.computed))
        return logs

    def state_dict(self) -> dict:
        return training_state(self.step, self._modules(), self._optimizers(), self.schedulers,
                              pool=self.pool.state_dict())

    def load_state_dict(self, state: dict) -> None:
        self.step = restore_training_state(state, self._modules(), self._optimizers(), self.schedulers)
        self.pool.load_state_dict(state["pool"])

    def evaluate(self) -> Evaluation:
        return evaluate_translation(self.translate, self.dataset, self.ctx)

    @classmethod
    def validation_refusal(cls, options) -> str | None:
        return None

    def evaluate_point(self, split: str) -> dict[str, float]:
        """'val': the held-out A images' translations against the held-out B images; 'test': the
        test protocol of :meth:`evaluate`."""
        if split == "val":
            return self.validation.score(self.translate)
        return self.evaluate().metrics

    @classmethod
    def evaluate_identity(cls, options, dataset, ctx: RunContext) -> Evaluation:
        return evaluate_translation(lambda x: x, dataset, ctx)
