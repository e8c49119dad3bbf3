"""The frozen ImageNet classifier behind ChromaGAN's class-distribution loss, and its converters.

ChromaGAN's generator loss has a term 0.003 x KL(teacher softmax || class-head softmax), where
the teacher is VGG16 with its classifier (configuration D: 13 convs, 5 max pools, fc6 4096,
fc7 4096, fc8 1000 logits; 138,357,544 params) applied to the same grey input as the generator.
The official code feeds it that input unpreprocessed: L / 100 on three channels, in [0, 1], with
no mean subtraction and no channel swap, although its Keras weights were trained on BGR 0-255
mean-subtracted images. `VGG16Classifier(...)(rgb, preprocess="none")` does the same;
`"torchvision"` and `"caffe"` give the input each set of weights was trained on.

The weights come from a file the user has, through a converter; nothing is downloaded:

- `convert_torchvision_vgg16`: torchvision's `vgg16-*.pth` (or a .safetensors of that state
  dict). Conv weights OIHW -> HWIO, Linear (out, in) -> (in, out); fc6's inputs are reordered
  from torch's (C, H, W) flattening to NHWC's (H, W, C).
- `convert_keras_vgg16`: Keras' `vgg16_weights_tf_dim_ordering_tf_kernels.h5` (weights alone,
  layer groups at the top level) or a Keras `Model.save` file of VGG16 (under `model_weights`).
  Kernels are HWIO, dense (in, out) and Flatten is (H, W, C), so values are copied unchanged.
- `convert_teacher`: either, by the file's suffix.

Each returns `{"params": ...}` for `VGG16Classifier` (conv names those of `aiaic_jax.models.vgg`,
`conv1_1` .. `conv5_3`, then `fc6`, `fc7`, `fc8`), and raises CheckpointMismatch listing every
missing, unexpected or mis-shaped weight.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

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
    save_variables,
)
from aiaic_jax.models.backbones.chromagan.convert import attribute_names, open_hdf5
from aiaic_jax.models.vgg import CONV_NAMES, IMAGENET_MEAN, IMAGENET_STD

# VGG16's conv widths, conv1_1 .. conv5_3.
VGG16_CONV_WIDTHS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
FC_NAMES = ("fc6", "fc7", "fc8")
# The classifier's fc6 sees a 7x7 grid: 224 / 2**5, the size both sets of weights were made at.
POOL5_SIZE = 7
TEACHER_INPUT_SIZE = 224
# Keras' "caffe" preprocessing subtracts these from BGR values in [0, 255].
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
PREPROCESS_MODES = ("none", "torchvision", "caffe")
# The convs followed by a 2x2 max pool (pool1 .. pool5).
_LAST_OF_BLOCK = ("conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3")


def preprocess_for_vgg16(rgb: jax.Array, mode: str = "none") -> jax.Array:
    """rgb: [B, H, W, 3] in [0, 1], channels R, G, B. Returns the classifier's input.

    "none": rgb unchanged; what the official ChromaGAN feeds its teacher (a grey image, L / 100
        on three channels), so for grey input the channel order does not matter.
    "torchvision": (rgb - IMAGENET_MEAN) / IMAGENET_STD per channel, RGB order; what
        torchvision's weights expect.
    "caffe": channels reversed to B, G, R, scaled by 255, minus CAFFE_BGR_MEAN
        (103.939, 116.779, 123.68) per BGR channel; what Keras' weights expect.
    """
    if mode == "none":
        return rgb
    if mode == "torchvision":
        mean = jnp.asarray(IMAGENET_MEAN, rgb.dtype)
        std = jnp.asarray(IMAGENET_STD, rgb.dtype)
        return (rgb - mean) / std
    if mode == "caffe":
        return rgb[..., ::-1] * 255.0 - jnp.asarray(CAFFE_BGR_MEAN, rgb.dtype)
    raise ValueError(f"unknown preprocess mode {mode!r}; choose from {PREPROCESS_MODES}")


class VGG16Classifier(nn.Module):
    """VGG16 (configuration D) with its classifier: rgb [B, H, W, 3] -> logits [B, num_classes].

    Thirteen 3x3 convs (padding 1) with ReLU, a 2x2 max pool after each block, flatten in NHWC
    (h, w, c) order, fc6 and fc7 with ReLU, fc8 logits (apply softmax for class probabilities).
    No dropout: the teacher is frozen and only run for inference.

    The input must be 224x224, or any size that pools to 7x7 at pool5 (224 .. 255): torchvision
    average-pools pool5 to 7x7 (the identity at 224) and Keras fixes the input at 224, so other
    sizes have no agreed meaning and raise ValueError.

    The defaults are VGG16 exactly; narrower `conv_widths`, `fc_units` and `num_classes` exist
    for small tests. Submodules: `conv1_1` .. `conv5_3` (as in `aiaic_jax.models.vgg`, so that
    `pretrained_vgg16_params()` fits the convs), `fc6`, `fc7`, `fc8`.
    """

    conv_widths: Sequence[int] = VGG16_CONV_WIDTHS  # one per conv, conv1_1 .. conv5_3
    fc_units: Sequence[int] = (4096, 4096)  # fc6, fc7
    num_classes: int = 1000  # fc8

    @nn.compact
    def __call__(self, rgb: jax.Array, preprocess: str = "none") -> jax.Array:
        """rgb: [B, H, W, 3] in [0, 1]; preprocess: see `preprocess_for_vgg16`.

        Returns logits [B, num_classes].
        """
        if len(self.conv_widths) != len(CONV_NAMES) or len(self.fc_units) != 2:
            raise ValueError(
                f"VGG16 has {len(CONV_NAMES)} convs and two hidden dense layers; got "
                f"conv_widths {tuple(self.conv_widths)} and fc_units {tuple(self.fc_units)}"
            )
        height, width = rgb.shape[1:3]
        if (height // 32, width // 32) != (POOL5_SIZE, POOL5_SIZE):
            raise ValueError(
                f"the VGG16 teacher needs a {TEACHER_INPUT_SIZE}x{TEACHER_INPUT_SIZE} input (any "
                f"size giving {POOL5_SIZE}x{POOL5_SIZE} at pool5); got {height}x{width}"
            )
        x = preprocess_for_vgg16(rgb, preprocess)
        for name, features in zip(CONV_NAMES, self.conv_widths, strict=True):
            x = nn.relu(nn.Conv(features, (3, 3), padding=1, name=name)(x))
            if name in _LAST_OF_BLOCK:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape(x.shape[0], -1)  # [B, 7 * 7 * C] in (h, w, c) order
        for name, units in zip(FC_NAMES[:2], self.fc_units, strict=True):
            x = nn.relu(nn.Dense(units, name=name)(x))
        return nn.Dense(self.num_classes, name="fc8")(x)


def teacher_template(model: VGG16Classifier | None = None) -> Tree:
    """Shapes of the teacher's variables at 224x224 ({"params": ...}; no memory, no compute)."""
    model = model if model is not None else VGG16Classifier()
    rgb = jax.ShapeDtypeStruct((1, TEACHER_INPUT_SIZE, TEACHER_INPUT_SIZE, 3), jnp.float32)
    return jax.eval_shape(model.init, jax.random.key(0), rgb)


