"""Device-side preparation of host batches: uint8 RGB -> L and ab, int16 audio -> spectrogram.

Runs inside the jitted train and eval steps (DESIGN.md section 4): the host only decodes and
batches uint8/int16 arrays; colour conversion and spectrograms run on the accelerator.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from aiaic_jax import audio, color


class ModelInputs(NamedTuple):
    gray_l: jax.Array  # [B, H, W, 1] L in [0, 100]
    target_ab: jax.Array  # [B, H, W, 2] raw Lab units
    color_rgb: jax.Array  # [B, H, W, 3] sRGB in [0, 1], the ground truth
    spectrogram: jax.Array  # [B, F, T] standardised per clip; zeros where audio is missing
    has_audio: jax.Array  # [B] bool
    relevant: jax.Array  # [B] bool
    mask: jax.Array  # [B] bool; False for padding in evaluation batches


def audio_config(**overrides: Any) -> ml_collections.ConfigDict:
    """Defaults of `config.audio`: the VGGSound log spectrogram (Sec. 3.3)."""
    config = ml_collections.ConfigDict(
        {
            "kind": "vggsound",  # or "logmel"
            "n_fft": 1024,  # log-mel only
            "hop_length": 160,
            "n_mels": 128,
        }
    )
    config.update(overrides)
    return config


def spectrogram(audio_wave: jax.Array, config: ml_collections.ConfigDict) -> jax.Array:
    """[B, T] int16 waveform -> [B, F, frames] float32 audio-encoder input."""
    if config.kind == "vggsound":
        return audio.audio_features(audio_wave, "vggsound")
    return audio.audio_features(
        audio_wave,
        config.kind,
        n_fft=config.n_fft,
        hop_length=config.hop_length,
        n_mels=config.n_mels,
    )


def model_inputs(batch: Mapping[str, jax.Array], config: ml_collections.ConfigDict) -> ModelInputs:
    """What the model and losses need from a batch of the input pipeline.

    batch: `rgb` uint8 [B,H,W,3], `audio` int16 [B,T], `has_audio`, `relevant`, optional `mask`.
    config: the run's config (reads `config.audio`). Audio of pairs without it is silence in the
    pipeline, which gives an all-zero spectrogram.
    """
    color_rgb = color.rgb_uint8_to_float(batch["rgb"])
    gray_l, target_ab = color.rgb_to_l_ab(color_rgb)
    has_audio = batch["has_audio"].astype(bool)
    spec = spectrogram(batch["audio"], config.audio)
    spec = jnp.where(has_audio[:, None, None], spec, 0.0)
    mask = batch.get("mask")
    return ModelInputs(
        gray_l=gray_l,
        target_ab=target_ab,
        color_rgb=color_rgb,
        spectrogram=spec,
        has_audio=has_audio,
        relevant=batch["relevant"].astype(bool),
        mask=jnp.ones_like(has_audio) if mask is None else mask.astype(bool),
    )
