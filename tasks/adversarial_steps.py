"""The step the CUT-framework tasks share: one generator against one discriminator, plus a method.

CUT's ``optimize_parameters``, which the single-modal and single-image tasks both follow: translate
the batch once (with the identity half when needed, and the method's random horizontal flip), update
D, let the method take its own step (e.g. NEGCUT's negative generator), then update G and the
method's heads with lambda_GAN * L_GAN(D(fake), 1) + the method's losses (+ the task's own terms).

Unlike the official code, the translation keeps the encoder's activations of its input at the
task's feature layers, and the step's :class:`tasks.feature_sources.EncoderFeatures` hands them to a
method that asks for the source's (the keys) instead of encoding the source a second time: the same
values, one encoder pass less per compared pair (docs/speed.md). Only where they equal a fresh
``encode`` bit for bit, decided when the task is set up (``ForwardFeatureReuse``): not on a flipped
step, not with batch statistics or dropout in the generator, not where a later layer overwrites
them, and only if the backend computes a half of the batch as it computes that half alone.
"""
from __future__ import annotations

from typing import Callable

import torch

from methods.base import TranslationPair

from .base import set_requires_grad
from .feature_sources import ForwardFeatureReuse, decide_forward_feature_reuse, encoder_pair
from .optimizer_steps import run_optimizers, step_generator_side, step_schedulers, zero_generator_side


class GeneratorDiscriminatorSteps:
    """Mixin for a ``Task`` that sets ``netG`` (taking ``(images, layers, encode_only=True)`` for its
    features), ``netD``, ``gan_loss``, ``opt_G``, ``opt_D``, ``schedulers`` and ``layers``, and calls
    ``_decide_feature_reuse`` on its first batch in ``setup``; its options have ``lambda_GAN``."""

    def encode(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The generator encoder's features at ``self.layers``, with gradients."""
        return self.netG(images, self.layers, encode_only=True)

    def _decide_feature_reuse(self, real_a: torch.Tensor, real_b: torch.Tensor, with_identity: bool) -> None:
        """Whether this run's steps hand the method the translation pass's activations (on the
        first batch, as ``_translate_batch`` will translate it); sets ``self.feature_reuse``."""
        batch = torch.cat([real_a, real_b]) if with_identity else real_a
        self.feature_reuse = decide_forward_feature_reuse(self.netG, self.layers, batch, real_a.shape[0])

    def switch_off_feature_reuse(self, why: str) -> None:
        """Encode the keys afresh at every step, whatever the first batch showed (``perf
        --without-feature-reuse`` times a twin task switched off so); ``why`` is kept as the reason."""
        self.feature_reuse = ForwardFeatureReuse(None, why)

    def _pair(self, real_a, fake_b, real_b, idt_b, flipped, translated=None) -> TranslationPair:
        return encoder_pair(self.encode, translated, source=real_a, output=fake_b, target=real_b,
                            identity=idt_b, output_flipped=flipped,
                            progress=self.step / max(1, self.total_steps), step=self.step)

    def _translate_batch(self, real_a: torch.Tensor, real_b: torch.Tensor, with_identity: bool):
        """G on cat(real_A, real_B) (or real_A alone), flipped when the method asks and a coin says so:
        ``(fake_B, idt_B or None, flipped, translated)``, ``translated`` the encoder activations of
        the source (and target) that this pass computed, by role, where ``self.feature_reuse`` says
        they equal a fresh encoding (else empty)."""
        n = real_a.shape[0]
        real = torch.cat([real_a, real_b]) if with_identity else real_a
        flipped = self.method.flips_input and bool(torch.rand(()) < 0.5)
        if flipped:
            real = torch.flip(real, dims=[3])
        if not self.feature_reuse.applies(real, flipped):
            fake = self.netG(real)
            return fake[:n], (fake[n:] if with_identity else None), flipped, {}
        fake, feats = self.netG(real, self.layers)
        translated = {"source": [f[:n] for f in feats]}
        if with_identity:
            translated["target"] = [f[n:] for f in feats]
        return fake[:n], (fake[n:] if with_identity else None), flipped, translated

    def _update_discriminator(self, loss_fn: Callable[[], tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor, dict]:
        """One D step on ``loss_fn()`` (computed with D trainable): ``(loss, its logs)``."""
        set_requires_grad(self.netD, True)
        self.opt_D.zero_grad(set_to_none=True)
        loss_d, logs = loss_fn()
        loss_d.backward()
        self.opt_D.step()
        return loss_d, logs

    def _update_generator(self, pair: TranslationPair, computed: dict,
                          task_losses: Callable[[], dict[str, torch.Tensor]] | None = None) -> dict[str, float]:
        """One step of G and the method's heads on lambda_GAN * L_GAN(D(fake), 1) + the method's losses
        + ``task_losses()`` (the task's own weighted terms, e.g. an identity loss); then the method's
        after-step hook, the schedulers and the step counter. Returns the logged loss values."""
        method, fake_b = self.method, pair.output
        set_requires_grad(self.netD, False)
        zero_generator_side([self.opt_G], method)
        lambda_gan = self.options.lambda_GAN
        loss_gan = lambda_gan * self.gan_loss(self.netD(fake_b), True) if lambda_gan > 0 else fake_b.new_zeros(())
        terms = method.generator_losses(pair, computed)
        loss_g = loss_gan + sum(terms.values(), fake_b.new_zeros(()))
        extra = task_losses() if task_losses is not None else {}
        for loss in extra.values():
            loss_g = loss_g + loss
        loss_g.backward()
        step_generator_side([self.opt_G], method)
        step_schedulers(self.schedulers)
        self.step += 1
        return {**{k: v.item() for k, v in extra.items()}, "G_GAN": loss_gan.item(),
                **{k: v.item() for k, v in terms.items()}}

    def _modules(self) -> dict[str, torch.nn.Module]:
        return {"netG": self.netG, "netD": self.netD, "method": self.method}

    def _optimizers(self) -> list[torch.optim.Optimizer]:
        return run_optimizers([self.opt_G, self.opt_D], self.method)

    @torch.no_grad()
    def translate(self, images: torch.Tensor) -> torch.Tensor:
        self.netG.eval()
        try:
            return self.netG(images)
        finally:
            self.netG.train()
