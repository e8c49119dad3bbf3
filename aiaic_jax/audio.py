"""Waveform -> log spectrogram in jnp, run inside the jitted step on the accelerator.

Two feature kinds, both returned as `[B, F, T]` float32 and standardised per clip:

- `"vggsound"`: the input of the VGGSound audio ResNet (Chen et al. 2020), computed as their
  evaluation code does: samples clipped to [-1, 1], `scipy.signal.spectrogram(x, fs=16000,
  nperseg=512, noverlap=353)` with scipy's defaults (periodic Tukey(0.25) window, per-segment
  mean removal, one-sided PSD density scaling), `log(psd + 1e-7)`, then
  `(s - mean) / (std + 1e-9)` over the whole clip. 10 s at 16 kHz gives 257 x 1004.
- `"logmel"`: `librosa.feature.melspectrogram` (centred, zero-padded frames, periodic Hann
  window, Slaney mel filterbank) followed by `log(mel + log_floor)` and the same per-clip
  standardisation.

Accuracy of the float32 path against float64 scipy/librosa (`tests/test_audio.py` checks it on
tones, noise and quiet passages): `log(psd + 1e-7)` within 1e-4 absolute, that is `psd + 1e-7`
within 1e-4 relative (measured: about 1e-5), and the same for the standardised output; the
mel spectrogram within 1e-5 relative in bands within 60 dB of the clip's loudest, and
`log(mel + 1e-5)` within 2e-4 (measured: about 1e-4; float32 FFT rounding in the quietest
bands of a frame that also holds loud sound sets this). The transforms are FFTs, and the one
matrix product (mel) asks for full precision, so no backend drops to TF32.

Waveforms: int16 (scaled by 1/32768) or float (clipped to [-1, 1]), mono, time on the last axis.
"""

from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import scipy.signal

VGGSOUND_SAMPLE_RATE = 16000
VGGSOUND_NUM_SAMPLES = 160000  # 10 s: the clip length the VGGSound network was trained on
VGGSOUND_NPERSEG = 512
VGGSOUND_NOVERLAP = 353
VGGSOUND_LOG_FLOOR = 1e-7
STANDARDIZE_EPS = 1e-9

FeatureKind = Literal["vggsound", "logmel"]


