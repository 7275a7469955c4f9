"""The step the CUT-framework tasks share: one generator against one discriminator, plus a method.

CUT's ``optimize_parameters``, which the single-modal and single-image tasks both follow: translate
the batch once (with the identity half when needed, and the method's random horizontal flip), update
D, let the method take its own step (e.g. NEGCUT's negative generator), then update G and the
method's heads with lambda_GAN * L_GAN(D(fake), 1) + the method's losses (+ the task's own terms).

Unlike the official code, the translation keeps the encoder's activations of its input at the
task's feature layers, and the methods that compare the generator encoder's features take the
source's (the keys) from there instead of encoding the source a second time: the same values, one
encoder pass less per compared pair. They are offered only where they equal a fresh ``encode`` bit
for bit: the input was not flipped, the generator treats each image of the batch on its own (no
batch statistics, no dropout) and leaves those activations unchanged later in its pass, and the
backend computes a half of the batch as it computes that half alone (checked once per input shape).
"""
from __future__ import annotations

from typing import Callable

import torch

from methods.base import TranslationPair

from .base import samplewise, set_requires_grad
from .optimizer_steps import run_optimizers, step_generator_side, step_schedulers, zero_generator_side


class GeneratorDiscriminatorSteps:
    """Mixin for a ``Task`` that sets ``netG`` (taking ``(images, layers, encode_only=True)`` for its
    features), ``netD``, ``gan_loss``, ``opt_G``, ``opt_D``, ``schedulers`` and ``layers``; its options
    have ``lambda_GAN``."""

    def encode(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The generator encoder's features at ``self.layers``, with gradients (``pair.encode``)."""
        return self.netG(images, self.layers, encode_only=True)

    def _pair(self, real_a, fake_b, real_b, idt_b, flipped, encoded=()) -> TranslationPair:
        return TranslationPair(source=real_a, output=fake_b, encode=self.encode, target=real_b,
                               identity=idt_b, output_flipped=flipped,
                               progress=self.step / max(1, self.total_steps), step=self.step,
                               encoded=tuple(encoded))

    def _translate_batch(self, real_a: torch.Tensor, real_b: torch.Tensor, with_identity: bool):
        """G on cat(real_A, real_B) (or real_A alone), flipped when the method asks and a coin says so:
        ``(fake_B, idt_B or None, flipped, encoded)``, ``encoded`` the ``(image, features)`` pairs of
        the encoder activations this pass computed that equal ``encode(image)`` (for
        ``TranslationPair.encoded``; empty when flipped or when they would differ)."""
        n = real_a.shape[0]
        real = torch.cat([real_a, real_b]) if with_identity else real_a
        flipped = self.method.flips_input and bool(torch.rand(()) < 0.5)
        if flipped:
            real = torch.flip(real, dims=[3])
        if flipped or not self._forward_features_reusable(real, n):
            fake = self.netG(real)
            return fake[:n], (fake[n:] if with_identity else None), flipped, ()
        fake, feats = self.netG(real, self.layers)
        encoded = [(real_a, [f[:n] for f in feats])]
        if with_identity:
            encoded.append((real_b, [f[n:] for f in feats]))
        return fake[:n], (fake[n:] if with_identity else None), flipped, tuple(encoded)

    def _forward_features_reusable(self, real: torch.Tensor, n: int) -> bool:
        """Whether the generator's activations at ``self.layers`` while it translates the batch
        ``real`` (``n`` source images, then the identity half if any) equal ``encode`` of each
        half, bit for bit. Needed: every image is treated on its own (``samplewise``) and the
        generator says the activations survive the rest of its pass unchanged; then, because a
        backend may pick another convolution algorithm for another batch size (on CPU, small
        layers round differently at batch 2 and batch 1), the halves of one batch are compared with
        their own encodings once per input shape (encoder only: no randomness drawn) and the answer
        is kept for the run."""
        survive = getattr(self.netG, "features_survive_forward", None)
        if survive is None or not survive(self.layers) or not samplewise(self.netG):
            return False
        if n == real.shape[0]:  # no identity half: the translated batch is the encoded one
            return True
        cache = self.__dict__.setdefault("_reuse_checked", {})
        key = (tuple(real.shape), n, real.dtype, str(real.device), tuple(self.layers))
        if key not in cache:  # in training mode, with gradients, as the step computes them
            whole = self.netG(real, self.layers, encode_only=True)
            halves = (self.netG(real[:n], self.layers, encode_only=True),
                      self.netG(real[n:], self.layers, encode_only=True))
            cache[key] = all(torch.equal(w[:n], a) and torch.equal(w[n:], b)
                             for w, a, b in zip(whole, *halves))
        return cache[key]

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
