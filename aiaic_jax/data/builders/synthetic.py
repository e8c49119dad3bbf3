"""The synthetic audio-visual world: the project's embedded default dataset.

A world in which grayscale alone cannot tell an image's colour but its audio can, so that the
paper's central claim (audio-guided colorization beats the visual-only baseline, and falls back
to it when the audio is missing) can be measured without downloading anything. This docstring is
the world's specification; docs/synthetic.md explains it with the numbers of the default build.

Latents. Every pair has
- a class k (its hue): classes are laid out on a signature axis u_k = (k + 0.5) / K over all
  K = train_classes + ood_classes classes; `label` is k, the index over ALL classes, ordered by
  signature (so by pitch and by hue), and `label_name` is `hue_<degrees>`. The held-out (`ood`)
  classes are interior classes spread evenly between training classes, so their signatures lie
  between those of training classes (default: 16 classes, labels 2, 6, 10, 14 held out);
- a signature jitter du ~ N(0, (pitch_jitter / K)^2), clipped to +-0.4 / K, shared by the
  image's hue and the audio's pitch, so hue follows the audio smoothly within a class too;
- a scene s in [0, scenes), independent of the class.

Image (square, `image_size`, stored as PNG). A texture t(x, y) in [0, 1] of the scene's family
(0 horizontal stripes, 1 vertical stripes, 2 diagonal stripes, 3 checkerboard, 4 rings, 5 blobs),
with random frequency (in cycles per image, so it does not depend on the resolution), phase and a
small orientation jitter. Lightness L = L_low + L_span * t with L_low ~ U(30, 50) and
L_span ~ U(15, 30): the distribution of L is the same for every class, so grayscale carries no
information about the hue but shows the scene. Colour: hue h(u) = 300 deg * (u_k + du)
(Lab hue angle, monotonic in the signature), chroma C = min(max_chroma, sat * C_gamut(L)) with a
per-image sat ~ U(0.8, 0.95), where C_gamut(L) is the largest chroma that stays inside the sRGB
gamut for EVERY hue at lightness L (precomputed by bisection). So no colour is ever clipped when
converted to RGB, L stays class-independent, brighter parts of the texture are more saturated
(colour placement follows the L structure), and chroma reaches 30-38 Lab units where the gamut
allows it (L ~ 55-80).

Audio (16 kHz mono int16, `audio_seconds` long). The class tone: a harmonic series with
fundamental f0 = 300 Hz * 4^(u_k + du) (two octaves, 300-1200 Hz; neighbouring classes are 1.5
semitones apart), harmonics below 3.8 kHz with amplitudes k^-(0.6 + 1.2 u) (timbre also follows
the signature) and random phases, a random attack and release. The scene: band-limited noise in
the scene's band [4400 + 500 s, 4800 + 500 s] Hz, 4-12 dB below the tone, far above the tone's
harmonics, so a small conv net on a log spectrogram sees it at once. Nuisances: white noise
20-35 dB below the tone and a random overall level.

Relevance. Because the scene is both visible in L and audible, an image paired with another
clip's audio usually (with probability 1 - 1/scenes) has mismatched scene cues, which a network
can notice from (grayscale image, audio) without knowing the hue.

Splits.
- `train`, `val`: training classes, one pair per clip (`second` = -1), every pair relevant,
  except that exactly round(train_noisy_audio_fraction * N) `train` pairs (0 by default) carry
  the audio of another training clip of a different class, as a real dataset's clips often
  carry sound from outside the frame; they stay labelled `relevant`, as such a dataset would
  label them, and the world description lists them (`noisy_train_pairs`).
- `ave_like`: training classes, AVE-like pseudo-videos of ten 1-s segments (`second` 0..9) that
  share class, scene and jitter; each segment has its own texture draw and audio noise. Exactly
  round(irrelevant_fraction * N) pairs carry the audio of a pair from another pseudo-video of a
  different class (`relevant` False), exactly round(missing_audio_fraction * N) carry no audio
  (`has_audio` False, empty audio, `relevant` False); the rest carry their own audio. Which pairs
  is decided by a seeded permutation of the split. `label` is always the image's class.
- `ood`: the held-out classes, one pair per clip.

Determinism. Each pair is generated from its own random generators seeded by (seed, split,
clip, segment, stream), so the bytes depend on the options only, never on order or parallelism;
PNG encoding uses fixed settings and no metadata.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from aiaic_jax.data.builders.common import SAMPLE_RATE, PairBuilder, option

SPLITS = ("train", "val", "ave_like", "ood")
SCENE_NAMES = (
    "horizontal_stripes",
    "vertical_stripes",
    "diagonal_stripes",
    "checkerboard",
    "rings",
    "blobs",
)
SEGMENTS_PER_VIDEO = 10  # ave_like pseudo-videos, as AVE's ten 1-s segments

# Stable numbers for the random streams; never reorder (they fix the generated bytes).
_SPLIT_IDS = {"train": 0, "val": 1, "ave_like": 2, "ood": 3}
_LATENT_STREAM, _IMAGE_STREAM, _AUDIO_STREAM, _DONOR_STREAM, _STATUS_STREAM = range(5)
_FILM_STREAM = 5  # films: which clips, and their pictures' and sounds' draws

FILM_FPS = 10
FILM_SHOTS = 3
FILM_SHOT_SECONDS = 2.0

HUE_SPAN_DEG = 300.0  # below 360 so the lowest and the highest pitch get distinct colours
F0_LOW_HZ = 300.0
F0_OCTAVES = 2.0
TONE_MAX_HZ = 3800.0
SCENE_BAND_LOW_HZ = 4400.0
SCENE_BAND_STEP_HZ = 500.0
SCENE_BAND_WIDTH_HZ = 400.0
L_LOW_RANGE = (30.0, 50.0)
L_SPAN_RANGE = (15.0, 30.0)
SATURATION_RANGE = (0.8, 0.95)

# CIE D65 white point (2 degree observer) and the sRGB primaries, as skimage.color uses them.
_D65_WHITE = np.array([0.95047, 1.0, 1.08883])
_LINEAR_RGB_TO_XYZ = np.array(
    [
        [0.412453, 0.357580, 0.180423],
        [0.212671, 0.715160, 0.072169],
        [0.019334, 0.119193, 0.950227],
    ]
)
_XYZ_TO_LINEAR_RGB = np.linalg.inv(_LINEAR_RGB_TO_XYZ)


@dataclasses.dataclass(eq=False)
class SyntheticConfig(tfds.core.BuilderConfig):
    """Options of the synthetic world (each becomes a flag of the build command)."""

    image_size: int = option(64, "side of the square images, pixels")
    audio_seconds: float = option(1.0, "length of each pair's audio, seconds")
    train_classes: int = option(12, "classes (hues) of train, val and ave_like")
    ood_classes: int = option(4, "held-out classes, interleaved between the training classes")
    scenes: int = option(6, f"scene kinds, at most {len(SCENE_NAMES)}")
    train_pairs: int = option(3072, "pairs in train")
    val_pairs: int = option(512, "pairs in val")
    ave_like_videos: int = option(48, "pseudo-videos of ten 1-s pairs in ave_like")
    ood_pairs: int = option(512, "pairs in ood")
    irrelevant_fraction: float = option(0.25, "share of ave_like pairs with another class's audio")
    missing_audio_fraction: float = option(0.15, "share of ave_like pairs without audio")
    train_noisy_audio_fraction: float = option(
        0.0, "share of train pairs with another class's audio, still labelled relevant"
    )
    max_chroma: float = option(40.0, "target chroma, Lab units; the gamut bound may lower it")
    pitch_jitter: float = option(0.15, "std of the signature jitter, in class spacings")
    seed: int = option(0, "the world's seed: the same seed gives identical bytes")


@dataclasses.dataclass(frozen=True)
class ClassInfo:
    label: int  # index over all classes, ordered by signature
    name: str  # hue_<degrees>
    signature: float  # u in (0, 1)
    hue_deg: float
    f0_hz: float
    held_out: bool  # an `ood` class


@dataclasses.dataclass(frozen=True)
class Latents:
    """What decides a clip: its class, scene and signature jitter."""

    label: int
    scene: int
    signature: float  # class signature + jitter


@dataclasses.dataclass
class Pair:
    """One generated pair: the stored example plus the latents and exact L behind it."""

    key: str
    example: dict[str, Any]
    latents: Latents
    rgb: np.ndarray  # [H, W, 3] uint8, what the PNG holds
    gray_l: np.ndarray  # [H, W] float64, the generated Lab lightness (0-100)


def validate(config: SyntheticConfig) -> None:
    """Raises ValueError naming the option that makes `config` unusable."""
    if not 1 <= config.scenes <= len(SCENE_NAMES):
        raise ValueError(f"synthetic: scenes={config.scenes} must be in [1, {len(SCENE_NAMES)}]")
    if config.train_classes < 2:
        raise ValueError(f"synthetic: train_classes={config.train_classes} must be at least 2")
    if config.ood_classes < 0 or config.ood_classes > config.train_classes - 1:
        raise ValueError(
            f"synthetic: ood_classes={config.ood_classes} must be in "
            f"[0, train_classes - 1 = {config.train_classes - 1}] so each lies between "
            "training classes"
        )
    if config.image_size < 8:
        raise ValueError(f"synthetic: image_size={config.image_size} must be at least 8")
    if config.audio_seconds < 0.05:
        raise ValueError(f"synthetic: audio_seconds={config.audio_seconds} must be >= 0.05")
    fractions = (config.irrelevant_fraction, config.missing_audio_fraction)
    if min(fractions) < 0 or sum(fractions) > 1:
        raise ValueError(
            "synthetic: irrelevant_fraction and missing_audio_fraction must be >= 0 and sum "
            f"to at most 1 (got {fractions})"
        )
    if not 0 <= config.train_noisy_audio_fraction <= 1:
        raise ValueError(
            "synthetic: train_noisy_audio_fraction must be in [0, 1] "
            f"(got {config.train_noisy_audio_fraction})"
        )
    if config.train_noisy_audio_fraction > 0 and config.train_classes < 2:
        raise ValueError("synthetic: train_noisy_audio_fraction > 0 needs two training classes")
    for name in ("train_pairs", "val_pairs", "ave_like_videos", "ood_pairs"):
        if getattr(config, name) < 0:
            raise ValueError(f"synthetic: {name}={getattr(config, name)} must be >= 0")
    if config.ood_pairs and not config.ood_classes:
        raise ValueError("synthetic: ood_pairs > 0 needs ood_classes > 0")


def ood_labels(config: SyntheticConfig) -> tuple[int, ...]:
    """The held-out labels: spread evenly, never the first or last class."""
    total = config.train_classes + config.ood_classes
    return tuple(int((j + 0.5) * total / config.ood_classes) for j in range(config.ood_classes))


def classes(config: SyntheticConfig) -> list[ClassInfo]:
    """Every class of the world, by label."""
    total = config.train_classes + config.ood_classes
    held_out = set(ood_labels(config))
    infos = []
    for label in range(total):
        u = (label + 0.5) / total
        hue = _hue_deg(u)
        infos.append(
            ClassInfo(
                label=label,
                name=f"hue_{round(hue):03d}",
                signature=u,
                hue_deg=hue,
                f0_hz=_f0_hz(u),
                held_out=label in held_out,
            )
        )
    return infos


def world_spec(config: SyntheticConfig) -> dict[str, Any]:
    """A JSON description of the world (options, classes, scenes), stored in metadata.json."""
    options = {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(SyntheticConfig)
        if f.name not in _BASE_FIELDS
    }
    return {
        "options": options,
        "classes": [dataclasses.asdict(c) for c in classes(config)],
        "scenes": [
            {"scene": s, "name": SCENE_NAMES[s], "band_hz": list(_scene_band(s))}
            for s in range(config.scenes)
        ],
        "noisy_train_pairs": [int(i) for i in np.flatnonzero(_train_noisy(config))],
    }


_BASE_FIELDS = {f.name for f in dataclasses.fields(tfds.core.BuilderConfig)}


def num_pairs(config: SyntheticConfig, split: str) -> int:
    if split == "ave_like":
        return config.ave_like_videos * SEGMENTS_PER_VIDEO
    return {"train": config.train_pairs, "val": config.val_pairs, "ood": config.ood_pairs}[split]


def generate_pair(config: SyntheticConfig, split: str, index: int) -> Pair:
    """Generates pair `index` of `split`; depends only on (config, split, index)."""
    video, second = _video_and_second(split, index)
    latents = clip_latents(config, split, video)
    gray_l, rgb = render_image(
        latents, config, _rng(config.seed, split, _IMAGE_STREAM, video, second)
    )
    has_audio, relevant = True, True
    if split == "ave_like":
        status = _ave_like_status(config)[index]
        has_audio, relevant = status != _MISSING, status == _RELEVANT
    # Whose audio the pair carries: its own clip's, or another clip's of a different class
    # (ave_like's irrelevant pairs; train's noisy pairs, which stay labelled relevant).
    source = video
    if (split == "ave_like" and has_audio and not relevant) or (
        split == "train" and _train_noisy(config)[index]
    ):
        source = _donor_clip(config, split, latents.label, video, second)
    if has_audio:
        audio = render_audio(
            clip_latents(config, split, source),
            config,
            _rng(config.seed, split, _AUDIO_STREAM, source, second),
        )
    else:
        audio = np.zeros((0,), np.int16)
    info = classes(config)[latents.label]
    clip_id = f"{split}_{video:05d}"
    example = {
        "image": encode_png(rgb),
        "audio": audio,
        "has_audio": has_audio,
        "relevant": relevant,
        "label": latents.label,
        "label_name": info.name,
        "clip_id": clip_id,
        "second": second,
    }
    return Pair(f"{clip_id}:{second}", example, latents, rgb, gray_l)


def clip_latents(config: SyntheticConfig, split: str, video: int) -> Latents:
    """Class, scene and signature jitter of clip (pseudo-video) `video` of `split`."""
    rng = _rng(config.seed, split, _LATENT_STREAM, video)
    labels = [c.label for c in classes(config) if c.held_out == (split == "ood")]
    label = labels[rng.integers(len(labels))]
    scene = int(rng.integers(config.scenes))
    total = config.train_classes + config.ood_classes
    jitter = np.clip(rng.normal(0.0, config.pitch_jitter), -0.4, 0.4) / total
    return Latents(label=int(label), scene=scene, signature=(label + 0.5) / total + jitter)


def render_image(
    latents: Latents, config: SyntheticConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The scene's texture as lightness and the class hue as colour.

    Returns gray_l [S, S] (Lab L, 0-100) and rgb [S, S, 3] uint8.
    """
    texture = _texture(latents.scene, config.image_size, rng)  # [S, S] in [0, 1]
    l_low = rng.uniform(*L_LOW_RANGE)
    l_span = rng.uniform(*L_SPAN_RANGE)
    gray_l = l_low + l_span * texture
    saturation = rng.uniform(*SATURATION_RANGE)
    chroma = np.minimum(config.max_chroma, saturation * gamut_chroma(gray_l))
    hue = np.deg2rad(_hue_deg(latents.signature))
    lab = np.stack([gray_l, chroma * np.cos(hue), chroma * np.sin(hue)], axis=-1)
    rgb = lab_to_srgb(lab)
    # The chroma bound keeps every colour in gamut; allow only float round-off here.
    if rgb.min() < -1e-6 or rgb.max() > 1 + 1e-6:
        raise AssertionError(f"synthetic colour out of gamut: {rgb.min()}, {rgb.max()}")
    rgb = np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)
    return gray_l, rgb


