"""The multi-modal task: StarGAN v2 (clovaai/stargan-v2) with a patch-wise hook for any method plugin,
placed where the Hneg-SRC multimodal fork (jcy132/Hneg_SRC, ``Multimodal/``) puts its losses.

Per step, as ``core/solver.py`` ``Solver.train``: D with latent-guided fakes, D with
reference-guided fakes (each: BCE real + BCE fake + lambda_reg * R1 on the reals), G with latent
codes (updating G, the mapping network F and the style encoder E, plus the method's heads), G with
reference images (updating G only), then EMA (beta 0.999) of G, F and E; lambda_ds decays linearly
to 0 over ``ds_iter`` steps. The generator objective of each G step is

    L_adv + lambda_sty L_sty - lambda_ds L_ds + lambda_cyc L_rec + (the method's losses)

The method sees the generator's encoder (``pair.features`` from ``Generator.encode_features`` at
``feature_layers``; default the fork's choice, the encoder outputs at the bottleneck resolution).
See docs/multi_modal.md for the fork's choices this follows by default and the switches that fix
its oddities (``patch_query``, ``reconstruction``, ``patch_steps``, ``generator``).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch

from benchmark.core.errors import ConfigError
from benchmark.core.context import Evaluation, RunContext
from benchmark.core.registry import register_task
from methods.base import OUTPUT_GRADIENT, OptimizerDefaults, TranslationPair

from ..base import Task, checkpoint_size, distribute, set_requires_grad
from ..feature_sources import encoder_pair
from ..optimizer_steps import run_optimizers, step_generator_side
from ..validation import hold_out
from .data import MultiDomainBatch, MultiDomainBatches
from .evaluation import EvalSettings, evaluate_multimodal
from .networks import (Discriminator, Generator, HnegGenerator, MappingNetwork, StyleEncoder, adv_loss,
                       diversity_weight, he_init, moving_average, r1_reg)


@dataclass
class MultiModalOptions:
    # -- networks (core/model.py) ------------------------------------------------------------
    generator: Literal["stargan_v2", "hneg_src"] = "stargan_v2"
    """'stargan_v2': the official generator; 'hneg_src': the fork's (2 strided-conv downsamplings,
    4 + 4 bottleneck blocks, style only in the bottleneck)."""
    dim_in: int = 0
    """First width of G, E and D; 0 = the official 2**14 // img_size."""
    max_conv_dim: int = 512
    latent_dim: int = 16
    style_dim: int = 64
    hidden_dim: int = 512
    """Width of the mapping network (512, hard-coded officially)."""
    # -- objective (core/solver.py, main.py defaults) -----------------------------------------
    lambda_reg: float = 1.0
    lambda_sty: float = 1.0
    lambda_ds: float = 1.0
    lambda_cyc: float = 1.0
    ds_iter: int = 100000
    """Steps over which lambda_ds decays linearly to 0."""
    # -- optimisation --------------------------------------------------------------------------
    n_steps: int = 100000
    """Training iterations (official total_iters)."""
    batch_size: int = 8
    lr: float = 1e-4
    f_lr: float = 1e-6
    beta1: float = 0.0
    beta2: float = 0.99
    weight_decay: float = 1e-4
    ema_beta: float = 0.999
    ema_init: Literal["official", "copy"] = "official"
    """'official': the EMA networks are copied before He init, so they start from PyTorch's default
    init; 'copy': they start as copies of the He-initialised networks."""
    randcrop_prob: float = 0.5
    flip: bool = True
    # -- the patch-wise hook (Hneg-SRC multimodal fork) ----------------------------------------
    feature_layers: list[int] | None = None
    """Encoder points the method sees (0 = after from_rgb, k = after encoder block k); None = the
    fork's choice: the outputs of the last downsampling block and of every bottleneck block."""
    patch_query: Literal["source", "output"] = "source"
    """Which image's features carry the gradient. 'source' (the fork): queries from the source image,
    keys from the translated image, detached (passed as pair.output = source image, pair.source =
    translated image, detached); 'output': CUT's convention, pair.source = source image (keys),
    pair.output = translated image (queries), so the loss reaches the translation."""
    reconstruction: Literal["auto", "cycle", "same_image"] = "auto"
    """'cycle': StarGAN v2's |G(G(x, s), s_org) - x|; 'same_image': the fork's |G(x, s_org) - x|;
    'auto': same_image in G steps where the method adds losses (the fork), cycle otherwise
    (``method: none`` is plain StarGAN v2)."""
    patch_steps: Literal["both", "latent"] = "both"
    """G steps that add the method's losses: both (the fork) or the latent-guided one only."""
    # -- evaluation (metrics/eval.py) ------------------------------------------------------------
    num_outs_per_domain: int = 10
    lpips: bool = True
    lpips_backbone: Literal["imagenet", "untrained"] = "imagenet"
    """'untrained' opts into LPIPS with a random AlexNet trunk when the ImageNet weights are absent
    (values not comparable with published LPIPS; the report says so)."""
    structure_score: bool = True
    grid_styles: int = 3
    eval_nets: Literal["ema", "raw"] = "ema"

    def validate(self):
        if self.batch_size < 1:
            return f"batch_size must be >= 1, got {self.batch_size}"
        if self.n_steps < 1:
            return f"n_steps must be >= 1, got {self.n_steps}"
        if self.ds_iter < 1:
            return f"ds_iter must be >= 1, got {self.ds_iter}"
        if self.dim_in < 0 or self.max_conv_dim < 1:
            return "dim_in must be >= 0 (0 = official) and max_conv_dim >= 1"
        if min(self.latent_dim, self.style_dim, self.hidden_dim) < 1:
            return "latent_dim, style_dim and hidden_dim must be >= 1"
        if not 0.0 <= self.ema_beta <= 1.0:
            return f"ema_beta must be in [0, 1], got {self.ema_beta}"
        if not 0.0 <= self.randcrop_prob <= 1.0:
            return f"randcrop_prob must be in [0, 1], got {self.randcrop_prob}"
        if self.lambda_ds < 0:
            return f"lambda_ds must be >= 0, got {self.lambda_ds}"
        if self.num_outs_per_domain < (2 if self.lpips else 1):
            return "num_outs_per_domain must be >= 2 with lpips (diversity needs pairs), else >= 1"
        if self.grid_styles < 1:
            return f"grid_styles must be >= 1, got {self.grid_styles}"
        return None


