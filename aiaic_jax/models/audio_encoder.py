"""The audio encoder E_a (a ResNet-18 on the log spectrogram) and the A2V projection (Eq. 6).

`AudioResNet18` has the structure of the VGGSound audio network (hche11/VGGSound, checkpoint
`H.pth.tar`, ResNet-18 with average pooling): a torchvision ResNet-18 whose stem takes one
channel. The spectrogram `[B, F, T]` is read as a one-channel image with frequency as height
and time as width, as the official network reads `spec.unsqueeze(1)`. Module names follow the
official parameter names (`conv1`, `bn1`, `layer2_0/downsample_conv`, ...) so that
`aiaic_jax.convert.vggsound` maps one to one.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp

from aiaic_jax.models.guidance import l2_normalize

# PyTorch BatchNorm2d defaults: eps 1e-5, momentum 0.1 (Flax's momentum is 1 - PyTorch's).
_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5
# The official network initialises convs with He normal (fan out, ReLU gain).
_CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class BasicBlock(nn.Module):
    """Two 3x3 convs with BN and a residual connection; a 1x1 conv + BN on the shortcut when
    the block changes stride or width."""

    features: int
    stride: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        conv = partial(nn.Conv, use_bias=False, kernel_init=_CONV_INIT)
        norm = partial(
            nn.BatchNorm,
            use_running_average=not train,
            momentum=_BN_MOMENTUM,
            epsilon=_BN_EPSILON,
        )
        # Explicit symmetric padding: 'SAME' would pad strided convs differently from PyTorch.
        y = conv(self.features, (3, 3), strides=self.stride, padding=1, name="conv1")(x)
        y = nn.relu(norm(name="bn1")(y))
        y = conv(self.features, (3, 3), padding=1, name="conv2")(y)
        y = norm(name="bn2")(y)
        if self.stride != 1 or x.shape[-1] != self.features:
            x = conv(self.features, (1, 1), strides=self.stride, padding=0, name="downsample_conv")(
                x
            )
            x = norm(name="downsample_bn")(x)
        return nn.relu(y + x)


class AudioResNet18(nn.Module):
    """ResNet-18 on a log spectrogram -> one 8 * width feature per clip (512 by default).

    Stem: 7x7 stride-2 conv (padding 3, no bias), BN, ReLU, 3x3 stride-2 max pool (padding 1);
    four stages of two BasicBlocks with widths (1, 2, 4, 8) x `width`, strides (1, 2, 2, 2);
    global average pool. `width=64` is the official network; a smaller width keeps the same
    structure for small demos. `train=True` normalises with batch statistics and updates the
    running averages in the `batch_stats` collection (apply with `mutable=["batch_stats"]`).
    """

    width: int = 64
    stage_sizes: Sequence[int] = (2, 2, 2, 2)

    @nn.compact
    def __call__(self, spectrogram: jax.Array, *, train: bool = False) -> jax.Array:
        """spectrogram: [B, F, T] (257 x 1004 for 10 s of 16 kHz audio). Returns [B, 8 * width]."""
        if spectrogram.ndim != 3:
            raise ValueError(f"expected a spectrogram [B, F, T], got shape {spectrogram.shape}")
        x = spectrogram[..., None]  # [B, F, T, 1]
        x = nn.Conv(
            self.width,
            (7, 7),
            strides=2,
            padding=3,
            use_bias=False,
            kernel_init=_CONV_INIT,
            name="conv1",
        )(x)
        x = nn.BatchNorm(
            use_running_average=not train,
            momentum=_BN_MOMENTUM,
            epsilon=_BN_EPSILON,
            name="bn1",
        )(x)
        x = nn.relu(x)
        # Max pooling padded with -inf, as PyTorch pads it (and as Flax would with `padding`:
        # written out, because jax2onnx's max pool drops a `padding` argument).
        x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
        x = nn.max_pool(x, window_shape=(3, 3), strides=(2, 2))
        for stage, num_blocks in enumerate(self.stage_sizes):
            for block in range(num_blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                x = BasicBlock(
                    self.width * 2**stage, stride=stride, name=f"layer{stage + 1}_{block}"
                )(x, train=train)
        return jnp.mean(x, axis=(1, 2))  # [B, 8 * width]


class A2V(nn.Module):
    """A2V: FC layers from the audio feature f_a to the visual semantic space, f_a^s (Eq. 6).

    `hidden` lists the widths of the hidden layers (ReLU after each); a last linear layer maps
    to d. The paper's A2V is FC layers only, trained by L_s = ||f_a^s - f_v^s||^2 (Eq. 7) to
    match E_s's unit-norm f_v^s, so f_a^s is not normalised by default: stage 3 can then also
    scale it, which makes up for r < 1 in the DSG. `normalize=True` puts it on the unit sphere.
    """

    hidden: Sequence[int] = (512,)
    features: int = 128  # d, the dimension of f_v^s
    normalize: bool = False

    @nn.compact
    def __call__(self, audio_features: jax.Array) -> jax.Array:
        """audio_features: [B, Da] from E_a. Returns f_a^s: [B, d]."""
        x = audio_features
        for i, width in enumerate(self.hidden):
            x = nn.relu(nn.Dense(width, name=f"fc{i}")(x))
        x = nn.Dense(self.features, name=f"fc{len(self.hidden)}")(x)
        return l2_normalize(x) if self.normalize else x
