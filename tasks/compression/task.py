"""The compression task: Fast GAN Compression (mit-han-lab/gan-compression, ``train_supernet.py``
with ``supernets/resnet_supernet.py``), with any method's patch-wise loss added as Hneg-SRC's
``Compression/`` code adds its own.

Per step (``ResnetSupernet.optimize_parameters``): one sub-network configuration is sampled; the
frozen teacher and the student supernet (under that configuration) translate the same real_A; D is
back-propagated on 0.5 * (L_GAN(D(fake), 0) + L_GAN(D(real), 1)) (conditional on real_A for paired
data); then the generator objective

    lambda_gan * L_GAN(D(S(x)), 1) + lambda_recon * |S(x) - T(x) or y|_1
        + lambda_distill * sum_hooks MSE(A_h(S_h(x)), T_h(x)) + the method's losses

with the method's keys on the teacher's hook activations T_h(x) (detached) and its queries on the
student's S_h(x); D (not yet stepped) scores the fake; D, then G (student, mappings) and the
method's heads step. After training (``evaluate``): the evolution search on held-out training
images, the export of the chosen sub-network and its test scores beside the teacher's.

Under torchrun (``trains_distributed``) each rank trains on its share of every batch, with the
batch, the step's sub-network, the flip and the patch locations drawn alike on every rank (the
gradients one process computes on the whole batch, see benchmark/core/distributed.py); rank 0 trains
the teacher when the cache lacks it while the others wait for it; the search and the test scores
translate and score sharded images and every rank takes the same decisions; rank 0 writes the files.
"""
from __future__ import annotations

import dataclasses
import json

import torch
import torch.nn.functional as F

from benchmark.core.atomic import atomic_write
from benchmark.core.context import Evaluation, RunContext
from benchmark.core.errors import ConfigError
from benchmark.core.hashing import content_hash, state_dict_hash
from benchmark.core.images import SubsetImageSet
from benchmark.core.metrics.macs import count_macs, count_parameters
from benchmark.core.registry import register_task
from methods.base import OUTPUT_GRADIENT, OptimizerDefaults, TranslationPair

from ..base import (Task, checkpoint_size, distribute, linear_decay_schedulers, restore_training_state, set_requires_grad,
                    training_state)
from ..data import UnpairedBatches, seeded_generator, to_model_range
from ..evaluation import count_images, sharded_outputs_and_features
from ..feature_sources import GivenFeatures
from ..networks import GANLoss, NLayerDiscriminator, ResnetGenerator, init_weights
from ..optimizer_steps import run_optimizers, step_generator_side, step_schedulers
from ..validation import TranslationValidation, hold_out_sides
from .evaluation import CompressionScorer, held_out_indices
from .data import PairedBatches
from .networks import (CHANNEL_CHOICES, DistillMappings, SuperMobileResnetGenerator, distillation_loss,
                       encode_config, export_subnet, largest_config, sample_config, subnet_macs,
                       teacher_hook_channels, teacher_hook_layers)
from .options import CompressionOptions, resolved
from .search import EvolutionSearch
from .teacher import build_teacher_generator, obtain_teacher


def _padded(features: list[torch.Tensor], width: int) -> list[torch.Tensor]:
    """Channel-pad each (B, C, H, W) map with zeros to ``width``: a head on the padded map equals a
    head whose input weights are sliced to C (Hneg-SRC's SuperMLP / SuperLinear)."""
    return [f if f.shape[1] == width else F.pad(f, (0, 0, 0, 0, 0, width - f.shape[1])) for f in features]


def is_paired(dataset) -> bool:
    """Whether ``dataset`` pairs each A image with its B image (pix2pix's aligned data)."""
    return getattr(dataset, "kind", "unpaired") == "paired"


LARGEST_METRICS = ("FID", "mIoU", "maskIoU")
"""The largest sub-network's scores kept in the metrics (``largest_<name>``)."""


