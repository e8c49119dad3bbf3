"""ChromaGAN's training objective (pvitoria/ChromaGAN; facts in the project's reference notes):

    L_G = 1.0 * MSE(ab, ab_gt)                     in the official units (ab + 128) / 255
        + 0.003 * KL(teacher(grey) || class head)  VGG16 classifier softmax, a constant target
        - 0.1 * mean(D(L, ab))                     WGAN, generator side
    L_D = -mean(D(L, ab_gt)) + mean(D(L, ab)) + 10 * (1 - ||grad_x D(L, x)||)^2

with D the PatchGAN critic (`critic.py`) and x = e * ab_gt + (1 - e) * ab, e ~ U(0, 1) per
sample: only ab is interpolated, L is the fixed condition; the gradient is of the critic's
summed patch map, its norm per sample over (H, W, 2) in the critic's input units. One critic
step per generator step (the colour step's order: generator, then critic).

The class term needs the VGG16 classifier with its ImageNet head (`teacher.py`), converted from
a file the user has (`python -m aiaic_jax.convert vgg16 FILE OUT`) and named by
`loss.class_teacher`; as in the official code it sees the grey input L / 100 on three channels
without any preprocessing. Without a teacher the term is off, and the process says so once. The
teacher's dense layers fix its input at 224 x 224; at any other model resolution the term is
off too (also said once).

Not reproduced: Keras shares one Adam (and its step counter) between the generator, the critic
and the combined model, so bias correction advances twice per iteration; here each has its own.
The official critic step runs the generator again after its update; here the critic sees the
output of the generator's own pass, detached (the colour step's order, as in DDColor's code).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from absl import logging

from aiaic_jax import loss_terms
from aiaic_jax.models.backbones.chromagan.critic import chromagan_critic
from aiaic_jax.models.backbones.chromagan.model import normalize_ab, normalize_l

TEACHER_SIZE = 224  # the teacher's fc6 takes 7 x 7 x 512 features
_KL_CLIP = 1e-7  # Keras' kld clips both distributions to [1e-7, 1]


def loss_config() -> ml_collections.ConfigDict:
    """ChromaGAN's loss weights (`config.loss` of a ChromaGAN run, beside the stages')."""
    return ml_collections.ConfigDict(
        {
            "mse_weight": 1.0,
            "class_weight": 0.003,
            "class_teacher": "",  # a converted VGG16 classifier; "" turns the class term off
            "gan_weight": 0.1,  # 0 trains without the critic
            "gradient_penalty_weight": 10.0,
        }
    )


def optimizer_config() -> dict[str, Any]:
    """The generator's optimizer: Adam 2e-5, beta1 0.5, Keras' eps 1e-7, no decay."""
    return {"name": "adam", "lr": 2e-5, "b1": 0.5, "b2": 0.999, "eps": 1e-7, "weight_decay": 0.0}


def discriminator_config() -> ml_collections.ConfigDict:
    """`config.discriminator`: the critic's size and its optimizer (Adam 2e-5, beta1 0.5)."""
    return ml_collections.ConfigDict(
        {
            "size": "full",
            "optimizer": ml_collections.ConfigDict(
                {
                    "name": "adam",
                    "lr": 2e-5,
                    "b1": 0.5,
                    "b2": 0.999,
                    "eps": 1e-7,
                    "weight_decay": 0.0,
                }
            ),
        }
    )


def mse_ab(ab: jax.Array, target_ab: jax.Array) -> jax.Array:
    """Mean squared ab error in the official units (ab + 128) / 255."""
    return jnp.mean(jnp.square(normalize_ab(ab) - normalize_ab(target_ab)))


def class_kl(teacher_logits: jax.Array, class_logits: jax.Array) -> jax.Array:
    """Keras' kld of the teacher's softmax (the target, no gradient) and the class head's:
    sum y log(y / y_hat) over classes with both clipped to [1e-7, 1], mean over the batch."""
    target = jnp.clip(jax.nn.softmax(jax.lax.stop_gradient(teacher_logits)), _KL_CLIP, 1.0)
    predicted = jnp.clip(jax.nn.softmax(class_logits), _KL_CLIP, 1.0)
    return jnp.mean(jnp.sum(target * jnp.log(target / predicted), axis=-1))


