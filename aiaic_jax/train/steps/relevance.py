"""The RNet stage: RNet's balanced BCE (Eq. 11) on each image with its own audio and with the
audio of another clip."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections

from aiaic_jax import preprocess
from aiaic_jax.loss_terms import weighted_mean
from aiaic_jax.models.aiaic import AIAIC
from aiaic_jax.train import losses
from aiaic_jax.train.stages import Stage
from aiaic_jax.train.state import LossAux, Step, TrainState, Tree, any_trains, merge_stats


class RelevanceStep(Step):
    """RNet's heads and FC on its (by default frozen) encoders; see the module docstring."""

    def __init__(self, config: ml_collections.ConfigDict, stage: Stage, model: AIAIC, params: Tree):
        super().__init__(config, stage, model, params)
        self.rnet_audio_train = any_trains(self.mask, ("relevance", "audio_encoder"))

    def loss(
        self,
        params: Tree,
        state: TrainState,
        inputs: preprocess.ModelInputs,
        batch: Mapping[str, jax.Array],
        rng: jax.Array,
        constants: Tree,
    ) -> tuple[jax.Array, LossAux]:
        labels = batch.get("label")
        if labels is None:  # no class labels: every other clip counts as another class
            labels = jnp.full(inputs.has_audio.shape, -1, jnp.int32)
        partner = losses.negative_partners(rng, inputs.gray_l.shape[0])
        (own_logit, negative_logit), updated = self.model.apply(
            {"params": params, "batch_stats": state.batch_stats},
            inputs.gray_l,
            inputs.spectrogram,
            partner,
            train=self.rnet_audio_train,
            method=AIAIC.relevance_pairs,
            mutable=["batch_stats"],
        )
        own_weight = inputs.has_audio
        other_class = (labels < 0) | (labels[partner] < 0) | (labels != labels[partner])
        negative_weight = inputs.has_audio[partner] & other_class
        loss = losses.relevance(
            own_logit, inputs.relevant, own_weight, negative_logit, negative_weight
        )
        own_hit = (own_logit > 0) == inputs.relevant
        terms = {
            "relevance_bce": loss,
            "relevance_accuracy_own": weighted_mean(own_hit, own_weight),
            "relevance_accuracy_negative": weighted_mean(negative_logit < 0, negative_weight),
            "relevance_r_own": weighted_mean(jax.nn.sigmoid(own_logit), own_weight),
            "relevance_r_negative": weighted_mean(jax.nn.sigmoid(negative_logit), negative_weight),
            "relevance_negatives": jnp.sum(negative_weight.astype(jnp.float32)),
        }
        new_stats = merge_stats(state.batch_stats, updated["batch_stats"])
        total = float(self.stage.loss.relevance_weight) * loss
        return total, (terms, new_stats, {})
