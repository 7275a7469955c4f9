"""Options that make a training step faster at the cost of rounding-level (or bf16-level) changes in
its numbers: ``torch.compile`` (with or without CUDA graphs), bf16 autocast and the channels_last
memory layout. All off by default, so that a run computes what the official code computes.

A GPU step at the papers' settings (batch 1) is bound by kernel launches (about 2,170 per CUT step,
docs/perf/README.md): ``compile: reduce-overhead`` records the networks' passes as CUDA graphs and
replays them, ``compile: default`` fuses their element-wise kernels (instance norm, ReLU, padding).
``autocast: bf16`` runs the generator's and discriminator's forward passes under bf16 autocast
(convolutions in bfloat16; no loss scaling: bf16 has fp32's range) and hands their outputs on in
fp32, so that the methods' heads, similarities and losses compute in fp32 (Hneg-SRC's SRC term is
a difference of similarity matrices that bf16 would cancel away); ``channels_last`` stores images,
activations and convolution weights NHWC, the layout tensor cores read without a transpose.

Tolerances, checked by tests/test_acceleration.py on CPU against fp32 eager from the same seed:
channels_last and compile change one step's losses at rounding level (at most 1e-4 relative) and its
gradients by at most 1e-2 (relative L2); bf16 autocast keeps the losses within 1e-2 and the
gradients within 1e-1. Over many steps trajectories part, as between two machines. The options
are task options, so part of a run's config: a run folder made without them is not reused by a run
with them (the runner names the changed option), and the report's protocol line names them
(``acceleration``). Measured speed: docs/perf/official_gpu.md.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterable, Literal

import torch

COMPILE_MODES = {
    "default": {},
    "reduce-overhead": {"triton.cudagraphs": True},
}
"""``compile`` -> the inductor options of torch.compile's mode of that name. Inductor's own choice
of memory layout is turned off (``layout_optimization``): the ``channels_last`` option decides it,
and inductor's re-layout of replication padding's backward breaks (torch 2.14 on CPU: a stride
mismatch in ``replication_pad2d_backward``)."""


RECOMPILES = 64
"""Compiled variants allowed per network forward. A CUT step calls the generator in several ways
(the translated batch with its features, the encoder alone at batch 1 and 2, with and without
gradients, in training and evaluation mode): each is compiled once, for its static shapes, and
torch's default limit of 8 would send the later ones back to eager."""


def allow_recompiles(limit: int) -> None:
    """Raise dynamo's per-function limit of compiled variants to at least ``limit``."""
    from torch import _dynamo
    config = _dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, name, max(getattr(config, name), limit))


@dataclass
class AccelerationOptions:
    """Task options (a dataclass mixin) of the acceleration a task offers for its training step."""
    compile: Literal["off", "default", "reduce-overhead"] = "off"
    """torch.compile the generator and discriminator: 'default' (fused kernels) or 'reduce-overhead'
    (fused kernels replayed as CUDA graphs: the launch-bound batch-1 GPU step); 'off' = eager."""
    compile_backend: str = "inductor"
    """torch.compile's backend ('inductor'; 'aot_eager' traces without generating code: for
    debugging, and the CPU tests)."""
    autocast: Literal["off", "bf16"] = "off"
    """Run the generator's and discriminator's forward passes under bf16 autocast, their outputs
    handed on in fp32 (weights, optimiser, the methods' heads and losses stay fp32)."""
    channels_last: bool = False
    """Keep images, activations and 4-d weights in the channels_last (NHWC) memory layout."""

    def acceleration_refusal(self) -> str | None:
        if self.compile != "off" and not self.compile_backend:
            return "compile_backend must name a torch.compile backend, e.g. 'inductor'"
        return None


class Acceleration:
    """What :class:`AccelerationOptions` do to a task's networks, inputs and training step."""

    def __init__(self, options: AccelerationOptions, device: torch.device):
        self.options = options
        self.device = device

    @property
    def uses_cuda_graphs(self) -> bool:
        return self.options.compile == "reduce-overhead" and self.options.compile_backend == "inductor"

    def prepare(self, networks: Iterable[torch.nn.Module], layout_only: Iterable[torch.nn.Module] = ()) -> None:
        """Apply the options to the task's ``networks`` in place: channels_last, the bf16 forward
        (outputs back in fp32, so that the methods' heads and losses compute in fp32) and
        compilation (``nn.Module.compile``: state dicts and parameters stay the eager module's);
        ``layout_only`` modules (e.g. a method's frozen backbone) get channels_last alone."""
        o = self.options
        networks = list(networks)
        if o.channels_last:
            for module in [*networks, *layout_only]:
                module.to(memory_format=torch.channels_last)
        if o.autocast == "bf16":
            for module in networks:
                module.forward = _bf16_forward(module.forward, self.device.type)
        if o.compile != "off":
            # Each run compiles afresh: variants compiled for an earlier run's networks (the runner
            # may train several runs in one process) would count against the limit below.
            from torch import _dynamo  # seconds to import: only when compiling
            _dynamo.reset()
            allow_recompiles(RECOMPILES)
            options = None
            if o.compile_backend == "inductor":
                options = {**COMPILE_MODES[o.compile], "layout_optimization": False}
            for module in networks:
                module.compile(backend=o.compile_backend, options=options, dynamic=False)

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        """An input batch in the layout the networks expect."""
        if self.options.channels_last and images.dim() == 4:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    @contextlib.contextmanager
    def step(self):
        """The context of one training step: a new step of the CUDA-graph trees when they are on
        (the graphs' outputs of the previous step may then be overwritten)."""
        if self.uses_cuda_graphs and self.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()
        yield

    def describe(self) -> str:
        """A short label for reports and perf tables ('' when everything is off)."""
        o = self.options
        parts = []
        if o.compile != "off":
            parts.append(f"compile {o.compile}" + ("" if o.compile_backend == "inductor" else f" ({o.compile_backend})"))
        if o.autocast != "off":
            parts.append(f"{o.autocast} autocast")
        if o.channels_last:
            parts.append("channels_last")
        return ", ".join(parts)


def _bf16_forward(forward, device_type: str):
    """``forward`` run under bf16 autocast, its tensor outputs (also inside lists and tuples)
    returned as fp32."""
    def bf16_forward(*args, **kwargs):
        with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
            out = forward(*args, **kwargs)
        return _to_float(out)
    return bf16_forward


def _to_float(out):
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, (list, tuple)):
        return type(out)(_to_float(o) for o in out)
    return out
