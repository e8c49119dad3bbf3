"""What the media builders (vggsound, ave, folder) share: image options, encoding, decoding work.

Decoding runs on a small thread pool (PyAV and Pillow release the GIL while they decode and
encode) and its results are consumed in input order, so that keys, examples and the report of a
build never depend on timing.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import itertools
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from aiaic_jax.data import media
from aiaic_jax.data.builders.common import BuildReport, PairBuilder, option

IMAGE_FORMATS = ("auto", "jpeg", "png")


@dataclasses.dataclass(eq=False)
class MediaPairConfig(tfds.core.BuilderConfig):
    """Options of every builder that reads real media."""

    image_format: str = option(
        "auto",
        "how images are stored: jpeg (quality --jpeg_quality), png, or auto: JPEG for video "
        "frames and JPEG inputs, PNG for lossless inputs",
    )
    jpeg_quality: int = option(95, "JPEG quality of stored images")
    max_side: int = option(
        512, "downscale images so that the longer side is at most this (0: keep)"
    )
    min_side: int = option(32, "skip images whose shorter side (after downscaling) is below this")
    skip_grey: bool = option(True, "skip grey images and frames (no colour ground truth)")
    num_workers: int = option(
        min(8, os.cpu_count() or 1), "threads decoding media in parallel (default: CPUs, at most 8)"
    )


def check_image_options(config: MediaPairConfig) -> None:
    """Raises ValueError for an image option out of range."""
    if config.image_format not in IMAGE_FORMATS:
        raise ValueError(
            f"image_format must be one of {', '.join(IMAGE_FORMATS)}, got {config.image_format!r}"
        )
    if not 1 <= config.jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be in 1..100, got {config.jpeg_quality}")


def check_pattern(option_name: str, pattern: str, **example_fields: Any) -> None:
    """Raises ValueError unless `pattern` formats with exactly these fields."""
    try:
        pattern.format(**example_fields)
    except (KeyError, IndexError, ValueError) as error:
        fields = ", ".join(example_fields)
        raise ValueError(
            f"{option_name} {pattern!r} must use only the fields {fields}: {error!r}"
        ) from None


def encode_image(rgb: np.ndarray, image_format: str, jpeg_quality: int = 95) -> bytes:
    """`[H, W, 3]` uint8 -> PNG or JPEG bytes (TFDS stores them as they are).

    JPEG keeps full chroma resolution (4:4:4): colour is what the model learns.
    """
    buffer = io.BytesIO()
    if image_format == "jpeg":
        Image.fromarray(rgb).save(buffer, format="JPEG", quality=jpeg_quality, subsampling=0)
    else:
        Image.fromarray(rgb).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def stored_format(config: MediaPairConfig, lossy_source: bool) -> str:
    """The format an image is stored in; `lossy_source`: a video frame or a JPEG file."""
    if config.image_format != "auto":
        return config.image_format
    return "jpeg" if lossy_source else "png"


def pair_example(
    image: bytes,
    audio: np.ndarray,
    *,
    relevant: bool,
    label: int,
    label_name: str,
    clip_id: str,
    second: int,
) -> dict[str, Any]:
    """One example of `pair_features()`; `has_audio` is whether `audio` holds samples."""
    return {
        "image": image,
        "audio": np.asarray(audio, np.int16),
        "has_audio": bool(audio.size),
        "relevant": bool(relevant),
        "label": np.int32(label),
        "label_name": label_name,
        "clip_id": clip_id,
        "second": np.int32(second),
    }


def pair_key(clip_id: str, second: int) -> str:
    """The unique, deterministic key of a pair: `clip_id:second` (-1: the whole clip)."""
    return f"{clip_id}:{second}"


@dataclasses.dataclass
class Outcome:
    """What one input produced: examples, and what goes into the report."""

    examples: list[tuple[str, dict[str, Any]]] = dataclasses.field(default_factory=list)
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    tallies: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    def apply(self, report: BuildReport) -> Iterator[tuple[str, dict[str, Any]]]:
        for path, reason in self.skipped:
            report.skip(path, reason)
        for note in self.notes:
            report.note(note)
        for text, n in self.tallies.items():
            report.tally(text, n)
        yield from self.examples


def frame_pair(
    outcome: Outcome,
    config: MediaPairConfig,
    rgb: np.ndarray,
    audio: np.ndarray,
    *,
    path: str,
    lossy_source: bool,
    relevant: bool,
    label: int,
    label_name: str,
    clip_id: str,
    second: int,
) -> bool:
    """Adds the pair of one image to `outcome`, or its skip reason when the image is unusable;
    returns whether the pair was added."""
    problem = media.image_problem(rgb, min_side=config.min_side, reject_grey=config.skip_grey)
    if problem is not None:
        where = path if second < 0 else f"{path} (second {second})"
        outcome.skipped.append((where, problem))
        return False
    image = encode_image(rgb, stored_format(config, lossy_source), config.jpeg_quality)
    outcome.examples.append(
        (
            pair_key(clip_id, second),
            pair_example(
                image,
                audio,
                relevant=relevant,
                label=label,
                label_name=label_name,
                clip_id=clip_id,
                second=second,
            ),
        )
    )
    return True


def decode_clip(
    path: str, config: MediaPairConfig, outcome: Outcome, *, per_second: bool
) -> media.DecodedClip | None:
    """Decodes a video, or records why it is skipped; its decoder warnings become notes."""
    try:
        clip = media.decode_video(path, per_second=per_second, max_side=config.max_side or None)
    except media.MediaError as error:
        outcome.skipped.append((path, error.problem))
        return None
    outcome.notes.extend(f"{path}: {warning}" for warning in clip.warnings)
    if not clip.has_audio:
        outcome.notes.append(f"{path}: no audio stream; pairs stored with has_audio=False")
    elif clip.audio_duration < clip.duration - 1:
        outcome.notes.append(
            f"{path}: audio covers {clip.audio_duration:.1f} s of {clip.duration:.1f} s; the "
            "rest is silence"
        )
    return clip


T = TypeVar("T")
R = TypeVar("R")


def map_in_order(fn: Callable[[T], R], items: Iterable[T], num_workers: int) -> Iterator[R]:
    """`map(fn, items)` on `num_workers` threads, results in input order, a bounded backlog."""
    if num_workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(num_workers) as pool:
        pending: collections.deque = collections.deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * num_workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


class ManualDirError(FileNotFoundError):
    """The manual directory or one of its required files is missing."""


class EmptySplitError(RuntimeError):
    """No split has a usable pair: there is nothing to write."""


def manual_path(manual_dir: os.PathLike | str, relative: str) -> str:
    """`relative` inside the manual directory ('' or '.' is the directory itself)."""
    return os.path.normpath(os.path.join(os.fspath(manual_dir), relative or "."))


class MediaPairBuilder(PairBuilder):
    """Base of the builders that decode media files into pairs, one `Outcome` per input."""

    BUILDER_CONFIG_CLASS = MediaPairConfig

    def split_pairs(
        self, split: str, jobs: list[T], make_pairs: Callable[[T], Outcome]
    ) -> Iterator[tuple[str, dict[str, Any]]] | None:
        """The (key, example) pairs of a split, `make_pairs` on each job in job order; or None.

        TFDS fixes the splits before it generates any, and cannot write an empty one; so the
        jobs are decoded here up to the first that gives a pair. When none does, their reasons
        go to the report, the split is noted as left out, and None is returned: the other
        splits are still built. The decoded leading jobs are kept until generation starts.
        """
        outcomes = map_in_order(make_pairs, jobs, self.builder_config.num_workers)
        leading = []
        for outcome in outcomes:
            leading.append(outcome)
            if outcome.examples:
                break
        else:
            for outcome in leading:
                collections.deque(outcome.apply(self.report), maxlen=0)
            self.report.note(f"split {split}: every input was skipped, split left out")
            return None

        return self.pairs(split, self._generate_examples(itertools.chain(leading, outcomes)))

    def _generate_examples(self, outcomes: Iterable[Outcome]) -> Iterator[tuple[str, dict]]:
        for outcome in outcomes:
            yield from outcome.apply(self.report)

    def require_splits(self, splits: dict[str, Iterator]) -> dict[str, Iterator]:
        """`splits` without the left-out ones (None); raises `EmptySplitError` if none is left."""
        usable = {split: pairs for split, pairs in splits.items() if pairs is not None}
        if not usable:
            raise EmptySplitError(
                f"no split has a usable pair: every input was skipped ({len(self.report.skipped)} "
                "skipped, listed in the report)"
            )
        return usable
