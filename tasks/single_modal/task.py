"""The single-modal task: CUT's one-sided GAN framework (taesungp/contrastive-unpaired-translation).

Per step (CUT's ``optimize_parameters``): the generator runs once on cat(real_A, real_B) when the
method uses an identity pair; D is updated with 0.5 * (L_GAN(D(fake), 0) + L_GAN(D(real_B), 1));
then G and the method's heads with lambda_GAN * L_GAN(D(fake), 1) + the method's losses.

A method that asks for cycle consistency (``Method.cycle_consistency()``, the CycleGAN baseline)
gets CycleGAN's two-sided framework instead (``tasks/cyclegan.py``, the code that also trains the
compression task's teacher): G_A (``netG``, the generator that is evaluated) and G_B, D_A (``netD``)
and D_B, built from the same options, one step = both generators, then both discriminators; the
method's own losses on (real_A, G_A(real_A)) join the generators' objective.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from benchmark.core.context import Evaluation, RunContext
from benchmark.core.errors import ConfigError
from benchmark.core.registry import register_task
from methods.base import CYCLE_CONSISTENCY, OUTPUT_GRADIENT, Method, OptimizerDefaults

from ..acceleration import Acceleration, AccelerationOptions
from ..adversarial_steps import GeneratorDiscriminatorSteps
from ..base import (Task, checkpoint_size, distribute, linear_decay_schedulers, restore_training_state,
                    schedule_refusal, training_state)
from ..cyclegan import CycleGAN, CycleOutputs
from ..data import UnpairedBatches, to_model_range
from ..evaluation import evaluate_translation
from ..validation import TranslationValidation, hold_out_sides
from ..image_pool import ImagePool
from ..networks import GANLoss, NLayerDiscriminator, ResnetGenerator, cut_layer_ids, init_weights
from ..optimizer_steps import step_generator_side, step_schedulers, zero_generator_side


@dataclass
class SingleModalOptions(AccelerationOptions):
    """The CUT framework's options, and the training step's acceleration (``compile``,
    ``autocast``, ``channels_last``: tasks/acceleration.py; all off by default)."""
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
    """Not used: the suite's ``log_every`` sets how often losses are logged. Kept so that the
    configs of earlier runs still match; another value is refused, as it would change nothing."""

    def validate(self):
        problem = schedule_refusal(self)
        if problem:
            return problem
        if self.n_blocks < 1:
            return f"n_blocks must be >= 1, got {self.n_blocks}"
        return self.acceleration_refusal()


@register_task("single_modal")
class SingleModalTask(GeneratorDiscriminatorSteps, Task):
    """Single-modal unpaired translation in CUT's framework: ResNet G, PatchGAN D, one-sided GAN."""

    Options = SingleModalOptions
    trains_distributed = True
    dataset_kinds = ("unpaired", "paired")
    """Paired data trains it too, as unpaired data (CUT trains Cityscapes label->photo unpaired)."""
    capabilities = frozenset({CYCLE_CONSISTENCY, OUTPUT_GRADIENT})

    def _generator(self) -> ResnetGenerator:
        o = self.options
        return init_weights(ResnetGenerator(3, 3, o.ngf, o.n_blocks, o.normG, o.antialias, o.antialias_up),
                            o.init_type, o.init_gain)

    def _discriminator(self) -> NLayerDiscriminator:
        o = self.options
        return init_weights(NLayerDiscriminator(3, o.ndf, o.n_layers_D, o.normD, o.antialias), o.init_type, o.init_gain)

    def checkpoint_size(self) -> int:
        """G and D (CycleGAN's framework: two of each)."""
        pairs = 1 if self.method.cycle_consistency() is None else 2
        return pairs * checkpoint_size([self._generator(), self._discriminator()])

    def setup(self) -> None:
        o, device = self.options, self.ctx.device
        self.gan_loss = GANLoss(o.gan_mode).to(device)
        cycle = self.method.cycle_consistency()
        self.cycle: CycleGAN | None = None
        if cycle is None:
            self.netG = self._generator().to(device)
            self.netD = self._discriminator().to(device)
        else:
            self._check_cycle_method()
            if self.ctx.distributed.enabled:
                raise ConfigError(f"method '{self.method.registry_name}' trains CycleGAN's two-sided framework, whose "
                                  "image pools draw per image and are not shared among processes: train it in "
                                  "one process (without torchrun)")
            self.cycle = CycleGAN.build(self._generator, self._discriminator, device, gan_loss=self.gan_loss,
                                        weights=cycle, pool_size=o.pool_size, lr=o.lr, betas=(o.beta1, o.beta2),
                                        lambda_gan=o.lambda_GAN)
            self.netG, self.netD = self.cycle.nets["G_A"], self.cycle.nets["D_A"]
        self.acceleration = Acceleration(o, device)
        self.acceleration.prepare(self._nets())
        self.layers = list(o.feature_layers) if o.feature_layers is not None else cut_layer_ids(o.n_blocks, o.antialias)
        self.pool = ImagePool(o.pool_size)  # the one-sided framework's (CycleGAN's two are in self.cycle)
        train_a, train_b = self.dataset.split("train", "A"), self.dataset.split("train", "B")
        train_a, train_b, val = hold_out_sides(train_a, train_b, self.ctx.validation,
                                               paired=self.dataset.kind == "paired")
        self.validation = TranslationValidation(val, self.dataset, self.ctx) if val is not None else None
        crop = self.dataset.split("test", "A").image(0).shape[-1]
        self.batches = UnpairedBatches(train_a, train_b, o.batch_size, crop, o.flip, self.ctx.seed)
        defaults = OptimizerDefaults(o.lr, (o.beta1, o.beta2))
        if self.cycle is None:
            self.opt_G = torch.optim.Adam(self.netG.parameters(), lr=o.lr, betas=defaults.betas)
            self.opt_D = torch.optim.Adam(self.netD.parameters(), lr=o.lr, betas=defaults.betas)
        else:  # one Adam over both generators, one over both discriminators
            self.opt_G, self.opt_D = self.cycle.optimizers
        # Data-dependent initialisation of the method's heads on the first batch.
        real_a, real_b = self._batch(0)
        self.method.to(device)
        self.acceleration.prepare([], layout_only=[self.method])
        self.method.initialize(self._pair(real_a, real_a, real_b, real_b, False))
        self._decide_feature_reuse(real_a, real_b, self.method.uses_identity)
        self.method.build_optimizers(defaults)
        self.schedulers = linear_decay_schedulers(self._optimizers(), o.n_steps, o.n_steps_decay)
        # torchrun: each rank its share of every batch, gradients averaged before every step.
        distribute(self.ctx, self.method, self._modules(), self._optimizers())

    def _check_cycle_method(self) -> None:
        """The CycleGAN framework adds the method's ``generator_losses``; it neither flips the inputs
        nor runs a method's own auxiliary step, so a method that needs either is refused."""
        method, name = self.method, self.method.registry_name
        if method.flips_input:
            raise ConfigError(f"method '{name}' asks for both cycle consistency and flip equivariance; the "
                              "single-modal task's CycleGAN framework does not flip its inputs: turn "
                              "flip_equivariance off")
        if type(method).auxiliary_step is not Method.auxiliary_step:
            raise ConfigError(f"method '{name}' asks for cycle consistency and has an auxiliary step of its own; "
                              "the single-modal task's CycleGAN framework runs no auxiliary step")

    def _batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``step`` (this rank's share of it under torchrun) on the device, in [-1, 1]."""
        a, b = self.batches.batch(step)
        local, inputs = self.ctx.distributed.local, self.acceleration.inputs
        return (inputs(to_model_range(local(a), self.ctx.device)),
                inputs(to_model_range(local(b), self.ctx.device)))

    def _nets(self) -> list[torch.nn.Module]:
        """The generators and discriminators (one of each, two of each in CycleGAN's framework)."""
        if self.cycle is None:
            return [self.netG, self.netD]
        return list(self.cycle.nets.values())

    def _pool_query(self, fake: torch.Tensor) -> torch.Tensor:
        """The image pool's answer for this rank's fakes: under torchrun the pool sees the global
        batch on every rank (the same draws, the same stored images) and each rank keeps its rows."""
        d = self.ctx.distributed
        if self.pool.size == 0 or not d.enabled:
            return self.pool.query(fake)
        return d.local(self.pool.query(d.gather_rows(fake)))

    def train_step(self) -> dict[str, float]:
        with self.acceleration.step():
            if self.cycle is not None:
                return self._cycle_step()
            return self._one_sided_step()

    def _one_sided_step(self) -> dict[str, float]:
        real_a, real_b = self._batch(self.step)
        fake_b, idt_b, flipped, translated = self._translate_batch(real_a, real_b, self.method.uses_identity)

        def d_loss():
            fake_for_d = self._pool_query(fake_b.detach())
            return 0.5 * (self.gan_loss(self.netD(fake_for_d), False) + self.gan_loss(self.netD(real_b), True)), {}

        loss_d, _ = self._update_discriminator(d_loss)
        # The method's own step (e.g. a negative generator), then generator and heads.
        pair = self._pair(real_a, fake_b, real_b, idt_b, flipped, translated)
        aux = self.method.auxiliary_step(pair)
        logs = dict(aux.logs)
        logs.update(D=loss_d.item(), **self._update_generator(pair, aux.computed))
        return logs

    def _cycle_step(self) -> dict[str, float]:
        """CycleGAN's step (generators, then discriminators) with the method's losses on
        (real_A, G_A(real_A)) and, when it uses one, the identity pair (real_B, G_A(real_B))."""
        real_a, real_b = self._batch(self.step)
        method = self.method
        zero_generator_side([], method)  # the generators' optimiser: in update_generators

        def method_losses(out: CycleOutputs) -> dict[str, torch.Tensor]:
            identity = None
            if method.uses_identity:
                identity = out.idt_a if out.idt_a is not None else self.netG(out.real_b)
            return method.generator_losses(self._pair(out.real_a, out.fake_b, out.real_b, identity, False))

        losses, outputs = self.cycle.update_generators(real_a, real_b, method_losses)
        step_generator_side([], method)  # the generators: stepped by update_generators
        d_losses = self.cycle.update_discriminators(outputs)
        step_schedulers(self.schedulers)
        self.step += 1
        return {**{k: v.item() for k, v in d_losses.items()}, **{k: v.item() for k, v in losses.items()}}

    def _modules(self) -> dict[str, torch.nn.Module]:
        if self.cycle is None:
            return super()._modules()
        n = self.cycle.nets
        return {"netG": n["G_A"], "netG_B": n["G_B"], "netD": n["D_A"], "netD_B": n["D_B"], "method": self.method}

    def state_dict(self) -> dict:
        pools = {"pool": self.pool.state_dict()} if self.cycle is None else {"pools": self.cycle.pools_state()}
        return training_state(self.step, self._modules(), self._optimizers(), self.schedulers, **pools)

    def load_state_dict(self, state: dict) -> None:
        self.step = restore_training_state(state, self._modules(), self._optimizers(), self.schedulers)
        if self.cycle is None:
            self.pool.load_state_dict(state["pool"])
        else:
            self.cycle.load_pools_state(state["pools"])

    def evaluate(self) -> Evaluation:
        result = evaluate_translation(self.translate, self.dataset, self.ctx)
        trained_with = self.acceleration.describe()
        if trained_with:  # the report's protocol line says how the numbers were trained
            result.protocol["acceleration"] = trained_with
        return result

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
