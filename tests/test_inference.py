"""The geometry and input conversions of `aiaic_jax.inference`: pictures of any aspect ratio
meet the model's square undistorted, and the prediction comes back at the input's size."""

import jax
import numpy as np
import pytest
from PIL import Image

from aiaic_jax import color
from aiaic_jax.inference import (
    STRIP_ROWS,
    Box,
    _bucket,
    _compose,
    as_model_audio,
    as_rgb_uint8,
    fit_to_model,
    full_resolution,
)
from tests import media_factory

SIZE = 64


@pytest.mark.parametrize(
    ("width", "height", "box"),
    [
        (160, 90, Box(14, 0, 36, 64)),  # 16:9
        (80, 60, Box(8, 0, 48, 64)),  # 4:3
        (60, 80, Box(0, 8, 64, 48)),  # 3:4, portrait
        (64, 64, Box(0, 0, 64, 64)),
    ],
)
def test_pad_keeps_the_aspect_ratio_and_mirrors_the_margins(width, height, box):
    picture = media_factory.colourful_image((width, height), seed=1)
    canvas, found = fit_to_model(picture, SIZE, "pad")
    assert found == box and canvas.shape == (SIZE, SIZE, 3)
    expected = np.asarray(
        Image.fromarray(picture).resize((box.width, box.height), Image.Resampling.BILINEAR)
    )
    inside = canvas[box.top : box.top + box.height, box.left : box.left + box.width]
    np.testing.assert_array_equal(inside, expected)
    if box.top:  # the margin mirrors the picture's edge rows
        np.testing.assert_array_equal(canvas[box.top - 1], canvas[box.top])
        np.testing.assert_array_equal(canvas[box.top + box.height], inside[-1])
    if box.left:
        np.testing.assert_array_equal(canvas[:, box.left - 1], canvas[:, box.left])


def test_squash_resizes_the_whole_picture_to_the_square():
    picture = media_factory.colourful_image((160, 90), seed=2)
    canvas, box = fit_to_model(picture, SIZE, "squash")
    assert box == Box(0, 0, SIZE, SIZE)
    expected = Image.fromarray(picture).resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(canvas, np.asarray(expected))
    with pytest.raises(ValueError, match="resize"):
        fit_to_model(picture, SIZE, "stretch")


def _smooth_ab(seed=0):
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(-60, 60, (8, 8, 2)).astype(np.float32)
    return jax.image.resize(coarse, (SIZE, SIZE, 2), "bilinear")


@pytest.mark.parametrize("size", [(90, 160), (47, 33), (300, 400), (600, 90)])
def test_squash_output_is_the_resized_prediction_with_the_inputs_own_l(size):
    """The same as resizing ab to the input with jax.image.resize, for sizes that grow and
    shrink, whatever bucket the composition runs in."""
    picture = media_factory.colourful_image(size[::-1], seed=3)
    ab = _smooth_ab()
    result = full_resolution(picture, ab, Box(0, 0, SIZE, SIZE))
    gray_l, _ = color.rgb_to_l_ab(color.rgb_uint8_to_float(picture))
    expected = color.l_ab_to_rgb_uint8(gray_l, jax.image.resize(ab, (*size, 2), "bilinear"))
    assert result.shape == (*size, 3)
    assert np.max(np.abs(result.astype(int) - np.asarray(expected).astype(int))) <= 1


def test_pad_output_takes_the_colour_of_the_pictures_box():
    picture = media_factory.colourful_image((160, 90), seed=4)
    ab = np.asarray(_smooth_ab(1))
    box = Box(14, 0, 36, 64)
    result = full_resolution(picture, ab, box)
    gray_l, _ = color.rgb_to_l_ab(color.rgb_uint8_to_float(picture))
    inside = ab[box.top : box.top + box.height]
    expected = color.l_ab_to_rgb_uint8(gray_l, jax.image.resize(inside, (90, 160, 2), "bilinear"))
    difference = np.abs(result.astype(int) - np.asarray(expected).astype(int))
    assert result.shape == (90, 160, 3)
    assert difference[3:-3].max() <= 1  # away from the box's edge rows, the same colours


def test_a_tall_picture_composed_in_strips_equals_one_composition():
    height, width = STRIP_ROWS * 2 + 37, 70
    picture = media_factory.colourful_image((width, height), seed=5)
    ab = _smooth_ab(2)
    box = Box(0, 10, SIZE, 44)
    scale = np.array([height / box.height, width / box.width], np.float32)
    translation = np.array([0.0, -box.left * scale[1]], np.float32)
    whole = np.asarray(_compose(picture, ab, scale, translation))
    np.testing.assert_array_equal(full_resolution(picture, ab, box), whole)


def test_buckets_are_few_and_waste_little():
    lengths = range(100, 4001)
    buckets = {_bucket(n) for n in lengths}
    assert all(_bucket(n) >= n for n in lengths)
    assert all(_bucket(n) - n < max(16, n / 8) for n in lengths)
    assert len(buckets) <= 50


def test_images_of_every_form_become_rgb_uint8():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(as_rgb_uint8(grey)[..., 1], grey)
    assert as_rgb_uint8(grey[..., None]).shape == (3, 4, 3)
    assert as_rgb_uint8(np.ones((2, 2, 3), np.float32))[0, 0, 0] == 255
    with pytest.raises(ValueError, match="NaN"):
        as_rgb_uint8(np.full((2, 2), np.nan, np.float32))
    with pytest.raises(ValueError, match="shape"):
        as_rgb_uint8(np.zeros((2, 2, 4), np.uint8))


def test_sound_of_any_rate_and_channels_becomes_16khz_mono_int16():
    stereo = media_factory.tone(1.0, 44100, channels=2)
    mono = as_model_audio(stereo, 44100)
    assert mono.dtype == np.int16 and abs(mono.size - 16000) <= 1
    assert abs(media_factory.dominant_hz(mono[:16000]) - media_factory.tone_hz(0)) < 5
    floats = np.full(800, np.nan, np.float32)
    np.testing.assert_array_equal(as_model_audio(floats, 16000), np.zeros(800, np.int16))
    with pytest.raises(ValueError, match="sample_rate"):
        as_model_audio(mono, 0)
