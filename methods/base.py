"""The contract between a method plugin and a task.

A method turns corresponding images (the source and the translated output, plus the target-domain
image and its identity translation where the method uses them) into named, already-weighted
generator losses. It owns its learnable parts (projection heads, negative generators, GNNs) and
their optimisers; the task builds, steps, schedules and checkpoints them without knowing what they
are.

Life cycle, driven by the task:

1. ``method = cls(params, environment)`` (by the runner: :class:`MethodEnvironment`);
2. ``method.initialize(pair)`` once on the first training batch (data-dependent initialisation:
   heads are sized from the features they will see), then ``method.build_optimizers(defaults)``;
3. each step: the task updates its discriminator, calls ``aux = method.auxiliary_step(pair)`` (a
   method's own adversarial or head-training step, if any), logs ``aux.logs``, computes
   ``method.generator_losses(pair, aux.computed)``, adds them to its GAN loss, back-propagates once,
   steps the generator and ``method.optimizers['heads']`` (if present), then calls
   ``method.after_generator_step()`` (``tasks/optimizer_steps.py``). Any other optimiser of the
   method is its own: it steps it inside ``auxiliary_step``, and the task never does.

Before any of this, when the config is loaded: a task with a :class:`PatchPolicy` asks
``patch_settings`` how the method follows it, and a task must offer the method's
``required_capabilities`` with the run's options (``Task.capabilities_for``).

A method gets features only from ``pair.features`` (a :class:`FeatureSource` the task builds for
each step), by role: ``pair.features("source")``, ``pair.features("output")``, ...

Data flows only through arguments and return values: what ``auxiliary_step`` computed for reuse
(features, instance vectors) comes back in ``AuxiliaryStep.computed`` and the task hands it to
``generator_losses`` of the same step; a method keeps no per-step data between the calls.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Sequence

import torch
from torch import nn

from benchmark.core.distributed import SINGLE_PROCESS, Distributed

Role = Literal["source", "output", "target", "identity"]
"""The images of a :class:`TranslationPair` a method can ask the task's features of."""

ROLES: tuple[Role, ...] = ("source", "output", "target", "identity")


class FeatureSource:
    """The task's features of the images of one step, asked by role: what a method compares
    (CUT's G_enc, at the task's feature layers). Task-owned: the task decides where they come from
    (the generator encoder, run afresh or read off its translation pass; the compression task's
    teacher and student activations). A method never encodes an image itself.

    Feature maps are (B, C, H, W) per layer. Those of ``output`` and ``identity`` are aligned with
    those of ``source`` and ``target``: when the generator's input was flipped (flip equivariance)
    the task has flipped them back, so that location s of both maps is the same place of the
    scene."""

    def __call__(self, role: Role, *, fresh: bool = False) -> list[torch.Tensor]:
        """The features of ``pair.<role>``, with gradients wherever the image has them.

        ``fresh``: a graph of their own, not shared with the translation pass that produced them
        (a method whose loss sends gradients into the keys' features asks for this, so that its
        gradients are summed as when the image is encoded again; the values are the same)."""
        raise NotImplementedError

    def channels(self) -> list[int]:
        """Channels per feature layer (to size heads on the first batch); computes no gradients."""
        raise NotImplementedError


class NoFeatures(FeatureSource):
    """For a pair whose task hands no encoder features (a method comparing pixels, e.g. through a
    frozen VGG16, never asks)."""

    def __call__(self, role: Role, *, fresh: bool = False) -> list[torch.Tensor]:
        raise ValueError(f"this pair carries no features (asked for those of '{role}'): the task "
                         "built it without a FeatureSource")

    def channels(self) -> list[int]:
        return self("source")


NO_FEATURES = NoFeatures()


@dataclass
class TranslationPair:
    """What a task hands a method for one step. Images are in [-1, 1], shape (B, 3, H, W)."""

    source: torch.Tensor
    output: torch.Tensor
    target: torch.Tensor | None = None
    identity: torch.Tensor | None = None
    """The generator applied to ``target`` (present when ``method.uses_identity``)."""
    features: FeatureSource = NO_FEATURES
    """The task's features of these images, by role (``pair.features("output")``)."""
    output_flipped: bool = False
    """The generator's input was flipped horizontally (flip equivariance): a method that computes
    features of ``output`` or ``identity`` itself (e.g. through VGG16) flips them back."""
    progress: float = 0.0
    """Fraction of training done, in [0, 1] (drives curricula)."""
    step: int = 0


