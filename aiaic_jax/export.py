"""Exporting a trained colorizer as files that run without this project's code.

    aiaic export --checkpoint runs/demo/full OUT/

`export_colorizer` writes into OUT (`aiaic_jax.exported` reads it back):

- `colorizer.jax`: serialized StableHLO (`jax.export`) of (gray_l [B, S, S, 1] float32, L in
  [0, 100]; spectrogram [B, F, T] float32; has_audio [B] bool) -> (ab [B, S, S, 2] float32
  raw Lab units; r [B] float32), the weights inside as constants, the batch B symbolic. r is
  set as the Colorizer's mode sets it ("auto": RNet's; "1"/"0": fixed) and is 0 where a pair
  has no sound, where the backbone colours alone (Eq. 8). The program is the one `aiaic
  colorize` runs (`AIAIC.sound_guidance`, `relevance_heard`, `colorize_heard`), for the CPU
  and, where jax has them, the GPU (`platforms`).
- `spectrogram.jax`: int16 [B, N] 16 kHz mono waveforms (N: the model's audio length) -> the
  spectrogram the model hears.
- `manifest.json`: the shapes, the mode, the config's model and audio sections, the checkpoint
  it came from and the jax version that wrote it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from aiaic_jax import exported, preprocess
from aiaic_jax.data.media import written_whole
from aiaic_jax.inference import Colorizer
from aiaic_jax.models.aiaic import AIAIC


def colorizer_function(colorizer: Colorizer):
    """(gray_l, spectrogram, has_audio) -> (ab, r) with the colorizer's variables and mode."""
    model, variables = colorizer.model, colorizer.variables
    use_rnet = colorizer.mode == "auto"
    fixed = 1.0 if use_rnet else float(colorizer.mode)

    def colorize(gray_l: jax.Array, spectrogram: jax.Array, has_audio: jax.Array):
        code, embedding = model.apply(variables, spectrogram, method=AIAIC.sound_guidance)
        if use_rnet:
            relevance = model.apply(variables, gray_l, embedding, method=AIAIC.relevance_heard)
        else:
            relevance = jnp.full(has_audio.shape, fixed, jnp.float32)
        relevance = jnp.where(has_audio, relevance.astype(jnp.float32), 0.0)
        ab = model.apply(variables, gray_l, code, relevance, method=AIAIC.colorize_heard)
        return ab, relevance

    return colorize


def _spectrogram_shape(colorizer: Colorizer) -> tuple[int, int]:
    waveform = jax.ShapeDtypeStruct((1, colorizer.num_samples), jnp.int16)
    shape = jax.eval_shape(lambda w: preprocess.spectrogram(w, colorizer.config.audio), waveform)
    return shape.shape[1], shape.shape[2]


def export_colorizer(
    colorizer: Colorizer,
    directory: str | os.PathLike,
    *,
    platforms: Sequence[str] = ("cpu",),
    source: str | None = None,
) -> dict[str, Any]:
    """Writes the colorizer's programs and manifest into `directory`; returns the manifest."""
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    size, samples = colorizer.image_size, colorizer.num_samples
    bins, frames = _spectrogram_shape(colorizer)
    (batch,) = jax.export.symbolic_shape("b")
    inputs = (
        jax.ShapeDtypeStruct((batch, size, size, 1), jnp.float32),
        jax.ShapeDtypeStruct((batch, bins, frames), jnp.float32),
        jax.ShapeDtypeStruct((batch,), jnp.bool_),
    )
    program = jax.export.export(jax.jit(colorizer_function(colorizer)), platforms=platforms)
    audio = colorizer.config.audio

    def spectrogram(waveforms):
        return preprocess.spectrogram(waveforms, audio)

    sound = jax.export.export(jax.jit(spectrogram), platforms=platforms)
    waveform = jax.ShapeDtypeStruct((batch, samples), jnp.int16)
    files = {
        exported.COLORIZER_FILE: program(*inputs).serialize(),
        exported.SPECTROGRAM_FILE: sound(waveform).serialize(),
    }
    for name, data in files.items():
        with written_whole(os.path.join(directory, name)) as temporary:
            with open(temporary, "wb") as f:
                f.write(data)
    manifest = {
        "format": "aiaic export 1",
        "inputs": {
            "gray_l": ["B", size, size, 1, "float32", "L in [0, 100]"],
            "spectrogram": ["B", bins, frames, "float32", f"from {exported.SPECTROGRAM_FILE}"],
            "has_audio": ["B", "bool"],
        },
        "outputs": {
            "ab": ["B", size, size, 2, "float32", "raw Lab units"],
            "r": ["B", "float32", "0 where has_audio is false"],
        },
        "image_size": size,
        "audio_samples": samples,
        "sample_rate": 16000,
        "mode": colorizer.mode,
        "platforms": list(platforms),
        "source": source,
        "model": colorizer.config.model.to_dict(),
        "audio": audio.to_dict(),
        "jax": jax.__version__,
    }
    with written_whole(os.path.join(directory, exported.MANIFEST)) as temporary:
        with open(temporary, "w") as f:
            json.dump(manifest, f, indent=1, default=_plain)
    return manifest


def _plain(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    return str(value)
