"""sRGB <-> CIE Lab in jnp, matching `skimage.color.rgb2lab` / `lab2rgb`.

Everything here is jit-able, works on any leading shape `[..., C]` and runs inside the jitted
train and eval steps. Units throughout the project:

- sRGB float: gamma-encoded, in [0, 1].
- sRGB uint8: [0, 255].
- Lab: D65 white point, 2° observer; L in [0, 100], a and b in raw Lab units (roughly
  [-128, 127] for colours sRGB can show).

The formulas, constants and thresholds are skimage's (its sRGB matrix, D65 white
(0.95047, 1, 1.08883), the 0.008856 / 7.787 linear segment), so values agree with skimage to
float32 rounding. Gradients are finite everywhere, including black, pure white and the points
where a value is clipped: the power laws are evaluated on inputs kept away from zero so that
the branch `jnp.where` discards cannot put an infinite slope into the gradient.

Also here, as a statistic of colours that both the training loss and the evaluation use:
`colorfulness` (Hasler and Süsstrunk, as DDColor computes it).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# sRGB primaries (linear RGB -> XYZ), as skimage defines them; the inverse in float64.
XYZ_FROM_RGB = np.array(
    [
        [0.412453, 0.357580, 0.180423],
        [0.212671, 0.715160, 0.072169],
        [0.019334, 0.119193, 0.950227],
    ]
)
RGB_FROM_XYZ = np.linalg.inv(XYZ_FROM_RGB)
D65_WHITE = np.array([0.95047, 1.0, 1.08883])  # XYZ of the reference white, 2° observer

# The range DDColor clips predicted ab to before converting to RGB.
AB_MIN = -128.0
AB_MAX = 127.0

_SRGB_DECODE_KNEE = 0.04045  # below: linear segment of the sRGB transfer curve
_SRGB_ENCODE_KNEE = 0.0031308
_LAB_EPSILON = 0.008856  # (6/29)^3 rounded as skimage does
_LAB_F_KNEE = 0.2068966  # 6/29: the same knee on the f(t) side
_LAB_SLOPE = 7.787
_LAB_OFFSET = 16.0 / 116.0


def _apply_matrix(matrix: np.ndarray, values: jax.Array) -> jax.Array:
    """values [..., 3] times matrix^T, at full float32 precision on every backend."""
    return jnp.einsum(
        "...j,ij->...i",
        values,
        jnp.asarray(matrix, values.dtype),
        precision=jax.lax.Precision.HIGHEST,
    )


def _as_float(x: jax.Array) -> jax.Array:
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


def _check_channels(x: jax.Array, channels: int, name: str) -> None:
    if x.ndim < 1 or x.shape[-1] != channels:
        raise ValueError(f"{name} must have shape [..., {channels}], got {x.shape}")


def rgb_to_lab(rgb: jax.Array) -> jax.Array:
    """sRGB [..., 3] floats in [0, 1] -> Lab [..., 3] (L in [0, 100], raw a, b).

    Matches `skimage.color.rgb2lab` (D65, 2°). Inputs are not clipped; values slightly outside
    [0, 1] follow the same formulas as skimage.
    """
    rgb = _as_float(rgb)
    _check_channels(rgb, 3, "rgb")
    # sRGB decoding; the power branch sees only values above the knee.
    safe = jnp.maximum(rgb, _SRGB_DECODE_KNEE)
    linear = jnp.where(rgb > _SRGB_DECODE_KNEE, ((safe + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = _apply_matrix(XYZ_FROM_RGB, linear) / jnp.asarray(D65_WHITE, rgb.dtype)
    safe_xyz = jnp.maximum(xyz, _LAB_EPSILON)
    f = jnp.where(xyz > _LAB_EPSILON, jnp.cbrt(safe_xyz), _LAB_SLOPE * xyz + _LAB_OFFSET)
    fx, fy, fz = f[..., 0], f[..., 1], f[..., 2]
    return jnp.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1)


def lab_to_rgb(lab: jax.Array) -> jax.Array:
    """Lab [..., 3] (L in [0, 100], raw a, b) -> sRGB [..., 3] in [0, 1].

    Matches `skimage.color.lab2rgb` (D65, 2°), including how it handles colours sRGB cannot
    show: a negative Z (large positive b) is clipped to Z = 0 before the cube, and the final
    sRGB values are clipped to [0, 1]. Clipped values have zero gradient (as with DDColor's
    hard clamp); the gradient is finite everywhere.
    """
    lab = _as_float(lab)
    _check_channels(lab, 3, "lab")
    fy = (lab[..., 0] + 16.0) / 116.0
    fx = lab[..., 1] / 500.0 + fy
    fz = jnp.maximum(fy - lab[..., 2] / 200.0, 0.0)  # skimage: negative z -> 0
    f = jnp.stack([fx, fy, fz], axis=-1)
    xyz = jnp.where(f > _LAB_F_KNEE, f**3, (f - _LAB_OFFSET) / _LAB_SLOPE)
    linear = _apply_matrix(RGB_FROM_XYZ, xyz * jnp.asarray(D65_WHITE, lab.dtype))
    # sRGB encoding; the 1/2.4 power has an infinite slope at 0, so keep its input above the knee.
    safe = jnp.maximum(linear, _SRGB_ENCODE_KNEE)
    rgb = jnp.where(linear > _SRGB_ENCODE_KNEE, 1.055 * safe ** (1.0 / 2.4) - 0.055, 12.92 * linear)
    return jnp.clip(rgb, 0.0, 1.0)


def _linear_from_uint8() -> np.ndarray:
    levels = np.arange(256) / 255.0
    curve = ((levels + 0.055) / 1.055) ** 2.4
    return np.where(levels > _SRGB_DECODE_KNEE, curve, levels / 12.92).astype(np.float32)


# sRGB decoding of every uint8 level: a lookup instead of a power per pixel and channel.
_LINEAR_FROM_UINT8 = _linear_from_uint8()


def l_from_rgb_uint8(rgb_u8: jax.Array) -> jax.Array:
    """The L channel [..., 1] (in [0, 100]) of a uint8 sRGB image [..., 3].

    The same L as `rgb_to_lab(rgb_u8 / 255)`, computed for large images: the sRGB curve is a
    256-entry table and only Y is formed (L depends on Y alone).
    """
    rgb_u8 = jnp.asarray(rgb_u8)
    _check_channels(rgb_u8, 3, "rgb_u8")
    linear = jnp.asarray(_LINEAR_FROM_UINT8)[rgb_u8.astype(jnp.int32)]
    weights = jnp.asarray(XYZ_FROM_RGB[1] / D65_WHITE[1], jnp.float32)
    y = jnp.einsum("...j,j->...", linear, weights, precision=jax.lax.Precision.HIGHEST)
    f = jnp.where(
        y > _LAB_EPSILON, jnp.cbrt(jnp.maximum(y, _LAB_EPSILON)), _LAB_SLOPE * y + _LAB_OFFSET
    )
    return (116.0 * f - 16.0)[..., None]


def rgb_to_l_ab(rgb: jax.Array) -> tuple[jax.Array, jax.Array]:
    """sRGB [..., 3] in [0, 1] -> (gray_l [..., 1] in [0, 100], ab [..., 2] raw units)."""
    lab = rgb_to_lab(rgb)
    return lab[..., :1], lab[..., 1:]


def l_ab_to_rgb(gray_l: jax.Array, ab: jax.Array) -> jax.Array:
    """Combine an L channel with (predicted) ab into sRGB in [0, 1].

    gray_l: [..., 1], L in [0, 100]; ab: [..., 2] raw Lab units, clipped to [-128, 127] first
    as DDColor does. Returns sRGB [..., 3] in [0, 1] (out-of-gamut handling as `lab_to_rgb`).
    """
    gray_l = _as_float(gray_l)
    ab = _as_float(ab)
    _check_channels(gray_l, 1, "gray_l")
    _check_channels(ab, 2, "ab")
    ab = jnp.clip(ab, AB_MIN, AB_MAX)
    dtype = jnp.result_type(gray_l.dtype, ab.dtype)
    return lab_to_rgb(jnp.concatenate([gray_l.astype(dtype), ab.astype(dtype)], axis=-1))


def gray_rgb_from_l(gray_l: jax.Array) -> jax.Array:
    """The grey sRGB image [..., 3] in [0, 1] of an L channel [..., 1] (Lab with a = b = 0).

    This is the input DDColor and others feed their networks. The three channels agree to
    about 1e-3 (skimage's sRGB matrix and D65 white do not map a = b = 0 to exactly equal RGB).
    """
    zero = jnp.zeros_like(_as_float(gray_l))  # no explicit shape: a symbolic batch stays symbolic
    return l_ab_to_rgb(gray_l, jnp.concatenate([zero, zero], axis=-1))


def rgb_uint8_to_float(rgb_u8: jax.Array) -> jax.Array:
    """uint8 [0, 255] -> float32 [0, 1] (any shape)."""
    return jnp.asarray(rgb_u8).astype(jnp.float32) / 255.0


def rgb_float_to_uint8(rgb: jax.Array) -> jax.Array:
    """float [0, 1] -> uint8 [0, 255]: clipped, scaled by 255 and rounded half to even.

    This is how the evaluation protocol (and DDColor's `tensor2img`) quantises an output.
    """
    return jnp.round(jnp.clip(jnp.asarray(rgb), 0.0, 1.0) * 255.0).astype(jnp.uint8)


def l_ab_to_rgb_uint8(gray_l: jax.Array, ab: jax.Array) -> jax.Array:
    """The image the metrics protocol scores: L combined with ab, sRGB, rounded to uint8.

    gray_l: [..., 1] in [0, 100]; ab: [..., 2] raw units. Returns uint8 [..., 3].
    """
    return rgb_float_to_uint8(l_ab_to_rgb(gray_l, ab))


def _safe_sqrt(x: jax.Array) -> jax.Array:
    """sqrt with a zero (not NaN) gradient at 0."""
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


def colorfulness(rgb: jax.Array, ddof: int = 0) -> jax.Array:
    """Hasler and Süsstrunk colorfulness as DDColor computes it; differentiable.

    rgb: [..., H, W, 3] float in any scale (the value scales with it: DDColor's training loss
    uses sRGB in [0, 1], its metric uint8 values in [0, 255]). With rg = |R - G| and
    yb = |(R + G) / 2 - B| (DDColor takes absolute values, unlike the paper's signed
    opponents), returns sqrt(std(rg)^2 + std(yb)^2) + 0.3 * sqrt(mean(rg)^2 + mean(yb)^2)
    per image, shape [...]. ddof = 0 is DDColor's metric (numpy std); its training loss uses
    torch's unbiased std (ddof = 1). The gradient is finite for grey images too.
    """
    rgb = jnp.asarray(rgb)
    if not jnp.issubdtype(rgb.dtype, jnp.floating):
        rgb = rgb.astype(jnp.float32)  # unsigned differences would wrap around
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    rg = jnp.abs(red - green)
    yb = jnp.abs(0.5 * (red + green) - blue)
    axes = (-2, -1)
    std_root = _safe_sqrt(jnp.var(rg, axis=axes, ddof=ddof) + jnp.var(yb, axis=axes, ddof=ddof))
    mean_root = _safe_sqrt(jnp.mean(rg, axis=axes) ** 2 + jnp.mean(yb, axis=axes) ** 2)
    return std_root + 0.3 * mean_root