def render_audio(latents: Latents, config: SyntheticConfig, rng: np.random.Generator) -> np.ndarray:
    """The class tone plus the scene's noise band; [T] int16 at 16 kHz.

    Synthesised in the frequency domain (one FFT bin per harmonic, random phases), which is
    exact for tones periodic in the clip and several times faster than summing sines.
    """
    n = round(config.audio_seconds * SAMPLE_RATE)
    bin_hz = SAMPLE_RATE / n
    time = np.arange(n) / SAMPLE_RATE
    f0 = _f0_hz(latents.signature)
    harmonics = np.arange(1, int(TONE_MAX_HZ // f0) + 1)
    amplitudes = harmonics ** -(0.6 + 1.2 * latents.signature)
    phases = rng.uniform(0.0, 2 * np.pi, size=len(harmonics))
    tone_spectrum = np.zeros(n // 2 + 1, np.complex128)
    # Harmonics land in distinct bins: validate() keeps bin_hz below the lowest f0.
    tone_spectrum[np.round(harmonics * f0 / bin_hz).astype(int)] = amplitudes * np.exp(1j * phases)
    tone = np.fft.irfft(tone_spectrum, n)
    attack, release = rng.uniform(0.005, 0.1), rng.uniform(0.005, 0.1)
    tone *= np.clip(time / attack, 0, 1) * np.clip((time[-1] - time) / release, 0, 1)
    tone /= _rms(tone)

    band = _band_noise(n, _scene_band(latents.scene), rng)
    band *= 10 ** (rng.uniform(-12.0, -4.0) / 20)
    floor = rng.normal(size=n) * 10 ** (rng.uniform(-35.0, -20.0) / 20)
    wave = tone + band + floor
    wave *= rng.uniform(0.3, 0.9) / np.abs(wave).max()
    return np.round(wave * 32767).astype(np.int16)


def encode_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an RGB uint8 image; fixed settings, no metadata, so deterministic."""
    buffer = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def lab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """CIE Lab (D65) -> sRGB in [0, 1] nominally, NOT clipped, so the gamut can be tested.

    Follows skimage.color.lab2rgb, which clips; [..., 3] -> [..., 3].
    """
    fy = (lab[..., 0] + 16.0) / 116.0
    f = np.stack([fy + lab[..., 1] / 500.0, fy, fy - lab[..., 2] / 200.0], axis=-1)
    xyz = np.where(f > 6 / 29, f**3, (f - 16 / 116) * 3 * (6 / 29) ** 2) * _D65_WHITE
    linear = xyz @ _XYZ_TO_LINEAR_RGB.T
    return np.where(
        linear > 0.0031308,
        1.055 * np.abs(linear) ** (1 / 2.4) - 0.055,
        12.92 * linear,
    )


def gamut_chroma(gray_l: np.ndarray) -> np.ndarray:
    """The largest Lab chroma in the sRGB gamut for every hue at lightness L (0-100)."""
    grid_l, grid_chroma = _gamut_chroma_table()
    return np.interp(gray_l, grid_l, grid_chroma)


@functools.cache
def _gamut_chroma_table() -> tuple[np.ndarray, np.ndarray]:
    # Bisection over chroma for all L at once; a colour is in gamut when its linear RGB is in
    # [0, 1]. The minimum over hues is concave-ish in L, so linear interpolation stays inside.
    grid_l = np.linspace(0.0, 100.0, 401)
    hues = np.deg2rad(np.arange(0.0, 360.0, 0.5))
    low, high = np.zeros_like(grid_l), np.full_like(grid_l, 150.0)
    for _ in range(24):  # 150 / 2^24: far below the margin
        mid = (low + high) / 2
        lab = np.stack(
            np.broadcast_arrays(
                grid_l[:, None], mid[:, None] * np.cos(hues), mid[:, None] * np.sin(hues)
            ),
            axis=-1,
        )
        rgb = lab_to_srgb(lab)
        inside = ((rgb >= 0) & (rgb <= 1)).all(axis=(1, 2))
        low, high = np.where(inside, mid, low), np.where(inside, high, mid)
    return grid_l, low * 0.99  # margin for hues between grid points and round-off


def _texture(scene: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Scene texture in [0, 1], [S, S]; coordinates in image widths."""
    y, x = (np.mgrid[0:size, 0:size] + 0.5) / size
    freq = rng.uniform(1.5, 4.0)  # cycles per image
    phase = rng.uniform(0, 2 * np.pi)
    tilt = np.deg2rad(rng.uniform(-10, 10))
    name = SCENE_NAMES[scene]
    if name.endswith("stripes"):
        angle = {"horizontal_stripes": 90.0, "vertical_stripes": 0.0}.get(name)
        if angle is None:
            angle = rng.choice([45.0, 135.0])
        theta = np.deg2rad(angle) + tilt
        wave = np.sin(2 * np.pi * freq * (x * np.cos(theta) + y * np.sin(theta)) + phase)
        return 0.5 + 0.5 * wave
    if name == "checkerboard":
        u = x * np.cos(tilt) + y * np.sin(tilt)
        v = -x * np.sin(tilt) + y * np.cos(tilt)
        second_phase = rng.uniform(0, 2 * np.pi)
        cells = np.sin(2 * np.pi * freq * u + phase) * np.sin(2 * np.pi * freq * v + second_phase)
        return 0.5 + 0.5 * np.tanh(3 * cells) / np.tanh(3)
    if name == "rings":
        cy, cx = rng.uniform(0.25, 0.75, size=2)
        radius = np.hypot(y - cy, x - cx)
        return 0.5 + 0.5 * np.sin(2 * np.pi * (freq + 1.0) * radius + phase)
    # blobs: a few soft Gaussian bumps and dips, stretched to [0, 1]
    count = rng.integers(3, 8)
    field = np.zeros((size, size))
    for _ in range(count):
        cy, cx = rng.uniform(0, 1, size=2)
        sigma = rng.uniform(0.08, 0.2)
        sign = rng.choice([-1.0, 1.0])
        field += sign * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma**2))
    return (field - field.min()) / max(np.ptp(field), 1e-6)


def _band_noise(n: int, band_hz: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with a flat spectrum inside `band_hz` and none outside; unit RMS, [n]."""
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    inside = (freqs >= band_hz[0]) & (freqs <= band_hz[1])
    spectrum = np.zeros(len(freqs), np.complex128)
    spectrum[inside] = rng.normal(size=inside.sum()) + 1j * rng.normal(size=inside.sum())
    noise = np.fft.irfft(spectrum, n)
    return noise / _rms(noise)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2))) or 1.0


def _scene_band(scene: int) -> tuple[float, float]:
    low = SCENE_BAND_LOW_HZ + SCENE_BAND_STEP_HZ * scene
    return low, low + SCENE_BAND_WIDTH_HZ


def _hue_deg(signature: float) -> float:
    return HUE_SPAN_DEG * signature


def _f0_hz(signature: float) -> float:
    return F0_LOW_HZ * 2 ** (F0_OCTAVES * signature)


def _rng(
    seed: int, split: str, stream: int, video: int = 0, second: int = -1
) -> np.random.Generator:
    # Always five words: numpy's SeedSequence reads [a, b] and [a, b, 0] as the same seed.
    # A whole-clip pair's `second` of -1 enters as 0.
    return np.random.default_rng([seed, _SPLIT_IDS[split], stream, video, second + 1])


def _video_and_second(split: str, index: int) -> tuple[int, int]:
    if split == "ave_like":
        return divmod(index, SEGMENTS_PER_VIDEO)
    return index, -1


_RELEVANT, _IRRELEVANT, _MISSING = 0, 1, 2


@functools.lru_cache(maxsize=8)
def _ave_like_status(config: SyntheticConfig) -> np.ndarray:
    """Per ave_like pair: relevant, irrelevant or missing, in exactly the configured numbers."""
    n = num_pairs(config, "ave_like")
    n_irrelevant = round(config.irrelevant_fraction * n)
    n_missing = round(config.missing_audio_fraction * n)
    status = np.full(n, _RELEVANT)
    order = _rng(config.seed, "ave_like", _STATUS_STREAM).permutation(n)
    status[order[:n_irrelevant]] = _IRRELEVANT
    status[order[n_irrelevant : n_irrelevant + n_missing]] = _MISSING
    return status


@functools.lru_cache(maxsize=8)
def _train_noisy(config: SyntheticConfig) -> np.ndarray:
    """Per train pair: whether it carries another class's audio (exactly the configured
    number, chosen by a seeded permutation)."""
    n = num_pairs(config, "train")
    noisy = np.zeros(n, bool)
    count = round(config.train_noisy_audio_fraction * n)
    if count:
        noisy[_rng(config.seed, "train", _STATUS_STREAM).permutation(n)[:count]] = True
    return noisy


def _donor_clip(config: SyntheticConfig, split: str, label: int, video: int, second: int) -> int:
    """Another clip (pseudo-video in ave_like) of `split` of a class other than `label`, whose
    audio pair (`video`, `second`) carries."""
    clips = config.ave_like_videos if split == "ave_like" else num_pairs(config, split)
    rng = _rng(config.seed, split, _DONOR_STREAM, video, second)
    for _ in range(1000):
        donor = int(rng.integers(clips))
        if clip_latents(config, split, donor).label != label:
            return donor
    raise ValueError(
        f"synthetic: {split} has no clip of another class to take audio from; raise its "
        f"number of clips (now {clips})"
    )


@dataclasses.dataclass
class Film:
    """A synthetic film (`render_film`): its ground-truth colour frames and its soundtrack."""

    frames: list[np.ndarray]  # [S, S, 3] uint8 each
    audio: np.ndarray  # [T] int16, 16 kHz
    fps: float
    shots: list[dict[str, Any]]  # per shot: first frame, clip, label, scene, motion


def render_film(
    config: SyntheticConfig,
    film: int,
    *,
    shots: int = FILM_SHOTS,
    shot_seconds: float = FILM_SHOT_SECONDS,
    fps: float = FILM_FPS,
) -> Film:
    """Film `film` of the world: `shots` shots of `shot_seconds` at `fps`, each on a `val` clip
    (drawn per film) with that clip's sound, cut straight to the next.

    A shot's picture is the clip's image rendered at twice the world's size (same texture
    family, class hue, scene and lightness law, so the same number of stripes at twice their
    width); the camera looks at an S x S part of it: shots alternate a pan (left to right across
    the picture at mid-height, S pixels in the shot) and a zoom out (from the central S x S
    part to the whole picture, resized to S x S with bilinear filtering). The sound is the
    clip's sound rendered for the shot's length. Depends only on (config, film, shots,
    shot_seconds, fps).
    """
    size = config.image_size
    large = dataclasses.replace(config, image_size=2 * size, audio_seconds=shot_seconds)
    frames_per_shot = max(round(shot_seconds * fps), 2)
    pick = _rng(config.seed, "val", _FILM_STREAM, film)
    frames, sounds, described = [], [], []
    for shot in range(shots):
        clip = int(pick.integers(num_pairs(config, "val")))
        latents = clip_latents(config, "val", clip)
        _, picture = render_image(
            latents, large, _rng(config.seed, "val", _FILM_STREAM, film, 2 * shot)
        )
        audio_rng = _rng(config.seed, "val", _FILM_STREAM, film, 2 * shot + 1)
        sounds.append(render_audio(latents, large, audio_rng))
        motion = "pan" if shot % 2 == 0 else "zoom"
        described.append(
            {"first_frame": len(frames), "clip": clip, "label": latents.label,
             "scene": latents.scene, "motion": motion}
        )  # fmt: skip
        for step in range(frames_per_shot):
            progress = step / (frames_per_shot - 1)
            if motion == "pan":
                left = round(progress * size)
                frames.append(picture[size // 2 : size // 2 + size, left : left + size].copy())
            else:
                side = round(size + progress * size)
                corner = (2 * size - side) // 2
                crop = picture[corner : corner + side, corner : corner + side]
                resized = Image.fromarray(crop).resize((size, size), Image.Resampling.BILINEAR)
                frames.append(np.asarray(resized))
    return Film(frames, np.concatenate(sounds), float(fps), described)


class Synthetic(PairBuilder):
    """The synthetic audio-visual world (see the module docstring)."""

    BUILDER_CONFIG_CLASS = SyntheticConfig

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        del dl_manager  # nothing to download
        config = self.builder_config
        validate(config)
        self.info.metadata["world"] = world_spec(config)
        # TFDS cannot write an empty split: a split configured with no pairs is left out.
        return {
            split: self.pairs(split, self._generate_examples(config, split))
            for split in SPLITS
            if num_pairs(config, split)
        }

    def _generate_examples(
        self, config: SyntheticConfig, split: str
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        for index in range(num_pairs(config, split)):
            pair = generate_pair(config, split, index)
            yield pair.key, pair.example


def read_world(dataset_dir: str) -> dict[str, Any]:
    """The world description stored with a built synthetic dataset."""
    with open(os.path.join(dataset_dir, "metadata.json")) as f:
        return json.load(f)["world"]


__all__ = [
    "SPLITS",
    "ClassInfo",
    "Film",
    "Latents",
    "Pair",
    "Synthetic",
    "SyntheticConfig",
    "classes",
    "clip_latents",
    "gamut_chroma",
    "generate_pair",
    "lab_to_srgb",
    "render_film",
]
