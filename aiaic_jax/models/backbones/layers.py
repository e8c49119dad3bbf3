"""Layers shared by the backbones: spectral-norm and depthwise convolutions, pixel shuffle,
PyTorch initialisers, DETR's sine positions (DDColor's colour decoder, DisColor's tokens).

The backbones are ported from PyTorch code, and converted checkpoints must behave exactly as the
originals do; these layers reproduce PyTorch's conventions where Flax's differ (spectral norm
in eval mode, pixel-shuffle channel order, default initialisers).

Kernels per platform. XLA:CPU runs some operations, above all their gradients, far slower than
the same arithmetic written another way; GPUs and TPUs have fast native paths for them (cuDNN's
grouped convolutions and attention). Each such operation has a CPU rewrite with a hand-written
gradient here (`depthwise_conv`, `conv_stride1`, `matmul_by_rows`,
`subpixel_projection_by_subpixel`, and DDColor's attention in `ddcolor/decoder.py`) and a native
form; `use_rewrites(kernels)` is the one place that chooses: a module's `kernels` field is
"auto" (the rewrites on CPU, the native forms elsewhere), "rewrite" or "native", set in a config
through `model.backbone_overrides.kernels`. tests/test_kernels.py checks every rewrite
against its native form, values and gradients.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Initializer = Callable[..., jax.Array]

KERNELS = ("auto", "rewrite", "native")


def use_rewrites(kernels: str) -> bool:
    """Whether a module with this `kernels` setting computes with the CPU rewrites.

    "auto": on the CPU backend only (the platform of the default device, when tracing).
    """
    if kernels not in KERNELS:
        raise ValueError(f"kernels={kernels!r}; one of {KERNELS}")
    if kernels == "auto":
        return jax.default_backend() == "cpu"
    return kernels == "rewrite"


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


def pixel_shuffle(x: jax.Array, scale: int, *, subpixel_major: bool = False) -> jax.Array:
    """Depth to space in PyTorch's `nn.PixelShuffle` channel order.

    x: [B, H, W, C * scale**2] -> [B, H * scale, W * scale, C]; input channel
    c * scale**2 + i * scale + j lands at channel c, row offset i, column offset j.
    subpixel_major: x's channels are in the order (i, j, c) instead, i.e. permuted by
    `to_subpixel_major`; the same result with a cheaper transpose (whole C vectors move).
    """
    batch, height, width, channels = x.shape
    out_channels = channels // scale**2
    if subpixel_major:
        x = x.reshape(batch, height, width, scale, scale, out_channels)
        x = x.transpose(0, 1, 3, 2, 4, 5)  # [B, H, i, W, j, C]
    else:
        x = x.reshape(batch, height, width, out_channels, scale, scale)
        x = x.transpose(0, 1, 4, 2, 5, 3)  # [B, H, i, W, j, C]
    return x.reshape(batch, height * scale, width * scale, out_channels)


def to_subpixel_major(x: jax.Array, scale: int) -> jax.Array:
    """Reorders the last axis from PyTorch's pixel-shuffle order (c, i, j) to (i, j, c).

    A reshape and transpose, not a gather: its gradient is a transpose too.
    """
    *lead, channels = x.shape
    x = x.reshape(*lead, channels // scale**2, scale, scale)
    x = jnp.moveaxis(x, -3, -1)  # [..., i, j, c]
    return x.reshape(*lead, channels)


def _shifted_sum(padded: jax.Array, kernel: jax.Array, height: int, width: int) -> jax.Array:
    # sum over window offsets (i, j) of padded[:, i:i+height, j:j+width, :] * kernel[i, j]
    out = None
    for i in range(kernel.shape[0]):
        for j in range(kernel.shape[1]):
            term = padded[:, i : i + height, j : j + width, :] * kernel[i, j]
            out = term if out is None else out + term
    return out


def _pad_same(x: jax.Array, kernel_size: int) -> jax.Array:
    p = kernel_size // 2
    return jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))


@jax.custom_vjp
def depthwise_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Depthwise 2-D convolution, stride 1, zero 'same' padding, odd kernel size.

    x: [B, H, W, C]; kernel: [k, k, C] -> [B, H, W, C]. Written as k*k shifted
    multiply-adds (one fused loop) with a hand-written gradient: XLA:CPU runs grouped
    convolutions, and above all their weight gradient, an order of magnitude slower.

    The sum is computed by a loop over the two halves of the rows. As one expression, XLA fuses
    it into every operation that reads its output and computes it again in each: in a ConvNeXt
    block's training step, the LayerNorm's statistics and normalisation, their gradients and the
    transposed copy for pwconv1's kernel gradient, where the 49 taps are read across channels. A
    loop's output is a buffer, so the taps are summed once.
    """
    _, height, width, _ = x.shape
    padded = _pad_same(x, kernel.shape[0])
    if height < 2:
        return _shifted_sum(padded, kernel, height, width)
    rows = -(-height // 2)  # the second half overlaps the first by a row where height is odd

    def half(index, out):
        start = jnp.minimum(index * rows, height - rows)
        window = jax.lax.dynamic_slice_in_dim(padded, start, rows + kernel.shape[0] - 1, axis=1)
        part = _shifted_sum(window, kernel, rows, width)
        return jax.lax.dynamic_update_slice_in_dim(out, part, start, axis=1)

    return jax.lax.fori_loop(0, 2, half, jnp.zeros(x.shape, jnp.result_type(x, kernel)))


def _depthwise_conv_fwd(x, kernel):
    return depthwise_conv(x, kernel), (x, kernel)


def _depthwise_conv_bwd(residuals, grad):
    x, kernel = residuals
    batch, height, width, channels = x.shape
    size = kernel.shape[0]
    # d/dx: the same convolution of the output gradient with the kernel flipped.
    grad_x = _shifted_sum(_pad_same(grad, size), kernel[::-1, ::-1], height, width)
    # d/dkernel[i, j] = sum over batch and pixels of the (i, j)-shifted input times grad. A
    # loop keeps XLA from fusing the k*k reductions into one slow kernel.
    padded = _pad_same(x, size)

    def offset(index, grad_kernel):
        window = jax.lax.dynamic_slice(
            padded, (0, index // size, index % size, 0), (batch, height, width, channels)
        )
        return grad_kernel.at[index].set(jnp.sum(window * grad, axis=(0, 1, 2)))

    grad_kernel = jax.lax.fori_loop(
        0, size * size, offset, jnp.zeros((size * size, channels), kernel.dtype)
    )
    return grad_x, grad_kernel.reshape(kernel.shape)


depthwise_conv.defvjp(_depthwise_conv_fwd, _depthwise_conv_bwd)


def depthwise_conv_native(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """`depthwise_conv` as XLA's grouped convolution (one group per channel)."""
    size = kernel.shape[0]
    return jax.lax.conv_general_dilated(
        x,
        kernel[:, :, None, :],  # HWIO with I = 1
        window_strides=(1, 1),
        padding=[(size // 2, size // 2)] * 2,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=x.shape[-1],
    )


def conv(x: jax.Array, kernel: jax.Array, strides: int = 1, padding: int = 0) -> jax.Array:
    """A 2-D convolution, NHWC x HWIO, zero padding `padding` on every side (XLA's native)."""
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(strides, strides),
        padding=[(padding, padding)] * 2,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_stride1(x: jax.Array, kernel: jax.Array, padding: int) -> jax.Array:
    """`conv(x, kernel, 1, padding)` with a hand-written kernel gradient; padding < kernel size.

    XLA:CPU computes the kernel gradient of a k x k convolution as one convolution over the
    batch and pixels, 1.5 to 3 times slower than the k*k matrix products it is made of
    (bench/kernels.py: DDColor-T's 3x3 decoder convs at 256 px); the input gradient is XLA's own.
    """
    return conv(x, kernel, 1, padding)


def _conv_stride1_fwd(x, kernel, padding):
    return conv(x, kernel, 1, padding), (x, kernel)


def _conv_stride1_bwd(padding, residuals, grad):
    x, kernel = residuals
    batch, height, width, in_features = x.shape
    size, out_features = kernel.shape[0], kernel.shape[-1]
    # d/dx: the output gradient convolved with the kernel flipped in space, in/out swapped.
    grad_x = conv(grad, jnp.swapaxes(kernel[::-1, ::-1], 2, 3), 1, size - 1 - padding)
    # d/dkernel[i, j] = x^T (the output gradient shifted by (i, j)), over batch and pixels: one
    # matrix product per window offset, one offset at a time (a loop keeps only one shifted
    # copy alive). The gradient is shifted, not x: it is padded by size - 1 - padding so that
    # every shift is a window of x's size.
    pad = size - 1 - padding
    padded = jnp.pad(grad, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    # x transposed once, not in every step of the loop (the product contracts over its rows).
    x_t = x.reshape(-1, in_features).T

    def offset(index):
        i, j = index // size, index % size
        window = jax.lax.dynamic_slice(
            padded, (0, size - 1 - i, size - 1 - j, 0), (batch, height, width, out_features)
        )
        return x_t @ window.reshape(-1, out_features)

    grad_kernel = jax.lax.map(offset, jnp.arange(size * size))
    grad_kernel = grad_kernel.reshape(size, size, in_features, out_features)
    return grad_x, grad_kernel.astype(kernel.dtype)


conv_stride1.defvjp(_conv_stride1_fwd, _conv_stride1_bwd)


@jax.custom_vjp
def matmul_by_rows(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """x @ kernel, x: [..., K], kernel: [K, N], with a hand-written kernel gradient.

    The kernel gradient contracts over the rows of x and of the output gradient. Autodiff
    writes it as a product contracting both operands' first axis, which XLA:CPU gives to its
    generic Eigen products rather than YNNPACK; with one operand transposed first, it is a plain
    [K, M] x [M, N] product, or [N, M] x [M, K] with the small result transposed after it,
    whichever moves fewer elements, which YNNPACK takes
    (`bench/kernels.py --only dense`: forward and gradient 1.1 to 2.6 times faster on
    DDColor-T's dense layers and 1x1 convs).
    """
    return x @ kernel


def _matmul_by_rows_fwd(x, kernel):
    return x @ kernel, (x, kernel)


def _matmul_by_rows_bwd(residuals, grad):
    x, kernel = residuals
    inner, outer = kernel.shape
    x_rows, grad_rows = x.reshape(-1, inner), grad.reshape(-1, outer)
    rows = x_rows.shape[0]
    # The barriers keep XLA's simplifier from folding the transposes back into the products.
    # XLA removes them before fusion, which can still fuse a transpose with its producer (it
    # does, with the depthwise convolution before a ConvNeXt block's pwconv1) or with the
    # optimiser's updates that read the result.
    barrier = jax.lax.optimization_barrier
    # Transpose x, or the output gradient and then the [N, K] result: whichever moves fewer
    # elements. With few rows (a small batch, deep layers) that is x even where K > N.
    if rows * inner <= rows * outer + outer * inner:
        grad_kernel = barrier(x_rows.T) @ grad_rows
    else:
        grad_kernel = barrier(barrier(grad_rows.T) @ x_rows).T
    return grad @ kernel.T, grad_kernel.astype(kernel.dtype)


matmul_by_rows.defvjp(_matmul_by_rows_fwd, _matmul_by_rows_bwd)


def matmul(x: jax.Array, kernel: jax.Array, kernels: str = "auto") -> jax.Array:
    """x @ kernel over x's last axis: `matmul_by_rows` with the CPU rewrites (`use_rewrites`),
    else the plain product."""
    return matmul_by_rows(x, kernel) if use_rewrites(kernels) else x @ kernel


def _dot_general_by_rows(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    (lhs_contract, rhs_contract), batch = dimension_numbers
    count = len(lhs_contract)
    plain = (
        any(batch)
        or tuple(lhs_contract) != tuple(range(lhs.ndim - count, lhs.ndim))
        or tuple(rhs_contract) != tuple(range(count))
        or precision is not None
        or preferred_element_type is not None
    )
    if plain:
        return jax.lax.dot_general(
            lhs, rhs, dimension_numbers, precision, preferred_element_type=preferred_element_type
        )
    lead, inner = lhs.shape[: lhs.ndim - count], int(np.prod(rhs.shape[:count]))
    out = matmul_by_rows(lhs.reshape(*lead, inner), rhs.reshape(inner, -1))
    return out.reshape(*lead, *rhs.shape[count:])


def dense_dot_general(kernels: str = "auto") -> Callable | None:
    """The `dot_general` of a flax `Dense` or `DenseGeneral`: `matmul_by_rows` for its
    product with the CPU rewrites (`use_rewrites`), else None (flax's `lax.dot_general`)."""
    return _dot_general_by_rows if use_rewrites(kernels) else None


class DepthwiseConv(nn.Module):
    """nn.Conv(C, (k, k), padding='SAME', feature_group_count=C) on [B, H, W, C], computed by
    `depthwise_conv` (CPU) or XLA's grouped convolution (`kernels`, see `use_rewrites`); same
    parameters (kernel [k, k, 1, C], bias [C])."""

    kernel_size: int = 7
    kernel_init: Initializer = nn.initializers.lecun_normal()
    bias_init: Initializer = nn.initializers.zeros
    kernels: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        kernel = self.param(
            "kernel", self.kernel_init, (self.kernel_size, self.kernel_size, 1, channels)
        )
        bias = self.param("bias", self.bias_init, (channels,))
        apply = depthwise_conv if use_rewrites(self.kernels) else depthwise_conv_native
        return apply(x, kernel[:, :, 0, :]) + bias


@jax.custom_vjp
def relu(x: jax.Array) -> jax.Array:
    """max(x, 0), whose backward keeps the output instead of the input (y > 0 exactly where
    x > 0): the pre-activation can be freed, one activation-sized buffer less in training
    (DDColor-T's last upsampling: 256 MiB at batch 4)."""
    return jnp.maximum(x, 0)


def _relu_fwd(x):
    y = jnp.maximum(x, 0)
    return y, y


def _relu_bwd(y, grad):
    return (jnp.where(y > 0, grad, jnp.zeros_like(grad)),)


relu.defvjp(_relu_fwd, _relu_bwd)


# From this many elements of one picture's sub-pixel features up, `subpixel_projection` takes
# its CPU rewrite, whatever the batch, so that a picture's colours do not depend on the batch it
# is in (bench/kernels.py: from DDColor-T's 16 MiB at 128 px and batch 1 up, the loop is faster
# in the forward pass and the gradient; at the DDColor demo's 8 MiB, a batch of 16 of its 0.5 MiB
# pictures, its forward pass takes up to twice as long and its gradient 0-30% less: the demo
# keeps the native form, and with it its arithmetic).
SUBPIXEL_LOOP_MIN_ELEMENTS = 2**22


def subpixel_projection(
    x: jax.Array,
    kernel: jax.Array,
    bias: jax.Array,
    projection: jax.Array,
    *,
    kernels: str = "auto",
    recompute: bool = False,
) -> jax.Array:
    """relu(x @ kernel + bias) per pixel, each sub-pixel's features times the sample's matrix.

    x: [B, h, w, Cin]; kernel: [Cin, S * C] and bias: [S * C], output channels in sub-pixel-major
    order (s, c) (`to_subpixel_major`); projection: [B, C, O]. Returns [B, h, w, S * O], channels
    (s, o): the features of the upsampled image, S sub-pixels per pixel, each multiplied by the
    projection without the [B, h, w, S * C] features ever being an output. DDColor's last
    upsampling and the share of its refine layer that reads them (see `DDColor`).

    Large features on the CPU (`use_rewrites`, and at least `SUBPIXEL_LOOP_MIN_ELEMENTS` per
    picture) take `subpixel_projection_by_subpixel`, the rest `subpixel_projection_native`: the
    same function. recompute: the loop's backward pass computes the features again instead of
    keeping them from the forward pass (memory for time, as a block's remat).
    """
    per_picture = int(np.prod(x.shape[1:-1])) * kernel.shape[-1]
    if use_rewrites(kernels) and per_picture >= SUBPIXEL_LOOP_MIN_ELEMENTS:
        return subpixel_projection_by_subpixel(x, kernel, bias, projection, recompute)
    return subpixel_projection_native(x, kernel, bias, projection)


def subpixel_projection_native(
    x: jax.Array, kernel: jax.Array, bias: jax.Array, projection: jax.Array
) -> jax.Array:
    """`subpixel_projection` as written: every feature, then the products."""
    batch, height, width, _ = x.shape
    subpixels = kernel.shape[-1] // projection.shape[1]
    features = relu(x @ kernel + bias).reshape(batch, height, width, subpixels, -1)
    out = jnp.einsum("bhwsc,bco->bhwso", features, projection)
    return out.reshape(batch, height, width, -1)


@partial(jax.custom_vjp, nondiff_argnums=(4,))
def subpixel_projection_by_subpixel(
    x: jax.Array,
    kernel: jax.Array,
    bias: jax.Array,
    projection: jax.Array,
    recompute: bool = False,
) -> jax.Array:
    """The CPU rewrite of `subpixel_projection`: a loop over the sub-pixels, each one's features
    computed and multiplied while they are in the cache, with the gradient written out the same
    way. Autodiff of the native form holds the features' gradient, its masked copy and a
    transposed copy at once (each as large as the features: 256 MiB for DDColor-T at batch 4);
    this holds one sub-pixel's.

    The features themselves are kept from the forward pass for the backward pass, one buffer as
    large as all of them; with `recompute`, the backward pass computes each sub-pixel's again
    instead, one more matrix product per sub-pixel (a third more arithmetic in the layer)."""
    return _project_subpixels(x, kernel, bias, projection, keep=False)[0]


def _subpixel_chunks(kernel: jax.Array, bias: jax.Array, channels: int):
    # [Cin, S * C] and [S * C] -> [S, Cin, C] and [S, C]
    subpixels = kernel.shape[-1] // channels
    chunks = kernel.reshape(kernel.shape[0], subpixels, channels).transpose(1, 0, 2)
    return chunks, bias.reshape(subpixels, channels)


def _subpixel_features(x, chunk_kernel, chunk_bias):
    return jnp.maximum(x @ chunk_kernel + chunk_bias, 0)  # [B, h, w, C]


def _project_subpixels(x, kernel, bias, projection, *, keep: bool):
    """The output and the residuals of the backward pass: the features [S, B, h, w, C] of every
    sub-pixel where `keep`, else None."""
    batch, height, width, _ = x.shape
    kernel_chunks, bias_chunks = _subpixel_chunks(kernel, bias, projection.shape[1])

    def one(_, weights):
        features = _subpixel_features(x, *weights)
        out = jnp.einsum("bhwc,bco->bhwo", features, projection)
        return None, (out, features if keep else None)

    _, (out, features) = jax.lax.scan(one, None, (kernel_chunks, bias_chunks))
    out = jnp.moveaxis(out, 0, 3).reshape(batch, height, width, -1)  # [S, B, h, w, O] -> ...
    return out, (x, kernel_chunks, bias_chunks, projection, features)


def _subpixel_projection_forward(x, kernel, bias, projection, recompute):
    return _project_subpixels(x, kernel, bias, projection, keep=not recompute)


def _subpixel_projection_backward(recompute, residuals, grad_out):
    x, kernel_chunks, bias_chunks, projection, kept = residuals
    batch, height, width, in_channels = x.shape
    subpixels = kernel_chunks.shape[0]
    grads = jnp.moveaxis(grad_out.reshape(batch, height, width, subpixels, -1), 3, 0)
    # The products below contract over the pixels. Each is written with the operand that has to
    # be transposed for it transposed once here (x) or small (the gradient of the output), not a
    # transposed copy of a [B * h * w, C] chunk in every step of the loop.
    x_t = x.reshape(-1, in_channels).T  # [Cin, B * h * w]
    f32 = jnp.float32

    def one(carry, inputs):
        grad_x, grad_projection_t = carry
        chunk_kernel, chunk_bias, grad, chunk_features = inputs
        if chunk_features is None:
            chunk_features = _subpixel_features(x, chunk_kernel, chunk_bias)
        grad_features = jnp.einsum("bhwo,bco->bhwc", grad, projection)
        grad_pre = jnp.where(chunk_features > 0, grad_features, jnp.zeros_like(grad_features))
        grad_kernel = x_t @ grad_pre.reshape(-1, grad_pre.shape[-1])
        grad_bias = grad_pre.sum((0, 1, 2))
        # The sums over sub-pixels in float32, as one matrix product would accumulate them.
        grad_x = grad_x + jnp.einsum(
            "bhwc,ic->bhwi", grad_pre, chunk_kernel, preferred_element_type=f32
        )
        grad_projection_t = grad_projection_t + jnp.einsum(
            "bhwo,bhwc->boc", grad, chunk_features, preferred_element_type=f32
        )
        return (grad_x, grad_projection_t), (grad_kernel, grad_bias)

    _, channels, out_channels = projection.shape
    start = (jnp.zeros(x.shape, f32), jnp.zeros((batch, out_channels, channels), f32))
    (grad_x, grad_projection_t), (grad_kernels, grad_biases) = jax.lax.scan(
        one, start, (kernel_chunks, bias_chunks, grads, kept)
    )
    grad_kernel = grad_kernels.transpose(1, 0, 2).reshape(in_channels, -1)
    return (
        grad_x.astype(x.dtype),
        grad_kernel,
        grad_biases.reshape(-1),
        jnp.swapaxes(grad_projection_t, 1, 2).astype(projection.dtype),
    )


subpixel_projection_by_subpixel.defvjp(_subpixel_projection_forward, _subpixel_projection_backward)


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
    parameter is the unnormalised kernel. The project's one spectral norm: DDColor's generator
    and its discriminator both use it.
    """

    features: int
    kernel_size: int = 1
    padding: int = 0  # on every side
    use_bias: bool = True
    strides: int = 1
    kernel_init: Initializer = kaiming_normal
    bias_init: Initializer = nn.initializers.zeros
    eps: float = 1e-12
    kernels: str = "auto"  # CPU rewrites (`use_rewrites`): `matmul_by_rows` (1x1), `conv_stride1`

    def normalized(self, in_features: int, *, train: bool) -> tuple[jax.Array, jax.Array | None]:
        """The kernel [k, k, in_features, features] divided by sigma, and the bias (or None)."""
        kernel, sigma, bias = self.weights(in_features, train=train)
        return kernel / sigma, bias

    @nn.compact
    def weights(
        self, in_features: int, *, train: bool
    ) -> tuple[jax.Array, jax.Array, jax.Array | None]:
        """The unnormalised kernel [k, k, in_features, features], sigma, and the bias."""
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
        # In the kernel's dtype: a float32 sigma would promote a bfloat16 convolution.
        sigma = jnp.dot(v_vec @ matrix, u_vec).astype(kernel.dtype)
        bias = self.param("bias", self.bias_init, (self.features,)) if self.use_bias else None
        return kernel, sigma, bias

    def __call__(
        self,
        x: jax.Array,
        *,
        train: bool,
        output_order: Callable[[jax.Array], jax.Array] | None = None,
    ) -> jax.Array:
        """x: [B, H, W, Cin] -> [B, H', W', features].

        output_order: a permutation of the last axis (e.g. `to_subpixel_major`); the output
        channels are computed in that order, the parameters keep theirs.
        """
        kernel, sigma, bias = self.weights(x.shape[-1], train=train)
        if output_order is not None:
            kernel = output_order(kernel)
            bias = output_order(bias) if bias is not None else None
        # Divide whichever is smaller, the kernel or the output, by sigma (the same function).
        output_size = np.prod(x.shape[1:-1]) * self.features // self.strides**2  # about
        if isinstance(x.shape[0], int):
            output_size *= x.shape[0]  # a symbolic batch (jax.export): one picture's
        scale_output = output_size < kernel.size
        if not scale_output:
            kernel = kernel / sigma
        if self.kernel_size == 1 and self.strides == 1 and self.padding == 0:
            # A matrix product (the same arithmetic on every platform; XLA:CPU computes the
            # gradients of 1x1 convolutions far slower).
            y = matmul(x, kernel[0, 0], self.kernels)
        elif self.strides == 1 and self.padding < self.kernel_size and use_rewrites(self.kernels):
            y = conv_stride1(x, kernel, self.padding)
        else:
            y = conv(x, kernel, self.strides, self.padding)
        if scale_output:
            y = y / sigma
        return y if bias is None else y + bias


def sine_position_encoding(height: int, width: int, channels: int) -> np.ndarray:
    """DETR's normalised sine position encoding for an height x width grid.

    Returns [height * width, channels] (row-major positions): the first channels/2 encode the
    row, the rest the column; within each half, even channels are sin(p / t_k) and odd
    channels cos(p / t_k) with t_k = 10000^(2 floor(k / 2) / (channels / 2)), and p the 1-based
    position scaled to (0, 2 pi].
    """
    half = channels // 2
    eps = np.float32(1e-6)
    scale = np.float32(2 * np.pi)
    rows = np.arange(1, height + 1, dtype=np.float32)
    cols = np.arange(1, width + 1, dtype=np.float32)
    rows = rows / (rows[-1] + eps) * scale
    cols = cols / (cols[-1] + eps) * scale
    k = np.arange(half, dtype=np.float32)
    periods = np.float32(10000) ** (2 * (k // 2) / np.float32(half))

    def encode(positions: np.ndarray) -> np.ndarray:
        angles = positions[:, None] / periods  # [n, half]
        return np.where(k % 2 == 0, np.sin(angles), np.cos(angles)).astype(np.float32)

    row_code = np.broadcast_to(encode(rows)[:, None, :], (height, width, half))
    col_code = np.broadcast_to(encode(cols)[None, :, :], (height, width, half))
    return np.concatenate([row_code, col_code], axis=-1).reshape(height * width, channels)
