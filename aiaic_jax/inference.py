"""Colorizing with a trained model: the library API under `aiaic colorize`.

    from aiaic_jax.inference import Colorizer

    colorizer = Colorizer.from_run("runs/demo/full")  # W/stage3/final with W/stage3/config.json
    rgb, r = colorizer.colorize(grey_photo, audio=waveform, sample_rate=44100)
    rgbs, rs = colorizer.colorize([photo_a, photo_b], audio=[sound_a, None], sample_rate=16000)

Images are numpy arrays of any size: grey `[H, W]` or `[H, W, 1]`, or RGB `[H, W, 3]` (only
its L is used), uint8 or float in [0, 1]; a batch is a list of them or one `[N, H, W(, C)]`
array. Sound is a waveform `[T]` or `[T, channels]` (int16, or float in [-1, 1]) at
`sample_rate`; it is mixed to mono, resampled to 16 kHz and tiled or cut to the length the
model was trained with. Without sound r = 0 and the visual backbone colours alone (Eq. 8).

A sound's part of the model (spectrogram, E_a, A2V, the guidance code, RNet's audio side) runs
once per distinct sound: `hear(sounds)` returns it, and `colorize_heard(images, heard)` colours
any number of images with it (films reuse one window's for all the frames it covers;
`aiaic_jax.film`). The result equals the model's joint call (tests/test_film.py).

Geometry: the network runs at its training resolution S x S (`config.data.image_size`). By
default ("pad") the picture is resized with its aspect ratio kept so that its longer side is
S, centred, and the rest of the square is filled by mirroring the picture's edges (mirrored
content keeps the per-channel statistics that SG/AdaIN normalises closer to the picture's own
than a constant border would); the predicted ab of the picture's box is then resized (bilinear)
to the input's size. "squash" resizes the whole picture to S x S ignoring its aspect ratio, as
the official DDColor inference does. Either way the output has the input's size and its own
full-resolution L; only the colour comes at the model's resolution.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image

from aiaic_jax import color, preprocess, runs
from aiaic_jax.data.pipeline import fit_audio
from aiaic_jax.evaluation.variants import (
    load_variables,
    model_from_config,
    relevance_controls,
    resolve_config,
)
from aiaic_jax.models.aiaic import AIAIC

SAMPLE_RATE = 16000
MODES = ("auto", "1", "0")
RESIZE_MODES = ("pad", "squash")


@dataclasses.dataclass(frozen=True)
class Box:
    """Where the picture lies in the model's S x S input, in model pixels."""

    top: int
    left: int
    height: int
    width: int


def fit_to_model(rgb: np.ndarray, size: int, resize: str = "pad") -> tuple[np.ndarray, Box]:
    """[H, W, 3] uint8 -> (the model's [size, size, 3] uint8 input, the picture's box in it).

    resize "pad": aspect ratio kept, longer side `size`, centred, the margins mirrored from the
    picture; "squash": the whole picture resized to size x size. Bilinear, antialiased (PIL).
    """
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize={resize!r}; one of {', '.join(RESIZE_MODES)}")
    height, width = rgb.shape[:2]
    if resize == "squash":
        return _resize(rgb, size, size), Box(0, 0, size, size)
    scale = size / max(height, width)
    box_height = min(size, max(1, round(height * scale)))
    box_width = min(size, max(1, round(width * scale)))
    picture = _resize(rgb, box_height, box_width)
    top, left = (size - box_height) // 2, (size - box_width) // 2
    padding = ((top, size - box_height - top), (left, size - box_width - left), (0, 0))
    return np.pad(picture, padding, mode="symmetric"), Box(top, left, box_height, box_width)


def _resize(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    if rgb.shape[:2] == (height, width):
        return rgb
    resized = Image.fromarray(rgb).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized)