@dataclass(frozen=True)
class MethodEnvironment:
    """What a method may know of the run it is part of; given at construction by the runner."""

    weights_dir: Path | None = None
    """The configured folder of pretrained weights (e.g. for a frozen VGG16)."""
    distributed: Distributed = SINGLE_PROCESS
    """This process's place among the processes that share every batch under torchrun: a loss
    that couples the images of a batch and gathers the other processes' rows
    (``Distributed.gather_rows``) need not be refused (``Method.batch_coupling``)."""


STANDALONE = MethodEnvironment()
"""One process, no weights folder (tests, notebooks)."""


@dataclass
class AuxiliaryStep:
    """What ``Method.auxiliary_step`` returns: values to log, and data it computed that
    ``generator_losses`` of the same step may reuse instead of recomputing."""

    logs: dict[str, float] = field(default_factory=dict)
    computed: Any = None
    """Method-defined (e.g. encoder features of the step's images); None = nothing to reuse. The task
    passes it, untouched, as ``generator_losses(pair, computed)`` for the same ``pair``."""


@dataclass(frozen=True)
class CycleConsistency:
    """CycleGAN's loss weights (junyanz/pytorch-CycleGAN-and-pix2pix ``cycle_gan_model.py``): the cycle
    terms lambda_A |G_B(G_A(a)) - a| and lambda_B |G_A(G_B(b)) - b|, and the identity terms
    lambda_identity * lambda_B |G_A(b) - b| and lambda_identity * lambda_A |G_B(a) - a|."""

    lambda_A: float = 10.0
    lambda_B: float = 10.0
    lambda_identity: float = 0.5


CYCLE_CONSISTENCY = "cycle_consistency"
"""A task capability: it can train CycleGAN's two-sided framework (a second generator B -> A and a
discriminator on domain A, cycle and identity losses, see ``Method.cycle_consistency``)."""


OUTPUT_GRADIENT = "output_gradient"
"""A task capability: ``pair.output`` is the generator's translation, carrying its gradient, so a
loss on its pixels (e.g. through a frozen VGG16) trains the generator. A task may hand a method the
source image as ``output`` instead (the multi-modal task's fork, ``patch_query: source``), where only
losses on the task's encoder features (``pair.features``) reach the generator."""


@dataclass(frozen=True)
class PatchPolicy:
    """What a task's data allow a method that contrasts patches of an image (``Task.patch_policy``);
    each method answers with :meth:`Method.patch_settings` when the config is loaded."""

    patches_per_image: int | None = None
    """Patch locations per image and feature layer the task's data allow; None = no limit."""
    negatives_across_batch: bool = False
    """A query's negatives must come from the other images of the batch: its own image offers
    none (with one patch per image there is no other patch of it)."""
    why: str = ""
    """The reason, in the task's words (for the protocol line and refusals)."""

    @property
    def limits(self) -> bool:
        """Whether the policy limits anything (a method that samples patches freely must answer it)."""
        return self.patches_per_image is not None or self.negatives_across_batch

    def describe(self) -> str:
        parts = []
        if self.patches_per_image is not None:
            parts.append(f"{self.patches_per_image} patch(es) per image")
        if self.negatives_across_batch:
            parts.append("negatives only from the other images of the batch")
        return ", ".join(parts) + (f" ({self.why})" if self.why else "")


@dataclass(frozen=True)
class OptimizerDefaults:
    """The task's optimiser settings, which a method's own optimisers follow unless it says otherwise."""

    lr: float
    betas: tuple[float, float]
    weight_decay: float = 0.0


