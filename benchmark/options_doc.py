"""What each option of a plugin means: the fields of its ``Params`` / ``Options`` dataclass with
their type, default and documentation.

The documentation of a field is the string literal written right under it (an attribute docstring,
the convention of every options class here); Python keeps no such string at run time, so it is read
from the class's source with :mod:`ast`. A subclass inherits the documentation of the fields it
redeclares without one (CUT's ``lambda_NCE`` default differs from its base's, the meaning does not).
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import typing
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .core.settings import NO_DEFAULT, _type_name, field_defaults


@dataclass(frozen=True)
class OptionDoc:
    name: str
    type: str
    default: Any
    """The default as a config would write it (:data:`NO_DEFAULT` when the option is required)."""
    doc: str
    """'' when no class in the options' hierarchy documents the field."""
    fields: tuple["OptionDoc", ...] = ()
    """The sub-options of an option that is itself a group of options (a nested dataclass)."""


@lru_cache(maxsize=None)
def _class_field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings written in ``cls``'s own body (not its bases')."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # defined in a REPL or built dynamically: no source to read
        return {}
    tree = ast.parse(source)
    body = next((n.body for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls.__name__), [])
    docs = {}
    for stmt, following in zip(body, body[1:]):
        if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)):
            docs[stmt.target.id] = " ".join(inspect.cleandoc(following.value.value).split())
    return docs


def field_doc(cls: type, name: str) -> str:
    """The documentation of field ``name`` of dataclass ``cls``: the nearest class in its MRO that
    documents it."""
    for klass in cls.__mro__:
        doc = _class_field_docs(klass).get(name)
        if doc:
            return doc
    return ""


def options_of(cls: type) -> list[OptionDoc]:
    """Every init field of dataclass ``cls`` with its type name, default and documentation."""
    hints = typing.get_type_hints(cls)
    defaults = field_defaults(cls)
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints.get(f.name, Any)
        nested = tuple(options_of(tp)) if dataclasses.is_dataclass(tp) else ()
        out.append(OptionDoc(f.name, _type_name(tp), defaults.get(f.name, NO_DEFAULT), field_doc(cls, f.name), nested))
    return out


def format_default(value: Any) -> str:
    """A default as a YAML reader would write it."""
    if value is NO_DEFAULT:
        return "(required)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return repr(value) if value == "" else value
    if isinstance(value, dict) and len(str(value)) > 60:
        return "{...}"
    return str(value)


COMMON_MEANINGS = {
    "lambda_NCE": "Weight of the PatchNCE loss (0 = no contrastive term).",
    "nce_idt": "Also compare the identity pair (y, G(y)) (CUT's NCE_Y term).",
    "lambda_HDCE": "Weight of Hneg-SRC's hardness-weighted decoupled contrastive loss L_hDCE.",
    "lambda_SRC": "Weight of Hneg-SRC's semantic relation consistency loss L_SRC.",
    "use_curriculum": "Lower the hardness temperature gamma linearly from HDCE_gamma to HDCE_gamma_min over training.",
    "HDCE_gamma": "Temperature gamma of the hard-negative weights at the start of training.",
    "HDCE_gamma_min": "Temperature gamma at the end of training (with use_curriculum).",
    "ngf": "Width (channels of the first layer) of the generator.",
    "ndf": "Width (channels of the first layer) of the discriminator.",
    "n_blocks": "Residual blocks of the ResNet generator (9: CUT's 'resnet_9blocks').",
    "n_layers_D": "Strided convolution layers of the PatchGAN discriminator (3: CUT's 'basic').",
    "normG": "Normalisation layers of the generator.",
    "normD": "Normalisation layers of the discriminator.",
    "norm": "Normalisation layers of the networks.",
    "antialias": "Anti-aliased (blurred) downsampling, as CUT's default networks.",
    "antialias_up": "Anti-aliased upsampling in the generator, as CUT's default networks.",
    "init_type": "Weight initialisation of the networks.",
    "init_gain": "Scale of the weight initialisation.",
    "gan_mode": "Adversarial loss.",
    "lambda_GAN": "Weight of the adversarial loss in the generator objective.",
    "lambda_gan": "Weight of the adversarial loss in the generator objective.",
    "lr": "Learning rate of the Adam optimisers.",
    "f_lr": "Learning rate of the mapping network.",
    "beta1": "Adam beta1.",
    "beta2": "Adam beta2.",
    "weight_decay": "Adam weight decay.",
    "batch_size": "Images per training step.",
    "pool_size": "Image pool of past generator outputs shown to the discriminator (0 = none).",
    "flip": "Random horizontal flips of the training images.",
    "root": "The dataset folder (see docs/datasets.md for its layout; `python -m benchmark data get` fetches public ones).",
    "size": "Image side in pixels (test images are resized to it, training crops have it).",
    "load_size": "Training images are resized to this side before the random crop of `size`.",
    "max_images": "Keep only the first N images (by name) of each folder; 0 keeps all.",
    "n_train": "Images per side (or domain) in the train split.",
    "n_test": "Images per side in the test split.",
    "n_val": "Images per domain in the val split.",
    "seed": "Seed of the generator of the synthetic images.",
    "domains": "The domains used, by name (empty = all).",
    "ema_beta": "Decay of the exponential moving average of the networks (the EMA copies move by "
                "1 - ema_beta per step: about 1 / (1 - ema_beta) steps to forget their start).",
    "lambda_reg": "Weight of the R1 gradient penalty on real images.",
    "lambda_R1": "Weight of the R1 gradient penalty on real images.",
    "lambda_sty": "Weight of the style reconstruction loss.",
    "lambda_ds": "Weight of the diversity-sensitive loss.",
    "lambda_cyc": "Weight of the cycle (source) reconstruction loss.",
    "max_conv_dim": "Largest channel count of the networks.",
    "latent_dim": "Dimension of the random latent code fed to the mapping network.",
    "style_dim": "Dimension of the style code.",
    "randcrop_prob": "Probability of a random resized crop of a training image.",
    "num_outs_per_domain": "Outputs per source image and target domain in the latent-guided evaluation.",
    "lpips": "Score LPIPS (needs the ImageNet AlexNet and LPIPS weights, see `python -m benchmark weights`).",
    "structure_score": "Score the structure kept from the source (edge-map correlation).",
    "grid_styles": "Styles per source image shown in the report's grid.",
    "eval_nets": "Networks evaluated: the EMA copies or the trained ('raw') ones.",
    "crop_size": "Side of the random crops the training steps draw from the image.",
    "random_scale_max": "Largest random rescaling of the image before cropping.",
    "width": "Image width in pixels.",
    "height": "Image height in pixels.",
    "vgg_weights": "The frozen VGG16's weights: 'imagenet' (needs the file, see `python -m benchmark weights`) or 'untrained' (random).",
}
"""Meanings of option names that many options classes share, for the fields whose class documents
none (an attribute docstring under the field always wins). The options classes belong to the method
and task modules; this table fills the gaps without editing them."""


def meaning(option: OptionDoc) -> str:
    """The option's own documentation, else the shared meaning of its name, else ''."""
    return option.doc or COMMON_MEANINGS.get(option.name, "")