def _bucket(length: int) -> int:
    """`length` rounded up to one of 8 sizes per octave (at least a multiple of 16), so that
    pictures of many sizes share a few compiled compositions (at most 1/8 more pixels)."""
    step = max(16, 1 << max(0, length.bit_length() - 4))
    return -(-length // step) * step


@jax.jit
def _compose(
    rgb_u8: jax.Array, ab: jax.Array, scale: jax.Array, translation: jax.Array
) -> jax.Array:
    """The picture's own L with the model's ab resized onto it.

    rgb_u8: [H, W, 3] uint8 (H, W a bucket size; the picture in its top-left corner);
    ab: [S, S, 2] raw Lab units; scale, translation: [2] float, mapping the box to the picture
    (`jax.image.scale_and_translate`, which `jax.image.resize` uses: the same bilinear,
    antialiased when shrinking). Returns [H, W, 3] uint8.
    """
    gray_l = color.l_from_rgb_uint8(rgb_u8)
    full_ab = jax.image.scale_and_translate(
        ab, (*rgb_u8.shape[:2], 2), (0, 1), scale, translation, method="linear", antialias=True
    )
    return color.l_ab_to_rgb_uint8(gray_l, full_ab)


STRIP_ROWS = 256  # the composition of a taller picture runs in strips of this many rows


def full_resolution(rgb_u8: np.ndarray, ab: jax.Array, box: Box) -> np.ndarray:
    """[H, W, 3] uint8 + the model's ab [S, S, 2] for the picture in `box` -> [H, W, 3] uint8
    with the input's own L.

    A picture taller than `STRIP_ROWS` is composed strip by strip (each output pixel depends on
    its own position only, so the result is the same): the memory it takes grows with its
    width, not its area. Full strips of one width bucket share one compiled shape; the last,
    shorter strip is padded to a height bucket of its own, not to a full strip.
    """
    height, width = rgb_u8.shape[:2]
    columns = _bucket(width)
    scale = np.array([height / box.height, width / box.width], np.float32)
    output = np.empty((height, width, 3), np.uint8)
    for top in range(0, height, STRIP_ROWS):
        strip = rgb_u8[top : top + STRIP_ROWS]
        rows = STRIP_ROWS if len(strip) == STRIP_ROWS else _bucket(len(strip))
        padded = np.pad(strip, ((0, rows - len(strip)), (0, columns - width), (0, 0)), "edge")
        translation = np.array([-box.top * scale[0] - top, -box.left * scale[1]], np.float32)
        composed = _compose(padded, ab, scale, translation)
        output[top : top + len(strip)] = np.asarray(composed)[: len(strip), :width]
    return output


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """A grey [H, W] / [H, W, 1] or RGB [H, W, 3] image, uint8 or float in [0, 1] -> [H, W, 3]
    uint8."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"an image is [H, W], [H, W, 1] or [H, W, 3]; got shape {image.shape}")
    if min(image.shape[:2]) < 1:
        raise ValueError(f"an image has at least one pixel; got shape {image.shape}")
    if image.dtype == np.uint8:
        return image
    if np.issubdtype(image.dtype, np.floating):
        if not np.all(np.isfinite(image)):
            raise ValueError("the image holds NaN or infinite values")
        return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    raise ValueError(f"an image is uint8 or float in [0, 1]; got {image.dtype}")


def as_model_audio(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """A waveform [T] or [T, C] (int16, other ints, or float in [-1, 1]) at `sample_rate` ->
    16 kHz mono int16 [N]. Non-finite float samples become silence."""
    audio = np.asarray(audio)
    if audio.ndim not in (1, 2):
        raise ValueError(f"a waveform is [T] or [T, channels]; got shape {audio.shape}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if np.issubdtype(audio.dtype, np.integer):
        wave = audio.astype(np.float64) / (np.iinfo(audio.dtype).max + 1.0)
    elif np.issubdtype(audio.dtype, np.floating):
        wave = np.nan_to_num(audio.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    else:
        raise ValueError(f"a waveform is int or float; got {audio.dtype}")
    if wave.ndim == 2:
        wave = wave.mean(axis=1)
    wave = wave.astype(np.float32)
    if sample_rate != SAMPLE_RATE and wave.size:
        wave = _resample(wave, sample_rate)
    return np.round(np.clip(wave, -1.0, 32767 / 32768) * 32768.0).astype(np.int16)


def _resample(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """float32 [T] at `sample_rate` -> float32 [ceil(T * 16000 / sample_rate)] at 16 kHz: what
    `librosa.resample` does by default (soxr's high quality, the length fixed), through soxr
    itself, since librosa's first call in a fresh environment compiles its numba utilities
    (about 30 s on a 2-core CPU)."""
    import soxr

    out = soxr.resample(wave, sample_rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    size = math.ceil(wave.size * SAMPLE_RATE / sample_rate)
    return np.pad(out[:size], (0, max(0, size - out.size)))


@functools.partial(jax.jit, static_argnames=("model", "config"))
def _hear(
    variables: Any, audio: jax.Array, *, model: AIAIC, config: ml_collections.FrozenConfigDict
) -> tuple[jax.Array, jax.Array]:
    """int16 [K, T] 16 kHz sounds -> (code [K, Dc], RNet audio embedding [K, d'])."""
    spectrogram = preprocess.spectrogram(audio, config.audio)
    return model.apply(variables, spectrogram, method=AIAIC.sound_guidance)


@functools.partial(jax.jit, static_argnames=("model",))
def _relevance(
    variables: Any,
    rgb: jax.Array,
    embedding: jax.Array,
    has_audio: jax.Array,
    controls: dict[str, jax.Array],
    *,
    model: AIAIC,
) -> jax.Array:
    """r [B] of uint8 [B, S, S, 3] frames with each one's sound (RNet audio embedding;
    has_audio [B]): from RNet when `use_rnet`, else `fixed_relevance`; 0 without sound. RNet
    does not run when no frame has sound."""
    gray_l, _ = color.rgb_to_l_ab(color.rgb_uint8_to_float(rgb))
    has_audio = jnp.asarray(has_audio, bool)

    def from_rnet() -> jax.Array:
        relevance = model.apply(variables, gray_l, embedding, method=AIAIC.relevance_heard)
        return relevance.astype(jnp.float32)

    def fixed() -> jax.Array:
        return jnp.full(has_audio.shape, controls["fixed_relevance"], jnp.float32)

    use_rnet = jnp.asarray(controls["use_rnet"], bool) & jnp.any(has_audio)
    return jnp.where(has_audio, jax.lax.cond(use_rnet, from_rnet, fixed), 0.0)


@functools.partial(jax.jit, static_argnames=("model",))
def _colorize_at(
    variables: Any, rgb: jax.Array, code: jax.Array, relevance: jax.Array, *, model: AIAIC
) -> jax.Array:
    """ab [B, S, S, 2] of uint8 [B, S, S, 3] frames guided by code [B, Dc] at r [B]."""
    gray_l, _ = color.rgb_to_l_ab(color.rgb_uint8_to_float(rgb))
    return model.apply(variables, gray_l, code, relevance, method=AIAIC.colorize_heard)


# A batch's r [n] from RNet (or the fixed r) and codes [n, Dc] -> the r and codes to colour with.
Guide = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
# A batch's predicted ab [n, S, S, 2] and each picture's box in it -> the ab to compose with.
Settle = Callable[[np.ndarray, list["Box"]], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Heard:
    """A sound's part of the colorization (`Colorizer.hear`), computed once and shared by
    every image or film frame that hears it."""

    code: np.ndarray  # [Dc] the guidance code c (Eq. 4) from the sound
    embedding: np.ndarray  # [d'] RNet's audio embedding


@dataclasses.dataclass
class Colorized:
    rgb: np.ndarray  # [H, W, 3] uint8 at the input's resolution
    relevance: float  # the r that gated the audio guidance
    has_audio: bool


def default_mode(config: ml_collections.ConfigDict, stage: str | None) -> str:
    """How r is set for a run's stage when the user does not say: from RNet for the full
    method, 1 for the runs without RNet ("w/o r", e2e), 0 for a baseline (the backbone
    alone)."""
    if stage == "baseline":
        return "0"
    if stage == "e2e" or not bool(config.get("use_relevance", True)):
        return "1"
    return "auto"


class Colorizer:
    """A trained model, ready to colorize images of any size with their sound."""

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        variables: Any,
        *,
        mode: str = "auto",
        batch_size: int = 8,
        resize: str = "pad",
    ):
        """config: the run's config (`model`, `data.image_size`, `data.audio_seconds`, `audio`);
        variables: its `{"params", "batch_stats"}` (numpy or jax); mode: "auto" (r from RNet),
        "1" or "0" (r fixed; r = 0 without sound in every mode); batch_size: images per model
        call; resize: "pad" or "squash" (the module docstring)."""
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: choose auto, 1 or 0")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if resize not in RESIZE_MODES:
            raise ValueError(f"resize {resize!r}: choose {' or '.join(RESIZE_MODES)}")
        self.config = resolve_config(config)
        self.model = model_from_config(self.config)
        self.image_size = int(self.config.data.image_size)
        self.audio_seconds = float(self.config.data.audio_seconds)
        self.num_samples = round(self.audio_seconds * SAMPLE_RATE)
        self.batch_size = batch_size
        self.mode = mode
        self.resize = resize
        self.checkpoint: runs.Checkpoint | None = None  # set when loaded from a directory
        self.variables = jax.device_put(variables)
        self._code_dim = int(self.model.guidance_dim)
        self._embedding_dim = int(self.model.relevance_dim)
        self.controls = relevance_controls(
            use_rnet=mode == "auto",
            fixed_relevance=1.0 if mode == "auto" else float(mode),
            gate_missing_audio=True,
        )

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | os.PathLike,
        config: ml_collections.ConfigDict | None = None,
        *,
        mode: str | None = None,
        **options: Any,
    ) -> Colorizer:
        """From a run directory `W` (its stage3, e2e or baseline final), a stage directory
        `W/<stage>` or a variables directory `W/<stage>/final`. config: None reads the
        config.json training wrote beside the variables; mode None: `default_mode`."""
        found = runs.find_checkpoint(checkpoint)
        return cls._load(found, config, mode, options)

    @classmethod
    def from_run(
        cls,
        run: str | os.PathLike,
        stage: str | None = None,
        *,
        config: ml_collections.ConfigDict | None = None,
        mode: str | None = None,
        **options: Any,
    ) -> Colorizer:
        """From a run directory: `stage` (e.g. "stage3", "e2e", "baseline"), by default the
        first of stage3, e2e and baseline that is complete."""
        found = runs.find_checkpoint(run, stage)
        return cls._load(found, config, mode, options)

    @classmethod
    def _load(
        cls,
        found: runs.Checkpoint,
        config: ml_collections.ConfigDict | None,
        mode: str | None,
        options: dict[str, Any],
    ) -> Colorizer:
        if config is None:
            if found.config_file is None:
                raise FileNotFoundError(
                    f"{found.path}: no {runs.CONFIG_FILE} beside it; give the config the model "
                    "was trained with"
                )
            config = runs.read_config(found.config_file)
        resolved = resolve_config(config)
        model = model_from_config(resolved)
        variables = load_variables(model, found.path, int(resolved.data.image_size))
        chosen = mode if mode is not None else default_mode(config, found.stage)
        if found.stage == "baseline" and chosen != "0":
            logging.warning(
                "%s: a baseline has no trained guidance; colorizing with r = %s", found.path, chosen
            )
        colorizer = cls(config, variables, mode=chosen, **options)
        colorizer.checkpoint = found
        return colorizer

    def colorize(
        self,
        image: np.ndarray | Sequence[np.ndarray],
        audio: np.ndarray | Sequence[np.ndarray | None] | None = None,
        sample_rate: int | None = None,
    ) -> tuple[np.ndarray, float] | tuple[list[np.ndarray] | np.ndarray, np.ndarray]:
        """Colorizes one image or a batch (see the module docstring for the accepted forms).

        audio: None (no sound), one waveform (for a batch: shared by every image, prepared
        once), or for a batch a list with a waveform or None per image. sample_rate: of the
        waveforms (default 16000).
        Returns (rgb [H, W, 3] uint8, r) for one image; for a batch (a list of rgb, or an
        [N, H, W, 3] array when the input was one array, and r [N]).
        """
        single = not isinstance(image, (list, tuple)) and not _is_batch_array(image)
        images = [image] if single else list(image)
        rate = SAMPLE_RATE if sample_rate is None else int(sample_rate)
        if audio is None or not isinstance(audio, (list, tuple)):
            shared = None if audio is None else as_model_audio(audio, rate)
            sounds = [shared] * len(images)
        else:
            if len(audio) != len(images):
                raise ValueError(f"{len(images)} images but {len(audio)} waveforms")
            sounds = [None if a is None else as_model_audio(a, rate) for a in audio]
        results = self.colorize_prepared([as_rgb_uint8(i) for i in images], sounds)
        relevance = np.array([r.relevance for r in results], np.float32)
        if single:
            return results[0].rgb, float(relevance[0])
        rgbs = [r.rgb for r in results]
        if isinstance(image, np.ndarray) and len({r.shape for r in rgbs}) == 1:
            return np.stack(rgbs), relevance
        return rgbs, relevance

    def colorize_prepared(
        self, images: Sequence[np.ndarray], audios: Sequence[np.ndarray | None]
    ) -> list[Colorized]:
        """images: [H_i, W_i, 3] uint8 each; audios: 16 kHz mono int16 each, or None. A sound
        shared by several images (the same array) is heard once."""
        distinct: dict[int, int] = {}
        sounds: list[np.ndarray] = []
        for sound in audios:
            if sound is not None and sound.size and id(sound) not in distinct:
                distinct[id(sound)] = len(sounds)
                sounds.append(sound)
        heard = self.hear(sounds)
        per_image = [
            None if sound is None or not sound.size else heard[distinct[id(sound)]]
            for sound in audios
        ]
        return self.colorize_heard(images, per_image)

    def hear(self, audios: Sequence[np.ndarray]) -> list[Heard]:
        """What each sound (16 kHz mono int16, tiled or cut to the model's length) gives the
        images that hear it; `batch_size` sounds per model call."""
        heard: list[Heard] = []
        for start in range(0, len(audios), self.batch_size):
            chunk = audios[start : start + self.batch_size]
            batch = np.zeros((self.batch_size, self.num_samples), np.int16)
            for i, sound in enumerate(chunk):
                batch[i] = fit_audio(sound, self.num_samples)
            code, embedding = _hear(self.variables, batch, model=self.model, config=self.config)
            code, embedding = np.asarray(code), np.asarray(embedding)
            heard += [Heard(code[i], embedding[i]) for i in range(len(chunk))]
        return heard

    def colorize_heard(
        self,
        images: Sequence[np.ndarray],
        heard: Sequence[Heard | None],
        *,
        guide: Guide | None = None,
        settle: Settle | None = None,
    ) -> list[Colorized]:
        """images: [H_i, W_i, 3] uint8 each; heard: from `hear`, or None for an image without
        sound (r = 0). `batch_size` images per model call.

        guide: called once per model call with its images' r (from RNet, or the fixed r of the
        mode; 0 without sound) [n] and guidance codes [n, Dc]; returns the r and codes the
        backbone is guided with (a film smooths them within a shot). Colorized.relevance is
        the r used. settle: called with each model call's ab at the model's resolution [n, S,
        S, 2] and the pictures' boxes in it; returns the ab to compose the outputs from (a
        film steadies its colour over time)."""
        if len(images) != len(heard):
            raise ValueError(f"{len(images)} images but {len(heard)} sounds")
        results: list[Colorized] = []
        for start in range(0, len(images), self.batch_size):
            chunk = list(images[start : start + self.batch_size])
            sounds = heard[start : start + self.batch_size]
            boxes, ab, relevance = self._model_batch(chunk, sounds, guide)
            if settle is not None:
                ab = settle(np.array(ab, np.float32), boxes)
            for i, picture in enumerate(chunk):
                rgb = full_resolution(picture, ab[i], boxes[i])
                results.append(Colorized(rgb, float(relevance[i]), sounds[i] is not None))
        return results

    def _model_batch(
        self, images: list[np.ndarray], heard: Sequence[Heard | None], guide: Guide | None
    ) -> tuple[list[Box], jax.Array, np.ndarray]:
        size, count = self.image_size, len(images)
        rgb = np.zeros((self.batch_size, size, size, 3), np.uint8)  # padded: one compiled shape
        code = np.zeros((self.batch_size, self._code_dim), np.float32)
        embedding = np.zeros((self.batch_size, self._embedding_dim), np.float32)
        has_audio = np.zeros((self.batch_size,), bool)
        boxes = []
        for i, (image, sound) in enumerate(zip(images, heard)):
            rgb[i], box = fit_to_model(image, size, self.resize)
            boxes.append(box)
            if sound is not None:
                code[i], embedding[i], has_audio[i] = sound.code, sound.embedding, True
        relevance = _relevance(
            self.variables, rgb, embedding, has_audio, self.controls, model=self.model
        )
        if guide is not None:  # r comes to the host only when a guide changes it
            relevance = np.array(relevance)
            guided_r, guided_code = guide(relevance[:count].copy(), code[:count].copy())
            relevance[:count], code[:count] = guided_r, guided_code
        ab = _colorize_at(self.variables, rgb, code, relevance, model=self.model)
        return boxes, ab[:count], np.asarray(relevance)[:count]


def _is_batch_array(image: Any) -> bool:
    """An [N, H, W] or [N, H, W, C] array (an [H, W, 1] or [H, W, 3] array is one image)."""
    if not isinstance(image, np.ndarray):
        return False
    return image.ndim == 4 or (image.ndim == 3 and image.shape[-1] not in (1, 3))
