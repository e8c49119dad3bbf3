"""Checkpoints of a stage (orbax) and its final variables (RUNS_CONTRACT.md).

`W/<stage>/checkpoints/<step>/` holds the train state and the data iterator's state together,
written by an orbax `CheckpointManager` synchronously: orbax writes into a temporary directory
and renames it when complete, so a process killed at any moment leaves either the previous
checkpoints or a finished new one, never a half-written one it would read. `W/<stage>/final/`
holds `{"params", "batch_stats"}` (`convert.common.save_variables`); a stage is complete iff it
exists.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Sharding

from aiaic_jax.convert.common import save_variables

CHECKPOINTS = "checkpoints"
FINAL = "final"


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
    return read_variables(final_dir(workdir, stage))


def read_variables(directory: str | os.PathLike) -> dict[str, Any]:
    """A variable tree written by `save_variables`, as numpy arrays in every process.

    Restoring as numpy ignores the shardings stored with the arrays, which name the devices
    of the run that wrote them: another process or device count could not place them.
    """
    directory = Path(directory).absolute()
    if not directory.exists():
        raise FileNotFoundError(f"{directory}: no such variables directory")
    with ocp.PyTreeCheckpointer() as checkpointer:
        tree = checkpointer.metadata(directory).item_metadata.tree
        as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        return checkpointer.restore(directory, restore_args=as_numpy)


class StageCheckpoints:
    """Periodic checkpoints of one stage: train state + data iterator, the last `keep` kept."""

    def __init__(self, workdir: str | os.PathLike, stage: str, keep: int):
        directory = stage_dir(workdir, stage) / CHECKPOINTS
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max(1, int(keep)),
            create=True,
            # Synchronous: the step after a save never races with the writer, and a save
            # returns only once the checkpoint is renamed into place.
            enable_async_checkpointing=False,
            cleanup_tmp_directories=True,
        )
        self.manager = ocp.CheckpointManager(directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: Any, data_iterator: grain.DatasetIterator) -> None:
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=grain.checkpoint.CheckpointSave(data_iterator),
            ),
            force=True,
        )
        self.manager.wait_until_finished()

    def restore(
        self,
        step: int,
        abstract_state: Any,
        sharding: Sharding,
        data_iterator: grain.DatasetIterator,
    ) -> Any:
        """The train state of `step` placed with `sharding`; `data_iterator` is moved to where
        it was when the checkpoint was written."""
        target = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), abstract_state
        )
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target),
                data=grain.checkpoint.CheckpointRestore(data_iterator),
            ),
        )
        return restored["state"]

    def close(self) -> None:
        self.manager.close()
