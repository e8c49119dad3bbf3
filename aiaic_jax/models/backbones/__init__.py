"""Colorization backbones: the registry.

A backbone is a linen Module called as `backbone(gray_l, guidance=None, *, train=False) -> ab`:
gray_l [B, H, W, 1] with L in [0, 100], ab [B, H, W, 2] in raw Lab units. It prepares its own
input from L, applies `DynamicSemanticGuidance` (submodule `dsg`) at the point it declares
when guidance is given, and declares that point: `guidance_channels` (int, channels of the
feature map there) and `guidance_point` (a short description).

Each backbone family lives in its own folder (model, discriminator, converter) and is known to
the rest of the project only through its entries here: a name per size, and the converters of
its official checkpoints.

    backbone = get_backbone("ddcolor_demo", num_queries=8)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flax.linen as nn

from aiaic_jax.models.backbones.ddcolor import model as ddcolor


@dataclasses.dataclass(frozen=True)
class Converter:
    """An official checkpoint format: `module:function` (path, size=None) -> variables,
    imported only when used so that one converter's dependencies do not burden the others."""

    module: str
    function: str
    sized: bool = False  # takes the expected size (`--size`) as its second argument
    description: str = ""


_FACTORIES: dict[str, Callable[..., nn.Module]] = {
    "ddcolor_tiny": lambda **overrides: ddcolor.ddcolor("tiny", **overrides),
    "ddcolor_large": lambda **overrides: ddcolor.ddcolor("large", **overrides),
    "ddcolor_demo": lambda **overrides: ddcolor.ddcolor("demo", **overrides),
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
}

BACKBONE_NAMES: tuple[str, ...] = tuple(_FACTORIES)


def get_backbone(name: str, **overrides) -> nn.Module:
    """The backbone registered as `name`, with its attributes changed by `overrides`."""
    if name not in _FACTORIES:
        raise ValueError(f"unknown backbone {name!r}; registered: {', '.join(BACKBONE_NAMES)}")
    try:
        return _FACTORIES[name](**overrides)
    except TypeError as e:
        raise TypeError(f"backbone {name!r}: bad override in {sorted(overrides)} ({e})") from e