@register_task("compression")
class CompressionTask(Task):
    """Teacher -> once-for-all student distillation with evolution search (Fast GAN Compression)."""

    Options = CompressionOptions
    dataset_kinds = ("unpaired", "paired")
    trains_distributed = True
    capabilities = frozenset({OUTPUT_GRADIENT})

    @property
    def paired(self) -> bool:
        return is_paired(self.dataset)

    # -- set-up ------------------------------------------------------------------------------------
    def _trained_networks(self, teacher: ResnetGenerator) -> tuple[SuperMobileResnetGenerator, DistillMappings,
                                                                     NLayerDiscriminator]:
        """The student supernet, its mappings to the teacher's hook widths, and D, initialised."""
        o = self.options
        student = init_weights(SuperMobileResnetGenerator(ngf=o.student_ngf, n_blocks=teacher.n_blocks, norm=o.norm),
                               o.init_type, o.init_gain)
        mappings = DistillMappings(student.hook_channels, teacher_hook_channels(teacher), o.init_type, o.init_gain)
        in_d = 6 if self.paired else 3
        netD = init_weights(NLayerDiscriminator(in_d, resolved(o, self.paired)["ndf"], o.n_layers_D, o.norm,
                                                antialias=False), o.init_type, o.init_gain)
        return student, mappings, netD

    def checkpoint_size(self) -> int:
        """The student, its mappings and D (the teacher is cached on its own, not in the run's
        checkpoint), for a teacher of the options' ngf and n_blocks."""
        return checkpoint_size(self._trained_networks(build_teacher_generator(self.options.teacher)))

    def setup(self) -> None:
        o, device = self.options, self.ctx.device
        self.settings = resolved(o, self.paired)
        self.choices = (o.channel_choices if o.channel_choices is not None
                        else CHANNEL_CHOICES[self.settings["channel_set"]])
        # torchrun: rank 0 trains a teacher missing from the cache, the other ranks wait and load it.
        self.teacher = obtain_teacher(o.teacher, self.dataset, self.paired, device, self.ctx.seed,
                                      self.ctx.cache_dir, self.ctx.log, may_train=self.ctx.distributed.is_main)
        set_requires_grad(self.teacher, False)
        self.teacher.eval()
        self.teacher_hooks = teacher_hook_layers(self.teacher)
        teacher_widths = teacher_hook_channels(self.teacher)
        self.student, self.mappings, self.netD = (net.to(device) for net in self._trained_networks(self.teacher))
        if max(self.student.hook_channels) > max(teacher_widths) and o.method_features == "student":
            raise ConfigError(f"student_ngf {o.student_ngf} is wider than the teacher (ngf {self.teacher.model[1].out_channels}): "
                              "the method's heads compare both at the teacher's width; use method_features: mapped")
        self.feature_width = max(teacher_widths)
        self.gan_loss = GANLoss(self.settings["gan_mode"]).to(device)

        train_a, train_b = self.dataset.split("train", "A"), self.dataset.split("train", "B")
        held_out = held_out_indices(len(train_a), o.search.held_out_images)
        keep_a = [i for i in range(len(train_a)) if i not in set(held_out)]
        if self.paired:
            train_b = SubsetImageSet(train_b, keep_a)
        else:
            keep_b = [i for i in range(len(train_b)) if i not in set(held_out_indices(len(train_b), len(held_out)))]
            train_b = SubsetImageSet(train_b, keep_b)
        train_a = SubsetImageSet(train_a, keep_a)
        # The validation split (when the suite asks for one) comes out of what the search left.
        train_a, train_b, val = hold_out_sides(train_a, train_b, self.ctx.validation, self.paired)
        self.validation = TranslationValidation(val, self.dataset, self.ctx) if val is not None else None
        crop = self.dataset.split("test", "A").image(0).shape[-1]
        batches = PairedBatches if self.paired else UnpairedBatches
        self.batches = batches(train_a, train_b, o.batch_size, crop, o.flip, self.ctx.seed)

        betas = (o.beta1, 0.999)
        self.opt_G = torch.optim.Adam([*self.student.parameters(), *self.mappings.parameters()], lr=o.lr, betas=betas)
        self.opt_D = torch.optim.Adam(self.netD.parameters(), lr=o.lr, betas=betas)
        real_a, real_b = self._batch(0)
        config = largest_config(self.choices)
        self.method.to(device)
        self.method.initialize(self._pair(real_a, real_b, config, self._forward(real_a, config)))
        self.method.build_optimizers(OptimizerDefaults(o.lr, betas))
        self.schedulers = linear_decay_schedulers(self._optimizers(), o.n_steps, o.n_steps_decay)
        # torchrun: each rank its share of every batch, gradients averaged before every step (the
        # frozen teacher, in eval mode, computes each image on its own whatever its norm).
        distribute(self.ctx, self.method, self._modules(), self._optimizers())

    def _optimizers(self) -> list[torch.optim.Optimizer]:
        return run_optimizers([self.opt_G, self.opt_D], self.method)

    def _batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``step`` (this rank's share of it under torchrun) on the device, in [-1, 1]."""
        a, b = self.batches.batch(step)
        local = self.ctx.distributed.local
        return to_model_range(local(a), self.ctx.device), to_model_range(local(b), self.ctx.device)

    def sample_config(self, step: int) -> dict:
        """The sub-network of ``step``: a pure function of the seed and the step (resumable)."""
        return sample_config(self.choices, seeded_generator(self.ctx.seed, 11, step))

    # -- the two networks on one input ----------------------------------------------------------------
    def _forward(self, images: torch.Tensor, config: dict):
        """(teacher output, teacher hook activations, student output, student hook activations)."""
        with torch.no_grad():
            t_out, t_feats = self.teacher(images, self.teacher_hooks)
        s_out, s_feats = self.student(images, config, self.student.hook_layers)
        return t_out, [f.detach() for f in t_feats], s_out, s_feats

    def _method_features(self, s_feats, mapped):
        if self.options.method_features == "mapped":
            return mapped
        return _padded(s_feats, self.feature_width)

    def _pair(self, real_a, real_b, config, forward, mapped=None) -> TranslationPair:
        """The method's view: the teacher's hook activations (detached) as the source's and the
        target's features, the student's (mapped or padded) as the output's and the identity's."""
        t_out, t_feats, s_out, s_feats = forward
        if mapped is None:
            mapped = self.mappings(s_feats)
        features = {"source": t_feats, "output": self._method_features(s_feats, mapped)}
        identity = None
        if self.method.uses_identity:
            _, t_idt, identity, s_idt = self._forward(real_b, config)
            features.update(target=t_idt, identity=self._method_features(s_idt, self.mappings(s_idt)))
        return TranslationPair(source=real_a, output=s_out, target=real_b, identity=identity,
                               features=GivenFeatures(features),
                               progress=self.step / max(1, self.total_steps), step=self.step)

    # -- training ------------------------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        s = self.settings
        real_a, real_b = self._batch(self.step)
        if self.method.flips_input and bool(torch.rand(()) < 0.5):
            real_a, real_b = real_a.flip(3), real_b.flip(3)   # both networks see the same flip
        config = self.sample_config(self.step)
        forward = self._forward(real_a, config)
        t_out, t_feats, s_out, s_feats = forward

        for opt in self._optimizers():
            opt.zero_grad(set_to_none=True)
        # Discriminator (stepped after G's backward, as the official optimize_parameters does).
        set_requires_grad(self.netD, True)
        fake_d = torch.cat([real_a, s_out], 1) if self.paired else s_out
        real_d = torch.cat([real_a, real_b], 1) if self.paired else real_b
        loss_d_fake = self.gan_loss(self.netD(fake_d.detach()), False)
        loss_d_real = self.gan_loss(self.netD(real_d), True)
        loss_d = 0.5 * (loss_d_fake + loss_d_real)
        loss_d.backward()

        mapped = self.mappings(s_feats)
        pair = self._pair(real_a, real_b, config, forward, mapped)
        aux = self.method.auxiliary_step(pair)
        set_requires_grad(self.netD, False)
        loss_gan = self.options.lambda_gan * self.gan_loss(self.netD(fake_d), True, for_discriminator=False)
        recon_target = real_b if self.paired else t_out
        loss_recon = s["lambda_recon"] * F.l1_loss(s_out, recon_target)
        loss_distill = s["lambda_distill"] * distillation_loss(mapped, t_feats)[0]
        terms = self.method.generator_losses(pair, aux.computed)
        loss_g = loss_gan + loss_recon + loss_distill + sum(terms.values(), s_out.new_zeros(()))
        loss_g.backward()
        self.opt_D.step()
        step_generator_side([self.opt_G], self.method)
        step_schedulers(self.schedulers)
        self.step += 1
        logs = dict(aux.logs)
        logs.update(D=loss_d.item(), G_GAN=loss_gan.item(), recon=loss_recon.item(),
                    distill=loss_distill.item(), **{k: v.item() for k, v in terms.items()})
        return logs

    def _modules(self) -> dict[str, torch.nn.Module]:
        return {"student": self.student, "mappings": self.mappings, "netD": self.netD, "method": self.method}

    def state_dict(self) -> dict:
        return training_state(self.step, self._modules(), self._optimizers(), self.schedulers)

    def load_state_dict(self, state: dict) -> None:
        self.step = restore_training_state(state, self._modules(), self._optimizers(), self.schedulers)

    # -- search, export, evaluation ------------------------------------------------------------------
    def _translate_with(self, config):
        def translate(images):
            self.student.eval()
            try:
                with torch.no_grad():
                    return self.student(images, config)
            finally:
                self.student.train()
        return translate

    def evaluate(self) -> Evaluation:
        o, ctx = self.options, self.ctx
        scorer = CompressionScorer(self.dataset, ctx, o.protocol, self.paired)
        size = self.dataset.split("test", "A").image(0).shape[-1]
        example = torch.zeros(1, 3, size, size, device=ctx.device)

        def macs_of(config: dict) -> int:
            return subnet_macs(self.student, config, size)

        train_a = self.dataset.split("train", "A")
        held_out = SubsetImageSet(train_a, held_out_indices(len(train_a), o.search.held_out_images))
        criterion = scorer.search_criterion(o.search.criterion, held_out)
        search = EvolutionSearch(
            o.search.evolution_options(), self.choices, macs_of=macs_of,
            score=lambda config: scorer.search_score(self._translate_with(config), held_out, criterion),
            higher_is_better=criterion != "fid", state_path=ctx.run_dir / "search" / "state.json",
            seed=ctx.seed, log=ctx.log, identity=f"supernet after step {self.step}; {criterion}",
            writes_state=ctx.distributed.is_main, shared=ctx.distributed.broadcast)
        best_config, best_score, _ = search.run()
        subnet = export_subnet(self.student, best_config).eval()
        if ctx.distributed.is_main:
            (ctx.run_dir / "search").mkdir(parents=True, exist_ok=True)
            with atomic_write(ctx.run_dir / "search" / "subnet.pt", "wb") as f:
                torch.save(subnet.state_dict(), f)
            with atomic_write(ctx.run_dir / "search" / "subnet.json", "w", encoding="utf-8") as f:
                json.dump({"config": encode_config(best_config), f"held_out_{criterion}": best_score}, f, indent=1)

        student = scorer.score_test(lambda x: subnet(x))
        teacher = self._teacher_scores(scorer)
        # The supernet's largest sub-network, as the official training-time evaluation scores it: a
        # comparison of the trained supernets that does not depend on the search's choice.
        translate_largest = self._translate_with(largest_config(self.choices))
        largest = scorer.score_test(translate_largest)
        metrics = dict(student.metrics)
        metrics.update({f"largest_{k}": v for k, v in largest.metrics.items() if k in LARGEST_METRICS})
        metrics.update(self._gaps_to_teacher({"gap_to_teacher_L1": lambda x: subnet(x),
                                              "largest_gap_to_teacher_L1": translate_largest}))
        metrics.update(params_M=count_parameters(subnet) / 1e6, MACs_G=count_macs(subnet, example) / 1e9,
                       **{f"teacher_{k}": v for k, v in teacher.metrics.items()},
                       teacher_params_M=count_parameters(self.teacher) / 1e6,
                       teacher_MACs_G=count_macs(self.teacher, example) / 1e9,
                       **{f"search_{criterion}": best_score})
        protocol = {**student.protocol, "eval_protocol": o.protocol, "macs_counter": "torchprofile.profile_macs",
                    "macs_resolution": f"{size}x{size}", "subnet": encode_config(best_config),
                    "search": (f"evolution, population {o.search.population_size}, "
                               f"{o.search.iterations} iterations, budget {o.search.budget:.3g} MACs, "
                               f"{criterion} on {len(held_out)} held-out training images")}
        samples = {"input": student.samples["input"], "teacher": teacher.samples["output"],
                   "output": student.samples["output"]}
        return Evaluation(metrics=metrics, protocol=protocol, samples=samples)

    def _gaps_to_teacher(self, students: dict) -> dict[str, float]:
        """How far each student's test outputs are from the teacher's: the mean absolute difference
        of their 8-bit outputs, in [0, 1] units. Distillation (and a method that pulls the student's
        features towards the teacher's) lowers it; it tells whether a method that moves FID moved
        the student towards the teacher or away from it."""
        ev, ctx = self.ctx.evaluation, self.ctx
        test_a = self.dataset.split("test", "A")
        count = count_images(test_a, ev.num_test_images)

        def outputs(translate):  # sharded under torchrun, every rank gets all
            return sharded_outputs_and_features(translate, test_a, count, ctx, features=False)[0].float()

        teacher = outputs(lambda x: self.teacher(x))
        return {name: (outputs(translate) - teacher).abs().mean().item() / 255.0
                for name, translate in students.items()}

    def _teacher_scores(self, scorer: CompressionScorer) -> Evaluation:
        """The teacher's test scores, computed once per teacher, dataset and protocol and kept in
        ``<cache_dir>/teacher_scores`` (every method and seed of a suite shares the teacher); under
        torchrun the ranks follow rank 0's finding and rank 0 writes the file."""
        ctx, d = self.ctx, self.ctx.distributed
        key = {"teacher": state_dict_hash(self.teacher),
               "dataset": self.dataset.identity, "protocol": self.options.protocol, "paired": self.paired,
               "evaluation": dataclasses.asdict(ctx.evaluation), "device": ctx.device.type}
        path = ctx.cache_dir / "teacher_scores" / f"{content_hash(key)[:24]}.pt"
        if d.broadcast(path.is_file()):
            cached = torch.load(path, map_location="cpu", weights_only=True)
            return Evaluation(cached["metrics"], cached["protocol"], cached["samples"])
        scores = scorer.score_test(lambda x: self.teacher(x))
        if not d.is_main:
            return scores
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "wb") as f:
            torch.save({"metrics": scores.metrics, "protocol": scores.protocol, "samples": scores.samples}, f)
        return scores

    @classmethod
    def validation_refusal(cls, options) -> str | None:
        return None

    def evaluate_point(self, split: str) -> dict[str, float]:
        """The supernet's largest sub-network (as the official training-time evaluation scores it;
        the search runs once, after training): 'val' its translations of the held-out A images
        against the held-out B images, 'test' the task's test protocol."""
        translate = self._translate_with(largest_config(self.choices))
        if split == "val":
            return self.validation.score(translate)
        if getattr(self, "_point_scorer", None) is None:
            self._point_scorer = CompressionScorer(self.dataset, self.ctx, self.options.protocol, self.paired)
        return self._point_scorer.score_test(translate).metrics

    identity_options = ("protocol",)

    @classmethod
    def input_files(cls, options: CompressionOptions) -> dict[str, str]:
        return {"teacher.checkpoint": options.teacher.checkpoint} if options.teacher.checkpoint else {}

    @classmethod
    def evaluate_identity(cls, options, dataset, ctx: RunContext) -> Evaluation:
        return CompressionScorer(dataset, ctx, options.protocol, is_paired(dataset)).score_test(lambda x: x)
