"""Colorization backbones by name.

A backbone is a linen Module called as `backbone(gray_l, guidance=None, *, train=False) -> ab`:
gray_l [B, H, W, 1] with L in [0, 100], ab [B, H, W, 2] in raw Lab units. It prepares its own
input from L, applies `DynamicSemanticGuidance` (submodule `dsg`) at the point it declares
when guidance is given, and declares that point: `guidance_channels` (int, channels of the
feature map there) and `guidance_point` (a short description).

    backbone = get_backbone("ddcolor_demo", num_queries=8)
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn

from aiaic_jax.models.backbones import ddcolor

_FACTORIES: dict[str, Callable[..., nn.Module]] = {
    "ddcolor_tiny": lambda **overrides: ddcolor.ddcolor("tiny", **overrides),
    "ddcolor_large": lambda **overrides: ddcolor.ddcolor("large", **overrides),
    "ddcolor_demo": lambda **overrides: ddcolor.ddcolor("demo", **overrides),
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
