"""Checkpoints of a stage (orbax) and its final variables (docs/runs.md).

`W/<stage>/checkpoints/<step>/` holds the train state and the data iterator's state together,
written by an orbax `CheckpointManager` synchronously: orbax writes into a temporary directory
and renames it when complete, so a process killed at any moment leaves either the previous
checkpoints or a finished new one, never a half-written one it would read. The train state's
small leaves (biases, norms, statistics, optimizer counts: most of its hundreds of leaves) are
written packed, one array per dtype, with a `layout` that names every leaf: orbax's cost is per
array (about 2.5 ms each on a 2-core CPU, whatever its size; bench/checkpoint.py).
`W/<stage>/final/` holds `{"params", "batch_stats"}` (`convert.common.save_variables`); a stage
is complete iff it exists.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any, Protocol

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Sharding

from aiaic_jax.convert.common import (
    restore_variables,
    save_variables,
    write_replicated_arrays_once,
)

CHECKPOINTS = "checkpoints"
FINAL = "final"
TOPOLOGY = "topology"
LAYOUT = "layout"
# Leaves of at most this many elements are written packed (`_pack`); larger ones as themselves.
PACKED_LEAF_ELEMENTS = 1 << 16


def stage_dir(workdir: str | os.PathLike, stage: str) -> Path:
    return Path(workdir).absolute() / stage


def final_dir(workdir: str | os.PathLike, stage: str) -> Path:
    return stage_dir(workdir, stage) / FINAL


def is_complete(workdir: str | os.PathLike, stage: str) -> bool:
    """A stage is complete iff its `final` variables exist."""
    return final_dir(workdir, stage).is_dir()


def save_final(workdir: str | os.PathLike, stage: str, variables: dict[str, Any]) -> Path:
    """Writes the stage's final model variables (every process must call it)."""
    return save_variables(final_dir(workdir, stage), variables)


def load_final(workdir: str | os.PathLike, stage: str) -> dict[str, Any]:
    return restore_variables(final_dir(workdir, stage))


@dataclasses.dataclass(frozen=True)
class Topology:
    """Who wrote a checkpoint: process and device counts and the stage's global batch.

    None where a checkpoint of an older version does not say (the process count is then read
    off the data iterator's files)."""

    process_count: int
    device_count: int | None = None
    batch_size: int | None = None

    @classmethod
    def current(cls, batch_size: int) -> Topology:
        return cls(jax.process_count(), jax.device_count(), int(batch_size))

    def describe(self) -> str:
        devices = "" if self.device_count is None else f", {self.device_count} devices"
        return f"{self.process_count} processes{devices}"


class HasState(Protocol):
    """A data iterator whose position a checkpoint saves."""

    def get_state(self) -> dict[str, Any]: ...


class _SavedState(grain.DatasetIterator):
    """A data iterator's state, taken when a checkpoint is written, in the form grain's orbax
    handler saves: it writes a `DatasetIterator`'s `get_state()` as JSON (and expects the bytes
    of an older iterator kind from anything else), so the files stay grain's
    `process_<i>-of-<n>.json` whichever object the state came from."""

    def __init__(self, state: dict[str, Any]):
        super().__init__()
        self._state = state

    def __next__(self) -> Any:
        raise TypeError("a saved data iterator state yields no elements")

    def get_state(self) -> dict[str, Any]:
        return self._state

    def set_state(self, state: dict[str, Any]) -> None:
        raise TypeError("a saved data iterator state cannot be restored into")


