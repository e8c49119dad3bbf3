"""Running an exported colorizer (`aiaic export`) without this project's model code.

    from aiaic_jax.exported import load   # imports jax, numpy and json only
    colorizer = load("OUT")
    spectrogram = colorizer.spectrogram(waveforms)          # int16 [B, N], 16 kHz mono
    ab, r = colorizer(gray_l, spectrogram, has_audio)

The folder holds two serialized StableHLO programs (`jax.export`) with the weights inside:
`colorizer.jax`, (gray_l [B, S, S, 1] float32, L in [0, 100]; spectrogram [B, F, T] float32;
has_audio [B] bool) -> (ab [B, S, S, 2] float32 raw Lab units; r [B] float32, 0 where a pair
has no sound), and `spectrogram.jax`, int16 [B, N] -> [B, F, T]; B is any batch size. Its
`manifest.json` gives S, N, F, T, how r is set and where the weights came from. This module is
all that a deployment needs beside jax: it is kept free of imports from the rest of the
project (tests/test_export.py checks that the model code is not loaded).
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np

MANIFEST = "manifest.json"
COLORIZER_FILE = "colorizer.jax"
SPECTROGRAM_FILE = "spectrogram.jax"
ONNX_FILE = "colorizer.onnx"  # with `aiaic export --onnx` (aiaic_jax/export.py)


class ExportedColorizer:
    """The programs of an export folder, callable on numpy arrays."""

    def __init__(self, directory: str | os.PathLike):
        directory = os.fspath(directory)
        try:
            with open(os.path.join(directory, MANIFEST)) as f:
                self.manifest: dict[str, Any] = json.load(f)
            self._colorizer = _deserialize(os.path.join(directory, COLORIZER_FILE))
            self._spectrogram = _deserialize(os.path.join(directory, SPECTROGRAM_FILE))
        except (OSError, ValueError) as error:
            raise ValueError(f"{directory}: not a readable aiaic export ({error})") from None
        self.image_size = int(self.manifest["image_size"])
        self.audio_samples = int(self.manifest["audio_samples"])

    def spectrogram(self, waveforms: np.ndarray) -> np.ndarray:
        """int16 [B, N] 16 kHz mono waveforms (N = manifest audio_samples) -> [B, F, T]."""
        waveforms = np.asarray(waveforms)
        if waveforms.dtype != np.int16 or waveforms.ndim != 2:
            raise ValueError(f"waveforms are int16 [B, N]; got {waveforms.dtype} {waveforms.shape}")
        return np.asarray(self._spectrogram.call(waveforms))

    def __call__(
        self, gray_l: np.ndarray, spectrogram: np.ndarray, has_audio: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ab [B, S, S, 2], r [B]) of grey images with their sounds' spectrograms."""
        ab, relevance = self._colorizer.call(
            np.asarray(gray_l, np.float32),
            np.asarray(spectrogram, np.float32),
            np.asarray(has_audio, bool),
        )
        return np.asarray(ab), np.asarray(relevance)


def _deserialize(path: str) -> jax.export.Exported:
    with open(path, "rb") as f:
        return jax.export.deserialize(bytearray(f.read()))


def load(directory: str | os.PathLike) -> ExportedColorizer:
    """The exported colorizer in `directory` (written by `aiaic export`)."""
    return ExportedColorizer(directory)