class Method(nn.Module):
    """Base class of method plugins. Subclasses define ``Params`` (a dataclass) and may define
    ``presets`` (preset name -> parameter overrides) and ``task_defaults`` (task options the method's
    paper uses, e.g. a learning rate, applied unless the config sets them)."""

    Params: ClassVar[type]
    presets: ClassVar[dict[str, dict]] = {}
    task_defaults: ClassVar[dict] = {}
    registry_name: ClassVar[str]
    required_capabilities: ClassVar[frozenset[str]] = frozenset()
    """What a task must be able to do to run this method (e.g. :data:`CYCLE_CONSISTENCY`), matched
    against ``Task.capabilities`` when the config is loaded: a suite pairing the method with a task
    that lacks one is refused then, naming it."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None and "environment" not in inspect.signature(init).parameters:
            raise TypeError(f"{cls.__module__}.{cls.__qualname__}.__init__ must take the run's environment: "
                            "def __init__(self, params, environment=STANDALONE), passing it on with "
                            "super().__init__(params, environment)")

    def __init__(self, params, environment: MethodEnvironment = STANDALONE):
        super().__init__()
        self.params = params
        self.environment = environment
        self.optimizers: dict[str, torch.optim.Optimizer] = {}

    @classmethod
    def required_weights(cls, params) -> list[str]:
        """Keys of :data:`benchmark.core.weights.WEIGHT_FILES` that the method needs with ``params``
        (``python -m benchmark weights`` and ``run`` check them before training)."""
        return []

    @classmethod
    def patch_settings(cls, policy: PatchPolicy, params) -> dict[str, Any] | str:
        """How the method follows a task's :class:`PatchPolicy`: the parameter overrides that make
        ``params`` honour it ({} = they already do), or why it cannot (the pair is then refused
        when the config is loaded). The default refuses: a method must say how it takes patches
        before a task that limits them runs it."""
        return (f"method '{getattr(cls, 'registry_name', cls.__name__)}' does not say how it follows a "
                "task's patch policy (Method.patch_settings)")

    # -- what the task needs to know -------------------------------------------------------------
    @property
    def uses_identity(self) -> bool:
        """Whether the task must also translate target-domain images (``pair.identity``)."""
        return False

    @property
    def flips_input(self) -> bool:
        """Whether the task should randomly flip the generator's input (flip equivariance)."""
        return False

    def cycle_consistency(self) -> CycleConsistency | None:
        """CycleGAN's loss weights when the method asks the task for CycleGAN's two-sided framework
        (a task with the :data:`CYCLE_CONSISTENCY` capability then trains G_A: A -> B, G_B: B -> A and
        a discriminator per domain, and adds the method's ``generator_losses`` on (source, G_A(source))
        to both generators' objective); None (the default) = the task's own one-sided framework."""
        return None

    def batch_coupling(self) -> str | None:
        """Why this method's loss for one image depends on the other images of its batch, or on
        random values drawn per image from the global RNG (None: neither). Such a method cannot
        train with its batch shared by several processes (torchrun): each would see its share only,
        or draw its own random values; the task refuses it there with this reason."""
        return None

    # -- life cycle --------------------------------------------------------------------------------
    def initialize(self, pair: TranslationPair) -> None:
        """Data-dependent initialisation on the first batch (build heads sized from features)."""

    def build_optimizers(self, defaults: OptimizerDefaults) -> None:
        """Create ``self.optimizers``; the default is one Adam 'heads' optimiser over all trainable
        parameters, stepped with the generator."""
        trainable = [p for p in self.parameters() if p.requires_grad]
        if trainable:
            self.optimizers["heads"] = torch.optim.Adam(
                trainable, lr=defaults.lr, betas=defaults.betas, weight_decay=defaults.weight_decay)

    def auxiliary_step(self, pair: TranslationPair) -> AuxiliaryStep:
        """A step of the method's own (before the generator step); returns values to log and what
        it computed for ``generator_losses`` of this step."""
        return AuxiliaryStep()

    def generator_losses(self, pair: TranslationPair, computed: Any = None) -> dict[str, torch.Tensor]:
        """Named, weighted loss terms added to the generator objective. ``computed`` is
        ``auxiliary_step(pair).computed`` of the same step (None when called on its own: the
        method then computes everything itself)."""
        raise NotImplementedError

    def after_generator_step(self) -> None:
        """Called after the generator and heads have been stepped (e.g. EMA updates)."""

    def protocol_notes(self) -> dict[str, str]:
        """Facts a report must state about runs of this method (e.g. an untrained backbone)."""
        return {}


def flip_back(features: Sequence[torch.Tensor], flipped: bool) -> list[torch.Tensor]:
    """Undo a horizontal flip of the generator input on its feature maps."""
    return [torch.flip(f, dims=[3]) for f in features] if flipped else list(features)
