"""aiaic_jax.audio: VGGSound spectrogram against scipy, log-mel against librosa, fit_length."""

import functools

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest
import scipy.signal

from aiaic_jax import audio, inference

SAMPLE_RATE = 16000


def _speechlike_int16(num_samples: int, seed: int = 0) -> np.ndarray:
    """A demanding test clip: gliding tone with an envelope, a late tone, noise, a quiet gap."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / SAMPLE_RATE
    envelope = np.abs(np.sin(2 * np.pi * 0.3 * t + seed)) ** 3
    glide = np.sin(2 * np.pi * (300 + 200 * np.sin(2 * np.pi * 0.5 * t)) * t)
    wave = 0.5 * envelope * glide + 0.2 * np.sin(2 * np.pi * 2500 * t) * (t > t[-1] / 2)
    wave += 0.01 * envelope * rng.standard_normal(num_samples)
    wave[num_samples // 4 : num_samples * 3 // 8] *= 1e-3  # quiet passage
    return np.round(np.clip(wave, -1, 1) * 32767).astype(np.int16)


def _official_vggsound(wave: np.ndarray) -> np.ndarray:
    """The VGGSound recipe in float64 numpy/scipy, on a clip already at its length."""
    samples = np.clip(wave, -1.0, 1.0)
    _, _, psd = scipy.signal.spectrogram(samples, SAMPLE_RATE, nperseg=512, noverlap=353)
    log_psd = np.log(psd + 1e-7)
    return (log_psd - log_psd.mean()) / (log_psd.std() + 1e-9)


vggsound_jit = jax.jit(audio.vggsound_spectrogram)
psd_jit = jax.jit(audio.psd_spectrogram)


@pytest.fixture(scope="module")
def ten_second_clips() -> np.ndarray:
    return np.stack([_speechlike_int16(160000, seed) for seed in range(2)])  # [2, 160000]


def test_ten_seconds_gives_257_by_1004(ten_second_clips):
    features = vggsound_jit(ten_second_clips)
    assert features.shape == (2, 257, 1004)
    assert features.dtype == jnp.float32


def test_psd_matches_scipy_spectrogram_to_1e4_relative_above_the_floor(ten_second_clips):
    wave = ten_second_clips[0].astype(np.float64) / 32768
    _, _, reference = scipy.signal.spectrogram(wave, SAMPLE_RATE, nperseg=512, noverlap=353)
    ours = np.asarray(psd_jit(jnp.asarray(wave, jnp.float32)))
    assert ours.shape == reference.shape
    # |log(a + floor) - log(b + floor)| < 1e-4 is a 1e-4 relative error on psd + floor.
    np.testing.assert_allclose(np.log(ours + 1e-7), np.log(reference + 1e-7), atol=1e-4, rtol=0)
    # Where the PSD is well above the floor, the PSD itself is that accurate.
    loud = reference > 1e-3 * reference.max()
    np.testing.assert_allclose(ours[loud], reference[loud], rtol=1e-4)


def test_vggsound_features_match_the_official_recipe(ten_second_clips):
    ours = np.asarray(vggsound_jit(ten_second_clips))
    for clip, features in zip(ten_second_clips, ours):
        reference = _official_vggsound(clip.astype(np.float64) / 32768)
        np.testing.assert_allclose(features, reference, atol=1e-4, rtol=0)


@pytest.mark.parametrize("num_samples", [512, 671, 16000, 23456])
def test_other_lengths_match_scipy_frame_count_and_values(num_samples):
    wave = np.random.default_rng(num_samples).normal(0, 0.3, num_samples)
    reference = _official_vggsound(wave)
    ours = np.asarray(vggsound_jit(jnp.asarray(wave, jnp.float32)))
    assert ours.shape == reference.shape == (257, (num_samples - 353) // 159)
    np.testing.assert_allclose(ours, reference, atol=1e-4, rtol=0)


def test_int16_input_is_scaled_by_1_over_32768(ten_second_clips):
    as_float = jnp.asarray(ten_second_clips, jnp.float32) / 32768.0
    np.testing.assert_array_equal(
        np.asarray(vggsound_jit(ten_second_clips)), np.asarray(vggsound_jit(as_float))
    )


def test_float_input_is_clipped_to_unit_range():
    wave = np.random.default_rng(1).normal(0, 2.0, 4000).astype(np.float32)
    np.testing.assert_array_equal(
        np.asarray(vggsound_jit(wave)),
        np.asarray(vggsound_jit(np.clip(wave, -1, 1))),
    )
    np.testing.assert_allclose(
        np.asarray(vggsound_jit(wave)),
        _official_vggsound(wave.astype(np.float64)),
        atol=1e-4,
    )


@pytest.mark.parametrize("level", [0, 1000])
def test_silent_or_constant_clip_gives_exact_zeros(level):
    # A constant offset is removed by the per-segment detrending, so it is silence too.
    wave = np.full((2, 160000), level, np.int16)
    features = np.asarray(vggsound_jit(wave))
    assert np.isfinite(features).all()
    np.testing.assert_array_equal(features, 0.0)


def test_clips_in_a_batch_are_standardised_independently(ten_second_clips):
    batch = np.stack([ten_second_clips[0], np.zeros(160000, np.int16)])
    features = np.asarray(vggsound_jit(batch))
    np.testing.assert_allclose(features[0], np.asarray(vggsound_jit(ten_second_clips))[0])
    np.testing.assert_allclose(features[0].mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(features[0].std(), 1.0, atol=1e-5)


def test_clip_shorter_than_one_segment_is_rejected():
    with pytest.raises(ValueError, match="at least 512 samples"):
        audio.vggsound_spectrogram(jnp.zeros((2, 511), jnp.int16))


def test_non_audio_dtype_is_rejected():
    with pytest.raises(ValueError, match="int16 or floating"):
        audio.waveform_to_float(jnp.zeros(600, jnp.int32))


# Log-mel: one parameter set at 16 kHz and one at 22.05 kHz with fmin/fmax and power 1.
LOGMEL_CASES = [
    dict(sample_rate=16000, n_fft=1024, hop_length=160, n_mels=128, fmin=0.0, fmax=None, power=2.0),
    dict(
        sample_rate=22050, n_fft=512, hop_length=128, n_mels=64, fmin=50.0, fmax=8000.0, power=1.0
    ),
]


@pytest.mark.parametrize("params", LOGMEL_CASES)
def test_mel_spectrogram_matches_librosa(params):
    wave = _speechlike_int16(24000, seed=3).astype(np.float64) / 32768
    wave32 = jnp.asarray(wave, jnp.float32)
    reference = librosa.feature.melspectrogram(
        y=wave,
        sr=params["sample_rate"],
        n_fft=params["n_fft"],
        hop_length=params["hop_length"],
        n_mels=params["n_mels"],
        fmin=params["fmin"],
        fmax=params["fmax"],
        power=params["power"],
    )
    mel = np.asarray(jax.jit(functools.partial(audio.mel_spectrogram, **params))(wave32))
    assert mel.shape == reference.shape == (params["n_mels"], 1 + 24000 // params["hop_length"])
    # Bands within 60 dB of the loudest (1e-3 in power, 10^-1.5 in magnitude).
    loud = reference > 1e-3 ** (params["power"] / 2) * reference.max()
    np.testing.assert_allclose(mel[loud], reference[loud], rtol=1e-5)
    log_mel = np.asarray(jax.jit(functools.partial(audio.log_mel_spectrogram, **params))(wave32))
    np.testing.assert_allclose(log_mel, np.log(reference + 1e-5), atol=2e-4, rtol=0)


def test_audio_features_logmel_is_standardised_log_mel():
    wave = _speechlike_int16(16000, seed=4)[None]  # [1, 16000]
    features = np.asarray(
        jax.jit(functools.partial(audio.audio_features, kind="logmel", n_mels=40))(wave)
    )
    log_mel = np.asarray(jax.jit(functools.partial(audio.log_mel_spectrogram, n_mels=40))(wave))
    assert features.shape == (1, 40, 101)
    expected = (log_mel - log_mel.mean()) / log_mel.std()
    np.testing.assert_allclose(features, expected, atol=1e-4)


def test_audio_features_vggsound_fits_the_length_first():
    wave = _speechlike_int16(20000, seed=5)[None]
    features = jax.jit(functools.partial(audio.audio_features, num_samples=160000))(wave)
    expected = _official_vggsound(np.tile(wave[0].astype(np.float64) / 32768, 10)[:160000])
    assert features.shape == (1, 257, 1004)
    np.testing.assert_allclose(np.asarray(features)[0], expected, atol=1e-4)


def test_audio_features_rejects_unknown_kind():
    with pytest.raises(ValueError, match="unknown audio feature kind"):
        audio.audio_features(jnp.zeros((1, 1000)), "mfcc")


def test_fit_length_matches_official_tiling_for_clips_of_at_least_a_second():
    wave = np.arange(23456, dtype=np.int16)
    np.testing.assert_array_equal(audio.fit_length(wave, 160000), np.tile(wave, 10)[:160000])


def test_fit_length_repeats_very_short_clips_to_the_full_length():
    wave = np.array([1, 2, 3], np.int16)
    fitted = audio.fit_length(wave, 8)
    np.testing.assert_array_equal(fitted, [1, 2, 3, 1, 2, 3, 1, 2])
    assert fitted.dtype == np.int16 and isinstance(fitted, np.ndarray)


def test_fit_length_crops_long_clips_and_keeps_exact_ones():
    wave = np.arange(10.0)
    np.testing.assert_array_equal(audio.fit_length(wave, 4), [0, 1, 2, 3])
    np.testing.assert_array_equal(audio.fit_length(wave, 10), wave)


def test_fit_length_of_an_empty_clip_is_zeros():
    fitted = audio.fit_length(np.zeros(0, np.int16), 5)
    np.testing.assert_array_equal(fitted, np.zeros(5))
    assert fitted.dtype == np.int16


def test_fit_length_works_on_jax_arrays_batches_and_under_jit():
    batch = jnp.asarray([[1, 2, 3], [4, 5, 6]], jnp.int16)
    fitted = jax.jit(audio.fit_length, static_argnums=1)(batch, 7)
    assert isinstance(fitted, jax.Array)
    np.testing.assert_array_equal(fitted, [[1, 2, 3, 1, 2, 3, 1], [4, 5, 6, 4, 5, 6, 4]])


def test_sound_for_the_model_is_resampled_as_librosa_resamples():
    """`inference.as_model_audio` calls soxr itself (librosa's first call in a fresh environment
    compiles its numba utilities for half a minute): the same samples as `librosa.resample`."""
    for rate, size in ((44100, 44101), (22050, 100), (8000, 4410), (48000, 1)):
        wave = np.random.default_rng(size).uniform(-0.5, 0.5, size).astype(np.float32)
        expected = librosa.resample(wave, orig_sr=rate, target_sr=16000)
        expected = np.round(np.clip(expected, -1.0, 32767 / 32768) * 32768.0).astype(np.int16)
        np.testing.assert_array_equal(inference.as_model_audio(wave, rate), expected)
