"""Colorization backbones: the registry.

A backbone is a linen Module called as
`backbone(gray_l, guidance=None, *, train=False, target_ab=None) -> (ab, outputs)`: gray_l
[B, H, W, 1] with L in [0, 100], ab [B, H, W, 2] in raw Lab units at the input's size, outputs a
dict of what its objective needs besides ab (ChromaGAN: "class_logits"; DisColor: its palette
and reference logits and the true bins of its tokens; DDColor: nothing). target_ab is the
ground truth, which the colour stages pass and a backbone may train on (DisColor's anchors);
the others ignore it. Randomness inside a backbone draws from the `dropout` and `anchors` rng
streams, which the colour step passes. A backbone may declare `frozen_modules`, names of its
submodules that never train (DisColor's pretrained SpixelNet); the stages freeze them.

A backbone prepares its own input from L, applies `DynamicSemanticGuidance` (submodule `dsg`)
at the point it declares when guidance is given, and declares that point: `guidance_channels`
(int, channels of the feature map there) and `guidance_point` (a short description).
`pretrained_params()` gives the parameters to lay over a fresh initialisation from what the
installed packages ship ({} if none).

Each backbone family lives in its own folder (model, objective, discriminator, converter) and
is known to the rest of the project only through its entries here: a name per size with its
module factory and objective, and the converters of its official checkpoints. The stages
compose the objective with what the paper adds; they never name a backbone.

    backbone = get_backbone("ddcolor_demo", num_queries=8)
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import flax.linen as nn

from aiaic_jax.models.backbones.chromagan import model as chromagan
from aiaic_jax.models.backbones.chromagan.objective import ChromaGANObjective
from aiaic_jax.models.backbones.ddcolor import model as ddcolor
from aiaic_jax.models.backbones.ddcolor.objective import DDColorObjective
from aiaic_jax.models.backbones.discolor import model as discolor
from aiaic_jax.models.backbones.discolor.objective import DisColorObjective


@dataclasses.dataclass(frozen=True)
class Converter:
    """An official checkpoint format: `module:function` (path, size=None) -> variables,
    imported only when used so that one converter's dependencies do not burden the others."""

    module: str
    function: str
    sized: bool = False  # takes the expected size (`--size`) as its second argument
    description: str = ""


@dataclasses.dataclass(frozen=True)
class Backbone:
    """A registered backbone: its module factory (**overrides -> module), the class of its
    training objective (`objective(config)`, see `ddcolor/objective.py` for the interface) and
    its working resolution (square): the official model's, or a demo size's. The configs set
    `data.image_size` to it; `python -m aiaic_jax.models` counts parameters at it."""

    make: Callable[..., nn.Module]
    objective: type
    resolution: int


_REGISTRY: dict[str, Backbone] = {
    "ddcolor_tiny": Backbone(functools.partial(ddcolor.ddcolor, "tiny"), DDColorObjective, 256),
    "ddcolor_large": Backbone(functools.partial(ddcolor.ddcolor, "large"), DDColorObjective, 256),
    "ddcolor_demo": Backbone(functools.partial(ddcolor.ddcolor, "demo"), DDColorObjective, 64),
    "chromagan": Backbone(functools.partial(chromagan.chromagan, "full"), ChromaGANObjective, 224),
    "chromagan_demo": Backbone(
        functools.partial(chromagan.chromagan, "demo"), ChromaGANObjective, 64
    ),
    "discolor": Backbone(functools.partial(discolor.discolor, "full"), DisColorObjective, 256),
    "discolor_demo": Backbone(functools.partial(discolor.discolor, "demo"), DisColorObjective, 64),
}

# `python -m aiaic_jax.convert <name> IN OUT`
CONVERTERS: dict[str, Converter] = {
    "ddcolor": Converter(
        "aiaic_jax.models.backbones.ddcolor.convert",
        "convert_ddcolor",
        sized=True,
        description="official DDColor .pth (tiny, large)",
    ),
    "convnext": Converter(
        "aiaic_jax.models.backbones.ddcolor.convert",
        "convert_convnext",
        sized=True,
        description="ImageNet ConvNeXt .pth as DDColor's encoder",
    ),
    "chromagan": Converter(
        "aiaic_jax.models.backbones.chromagan.convert",
        "convert",
        sized=True,
        description="official ChromaGAN Keras .h5 (full, demo)",
    ),
    "vgg16": Converter(
        "aiaic_jax.models.backbones.chromagan.teacher",
        "convert_teacher",
        description="VGG16 classifier (torchvision .pth, Keras .h5): ChromaGAN's class teacher",
    ),
    "discolor": Converter(
        "aiaic_jax.models.backbones.discolor.convert",
        "convert",
        sized=True,
        description="official DISCO .pth.tar (full; demo for tests)",
    ),
    "vgg19": Converter(
        "aiaic_jax.models.backbones.discolor.vgg19",
        "convert_vgg19",
        description="torchvision VGG19 .pth: DisColor's perceptual network",
    ),
}

BACKBONE_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def registered(name: str) -> Backbone:
    if name not in _REGISTRY:
        raise ValueError(f"unknown backbone {name!r}; registered: {', '.join(BACKBONE_NAMES)}")
    return _REGISTRY[name]


def objective_class(name: str) -> type:
    """The class of the training objective of the backbone registered as `name`."""
    return registered(name).objective


def get_backbone(name: str, **overrides) -> nn.Module:
    """The backbone registered as `name`, with its attributes changed by `overrides`."""
    make = registered(name).make
    try:
        return make(**overrides)
    except TypeError as e:
        raise TypeError(f"backbone {name!r}: bad override in {sorted(overrides)} ({e})") from e
