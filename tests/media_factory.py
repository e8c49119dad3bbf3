"""Media that tests generate (never committed): clips whose frames and sound tell their time.

Frame `i` of a clip is a solid colour `frame_colour(i)`, so the decoded pixel says which frame
was chosen; second `k` of its sound is a sine of `tone_hz(k)`, so a window's dominant frequency
says which second it holds.
"""

from __future__ import annotations

import itertools
import os

import av
import numpy as np
from PIL import Image

from aiaic_jax.data import media

_LEVELS = (32, 80, 128, 176, 224)  # 48 apart: far beyond H.264's error on flat colour
_PALETTE = np.array(list(itertools.product(_LEVELS, repeat=3)), np.int32)  # [125, 3]


def frame_colour(index: int) -> np.ndarray:
    """The solid RGB colour of frame `index` (distinct for the first 125 frames)."""
    return _PALETTE[index % len(_PALETTE)].astype(np.uint8)


def frame_index(rgb: np.ndarray) -> int:
    """Which frame an `[H, W, 3]` image shows: the palette entry nearest its centre pixel."""
    centre = rgb[rgb.shape[0] // 2, rgb.shape[1] // 2].astype(np.int32)
    return int(np.abs(_PALETTE - centre).sum(axis=1).argmin())


def tone_hz(second):
    """The tone of second `second` (an int or an array of them), Hz."""
    return 250.0 + 150.0 * second


def tone(seconds: float, sample_rate: int, channels: int = 1, amplitude: float = 0.3) -> np.ndarray:
    """`[N, channels]` int16: second `k` is a sine of `tone_hz(k)`, the same on every channel."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    wave = amplitude * np.sin(2 * np.pi * tone_hz(np.floor(t)) * t)
    return np.repeat((wave * 32767).astype(np.int16)[:, None], channels, axis=1)


def dominant_hz(window: np.ndarray, sample_rate: int = media.SAMPLE_RATE) -> float:
    spectrum = np.abs(np.fft.rfft(window.astype(np.float64)))
    return float(np.fft.rfftfreq(window.size, 1 / sample_rate)[spectrum.argmax()])


def colour_clip(
    path: str | os.PathLike,
    *,
    seconds: float = 3,
    fps: float = 10,
    sample_rate: int | None = 16_000,
    channels: int = 1,
    size: tuple[int, int] = (64, 48),
    frame_times: list[float] | None = None,
) -> str:
    """Writes a colour-coded clip with the tone track (no audio when sample_rate is None)."""
    times = (
        frame_times if frame_times is not None else [i / fps for i in range(round(seconds * fps))]
    )
    width, height = size
    frames = [np.broadcast_to(frame_colour(i), (height, width, 3)) for i in range(len(times))]
    audio = None if sample_rate is None else tone(seconds, sample_rate, channels)
    media.write_video(
        path, frames, audio, fps, sample_rate or 16_000,
        frame_times=frame_times,
    )  # fmt: skip
    return os.fspath(path)


def panning_clip(
    path: str | os.PathLike,
    *,
    shots: int = 2,
    shot_frames: int = 15,
    fps: float = 10,
    size: tuple[int, int] = (64, 48),
    sample_rate: int | None = 44100,
    channels: int = 2,
    seed: int = 0,
) -> str:
    """A film of `shots` shots, each a slow pan (a pixel a frame) across a smooth picture of its
    own with its own brightness, with the tone track; a cut every `shot_frames` frames."""
    rng = np.random.default_rng(seed)
    width, height = size
    frames = []
    for shot in range(shots):
        coarse = rng.uniform(0, 255, (4, 6, 3))
        coarse = coarse * (0.3 + 0.7 * (shot % 2)) + 60 * (shot % 2)  # dark, then bright
        picture = np.asarray(
            Image.fromarray(np.clip(coarse, 0, 255).astype(np.uint8)).resize(
                (width + shot_frames, height), Image.Resampling.BICUBIC
            )
        )
        frames += [picture[:, i : i + width] for i in range(shot_frames)]
    seconds = len(frames) / fps
    audio = None if sample_rate is None else tone(seconds, sample_rate, channels)
    media.write_video(path, frames, audio, fps, sample_rate or 16_000)
    return os.fspath(path)


def truncated_copy(source: str | os.PathLike, path: str | os.PathLike, keep: float = 0.5) -> str:
    """The first `keep` fraction of a file's bytes."""
    with open(source, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * keep)])
    return os.fspath(path)


def text_file(path: str | os.PathLike, text: str = "not a media file\n") -> str:
    with open(path, "w") as f:
        f.write(text)
    return os.fspath(path)


_AUDIO_CODECS = {".wav": "pcm_s16le", ".flac": "flac", ".ogg": "libopus", ".mp3": "libmp3lame"}


def audio_file(
    path: str | os.PathLike, samples: np.ndarray, sample_rate: int, codec: str | None = None
) -> str:
    """Writes `[N]` or `[N, C]` int16 samples as wav, flac, ogg (Opus) or mp3 by extension."""
    path = os.fspath(path)
    samples = samples[:, None] if samples.ndim == 1 else samples
    layout = {1: "mono", 2: "stereo"}[samples.shape[1]]
    codec = codec or _AUDIO_CODECS[os.path.splitext(path)[1]]
    with av.open(path, "w") as container:
        stream = container.add_stream(codec, rate=sample_rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples.reshape(1, -1)), format="s16", layout=layout
        )
        frame.sample_rate = sample_rate
        frame.pts = 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def solid_image(colour, size: tuple[int, int] = (64, 48)) -> np.ndarray:
    """`[H, W, len(colour)]` uint8 filled with `colour`."""
    width, height = size
    return np.broadcast_to(np.asarray(colour, np.uint8), (height, width, len(colour))).copy()


def colourful_image(size: tuple[int, int] = (64, 48), seed: int = 0) -> np.ndarray:
    """`[H, W, 3]` uint8 smooth colour gradients plus noise: a clearly non-grey picture."""
    width, height = size
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 / width, y * 255 / height, 255 - x * 255 / width], axis=-1)
    return np.clip(rgb + rng.normal(0, 8, rgb.shape), 0, 255).astype(np.uint8)


def save_image(path: str | os.PathLike, pixels: np.ndarray, **save_options) -> str:
    Image.fromarray(pixels).save(path, **save_options)
    return os.fspath(path)
