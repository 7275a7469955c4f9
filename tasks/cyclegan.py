"""CycleGAN's two-sided training (Zhu et al., ICCV 2017; junyanz/pytorch-CycleGAN-and-pix2pix,
``models/cycle_gan_model.py``), shared by the single-modal task's CycleGAN baseline (a method that
asks for cycle consistency) and the compression task's CycleGAN teacher.

Two generators G_A: A -> B and G_B: B -> A, two PatchGAN discriminators D_A (on domain B) and D_B
(on domain A), built in the official order G_A, G_B, D_A, D_B; one Adam over both generators and one
over both discriminators; an image pool of past fakes per direction. One step is the official
``optimize_parameters``: first both generators, with the discriminators frozen, on

    GAN(D_A(G_A(A)), 1) + GAN(D_B(G_B(B)), 1)
    + lambda_A |G_B(G_A(A)) - A| + lambda_B |G_A(G_B(B)) - B|
    + lambda_identity (lambda_B |G_A(B) - B| + lambda_A |G_B(A) - A|)

(each L1 a mean over the batch's pixels, so any batch size is the mean of its images), then both
discriminators on ``0.5 (GAN(D(real), 1) + GAN(D(pool(fake)), 0))``, D_A before D_B.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from methods.base import CycleConsistency

from .base import set_requires_grad
from .image_pool import ImagePool
from .networks import GANLoss


@dataclass
class CycleOutputs:
    """The images of one generator step, for terms added to the generators' objective."""

    real_a: torch.Tensor
    real_b: torch.Tensor
    fake_b: torch.Tensor
    """G_A(real_A), with gradients."""
    fake_a: torch.Tensor
    """G_B(real_B), with gradients."""
    idt_a: torch.Tensor | None
    """G_A(real_B) (the official ``idt_A``), computed when ``lambda_identity > 0``, else None."""


ExtraLosses = Callable[[CycleOutputs], dict[str, torch.Tensor]]
"""Further weighted generator terms on a step's images (the single-modal task: the method's losses)."""


