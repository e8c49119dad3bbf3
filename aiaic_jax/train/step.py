"""The train state and one pure train step per stage (STYLE.md: the train step).

`StepBuilder(config, stage, model, params)` holds what a stage's step needs (the model, the
trainable mask, the optimizers, the discriminator) and gives

    init_state(variables, discriminator_variables) -> TrainState
    train_step(state, batch, rng, constants) -> (state, metrics)     pure; the loop jits it
    preview(params, batch_stats, batch, constants) -> images          for the image grids

`batch` is a host batch of the input pipeline (uint8 RGB, int16 audio, ...); the Lab targets
and spectrograms are computed inside the step (`preprocess.model_inputs`). `rng` is the raw
key data of the stage's key; the step's randomness is `fold_in(rng, step)`, so a resumed run
draws what an uninterrupted one does without any key in the checkpoint. `constants` holds
the frozen perceptual network (`{"vgg": ...}`), passed as an argument rather than closed over
so that its 15M weights are not baked into the compiled program.

Only the trainable parameters are differentiated: the tree is split by the stage's mask and
the gradient is taken of the trainable part alone, so a frozen backbone costs no weight
gradients. The optimizer is still masked (`optim.masked`), so a frozen leaf never gets an
update or optimizer moments, and frozen leaves are passed through untouched (bit-identical).

A step whose loss or gradients are not finite leaves the state as it was (except the step
counter) and records its number in `first_bad_step`; the loop checks it when it fetches
metrics or saves, so there is no host sync per step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import traverse_util

from aiaic_jax import color, preprocess
from aiaic_jax.models.aiaic import AIAIC
from aiaic_jax.models.backbones.ddcolor.discriminator import DynamicUNetDiscriminator
from aiaic_jax.models.guidance import l2_normalize
from aiaic_jax.train import losses, optim
from aiaic_jax.train.stages import COLOUR, SEMANTIC, Stage

Tree = Any
NO_BAD_STEP = -1


@flax.struct.dataclass
class DiscriminatorState:
    params: Tree
    batch_stats: Tree  # spectral-norm power-iteration vectors
    opt_state: optax.OptState


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 [], updates done so far
    params: Tree
    batch_stats: Tree
    opt_state: optax.OptState
    discriminator: DiscriminatorState | None  # only when the stage's GAN weight is non-zero
    first_bad_step: jax.Array  # int32 [], the first step with a non-finite loss or gradient

    def variables(self) -> dict[str, Tree]:
        return {"params": self.params, "batch_stats": self.batch_stats}


def _flat(tree: Tree) -> dict[tuple[str, ...], Any]:
    return traverse_util.flatten_dict(flax.core.unfreeze(tree))


def _split(params: Tree, mask: Tree) -> tuple[dict, dict]:
    """(trainable, frozen) flat dicts keyed by parameter path."""
    flat, flat_mask = _flat(params), _flat(mask)
    trainable = {k: v for k, v in flat.items() if flat_mask[k]}
    frozen = {k: v for k, v in flat.items() if not flat_mask[k]}
    return trainable, frozen


def _join(trainable: Mapping, frozen: Mapping) -> Tree:
    return traverse_util.unflatten_dict({**frozen, **trainable})


def _merge_stats(old: Tree, new: Tree) -> Tree:
    """`old` with every leaf that the apply returned in `new` replaced."""
    return traverse_util.unflatten_dict({**_flat(old), **_flat(new)})


def _any_trains(mask: Tree, module: str, exclude: str | None = None) -> bool:
    """Whether any parameter under `module/` (not under `exclude`) trains."""
    for path, trains in _flat(mask).items():
        if path[0] == module and trains and (exclude is None or exclude not in path):
            return True
    return False


def _global_norm(tree: Mapping) -> jax.Array:
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.zeros((), jnp.float32)
    return optax.global_norm(leaves)


def discriminator_module(config: ml_collections.ConfigDict) -> DynamicUNetDiscriminator:
    return DynamicUNetDiscriminator(
        width=int(config.discriminator.width), num_blocks=int(config.discriminator.num_blocks)
    )


def discriminator_optimizer_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    return optim.optimizer_config(**config.discriminator.optimizer.to_dict())


class StepBuilder:
    """A stage's pure step functions; see the module docstring."""

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        stage: Stage,
        model: AIAIC,
        params: Tree,
    ):
        """params: the model's params tree or its shapes (only the structure is used)."""
        self.config = config
        self.stage = stage
        self.model = model
        self.mask = optim.trainable_mask(params, stage.trainable, stage.frozen)
        if optim.count_trainable(params, self.mask) == 0:
            raise ValueError(
                f"stage {stage.name}: no parameter matches trainable={list(stage.trainable)} "
                f"without matching frozen={list(stage.frozen)}"
            )
        self.tx = optim.masked(optim.make_optimizer(stage.optimizer), self.mask)
        self.schedule = optim.learning_rate_schedule(stage.optimizer)
        self.discriminator = discriminator_module(config) if stage.uses_discriminator else None
        self.discriminator_tx = (
            optim.make_optimizer(discriminator_optimizer_config(config))
            if self.discriminator is not None
            else None
        )
        # BatchNorm and spectral-norm statistics update only in modules that train, and not in
        # the backbone when the stage freezes them.
        self.backbone_train = (
            _any_trains(self.mask, "backbone", exclude="dsg") and not stage.freeze_backbone_stats
        )
        self.audio_train = _any_trains(self.mask, "audio")
        self.rnet_audio_train = any(
            trains
            for path, trains in _flat(self.mask).items()
            if path[:2] == ("relevance", "audio_encoder")
        )
        self.inject_nan_at_step = int(config.train.get("inject_nan_at_step", 0))

    # ----------------------------------------------------------------------------- state

    def init_state(self, variables: Tree, discriminator_variables: Tree | None) -> TrainState:
        """The state at step 0 from model (and discriminator) variables; jit-able."""
        params = variables["params"]
        discriminator = None
        if self.discriminator is not None:
            if discriminator_variables is None:
                raise ValueError(f"stage {self.stage.name} trains a GAN: give its variables")
            discriminator = DiscriminatorState(
                params=discriminator_variables["params"],
                batch_stats=discriminator_variables["batch_stats"],
                opt_state=self.discriminator_tx.init(discriminator_variables["params"]),
            )
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=variables.get("batch_stats", {}),
            opt_state=self.tx.init(params),
            discriminator=discriminator,
            first_bad_step=jnp.full((), NO_BAD_STEP, jnp.int32),
        )

    # ------------------------------------------------------------------------------ step

    def train_step(
        self, state: TrainState, batch: Mapping[str, jax.Array], rng: jax.Array, constants: Tree
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        """One update of the stage's trainable parameters (and of the discriminator)."""
        inputs = preprocess.model_inputs(batch, self.config)
        labels = batch.get("label")
        if labels is None:  # no class labels: every other clip counts as another class
            labels = jnp.full(inputs.has_audio.shape, -1, jnp.int32)
        step_rng = jax.random.fold_in(jax.random.wrap_key_data(rng), state.step)
        trainable, frozen = _split(state.params, self.mask)

        def loss_fn(trainable_params):
            params = _join(trainable_params, frozen)
            if self.stage.kind == COLOUR:
                return self._colour_loss(params, state, inputs, step_rng, constants)
            if self.stage.kind == SEMANTIC:
                return self._semantic_loss(params, state, inputs)
            return self._relevance_loss(params, state, inputs, labels, step_rng)

        (loss, (terms, new_stats, extras)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            trainable
        )
        if self.inject_nan_at_step:  # a test of the non-finite guard
            loss = jnp.where(state.step + 1 == self.inject_nan_at_step, jnp.nan, loss)

        full_grads = _join(grads, jax.tree.map(jnp.zeros_like, frozen))
        updates, opt_state = self.tx.update(full_grads, state.opt_state, state.params)
        flat_updates = _flat(updates)
        # Frozen leaves pass through as they are (adding a zero update would turn -0.0 to 0.0).
        new_params = _join(
            {k: optax.apply_updates(v, flat_updates[k]) for k, v in trainable.items()}, frozen
        )
        trainable_updates = {k: flat_updates[k] for k in trainable}
        metrics = {
            "loss": loss,
            **terms,
            "grad_norm": _global_norm(grads),
            "update_norm": _global_norm(trainable_updates),
            "lr": self.schedule(state.step),
        }
        finite = jnp.isfinite(loss) & jnp.isfinite(metrics["grad_norm"])

        discriminator = state.discriminator
        if self.discriminator is not None:
            discriminator, d_metrics = self._discriminator_update(state.discriminator, extras)
            metrics.update(d_metrics)
            finite &= jnp.isfinite(d_metrics["d_loss"]) & jnp.isfinite(d_metrics["d_grad_norm"])

        step = state.step + 1
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
        new_state = TrainState(
            step=step,
            params=keep(new_params, state.params),
            batch_stats=keep(new_stats, state.batch_stats),
            opt_state=keep(opt_state, state.opt_state),
            discriminator=keep(discriminator, state.discriminator),
            first_bad_step=jnp.where(
                (state.first_bad_step == NO_BAD_STEP) & ~finite, step, state.first_bad_step
            ),
        )
        metrics["nonfinite"] = (~finite).astype(jnp.float32)
        return new_state, {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}

    def _colour_forward(self, params, batch_stats, inputs, rng):
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
        (ab, aux), updated = self.model.apply(
            variables,
            inputs.gray_l,
            mode=mode,
            train=self.backbone_train,
            mutable=["batch_stats"],
            **kwargs,
        )
        return ab, aux, _merge_stats(batch_stats, updated["batch_stats"])

    def _colour_loss(self, params, state, inputs, rng, constants):
        """L_c (losses module docstring) of the stage's mode."""
        weights = self.stage.loss
        ab, aux, new_stats = self._colour_forward(params, state.batch_stats, inputs, rng)
        # The prediction as the official loss sees it: no ab clip, sRGB clipped to [0, 1].
        output_rgb = color.lab_to_rgb(jnp.concatenate([inputs.gray_l, ab], axis=-1))
        gt_rgb = losses.enhance_colour(inputs.color_rgb, float(weights.color_enhance_factor))
        terms: dict[str, jax.Array] = {}
        total = jnp.zeros((), jnp.float32)

        def add(name: str, weight: float, value_fn) -> None:
            nonlocal total
            if weight:
                terms[name] = value_fn()
                total = total + float(weight) * terms[name]

        add("l1", weights.l1_weight, lambda: losses.l1_ab(ab, inputs.target_ab))
        add(
            "perceptual",
            weights.perceptual_weight,
            lambda: losses.perceptual(
                {"params": constants["vgg"]},
                output_rgb,
                gt_rgb,
                dict(weights.perceptual_layers.to_dict()),
            ),
        )
        add(
            "colorfulness",
            weights.colorfulness_weight,
            lambda: losses.colorfulness_term(output_rgb),
        )
        extras: dict[str, Any] = {"output_rgb": output_rgb, "gt_rgb": gt_rgb}
        if self.discriminator is not None:
            d = state.discriminator
            fake_logits, d_updated = self.discriminator.apply(
                {"params": jax.lax.stop_gradient(d.params), "batch_stats": d.batch_stats},
                output_rgb,
                update_stats=True,
                mutable=["batch_stats"],
            )
            extras["discriminator_stats"] = d_updated["batch_stats"]
            add("gan", weights.gan_weight, lambda: losses.gan_generator(fake_logits))
        if "relevance" in aux:
            terms.update(_relevance_stats(aux["relevance"], inputs))
        return total, (terms, new_stats, extras)

    def _discriminator_update(self, d: DiscriminatorState, extras: Mapping[str, Any]):
        """One discriminator step on the ground truth and the detached pre-update output.

        The spectral-norm vectors advance on every pass, in the official order: the
        generator's pass (already done), then the real pass, then the fake pass.
        """
        real_rgb = extras["gt_rgb"]
        fake_rgb = jax.lax.stop_gradient(extras["output_rgb"])

        def d_loss_fn(d_params):
            real_logits, stats = self.discriminator.apply(
                {"params": d_params, "batch_stats": extras["discriminator_stats"]},
                real_rgb,
                update_stats=True,
                mutable=["batch_stats"],
            )
            fake_logits, stats = self.discriminator.apply(
                {"params": d_params, "batch_stats": stats["batch_stats"]},
                fake_rgb,
                update_stats=True,
                mutable=["batch_stats"],
            )
            loss = losses.gan_discriminator(real_logits, fake_logits)
            scores = (jnp.mean(real_logits), jnp.mean(fake_logits))
            return loss, (stats["batch_stats"], scores)

        (d_loss, (d_stats, (real_score, fake_score))), d_grads = jax.value_and_grad(
            d_loss_fn, has_aux=True
        )(d.params)
        d_updates, d_opt_state = self.discriminator_tx.update(d_grads, d.opt_state, d.params)
        new_d = DiscriminatorState(
            params=optax.apply_updates(d.params, d_updates),
            batch_stats=d_stats,
            opt_state=d_opt_state,
        )
        metrics = {
            "d_loss": d_loss,
            "d_real_logit": real_score,
            "d_fake_logit": fake_score,
            "d_grad_norm": _global_norm(d_grads),
            "d_update_norm": _global_norm(d_updates),
        }
        return new_d, metrics

    def _semantic_loss(self, params, state, inputs):
        """Stage 2: L_s (Eq. 7) on pairs whose audio is present and belongs to the image."""
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
            "semantic_cosine": losses.weighted_mean(cosine, weight),
        }
        new_stats = _merge_stats(state.batch_stats, updated["batch_stats"])
        total = float(self.stage.loss.semantic_weight) * loss
        return total, (terms, new_stats, {})

    def _relevance_loss(self, params, state, inputs, labels, rng):
        """RNet: BCE on each image with its own audio and with another clip's (Eq. 11)."""
        batch = inputs.gray_l.shape[0]
        partner = losses.negative_partners(rng, batch)
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
            "relevance_accuracy_own": losses.weighted_mean(own_hit, own_weight),
            "relevance_accuracy_negative": losses.weighted_mean(
                negative_logit < 0, negative_weight
            ),
            "relevance_r_own": losses.weighted_mean(jax.nn.sigmoid(own_logit), own_weight),
            "relevance_r_negative": losses.weighted_mean(
                jax.nn.sigmoid(negative_logit), negative_weight
            ),
            "relevance_negatives": jnp.sum(negative_weight.astype(jnp.float32)),
        }
        new_stats = _merge_stats(state.batch_stats, updated["batch_stats"])
        total = float(self.stage.loss.relevance_weight) * loss
        return total, (terms, new_stats, {})

    # --------------------------------------------------------------------------- preview

    def preview(
        self, params: Tree, batch_stats: Tree, batch: Mapping[str, jax.Array], constants: Tree
    ) -> dict[str, jax.Array]:
        """Images of a grid row per sample: gray | unguided (r = 0) | ours | ground truth.

        Returns uint8 [B, H, W, 3] images under "gray", "unguided", "ours", "truth", r [B]
        ("relevance"; NaN where the stage has no r, e.g. the baseline) and "mask" [B] (False
        for padding).
        """
        del constants
        inputs = preprocess.model_inputs(batch, self.config)
        variables = {"params": params, "batch_stats": batch_stats}
        unguided, _ = self.model.apply(variables, inputs.gray_l, mode="baseline")
        batch_size = inputs.gray_l.shape[0]
        mode = self.stage.mode or "audio"  # stage 2 and RNet: what stage 3 would start from
        if mode == "baseline":
            ours, relevance = unguided, jnp.full((batch_size,), jnp.nan)
        else:
            kwargs: dict[str, Any] = {}
            if mode == "visual":
                kwargs["color_rgb"] = inputs.color_rgb
            else:
                force = self.stage.force_relevance
                if self.stage.kind == SEMANTIC or not self.config.use_relevance:
                    force = 1.0
                kwargs.update(
                    spectrogram=inputs.spectrogram,
                    has_audio=inputs.has_audio,
                    force_relevance=force,
                )
            ours, aux = self.model.apply(variables, inputs.gray_l, mode=mode, **kwargs)
            relevance = aux["relevance"]
        to_u8 = lambda ab: color.l_ab_to_rgb_uint8(inputs.gray_l, ab)
        return {
            "gray": color.rgb_float_to_uint8(color.gray_rgb_from_l(inputs.gray_l)),
            "unguided": to_u8(unguided),
            "ours": to_u8(ours),
            "truth": batch["rgb"],
            "relevance": relevance,
            "mask": inputs.mask,
        }


def _relevance_stats(relevance: jax.Array, inputs: preprocess.ModelInputs) -> dict[str, jax.Array]:
    """Mean r over the batch and over the pairs that have audio."""
    return {
        "relevance_mean": jnp.mean(relevance),
        "relevance_mean_with_audio": losses.weighted_mean(relevance, inputs.has_audio),
    }
