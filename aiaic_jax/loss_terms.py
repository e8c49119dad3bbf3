"""Loss pieces that the backbones' objectives and the paper's stages share: a stable BCE on
logits, a weighted mean, the vanilla GAN terms, and a weighted sum of named terms. Pure jnp;
depends on nothing else in the project, so both `models/backbones/*/objective.py` and `train/`
build on it."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def bce_with_logits(logits: jax.Array, targets: jax.Array | float) -> jax.Array:
    """Elementwise binary cross-entropy of sigmoid(logits) against targets in [0, 1]."""
    targets = jnp.asarray(targets, logits.dtype)
    return jnp.maximum(logits, 0.0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits)))


def weighted_mean(values: jax.Array, weight: jax.Array) -> jax.Array:
    """sum(w * v) / sum(w), 0 when every weight is 0."""
    weight = weight.astype(values.dtype)
    return jnp.sum(values * weight) / jnp.maximum(jnp.sum(weight), 1.0)


def gan_generator(fake_logits: jax.Array) -> jax.Array:
    """Vanilla GAN, generator side: mean BCE(D(fake), 1)."""
    return jnp.mean(bce_with_logits(fake_logits, 1.0))


def gan_discriminator(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """Vanilla GAN, discriminator side: mean BCE(D(real), 1) + mean BCE(D(fake), 0), no 1/2."""
    return jnp.mean(bce_with_logits(real_logits, 1.0)) + jnp.mean(bce_with_logits(fake_logits, 0.0))


class WeightedSum:
    """A loss as a weighted sum of named terms. A term whose weight is 0 is neither computed nor
    reported, so a switched-off term costs nothing in the compiled step."""

    def __init__(self) -> None:
        self.terms: dict[str, jax.Array] = {}
        self.total = jnp.zeros((), jnp.float32)

    def add(self, name: str, weight: float, value_fn: Callable[[], jax.Array]) -> None:
        if weight:
            self.terms[name] = value_fn()
            self.total = self.total + float(weight) * self.terms[name]
