"""Mixed precision (`model.compute_dtype = "bfloat16"`, aiaic_jax/models/precision.py): the
model computes in bfloat16 on float32 parameters, state and losses, and a few training steps
follow the float32 ones."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aiaic_jax.models.aiaic import build_model
from aiaic_jax.models.precision import cast_floating, compute_dtype
from aiaic_jax.train import loop, parallel, stages
from aiaic_jax.train.steps import make_step
from tests import tiny_model
from tests.tiny_training import random_batch, random_variables, tiny_config

BATCH = 4
STEPS = 4
# Baseline steps in bfloat16 against float32 from the same variables and batches: loss and
# gradient norm of each step within this relative tolerance (measured on a 2-core CPU: losses
# within 3e-5, gradient norms within 1%).
RTOL = 0.05

# Products that stay float32 by design: DisColor's training labels (the true ab pooled into
# its tokens) and its k-means over them.
FLOAT32_BY_DESIGN = ("lk,ld->kd", "bipjqc,bipjqk->bijkc")


def test_compute_dtype_names_are_checked_and_casts_keep_other_leaves():
    assert compute_dtype("bfloat16") == jnp.bfloat16
    with pytest.raises(ValueError, match="float16"):
        compute_dtype("float16")
    tree = {"x": jnp.ones(2), "i": jnp.arange(2), "b": jnp.ones(2, bool), "s": 1.0, "n": None}
    cast = cast_floating(tree, jnp.bfloat16)
    assert cast["x"].dtype == jnp.bfloat16 and cast["i"].dtype == tree["i"].dtype
    assert cast["b"].dtype == bool and cast["s"] == 1.0 and cast["n"] is None


def _float32_products(backbone: str) -> collections.Counter:
    """dot_general / conv_general_dilated of matrices or larger with a float32 operand, in the
    training gradient of the bfloat16 model in audio mode, by name stack."""
    config = tiny_model.model_config()
    config.backbone = backbone
    if backbone != "ddcolor_demo":
        config.backbone_overrides = {}
    config.compute_dtype = "bfloat16"
    model = build_model(config)
    gray_l, color_rgb = jnp.ones((2, 64, 64, 1)), jnp.ones((2, 64, 64, 3))
    spectrogram = jnp.ones((2, 257, 98))
    variables = jax.eval_shape(
        lambda: model.init(jax.random.key(0), gray_l, color_rgb, spectrogram, method="init_all")
    )
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))

    def loss(params, batch_stats):
        (ab, _), _ = model.apply(
            {"params": params, "batch_stats": batch_stats},
            gray_l,
            mode="audio",
            spectrogram=spectrogram,
            target_ab=jnp.zeros((2, 64, 64, 2)),
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": jax.random.key(1), "anchors": jax.random.key(2)},
        )
        assert ab.dtype == jnp.float32
        return jnp.mean(ab)

    found = collections.Counter()

    def walk(jaxpr):
        for equation in jaxpr.eqns:
            for value in equation.params.values():
                for sub in value if isinstance(value, (tuple, list)) else (value,):
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        walk(inner)
            if equation.primitive.name not in ("dot_general", "conv_general_dilated"):
                continue
            avals = [v.aval for v in equation.invars]
            if min(a.ndim for a in avals) > 1 and any(a.dtype == jnp.float32 for a in avals):
                name = str(equation.source_info.name_stack)
                if not name.endswith(FLOAT32_BY_DESIGN):
                    found[name] += 1

    walk(jax.make_jaxpr(jax.grad(loss))(variables["params"], variables["batch_stats"]).jaxpr)
    return found


@pytest.mark.parametrize("backbone", ["ddcolor_demo", "chromagan_demo", "discolor_demo"])
def test_bfloat16_model_computes_every_product_in_bfloat16(backbone):
    assert _float32_products(backbone) == collections.Counter()


def test_bfloat16_training_follows_float32_and_keeps_float32_state(tmp_path):
    config = tiny_config(tmp_path)
    model = build_model(config.model)
    template = loop.abstract_variables(model, config)
    variables = random_variables(template, seed=0)
    start = np.concatenate([np.ravel(x) for x in jax.tree.leaves(variables["params"])])
    mesh = parallel.make_mesh()

    def train(dtype: str):
        """Losses of STEPS baseline steps and the whole update of the parameters."""
        config.model.compute_dtype = dtype
        stage = stages.resolve(config, "baseline", 16)
        builder = make_step(config, stage, build_model(config.model), template["params"])
        state = jax.jit(builder.init_state)(variables, None)
        rng, constants = loop.stage_rng(config, "baseline"), builder.constants()
        step = loop.compile_train_step(
            builder, mesh, state, random_batch(BATCH), rng, constants, fast=True
        )
        values = []
        for index in range(STEPS):
            state, metrics = step(state, random_batch(BATCH, seed=index), rng, constants)
            values.append((float(metrics["loss"]), float(metrics["grad_norm"])))
        kept = (state.params, state.batch_stats, state.opt_state)
        floating = {x.dtype for x in jax.tree.leaves(kept) if jnp.issubdtype(x.dtype, jnp.floating)}
        assert floating == {jnp.dtype(jnp.float32)}, floating
        end = np.concatenate([np.ravel(x) for x in jax.tree.leaves(state.params)])
        return np.array(values), end - start

    full, full_update = train("float32")
    half, half_update = train("bfloat16")
    print("float32 (loss, grad norm)", full, "bfloat16", half, "relative", np.abs(half / full - 1))
    np.testing.assert_allclose(half, full, rtol=RTOL)
    assert not np.array_equal(half_update, full_update)  # the switch changes the arithmetic
