"""A stage's checkpoints: the train state written packed (its small leaves one array per dtype)
restores to the same bits, dtypes and placement; checkpoints written before the packing still
restore; the layout names every leaf."""

import json

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax.sharding import Mesh

from aiaic_jax.train import checkpoint, parallel
from aiaic_jax.train.parallel import DATA_AXIS


class _Position:
    """A data iterator's state, as the loop's prefetcher gives it."""

    def get_state(self):
        return {"position": 7}


@pytest.fixture(scope="module")
def sharding():
    return parallel.replicated(Mesh(np.asarray(jax.devices()[:1]), (DATA_AXIS,)))


def _state(sharding, seed=0, kernel_shape=(300, 300)):
    rng = np.random.default_rng(seed)
    state = {
        "step": np.int32(5),
        "params": {
            "conv": {
                "kernel": rng.normal(size=kernel_shape).astype(np.float32),  # written as itself
                "bias": rng.normal(size=(300,)).astype(np.float32),
            },
            "norm": {"scale": rng.normal(size=(3, 4)).astype(jnp.bfloat16)},
        },
        "opt_state": (
            {"count": np.int32(2), "empty": np.zeros((0, 3), np.int16)},
            {"mu": rng.normal(size=(300,)).astype(np.float32), "nu": np.zeros(0, np.float32)},
        ),
    }
    return jax.tree.map(lambda x: jax.device_put(x, sharding), state)


def _assert_same(restored, state):
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
        assert got.dtype == want.dtype and got.shape == want.shape and got.sharding == want.sharding
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_the_state_is_written_packed_and_restores_to_the_same_bits(sharding, tmp_path):
    state = _state(sharding)
    stage = checkpoint.StageCheckpoints(tmp_path, "stage1", keep=2)
    stage.save(4, state, _Position(), batch_size=8)
    layout = stage.layout(4)
    assert [leaf["path"] for leaf in layout["leaves"]] == [
        "opt_state/0/count",
        "opt_state/0/empty",
        "opt_state/1/mu",
        "opt_state/1/nu",
        "params/conv/bias",
        "params/conv/kernel",
        "params/norm/scale",
        "step",
    ]
    assert ["array" in leaf for leaf in layout["leaves"]] == [0, 0, 0, 0, 0, 1, 0, 0]
    # Orbax writes four arrays: the kernel and one packed array per dtype of the small leaves.
    metadata = json.loads(
        (tmp_path / "stage1" / "checkpoints" / "4" / "state" / "_METADATA").read_text()
    )
    written = [
        k
        for k, v in metadata["tree_metadata"].items()
        if "write_shape" in (v.get("value_metadata") or {})
    ]
    assert len(written) == 4, written

    restored = stage.restore(4, jax.eval_shape(lambda: state), sharding, None)
    _assert_same(restored, state)
    leaves = stage.state_leaves(4)
    np.testing.assert_array_equal(
        leaves["params/norm/scale"], np.asarray(state["params"]["norm"]["scale"])
    )
    assert stage.layout_differences(4, state) == []
    assert stage.layout_differences(4, _state(sharding, kernel_shape=(300, 301))) == [
        "params/conv/kernel: shape (300, 300) in the checkpoint, (300, 301) in the model"
    ]
    stage.close()


def test_a_checkpoint_written_before_the_packing_restores(sharding, tmp_path):
    state = _state(sharding, seed=1)
    # Orbax writes no empty arrays, so such a checkpoint has none.
    del state["opt_state"][0]["empty"], state["opt_state"][1]["nu"]
    stage = checkpoint.StageCheckpoints(tmp_path, "stage2", keep=2)
    # What `StageCheckpoints.save` wrote before the state was packed.
    stage.manager.save(
        3,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=grain.checkpoint.CheckpointSave(checkpoint._SavedState({"p": 1})),
            topology=ocp.args.JsonSave({"process_count": 1, "device_count": 1, "batch_size": 8}),
        ),
        force=True,
    )
    stage.manager.wait_until_finished()
    assert stage.layout(3) is None
    _assert_same(stage.restore(3, jax.eval_shape(lambda: state), sharding, None), state)
    assert set(stage.state_leaves(3)) == {
        leaf["path"] for leaf in checkpoint._pack(state)[1]["leaves"]
    }
    assert stage.layout_differences(3, state) == []
    stage.close()
