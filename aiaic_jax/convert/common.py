"""Reading official checkpoints and writing Flax variables as orbax checkpoints.

A converted checkpoint holds a partial variable tree of the composed model, keyed by its
top-level modules: `{"params": {"backbone": ...}, "batch_stats": {"backbone": ...}}` for DDColor,
`{"params": {"audio": ...}, "batch_stats": {"audio": ...}}` for the VGGSound audio network. A
stage names it as `config.init_from`, and `merge_variables` lays it over freshly initialised
variables.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from aiaic_jax.trees import CheckpointMismatch as CheckpointMismatch
from aiaic_jax.trees import flatten, set_leaf
from aiaic_jax.trees import merge_variables as merge_variables

StateDict = dict[str, np.ndarray]
# Nested dict of arrays, as Flax variables are.
Tree = dict[str, Any]

_WRAPPER_KEYS = ("params", "state_dict", "model_state_dict", "model")


def read_state_dict(path: str | os.PathLike) -> StateDict:
    """Reads a PyTorch checkpoint (.pth, .pt, .pth.tar) or a .safetensors file as numpy arrays.

    A checkpoint that wraps its state dict (`{'params': ...}`, `{'state_dict': ...}`,
    `{'model_state_dict': ...}`) is unwrapped. PyTorch files need torch (the `torch` extra);
    they are read with `weights_only=True`, so no code in the file runs.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        try:
            return dict(load_file(str(path)))
        except Exception as e:
            raise ValueError(f"{path}: not a readable safetensors file ({e})") from e
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            f"{path}: reading PyTorch checkpoints needs torch; install the CPU build with "
            "`pip install torch==2.13.0`, or convert the file to .safetensors first"
        ) from e
    if _version(torch.__version__) < (2, 6):
        raise ImportError(
            f"{path}: torch {torch.__version__} cannot read checkpoints safely "
            "(torch.load(weights_only=True) is safe only from 2.6, CVE-2025-32434); "
            "install torch 2.6 or newer, e.g. `pip install torch==2.13.0`"
        )
    try:
        raw = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({e})") from e
    raw = _unwrap(raw, path)
    out: StateDict = {}
    for key, value in raw.items():
        if not hasattr(value, "detach"):
            continue  # counters and other non-tensor entries
        out[key] = (
            value.detach().to(torch.float32).numpy()
            if value.is_floating_point()
            else (value.detach().numpy())
        )
    return out


def _version(text: str) -> tuple[int, ...]:
    """ "2.13.0+cpu" -> (2, 13, 0)."""
    numbers = []
    for part in text.split("+")[0].split(".")[:3]:
        digits = "".join(c for c in part if c.isdigit()) if part else ""
        numbers.append(int(digits) if digits else 0)
    return tuple(numbers)


def _unwrap(raw: Any, path: Path) -> Mapping[str, Any]:
    while isinstance(raw, Mapping):
        wrapped = [k for k in _WRAPPER_KEYS if k in raw and isinstance(raw[k], Mapping)]
        if not wrapped:
            return raw
        raw = raw[wrapped[0]]
    raise ValueError(f"{path}: expected a state dict, found {type(raw).__name__}")


def strip_prefix(state: StateDict, prefix: str) -> StateDict:
    """Keys that start with `prefix`, without it (e.g. 'audnet.' in VGGSound's H.pth.tar)."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


# A target leaf: the path in the Flax tree, e.g. ("params", "encoder", "stem", "kernel").
TargetPath = tuple[str, ...]
Transform = Callable[[np.ndarray], np.ndarray]


def assign(
    state: StateDict,
    mapping: Mapping[TargetPath, tuple[str, Transform]],
    template: Tree,
    *,
    ignore: Callable[[str], bool] = lambda key: False,
    source: str = "checkpoint",
) -> Tree:
    """Builds a Flax tree from a state dict by an explicit key map, checking everything.

    mapping: target path -> (source key, transform such as a kernel transpose).
    template: a tree with the expected shapes (e.g. `jax.eval_shape` of the model's init).
    ignore: source keys that are known to have no counterpart (e.g. a classifier head).
    Raises CheckpointMismatch listing every missing source key, every source key left unused,
    every target leaf without a source, and every shape that differs.
    """
    problems: list[str] = []
    used: set[str] = set()
    out: Tree = {}
    template_leaves = dict(flatten(template))
    for target, (key, transform) in mapping.items():
        if target not in template_leaves:
            problems.append(f"target {'/'.join(target)} does not exist in the model")
            continue
        if key not in state:
            problems.append(f"missing key {key} (for {'/'.join(target)})")
            continue
        used.add(key)
        value = np.asarray(transform(state[key]))
        expected = tuple(template_leaves[target].shape)
        if value.shape != expected:
            problems.append(
                f"shape of {key} {tuple(state[key].shape)} -> {value.shape} does not fit "
                f"{'/'.join(target)} {expected}"
            )
            continue
        set_leaf(out, target, value.astype(template_leaves[target].dtype))
    unmapped_targets = sorted("/".join(t) for t in template_leaves if t not in mapping)
    problems += [f"no source for {t}" for t in unmapped_targets]
    unused = sorted(k for k in state if k not in used and not ignore(k))
    problems += [f"unexpected key {k} {tuple(state[k].shape)}" for k in unused]
    if problems:
        raise CheckpointMismatch(
            f"{source} does not fit the model ({len(problems)} problems):\n  "
            + "\n  ".join(problems)
        )
    return out


def write_replicated_arrays_once() -> None:
    """Makes orbax write each replicated array from one replica (idempotent, process-wide).

    By default orbax splits every replicated array into one slice per replica and writes the
    slices in parallel; each slice is a compiled program, one per shape and device set. For a
    model with hundreds of leaves replicated over a data-parallel mesh that is hundreds of
    compilations on the first save (the tiny test model on 4 CPU devices, under cProfile: 33 s
    of a 125-s stage went to its first checkpoint; written from one replica, the stage took
    86 s and the save no longer showed among its costs).
    """
    global _REPLICATED_WRITES_SET
    if _REPLICATED_WRITES_SET:
        return
    import jax
    import orbax.checkpoint as ocp

    current = ocp.type_handlers.get_type_handler(jax.Array)
    handler = ocp.type_handlers.ArrayHandler(
        use_replica_parallel=False,
        array_metadata_store=getattr(current, "_array_metadata_store", None),
    )
    ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)
    _REPLICATED_WRITES_SET = True


_REPLICATED_WRITES_SET = False


def save_variables(directory: str | os.PathLike, variables: Mapping[str, Any]) -> Path:
    """Writes a variable tree as an orbax checkpoint (atomically: orbax renames when done)."""
    import orbax.checkpoint as ocp

    write_replicated_arrays_once()
    directory = Path(directory).absolute()
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(directory, dict(variables))
    return directory


def restore_variables(directory: str | os.PathLike) -> Tree:
    """Reads a variable tree written by `save_variables`, as numpy arrays, in every process.

    The arrays are read without the shardings stored beside them, which name the devices of
    the run that wrote them: a checkpoint written by a pod, a 4-device run or a conversion
    restores the same way on one CPU, another device count or another number of processes.
    """
    import jax
    import orbax.checkpoint as ocp

    directory = Path(directory).absolute()
    if not directory.exists():
        raise FileNotFoundError(f"{directory}: no such checkpoint")
    with ocp.PyTreeCheckpointer() as checkpointer:
        tree = checkpointer.metadata(directory).item_metadata.tree
        as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        return checkpointer.restore(directory, restore_args=as_numpy)
