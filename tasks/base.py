"""The task contract: a training framework that a method plugs into.

A task owns its networks, optimisers, data order and evaluation protocol; it asks the method for
losses through ``methods.base.TranslationPair`` and knows no method by name. The runner drives it:
``setup()``, then ``train_step()`` until ``step == total_steps`` (checkpointing ``state_dict()`` on
the way), then ``evaluate()``. With the suite's ``validation`` section on (``ctx.validation``), a
task holds a validation split out of the training images its steps draw and the runner calls
``evaluate_point('val')`` (and ``evaluate_point('test')`` for the ``best_test`` rule) every
``eval_every`` steps; a task that cannot says why in ``validation_refusal``.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar, Literal

import torch

from benchmark.core.context import Evaluation, RunContext
from benchmark.core.errors import ConfigError
from benchmark.core.schedules import linear_decay_factor
from datasets.base import UnpairedDataset
from methods.base import Method, PatchPolicy


def set_requires_grad(net: torch.nn.Module, flag: bool) -> None:
    """Turn the gradients of every parameter of ``net`` on or off, as CUT's
    ``BaseModel.set_requires_grad`` does; the tasks use it for a network that is not being stepped
    (D during G's step, the multi-modal task's EMA copies), which then gets no gradients at all."""
    for p in net.parameters():
        p.requires_grad_(flag)


def samplewise(net: torch.nn.Module) -> bool:
    """Whether ``net``, in its current mode, computes each image of a batch on its own and
    deterministically, so that a slice of its activations on a batch equals its activations on that
    slice alone: no module uses or updates batch statistics (BatchNorm in training, or any norm
    that tracks running statistics in training) and no dropout is active."""
    for m in net.modules():
        if not m.training:
            continue
        if isinstance(m, torch.nn.modules.batchnorm._NormBase) and (
                m.track_running_stats or isinstance(m, torch.nn.modules.batchnorm._BatchNorm)):
            return False
        if isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0:
            return False
    return True


def checkpoint_size(trained: Iterable[torch.nn.Module], copies: Iterable[torch.nn.Module] = ()) -> int:
    """Bytes of a checkpoint holding ``trained`` networks with Adam's two moments beside each weight
    and ``copies`` (e.g. EMA copies) with their weights only: float32, so 12 bytes per trained
    parameter and 4 per copied one. Buffers and the optimisers' step counters are left out."""
    def parameters(nets):
        return sum(p.numel() for net in nets for p in net.parameters())
    return 12 * parameters(trained) + 4 * parameters(copies)


def schedule_refusal(options) -> str | None:
    """Why ``batch_size``, ``n_steps`` and ``n_steps_decay`` (CUT's linear-decay schedule) cannot
    train, or None; and a task-level ``log_every`` other than its default 50, which changes nothing
    (the suite's ``log_every`` sets how often losses are logged)."""
    if getattr(options, "log_every", 50) != 50:
        return "log_every here changes nothing: set the suite's log_every (steps between logged losses) instead"
    if options.batch_size < 1:
        return f"batch_size must be >= 1, got {options.batch_size}"
    if options.n_steps < 0 or options.n_steps_decay < 0 or options.n_steps + options.n_steps_decay < 1:
        return "n_steps and n_steps_decay must be >= 0 and their sum >= 1"
    return None


def linear_decay_schedulers(optimizers: list[torch.optim.Optimizer], n_constant: int,
                            n_decay: int) -> list[torch.optim.lr_scheduler.LambdaLR]:
    """CUT's 'linear' policy on every optimiser, stepped once per training step."""
    return [torch.optim.lr_scheduler.LambdaLR(opt, lambda step: linear_decay_factor(step, n_constant, n_decay))
            for opt in optimizers]


def training_state(step: int, modules: dict[str, torch.nn.Module], optimizers, schedulers, **extra) -> dict:
    """A task's checkpoint: ``step``, each module's state dict under its name, the optimisers' and
    schedulers' states (in order) and ``extra`` entries (e.g. an image pool's state)."""
    return {"step": step, **{name: m.state_dict() for name, m in modules.items()},
            "optimizers": [opt.state_dict() for opt in optimizers],
            "schedulers": [s.state_dict() for s in schedulers], **extra}


def restore_training_state(state: dict, modules: dict[str, torch.nn.Module], optimizers, schedulers) -> int:
    """Load what :func:`training_state` saved into ``modules``, ``optimizers`` and ``schedulers``
    (which must match in number and order); returns the step."""
    for name, module in modules.items():
        module.load_state_dict(state[name])
    for opt, s in zip(optimizers, state["optimizers"], strict=True):
        opt.load_state_dict(s)
    for sched, s in zip(schedulers, state["schedulers"], strict=True):
        sched.load_state_dict(s)
    return state["step"]


