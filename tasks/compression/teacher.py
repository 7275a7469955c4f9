"""The teacher of the compression task: a ResNet-9 generator (GAN Compression's ``resnet_9blocks``),
loaded from a checkpoint or trained here once and cached.

Training follows mit-han-lab/gan-compression's ``train.py`` with its teacher scripts
(``scripts/cycle_gan/horse2zebra/train_full.sh``, ``scripts/pix2pix/{cityscapes,map2sat}/train_full.sh``):

* unpaired data -> CycleGAN (``models/cycle_gan_model.py``; the shared ``tasks/cyclegan.py``): two
  generators G_A: A->B (the teacher) and G_B: B->A, two PatchGAN discriminators, per step first both G with
  ``GAN(D_A(G_A(A))) + GAN(D_B(G_B(B))) + lambda_A |G_B(G_A(A)) - A| + lambda_B |G_A(G_B(B)) - B|
  + lambda_identity (lambda_B |G_A(B) - B| + lambda_A |G_B(A) - A|)``, then both D with
  ``0.5 (GAN(D(real), 1) + GAN(D(pool(fake)), 0))`` (image pools of 50);
* paired data -> pix2pix (``models/pix2pix_model.py``): one generator, a conditional PatchGAN on
  ``cat(A, B)``; per step first D with ``0.5 (GAN(D(A, G(A)), 0) + GAN(D(A, B), 1))``, then G with
  ``lambda_gan GAN(D(A, G(A)), 1) + lambda_recon |G(A) - B|``.

:func:`obtain_teacher` trains once per (dataset identity, teacher settings, seed): the result is
cached under ``<cache_dir>/teachers/<content hash>/teacher.pt``; training writes atomic, resumable
checkpoints (``training.pt``: networks, optimisers, schedulers, image pools, RNG states) every
``checkpoint_every`` steps, so an interrupted training continues bit-exactly; a file lock makes a
second process that needs the same teacher wait for the first and then load its result.

Checkpoints from outside load with ``torch.load(weights_only=True)``: this benchmark's teacher files
and GAN Compression's generator state dicts (``latest_net_G.pth``; ``module.`` prefixes of
DataParallel are stripped; its ResNet blocks hold a ``Dropout`` layer, so their second conv is
``conv_block.6`` there and ``conv_block.5`` here).
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.core.atomic import atomic_write
from benchmark.core.locks import waiting_lock
from benchmark.core.checkpoint import (atomic_save, load_checkpoint, load_failure, rng_state, save_checkpoint,
                                       seed_everything, set_rng_state)
from benchmark.core.errors import CheckpointError, ConfigError
from benchmark.core.hashing import content_hash
from benchmark.core.settings import path_setting
from datasets.base import PairedDataset, UnpairedDataset

from methods.base import CycleConsistency

from ..base import linear_decay_schedulers, set_requires_grad
from ..cyclegan import CycleGAN, CycleOutputs
from ..data import UnpairedBatches, to_model_range
from ..image_pool import ImagePool
from ..networks import GANLoss, NLayerDiscriminator, ResnetGenerator, init_weights
from ..optimizer_steps import step_schedulers
from .data import PairedBatches

__all__ = [
    "TEACHER_FORMAT", "TEACHER_VERSION", "TEACHER_PRESETS", "TeacherOptions", "teacher_preset",
    "build_teacher_generator", "CycleGANTeacher", "Pix2PixTeacher", "make_trainer", "teacher_key", "teacher_folder",
    "train_teacher", "obtain_teacher", "load_teacher_checkpoint", "official_to_benchmark_keys",
]

TEACHER_FORMAT = "i2i-bench-teacher"
TEACHER_VERSION = 1
"""Bump when the training code would produce other weights: cached teachers are then retrained."""

_GAN_MODES = ("lsgan", "vanilla", "hinge")
_RECON_LOSSES = {"l1": F.l1_loss, "l2": F.mse_loss, "smooth_l1": F.smooth_l1_loss}
_CYCLEGAN_ONLY = ("lambda_A", "lambda_B", "lambda_identity", "pool_size")
_PIX2PIX_ONLY = ("lambda_recon", "recon_loss", "lambda_gan")
_BOOKKEEPING = ("checkpoint", "checkpoint_every", "log_every")


@dataclass
class TeacherOptions:
    """How the teacher is obtained. Defaults are GAN Compression's (``options/train_options.py``,
    ``options/base_options.py``, the CycleGAN / pix2pix models' own defaults); ``None`` means "the
    trainer's official default": ``ndf`` 64 for CycleGAN (its ``set_defaults``), 128 for pix2pix (the
    ``--ndf`` default); ``gan_mode`` lsgan for CycleGAN, hinge for pix2pix (the ``--gan_mode`` default,
    which the pix2pix teacher scripts keep)."""

    checkpoint: str | None = path_setting(None)
    """A generator checkpoint to load instead of training (this benchmark's teacher file or GAN
    Compression's ``latest_net_G.pth``)."""
    ngf: int = 64
    n_blocks: int = 9
    norm: Literal["instance", "batch", "none"] = "instance"
    ndf: int | None = None
    n_layers_D: int = 3
    gan_mode: Literal["lsgan", "vanilla", "hinge"] | None = None
    init_type: Literal["normal", "xavier", "kaiming", "orthogonal"] = "normal"
    init_gain: float = 0.02
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    batch_size: int = 1
    n_steps: int = 1000
    """Steps at the initial learning rate (``--nepochs``, counted in steps)."""
    n_steps_decay: int = 1000
    """Steps of linear decay to zero (``--nepochs_decay``, counted in steps)."""
    flip: bool = True
    # CycleGAN (unpaired data)
    lambda_A: float = 10.0
    """CycleGAN teacher: weight of the cycle term |G_B(G_A(A)) - A| (and of the A side of the identity term)."""
    lambda_B: float = 10.0
    """CycleGAN teacher: weight of the cycle term |G_A(G_B(B)) - B| (and of the B side of the identity term)."""
    lambda_identity: float = 0.5
    """CycleGAN teacher: weight of the identity terms, relative to lambda_A / lambda_B (0 = none)."""
    pool_size: int = 50
    # pix2pix (paired data)
    lambda_recon: float = 100.0
    """pix2pix teacher (paired data): weight of the reconstruction loss |G(A) - B|."""
    recon_loss: Literal["l1", "l2", "smooth_l1"] = "l1"
    """pix2pix teacher: the reconstruction loss."""
    lambda_gan: float = 1.0
    # bookkeeping (no effect on the weights)
    checkpoint_every: int = 500
    """Steps between resumable checkpoints of a teacher training."""
    log_every: int = 50
    """Steps between the teacher training's progress lines (loss values)."""

    def validate(self) -> str | None:
        if self.checkpoint is not None and not (isinstance(self.checkpoint, str) and self.checkpoint):
            return f"checkpoint must be a file path or null, got {self.checkpoint!r}"
        for name in ("ngf", "n_layers_D", "batch_size", "checkpoint_every", "log_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                return f"{name} must be a positive integer, got {value!r}"
        if not isinstance(self.n_blocks, int) or self.n_blocks < 0:
            return f"n_blocks must be an integer >= 0, got {self.n_blocks!r}"
        if self.ndf is not None and (not isinstance(self.ndf, int) or self.ndf < 1):
            return f"ndf must be a positive integer or null (the trainer's default), got {self.ndf!r}"
        if self.norm not in ("instance", "batch", "none"):
            return f"norm must be 'instance', 'batch' or 'none', got {self.norm!r}"
        if self.gan_mode is not None and self.gan_mode not in _GAN_MODES:
            return f"gan_mode must be one of {', '.join(_GAN_MODES)} or null (the trainer's default), got {self.gan_mode!r}"
        if self.init_type not in ("normal", "xavier", "kaiming", "orthogonal"):
            return f"init_type must be normal, xavier, kaiming or orthogonal, got {self.init_type!r}"
        if self.recon_loss not in _RECON_LOSSES:
            return f"recon_loss must be one of {', '.join(_RECON_LOSSES)}, got {self.recon_loss!r}"
        if not (isinstance(self.n_steps, int) and isinstance(self.n_steps_decay, int)
                and self.n_steps >= 0 and self.n_steps_decay >= 0 and self.n_steps + self.n_steps_decay >= 1):
            return (f"n_steps and n_steps_decay must be integers >= 0 with a sum >= 1, got "
                    f"{self.n_steps!r} and {self.n_steps_decay!r}")
        if not self.lr > 0:
            return f"lr must be positive, got {self.lr!r}"
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            return f"beta1 and beta2 must be in [0, 1), got {self.beta1!r} and {self.beta2!r}"
        for name in ("lambda_A", "lambda_B", "lambda_identity", "lambda_recon", "lambda_gan", "init_gain"):
            if not getattr(self, name) >= 0:
                return f"{name} must be >= 0, got {getattr(self, name)!r}"
        if not isinstance(self.pool_size, int) or self.pool_size < 0:
            return f"pool_size must be an integer >= 0 (0 = no image pool), got {self.pool_size!r}"
        return None

    def resolved(self, paired: bool) -> TeacherOptions:
        """A copy with the trainer's defaults filled in for ``None`` (CycleGAN, or pix2pix if ``paired``)."""
        return dataclasses.replace(
            self, ndf=self.ndf if self.ndf is not None else (128 if paired else 64),
            gan_mode=self.gan_mode if self.gan_mode is not None else ("hinge" if paired else "lsgan"))

    def training_settings(self, paired: bool) -> dict:
        """The resolved settings that determine the trained weights (those of the other trainer and
        the bookkeeping ones left out): part of the teacher's cache key."""
        unused = _BOOKKEEPING + (_CYCLEGAN_ONLY if paired else _PIX2PIX_ONLY)
        return {k: v for k, v in dataclasses.asdict(self.resolved(paired)).items() if k not in unused}


# The official teachers' settings, verified in mit-han-lab/gan-compression: the train_full.sh scripts
# named below plus the defaults they rely on. Steps = epochs x images per epoch (batch 1; an unaligned
# epoch has max(|trainA|, |trainB|) images, data/unaligned_dataset.py __len__).
TEACHER_PRESETS: dict[str, dict] = {
    "horse2zebra": {
        "paired": False,
        "source": "scripts/cycle_gan/horse2zebra/train_full.sh (--model cycle_gan --netG resnet_9blocks)",
        "epochs": (100, 100), "images_per_epoch": 1334,  # 1067 horses, 1334 zebras
        "direction": "AtoB",
        "options": {"ngf": 64, "n_blocks": 9, "norm": "instance", "ndf": 64, "n_layers_D": 3,
                    "gan_mode": "lsgan", "init_type": "normal", "init_gain": 0.02, "lr": 2e-4,
                    "beta1": 0.5, "batch_size": 1, "n_steps": 100 * 1334, "n_steps_decay": 100 * 1334,
                    "lambda_A": 10.0, "lambda_B": 10.0, "lambda_identity": 0.5, "pool_size": 50},
    },
    "cityscapes": {
        "paired": True,
        "source": "scripts/pix2pix/cityscapes/train_full.sh (--model pix2pix --netG resnet_9blocks "
                  "--batch_size 1 --nepochs 100 --nepochs_decay 150 --direction BtoA)",
        "epochs": (100, 150), "images_per_epoch": 2975,
        "direction": "BtoA",
        "options": {"ngf": 64, "n_blocks": 9, "norm": "instance", "ndf": 128, "n_layers_D": 3,
                    "gan_mode": "hinge", "init_type": "normal", "init_gain": 0.02, "lr": 2e-4,
                    "beta1": 0.5, "batch_size": 1, "n_steps": 100 * 2975, "n_steps_decay": 150 * 2975,
                    "lambda_recon": 100.0, "recon_loss": "l1", "lambda_gan": 1.0},
    },
    "map2sat": {
        "paired": True,
        "source": "scripts/pix2pix/map2sat/train_full.sh (--model pix2pix --netG resnet_9blocks "
                  "--batch_size 1 --lambda_recon 10 --nepochs 100 --nepochs_decay 200 --direction BtoA)",
        "epochs": (100, 200), "images_per_epoch": 1096,
        "direction": "BtoA",
        "options": {"ngf": 64, "n_blocks": 9, "norm": "instance", "ndf": 128, "n_layers_D": 3,
                    "gan_mode": "hinge", "init_type": "normal", "init_gain": 0.02, "lr": 2e-4,
                    "beta1": 0.5, "batch_size": 1, "n_steps": 100 * 1096, "n_steps_decay": 200 * 1096,
                    "lambda_recon": 10.0, "recon_loss": "l1", "lambda_gan": 1.0},
    },
}
"""Official teacher settings per dataset: ``paired`` (pix2pix) or not (CycleGAN), the script, the
epochs and epoch length they count in, the dataset ``direction``, and the :class:`TeacherOptions`."""


def teacher_preset(name: str, **overrides) -> TeacherOptions:
    """The :class:`TeacherOptions` of an official teacher (a key of :data:`TEACHER_PRESETS`), with
    ``overrides`` applied."""
    if name not in TEACHER_PRESETS:
        raise ConfigError(f"unknown teacher preset {name!r}; known: {', '.join(TEACHER_PRESETS)}")
    return TeacherOptions(**{**TEACHER_PRESETS[name]["options"], **overrides})


def build_teacher_generator(options: TeacherOptions) -> ResnetGenerator:
    """The teacher network: CycleGAN's ResNet generator (stride-2 convs down, transposed convs up,
    no antialiasing), uninitialised beyond PyTorch's defaults."""
    return ResnetGenerator(3, 3, options.ngf, options.n_blocks, options.norm, antialias=False, antialias_up=False)


# --------------------------------------------------------------------------------------------------
# Trainers
# --------------------------------------------------------------------------------------------------

class _TeacherTrainer:
    """One teacher training: networks, optimisers, linear-decay schedulers, data stream, ``step``."""

    name: ClassVar[str]
    net_names: ClassVar[tuple[str, ...]]

    def __init__(self, options: TeacherOptions, dataset: UnpairedDataset, device: torch.device, seed: int):
        """``options`` must be resolved (:meth:`TeacherOptions.resolved`); the networks are drawn from
        the global torch RNG, which the caller seeds."""
        self.options, self.device, self.seed = options, torch.device(device), int(seed)
        self.step = 0
        self.gan_loss = GANLoss(options.gan_mode).to(self.device)
        self.nets: dict[str, nn.Module] = {}
        self.build()
        for net in self.nets.values():
            net.to(self.device)
        train_a, train_b = dataset.split("train", "A"), dataset.split("train", "B")
        crop = dataset.split("test", "A").image(0).shape[-1]
        self.batches = self.make_batches(train_a, train_b, crop)
        self.schedulers = linear_decay_schedulers(self.optimizers, options.n_steps, options.n_steps_decay)

    @property
    def total_steps(self) -> int:
        return self.options.n_steps + self.options.n_steps_decay

    def generator_net(self) -> nn.Module:
        return init_weights(build_teacher_generator(self.options), self.options.init_type, self.options.init_gain)

    def discriminator_net(self, input_nc: int) -> nn.Module:
        o = self.options
        return init_weights(NLayerDiscriminator(input_nc, o.ndf, o.n_layers_D, o.norm, antialias=False),
                            o.init_type, o.init_gain)

    def adam(self, *nets: nn.Module) -> torch.optim.Adam:
        o = self.options
        return torch.optim.Adam(itertools.chain(*(n.parameters() for n in nets)), lr=o.lr, betas=(o.beta1, o.beta2))

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = self.batches.batch(self.step)
        return to_model_range(a, self.device), to_model_range(b, self.device)

    def train_step(self) -> dict[str, float]:
        """One training step at ``self.step``; increments it; returns the losses."""
        logs = self.update(*self.batch())
        step_schedulers(self.schedulers)
        self.step += 1
        return logs

    def state_dict(self) -> dict:
        return {"step": self.step, "nets": {k: n.state_dict() for k, n in self.nets.items()},
                "optimizers": [o.state_dict() for o in self.optimizers],
                "schedulers": [s.state_dict() for s in self.schedulers],
                "pools": [p.state_dict() for p in self.pools()]}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        for name, net in self.nets.items():
            net.load_state_dict(state["nets"][name])
        for opt, s in zip(self.optimizers, state["optimizers"], strict=True):
            opt.load_state_dict(s)
        for sched, s in zip(self.schedulers, state["schedulers"], strict=True):
            sched.load_state_dict(s)
        for pool, s in zip(self.pools(), state["pools"], strict=True):
            pool.load_state_dict(s)

    # -- per trainer ----------------------------------------------------------------------------
    def build(self) -> None:
        raise NotImplementedError

    def make_batches(self, train_a, train_b, crop: int) -> UnpairedBatches:
        raise NotImplementedError

    def pools(self) -> list[ImagePool]:
        return []

    def update(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, float]:
        raise NotImplementedError

    @property
    def generator(self) -> nn.Module:
        """The A -> B generator: the teacher."""
        return self.nets["G_A" if "G_A" in self.nets else "G"]


class CycleGANTeacher(_TeacherTrainer):
    """CycleGAN as GAN Compression's ``models/cycle_gan_model.py`` trains it (G step, then D step):
    the shared ``tasks/cyclegan.py``, which also trains the single-modal task's CycleGAN baseline."""

    name = "cyclegan"

    def build(self) -> None:
        o = self.options
        # Construction order as the official model: G_A, G_B, D_A, D_B.
        self.cycle = CycleGAN.build(self.generator_net, lambda: self.discriminator_net(3), self.device,
                                    gan_loss=self.gan_loss, weights=CycleConsistency(o.lambda_A, o.lambda_B, o.lambda_identity),
                                    pool_size=o.pool_size, lr=o.lr, betas=(o.beta1, o.beta2))
        self.nets = self.cycle.nets
        self.optimizers = self.cycle.optimizers

    def make_batches(self, train_a, train_b, crop: int) -> UnpairedBatches:
        return UnpairedBatches(train_a, train_b, self.options.batch_size, crop, self.options.flip, self.seed)

    def pools(self) -> list[ImagePool]:
        return self.cycle.pools

    def generator_losses(self, real_a: torch.Tensor, real_b: torch.Tensor
                         ) -> tuple[dict[str, torch.Tensor], CycleOutputs]:
        """The weighted terms of both generators' objective (each a mean over the batch's pixels),
        and the step's images (the fakes the discriminators then see)."""
        return self.cycle.generator_losses(real_a, real_b)

    def update(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, float]:
        return self.cycle.update(real_a, real_b)


class Pix2PixTeacher(_TeacherTrainer):
    """pix2pix as GAN Compression's ``models/pix2pix_model.py`` trains it (D step, then G step)."""

    name = "pix2pix"

    def build(self) -> None:
        self.nets = {"G": self.generator_net(), "D": self.discriminator_net(6)}
        self.optimizers = [self.adam(self.nets["G"]), self.adam(self.nets["D"])]
        self.recon_loss = _RECON_LOSSES[self.options.recon_loss]

    def make_batches(self, train_a, train_b, crop: int) -> PairedBatches:
        return PairedBatches(train_a, train_b, self.options.batch_size, crop, self.options.flip, self.seed)

    def update(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, float]:
        g, d = self.nets["G"], self.nets["D"]
        opt_g, opt_d = self.optimizers
        fake_b = g(real_a)

        # Conditional discriminator on (input, output) pairs.
        set_requires_grad(d, True)
        opt_d.zero_grad(set_to_none=True)
        loss_d_fake = self.gan_loss(d(torch.cat([real_a, fake_b], 1).detach()), False, for_discriminator=True)
        loss_d_real = self.gan_loss(d(torch.cat([real_a, real_b], 1)), True, for_discriminator=True)
        loss_d = 0.5 * (loss_d_fake + loss_d_real)
        loss_d.backward()
        opt_d.step()

        # Generator: fool D, and match the target.
        set_requires_grad(d, False)
        opt_g.zero_grad(set_to_none=True)
        losses = self.generator_losses(real_a, real_b, fake_b)
        sum(losses.values()).backward()
        opt_g.step()
        return {"D_real": loss_d_real.item(), "D_fake": loss_d_fake.item(), **{k: v.item() for k, v in losses.items()}}

    def generator_losses(self, real_a: torch.Tensor, real_b: torch.Tensor, fake_b: torch.Tensor
                         ) -> dict[str, torch.Tensor]:
        """The weighted terms of the generator's objective (each a mean over the batch's pixels)."""
        o = self.options
        return {"G_gan": self.gan_loss(self.nets["D"](torch.cat([real_a, fake_b], 1)), True,
                                       for_discriminator=False) * o.lambda_gan,
                "G_recon": self.recon_loss(fake_b, real_b) * o.lambda_recon}


def make_trainer(options: TeacherOptions, dataset: UnpairedDataset, paired: bool, device: torch.device,
                 seed: int) -> _TeacherTrainer:
    """The trainer for ``paired`` data (pix2pix) or unpaired data (CycleGAN), with freshly initialised
    networks: the global RNG is seeded with ``seed`` first."""
    if paired and not isinstance(dataset, PairedDataset):
        raise ConfigError(f"teacher: paired training (pix2pix) needs a dataset of kind 'paired'; "
                          f"{type(dataset).__name__} is of kind '{getattr(dataset, 'kind', '?')}'")
    seed_everything(seed)
    cls = Pix2PixTeacher if paired else CycleGANTeacher
    return cls(options.resolved(paired), dataset, device, seed)


# --------------------------------------------------------------------------------------------------
# Cache, training with resume, lock
# --------------------------------------------------------------------------------------------------

def teacher_key(options: TeacherOptions, dataset: UnpairedDataset, paired: bool, seed: int) -> dict:
    """Everything a trained teacher depends on: the cache key."""
    return {"format": TEACHER_FORMAT, "version": TEACHER_VERSION,
            "trainer": Pix2PixTeacher.name if paired else CycleGANTeacher.name,
            "dataset": dataset.identity, "seed": int(seed), "options": options.training_settings(paired)}


def teacher_folder(cache_dir: Path | str, key: dict) -> Path:
    return Path(cache_dir) / "teachers" / content_hash(key)[:24]


def _arch(options: TeacherOptions) -> dict:
    return {"ngf": options.ngf, "n_blocks": options.n_blocks, "norm": options.norm}


def train_teacher(options: TeacherOptions, dataset: UnpairedDataset, paired: bool, device: torch.device,
                  seed: int, folder: Path, log: Callable[[str], None] = print) -> Path:
    """Train the teacher in ``folder`` (resuming from ``folder/training.pt`` when present) and write
    ``folder/teacher.pt``; returns its path. Changes the global RNG state (callers restore it)."""
    key = teacher_key(options, dataset, paired, seed)
    run_id = f"teacher/{content_hash(key)}"
    progress_path, final_path = folder / "training.pt", folder / "teacher.pt"
    trainer = make_trainer(options, dataset, paired, device, seed)
    total = trainer.total_steps
    if progress_path.is_file():
        checkpoint = load_checkpoint(progress_path, run_id, map_location="cpu")  # RNG states must stay on the CPU
        trainer.load_state_dict(checkpoint["task"])
        set_rng_state(checkpoint["rng"])
        log(f"teacher ({trainer.name}): resuming at step {trainer.step}/{total} from {progress_path}")
    else:
        log(f"teacher ({trainer.name}): training {total} steps on {dataset.identity} (seed {seed}) in {folder}")
    o = trainer.options
    since, since_step = time.perf_counter(), trainer.step
    while trainer.step < total:
        losses = trainer.train_step()
        if trainer.step % o.checkpoint_every == 0 and trainer.step < total:
            save_checkpoint(progress_path, run_id, trainer.step, trainer.state_dict())
        if trainer.step % o.log_every == 0 or trainer.step == total:
            now = time.perf_counter()
            rate = (trainer.step - since_step) / max(now - since, 1e-9)
            since, since_step = now, trainer.step
            log(f"teacher ({trainer.name}) step {trainer.step}/{total}: "
                + ", ".join(f"{k} {v:.4f}" for k, v in losses.items()) + f" | {rate:.2f} steps/s")
    generator = trainer.generator
    atomic_save({"format": TEACHER_FORMAT, "version": TEACHER_VERSION, "arch": _arch(o),
                 "trainer": trainer.name, "key": json.dumps(key, sort_keys=True), "steps": total,
                 "generator": {k: v.detach().cpu() for k, v in generator.state_dict().items()}}, final_path)
    progress_path.unlink(missing_ok=True)
    log(f"teacher ({trainer.name}): done, saved {final_path}")
    return final_path


def obtain_teacher(options: TeacherOptions, dataset: UnpairedDataset, paired: bool, device: torch.device | str,
                   seed: int, cache_dir: Path | str, log: Callable[[str], None] = print,
                   may_train: bool = True) -> nn.Module:
    """The teacher generator, frozen and in eval mode on ``device``: loaded from
    ``options.checkpoint`` when set, else from the cache (``<cache_dir>/teachers/<hash>``), else
    trained there first (resuming an interrupted training; one process at a time, others wait for
    it). Without ``may_train`` (the ranks other than 0 under torchrun) a teacher missing from the
    cache is waited for (rank 0 trains it) instead of trained. The caller's global RNG state is left
    as it was, whether the teacher was trained or not."""
    problem = options.validate()
    if problem:
        raise ConfigError(f"teacher: {problem}")
    device = torch.device(device)
    caller_rng = rng_state()
    try:
        if options.checkpoint:
            generator = load_teacher_checkpoint(options.checkpoint, options, device)
            log(f"teacher: loaded {options.checkpoint}")
        else:
            generator = _cached_or_trained(options, dataset, paired, device, seed, Path(cache_dir), log, may_train)
    finally:
        set_rng_state(caller_rng)
    return generator.to(device).eval().requires_grad_(False)


TEACHER_POLL_SECONDS = 2.0
"""How often a process that may not train the teacher looks for it in the cache."""


def _cached_or_trained(options: TeacherOptions, dataset: UnpairedDataset, paired: bool, device: torch.device,
                       seed: int, cache_dir: Path, log: Callable[[str], None], may_train: bool = True) -> nn.Module:
    key = teacher_key(options, dataset, paired, seed)
    folder = teacher_folder(cache_dir, key)
    final_path = folder / "teacher.pt"
    if not final_path.is_file() and not may_train:
        # Polled, not a barrier: training the teacher may outlast a process group's timeout, and
        # no collective is pending meanwhile. A failure of the training process ends this one
        # (torchrun stops every rank when one fails).
        log(f"teacher: waiting for another process to train this teacher ({folder})")
        while not final_path.is_file():
            time.sleep(TEACHER_POLL_SECONDS)
    if not final_path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_write(folder / "key.json", "w", encoding="utf-8") as f:
            json.dump(key, f, indent=1, sort_keys=True)
        with waiting_lock(folder / "training.lock",
                          f"teacher: another process is training this teacher ({folder}); waiting for it", log):
            if not final_path.is_file():  # the other process may have finished meanwhile
                train_teacher(options, dataset, paired, device, seed, folder, log)
    else:
        log(f"teacher: reusing the cached teacher {final_path}")
    return load_teacher_checkpoint(final_path, options, device)


# --------------------------------------------------------------------------------------------------
# Loading checkpoints (ours and the official layout)
# --------------------------------------------------------------------------------------------------

_OFFICIAL_BLOCK_KEY = re.compile(r"^(model\.\d+\.conv_block\.)(\d+)(\..+)$")


def official_to_benchmark_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """GAN Compression's ``resnet_9blocks`` state dict -> this benchmark's ``ResnetGenerator`` keys.

    Its ``ResnetBlock`` always holds ``nn.Dropout(dropout_rate)`` between the two convs
    (``[pad, conv, norm, ReLU, Dropout, pad, conv, norm]``), ours only when dropout is on, so the
    block's second conv and norm are ``conv_block.6`` / ``.7`` there and ``.5`` / ``.6`` here.
    Recognised by a 4-D ``conv_block.6.weight`` (a conv there; ours at index 6 is a norm). Other
    keys (and this benchmark's own layout) pass unchanged."""
    official = any(_OFFICIAL_BLOCK_KEY.match(k) and k.endswith("conv_block.6.weight") and v.dim() == 4
                   for k, v in state.items())
    if not official:
        return dict(state)
    out = {}
    for k, v in state.items():
        m = _OFFICIAL_BLOCK_KEY.match(k)
        if m and int(m.group(2)) >= 5:
            k = f"{m.group(1)}{int(m.group(2)) - 1}{m.group(3)}"
        out[k] = v
    return out


def _strip_module_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def _guess_arch(state: dict[str, torch.Tensor]) -> str:
    """What a ResNet generator state dict looks like (ngf, number of blocks), for error messages."""
    first = state.get("model.1.weight")
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"^model\.(\d+)\.conv_block\.", k))}
    parts = []
    if isinstance(first, torch.Tensor) and first.dim() == 4:
        parts.append(f"ngf={first.shape[0]}")
    if blocks:
        parts.append(f"n_blocks={len(blocks)}")
    return ", ".join(parts)


