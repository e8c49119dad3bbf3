"""bench/step_profile.py's count of each thunk's arithmetic, against XLA's own cost analysis."""

import jax
import jax.numpy as jnp
import pytest

from bench import step_profile


def _program(function, *shapes):
    compiled = jax.jit(function).lower(*(jnp.zeros(s, jnp.float32) for s in shapes)).compile()
    return compiled, step_profile.parse_program(compiled.as_text())


def _conv(x, kernel, strides=1):
    # No padding: the count takes every tap of the window, XLA's leaves out those on padding.
    return jax.lax.conv_general_dilated(
        x, kernel, (strides, strides), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def _products(program):
    # A product inside a fusion counts in the instruction and in the fusion that holds it.
    return [f["flop"] for name, f in program.items() if f["flop"] and "fusion" not in name]


@pytest.mark.parametrize(
    "function, shapes",
    [
        (jnp.matmul, [(3, 40, 24), (24, 16)]),
        (lambda a, b: jnp.einsum("bqd,bkd->bqk", a, b), [(2, 12, 8), (2, 20, 8)]),
        (_conv, [(2, 9, 9, 5), (3, 3, 5, 7)]),
        (lambda x, k: _conv(x, k, strides=2), [(2, 10, 10, 4), (2, 2, 4, 6)]),
    ],
    ids=["dot", "batched dot", "conv 3x3", "conv 2x2 stride 2"],
)
def test_products_count_what_xla_counts(function, shapes):
    compiled, program = _program(function, *shapes)
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    assert len(_products(program)) == 1
    assert sum(_products(program)) == pytest.approx(cost["flops"], rel=0.02)


def test_a_dilated_input_counts_only_the_taps_that_are_not_zeros():
    # The input gradient of a 2x2 stride-2 convolution: a 2x2 window over an input dilated by
    # 2, one tap of four on a non-zero, the arithmetic of the forward convolution.
    def input_gradient(x, kernel):
        _, vjp = jax.vjp(lambda a: _conv(a, kernel, strides=2), x)
        return vjp(jnp.ones((2, 5, 5, 6)))[0]

    _, program = _program(input_gradient, (2, 10, 10, 4), (2, 2, 4, 6))
    assert _products(program) == [2 * (2 * 5 * 5 * 6) * (2 * 2 * 4)]
