"""The optimiser bookkeeping every task shares, written once for the contract of methods/base.py.

A run's optimisers are the task's own (generator, discriminator, ...) then the method's, by name: one
order for checkpoints, schedulers and gradient averaging. After the generator's backward pass a task
steps its generator-side optimisers and exactly the method optimisers the contract gives it
(:data:`TASK_STEPPED`), then calls ``after_generator_step``; the method's other optimisers are its
own, stepped inside ``auxiliary_step`` on their own objective, so a second step here would apply
stale gradients.
"""
from __future__ import annotations

from typing import Sequence

import torch

from methods.base import Method

TASK_STEPPED = ("heads",)
"""Names of the method optimisers that the task steps with the generator (methods/base.py)."""


def method_optimizers(method: Method) -> list[torch.optim.Optimizer]:
    """Every optimiser of ``method``, ordered by name."""
    return [method.optimizers[name] for name in sorted(method.optimizers)]


def run_optimizers(own: Sequence[torch.optim.Optimizer], method: Method) -> list[torch.optim.Optimizer]:
    """The task's ``own`` optimisers, then the method's (:func:`method_optimizers`)."""
    return [*own, *method_optimizers(method)]


def task_stepped(method: Method) -> list[torch.optim.Optimizer]:
    """The method's optimisers that the task steps with the generator."""
    return [method.optimizers[name] for name in TASK_STEPPED if name in method.optimizers]


def zero_generator_side(generator: Sequence[torch.optim.Optimizer], method: Method) -> None:
    """Clear the gradients that the generator's step will use: ``generator``'s and the method's
    task-stepped optimisers'."""
    for opt in [*generator, *task_stepped(method)]:
        opt.zero_grad(set_to_none=True)


def step_generator_side(generator: Sequence[torch.optim.Optimizer], method: Method) -> None:
    """After the generator's backward pass: step ``generator`` (in order), then the method's
    task-stepped optimisers, then ``method.after_generator_step()`` (e.g. an EMA of its heads)."""
    for opt in [*generator, *task_stepped(method)]:
        opt.step()
    method.after_generator_step()


def step_schedulers(schedulers: Sequence[torch.optim.lr_scheduler.LRScheduler]) -> None:
    """The end of a training step: every learning-rate schedule advances once."""
    for scheduler in schedulers:
        scheduler.step()
