"""Layers shared by the backbones: spectral-norm convolutions, pixel shuffle, PyTorch initialisers.

The backbones are ported from PyTorch code, and converted checkpoints must behave exactly as the
originals do; these layers reproduce PyTorch's conventions where Flax's differ (spectral norm
in eval mode, pixel-shuffle channel order, default initialisers).
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Initializer = Callable[..., jax.Array]

# PyTorch's `kaiming_normal_` default: fan_in, ReLU gain, untruncated normal.
kaiming_normal = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
# PyTorch's default nn.Linear / nn.Conv2d weight init, kaiming_uniform_(a=sqrt(5)):
# uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)).
torch_default_kernel = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_default_bias(fan_in: int) -> Initializer:
    """PyTorch's default bias init for a layer with `fan_in` inputs: U(-1/sqrt(fan_in), ...)."""
    bound = 1.0 / np.sqrt(fan_in)

    def init(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def icnr(scale: int, base: Initializer = kaiming_normal) -> Initializer:
    """ICNR init for a conv followed by `pixel_shuffle(scale)` (arXiv 1707.02937).

    Every group of scale**2 consecutive output channels (the sub-pixels of one shuffled channel)
    starts with the same weights, so the upsampling starts as nearest-neighbour.
    """

    def init(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
        *window, fan_out = shape
        if fan_out % scale**2:
            raise ValueError(f"ICNR: {fan_out} output channels are not a multiple of {scale**2}")
        base_kernel = base(key, (*window, fan_out // scale**2), dtype)
        return jnp.repeat(base_kernel, scale**2, axis=-1)

    return init


def pixel_shuffle(x: jax.Array, scale: int) -> jax.Array:
    """Depth to space in PyTorch's `nn.PixelShuffle` channel order.

    x: [B, H, W, C * scale**2] -> [B, H * scale, W * scale, C]; input channel
    c * scale**2 + i * scale + j lands at channel c, row offset i, column offset j.
    """
    batch, height, width, channels = x.shape
    out_channels = channels // scale**2
    x = x.reshape(batch, height, width, out_channels, scale, scale)
    x = x.transpose(0, 1, 4, 2, 5, 3)  # [B, H, i, W, j, C]
    return x.reshape(batch, height * scale, width * scale, out_channels)


def _l2_normalize(x: jax.Array, eps: float) -> jax.Array:
    # As torch.nn.functional.normalize: x / max(||x||, eps).
    return x / jnp.maximum(jnp.linalg.norm(x), eps)


def _random_unit_vector(key: jax.Array, size: int) -> jax.Array:
    return _l2_normalize(jax.random.normal(key, (size,), jnp.float32), 1e-12)


class SpectralNormConv(nn.Module):
    """A 2-D convolution whose kernel is divided by its largest singular value.

    Matches `torch.nn.utils.spectral_norm(nn.Conv2d(...))` with one power iteration: in
    training each call refines the singular vectors `u` (over output channels) and `v` (over
    the flattened kernel window and input channels, in HWI order) and stores them in
    `batch_stats`; in evaluation the stored vectors are used as they are. The trainable
    parameter is the unnormalised kernel.
    """

    features: int
    kernel_size: int = 1
    padding: int = 0
    use_bias: bool = True
    kernel_init: Initializer = kaiming_normal
    bias_init: Initializer = nn.initializers.zeros
    eps: float = 1e-12

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """x: [B, H, W, Cin] -> [B, H', W', features]."""
        in_features = x.shape[-1]
        kernel = self.param(
            "kernel",
            self.kernel_init,
            (self.kernel_size, self.kernel_size, in_features, self.features),
        )
        matrix = kernel.reshape(-1, self.features)  # [k*k*Cin, Cout]
        # PyTorch starts from random u and v; one power iteration from a random u on the
        # initial kernel makes sigma meaningful in evaluation before any training step.
        u = self.variable(
            "batch_stats",
            "u",
            lambda: _random_unit_vector(self.make_rng("params"), self.features),
        )
        v = self.variable("batch_stats", "v", lambda: _l2_normalize(matrix @ u.value, self.eps))
        if self.is_initializing():
            u.value = _l2_normalize(v.value @ matrix, self.eps)
        u_vec, v_vec = u.value, v.value
        if train and not self.is_initializing():
            # One power iteration; the vectors carry no gradient (as in PyTorch).
            v_vec = _l2_normalize(matrix @ u_vec, self.eps)
            u_vec = _l2_normalize(v_vec @ matrix, self.eps)
            u_vec, v_vec = jax.lax.stop_gradient(u_vec), jax.lax.stop_gradient(v_vec)
            u.value, v.value = u_vec, v_vec
        sigma = jnp.dot(v_vec @ matrix, u_vec)
        y = jax.lax.conv_general_dilated(
            x,
            kernel / sigma,
            window_strides=(1, 1),
            padding=[(self.padding, self.padding)] * 2,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (self.features,))
        return y
