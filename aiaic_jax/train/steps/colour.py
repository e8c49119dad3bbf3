"""The colour stages (baseline, stage 1, stage 3, e2e): the backbone's own objective on the
output of the stage's mode, and its adversary's update when the objective has one.

The objective is the backbone's (`models.backbones.objective_class`): this step never names a
backbone. What the paper adds in these stages is in the model's modes (guidance from the colour
image in stage 1, from the audio gated by r in stage 3), not in the loss.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from aiaic_jax import loss_terms, preprocess
from aiaic_jax.models import backbones
from aiaic_jax.models.aiaic import AIAIC
from aiaic_jax.train import optim
from aiaic_jax.train.stages import Stage
from aiaic_jax.train.state import (
    DiscriminatorState,
    LossAux,
    Step,
    TrainState,
    Tree,
    any_trains,
    global_norm,
    merge_stats,
)

_DROPOUT_BRANCH = 1
_ANCHORS_BRANCH = 2


def objective(config: ml_collections.ConfigDict) -> Any:
    """The training objective of the run's backbone."""
    return backbones.objective_class(config.model.backbone)(config)


def discriminator_optimizer_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    return optim.optimizer_config(**config.discriminator.optimizer.to_dict())


class ColourStep(Step):
    """A colour stage's step; see the module docstring."""

    def __init__(self, config: ml_collections.ConfigDict, stage: Stage, model: AIAIC, params: Tree):
        super().__init__(config, stage, model, params)
        self.objective = objective(config)
        missing = sorted(set(self.objective.loss_config()) - set(stage.loss))
        if missing:
            raise ValueError(
                f"stage {stage.name}: config.loss lacks {missing}, the loss weights of backbone "
                f"{config.model.backbone!r}; build the config with "
                f"configs/common.get_config({config.model.backbone!r})"
            )
        if self.objective.uses_discriminator(stage.loss):
            self.discriminator = self.objective.discriminator
            self.discriminator_tx = optim.make_optimizer(discriminator_optimizer_config(config))
        # BatchNorm and spectral-norm statistics update only in modules that train, and not in
        # the backbone when the stage freezes them.
        self.backbone_train = (
            any_trains(self.mask, ("backbone",), exclude="dsg") and not stage.freeze_backbone_stats
        )
        self.audio_train = any_trains(self.mask, ("audio",))

    def constants(self) -> dict[str, Any]:
        return self.objective.constants(self.stage.loss)

    def init_discriminator(self, rng: jax.Array, image_size: int) -> dict[str, Any]:
        return self.objective.init_discriminator(rng, image_size)

    def forward(
        self, params: Tree, batch_stats: Tree, inputs: preprocess.ModelInputs, rng: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array], Tree]:
        """(ab [B, H, W, 2], aux, new batch_stats) of the stage's mode."""
        variables = {"params": params, "batch_stats": batch_stats}
        kwargs: dict[str, Any] = {}
        mode = self.stage.mode
        if mode == "visual":
            kwargs["color_rgb"] = inputs.color_rgb
            if self.stage.mask_fraction > 0:
                batch = inputs.gray_l.shape[0]
                kwargs["gt_masked"] = jax.random.bernoulli(rng, self.stage.mask_fraction, (batch,))
        elif mode == "audio":
            kwargs.update(
                spectrogram=inputs.spectrogram,
                has_audio=inputs.has_audio,
                force_relevance=self.stage.force_relevance,
                audio_train=self.audio_train,
            )
        # Draws of the backbone itself (dropout, DisColor's k-means start), apart from the
        # stage's own (the masked samples above).
        rngs = {
            "dropout": jax.random.fold_in(rng, _DROPOUT_BRANCH),
            "anchors": jax.random.fold_in(rng, _ANCHORS_BRANCH),
        }
        (ab, aux), updated = self.model.apply(
            variables,
            inputs.gray_l,
            mode=mode,
            train=self.backbone_train,
            target_ab=inputs.target_ab,
            mutable=["batch_stats"],
            rngs=rngs,
            **kwargs,
        )
        return ab, aux, merge_stats(batch_stats, updated["batch_stats"])

    def loss(
        self,
        params: Tree,
        state: TrainState,
        inputs: preprocess.ModelInputs,
        batch: Mapping[str, jax.Array],
        rng: jax.Array,
        constants: Tree,
    ) -> tuple[jax.Array, LossAux]:
        """The backbone's objective (its generator side) on the stage's output."""
        ab, aux, new_stats = self.forward(params, state.batch_stats, inputs, rng)
        discriminator = None
        if self.discriminator is not None:
            d = state.discriminator
            discriminator = {"params": d.params, "batch_stats": d.batch_stats}
        total, terms, extras = self.objective.generator_loss(
            self.stage.loss,
            inputs.gray_l,
            ab,
            aux["backbone"],
            inputs.target_ab,
            inputs.color_rgb,
            constants,
            discriminator,
        )
        if "relevance" in aux:
            terms["relevance_mean"] = jnp.mean(aux["relevance"])
            terms["relevance_mean_with_audio"] = loss_terms.weighted_mean(
                aux["relevance"], inputs.has_audio
            )
        return total, (terms, new_stats, extras)

    def update_discriminator(
        self, discriminator: DiscriminatorState, extras: Mapping[str, Any], rng: jax.Array
    ) -> tuple[DiscriminatorState, dict[str, jax.Array]]:
        """One step of the objective's adversary on the ground truth and the detached output."""
        extras = {"batch_stats": discriminator.batch_stats, **extras}
        d_loss_fn = lambda params: self.objective.discriminator_loss(
            params, self.stage.loss, extras, rng
        )
        (d_loss, (d_stats, d_metrics)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(
            discriminator.params
        )
        d_updates, d_opt_state = self.discriminator_tx.update(
            d_grads, discriminator.opt_state, discriminator.params
        )
        new_d = DiscriminatorState(
            params=optax.apply_updates(discriminator.params, d_updates),
            batch_stats=d_stats,
            opt_state=d_opt_state,
        )
        metrics = {
            "d_loss": d_loss,
            **d_metrics,
            "d_grad_norm": global_norm(d_grads),
            "d_update_norm": global_norm(d_updates),
        }
        return new_d, metrics
