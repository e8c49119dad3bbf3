"""Stage 2: the audio branch learns the colour image's semantics, L_s (Eq. 7)."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections

from aiaic_jax import loss_terms, preprocess
from aiaic_jax.models.aiaic import AIAIC
from aiaic_jax.models.guidance import l2_normalize
from aiaic_jax.train import losses
from aiaic_jax.train.stages import Stage
from aiaic_jax.train.state import LossAux, Step, TrainState, Tree, any_trains, merge_stats


class SemanticStep(Step):
    """L_s between f_a^s = A2V(E_a(audio)) and the frozen f_v^s = E_s(colour image), on the
    pairs whose audio is present and belongs to the image."""

    def __init__(self, config: ml_collections.ConfigDict, stage: Stage, model: AIAIC, params: Tree):
        super().__init__(config, stage, model, params)
        self.audio_train = any_trains(self.mask, ("audio",))

    def loss(
        self,
        params: Tree,
        state: TrainState,
        inputs: preprocess.ModelInputs,
        batch: Mapping[str, jax.Array],
        rng: jax.Array,
        constants: Tree,
    ) -> tuple[jax.Array, LossAux]:
        variables = {"params": params, "batch_stats": state.batch_stats}
        visual = self.model.apply(variables, inputs.color_rgb, method=AIAIC.visual_semantics)
        audio, updated = self.model.apply(
            variables,
            inputs.spectrogram,
            train=self.audio_train,
            method=AIAIC.audio_semantics,
            mutable=["batch_stats"],
        )
        weight = inputs.has_audio & inputs.relevant
        loss = losses.semantic(audio, visual, weight)
        cosine = jnp.sum(l2_normalize(audio) * l2_normalize(visual), axis=-1)
        terms = {
            "semantic": loss,
            "semantic_cosine": loss_terms.weighted_mean(cosine, weight),
        }
        new_stats = merge_stats(state.batch_stats, updated["batch_stats"])
        total = float(self.stage.loss.semantic_weight) * loss
        return total, (terms, new_stats, {})
