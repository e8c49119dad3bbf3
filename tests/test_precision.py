"""Mixed precision (`model.compute_dtype = "bfloat16"`, aiaic_jax/models/precision.py): the
model computes in bfloat16 on float32 parameters, state and losses, and a few training steps
follow the float32 ones."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from aiaic_jax.color import rgb_to_l_ab, rgb_uint8_to_float
from aiaic_jax.models.aiaic import build_model
from aiaic_jax.models.backbones import layers
from aiaic_jax.models.backbones.ddcolor import decoder
from aiaic_jax.models.precision import cast_floating, compute_dtype
from aiaic_jax.train import loop
from tests import tiny_model
from tests.tiny_training import random_batch, random_variables, tiny_config

BATCH = 4
STEPS = 4
# Compile time matters here, not run time: the training loop's options for that.
FAST_COMPILE = loop.step_compiler_options(fast=True)
# Adam steps on the backbone's L1, bfloat16 against float32 from the same variables and
# batches: loss and gradient norm of each step within this relative tolerance (set with headroom
# over the differences measured on a 2-core CPU, printed by the test).
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


def _float32_products(backbone: str, kernels: str | None) -> collections.Counter:
    """dot_general / conv_general_dilated of matrices or larger with a float32 operand, in the
    training gradient of the bfloat16 model in audio mode, by name stack."""
    config = tiny_model.model_config()
    config.backbone = backbone
    if backbone != "ddcolor_demo":
        config.backbone_overrides = {}
    if kernels is not None:
        config.backbone_overrides["kernels"] = kernels
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
            precision = equation.params.get("precision")
            if isinstance(precision, jax.lax.DotAlgorithmPreset) and precision.name.startswith(
                "BF16_BF16_"
            ):
                # The dot's algorithm rounds its inputs to bfloat16 (jax.nn.dot_product_attention,
                # the native kernels' attention, keeps its logits' gradient in float32).
                continue
            avals = [v.aval for v in equation.invars]
            if min(a.ndim for a in avals) > 1 and any(a.dtype == jnp.float32 for a in avals):
                name = str(equation.source_info.name_stack)
                if not name.endswith(FLOAT32_BY_DESIGN):
                    found[name] += 1

    walk(jax.make_jaxpr(jax.grad(loss))(variables["params"], variables["batch_stats"]).jaxpr)
    return found


@pytest.mark.parametrize(
    "backbone, kernels",
    [
        ("ddcolor_demo", "native"),
        ("ddcolor_demo", "rewrite"),  # the CPU rewrites (auto on the CPU)
        ("chromagan_demo", None),
        ("discolor_demo", None),
    ],
)
def test_bfloat16_model_computes_every_product_in_bfloat16(backbone, kernels, monkeypatch):
    # Every rewrite, also the loops that only larger features and attention maps take.
    monkeypatch.setattr(layers, "SUBPIXEL_LOOP_MIN_ELEMENTS", 0)
    monkeypatch.setattr(decoder, "ATTENTION_LOOP_MIN_KEYS", 0)
    assert _float32_products(backbone, kernels) == collections.Counter()


def test_bfloat16_training_follows_float32_and_keeps_float32_state(tmp_path):
    config = tiny_config(tmp_path)
    # XLA's native kernels, as on accelerators where bfloat16 is meant to run: about a quarter
    # less compile time than the CPU rewrites (tests/test_kernels.py checks those against these).
    config.model.backbone_overrides.kernels = "native"
    template = loop.abstract_variables(build_model(config.model), config)
    variables = random_variables(template, seed=0)
    optimizer = optax.adam(1e-3)
    batches = []
    for index in range(STEPS):
        gray_l, target_ab = rgb_to_l_ab(rgb_uint8_to_float(random_batch(BATCH, seed=index)["rgb"]))
        batches.append({"gray_l": gray_l, "target_ab": target_ab})

    def train(dtype: str):
        """(loss, gradient norm) of STEPS Adam steps of the backbone's L1 from the same start."""
        config.model.compute_dtype = dtype
        model = build_model(config.model)

        def loss_fn(params, batch_stats, batch):
            (ab, _), updated = model.apply(
                {"params": params, "batch_stats": batch_stats},
                batch["gray_l"],
                mode="baseline",
                train=True,
                mutable=["batch_stats"],
            )
            assert ab.dtype == jnp.float32
            return jnp.mean(jnp.abs(ab - batch["target_ab"])), updated["batch_stats"]

        def step(params, batch_stats, opt_state, batch):
            (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                params, batch_stats, batch
            )
            updates, opt_state = optimizer.update(grads, opt_state)
            params = optax.apply_updates(params, updates)
            return params, batch_stats, opt_state, (loss, optax.global_norm(grads))

        params, batch_stats = variables["params"], variables["batch_stats"]
        opt_state = optimizer.init(params)
        compiled = (
            jax.jit(step)
            .lower(params, batch_stats, opt_state, batches[0])
            .compile(compiler_options=FAST_COMPILE)
        )
        values = []
        for batch in batches:
            params, batch_stats, opt_state, metrics = compiled(
                params, batch_stats, opt_state, batch
            )
            values.append([float(m) for m in metrics])
        kept = (params, batch_stats, opt_state)
        floating = {x.dtype for x in jax.tree.leaves(kept) if jnp.issubdtype(x.dtype, jnp.floating)}
        assert floating == {jnp.dtype(jnp.float32)}, floating
        return np.array(values)

    full, half = train("float32"), train("bfloat16")
    print("float32 (loss, grad norm)", full, "bfloat16", half, "relative", np.abs(half / full - 1))
    np.testing.assert_allclose(half, full, rtol=RTOL)
    assert not np.array_equal(half, full)  # the switch changes the arithmetic
