"""Semantic guidance: where scene semantics come from and how a backbone takes them in.

`SemanticEncoder` (E_s, Eq. 3) turns the ground-truth colour image into unit-norm semantics
f_v^s; `GuidanceMLP` maps semantics from either source (f_v^s in stage 1, the audio's f_a^s in
stage 3) to the code c (Eq. 4). A backbone that takes guidance receives a `Guidance` (c and the
relevance r) and applies `DynamicSemanticGuidance` (Eq. 5, 8) to its feature map at the point it
declares; nothing else in the system knows backbone internals.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp


class Guidance(NamedTuple):
    """What a backbone needs to guide its colour generation."""

    c: jax.Array  # [B, Dc] guidance code, c = MLP(f^s) (Eq. 4)
    relevance: jax.Array  # [B] r in [0, 1]; 0 leaves the backbone's features untouched (Eq. 8)


class SemanticGuidance(nn.Module):
    """AdaIN semantic guidance SG(x, c) (Eq. 5).

    Each channel of x is normalised over space, per sample, then scaled by gamma(c) and shifted
    by beta(c); gamma and beta are two-layer MLPs. The last layers start at gamma = 1, beta = 0,
    so a pretrained backbone first sees its own features instance-normalised, not zeroed.
    """

    features: int  # channels of x at the insertion point
    hidden: int = 256
    eps: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
        """x: [B, H, W, C] features; c: [B, Dc] code. Returns [B, H, W, C]."""
        mean = jnp.mean(x, axis=(1, 2), keepdims=True)
        std = jnp.sqrt(jnp.var(x, axis=(1, 2), keepdims=True) + self.eps)
        gamma = _two_layer(c, self.hidden, self.features, nn.initializers.ones, "gamma")
        beta = _two_layer(c, self.hidden, self.features, nn.initializers.zeros, "beta")
        return gamma[:, None, None, :] * (x - mean) / std + beta[:, None, None, :]


class DynamicSemanticGuidance(nn.Module):
    """DSG(x, c) = r * SG(x, c) + (1 - r) * x, with r per sample (Eq. 8).

    r = 0 returns x exactly (the backbone alone); r = 1 is plain SG (the "w/o r" variant).
    """

    features: int
    hidden: int = 256

    @nn.compact
    def __call__(self, x: jax.Array, guidance: Guidance) -> jax.Array:
        """x: [B, H, W, C]; guidance.c: [B, Dc]; guidance.relevance: [B]."""
        guided = SemanticGuidance(self.features, self.hidden, name="sg")(x, guidance.c)
        r = guidance.relevance.astype(x.dtype)[:, None, None, None]
        return r * guided + (1.0 - r) * x


def _two_layer(
    c: jax.Array, hidden: int, features: int, bias_init: nn.initializers.Initializer, name: str
) -> jax.Array:
    h = nn.relu(nn.Dense(hidden, name=f"{name}_0")(c))
    return nn.Dense(
        features, kernel_init=nn.initializers.zeros, bias_init=bias_init, name=f"{name}_1"
    )(h)


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
    """x / ||x||_2 along `axis`; a zero vector stays zero instead of becoming NaN."""
    norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
    return x / jnp.maximum(norm, eps)


class SemanticEncoder(nn.Module):
    """E_s: scene colour semantics of the ground-truth colour image (Eq. 3).

    Four blocks of (3x3 conv, ReLU, 2x2 max pool), then two linear layers, then L2
    normalisation, as the paper describes (Sec. 4.1). The last block's feature map is averaged
    over space before the linear layers, so the encoder takes any image size; the guidance it
    feeds is global (AdaIN acts per channel), so no spatial layout is lost that SG could use.

    Input convention: sRGB in [0, 1], mapped to [-1, 1] inside. E_s is trained from scratch in
    stage 1, so no pretrained statistics are implied.
    """

    channels: Sequence[int] = (32, 64, 128, 256)  # one conv width per block
    hidden: int = 256  # width of the first linear layer
    features: int = 128  # d, the dimension of f_v^s (and of f_a^s)

    @nn.compact
    def __call__(self, color_rgb: jax.Array) -> jax.Array:
        """color_rgb: [B, H, W, 3] sRGB in [0, 1]. Returns f_v^s [B, d] with unit L2 norm."""
        if len(self.channels) != 4:
            raise ValueError(f"SemanticEncoder has 4 conv blocks, got channels={self.channels}")
        x = 2.0 * color_rgb - 1.0
        for i, width in enumerate(self.channels):
            x = nn.Conv(width, (3, 3), padding=1, name=f"conv{i}")(x)
            x = nn.max_pool(nn.relu(x), window_shape=(2, 2), strides=(2, 2))
        x = jnp.mean(x, axis=(1, 2))  # [B, C]
        x = nn.relu(nn.Dense(self.hidden, name="fc0")(x))
        x = nn.Dense(self.features, name="fc1")(x)
        return l2_normalize(x)  # Eq. 3


class GuidanceMLP(nn.Module):
    """c = MLP(f^s) (Eq. 4): the code every DSG module receives.

    One module serves both sources of semantics: f_v^s from the colour image in stage 1 and
    f_a^s from the audio in stage 3, which is what lets audio semantics trained to match f_v^s
    (Eq. 7) drive the colorization network trained in stage 1.
    """

    hidden: int = 256
    features: int = 256  # Dc, the dimension of c

    @nn.compact
    def __call__(self, semantics: jax.Array) -> jax.Array:
        """semantics: [B, d] (f_v^s or f_a^s). Returns c: [B, Dc]."""
        x = nn.relu(nn.Dense(self.hidden, name="fc0")(semantics))
        return nn.Dense(self.features, name="fc1")(x)
