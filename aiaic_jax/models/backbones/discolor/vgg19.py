"""VGG19's convolutional features, the network of DisColor's perceptual loss, and its converter.

`VGG19Features` is torchvision's VGG19 (configuration "E") without its classifier: sixteen 3x3
convs (padding 1) with ReLU in five blocks of 2, 2, 4, 4, 4, each block followed by a 2x2 max
pool. It takes sRGB in [0, 1] and normalises with the ImageNet mean and std inside, as
`aiaic_jax.models.vgg.VGG16Features` does, and returns the activations asked for by name.

The ImageNet weights come from a file the user has, torchvision's `vgg19-*.pth` (or a
.safetensors of that state dict); nothing is downloaded:

    python -m aiaic_jax.convert vgg19 vgg19-dcbb9e9d.pth runs/init/vgg19

writes `{"params": {"conv1_1": {"kernel", "bias"}, ...}}` as an orbax checkpoint, which
DisColor's objective reads (`loss.perceptual_network`) with `load_vgg19`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from aiaic_jax.convert.common import (
    CheckpointMismatch,
    StateDict,
    TargetPath,
    Transform,
    Tree,
    assign,
    read_state_dict,
    restore_variables,
)
from aiaic_jax.models.vgg import IMAGENET_MEAN, IMAGENET_STD

# Convs per block, torchvision's configuration "E".
_CONVS_PER_BLOCK = (2, 2, 4, 4, 4)
VGG19_BLOCK_WIDTHS = (64, 128, 256, 512, 512)


def _layer_names() -> tuple[str, ...]:
    names: list[str] = []
    for block, convs in enumerate(_CONVS_PER_BLOCK, start=1):
        for i in range(1, convs + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
        names.append(f"pool{block}")
    return tuple(names)


# Every activation the module can return, in network order.
LAYER_NAMES = _layer_names()
CONV_NAMES = tuple(name for name in LAYER_NAMES if name.startswith("conv"))
# torchvision's `features` Sequential holds conv, ReLU, ..., MaxPool in LAYER_NAMES' order, one
# entry each, so a conv's index there is its position in that order: 0, 2, 5, 7, 10, ..., 34.
TORCH_CONV_INDICES = tuple(LAYER_NAMES.index(name) for name in CONV_NAMES)


class VGG19Features(nn.Module):
    """VGG19's 16 convs with ReLU and five 2x2 max pools; no classifier.

    `__call__(rgb, layers)` returns `{name: activation}` for the requested names from
    `LAYER_NAMES` (`conv1_1`, `relu1_1`, ..., `relu5_4`, `pool1` .. `pool5`) and stops after
    the deepest one. Init with the default (all layers) so that every conv has parameters.

    block_widths: the output channels of the convs of each block; VGG19's by default,
    narrower ones for small tests. Submodules `conv1_1` .. `conv5_4`.
    """

    block_widths: Sequence[int] = VGG19_BLOCK_WIDTHS

    @nn.compact
    def __call__(self, rgb: jax.Array, layers: Sequence[str] = LAYER_NAMES) -> dict[str, jax.Array]:
        """rgb: [B, H, W, 3] sRGB in [0, 1]. Returns {name: [B, h, w, C]} for `layers`."""
        if len(self.block_widths) != len(_CONVS_PER_BLOCK):
            raise ValueError(f"VGG19 has 5 blocks; got block_widths {tuple(self.block_widths)}")
        unknown = [name for name in layers if name not in LAYER_NAMES]
        if unknown or not layers:
            raise ValueError(f"unknown VGG19 layers {unknown}; choose from {LAYER_NAMES}")
        wanted = set(layers)
        last = max(LAYER_NAMES.index(name) for name in layers)
        mean = jnp.asarray(IMAGENET_MEAN, rgb.dtype)
        std = jnp.asarray(IMAGENET_STD, rgb.dtype)
        x = (rgb - mean) / std
        out: dict[str, jax.Array] = {}

        def keep(name: str, value: jax.Array) -> bool:
            if name in wanted:
                out[name] = value
            return LAYER_NAMES.index(name) >= last

        for block, (convs, width) in enumerate(
            zip(_CONVS_PER_BLOCK, self.block_widths, strict=True), start=1
        ):
            for i in range(1, convs + 1):
                x = nn.Conv(int(width), (3, 3), padding=1, name=f"conv{block}_{i}")(x)
                if keep(f"conv{block}_{i}", x):
                    return out
                x = nn.relu(x)
                if keep(f"relu{block}_{i}", x):
                    return out
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
            if keep(f"pool{block}", x):
                return out
        return out


def vgg19_template(model: VGG19Features | None = None) -> Tree:
    """Shapes of the variables of `model` (default: VGG19), {"params": ...}; no compute."""
    model = model if model is not None else VGG19Features()
    rgb = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    return jax.eval_shape(model.init, jax.random.key(0), rgb)


def _conv_kernel(weight: np.ndarray) -> np.ndarray:
    return np.transpose(weight, (2, 3, 1, 0))  # OIHW -> HWIO


def _same(value: np.ndarray) -> np.ndarray:
    return value


def torchvision_key_map() -> dict[TargetPath, tuple[str, Transform]]:
    """Flax path -> (torchvision state-dict key, transform), for every conv leaf."""
    mapping: dict[TargetPath, tuple[str, Transform]] = {}
    for name, index in zip(CONV_NAMES, TORCH_CONV_INDICES, strict=True):
        mapping[("params", name, "kernel")] = (f"features.{index}.weight", _conv_kernel)
        mapping[("params", name, "bias")] = (f"features.{index}.bias", _same)
    return mapping


def convert_vgg19_state_dict(
    state: StateDict, model: VGG19Features | None = None, *, source: str = "state dict"
) -> Tree:
    """A torchvision VGG19 state dict -> {"params": ...} of `model` (default: VGG19).

    The classifier's weights (`classifier.*`) are not used. Raises CheckpointMismatch listing
    every missing, unexpected or mis-shaped key.
    """
    if any(key.endswith("running_mean") for key in state):
        raise CheckpointMismatch(
            f"{source}: has BatchNorm statistics; it is VGG19-BN (vgg19_bn), not VGG19"
        )
    return assign(
        state,
        torchvision_key_map(),
        vgg19_template(model),
        ignore=lambda key: key.startswith("classifier."),
        source=source,
    )


def convert_vgg19(
    path: str | os.PathLike, size: str | None = None, *, model: VGG19Features | None = None
) -> Tree:
    """Reads torchvision's `vgg19-*.pth` (or a .safetensors of it) -> {"params": ...}.

    The converter of `python -m aiaic_jax.convert vgg19 FILE OUT`. size: VGG19 has one size,
    so only None is accepted. model: the network the weights are for (its widths give the
    expected shapes); VGG19 by default. PyTorch files are read with
    `torch.load(weights_only=True)`. Raises CheckpointMismatch naming the file and every
    missing, unexpected or mis-shaped key.
    """
    if size is not None:
        raise ValueError(f"VGG19 comes in one size; got size {size!r}")
    return convert_vgg19_state_dict(read_state_dict(path), model, source=str(path))


def vgg19_from_params(params: Mapping[str, Any], source: str = "params") -> VGG19Features:
    """The `VGG19Features` whose variables `params` ({"conv1_1": {"kernel", "bias"}, ...}) are.

    The widths are read from the kernels, so a narrow network converted for a test works as the
    real one does. Raises ValueError naming `source` when params are not a VGG19 feature stack
    (another set of layers, kernels that are not 3x3, channels that do not chain).
    """
    problems: list[str] = []
    names = set(params)
    if names != set(CONV_NAMES):
        missing = sorted(set(CONV_NAMES) - names)
        extra = sorted(names - set(CONV_NAMES))
        raise ValueError(
            f"{source}: not VGG19's convs (missing {missing}, unexpected {extra}); convert "
            "torchvision's vgg19-*.pth with `python -m aiaic_jax.convert vgg19 FILE OUT`"
        )
    channels = 3
    widths: dict[int, int] = {}
    for name in CONV_NAMES:
        kernel_shape = tuple(np.shape(params[name]["kernel"]))
        bias_shape = tuple(np.shape(params[name]["bias"]))
        if len(kernel_shape) != 4 or kernel_shape[:3] != (3, 3, channels):
            problems.append(f"{name}/kernel {kernel_shape} is not (3, 3, {channels}, C)")
            break
        if bias_shape != kernel_shape[-1:]:
            problems.append(f"{name}/bias {bias_shape} does not fit its kernel {kernel_shape}")
        channels = kernel_shape[-1]
        block = int(name[len("conv")])
        if widths.setdefault(block, channels) != channels:
            problems.append(f"{name} has {channels} channels, its block {widths[block]}")
    if problems:
        raise ValueError(f"{source}: not a VGG19 feature stack: " + "; ".join(problems))
    return VGG19Features(block_widths=tuple(widths[b] for b in sorted(widths)))


def load_vgg19(directory: str | os.PathLike) -> dict[str, Any]:
    """The params ({"conv1_1": ..., ...}) of a VGG19 converted by `python -m aiaic_jax.convert
    vgg19`, checked to be VGG19's convs (`vgg19_from_params`)."""
    directory = Path(directory)
    variables = restore_variables(directory)
    params = variables.get("params") if isinstance(variables, Mapping) else None
    if not isinstance(params, Mapping):
        raise ValueError(f"{directory}: no params; not a checkpoint written by the vgg19 converter")
    vgg19_from_params(params, source=str(directory))
    return dict(params)