# torchvision's `features` Sequential: conv, ReLU, ..., with a MaxPool after each block, so the
# convs sit at these indices; `classifier` is Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear.
_TORCH_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
_TORCH_LINEAR_INDICES = (0, 3, 6)


def _conv_kernel(weight: np.ndarray) -> np.ndarray:
    return np.transpose(weight, (2, 3, 1, 0))  # OIHW -> HWIO


def _dense_kernel(weight: np.ndarray) -> np.ndarray:
    return np.transpose(weight)  # (out, in) -> (in, out)


def _fc6_kernel(weight: np.ndarray) -> np.ndarray:
    """torch flattens pool5 as (C, H, W), Flax NHWC as (H, W, C): reorder fc6's inputs."""
    out_features, in_features = weight.shape
    cells = POOL5_SIZE * POOL5_SIZE
    if in_features % cells:
        return _dense_kernel(weight)  # its shape is then reported as not fitting
    channels = in_features // cells
    grid = weight.reshape(out_features, channels, POOL5_SIZE, POOL5_SIZE)
    return np.transpose(grid, (2, 3, 1, 0)).reshape(in_features, out_features)


def _same(value: np.ndarray) -> np.ndarray:
    return value


def torchvision_key_map() -> dict[TargetPath, tuple[str, Transform]]:
    """Flax path -> (torchvision state-dict key, transform), for every teacher leaf."""
    mapping: dict[TargetPath, tuple[str, Transform]] = {}
    for name, index in zip(CONV_NAMES, _TORCH_CONV_INDICES, strict=True):
        mapping[("params", name, "kernel")] = (f"features.{index}.weight", _conv_kernel)
        mapping[("params", name, "bias")] = (f"features.{index}.bias", _same)
    for name, index in zip(FC_NAMES, _TORCH_LINEAR_INDICES, strict=True):
        kernel = _fc6_kernel if name == "fc6" else _dense_kernel
        mapping[("params", name, "kernel")] = (f"classifier.{index}.weight", kernel)
        mapping[("params", name, "bias")] = (f"classifier.{index}.bias", _same)
    return mapping


def convert_torchvision_state_dict(
    state: StateDict, model: VGG16Classifier | None = None, *, source: str = "state dict"
) -> Tree:
    """A torchvision VGG16 state dict -> {"params": ...} of `model` (default: VGG16)."""
    if any(key.endswith("running_mean") for key in state):
        raise CheckpointMismatch(
            f"{source}: has BatchNorm statistics; it is VGG16-BN (vgg16_bn), not VGG16"
        )
    return assign(state, torchvision_key_map(), teacher_template(model), source=source)


def convert_torchvision_vgg16(
    path: str | os.PathLike, model: VGG16Classifier | None = None
) -> Tree:
    """Reads torchvision's `vgg16-*.pth` (or a .safetensors of it) -> {"params": ...}.

    model: the classifier the weights are for (its widths give the expected shapes); VGG16 by
    default. Raises CheckpointMismatch listing every missing, unexpected or mis-shaped key.
    """
    return convert_torchvision_state_dict(read_state_dict(path), model, source=str(path))