class StageCheckpoints:
    """Periodic checkpoints of one stage: train state + data iterator, the last `keep` kept.

    Each checkpoint also records its `Topology`, so that a stage resumes on another number of
    devices or processes (the train state is replicated and is placed on the current mesh; the
    data iterator's state is per process and is restored only when the process count is the
    same).
    """

    def __init__(self, workdir: str | os.PathLike, stage: str, keep: int):
        self.directory = stage_dir(workdir, stage) / CHECKPOINTS
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max(1, int(keep)),
            create=True,
            # Synchronous: the step after a save never races with the writer, and a save
            # returns only once the checkpoint is renamed into place.
            enable_async_checkpointing=False,
            cleanup_tmp_directories=True,
        )
        write_replicated_arrays_once()
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: Any, data_iterator: HasState, batch_size: int) -> None:
        """Writes the train state, the data iterator's state and the topology as `step`.

        data_iterator: a grain `DatasetIterator`, or anything with its `get_state()` (the
        training loop's `prefetch.DevicePrefetch`, whose state is that of the last consumed
        batch, not of the batches it made ahead)."""
        topology = dataclasses.asdict(Topology.current(batch_size))
        packed, layout = _pack(state)
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(packed),
                layout=ocp.args.JsonSave(layout),
                data=grain.checkpoint.CheckpointSave(_SavedState(data_iterator.get_state())),
                topology=ocp.args.JsonSave(topology),
            ),
            force=True,
        )
        self.manager.wait_until_finished()

    def topology(self, step: int) -> Topology:
        """The topology that wrote the checkpoint of `step`."""
        step_dir = self.directory / str(step)
        if (step_dir / TOPOLOGY).exists():
            restored = self.manager.restore(
                step, args=ocp.args.Composite(topology=ocp.args.JsonRestore())
            )
            return Topology(**restored["topology"])
        # Older checkpoints: grain writes one `process_<i>-of-<n>.json` per process.
        counts = {
            int(match.group(1))
            for path in (step_dir / "data").glob("process_*-of-*.json")
            if (match := re.fullmatch(r"process_\d+-of-(\d+)\.json", path.name))
        }
        if len(counts) != 1:
            raise ValueError(f"{step_dir}: cannot tell how many processes wrote this checkpoint")
        return Topology(process_count=counts.pop())

    def layout_differences(self, step: int, abstract_state: Any) -> list[str] | None:
        """How the variables stored at `step` differ in layout from `abstract_state`'s: paths
        and shapes of the model's and the discriminator's params and batch_stats, which change
        when the code's model does. [] when they agree; None when the checkpoint's metadata
        does not read (a damaged checkpoint: restoring it will tell). Reads the checkpoint's
        layout (or, in one written before the packing, the tree metadata that orbax writes
        beside the arrays, `_METADATA`), not the arrays themselves."""
        try:
            layout = self.layout(step)
            if layout is not None:
                saved_leaves = {
                    leaf["path"]: tuple(leaf["shape"])
                    for leaf in layout["leaves"]
                    if _is_variable(tuple(leaf["path"].split("/")))
                }
            else:  # written before the state was packed
                saved_leaves = _saved_variable_leaves(self.directory / str(step) / "state")
        except (OSError, ValueError, KeyError, TypeError):
            return None  # unreadable metadata is damage, which the restore reports
        wanted = _variable_leaves(abstract_state)
        problems = [
            f"{path}: shape {saved_leaves[path]} in the checkpoint, {wanted[path]} in the model"
            for path in sorted(wanted.keys() & saved_leaves.keys())
            if saved_leaves[path] != wanted[path]
        ]
        problems += [
            f"{path}: only in the checkpoint"
            for path in sorted(saved_leaves.keys() - wanted.keys())
        ]
        problems += [
            f"{path}: only in the model" for path in sorted(wanted.keys() - saved_leaves.keys())
        ]
        return problems

    def restore(
        self,
        step: int,
        abstract_state: Any,
        sharding: Sharding,
        data_iterator: grain.DatasetIterator | None,
    ) -> Any:
        """The train state of `step` placed with `sharding` on the current devices.

        data_iterator: moved to where it was when the checkpoint was written; None restores
        the train state alone (another process count: the per-process iterator states of the
        writer do not describe this run's shards).
        """
        layout = self.layout(step)
        if layout is None:  # written before the state was packed: the state's own tree
            target = jax.tree.map(
                lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                abstract_state,
            )
        else:
            target = _packed_target(layout, sharding)
        items = {"state": ocp.args.StandardRestore(target)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        if layout is None:
            return restored["state"]
        return _unpack(restored["state"], layout, abstract_state, sharding)

    def state_leaves(self, step: int) -> dict[str, np.ndarray]:
        """Every leaf of the train state of `step` on this host, by path ("params/a2v/...",
        "opt_state/..."), without the model: for inspecting a checkpoint."""
        layout = self.layout(step)
        if layout is None:  # written before the state was packed
            restored = self.manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore())
            )["state"]
            flat = jax.tree_util.tree_flatten_with_path(restored)[0]
            return {"/".join(_names(path)): np.asarray(leaf) for path, leaf in flat}
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        items = ocp.args.Composite(state=ocp.args.StandardRestore(_packed_target(layout, device)))
        restored = self.manager.restore(step, args=items)["state"]
        return {path: np.asarray(value) for path, value in _unpacked_leaves(restored, layout)}

    def layout(self, step: int) -> dict[str, Any] | None:
        """The packed state's layout at `step` (None for a checkpoint without one)."""
        if not (self.directory / str(step) / LAYOUT).exists():
            return None
        items = ocp.args.Composite(**{LAYOUT: ocp.args.JsonRestore()})
        return self.manager.restore(step, args=items)[LAYOUT]

    def set_aside(self, step: int) -> Path:
        """Renames the checkpoint of `step` to `<step>.damaged[.N]` (kept for inspection, no
        longer a step) and returns the new path."""
        source = self.directory / str(step)
        target = self.directory / f"{step}.damaged"
        number = 1
        while target.exists():
            target = self.directory / f"{step}.damaged.{number}"
            number += 1
        if jax.process_index() == 0:
            source.rename(target)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"set aside checkpoint {step}")
        self.manager.reload()
        return target

    def close(self) -> None:
        self.manager.close()


