"""Model size: multiply-accumulate operations (MACs) and parameter counts.

MACs are counted with ``torchprofile.profile_macs``, the counter GAN Compression uses
(mit-han-lab/gan-compression, ``models/test_model.py``: ``profile_macs(netG, (real_A[:1],))`` under
``torch.no_grad()`` at the test resolution), so the figures compare with its papers' tables: a
convolution counts ``C_out * C_in / groups * k_h * k_w`` per output pixel, a transposed convolution
``C_out * C_in * k_h * k_w`` per *output* pixel too (torchprofile's convention: stride**2 times the
multiplications actually done, and what the published figures contain), a linear layer
``in * out`` per row; affine-free instance norm, padding, activations and additions count zero.

Counting traces the model (``torch.jit``) with the example inputs, in eval mode (dropout off,
batch-norm running statistics not updated); every submodule's own train/eval flag is restored
afterwards.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

__all__ = ["count_macs", "count_parameters"]

# Operators torchprofile 0.1 has no handler for although they do no multiply-accumulate work: it
# warns "No handlers found" for each. Silenced here; any other unhandled operator still warns.
_ZERO_MAC_OPERATORS = ("aten::pad", "aten::reflection_pad2d", "aten::replication_pad2d")


def count_macs(model: nn.Module, *example_inputs: torch.Tensor) -> int:
    """MACs of one forward of ``model`` on ``example_inputs`` (torchprofile's count; give a batch
    of one image for the per-image figure the papers report)."""
    from torchprofile import profile_macs  # imported here: tracing support is only needed to count

    if not example_inputs:
        raise ValueError("count_macs needs at least one example input tensor, e.g. torch.zeros(1, 3, 256, 256)")
    for i, x in enumerate(example_inputs):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"count_macs: example input {i} is a {type(x).__name__}; expected a torch.Tensor "
                            "(bind non-tensor arguments such as a configuration in a wrapper module)")
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            for op in _ZERO_MAC_OPERATORS:
                warnings.filterwarnings("ignore", message=f'No handlers found: "{op}"')
            macs = profile_macs(model, example_inputs)
    finally:
        for m, training in modes.items():
            m.training = training
    return int(macs)


def count_parameters(model: nn.Module) -> int:
    """Number of parameter elements (trainable or not; buffers excluded), as the official
    ``print_networks`` / ``profile`` count them. Shared parameters are counted once."""
    return sum(p.numel() for p in model.parameters())