# Keras' VGG16 layer names -> the teacher's.
KERAS_LAYER_NAMES = {
    **{"block{}_conv{}".format(*name.removeprefix("conv").split("_")): name for name in CONV_NAMES},
    "fc1": "fc6",
    "fc2": "fc7",
    "predictions": "fc8",
}
# A weight's name without its layer, index and ":0" -> its role. Keras 2 names them
# "<layer>/kernel:0"; the Keras 1 files name them "<layer>_W_1:0" and "<layer>_b_1:0".
_KERAS_ROLES = {"kernel": "kernel", "W": "kernel", "bias": "bias", "b": "bias"}


def _keras_role(layer: str, weight: str, position: int) -> str:
    """ "kernel" or "bias" from a weight name; by position (kernel first), as Keras loads them,
    where the name says neither."""
    base = weight.split("/")[-1].split(":")[0]
    if base.startswith(f"{layer}_"):
        base = base[len(layer) + 1 :]
    base = re.sub(r"_\d+$", "", base)
    return _KERAS_ROLES.get(base, ("kernel", "bias")[position] if position < 2 else base)


def read_keras_weights(path: str | os.PathLike) -> StateDict:
    """Every weight of a Keras HDF5 weights file, as {"<layer>/<kernel|bias>": array}.

    Reads the layout of `Model.save_weights` (layer groups at the top level, as Keras'
    application weight files have them) and of `Model.save` (the same under `model_weights`):
    the root (or `model_weights`) lists its layers in the attribute `layer_names`, each layer
    group its weights in `weight_names`. Layers without weights (input, pools, flatten) add
    nothing.
    """
    path = Path(path)
    with open_hdf5(path) as file:
        root = file["model_weights"] if "model_weights" in file else file
        if "layer_names" not in root.attrs:
            raise CheckpointMismatch(
                f"{path}: no layer_names attribute at the root or under model_weights; not a "
                "Keras HDF5 weights file (vgg16_weights_tf_dim_ordering_tf_kernels.h5)"
            )
        state: StateDict = {}
        problems: list[str] = []
        for layer in attribute_names(root.attrs, "layer_names"):
            if layer not in root:
                problems.append(f"layer {layer} is listed but has no group")
                continue
            group = root[layer]
            for position, weight in enumerate(attribute_names(group.attrs, "weight_names")):
                if weight not in group:
                    problems.append(f"weight {weight} of {layer} is listed but not stored")
                    continue
                role = _keras_role(layer, weight, position)
                state[f"{layer}/{role}"] = np.asarray(group[weight])
    if problems:
        raise CheckpointMismatch(f"{path}: " + "; ".join(problems))
    return state


def keras_key_map() -> dict[TargetPath, tuple[str, Transform]]:
    """Flax path -> (Keras "<layer>/<kernel|bias>", transform), for every teacher leaf."""
    return {
        ("params", ours, leaf): (f"{keras}/{leaf}", _same)
        for keras, ours in KERAS_LAYER_NAMES.items()
        for leaf in ("kernel", "bias")
    }


def convert_keras_vgg16(path: str | os.PathLike, model: VGG16Classifier | None = None) -> Tree:
    """Reads Keras' `vgg16_weights_tf_dim_ordering_tf_kernels.h5` -> {"params": ...}.

    model: the classifier the weights are for; VGG16 by default. Raises CheckpointMismatch
    listing every missing, unexpected or mis-shaped weight. Files saved with Theano's kernel
    layout (`*_th_dim_ordering_*`) do not fit (their kernels are flipped and transposed).
    """
    state = read_keras_weights(path)
    return assign(state, keras_key_map(), teacher_template(model), source=str(path))


_TORCH_SUFFIXES = (".pth", ".pt", ".pth.tar", ".safetensors")
_KERAS_SUFFIXES = (".h5", ".hdf5")


def convert_teacher(path: str | os.PathLike, model: VGG16Classifier | None = None) -> Tree:
    """Converts a VGG16 classifier file by its suffix: .pth/.pt/.pth.tar/.safetensors as
    torchvision's, .h5/.hdf5 as Keras'. Returns {"params": ...} for `VGG16Classifier`."""
    name = Path(path).name.lower()
    if name.endswith(_TORCH_SUFFIXES):
        return convert_torchvision_vgg16(path, model)
    if name.endswith(_KERAS_SUFFIXES):
        return convert_keras_vgg16(path, model)
    raise ValueError(
        f"{path}: unknown teacher file type; expected torchvision weights "
        f"({', '.join(_TORCH_SUFFIXES)}) or Keras weights ({', '.join(_KERAS_SUFFIXES)})"
    )


def convert_teacher_to_checkpoint(
    path: str | os.PathLike, output: str | os.PathLike, model: VGG16Classifier | None = None
) -> Path:
    """Converts a teacher file (see `convert_teacher`) and writes {"params": ...} as an orbax
    checkpoint at `output`. Returns the directory written."""
    return save_variables(output, convert_teacher(path, model))