_VARIABLE_PREFIXES = (
    ("params",),
    ("batch_stats",),
    ("discriminator", "params"),
    ("discriminator", "batch_stats"),
)


def _names(path: tuple[Any, ...]) -> tuple[str, ...]:
    return tuple(
        str(getattr(key, "key", getattr(key, "name", getattr(key, "idx", key)))) for key in path
    )


def _is_variable(names: tuple[str, ...]) -> bool:
    return any(names[: len(prefix)] == prefix for prefix in _VARIABLE_PREFIXES)


def _variable_leaves(tree: Any) -> dict[str, tuple[int, ...]]:
    """{"params/backbone/...": shape} for the leaves of a train state (or of its checkpoint
    metadata) under `_VARIABLE_PREFIXES`."""
    leaves = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        names = _names(path)
        if _is_variable(names):
            leaves["/".join(names)] = tuple(getattr(leaf, "shape", ()))
    return leaves


def _local_value(leaf: Any) -> np.ndarray:
    """A replicated leaf's value on this host (its first local replica)."""
    if isinstance(leaf, jax.Array):
        return np.asarray(leaf.addressable_data(0))
    return np.asarray(leaf)


def _pack(state: Any) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The train state as orbax writes it: {"packed": {dtype: 1-D array of every small leaf of
    that dtype, end to end}, "arrays": {index: a large leaf itself}}, and its layout: every
    leaf's path (as `_variable_leaves` names it), shape, dtype and place. The packed arrays
    are placed as the state's leaves are (replicated), so orbax writes each once."""
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    sharding = next((leaf.sharding for _, leaf in flat if isinstance(leaf, jax.Array)), None)
    pieces: dict[str, list[np.ndarray]] = {}
    offsets: dict[str, int] = {}
    arrays: dict[str, Any] = {}
    leaves = []
    for index, (path, leaf) in enumerate(flat):
        shape, dtype = tuple(np.shape(leaf)), np.dtype(leaf.dtype).name
        entry = {"path": "/".join(_names(path)), "shape": list(shape), "dtype": dtype}
        if int(np.prod(shape)) <= PACKED_LEAF_ELEMENTS:
            value = _local_value(leaf).reshape(-1)
            entry["offset"] = offsets.get(dtype, 0)
            pieces.setdefault(dtype, []).append(value)
            offsets[dtype] = entry["offset"] + value.size
        else:
            entry["array"] = str(index)
            arrays[str(index)] = leaf
        leaves.append(entry)
    packed = {}
    for dtype, values in pieces.items():
        joined = np.concatenate(values)
        if joined.size:  # orbax writes no empty arrays; empty leaves need none
            packed[dtype] = joined if sharding is None else jax.device_put(joined, sharding)
    return {"packed": packed, "arrays": arrays}, {"format": 1, "leaves": leaves}


