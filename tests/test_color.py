"""aiaic_jax.color: sRGB <-> Lab against skimage, helpers, and gradients."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage import color as skcolor

from aiaic_jax import color

TOLERANCE = 1e-3


def _special_rgb() -> np.ndarray:
    """Black, white, greys, the primaries and secondaries: [N, 3] in [0, 1]."""
    primaries = np.eye(3)
    return np.concatenate(
        [np.zeros((1, 3)), np.ones((1, 3)), np.full((1, 3), 0.5), primaries, 1.0 - primaries]
    )


def _random_rgb(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(size=(n, 3))


def _skimage_lab2rgb(lab: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():  # skimage warns when it clips negative Z
        warnings.simplefilter("ignore")
        return skcolor.lab2rgb(lab)


# Jitted once here: eager mode would compile every primitive for every new shape.
rgb_to_lab_jit = jax.jit(color.rgb_to_lab)
lab_to_rgb_jit = jax.jit(color.lab_to_rgb)
l_ab_to_rgb_jit = jax.jit(color.l_ab_to_rgb)


def test_rgb_to_lab_matches_skimage_on_random_and_special_colours():
    rgb = np.concatenate([_random_rgb(2000), _special_rgb()])
    ours = np.asarray(rgb_to_lab_jit(jnp.asarray(rgb, jnp.float32)))
    np.testing.assert_allclose(ours, skcolor.rgb2lab(rgb), atol=TOLERANCE, rtol=0)


def test_black_is_zero_and_white_is_l100_with_skimage_tint():
    lab = np.asarray(rgb_to_lab_jit(jnp.asarray([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])))
    # skimage's sRGB matrix and D65 white leave white with a = -0.0024, b = 0.0046.
    expected = skcolor.rgb2lab(np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]))
    np.testing.assert_allclose(lab, expected, atol=1e-4, rtol=0)
    np.testing.assert_allclose(lab[:, 0], [0.0, 100.0], atol=1e-4)


def test_lab_to_rgb_matches_skimage_in_gamut():
    lab = skcolor.rgb2lab(np.concatenate([_random_rgb(2000, seed=1), _special_rgb()]))
    ours = np.asarray(lab_to_rgb_jit(jnp.asarray(lab, jnp.float32)))
    np.testing.assert_allclose(ours, _skimage_lab2rgb(lab), atol=TOLERANCE, rtol=0)


def test_lab_to_rgb_clips_out_of_gamut_like_skimage():
    rng = np.random.default_rng(2)
    lab = np.stack(
        [rng.uniform(0, 100, 5000), rng.uniform(-128, 127, 5000), rng.uniform(-128, 127, 5000)],
        axis=-1,
    )
    # Corners of the ab square at several L, including b large enough for negative Z.
    corners = np.array(
        [[L, a, b] for L in (0, 5, 50, 95, 100) for a in (-128, 127) for b in (-128, 127)]
    )
    lab = np.concatenate([lab, corners, [[10.0, 0.0, 127.0], [0.0, 0.0, 0.0]]])
    reference = _skimage_lab2rgb(lab)
    assert (reference == 0).any() and (reference == 1).any()  # the clipping is exercised
    ours = np.asarray(lab_to_rgb_jit(jnp.asarray(lab, jnp.float32)))
    np.testing.assert_allclose(ours, reference, atol=TOLERANCE, rtol=0)
    assert ours.min() >= 0.0 and ours.max() <= 1.0


def test_round_trip_rgb_lab_rgb_is_identity():
    rgb = np.concatenate([_random_rgb(1000, seed=3), _special_rgb()]).astype(np.float32)
    back = np.asarray(lab_to_rgb_jit(rgb_to_lab_jit(jnp.asarray(rgb))))
    np.testing.assert_allclose(back, rgb, atol=1e-4, rtol=0)


def test_any_leading_shape_is_accepted():
    rgb = _random_rgb(2 * 3 * 4, seed=4).reshape(2, 3, 4, 3).astype(np.float32)
    lab = rgb_to_lab_jit(rgb)
    assert lab.shape == (2, 3, 4, 3)
    assert rgb_to_lab_jit(rgb[0, 0, 0]).shape == (3,)
    np.testing.assert_allclose(
        np.asarray(lab[1, 2]), np.asarray(rgb_to_lab_jit(rgb[1, 2])), atol=1e-4
    )


def test_wrong_channel_count_is_rejected():
    with pytest.raises(ValueError, match=r"\[\.\.\., 3\]"):
        color.rgb_to_lab(jnp.zeros((4, 4, 2)))
    with pytest.raises(ValueError, match="ab"):
        color.l_ab_to_rgb(jnp.zeros((4, 4, 1)), jnp.zeros((4, 4, 3)))


def test_l_from_rgb_uint8_is_the_l_of_skimage_for_every_level():
    rng = np.random.default_rng(3)
    levels = np.arange(256, dtype=np.uint8)
    rgb_u8 = np.concatenate(
        [np.stack([levels] * 3, axis=-1), rng.integers(0, 256, (4096, 3), dtype=np.uint8)]
    )
    expected = skcolor.rgb2lab(rgb_u8[None].astype(np.float64) / 255.0)[0, :, :1]
    found = np.asarray(color.l_from_rgb_uint8(rgb_u8))
    np.testing.assert_allclose(found, expected, atol=TOLERANCE)
    np.testing.assert_allclose(found, np.asarray(color.rgb_to_l_ab(rgb_u8 / 255.0)[0]), atol=1e-4)


def test_rgb_to_l_ab_splits_lab():
    rgb = jnp.asarray(_random_rgb(16, seed=5).reshape(4, 4, 3), jnp.float32)
    gray_l, ab = jax.jit(color.rgb_to_l_ab)(rgb)
    assert gray_l.shape == (4, 4, 1) and ab.shape == (4, 4, 2)
    np.testing.assert_allclose(
        np.concatenate([gray_l, ab], axis=-1), np.asarray(rgb_to_lab_jit(rgb)), atol=1e-4
    )


def test_l_ab_to_rgb_clips_ab_to_ddcolor_range_first():
    gray_l = jnp.full((3, 1), 60.0)
    ab = jnp.asarray([[300.0, -500.0], [127.0, -128.0], [20.0, 30.0]])
    ours = np.asarray(l_ab_to_rgb_jit(gray_l, ab))
    reference = _skimage_lab2rgb(
        np.array([[60.0, 127.0, -128.0], [60.0, 127.0, -128.0], [60, 20, 30]])
    )
    np.testing.assert_allclose(ours, reference, atol=TOLERANCE, rtol=0)


def test_gray_rgb_from_l_is_lab_with_zero_ab():
    gray_l = jnp.linspace(0.0, 100.0, 21)[:, None]
    grey = np.asarray(jax.jit(color.gray_rgb_from_l)(gray_l))
    lab = np.concatenate([np.linspace(0.0, 100.0, 21)[:, None], np.zeros((21, 2))], axis=-1)
    np.testing.assert_allclose(grey, _skimage_lab2rgb(lab), atol=TOLERANCE, rtol=0)
    assert np.ptp(grey, axis=-1).max() < 1e-3  # grey to within skimage's matrix rounding


def test_uint8_float_round_trip_is_exact_for_every_level():
    levels = jnp.arange(256, dtype=jnp.uint8)
    as_float = color.rgb_uint8_to_float(levels)
    assert as_float.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(as_float), np.arange(256) / 255.0, rtol=1e-7)
    np.testing.assert_array_equal(np.asarray(color.rgb_float_to_uint8(as_float)), np.arange(256))


def test_rgb_float_to_uint8_rounds_and_clips():
    values = jnp.asarray([-0.5, 0.0, 0.4 / 255, 0.6 / 255, 254.4 / 255, 1.0, 1.7])
    np.testing.assert_array_equal(
        np.asarray(color.rgb_float_to_uint8(values)), [0, 0, 0, 1, 254, 255, 255]
    )


def test_l_ab_to_rgb_uint8_is_the_rounded_srgb_image():
    gray_l = jnp.asarray(np.random.default_rng(6).uniform(0, 100, (8, 8, 1)), jnp.float32)
    ab = jnp.asarray(np.random.default_rng(7).uniform(-90, 90, (8, 8, 2)), jnp.float32)
    image = jax.jit(color.l_ab_to_rgb_uint8)(gray_l, ab)
    assert image.dtype == jnp.uint8 and image.shape == (8, 8, 3)
    reference = _skimage_lab2rgb(np.concatenate([gray_l, ab], axis=-1).astype(np.float64))
    # Rounding can differ by one level where skimage and float32 straddle a half level.
    assert np.abs(np.asarray(image, int) - np.round(reference * 255)).max() <= 1


def _grad_of_sum(fn):
    return jax.jit(jax.grad(lambda v: jnp.sum(fn(v))))


lab_to_rgb_grad = _grad_of_sum(color.lab_to_rgb)
rgb_to_lab_grad = _grad_of_sum(color.rgb_to_lab)
l_ab_to_rgb_grad = jax.jit(jax.grad(lambda ab, gray_l: jnp.sum(color.l_ab_to_rgb(gray_l, ab))))


def _assert_finite_grad(grad_fn, x):
    grad = grad_fn(jnp.asarray(x, jnp.float32))
    assert np.isfinite(np.asarray(grad)).all(), (x, grad)


@pytest.mark.parametrize(
    "lab",
    [
        [0.0, 0.0, 0.0],  # black
        [100.0, 0.0, 0.0],  # white: RGB at the upper clip
        [0.0, 50.0, -50.0],  # black with colour: negative linear RGB
        [10.0, 0.0, 127.0],  # negative Z, clipped to zero
        [50.0, 127.0, -128.0],  # far out of gamut: several channels clipped
        [1.0, 0.0, 0.0],  # dark grey: sRGB encoding near its linear knee
        [8.0, 0.0, 0.0],  # f(t) at the cube/linear knee
    ],
)
def test_lab_to_rgb_gradient_is_finite(lab):
    _assert_finite_grad(lab_to_rgb_grad, lab)


@pytest.mark.parametrize("ab", [[0.0, 0.0], [127.0, -128.0], [300.0, -300.0]])
@pytest.mark.parametrize("gray_l", [0.0, 50.0, 100.0])
def test_l_ab_to_rgb_gradient_with_respect_to_ab_is_finite(gray_l, ab):
    grad = l_ab_to_rgb_grad(jnp.asarray(ab), jnp.asarray([gray_l]))
    assert np.isfinite(np.asarray(grad)).all()


def test_l_ab_to_rgb_gradient_is_nonzero_inside_the_gamut():
    grad = l_ab_to_rgb_grad(jnp.asarray([10.0, -10.0]), jnp.asarray([50.0]))
    assert np.abs(np.asarray(grad)).min() > 0


@pytest.mark.parametrize(
    "rgb", [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.04045, 0.0, 1.0], [1e-6, 0.5, 0.0]]
)
def test_rgb_to_lab_gradient_is_finite(rgb):
    _assert_finite_grad(rgb_to_lab_grad, rgb)
