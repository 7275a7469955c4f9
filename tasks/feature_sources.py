"""The tasks' :class:`methods.base.FeatureSource` kinds: where the features a method compares come from.

- :class:`EncoderFeatures`: the generator encoder's features at the task's feature layers (CUT's
  G_enc), computed when a method asks; a task may hand over the activations its translation pass
  already computed for an image (:class:`ForwardFeatureReuse` decides where they are the same).
- :class:`GivenFeatures`: features the task computed itself for every role (the compression task's
  teacher and student activations on the same input).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch

from methods.base import ROLES, FeatureSource, Role, TranslationPair, flip_back

from .base import samplewise

Encode = Callable[[torch.Tensor], list[torch.Tensor]]

_ALIGNED_TO_INPUT = ("output", "identity")  # the generator's outputs: flipped when its input was


class EncoderFeatures(FeatureSource):
    """``encode(image)`` for each role's image, the output's and the identity's flipped back when
    the generator's input was flipped. ``translated``: activations of the translation pass for
    some roles, equal to ``encode`` of their images (the task guarantees it), handed over instead of
    encoding again unless a method asks for ``fresh`` ones."""

    def __init__(self, encode: Encode, images: Mapping[Role, torch.Tensor | None], flipped: bool = False,
                 translated: Mapping[Role, Sequence[torch.Tensor]] | None = None):
        self._encode = encode
        self._images = dict(images)
        self._flipped = flipped
        self._translated = dict(translated or {})

    def __call__(self, role: Role, *, fresh: bool = False) -> list[torch.Tensor]:
        if role not in ROLES:
            raise ValueError(f"no image role '{role}'; expected one of {', '.join(ROLES)}")
        if not fresh and role in self._translated:
            return list(self._translated[role])
        image = self._images.get(role)
        if image is None:
            raise ValueError(f"this step has no '{role}' image (a task translates the target domain "
                             "only for a method with uses_identity)")
        features = self._encode(image)
        return flip_back(features, self._flipped) if role in _ALIGNED_TO_INPUT else features

    def channels(self) -> list[int]:
        with torch.no_grad():
            return [f.shape[1] for f in self._encode(self._images["source"][:1])]


class GivenFeatures(FeatureSource):
    """Features the task computed itself, per role (``fresh`` changes nothing: they are what the
    task's own pass produced)."""

    def __init__(self, features: Mapping[Role, Sequence[torch.Tensor]]):
        self._features = dict(features)

    def __call__(self, role: Role, *, fresh: bool = False) -> list[torch.Tensor]:
        if role not in self._features:
            raise ValueError(f"the task computed no features of '{role}' at this step "
                             f"(it has {', '.join(self._features) or 'none'})")
        return list(self._features[role])

    def channels(self) -> list[int]:
        return [f.shape[1] for f in self._features["source"]]


@dataclass(frozen=True)
class ForwardFeatureReuse:
    """Whether a translation pass over a batch of this shape leaves at the feature layers the
    activations a fresh ``encode`` of each image would compute, bit for bit, so that a task may hand
    them to the method (one encoder pass less per compared image: docs/speed.md,
    docs/perf/official_cpu.md). Decided once, when the task is set up, on its first batch; a batch
    of another shape, or a flipped one, is encoded afresh."""

    batch_shape: tuple[int, ...] | None
    """The shape of the translated batch the decision holds for; None = never reuse."""
    why_not: str = ""

    def applies(self, batch: torch.Tensor, flipped: bool) -> bool:
        return not flipped and self.batch_shape is not None and tuple(batch.shape) == self.batch_shape


def decide_forward_feature_reuse(net: torch.nn.Module, layers: Sequence[int], batch: torch.Tensor,
                                 n: int) -> ForwardFeatureReuse:
    """For a generator ``net`` (``net(x, layers)`` -> (output, activations); ``net(x, layers,
    encode_only=True)`` -> activations) translating ``batch``: ``n`` source images, then the identity
    half if any. Needed: every image is treated on its own (``samplewise``: no batch statistics, no
    dropout), the generator says the activations survive the rest of its pass unchanged (no
    in-place overwrite), and, with an identity half, the backend computes each half of the batch as
    it computes that half alone: compared here, in training mode, as a step computes them (on CPU,
    small layers may round differently at batch 2 and batch 1). Draws no random numbers."""
    survive = getattr(net, "features_survive_forward", None)
    if survive is None or not survive(layers):
        return ForwardFeatureReuse(None, "the generator's later layers may overwrite the activations")
    if not samplewise(net):
        return ForwardFeatureReuse(None, "the generator mixes the images of a batch (batch statistics or dropout)")
    shape = tuple(batch.shape)
    if n == batch.shape[0]:  # no identity half: the translated batch is the encoded one
        return ForwardFeatureReuse(shape)
    whole = net(batch, layers, encode_only=True)
    halves = net(batch[:n], layers, encode_only=True), net(batch[n:], layers, encode_only=True)
    if all(torch.equal(w[:n], a) and torch.equal(w[n:], b) for w, a, b in zip(whole, *halves)):
        return ForwardFeatureReuse(shape)
    return ForwardFeatureReuse(None, "the backend computes a half of the batch differently from the whole")


def encoder_pair(encode: Encode, translated: Mapping[Role, Sequence[torch.Tensor]] | None = None,
                 **fields) -> TranslationPair:
    """A :class:`TranslationPair` of ``fields`` (its images and other fields) whose features are
    ``encode`` of its images (:class:`EncoderFeatures`, flipped back with ``output_flipped``;
    ``translated``: what the translation pass already computed). The tasks with a generator encoder
    build their pairs with it; it also tries a method outside a task (tests, notebooks)."""
    images = {role: fields.get(role) for role in ROLES}
    features = EncoderFeatures(encode, images, fields.get("output_flipped", False), translated)
    return TranslationPair(**fields, features=features)
