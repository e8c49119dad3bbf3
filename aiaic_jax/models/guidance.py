"""Semantic guidance: the injection a backbone applies at its insertion point (Eq. 5, 8).

A backbone that takes guidance receives a `Guidance` (the code `c` and the relevance `r`) and
applies `DynamicSemanticGuidance` to its feature map at the point it declares. Everything that
produces `c` (the semantic encoder on the colour image, or the audio branch) lives outside the
backbone.
"""

from __future__ import annotations

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