class StyleTranslator:
    """Latent- and reference-guided translation with a set of networks (the EMA ones by default)."""

    def __init__(self, generator, mapping, style_encoder, latent_dim: int):
        self.generator, self.mapping, self.style_encoder = generator, mapping, style_encoder
        self.latent_dim = latent_dim

    @torch.no_grad()
    def latent(self, x, y, z):
        return self.generator(x, self.mapping(z, y))

    @torch.no_grad()
    def reference(self, x, y, x_ref):
        return self.generator(x, self.style_encoder(x_ref, y))


@dataclass
class GeneratorObjective:
    """One generator loss of a step (``MultiModalTask.g_loss``)."""

    total: torch.Tensor
    logs: dict[str, float]
    """adv, sty, ds, cyc and the method's auxiliary-step logs."""
    terms: dict[str, torch.Tensor]
    """The method's weighted terms (included in ``total``)."""
    reconstruction: str
    """The reconstruction used, 'cycle' or 'same_image' ('auto' resolved)."""



_TASK_LOGS = ("adv", "sty", "ds", "cyc")
"""The G-step values ``g_loss`` logs itself; every other key of its logs is the method's."""


@register_task("multi_modal")
class MultiModalTask(Task):
    """StarGAN v2 (multi-domain, multi-modal translation) with a patch-wise loss hook, as in Hneg-SRC's Table 2."""

    Options = MultiModalOptions
    trains_distributed = True
    dataset_kinds = ("multi_domain",)
    capabilities = frozenset({OUTPUT_GRADIENT})

    @classmethod
    def capabilities_for(cls, options: MultiModalOptions) -> frozenset[str]:
        """The fork (``patch_query: source``) hands the method the source image as ``output``: no
        gradient flows through its pixels, only through the encoder's features of it."""
        return cls.capabilities if options.patch_query == "output" else cls.capabilities - {OUTPUT_GRADIENT}

    @classmethod
    def required_weights(cls, options: MultiModalOptions) -> list[str]:
        """LPIPS: the linear layers, and the ImageNet AlexNet unless an untrained trunk is opted into."""
        if not options.lpips:
            return []
        return ["lpips_alex_linear"] + ([] if options.lpips_backbone == "untrained" else ["alexnet"])

    # -- set-up ------------------------------------------------------------------------------
    def _networks(self, img_size: int, n_dom: int) -> tuple[torch.nn.Module, MappingNetwork, StyleEncoder,
                                                              Discriminator]:
        """G, F, E and D, before initialisation."""
        o = self.options
        if img_size & (img_size - 1) or img_size < 16:
            raise ConfigError(f"multi_modal: image size must be a power of two >= 16, got {img_size}")
        g_cls = Generator if o.generator == "stargan_v2" else HnegGenerator
        dim_in = o.dim_in or None
        return (g_cls(img_size, o.style_dim, o.max_conv_dim, dim_in),
                MappingNetwork(o.latent_dim, o.style_dim, n_dom, o.hidden_dim),
                StyleEncoder(img_size, o.style_dim, n_dom, o.max_conv_dim, dim_in),
                Discriminator(img_size, n_dom, o.max_conv_dim, dim_in))

    def checkpoint_size(self) -> int:
        """G, F, E and D with their optimisers, and the EMA copies of G, F and E (this reads one
        image of the dataset for its size)."""
        G, F, E, D = self._networks(self.dataset.size, self.dataset.num_domains)
        return checkpoint_size([G, F, E, D], copies=[G, F, E])

    def setup(self) -> None:
        o, device = self.options, self.ctx.device
        self.domains = list(self.dataset.domains)
        n_dom = len(self.domains)
        train_sets = [self.dataset.split("train", d) for d in self.domains]
        self.validation_sets = None
        if self.ctx.validation.enabled:  # the validation split: held out of each domain's training images
            held = [hold_out(s, self.ctx.validation, 2 + i, f"domain '{d}'")
                    for i, (s, d) in enumerate(zip(train_sets, self.domains))]
            self.validation_sets = [h for h, _ in held]
            train_sets = [k for _, k in held]
        self.img_size = self.dataset.size
        self.G, self.F, self.E, self.D = nets = self._networks(self.img_size, n_dom)
        if o.ema_init == "official":  # build_model deep-copies, then Solver applies he_init
            self.G_ema, self.F_ema, self.E_ema = (copy.deepcopy(n) for n in nets[:3])
            for net in nets:
                net.apply(he_init)
        else:
            for net in nets:
                net.apply(he_init)
            self.G_ema, self.F_ema, self.E_ema = (copy.deepcopy(n) for n in nets[:3])
        for net in (*nets, self.G_ema, self.F_ema, self.E_ema):
            net.to(device)
        for net in (self.G_ema, self.F_ema, self.E_ema):
            set_requires_grad(net, False)
        self.layers = list(o.feature_layers) if o.feature_layers is not None else list(self.G.default_feature_points)
        bad = [p for p in self.layers if not 0 <= p < self.G.num_points]
        if bad or not self.layers:
            raise ConfigError(f"multi_modal: feature_layers {o.feature_layers} must name encoder points "
                              f"0..{self.G.num_points - 1} (0 = after from_rgb, k = after encoder block k)")
        betas = (o.beta1, o.beta2)

        def adam(net, lr):
            return torch.optim.Adam(net.parameters(), lr=lr, betas=betas, weight_decay=o.weight_decay)

        self.opt_G, self.opt_F, self.opt_E, self.opt_D = (adam(self.G, o.lr), adam(self.F, o.f_lr),
                                                          adam(self.E, o.lr), adam(self.D, o.lr))
        self.batches = MultiDomainBatches(train_sets, o.batch_size, o.latent_dim, self.img_size,
                                          o.randcrop_prob, o.flip, self.ctx.seed)
        # Data-dependent initialisation of the method (heads sized from the features it will see).
        first = self._batch(0)
        self.method.to(device)
        self.method.initialize(self.make_pair(first.x_src, first.x_src, first.x_ref, first.x_ref, False))
        self.method.build_optimizers(OptimizerDefaults(o.lr, betas, o.weight_decay))
        # torchrun: each rank its share of every batch, gradients averaged before every step.
        distribute(self.ctx, self.method, {"G": self.G, "F": self.F, "E": self.E, "D": self.D},
                   self._optimizers())

    def _batch(self, step: int) -> MultiDomainBatch:
        """Batch ``step`` on the device (this rank's share of it under torchrun)."""
        b = self.batches.batch(step)
        local = self.ctx.distributed.local
        return MultiDomainBatch(**{k: local(v) for k, v in vars(b).items()}).to(self.ctx.device)

    def encode(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The generator encoder's features at ``self.layers``, with gradients."""
        return self.G.encode_features(images, self.layers)

    def _optimizers(self) -> list[torch.optim.Optimizer]:
        return run_optimizers([self.opt_G, self.opt_F, self.opt_E, self.opt_D], self.method)

    def _zero_grad(self) -> None:
        for opt in self._optimizers():
            opt.zero_grad(set_to_none=True)

    # -- losses --------------------------------------------------------------------------------
    def d_loss(self, b: MultiDomainBatch, mode: str) -> tuple[torch.Tensor, dict[str, float]]:
        """``compute_d_loss``: real (BCE 1) + fake (BCE 0) + lambda_reg * R1 on the reals."""
        x_real = b.x_src.detach().requires_grad_(True)
        out = self.D(x_real, b.y_src)
        loss_real = adv_loss(out, 1)
        loss_reg = r1_reg(out, x_real)
        with torch.no_grad():
            s_trg = self.F(b.z_trg, b.y_ref) if mode == "latent" else self.E(b.x_ref, b.y_ref)
            x_fake = self.G(x_real, s_trg)
        loss_fake = adv_loss(self.D(x_fake, b.y_ref), 0)
        loss = loss_real + loss_fake + self.options.lambda_reg * loss_reg
        return loss, {"real": loss_real.item(), "fake": loss_fake.item(), "reg": loss_reg.item()}

    def make_pair(self, x_real, x_fake, x_ref, idt, flipped: bool) -> TranslationPair:
        """The method's view of a G step (see ``patch_query``); its features are the generator
        encoder's (``feature_layers``)."""
        common = dict(progress=self.step / max(1, self.total_steps), step=self.step)
        if self.options.patch_query == "output":
            return encoder_pair(self.encode, source=x_real, output=x_fake, target=x_ref, identity=idt,
                                output_flipped=flipped, **common)
        # The fork: queries from the source image (gradient), keys from the translation (detached).
        back = (lambda t: torch.flip(t, dims=[3])) if flipped else (lambda t: t)
        return encoder_pair(self.encode, source=back(x_fake).detach(), output=x_real,
                            target=None if idt is None else back(idt).detach(),
                            identity=None if idt is None else x_ref, **common)

    def g_loss(self, b: MultiDomainBatch, mode: str, lambda_ds: float, use_method: bool,
               recon: str | None = None) -> GeneratorObjective:
        """``compute_g_loss`` (+ the method's terms). ``recon`` overrides the ``reconstruction``
        option (the reference step passes the reconstruction the latent step resolved 'auto' to,
        ``GeneratorObjective.reconstruction``)."""
        o, method = self.options, self.method
        x_real, y_org, y_trg = b.x_src, b.y_src, b.y_ref
        source = x_real
        flipped = use_method and method.flips_input and bool(torch.rand(()) < 0.5)
        if flipped:  # flip equivariance: the whole G step sees the flipped source
            x_real = torch.flip(x_real, dims=[3])
        s_trg = self.F(b.z_trg, y_trg) if mode == "latent" else self.E(b.x_ref, y_trg)
        x_fake = self.G(x_real, s_trg)
        loss_adv = adv_loss(self.D(x_fake, y_trg), 1)
        loss_sty = torch.mean(torch.abs(self.E(x_fake, y_trg) - s_trg))
        with torch.no_grad():
            s_trg2 = self.F(b.z_trg2, y_trg) if mode == "latent" else self.E(b.x_ref2, y_trg)
            x_fake2 = self.G(x_real, s_trg2)
        loss_ds = torch.mean(torch.abs(x_fake - x_fake2))
        terms: dict[str, torch.Tensor] = {}
        logs: dict[str, float] = {}
        if use_method:
            idt = None
            if method.uses_identity:  # the target-domain image, flipped like the source when flipping
                idt = self.G(torch.flip(b.x_ref, dims=[3]) if flipped else b.x_ref, s_trg)
            pair = self.make_pair(source, x_fake, b.x_ref, idt, flipped)
            aux = method.auxiliary_step(pair)
            logs.update(aux.logs)
            terms = method.generator_losses(pair, aux.computed)
        recon = recon or o.reconstruction
        if recon == "auto":
            recon = "same_image" if terms else "cycle"
        s_org = self.E(x_real, y_org)
        x_rec = self.G(x_fake if recon == "cycle" else x_real, s_org)
        loss_cyc = torch.mean(torch.abs(x_rec - x_real))
        loss = (loss_adv + o.lambda_sty * loss_sty - lambda_ds * loss_ds + o.lambda_cyc * loss_cyc
                + sum(terms.values(), x_fake.new_zeros(())))
        logs.update(adv=loss_adv.item(), sty=loss_sty.item(), ds=loss_ds.item(), cyc=loss_cyc.item())
        return GeneratorObjective(loss, logs, terms, recon)

    # -- one step ------------------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        o = self.options
        b = self._batch(self.step)
        lambda_ds = diversity_weight(o.lambda_ds, self.step, o.ds_iter)

        set_requires_grad(self.D, True)
        d_lat, d_lat_logs = self.d_loss(b, "latent")
        self._zero_grad()
        d_lat.backward()
        self.opt_D.step()
        d_ref, d_ref_logs = self.d_loss(b, "reference")
        self._zero_grad()
        d_ref.backward()
        self.opt_D.step()

        set_requires_grad(self.D, False)  # D is not stepped with G: skip its gradients
        latent = self.g_loss(b, "latent", lambda_ds, use_method=True)
        self._zero_grad()
        latent.total.backward()
        step_generator_side([self.opt_G, self.opt_F, self.opt_E], self.method)
        reference = self.g_loss(b, "reference", lambda_ds, use_method=o.patch_steps == "both",
                                recon=latent.reconstruction)
        self._zero_grad()
        reference.total.backward()
        self.opt_G.step()

        moving_average(self.G, self.G_ema, o.ema_beta)
        moving_average(self.F, self.F_ema, o.ema_beta)
        moving_average(self.E, self.E_ema, o.ema_beta)
        self.step += 1
        logs = {"D_latent": d_lat.item(), "D_ref": d_ref.item(), "R1": d_lat_logs["reg"],
                "G_latent": latent.total.item(), "G_ref": reference.total.item(), "adv": latent.logs["adv"],
                "sty": latent.logs["sty"], "ds": latent.logs["ds"], "cyc": latent.logs["cyc"],
                "lambda_ds": lambda_ds}
        logs.update({k: v.item() for k, v in latent.terms.items()})
        logs.update({f"{k}_ref": v.item() for k, v in reference.terms.items()})
        # The method's own auxiliary-step logs (e.g. NEGCUT's N, N_div), of both G steps.
        logs.update({k: v for k, v in latent.logs.items() if k not in _TASK_LOGS})
        logs.update({f"{k}_ref": v for k, v in reference.logs.items() if k not in _TASK_LOGS})
        return logs

    # -- checkpoints ---------------------------------------------------------------------------
    def _nets(self) -> dict[str, torch.nn.Module]:
        return {"G": self.G, "F": self.F, "E": self.E, "D": self.D,
                "G_ema": self.G_ema, "F_ema": self.F_ema, "E_ema": self.E_ema}

    def state_dict(self) -> dict:
        return {"step": self.step,
                "nets": {k: v.state_dict() for k, v in self._nets().items()},
                "method": self.method.state_dict(),
                "optimizers": [opt.state_dict() for opt in self._optimizers()]}

    def load_state_dict(self, state: dict) -> None:
        self.step = state["step"]
        for k, net in self._nets().items():
            net.load_state_dict(state["nets"][k])
        self.method.load_state_dict(state["method"])
        for opt, s in zip(self._optimizers(), state["optimizers"], strict=True):
            opt.load_state_dict(s)

    # -- evaluation ----------------------------------------------------------------------------
    @staticmethod
    def eval_settings(o: MultiModalOptions) -> EvalSettings:
        return EvalSettings(num_outs_per_domain=o.num_outs_per_domain, lpips=o.lpips,
                            lpips_backbone=o.lpips_backbone, structure_score=o.structure_score,
                            grid_styles=o.grid_styles, latent_dim=o.latent_dim)

    def translator(self) -> StyleTranslator:
        if self.options.eval_nets == "ema":
            return StyleTranslator(self.G_ema, self.F_ema, self.E_ema, self.options.latent_dim)
        return StyleTranslator(self.G, self.F, self.E, self.options.latent_dim)

    def evaluate(self) -> Evaluation:
        result = evaluate_multimodal(self.translator(), self.dataset, self.eval_settings(self.options), self.ctx)
        result.protocol["eval_networks"] = ("EMA of G, F, E (beta %g)" % self.options.ema_beta
                                            if self.options.eval_nets == "ema" else "raw G, F, E (not the EMA)")
        return result

    @classmethod
    def validation_refusal(cls, options) -> str | None:
        return None

    def evaluate_point(self, split: str) -> dict[str, float]:
        """StarGAN v2's evaluation of the evaluation networks with the validation images held out of
        each domain's training images as sources and references ('val'), or the val split, this
        task's test set ('test'); FID against each target domain's training images in both, as the
        official protocol. ``FID``, the score the selection rules compare, is the mean of the
        latent- and reference-guided FIDs."""
        sources = self.validation_sets if split == "val" else None
        metrics = dict(evaluate_multimodal(self.translator(), self.dataset, self.eval_settings(self.options),
                                           self.ctx, source_sets=sources, per_pair_file=None).metrics)
        metrics["FID"] = 0.5 * (metrics["latent_FID"] + metrics["reference_FID"])
        return metrics

    identity_options = ("num_outs_per_domain", "lpips", "lpips_backbone", "structure_score", "grid_styles",
                        "latent_dim")
    """What :meth:`eval_settings` reads."""

    @classmethod
    def evaluate_identity(cls, options, dataset, ctx: RunContext) -> Evaluation:
        return evaluate_multimodal(None, dataset, cls.eval_settings(options), ctx)
