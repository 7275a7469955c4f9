"""Data-parallel training and evaluation over several processes (``torchrun``), one run at a time.

A run trained by ``W`` processes computes what one process computes on the whole batch:

* every rank holds the same networks, optimisers and random state (seeded alike, and every random
  choice is drawn alike on every rank: the data order is a function of (seed, step) of the *global*
  batch, patch locations and flip coins come from the global torch RNG, which every rank draws
  from in the same order);
* each rank translates and back-propagates its share of the global batch (:meth:`Distributed.rows`:
  equal, contiguous shares in rank order), so a loss that averages over its batch averages over the
  rank's share;
* before every optimiser step the gradients of that optimiser's parameters are averaged over the
  ranks (:meth:`Distributed.synchronize`, an all-reduce in one flat buffer): the mean of the ranks'
  batch-mean gradients is the gradient of the mean over the global batch, so every rank takes the
  step one process would take, and the ranks stay identical without any broadcast;
* what couples the images of a batch is computed on the gathered global batch on every rank
  (:meth:`Distributed.gather_rows`; e.g. CycleGAN's image pool) and sliced back;
* evaluation is sharded in whole evaluation batches (:meth:`Distributed.shard`) and gathered in
  order, so exactly N images are scored, each once, in the single-process batches.

This is DistributedDataParallel's algorithm (gradient averaging of replicas) without the
``nn.parallel.DistributedDataParallel`` wrapper: the wrapper must see every forward call of a module
and expects each backward to reach all its parameters, while these GAN steps run a network several
times per backward (the generator for the translation and, encode-only, for the method's features),
step a discriminator frozen in the generator's backward, and let methods step their own
optimisers inside a step (NEGCUT's negative generator, LSeSim's heads). Hooking the optimiser step
covers all of them, in the tasks and in the methods, without either knowing about ranks. The
communication is not overlapped with the backward pass (one all-reduce per optimiser step).

With one process (no ``torchrun``) everything here is a no-op and the numbers are bit-identical to
code that never heard of it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.distributed as dist

from .errors import ConfigError

__all__ = ["Distributed", "SINGLE_PROCESS", "from_environment", "init_distributed"]


@dataclass(frozen=True)
class Distributed:
    """This process's place among the processes of one run: ``rank`` of ``world_size`` (global) and
    ``local_rank`` on its node. The default is the single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """Several processes train this run (an initialised process group)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes checkpoints, logs, metrics and reports."""
        return self.rank == 0

    # -- training: shares of the global batch ------------------------------------------------------
    def rows(self, global_size: int) -> slice:
        """This rank's rows of a global batch of ``global_size``: equal contiguous shares in rank
        order (so the ranks' shares, concatenated, are the batch). Refuses a batch the ranks
        cannot share equally: the gradient average is the global batch's only with equal shares."""
        if global_size % self.world_size:
            raise ConfigError(f"a batch of {global_size} cannot be shared equally by {self.world_size} "
                              f"processes: set batch_size to a multiple of the number of processes "
                              f"(torchrun --nproc_per_node x --nnodes)")
        share = global_size // self.world_size
        return slice(self.rank * share, (self.rank + 1) * share)

    def local(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's share of ``batch`` (the batch itself with one process)."""
        if not self.enabled:
            return batch
        return batch[self.rows(batch.shape[0])]

    def draw_rows(self, draw: Callable[[int], torch.Tensor], rows: int, parts: int = 1) -> torch.Tensor:
        """Random values for this rank's ``rows`` images, drawn as one process draws them for the
        whole batch: ``draw(n)`` is called with the whole batch's n rows on every rank (so the global
        RNG stays in step with one process's) and this rank's rows are kept. ``parts``: this rank's
        batch concatenates that many shares (e.g. crops A, then crops B), each its rows of a global
        batch, and so does the whole draw. One process: ``draw(rows)``."""
        if not self.enabled:
            return draw(rows)
        size = rows // parts * self.world_size
        values = draw(parts * size)
        tail = values.shape[1:]
        return values.view(parts, size, *tail)[:, self.rows(size)].reshape(rows, *tail)

    def gather_rows(self, local: torch.Tensor) -> torch.Tensor:
        """The global batch from every rank's equal share ``local`` (the inverse of :meth:`local`),
        on every rank; no gradient flows through it."""
        if not self.enabled:
            return local
        return torch.cat(self._all_gather(local.detach(), [local.shape[0]] * self.world_size))

    # -- training: gradients -------------------------------------------------------------------------
    def synchronize(self, optimizers: Iterable[torch.optim.Optimizer]) -> None:
        """Average, before each ``step()`` of every optimiser in ``optimizers``, the gradients of its
        parameters over the ranks (a step pre-hook). Parameters without a gradient (``None``) are
        left alone: every rank runs the same code, so they lack it on every rank."""
        if not self.enabled:
            return
        for optimizer in optimizers:
            if getattr(optimizer, "_i2i_synchronized", False):
                continue
            optimizer.register_step_pre_hook(lambda opt, args, kwargs: self.average_gradients(
                [p for group in opt.param_groups for p in group["params"]]))
            optimizer._i2i_synchronized = True

    def average_gradients(self, params: Sequence[torch.nn.Parameter]) -> None:
        """All-reduce (mean) the gradients of ``params`` in one flat buffer per device and dtype."""
        if not self.enabled:
            return
        groups: dict[tuple, list[torch.Tensor]] = {}
        for p in params:
            if p.grad is not None:
                groups.setdefault((p.grad.device, p.grad.dtype), []).append(p.grad)
        for grads in groups.values():
            flat = torch.cat([g.reshape(-1) for g in grads])
            comm = self._to_comm_device(flat)
            dist.all_reduce(comm, op=dist.ReduceOp.SUM)
            comm /= self.world_size
            flat = comm.to(flat.device)
            offset = 0
            for g in grads:
                g.copy_(flat[offset:offset + g.numel()].view_as(g))
                offset += g.numel()

    def check_per_sample(self, modules: dict[str, torch.nn.Module]) -> None:
        """Refuse modules whose output for one image depends on the other images of the batch
        (batch normalisation in training): each rank would see its share's statistics only."""
        if not self.enabled:
            return
        for name, module in modules.items():
            for sub_name, sub in module.named_modules():
                if isinstance(sub, torch.nn.modules.batchnorm._BatchNorm):
                    raise ConfigError(
                        f"{name}.{sub_name or type(sub).__name__} is a batch normalisation layer: "
                        f"under torchrun each of the {self.world_size} processes would normalise its "
                        f"own share of the batch, so the run would differ from one process; use "
                        f"instance normalisation (the default) or train it in one process")

    # -- evaluation: shards of N images ------------------------------------------------------------
    def shard(self, count: int, batch_size: int) -> range:
        """This rank's images of ``range(count)`` for an evaluation in batches of ``batch_size``:
        contiguous runs of whole batches in rank order, so each image is scored once, in the batch
        one process would put it in (the same numbers), and the shards concatenate to all N."""
        if not self.enabled:
            return range(count)
        bounds = self._shard_bounds(count, batch_size)
        return range(bounds[self.rank], bounds[self.rank + 1])

    def _shard_bounds(self, count: int, batch_size: int) -> list[int]:
        batches = -(-count // batch_size)
        edges = [min(count, (batches * r // self.world_size) * batch_size) for r in range(self.world_size + 1)]
        edges[-1] = count
        return edges

    def gather_shards(self, local: torch.Tensor, count: int, batch_size: int) -> torch.Tensor:
        """The rows of every rank's :meth:`shard` of ``range(count)``, concatenated in order (all N
        rows, on every rank). ``local`` has this rank's shard's rows (any dtype and trailing shape)."""
        if not self.enabled:
            return local
        bounds = self._shard_bounds(count, batch_size)
        sizes = [b - a for a, b in zip(bounds[:-1], bounds[1:])]
        if local.shape[0] != sizes[self.rank]:
            raise ValueError(f"rank {self.rank}: {local.shape[0]} rows for a shard of {sizes[self.rank]}")
        return torch.cat(self._all_gather(local, sizes))

    # -- agreement -------------------------------------------------------------------------------------
    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` (a picklable object) on every rank: decisions every rank must take
        alike (e.g. whether a run already finished)."""
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    # -- helpers -----------------------------------------------------------------------------------------
    def _to_comm_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """NCCL reduces CUDA tensors only; gloo takes CPU tensors."""
        if dist.get_backend() == "nccl":
            return tensor if tensor.is_cuda else tensor.cuda()
        return tensor.cpu()

    def _all_gather(self, local: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
        """Every rank's ``local`` (rank r has ``sizes[r]`` rows), padded to the largest to gather."""
        largest = max(sizes)
        padded = local.new_zeros((largest, *local.shape[1:]))
        padded[: local.shape[0]] = local
        comm = self._to_comm_device(padded.contiguous())
        parts = [torch.empty_like(comm) for _ in range(self.world_size)]
        dist.all_gather(parts, comm)
        return [part[:n].to(local.device) for part, n in zip(parts, sizes)]


SINGLE_PROCESS = Distributed()


def from_environment() -> Distributed:
    """The place ``torchrun`` gives this process (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), or the
    single process when it did not start it. Does not initialise the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE_PROCESS
    try:
        return Distributed(rank=int(os.environ["RANK"]), world_size=world,
                           local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    except KeyError as exc:
        raise ConfigError(f"WORLD_SIZE is {world} but {exc.args[0]} is not set: start several processes "
                          f"with torchrun, which sets RANK, LOCAL_RANK and WORLD_SIZE") from exc


def init_distributed(place: Distributed, device: torch.device, init_method: str | None = None,
                     timeout_minutes: float = 30.0) -> Distributed:
    """Join the process group of ``place`` (nccl for a CUDA ``device``, else gloo); ``init_method``
    defaults to torchrun's environment (MASTER_ADDR / MASTER_PORT). A no-op for one process or when
    the group exists."""
    if not place.enabled or dist.is_initialized():
        return place
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=init_method or "env://", rank=place.rank,
                            world_size=place.world_size, timeout=timedelta(minutes=timeout_minutes))
    return place