def gradient_penalty(
    critic_fn, gray_l: jax.Array, real_ab: jax.Array, fake_ab: jax.Array, rng: jax.Array
) -> jax.Array:
    """mean over samples of (1 - ||d sum(D(L, x)) / dx||)^2, x between real and fake ab (in the
    critic's input units) at a uniform random point per sample."""
    epsilon = jax.random.uniform(rng, (real_ab.shape[0], 1, 1, 1), real_ab.dtype)
    mixed = epsilon * normalize_ab(real_ab) + (1.0 - epsilon) * normalize_ab(fake_ab)
    summed = lambda unit_ab: jnp.sum(critic_fn(gray_l, 255.0 * unit_ab - 128.0))
    grads = jax.grad(summed)(mixed)
    norms = jnp.sqrt(jnp.sum(jnp.square(grads), axis=(1, 2, 3)))
    return jnp.mean(jnp.square(1.0 - norms))


class ChromaGANObjective:
    """L_G and the critic's loss for the colour stages (module docstring); the interface is
    that of `models/backbones/ddcolor/objective.py`."""

    loss_config = staticmethod(loss_config)
    optimizer_config = staticmethod(optimizer_config)
    discriminator_config = staticmethod(discriminator_config)

    def __init__(self, config: ml_collections.ConfigDict):
        self.discriminator = chromagan_critic(str(config.discriminator.size))
        self.image_size = int(config.data.image_size)

    def constants(self, weights: ml_collections.ConfigDict) -> dict[str, Any]:
        """The class term's teacher ({"teacher": params}), when the term is on and possible."""
        if not float(weights.class_weight):
            return {}
        path = str(weights.get("class_teacher", "") or "")
        if not path:
            logging.log_first_n(
                logging.WARNING,
                "ChromaGAN: no VGG16 classifier (loss.class_teacher); the class term is off. "
                "Convert one with `python -m aiaic_jax.convert vgg16 FILE OUT`.",
                1,
            )
            return {}
        if self.image_size != TEACHER_SIZE:
            logging.log_first_n(
                logging.WARNING,
                "ChromaGAN: the VGG16 teacher takes %dx%d images, the model runs at %d; the class "
                "term is off.",
                1,
                TEACHER_SIZE,
                TEACHER_SIZE,
                self.image_size,
            )
            return {}
        from aiaic_jax.convert.common import restore_variables

        return {"teacher": restore_variables(path)["params"]}

    def uses_discriminator(self, weights: ml_collections.ConfigDict) -> bool:
        """Whether a stage with these loss weights trains the adversary."""
        return float(weights.gan_weight) > 0.0

    def init_discriminator(self, rng: jax.Array, image_size: int) -> dict[str, Any]:
        gray_l = jnp.full((1, image_size, image_size, 1), 50.0, jnp.float32)
        return self.discriminator.init(rng, gray_l, jnp.zeros((1, image_size, image_size, 2)))

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
        """(L_G, its terms, extras for `discriminator_loss`); see DDColorObjective."""
        del color_rgb
        loss = loss_terms.WeightedSum()

        loss.add("mse", weights.mse_weight, lambda: mse_ab(ab, target_ab))
        if "teacher" in constants:
            from aiaic_jax.models.backbones.chromagan.teacher import VGG16Classifier

            teacher_logits = VGG16Classifier().apply(
                {"params": constants["teacher"]}, normalize_l(gray_l)
            )
            loss.add(
                "class_kl",
                weights.class_weight,
                lambda: class_kl(teacher_logits, aux["class_logits"]),
            )
        if discriminator is not None:
            scores = self.discriminator.apply(
                {"params": jax.lax.stop_gradient(discriminator["params"])}, gray_l, ab
            )
            loss.add("gan", weights.gan_weight, lambda: -jnp.mean(scores))
        extras = {"gray_l": gray_l, "real": target_ab, "fake": jax.lax.stop_gradient(ab)}
        return loss.total, loss.terms, extras

    def discriminator_loss(
        self,
        params: Any,
        weights: ml_collections.ConfigDict,
        extras: Mapping[str, Any],
        rng: jax.Array,
    ) -> tuple[jax.Array, tuple[Any, dict[str, jax.Array]]]:
        """(loss, (batch_stats, metrics)) of one critic step: Wasserstein estimate plus the
        gradient penalty (module docstring). The critic has no batch statistics."""
        critic_fn = lambda gray_l, ab: self.discriminator.apply({"params": params}, gray_l, ab)
        gray_l = extras["gray_l"]
        real = jnp.mean(critic_fn(gray_l, extras["real"]))
        fake = jnp.mean(critic_fn(gray_l, extras["fake"]))
        penalty = gradient_penalty(critic_fn, gray_l, extras["real"], extras["fake"], rng)
        loss = fake - real + float(weights.gradient_penalty_weight) * penalty
        metrics = {"d_real_score": real, "d_fake_score": fake, "d_gradient_penalty": penalty}
        return loss, ({}, metrics)