def distribute(ctx: RunContext, method: Method, modules: dict[str, torch.nn.Module],
               optimizers: list[torch.optim.Optimizer]) -> None:
    """Under torchrun (``ctx.distributed``): refuse what cannot share a batch among processes (a
    method whose loss couples the images of a batch, a batch-normalised network), then average
    the gradients of ``optimizers`` over the ranks before each of their steps. A no-op in one process.
    Called at the end of ``setup()``, with every network and optimiser of the run."""
    d = ctx.distributed
    if not d.enabled:
        return
    if method.environment.distributed is not d:
        raise ValueError(f"method '{method.registry_name}' was built for another process group than the "
                         "task's: build it with MethodEnvironment(distributed=ctx.distributed)")
    reason = method.batch_coupling()
    if reason:
        raise ConfigError(f"method '{method.registry_name}' cannot share a batch among {d.world_size} "
                          f"processes: {reason}. Train it in one process")
    d.check_per_sample({**modules, "method": method})
    d.synchronize(optimizers)


class Task:
    """Base class of registered tasks. Subclasses set ``Options`` (a dataclass)."""

    Options: ClassVar[type]
    registry_name: ClassVar[str]
    dataset_kinds: ClassVar[tuple[str, ...]] = ("unpaired",)
    """The dataset kinds (:data:`datasets.base.DATASET_KINDS`) this task can train on; a suite pairing
    it with another kind is refused when the config is loaded."""
    capabilities: ClassVar[frozenset[str]] = frozenset()
    """What the task can do for a method beyond asking it for losses (e.g.
    :data:`methods.base.CYCLE_CONSISTENCY`); a method whose ``required_capabilities`` it lacks is
    refused when the config is loaded."""
    trains_distributed: ClassVar[bool] = False
    """Whether the task trains and evaluates under torchrun with several processes (each its share
    of the batch, see :func:`distribute`); the runner refuses the others there."""
    patch_policy: ClassVar[PatchPolicy | None] = None
    """What the task's data allow a method that contrasts patches (e.g. the single-image task's one
    patch per crop, negatives from the other crops); each method answers with
    ``Method.patch_settings`` when the config is loaded (its overrides go into the run's method
    options, its refusal refuses the pair). None: no limit."""

    @classmethod
    def capabilities_for(cls, options) -> frozenset[str]:
        """The capabilities a run with these options offers (the default: all of ``capabilities``)."""
        return cls.capabilities

    @classmethod
    def required_weights(cls, options) -> list[str]:
        """Keys of :data:`benchmark.core.weights.WEIGHT_FILES` that runs with these options need
        (the FID network is always needed and need not be listed)."""
        return []

    @classmethod
    def accepts(cls, dataset_cls: type) -> bool:
        return getattr(dataset_cls, "kind", None) in cls.dataset_kinds

    def __init__(self, options, dataset: UnpairedDataset, method: Method, ctx: RunContext):
        self.options = options
        self.dataset = dataset
        self.method = method
        self.ctx = ctx
        self.step = 0

    @classmethod
    def planned_steps(cls, options) -> int:
        """Training steps a run with these options takes: ``n_steps`` at the full learning rate, then
        ``n_steps_decay`` (where the options have it) decaying linearly to zero, as in the CUT framework."""
        return options.n_steps + getattr(options, "n_steps_decay", 0)

    @property
    def total_steps(self) -> int:
        return self.planned_steps(self.options)

    def setup(self) -> None:
        """Build networks and optimisers (seeded by the runner before this call)."""
        raise NotImplementedError

    def checkpoint_size(self) -> int | None:
        """Bytes of one checkpoint of this run, estimated without ``setup`` (:func:`checkpoint_size`
        of the networks it would build; a method's own heads, built lazily, are not counted), for
        ``plan``'s check of the disk space the checkpoints need; None: not known."""
        return None

    def train_step(self) -> dict[str, float]:
        """One training step at ``self.step``; increments it; returns values to log."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError

    def evaluate(self) -> Evaluation:
        raise NotImplementedError

    @classmethod
    def validation_refusal(cls, options) -> str | None:
        """Why runs with these options cannot evaluate on a held-out validation split during training
        (the suite's ``validation`` section is then refused when the config is loaded); None = they can."""
        return (f"task '{getattr(cls, 'registry_name', cls.__name__)}' implements no evaluation on a "
                "held-out validation split (Task.evaluate_point)")

    def evaluate_point(self, split: Literal["val", "test"]) -> dict[str, float]:
        """The current weights' scores at an evaluation point during training: on the validation split
        held out of the training images (``'val'``; never a test image) or on the test set
        (``'test'``). The score the selection rules compare is ``'FID'`` (lower is better). Must not
        change the training state (the runner restores the random-number state around it)."""
        raise NotImplementedError

    identity_options: ClassVar[tuple[str, ...]] = ()
    """The options :meth:`evaluate_identity` reads: a dataset's ``task:`` settings of these apply to
    its identity row (and bind its folder); settings that only train leave the row as it is."""

    @classmethod
    def input_files(cls, options) -> dict[str, str]:
        """Files that ``options`` name and whose content the results depend on (name -> path; e.g.
        a teacher checkpoint): each run records their sha256 (``benchmark.inputs``), and its results
        are stale once a file holds something else."""
        return {}

    @classmethod
    def evaluate_identity(cls, options, dataset: UnpairedDataset, ctx: RunContext) -> Evaluation:
        """The evaluation with the input itself as the output (the report's ``identity`` row)."""
        raise NotImplementedError