def _read_state(path: Path, device: torch.device) -> tuple[dict[str, torch.Tensor], str, dict | None]:
    """(state dict, description of the layout, arch of our own file or None) of a checkpoint file."""
    if not path.is_file():
        raise CheckpointError(f"teacher checkpoint '{path}' does not exist; expected this benchmark's "
                              "teacher.pt or GAN Compression's latest_net_G.pth")
    try:
        obj = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure: say what was expected
        raise CheckpointError(
            f"teacher checkpoint '{path}' cannot be loaded with torch.load(weights_only=True) "
            f"({load_failure(path, exc)}); expected a generator state dict (torch.save(net.state_dict())) "
            "or this benchmark's teacher file, not a pickled module") from exc
    if isinstance(obj, dict) and obj.get("format") == TEACHER_FORMAT:
        if obj.get("version") != TEACHER_VERSION or not isinstance(obj.get("generator"), dict):
            raise CheckpointError(f"teacher checkpoint '{path}' is an i2i-bench teacher of version "
                                  f"{obj.get('version')!r}; expected version {TEACHER_VERSION} with a 'generator' state dict")
        return obj["generator"], "i2i-bench teacher file", obj.get("arch")
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                       for k, v in obj.items()):
        raise CheckpointError(f"teacher checkpoint '{path}' holds a {type(obj).__name__} that is not a "
                              "state dict (str -> tensor); expected a generator state dict such as GAN "
                              "Compression's latest_net_G.pth, or this benchmark's teacher file")
    return official_to_benchmark_keys(_strip_module_prefix(obj)), "generator state dict", None


