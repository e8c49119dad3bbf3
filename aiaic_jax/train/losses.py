"""The losses the paper adds to a backbone's own objective: the semantic loss L_s (Eq. 7) and
RNet's balanced BCE (Eq. 11), and `config.loss`, which holds the backbone objective's weights
(its `loss_config()`, e.g. models/backbones/ddcolor/objective.py) beside these two weights.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from aiaic_jax.loss_terms import bce_with_logits, weighted_mean


def loss_config(backbone_loss: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config.loss`: the backbone objective's weights and the paper's own."""
    config = ml_collections.ConfigDict(backbone_loss.to_dict())
    config.semantic_weight = 1.0  # L_s, stage 2
    config.relevance_weight = 1.0  # BCE, RNet
    return config


def semantic(
    audio_semantics: jax.Array, visual_semantics: jax.Array, weight: jax.Array
) -> jax.Array:
    """L_s = ||f_a^s - f_v^s||^2 (Eq. 7), averaged over the samples with weight 1.

    audio_semantics, visual_semantics: [B, d]; the visual side is the target (no gradient).
    weight: [B] in {0, 1}, e.g. pairs whose audio is present and belongs to the image.
    """
    target = jax.lax.stop_gradient(visual_semantics)
    per_sample = jnp.sum(jnp.square(audio_semantics - target), axis=-1)
    return weighted_mean(per_sample, weight)


def negative_partners(rng: jax.Array, batch: int) -> jax.Array:
    """A random permutation of the batch with no fixed point: partner[i] != i.

    Sample i is paired with the audio of sample partner[i] as an irrelevant pair (Eq. 11: "audio
    from different videos"). A random order is shifted by a random offset in [1, B - 1], so
    every audio is used once as a negative and never with its own image. batch >= 2.
    """
    if batch < 2:
        raise ValueError(f"negative pairs need a batch of at least 2, got {batch}")
    order_key, shift_key = jax.random.split(rng)
    order = jax.random.permutation(order_key, batch)
    shift = jax.random.randint(shift_key, (), 1, batch)
    partner = jnp.zeros((batch,), jnp.int32)
    return partner.at[order].set(jnp.roll(order, -shift).astype(jnp.int32))


def relevance(
    own_logits: jax.Array,
    own_relevant: jax.Array,
    own_weight: jax.Array,
    negative_logits: jax.Array,
    negative_weight: jax.Array,
) -> jax.Array:
    """RNet's balanced BCE (Eq. 11): half on each sample's own pair, half on the negatives.

    own_logits [B]: image i with its own audio, target own_relevant (1 for a clip's own audio,
    0 where the dataset marks it irrelevant); own_weight [B]: 1 where the audio exists.
    negative_logits [B]: image i with the audio of another clip, target 0; negative_weight
    [B]: 1 where that audio exists and comes from another class (or the classes are unknown).
    """
    own = weighted_mean(bce_with_logits(own_logits, own_relevant), own_weight)
    negative = weighted_mean(bce_with_logits(negative_logits, 0.0), negative_weight)
    return 0.5 * (own + negative)
