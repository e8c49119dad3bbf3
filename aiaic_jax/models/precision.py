"""Mixed precision: bfloat16 compute with float32 parameters (`config.model.compute_dtype`).

The parameters, the optimiser state and the normalisation statistics stay float32; a model
method runs on bfloat16 copies of the parameters and of its image and audio inputs, and returns
float32 (`AIAIC`'s methods do this through `run_in`). Gradients reach the float32 parameters
through the casts. BatchNorm and LayerNorm reduce in float32 whatever their input (Flax's
default `force_float32_reductions`), their running statistics stay float32 in `batch_stats`, and
every loss is computed from the float32 outputs. The Lab conversion of the data and the
evaluation metrics never see bfloat16.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

COMPUTE_DTYPES = ("float32", "bfloat16")


def compute_dtype(name: str) -> jnp.dtype:
    """The dtype named by `config.model.compute_dtype`."""
    if name not in COMPUTE_DTYPES:
        raise ValueError(f"model.compute_dtype={name!r}; one of {COMPUTE_DTYPES}")
    return jnp.dtype(name)


def cast_floating(tree: Any, dtype: jnp.dtype) -> Any:
    """Every floating-point array leaf of `tree` cast to `dtype`; other leaves (integer and
    boolean arrays, Python scalars, None) unchanged."""

    def cast(leaf):
        if isinstance(leaf, jax.Array | jnp.ndarray) and jnp.issubdtype(leaf.dtype, jnp.floating):
            return leaf.astype(dtype)
        return leaf

    return jax.tree.map(cast, tree)


def run_in(
    dtype: jnp.dtype,
    module: nn.Module,
    method: Callable[..., Any],
    args: tuple,
    cast_kwargs: dict[str, Any],
    kwargs: dict[str, Any],
) -> Any:
    """`method(module, *args, **cast_kwargs, **kwargs)` with the module's parameters, `args` and
    `cast_kwargs` in `dtype`; floating outputs back in float32.

    float32 runs the method as it is; so does initialisation, which only creates variables
    (their initial values must not depend on the compute dtype).
    """
    if dtype == jnp.float32 or module.is_initializing():
        return method(module, *args, **cast_kwargs, **kwargs)
    mapped = nn.map_variables(
        method,
        "params",
        trans_in_fn=lambda params: cast_floating(params, dtype),
        mutable=False,
    )
    outputs = mapped(
        module, *cast_floating(args, dtype), **cast_floating(cast_kwargs, dtype), **kwargs
    )
    return cast_floating(outputs, jnp.float32)