def load_teacher_checkpoint(path: Path | str, options: TeacherOptions, device: torch.device | str = "cpu") -> nn.Module:
    """A teacher generator (``ngf``, ``n_blocks``, ``norm`` of ``options``) with the weights of
    ``path``; a CheckpointError names the missing / unexpected keys and mismatched shapes and what
    was expected. Builds a network: uses the global RNG (callers restore it)."""
    path, device = Path(path).expanduser(), torch.device(device)
    state, layout, arch = _read_state(path, device)
    net = build_teacher_generator(options)
    expected_arch = _arch(options)
    if arch is not None and arch != expected_arch:
        raise CheckpointError(f"teacher checkpoint '{path}' holds a generator with {arch}; the teacher "
                              f"options expect {expected_arch}: set ngf / n_blocks / norm to match")
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k}: file {tuple(state[k].shape)}, expected {tuple(v.shape)}"
              for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        def listed(items: list[str]) -> str:
            return ", ".join(items[:6]) + (f", ... ({len(items)} in all)" if len(items) > 6 else "")
        problems = [f"missing keys: {listed(missing)}" if missing else "",
                    f"unexpected keys: {listed(unexpected)}" if unexpected else "",
                    f"shape mismatches: {listed(shapes)}" if shapes else ""]
        guess = _guess_arch(state)
        raise CheckpointError(
            f"teacher checkpoint '{path}' ({layout}) does not fit the teacher generator: "
            + "; ".join(p for p in problems if p)
            + f". Expected the state dict of a ResNet generator (CycleGAN / GAN Compression resnet_9blocks "
            f"layout) with ngf={options.ngf}, n_blocks={options.n_blocks}, norm={options.norm}"
            + (f"; the file looks like {guess}" if guess else ""))
    net.load_state_dict(state)
    return net.to(device)