class CycleGAN:
    """CycleGAN's networks (``nets``: G_A, G_B, D_A, D_B), optimisers (``optimizers``: generators,
    discriminators), image pools and training step. Learning-rate schedules, data and the step count
    stay with the caller."""

    def __init__(self, nets: dict[str, nn.Module], gan_loss: GANLoss, weights: CycleConsistency, pool_size: int,
                 lr: float, betas: tuple[float, float], lambda_gan: float = 1.0):
        missing = {"G_A", "G_B", "D_A", "D_B"} - set(nets)
        if missing:
            raise ValueError(f"CycleGAN needs the networks G_A, G_B, D_A and D_B; missing {sorted(missing)}")
        self.nets = nets
        self.gan_loss = gan_loss
        self.weights = weights
        self.lambda_gan = lambda_gan
        self.optimizers = [self._adam(nets["G_A"], nets["G_B"], lr=lr, betas=betas),
                           self._adam(nets["D_A"], nets["D_B"], lr=lr, betas=betas)]
        self.fake_a_pool, self.fake_b_pool = ImagePool(pool_size), ImagePool(pool_size)

    @classmethod
    def build(cls, generator: Callable[[], nn.Module], discriminator: Callable[[], nn.Module],
              device: torch.device, **kwargs) -> CycleGAN:
        """Networks from the factories, drawn from the global RNG in the official order (G_A, G_B,
        D_A, D_B) and moved to ``device``; ``kwargs`` as for the constructor."""
        nets = {"G_A": generator(), "G_B": generator(), "D_A": discriminator(), "D_B": discriminator()}
        return cls({k: n.to(device) for k, n in nets.items()}, **kwargs)

    @staticmethod
    def _adam(*nets: nn.Module, lr: float, betas: tuple[float, float]) -> torch.optim.Adam:
        return torch.optim.Adam(itertools.chain(*(n.parameters() for n in nets)), lr=lr, betas=betas)

    @property
    def pools(self) -> list[ImagePool]:
        """The pools of fake A (D_B's) and fake B (D_A's) images, in the order of ``state_dict``."""
        return [self.fake_a_pool, self.fake_b_pool]

    def generator_losses(self, real_a: torch.Tensor, real_b: torch.Tensor
                         ) -> tuple[dict[str, torch.Tensor], CycleOutputs]:
        """The weighted terms of both generators' objective (each a mean over the batch's pixels), and
        the step's images (the fakes the discriminators then see)."""
        w, n = self.weights, self.nets
        g_a, g_b, d_a, d_b = n["G_A"], n["G_B"], n["D_A"], n["D_B"]
        fake_b = g_a(real_a)
        rec_a = g_b(fake_b)
        fake_a = g_b(real_b)
        rec_b = g_a(fake_a)
        losses = {"G_A": self.gan_loss(d_a(fake_b), True, for_discriminator=False) * self.lambda_gan,
                  "G_B": self.gan_loss(d_b(fake_a), True, for_discriminator=False) * self.lambda_gan,
                  "cycle_A": F.l1_loss(rec_a, real_a) * w.lambda_A,
                  "cycle_B": F.l1_loss(rec_b, real_b) * w.lambda_B}
        idt_a = None
        if w.lambda_identity > 0:
            idt_a = g_a(real_b)  # G_A should keep B as it is
            losses["idt_A"] = F.l1_loss(idt_a, real_b) * w.lambda_B * w.lambda_identity
            losses["idt_B"] = F.l1_loss(g_b(real_a), real_a) * w.lambda_A * w.lambda_identity
        return losses, CycleOutputs(real_a, real_b, fake_b, fake_a, idt_a)

    def update_generators(self, real_a: torch.Tensor, real_b: torch.Tensor,
                          extra_losses: ExtraLosses | None = None) -> tuple[dict[str, torch.Tensor], CycleOutputs]:
        """The generator step (discriminators frozen): CycleGAN's terms plus ``extra_losses(outputs)``,
        one backward, one step of the generators' optimiser. Returns the terms and the images."""
        d_a, d_b = self.nets["D_A"], self.nets["D_B"]
        opt_g = self.optimizers[0]
        set_requires_grad(d_a, False)
        set_requires_grad(d_b, False)
        opt_g.zero_grad(set_to_none=True)
        losses, outputs = self.generator_losses(real_a, real_b)
        if extra_losses is not None:
            extra = extra_losses(outputs)
            clash = sorted(set(extra) & set(losses))
            if clash:
                raise ValueError(f"extra generator terms {clash} have the names of CycleGAN's own terms")
            losses.update(extra)
        sum(losses.values()).backward()
        opt_g.step()
        return losses, outputs

    def update_discriminators(self, outputs: CycleOutputs) -> dict[str, torch.Tensor]:
        """The discriminator step on pooled fakes: D_A (real B vs fake B), then D_B (real A vs fake A)."""
        d_a, d_b = self.nets["D_A"], self.nets["D_B"]
        opt_d = self.optimizers[1]
        set_requires_grad(d_a, True)
        set_requires_grad(d_b, True)
        opt_d.zero_grad(set_to_none=True)
        loss_d_a = self.discriminator_loss(d_a, outputs.real_b, self.fake_b_pool.query(outputs.fake_b.detach()))
        loss_d_a.backward()
        loss_d_b = self.discriminator_loss(d_b, outputs.real_a, self.fake_a_pool.query(outputs.fake_a.detach()))
        loss_d_b.backward()
        opt_d.step()
        return {"D_A": loss_d_a, "D_B": loss_d_b}

    def update(self, real_a: torch.Tensor, real_b: torch.Tensor, extra_losses: ExtraLosses | None = None
               ) -> dict[str, float]:
        """One CycleGAN step (generators, then discriminators); returns the losses' values."""
        losses, outputs = self.update_generators(real_a, real_b, extra_losses)
        d_losses = self.update_discriminators(outputs)
        return {**{k: v.item() for k, v in d_losses.items()}, **{k: v.item() for k, v in losses.items()}}

    def discriminator_loss(self, net: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.gan_loss(net(real), True) + self.gan_loss(net(fake.detach()), False))

    def pools_state(self) -> list[dict]:
        return [p.state_dict() for p in self.pools]

    def load_pools_state(self, states: list[dict]) -> None:
        for pool, s in zip(self.pools, states, strict=True):
            pool.load_state_dict(s)
