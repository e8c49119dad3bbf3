"""Optimizers and freezing: what trains in a stage is data (regexes over parameter paths).

A parameter trains when its path (`backbone/encoder/stages_0/...`) matches one of the stage's
`trainable` regexes and none of its `frozen` ones. Everything else is frozen by optax masking:
it gets no update and no optimizer moments.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import ml_collections
import optax

TRAIN, FREEZE = "train", "freeze"


def param_path(path: tuple[Any, ...]) -> str:
    """'backbone/encoder/kernel' for a pytree key path."""
    return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def trainable_mask(params: Any, trainable: Sequence[str], frozen: Sequence[str] = ()) -> Any:
    """A pytree of bools like `params`: True where the parameter trains."""
    trainable_res = [re.compile(p) for p in trainable]
    frozen_res = [re.compile(p) for p in frozen]

    def trains(path: tuple[Any, ...], _: Any) -> bool:
        name = param_path(path)
        return any(r.search(name) for r in trainable_res) and not any(
            r.search(name) for r in frozen_res
        )

    return jax.tree_util.tree_map_with_path(trains, params)


def count_trainable(params: Any, mask: Any) -> int:
    return sum(leaf.size for leaf, m in zip(jax.tree.leaves(params), jax.tree.leaves(mask)) if m)


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """Constant rate multiplied by `lr_gamma` at each of `lr_milestones` (PyTorch MultiStepLR),
    and, when `lr_end_factor` < 1, decayed linearly to `lr * lr_end_factor` over
    `lr_decay_steps` (the stage's length, filled in by `stages.resolve`; DisColor's decay)."""
    milestones = {
        int(m): float(config.get("lr_gamma", 0.5)) for m in config.get("lr_milestones", ())
    }
    stepped = optax.piecewise_constant_schedule(float(config.lr), milestones)
    end_factor = float(config.get("lr_end_factor", 1.0))
    if end_factor == 1.0:
        return stepped
    decay_steps = int(config.get("lr_decay_steps", 0))
    if decay_steps <= 0:
        raise ValueError(f"lr_end_factor={end_factor} needs lr_decay_steps > 0")
    linear = optax.linear_schedule(1.0, end_factor, decay_steps)
    return lambda step: stepped(step) * linear(step)


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """AdamW or Adam from an optimizer config (`name`, `lr`, `b1`, `b2`, `eps`, `weight_decay`,
    `lr_milestones`, `lr_gamma`, `lr_end_factor`, `lr_decay_steps`, `grad_clip_norm`)."""
    schedule = learning_rate_schedule(config)
    name = config.name.lower()
    if name == "adamw":
        tx = optax.adamw(
            schedule, b1=config.b1, b2=config.b2, eps=config.eps, weight_decay=config.weight_decay
        )
    elif name == "adam":
        tx = optax.adam(schedule, b1=config.b1, b2=config.b2, eps=config.eps)
    else:
        raise ValueError(f"unknown optimizer {config.name!r}; expected 'adamw' or 'adam'")
    clip = config.get("grad_clip_norm", None)
    if clip:
        tx = optax.chain(optax.clip_by_global_norm(float(clip)), tx)
    return tx


def masked(tx: optax.GradientTransformation, mask: Any) -> optax.GradientTransformation:
    """`tx` on the parameters where `mask` is True; the rest get zero updates and no state."""
    labels = jax.tree.map(lambda m: TRAIN if m else FREEZE, mask)
    return optax.multi_transform({TRAIN: tx, FREEZE: optax.set_to_zero()}, labels)


def optimizer_config(**overrides: Any) -> ml_collections.ConfigDict:
    """Optimizer defaults: DDColor's generator (AdamW 1e-4, betas 0.9/0.99, wd 0.01)."""
    config = ml_collections.ConfigDict(
        {
            "name": "adamw",
            "lr": 1e-4,
            "b1": 0.9,
            "b2": 0.99,
            "eps": 1e-8,
            "weight_decay": 0.01,
            "lr_milestones": (),
            "lr_gamma": 0.5,
            "grad_clip_norm": 0.0,
            "lr_end_factor": 1.0,  # < 1: linear decay to lr * lr_end_factor over the stage
            "lr_decay_steps": 0,  # 0: the stage's number of steps
        }
    )
    config.update(overrides)
    return config


def tree_paths(tree: Mapping[str, Any]) -> list[str]:
    """Every leaf path of a tree, for messages and tests."""
    return [param_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
