"""The train state and what every stage's step shares (STYLE.md: the train step).

A stage's step (`aiaic_jax.train.steps`) is a `Step` whose `loss` says what the stage computes;
this module holds the rest, the same for every stage:

    init_state(variables, discriminator_variables) -> TrainState
    train_step(state, batch, rng, constants) -> (state, metrics)     pure; the loop jits it
    preview(params, batch_stats, batch, constants) -> images          for the image grids

`batch` is a host batch of the input pipeline (uint8 RGB, int16 audio, ...); the Lab targets
and spectrograms are computed inside the step (`preprocess.model_inputs`). `rng` is the raw
key data of the stage's key; the step's randomness is `fold_in(rng, step)`, so a resumed run
draws what an uninterrupted one does without any key in the checkpoint. `constants` holds
frozen networks a loss reads (e.g. `{"vgg": ...}`), passed as an argument rather than closed
over so that their weights are not baked into the compiled program.

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
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import traverse_util

from aiaic_jax import color, preprocess
from aiaic_jax.models.aiaic import AIAIC
from aiaic_jax.train import optim
from aiaic_jax.train.stages import SEMANTIC, Stage

Tree = Any
NO_BAD_STEP = -1
_ADVERSARY_BRANCH = 2**31 - 1  # folded into the stage's key for the adversary's draws


@flax.struct.dataclass
class DiscriminatorState:
    params: Tree
    batch_stats: Tree  # e.g. spectral-norm power-iteration vectors
    opt_state: optax.OptState


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 [], updates done so far
    params: Tree
    batch_stats: Tree
    opt_state: optax.OptState
    discriminator: DiscriminatorState | None  # only when the stage trains an adversary
    first_bad_step: jax.Array  # int32 [], the first step with a non-finite loss or gradient

    def variables(self) -> dict[str, Tree]:
        return {"params": self.params, "batch_stats": self.batch_stats}


def flat(tree: Tree) -> dict[tuple[str, ...], Any]:
    return traverse_util.flatten_dict(flax.core.unfreeze(tree))


def split(params: Tree, mask: Tree) -> tuple[dict, dict]:
    """(trainable, frozen) flat dicts keyed by parameter path."""
    flat_params, flat_mask = flat(params), flat(mask)
    trainable = {k: v for k, v in flat_params.items() if flat_mask[k]}
    frozen = {k: v for k, v in flat_params.items() if not flat_mask[k]}
    return trainable, frozen


def join(trainable: Mapping, frozen: Mapping) -> Tree:
    return traverse_util.unflatten_dict({**frozen, **trainable})


def merge_stats(old: Tree, new: Tree) -> Tree:
    """`old` with every leaf that the apply returned in `new` replaced."""
    return traverse_util.unflatten_dict({**flat(old), **flat(new)})


def any_trains(mask: Tree, prefix: tuple[str, ...], exclude: str | None = None) -> bool:
    """Whether any parameter under `prefix` (and not under a module named `exclude`) trains."""
    for path, trains in flat(mask).items():
        if path[: len(prefix)] == prefix and trains and (exclude is None or exclude not in path):
            return True
    return False


def global_norm(tree: Mapping) -> jax.Array:
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.zeros((), jnp.float32)
    return optax.global_norm(leaves)


# What a stage's `loss` returns besides the loss: (terms, new batch_stats, extras).
LossAux = tuple[dict[str, jax.Array], Tree, dict[str, Any]]


class Step:
    """A stage's pure step functions over the shared parts (module docstring). Subclasses
    define `loss`, and a stage with an adversary `discriminator`, `discriminator_tx` and
    `update_discriminator`."""

    discriminator: nn.Module | None = None
    discriminator_tx: optax.GradientTransformation | None = None

    def __init__(self, config: ml_collections.ConfigDict, stage: Stage, model: AIAIC, params: Tree):
        """params: the model's params tree or its shapes (only the structure is used)."""
        self.config = config
        self.stage = stage
        self.model = model
        # What the backbone itself never trains (e.g. DisColor's pretrained SpixelNet).
        backbone_frozen = tuple(
            rf"^backbone/{name}/" for name in getattr(model.backbone, "frozen_modules", ())
        )
        self.mask = optim.trainable_mask(params, stage.trainable, stage.frozen + backbone_frozen)
        if optim.count_trainable(params, self.mask) == 0:
            raise ValueError(
                f"stage {stage.name}: no parameter matches trainable={list(stage.trainable)} "
                f"without matching frozen={list(stage.frozen + backbone_frozen)}"
            )
        self.tx = optim.masked(optim.make_optimizer(stage.optimizer), self.mask)
        self.schedule = optim.learning_rate_schedule(stage.optimizer)
        self.inject_nan_at_step = int(config.train.get("inject_nan_at_step", 0))

    def constants(self) -> dict[str, Any]:
        """Frozen networks the stage's loss reads (the `constants` argument of `train_step`)."""
        return {}

    def loss(
        self,
        params: Tree,
        state: TrainState,
        inputs: preprocess.ModelInputs,
        batch: Mapping[str, jax.Array],
        rng: jax.Array,
        constants: Tree,
    ) -> tuple[jax.Array, LossAux]:
        """(the loss to minimise, (terms, new batch_stats, extras)) of the stage."""
        raise NotImplementedError

    def init_discriminator(self, rng: jax.Array, image_size: int) -> dict[str, Any]:
        """Fresh variables of the stage's adversary (a stage with `discriminator`)."""
        raise NotImplementedError

    def update_discriminator(
        self, discriminator: DiscriminatorState, extras: Mapping[str, Any], rng: jax.Array
    ) -> tuple[DiscriminatorState, dict[str, jax.Array]]:
        raise NotImplementedError

    def init_state(self, variables: Tree, discriminator_variables: Tree | None) -> TrainState:
        """The state at step 0 from model (and discriminator) variables; jit-able."""
        params = variables["params"]
        discriminator = None
        if self.discriminator is not None:
            if discriminator_variables is None:
                raise ValueError(f"stage {self.stage.name} trains a GAN: give its variables")
            discriminator = DiscriminatorState(
                params=discriminator_variables["params"],
                batch_stats=discriminator_variables.get("batch_stats", {}),
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

    def train_step(
        self, state: TrainState, batch: Mapping[str, jax.Array], rng: jax.Array, constants: Tree
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        """One update of the stage's trainable parameters (and of the discriminator)."""
        inputs = preprocess.model_inputs(batch, self.config)
        stage_key = jax.random.wrap_key_data(rng)
        step_rng = jax.random.fold_in(stage_key, state.step)
        # The loss draws from the step's key itself; an adversary (e.g. a gradient penalty's
        # interpolation) from a branch of the stage's key that the loss never uses.
        discriminator_rng = jax.random.fold_in(
            jax.random.fold_in(stage_key, _ADVERSARY_BRANCH), state.step
        )
        trainable, frozen = split(state.params, self.mask)

        def loss_fn(trainable_params):
            params = join(trainable_params, frozen)
            return self.loss(params, state, inputs, batch, step_rng, constants)

        (loss, (terms, new_stats, extras)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            trainable
        )
        if self.inject_nan_at_step:  # a test of the non-finite guard
            loss = jnp.where(state.step + 1 == self.inject_nan_at_step, jnp.nan, loss)

        full_grads = join(grads, jax.tree.map(jnp.zeros_like, frozen))
        updates, opt_state = self.tx.update(full_grads, state.opt_state, state.params)
        flat_updates = flat(updates)
        # Frozen leaves pass through as they are (adding a zero update would turn -0.0 to 0.0).
        new_params = join(
            {k: optax.apply_updates(v, flat_updates[k]) for k, v in trainable.items()}, frozen
        )
        trainable_updates = {k: flat_updates[k] for k in trainable}
        metrics = {
            "loss": loss,
            **terms,
            "grad_norm": global_norm(grads),
            "update_norm": global_norm(trainable_updates),
            "lr": self.schedule(state.step),
        }
        finite = jnp.isfinite(loss) & jnp.isfinite(metrics["grad_norm"])

        discriminator = state.discriminator
        if self.discriminator is not None:
            discriminator, d_metrics = self.update_discriminator(
                state.discriminator, extras, discriminator_rng
            )
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
