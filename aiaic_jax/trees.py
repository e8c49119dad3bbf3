"""Nested dicts of arrays, as Flax variables are: flattening by path and laying one tree over
another. Used by the models (pretrained pieces laid over a fresh initialisation), the training
loop (`init_from`) and the converters, so it depends on nothing else in the project."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

Tree = dict[str, Any]
Path = tuple[str, ...]


class CheckpointMismatch(ValueError):
    """Variables (of a checkpoint) do not fit the model; the message lists every problem."""


def flatten(tree: Mapping[str, Any], prefix: Path = ()) -> list[tuple[Path, Any]]:
    """[(path, leaf)] in the tree's order; a leaf is anything that is not a Mapping."""
    items: list[tuple[Path, Any]] = []
    for key, value in tree.items():
        if isinstance(value, Mapping):
            items += flatten(value, (*prefix, key))
        else:
            items.append(((*prefix, key), value))
    return items


def set_leaf(tree: Tree, path: Path, value: Any) -> None:
    """tree[path[0]]...[path[-1]] = value, creating the dicts on the way."""
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def merge_variables(base: Mapping[str, Any], update: Mapping[str, Any]) -> Tree:
    """`base` with every leaf that `update` has replaced; `update` may be a partial tree.

    Raises CheckpointMismatch if `update` has a leaf that `base` lacks or of another shape.
    """
    base_leaves = dict(flatten(base))
    problems = []
    out: Tree = {}
    for path, value in base_leaves.items():
        set_leaf(out, path, value)
    for path, value in flatten(update):
        if path not in base_leaves:
            problems.append(f"{'/'.join(path)} is not in the model")
        elif tuple(np.shape(value)) != tuple(np.shape(base_leaves[path])):
            problems.append(
                f"{'/'.join(path)} has shape {tuple(np.shape(value))}, the model "
                f"{tuple(np.shape(base_leaves[path]))}"
            )
        else:
            set_leaf(out, path, value)
    if problems:
        raise CheckpointMismatch("variables do not fit the model:\n  " + "\n  ".join(problems))
    return out