def fit_length(wave: np.ndarray | jax.Array, num_samples: int) -> np.ndarray | jax.Array:
    """Repeat a short clip or crop a long one to exactly `num_samples` along the last axis.

    The VGGSound code tiles each clip ten times and keeps the first 160,000 samples; this is
    the same for every clip of at least a tenth of the target length, and shorter clips are
    repeated as often as needed rather than coming out short. An empty clip gives zeros.
    Works on numpy arrays (host pipeline) and jax arrays (inside jit: shapes are static);
    the result has the input's array type and dtype.
    """
    xp = jnp if isinstance(wave, jax.Array) else np
    wave = xp.asarray(wave)
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}")
    if wave.ndim == 0:
        raise ValueError("wave must have a time axis, got a scalar")
    length = wave.shape[-1]
    if length == 0:
        return xp.zeros((*wave.shape[:-1], num_samples), wave.dtype)
    repeats = -(-num_samples // length)  # ceil
    if repeats > 1:
        wave = xp.tile(wave, (1,) * (wave.ndim - 1) + (repeats,))
    return wave[..., :num_samples]


def waveform_to_float(wave: jax.Array) -> jax.Array:
    """int16 samples (scaled by 1/32768) or floats -> float32 clipped to [-1, 1]."""
    wave = jnp.asarray(wave)
    if wave.dtype == jnp.int16:
        return wave.astype(jnp.float32) / 32768.0
    if not jnp.issubdtype(wave.dtype, jnp.floating):
        raise ValueError(f"wave must be int16 or floating point, got {wave.dtype}")
    return jnp.clip(wave.astype(jnp.float32), -1.0, 1.0)


def standardize_per_clip(spec: jax.Array) -> jax.Array:
    """(s - mean) / (std + 1e-9) over the last two axes (frequency, time) of each clip.

    spec: [..., F, T]. The statistics are taken after subtracting the clip's minimum, which
    changes nothing mathematically but makes a constant clip (silence) come out as exact
    zeros instead of float32 rounding noise divided by 1e-9.
    """
    shifted = spec - jnp.min(spec, axis=(-2, -1), keepdims=True)
    centered = shifted - jnp.mean(shifted, axis=(-2, -1), keepdims=True)
    std = jnp.sqrt(jnp.mean(centered**2, axis=(-2, -1), keepdims=True))
    return centered / (std + STANDARDIZE_EPS)


def _frames(wave: jax.Array, frame_length: int, hop_length: int) -> jax.Array:
    """[..., N] -> [..., num_frames, frame_length], frames starting every hop_length samples."""
    num_frames = (wave.shape[-1] - frame_length) // hop_length + 1
    index = (
        np.arange(num_frames)[:, None] * hop_length + np.arange(frame_length)[None, :]
    )  # [num_frames, frame_length], a constant
    return wave[..., index]


@functools.cache
def _periodic_window(name: str | tuple, length: int) -> np.ndarray:
    return scipy.signal.get_window(name, length, fftbins=True).astype(np.float64)


def psd_spectrogram(
    wave: jax.Array,
    sample_rate: int = VGGSOUND_SAMPLE_RATE,
    nperseg: int = VGGSOUND_NPERSEG,
    noverlap: int = VGGSOUND_NOVERLAP,
) -> jax.Array:
    """`scipy.signal.spectrogram(wave, fs, nperseg=..., noverlap=...)` with its defaults.

    That is: periodic Tukey(0.25) window, each segment's mean removed before windowing, FFT of
    length nperseg, one-sided, PSD density scaling `|X|^2 / (fs * sum(window^2))` with the
    bins other than DC and Nyquist doubled. wave: [..., N] float, N >= nperseg. Returns the
    PSD [..., nperseg // 2 + 1, (N - noverlap) // (nperseg - noverlap)] in units^2 / Hz.
    """
    wave = jnp.asarray(wave)
    if wave.shape[-1] < nperseg:
        raise ValueError(
            f"a spectrogram with nperseg={nperseg} needs at least {nperseg} samples, got "
            f"{wave.shape[-1]}; fit the clip to a longer length first (fit_length)"
        )
    window = _periodic_window(("tukey", 0.25), nperseg)
    segments = _frames(wave, nperseg, nperseg - noverlap)  # [..., T, nperseg]
    segments = segments - jnp.mean(segments, axis=-1, keepdims=True)  # detrend='constant'
    spectrum = jnp.fft.rfft(segments * jnp.asarray(window, wave.dtype), axis=-1)
    power = jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2  # [..., T, F]
    scale = np.full(nperseg // 2 + 1, 1.0 / (sample_rate * np.sum(window**2)))
    scale[1 : (nperseg + 1) // 2] *= 2.0  # one-sided: fold the negative frequencies in
    psd = power * jnp.asarray(scale, wave.dtype)
    return jnp.swapaxes(psd, -1, -2)


def vggsound_spectrogram(wave: jax.Array) -> jax.Array:
    """The VGGSound network's input: standardised `log(psd + 1e-7)`.

    wave: [..., N] int16 or float at 16 kHz, already fitted to its length (`fit_length`; the
    network was trained on 10 s = 160,000 samples). Returns float32 [..., 257, frames]
    (257 x 1004 for 10 s). A silent clip gives zeros.
    """
    psd = psd_spectrogram(waveform_to_float(wave))
    return standardize_per_clip(jnp.log(psd + VGGSOUND_LOG_FLOOR))


@functools.cache
def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None
) -> np.ndarray:
    """librosa's Slaney-normalised mel filterbank [n_mels, n_fft // 2 + 1], built once."""
    return librosa.filters.mel(
        sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax
    ).astype(np.float32)


def mel_spectrogram(
    wave: jax.Array,
    sample_rate: int = VGGSOUND_SAMPLE_RATE,
    n_fft: int = 1024,
    hop_length: int = 160,
    n_mels: int = 128,
    fmin: float = 0.0,
    fmax: float | None = None,
    power: float = 2.0,
) -> jax.Array:
    """`librosa.feature.melspectrogram(y=wave, sr=..., n_fft=..., hop_length=..., ...)`.

    Centred frames (n_fft // 2 zeros padded on each side), periodic Hann window of length
    n_fft, |STFT|^power, Slaney mel filterbank. wave: [..., N] float. Returns
    [..., n_mels, 1 + N // hop_length].
    """
    wave = jnp.asarray(wave)
    pad = [(0, 0)] * (wave.ndim - 1) + [(n_fft // 2, n_fft // 2)]
    frames = _frames(jnp.pad(wave, pad), n_fft, hop_length)  # [..., T, n_fft]
    window = _periodic_window("hann", n_fft)
    spectrum = jnp.fft.rfft(frames * jnp.asarray(window, wave.dtype), axis=-1)
    energy = jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2  # [..., T, F]
    if power != 2.0:
        energy = energy ** (power / 2.0)
    filters = jnp.asarray(mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax), wave.dtype)
    return jnp.einsum("mf,...tf->...mt", filters, energy, precision=jax.lax.Precision.HIGHEST)


def log_mel_spectrogram(
    wave: jax.Array,
    sample_rate: int = VGGSOUND_SAMPLE_RATE,
    n_fft: int = 1024,
    hop_length: int = 160,
    n_mels: int = 128,
    fmin: float = 0.0,
    fmax: float | None = None,
    power: float = 2.0,
    log_floor: float = 1e-5,
) -> jax.Array:
    """Natural log of the mel spectrogram, `log(mel + log_floor)`, not standardised.

    wave: [..., N] int16 or float (see `waveform_to_float`). The floor keeps silence finite;
    the default 1e-5 lies about 80 dB below the band energy of a full-scale tone with the
    default n_fft (the dynamic range `librosa.power_to_db` keeps by default), and above the
    level where float32 FFT rounding would dominate the quietest bands.
    Returns float32 [..., n_mels, 1 + N // hop_length].
    """
    mel = mel_spectrogram(
        waveform_to_float(wave), sample_rate, n_fft, hop_length, n_mels, fmin, fmax, power
    )
    return jnp.log(mel + log_floor)


def audio_features(
    wave: jax.Array,
    kind: FeatureKind = "vggsound",
    *,
    num_samples: int | None = None,
    sample_rate: int = VGGSOUND_SAMPLE_RATE,
    n_fft: int = 1024,
    hop_length: int = 160,
    n_mels: int = 128,
    fmin: float = 0.0,
    fmax: float | None = None,
    power: float = 2.0,
    log_floor: float = 1e-5,
) -> jax.Array:
    """The audio encoder's input: [B, T] waveform -> [B, F, frames] float32, per clip standardised.

    kind: "vggsound" (257 frequency bins; only sample_rate 16 kHz is meaningful and the
    log-mel arguments are ignored) or "logmel" (n_mels bins, see `log_mel_spectrogram`).
    num_samples: when given, each clip is first fitted to it (`fit_length`).
    """
    if num_samples is not None:
        wave = fit_length(jnp.asarray(wave), num_samples)
    if kind == "vggsound":
        if sample_rate != VGGSOUND_SAMPLE_RATE:
            raise ValueError(f"the vggsound features are defined at 16 kHz, got {sample_rate}")
        return vggsound_spectrogram(wave)
    if kind == "logmel":
        log_mel = log_mel_spectrogram(
            wave, sample_rate, n_fft, hop_length, n_mels, fmin, fmax, power, log_floor
        )
        return standardize_per_clip(log_mel)
    raise ValueError(f"unknown audio feature kind {kind!r}; expected 'vggsound' or 'logmel'")
