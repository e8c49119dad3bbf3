"""Kernels per platform (`layers.use_rewrites`): every CPU rewrite against its native form, in
values and gradients (fp32 tolerances), so that a fast path can never drift from the function it
replaces. Also the rematerialisation option: the same gradients.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aiaic_jax.models.backbones import layers
from aiaic_jax.models.backbones.ddcolor import decoder
from aiaic_jax.models.backbones.ddcolor.convnext import ConvNeXt
from aiaic_jax.models.backbones.ddcolor.decoder import (
    _native_attention,
    attention_by_head,
    cpu_attention,
    dot_product_attention,
)
from aiaic_jax.models.backbones.layers import (
    conv,
    conv_stride1,
    dense_dot_general,
    depthwise_conv,
    depthwise_conv_native,
    matmul_by_rows,
    relu,
    subpixel_projection,
    subpixel_projection_by_subpixel,
    subpixel_projection_native,
    use_rewrites,
)
from aiaic_jax.train import loop

# Compile time matters here, not run time: the training loop's options for that.
FAST_COMPILE = loop.step_compiler_options(fast=True)


def _key(n: int) -> jax.Array:
    return jax.random.key(n, impl="unsafe_rbg")


def _assert_same_function_and_vjp(rewrite, native, *args, atol, rtol=1e-5):
    """Values and the VJP of a non-linear read-out (so that every cotangent entry differs)."""
    np.testing.assert_allclose(rewrite(*args), native(*args), atol=atol, rtol=rtol)

    def loss(function):
        return lambda *a: jnp.sum(jnp.sin(function(*a)))

    argnums = tuple(range(len(args)))
    got = jax.jit(jax.grad(loss(rewrite), argnums))(*args)
    expected = jax.jit(jax.grad(loss(native), argnums))(*args)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, atol=atol, rtol=rtol)


def test_auto_uses_the_rewrites_on_cpu_only_and_names_are_checked():
    assert use_rewrites("auto") == (jax.default_backend() == "cpu")
    assert use_rewrites("rewrite") and not use_rewrites("native")
    with pytest.raises(ValueError, match="kernels='fast'"):
        use_rewrites("fast")


# Odd and even heights (the loop over two halves of the rows overlaps by one row where the
# height is odd) and a single row (no loop).
@pytest.mark.parametrize("shape", [(2, 9, 11, 6), (1, 8, 5, 6), (2, 1, 4, 6)])
def test_depthwise_conv_matches_grouped_convolution(shape):
    x = jax.random.normal(_key(0), shape)
    kernel = jax.random.normal(_key(1), (7, 7, 6))
    _assert_same_function_and_vjp(depthwise_conv, depthwise_conv_native, x, kernel, atol=2e-4)


@pytest.mark.parametrize("size,padding", [(3, 1), (3, 0), (5, 2)])
def test_stride1_conv_matches_xla_convolution(size, padding):
    x = jax.random.normal(_key(2), (2, 8, 7, 5))
    kernel = 0.3 * jax.random.normal(_key(3), (size, size, 5, 4))
    _assert_same_function_and_vjp(
        lambda x, k: conv_stride1(x, k, padding),
        lambda x, k: conv(x, k, 1, padding),
        x,
        kernel,
        atol=1e-4,
    )


@pytest.mark.parametrize("shape", [(2, 5, 7, 6), (9, 6)])
@pytest.mark.parametrize("features", [3, 8])  # kernel gradient: 3 transposes the gradient, 8 x
def test_matmul_by_rows_matches_the_product(shape, features):
    x = jax.random.normal(_key(4), shape)
    kernel = jax.random.normal(_key(5), (6, features))
    _assert_same_function_and_vjp(matmul_by_rows, jnp.matmul, x, kernel, atol=1e-5)


def test_dense_dot_general_takes_the_rewrite_for_flax_dense_products_only():
    assert dense_dot_general("native") is None
    dot_general = dense_dot_general("rewrite")
    x = jax.random.normal(_key(6), (2, 5, 4, 3))
    # DenseGeneral contracting two axes ([B, N, H, d] x [H, d, E]), as the attention's output.
    kernel = jax.random.normal(_key(7), (4, 3, 6))
    numbers = (((2, 3), (0, 1)), ((), ()))

    def rewrite(x, kernel):
        return dot_general(x, kernel, numbers)

    def native(x, kernel):
        return jax.lax.dot_general(x, kernel, numbers)

    _assert_same_function_and_vjp(rewrite, native, x, kernel, atol=1e-5)
    assert "custom_vjp_call" in str(jax.make_jaxpr(rewrite)(x, kernel))
    # Anything else (batch axes here) is lax.dot_general's.
    batched = (((2, 3), (1, 2)), ((0,), (0,)))
    other = jax.random.normal(_key(8), (2, 4, 3, 6))
    assert "custom_vjp_call" not in str(
        jax.make_jaxpr(partial(dot_general, dimension_numbers=batched))(x, other)
    )
    np.testing.assert_allclose(
        dot_general(x, other, batched), jax.lax.dot_general(x, other, batched), atol=1e-5
    )


def test_relu_keeping_its_output_is_relu_with_relu_gradient():
    x = jax.random.normal(_key(7), (3, 5, 8)).at[0, 0, :4].set(0.0)  # the kink too
    _assert_same_function_and_vjp(relu, jax.nn.relu, x, atol=0)


def _attention_inputs():
    return [jax.random.normal(_key(i), (2, n, 4, 8)) for i, n in enumerate((5, 9, 9))]


def test_attention_matches_jax_dot_product_attention():
    q, k, v = _attention_inputs()
    _assert_same_function_and_vjp(dot_product_attention, _native_attention, q, k, v, atol=2e-5)


def test_attention_by_head_matches_jax_dot_product_attention():
    q, k, v = _attention_inputs()
    _assert_same_function_and_vjp(attention_by_head, _native_attention, q, k, v, atol=2e-5)


def test_cpu_attention_loops_over_the_heads_from_its_number_of_keys_up(monkeypatch):
    def loops() -> bool:
        # A new function each time: JAX keeps the traces of a function it has seen.
        jaxpr = jax.make_jaxpr(lambda *a: cpu_attention(*a))(*_attention_inputs())
        return "scan" in str(jaxpr)

    monkeypatch.setattr(decoder, "ATTENTION_LOOP_MIN_KEYS", 9)
    assert loops()
    monkeypatch.setattr(decoder, "ATTENTION_LOOP_MIN_KEYS", 10)
    assert not loops()


def _subpixel_inputs(batch=2, height=5, width=6, in_channels=7, channels=3, out_channels=2):
    x = jax.random.normal(_key(8), (batch, height, width, in_channels))
    kernel = 0.4 * jax.random.normal(_key(9), (in_channels, 16 * channels))
    bias = 0.3 * jax.random.normal(_key(10), (16 * channels,))
    projection = jax.random.normal(_key(11), (batch, channels, out_channels))
    return x, kernel, bias, projection


@pytest.mark.parametrize("recompute", [False, True], ids=["kept", "recomputed"])
def test_subpixel_projection_by_subpixel_matches_the_product_of_all_features(recompute):
    def loop(*args):
        return subpixel_projection_by_subpixel(*args, recompute)

    _assert_same_function_and_vjp(loop, subpixel_projection_native, *_subpixel_inputs(), atol=1e-5)


def test_subpixel_projection_keeps_its_features_unless_told_to_recompute():
    # Kept: one buffer of every sub-pixel's features [S, B, h, w, C] is a residual of the
    # forward pass; recomputed: none, and the backward pass has a third product per sub-pixel.
    inputs = _subpixel_inputs()
    features_shape = (16, 2, 5, 6, 3)

    def residual_shapes(recompute):
        _, residuals = jax.vjp(lambda *a: subpixel_projection_by_subpixel(*a, recompute), *inputs)
        return [leaf.shape for leaf in jax.tree.leaves(residuals)]

    assert features_shape in residual_shapes(False)
    assert features_shape not in residual_shapes(True)


def test_subpixel_projection_loops_on_the_cpu_from_a_pictures_size_up(monkeypatch):
    inputs = _subpixel_inputs()  # 5 x 6 x 48 = 1440 feature elements per picture, 2 pictures

    def loops(kernels: str) -> bool:
        jaxpr = jax.make_jaxpr(lambda *a: subpixel_projection(*a, kernels=kernels))(*inputs)
        return "scan" in str(jaxpr)

    monkeypatch.setattr(layers, "SUBPIXEL_LOOP_MIN_ELEMENTS", 1440)
    assert loops("rewrite") and not loops("native")
    assert loops("auto") == (jax.default_backend() == "cpu")
    monkeypatch.setattr(layers, "SUBPIXEL_LOOP_MIN_ELEMENTS", 1441)
    assert not loops("rewrite")


def test_remat_gives_the_same_gradients():
    # A reduced ConvNeXt (the encoder of DDColor, whose blocks `remat=True` recomputes); the
    # decoders' remat goes through the same `nn.remat` lifting.
    image = jax.random.normal(_key(8), (2, 32, 32, 3))
    reference = ConvNeXt((1, 1, 1, 1), (8, 8, 16, 16))
    variables = jax.jit(reference.init)(_key(6), image)

    def grads(module):
        def loss(params):
            features, _ = module.apply({"params": params}, image)
            return sum(jnp.sum(jnp.sin(f)) for f in features)

        params = variables["params"]
        step = jax.jit(jax.value_and_grad(loss)).lower(params)
        return step.compile(compiler_options=FAST_COMPILE)(params)

    loss, expected = grads(reference)
    other_loss, got = grads(ConvNeXt((1, 1, 1, 1), (8, 8, 16, 16), remat=True))
    np.testing.assert_allclose(other_loss, loss, rtol=1e-6)
    for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
