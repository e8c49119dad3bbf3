"""Writing and restoring a stage's checkpoint: the train state packed, as the training loop
writes it (`train/checkpoint.py`), against leaf by leaf, as it was written before; random
variables of a config's model, one process, this machine's disk.

PYTHONPATH=. python bench/checkpoint.py                                   # the demo, every stage
PYTHONPATH=. python bench/checkpoint.py --config tiny --stages stage3     # the tests' tiny model
PYTHONPATH=. python bench/checkpoint.py --config ddcolor_tiny --stages stage1 --repeats 3

`--config` is a configs/ name as in bench/train.py, or `tiny` (tests/tiny_training.py).
Median seconds over `--repeats` saves and restores of each format.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time


class _Position:
    def get_state(self):
        return {"position": 0}


def _config(name: str):
    if name == "tiny":
        from tests.tiny_training import tiny_config

        return tiny_config("unused")
    from bench.train import load_config

    return load_config(name)


def measure(config_name: str, stage_name: str, repeats: int) -> dict:
    import jax
    import orbax.checkpoint as ocp

    from aiaic_jax.train import checkpoint, parallel
    from bench.train import random_train_state

    _, _, mesh, state = random_train_state(_config(config_name), stage_name)
    sharding = parallel.replicated(mesh)
    abstract = jax.eval_shape(lambda: state)
    times = {"packed": ([], []), "leaves": ([], [])}
    with tempfile.TemporaryDirectory() as directory:
        for form, (saves, restores) in times.items():
            stage_checkpoints = checkpoint.StageCheckpoints(directory, form, keep=repeats + 1)
            for step in range(1, repeats + 1):
                started = time.perf_counter()
                if form == "packed":
                    stage_checkpoints.save(step, state, _Position(), batch_size=1)
                else:  # the train state's own tree, one orbax array per leaf
                    stage_checkpoints.manager.save(
                        step,
                        args=ocp.args.Composite(state=ocp.args.StandardSave(state)),
                        force=True,
                    )
                    stage_checkpoints.manager.wait_until_finished()
                saves.append(time.perf_counter() - started)
                if form == "packed" and step == 1:
                    layout = stage_checkpoints.layout(step)["leaves"]
                started = time.perf_counter()
                jax.block_until_ready(stage_checkpoints.restore(step, abstract, sharding, None))
                restores.append(time.perf_counter() - started)
            stage_checkpoints.close()
    return {
        "config": config_name,
        "stage": stage_name,
        "leaves": len(layout),
        "packed_arrays": len({leaf["dtype"] for leaf in layout if "array" not in leaf})
        + sum("array" in leaf for leaf in layout),
        "megabytes": round(sum(x.nbytes for x in jax.tree.leaves(state)) / 2**20, 1),
        **{
            f"{form}_{what}_s": round(statistics.median(values), 3)
            for form, pair in times.items()
            for what, values in zip(("save", "restore"), pair)
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="demo")
    parser.add_argument(
        "--stages", default="baseline,stage1,stage2,rnet,stage3,e2e", help="comma-separated"
    )
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    columns = None
    for stage_name in args.stages.split(","):
        result = measure(args.config, stage_name, args.repeats)
        if columns is None:
            columns = list(result)
            print(" | ".join(columns))
        print(" | ".join(str(result[c]) for c in columns), flush=True)


if __name__ == "__main__":
    main()