def _packed_target(layout: dict[str, Any], sharding: Sharding) -> dict[str, Any]:
    """Shapes, dtypes and placement of what `_pack` wrote, for orbax's restore."""
    sizes: dict[str, int] = {}
    arrays = {}
    for leaf in layout["leaves"]:
        if "array" in leaf:
            arrays[leaf["array"]] = jax.ShapeDtypeStruct(
                tuple(leaf["shape"]), jnp.dtype(leaf["dtype"]), sharding=sharding
            )
        else:
            end = leaf["offset"] + int(np.prod(leaf["shape"], dtype=np.int64))
            sizes[leaf["dtype"]] = max(sizes.get(leaf["dtype"], 0), end)
    packed = {
        dtype: jax.ShapeDtypeStruct((size,), jnp.dtype(dtype), sharding=sharding)
        for dtype, size in sizes.items()
        if size
    }
    return {"packed": packed, "arrays": arrays}


def _unpacked_leaves(restored: dict[str, Any], layout: dict[str, Any]) -> list[tuple[str, Any]]:
    """(path, value) of every leaf of a restored `_pack`: a large leaf as orbax restored it, a
    small one as a numpy view into its packed array on this host."""
    packed = {dtype: _local_value(array) for dtype, array in restored.get("packed", {}).items()}
    leaves = []
    for leaf in layout["leaves"]:
        if "array" in leaf:
            leaves.append((leaf["path"], restored["arrays"][leaf["array"]]))
            continue
        # None of a dtype is written where all its leaves are empty.
        values = packed.get(leaf["dtype"], np.zeros(0, jnp.dtype(leaf["dtype"])))
        size = int(np.prod(leaf["shape"], dtype=np.int64))
        value = values[leaf["offset"] : leaf["offset"] + size].reshape(leaf["shape"])
        leaves.append((leaf["path"], value))
    return leaves


def _unpack(
    restored: dict[str, Any], layout: dict[str, Any], abstract_state: Any, sharding: Sharding
) -> Any:
    """`abstract_state`'s tree filled from a restored `_pack` (leaves matched by path), every
    leaf placed with `sharding`."""
    saved = dict(_unpacked_leaves(restored, layout))
    flat, treedef = jax.tree_util.tree_flatten_with_path(abstract_state)
    if len(saved) != len(flat):
        raise ValueError(f"the checkpoint has {len(saved)} leaves, the state {len(flat)}")
    values = []
    for path, wanted in flat:
        name = "/".join(_names(path))
        value = saved.get(name)
        if value is None or np.shape(value) != np.shape(wanted):
            raise ValueError(f"the checkpoint has no leaf {name} of shape {np.shape(wanted)}")
        values.append(value if isinstance(value, jax.Array) else jax.device_put(value, sharding))
    return jax.tree_util.tree_unflatten(treedef, values)


def _saved_variable_leaves(state_dir: Path) -> dict[str, tuple[int, ...]]:
    """`_variable_leaves` of a saved train state, from orbax's `_METADATA` (key paths and the
    written shape of every array; the state is replicated, so that is the global shape)."""
    tree = json.loads((state_dir / "_METADATA").read_text())["tree_metadata"]
    leaves = {}
    for entry in tree.values():
        names = tuple(str(key["key"]) for key in entry["key_metadata"])
        value = entry.get("value_metadata") or {}
        if "write_shape" not in value:
            continue  # an empty node
        if _is_variable(names):
            leaves["/".join(names)] = tuple(value["write_shape"])
    return leaves
