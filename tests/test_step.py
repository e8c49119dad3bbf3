"""The stages' steps (train/state.py, train/steps/): which modules run in training mode, the
non-finite guard. A reduced DDColor demo model at 64x64 with random variables. (What each stage
trains and keeps frozen, bit for bit, is checked on the stages of tests/test_loop.py.)"""

import re

import jax
import numpy as np
import pytest

from aiaic_jax.models.aiaic import build_model
from aiaic_jax.train import loop, parallel, stages
from aiaic_jax.train.state import NO_BAD_STEP
from aiaic_jax.train.steps import make_step
from tests.tiny_training import random_batch, random_variables, tiny_config

BATCH = 4


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    config = tiny_config(tmp_path_factory.mktemp("unused"))
    model = build_model(config.model)
    template = loop.abstract_variables(model, config)
    return config, model, template, random_variables(template, seed=0)


def _builder(config, model, template, name):
    return make_step(config, stages.resolve(config, name, 16), model, template["params"])


def _run(config, builder, variables, num_steps):
    """States after each of num_steps steps (on host), and the metrics of each step."""
    mesh = parallel.make_mesh()
    state = jax.jit(builder.init_state)(variables, None)
    rng = loop.stage_rng(config, builder.stage.name)
    constants = builder.constants()
    batch = random_batch(BATCH)
    step = loop.compile_train_step(builder, mesh, state, batch, rng, constants, fast=True)
    states, metrics = [jax.device_get(state)], []
    for index in range(num_steps):
        state, step_metrics = step(state, random_batch(BATCH, seed=index), rng, constants)
        states.append(jax.device_get(state))
        metrics.append(jax.device_get(step_metrics))
    return states, metrics


def _leaves(tree):
    return {
        "/".join(str(getattr(k, "key", k)) for k in path): np.asarray(leaf)
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def _same_bits(a, b):
    return a.shape == b.shape and a.tobytes() == b.tobytes()


def test_frozen_modules_run_in_evaluation_mode(setup):
    config, model, template, _ = setup
    flags = {
        name: (getattr(b, "backbone_train", False), getattr(b, "audio_train", False))
        for name in stages.STAGE_NAMES
        for b in [_builder(config, model, template, name)]
    }
    assert flags["baseline"] == (True, False)
    assert flags["stage1"] == (True, False)
    assert flags["stage2"] == (False, True)
    assert flags["stage3"] == (False, False)  # backbone BN on running stats, no SN update
    assert flags["e2e"] == (True, True)


def test_frozen_backbone_stats_stay_while_the_backbone_trains(setup):
    config, model, template, variables = setup
    config = config.copy_and_resolve_references()
    config.stages.stage1.freeze_backbone_stats = True
    builder = _builder(config, model, template, "stage1")
    assert not builder.backbone_train
    states, _ = _run(config, builder, variables, 2)
    before, after = states[0], states[-1]
    params_before = _leaves(before.params["backbone"])
    params_after = _leaves(after.params["backbone"])
    assert any(not _same_bits(params_before[k], params_after[k]) for k in params_before)
    stats_before = _leaves(before.batch_stats["backbone"])
    stats_after = _leaves(after.batch_stats["backbone"])
    assert stats_before and stats_before.keys() == stats_after.keys()
    assert all(_same_bits(stats_before[k], stats_after[k]) for k in stats_before)


def test_a_nonfinite_step_is_skipped_and_its_number_kept(setup):
    config, model, template, variables = setup
    config = config.copy_and_resolve_references()
    config.train.inject_nan_at_step = 2
    builder = _builder(config, model, template, "stage2")
    states, metrics = _run(config, builder, variables, 3)
    assert [int(s.first_bad_step) for s in states] == [NO_BAD_STEP, NO_BAD_STEP, 2, 2]
    assert [int(s.step) for s in states] == [0, 1, 2, 3]
    assert [m["nonfinite"] for m in metrics] == [0.0, 1.0, 0.0]
    for tree in ("params", "batch_stats", "opt_state"):
        one, two, three = (_leaves(getattr(states[i], tree)) for i in (1, 2, 3))
        assert all(_same_bits(one[k], two[k]) for k in one), tree  # step 2 changed nothing
        if tree == "params":
            assert any(not _same_bits(two[k], three[k]) for k in two)  # step 3 trained


def test_rnet_trains_on_frozen_encoders_by_default(setup):
    config, model, template, _ = setup
    builder = _builder(config, model, template, "rnet")
    assert not builder.rnet_audio_train


@pytest.mark.parametrize("name", ["stage1", "stage2"])
def test_each_state_leaf_donates_its_buffer_to_its_own_new_value(setup, name):
    """Every leaf of the state is an argument of the compiled step (spectral norm's `v`, which
    the step only writes, too) and is donated to the same leaf of the new state. JAX pairs
    donated buffers with outputs by shape, in order: one pruned leaf would pair every later leaf
    of its shape with another leaf's output, and XLA would copy those in every step."""
    config, model, template, variables = setup
    builder = _builder(config, model, template, name)
    state = jax.jit(builder.init_state)(variables, None)
    args = (state, random_batch(BATCH), loop.stage_rng(config, name), builder.constants())
    lowered = loop.lower_train_step(builder, parallel.make_mesh(), *args)
    main = next(line for line in lowered.as_text().splitlines() if "func.func public @main" in line)
    signature, _, results = main.partition(") -> (")
    arguments = signature.split("%arg")[1:]
    leaves = jax.tree_util.tree_flatten_with_path(args)[0]
    assert len(arguments) == len(leaves), "the step drops some of its arguments"
    assert any("'v'" in jax.tree_util.keystr(path) for path, _ in leaves)  # the case in point
    outputs = re.findall(r'jax.result_info = "result([^"]*)"', results)
    assert len(outputs) == results.count("tensor<"), "an output without its path"
    # Paths as keystr writes them: the state is the first of the arguments and of the outputs
    # (state, metrics), so a leaf's input and output paths are the same string.
    donated = {}
    for index, text in enumerate(arguments):
        if match := re.search(r"tf.aliasing_output = (\d+)", text):
            donated[jax.tree_util.keystr(leaves[index][0])] = outputs[int(match.group(1))]
    state_paths = [jax.tree_util.keystr(path) for path, _ in leaves[: len(jax.tree.leaves(state))]]
    assert donated == {path: path for path in state_paths}
