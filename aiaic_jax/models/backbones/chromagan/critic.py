"""ChromaGAN's critic: a PatchGAN WGAN critic on (L, ab), in Flax (NHWC).

Structure for widths (w1, w2, w3, w4) = (64, 128, 256, 512), the official ones: conv 4x4 / 2
to w1, w2, w3, then conv 4x4 / 1 to w4 and to 1 channel; 'same' padding (TF's rule, Flax's
'SAME'), LeakyReLU with Keras' default slope 0.3 after every conv but the last, no
normalisation. Input is concat[L / 100, (ab + 128) / 255], both in [0, 1] as in the official
model, which takes them ready-made; here the module does it, from L in [0, 100] and raw ab.
The output is one unbounded score per patch, [B, H/8, W/8, 1] (28x28 at 224). 2,764,737
parameters at the official widths.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from aiaic_jax.models.backbones.chromagan.model import normalize_ab

LEAKY_SLOPE = 0.3  # keras.layers.LeakyReLU() default alpha
_STRIDES = (2, 2, 2, 1)

CRITIC_SIZES: dict[str, dict[str, Any]] = {
    "full": {"widths": (64, 128, 256, 512)},
    "demo": {"widths": (8, 16, 32, 64)},
}


class ChromaGANCritic(nn.Module):
    """PatchGAN critic: (gray_l [B, H, W, 1], ab [B, H, W, 2]) -> scores [B, H/8, W/8, 1].

    H and W should be multiples of 8 (otherwise the map is ceil(H/8) x ceil(W/8)).
    """

    widths: Sequence[int] = (64, 128, 256, 512)

    @nn.compact
    def __call__(self, gray_l: jax.Array, ab: jax.Array) -> jax.Array:
        """gray_l: [B, H, W, 1] L in [0, 100]; ab: [B, H, W, 2] raw Lab units."""
        if len(self.widths) != len(_STRIDES):
            raise ValueError(f"ChromaGANCritic has 4 hidden convs, got widths={self.widths}")
        x = jnp.concatenate([gray_l / 100.0, normalize_ab(ab)], axis=-1)
        for i, (width, stride) in enumerate(zip(self.widths, _STRIDES)):
            x = nn.Conv(
                width,
                (4, 4),
                strides=(stride, stride),
                padding="SAME",
                kernel_init=nn.initializers.glorot_uniform(),
                name=f"conv{i}",
            )(x)
            x = nn.leaky_relu(x, LEAKY_SLOPE)
        return nn.Conv(
            1,
            (4, 4),
            padding="SAME",
            kernel_init=nn.initializers.glorot_uniform(),
            name="score",
        )(x)


def chromagan_critic(size: str, **overrides) -> ChromaGANCritic:
    """ChromaGAN's critic of a named size ('full', 'demo'), with field overrides."""
    if size not in CRITIC_SIZES:
        raise ValueError(f"unknown ChromaGAN critic size {size!r}; one of {sorted(CRITIC_SIZES)}")
    return ChromaGANCritic(**{**CRITIC_SIZES[size], **overrides})
