"""Your own data: a directory of image + audio pairs (matched by basename) and videos.

Layout (manual_dir):
- Splits: when manual_dir has subdirectories named `train`, `val` or `test`, each one present
  is a split and files outside them are reported and not used; otherwise everything is the
  split `train` (TFDS reserves `all`).
- Labels: the first directory level under a split is the class (`train/dogs/a.jpg` is class
  `dogs`); files directly in a split have label -1 and an empty label name.
- Pairs: `x.jpg` (or .jpeg/.png/.webp) pairs with `x.wav` (or .flac/.ogg/.mp3) in the same
  directory. An image without audio is stored with `has_audio=False` (option
  `keep_images_without_audio`); audio without an image is reported. A video gives its middle
  frame with its audio, and with `per_second` also one pair per whole second.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

import numpy as np

from aiaic_jax.data import media
from aiaic_jax.data.builders import media_pairs
from aiaic_jax.data.builders.media_pairs import (
    ManualDirError,
    MediaPairBuilder,
    MediaPairConfig,
    Outcome,
    option,
)

SPLIT_DIRS = ("train", "val", "test")
SINGLE_SPLIT = "train"  # TFDS reserves the name `all`


@dataclasses.dataclass(eq=False)
class FolderConfig(MediaPairConfig):
    per_second: bool = option(
        False, "videos also give one pair per whole second (its middle frame, its audio)"
    )
    max_audio_seconds: float = option(
        10.0,
        "audio stored with an image or a video's middle frame: at most this many seconds "
        "(audio files: from the start; videos: centred on the middle frame)",
    )
    keep_images_without_audio: bool = option(
        True, "store an image that has no audio file of its basename with has_audio=False"
    )


@dataclasses.dataclass(frozen=True)
class Job:
    """One unit of decoding: an image (with its audio file, if any) or a video."""

    kind: str  # "image" or "video"
    path: str
    clip_id: str  # path relative to the split directory, with '/' separators
    label: int
    label_name: str
    audio_path: str | None = None


def find_splits(root: str) -> dict[str, str]:
    """Split name -> directory, following the layout in the module docstring."""
    present = [s for s in SPLIT_DIRS if os.path.isdir(os.path.join(root, s))]
    if not present:
        return {SINGLE_SPLIT: root}
    return {s: os.path.join(root, s) for s in present}


NOT_A_REGULAR_FILE = "not a regular file (a named pipe, socket, device or broken link)"


def media_files(directory: str) -> Iterator[str]:
    """Every file under `directory` in sorted order, hidden files and directories left out."""
    for parent, subdirectories, files in os.walk(directory):
        subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield os.path.join(parent, name)


def _class_of(relative: str) -> str:
    parts = relative.split("/")
    return parts[0] if len(parts) > 1 else ""


class Folder(MediaPairBuilder):
    """Image + audio pairs and videos from a directory you provide."""

    BUILDER_CONFIG_CLASS = FolderConfig
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    manual_dir is your directory: images with audio files of the same basename, and videos;
    optional split subdirectories train/, val/, test/ and class subdirectories below them.
    """

    def check_manual_dir(self, manual_dir: str | os.PathLike | None) -> None:
        if manual_dir is None or not os.path.isdir(manual_dir):
            raise ManualDirError(f"folder needs --manual_dir, a directory; got {manual_dir}")
        if not any(media_files(os.fspath(manual_dir))):
            raise ManualDirError(f"folder: {manual_dir} holds no files")

    def _split_generators(self, dl_manager) -> dict[str, Iterator]:
        config = self.builder_config
        media_pairs.check_image_options(config)
        root = os.fspath(dl_manager.manual_dir)
        self.check_manual_dir(root)
        split_dirs = find_splits(root)
        if root not in split_dirs.values():
            self._report_outside(root)

        files = {split: list(media_files(d)) for split, d in split_dirs.items()}
        classes = sorted(
            {
                _class_of(os.path.relpath(path, split_dirs[split]).replace(os.sep, "/"))
                for split, paths in files.items()
                for path in paths
            }
            - {""}
        )
        labels = {name: i for i, name in enumerate(classes)}

        splits = {}
        for split, directory in split_dirs.items():
            jobs = self._jobs(directory, files[split], labels)
            if not jobs:
                self.report.note(f"split {split}: no usable file, split left out")
                continue
            splits[split] = self.split_pairs(split, jobs, self._job_pairs)
        return splits

    def _report_outside(self, root: str) -> None:
        for name in sorted(os.listdir(root)):
            if name.startswith(".") or name in SPLIT_DIRS:
                continue
            self.report.skip(
                os.path.join(root, name), f"outside the split directories {'/, '.join(SPLIT_DIRS)}/"
            )

    def _jobs(self, directory: str, paths: list[str], labels: dict[str, int]) -> list[Job]:
        """Groups files by directory and basename into image pairs and videos."""
        config = self.builder_config
        groups: dict[tuple[str, str], list[str]] = {}
        for path in paths:
            stem = os.path.splitext(path)[0]
            groups.setdefault((os.path.dirname(path), stem), []).append(path)

        jobs = []
        unpaired_images = 0
        for _, group in sorted(groups.items()):
            by_kind: dict[str, list[str]] = {"image": [], "audio": [], "video": []}
            for path in group:
                extension = os.path.splitext(path)[1].lower()
                if not os.path.isfile(path):  # opening a FIFO would wait for a writer forever
                    self.report.skip(path, NOT_A_REGULAR_FILE)
                elif extension in media.IMAGE_EXTENSIONS:
                    by_kind["image"].append(path)
                elif extension in media.AUDIO_EXTENSIONS:
                    by_kind["audio"].append(path)
                elif extension in media.VIDEO_EXTENSIONS:
                    by_kind["video"].append(path)
                else:
                    self.report.skip(path, "not an image, audio or video file (by its extension)")
            image = self._one_of(by_kind["image"], "image")
            audio = self._one_of(by_kind["audio"], "audio file")

            for path in [*by_kind["video"], *([image] if image else [])]:
                relative = os.path.relpath(path, directory).replace(os.sep, "/")
                label_name = _class_of(relative)
                kind = "video" if path in by_kind["video"] else "image"
                job = Job(kind, path, relative, labels.get(label_name, -1), label_name)
                if kind == "image":
                    if audio is None and not config.keep_images_without_audio:
                        self.report.skip(path, "no audio file with the same basename")
                        continue
                    unpaired_images += audio is None
                    job = dataclasses.replace(job, audio_path=audio)
                jobs.append(job)
            if audio is not None and image is None:
                self.report.skip(audio, "no image with the same basename")
        if unpaired_images:
            self.report.note(
                f"{directory}: {unpaired_images} images without an audio file of their "
                "basename are stored with has_audio=False"
            )
        return jobs

    def _one_of(self, paths: list[str], what: str) -> str | None:
        """The first of same-basename files (sorted); the others are reported."""
        if not paths:
            return None
        chosen, *others = sorted(paths)
        for other in others:
            self.report.skip(other, f"another {what} has the same basename: {chosen}")
        return chosen

    def _job_pairs(self, job: Job) -> Outcome:
        return self._video_pairs(job) if job.kind == "video" else self._image_pair(job)

    def _image_pair(self, job: Job) -> Outcome:
        config = self.builder_config
        outcome = Outcome()
        try:
            image = media.load_image(job.path, max_side=config.max_side or None)
            audio = np.zeros((0,), np.int16)
            if job.audio_path is not None:
                audio = media.load_audio(job.audio_path, max_seconds=config.max_audio_seconds)
        except media.MediaError as error:
            outcome.skipped.append((error.path, error.problem))
            return outcome
        outcome.notes.extend(f"{job.path}: {repair}" for repair in image.repairs)
        media_pairs.frame_pair(
            outcome,
            config,
            image.rgb,
            audio,
            path=job.path,
            lossy_source=os.path.splitext(job.path)[1].lower() in (".jpg", ".jpeg"),
            relevant=audio.size > 0,
            label=job.label,
            label_name=job.label_name,
            clip_id=job.clip_id,
            second=-1,
        )
        return outcome

    def _video_pairs(self, job: Job) -> Outcome:
        config = self.builder_config
        outcome = Outcome()
        clip = media_pairs.decode_clip(job.path, config, outcome, per_second=config.per_second)
        if clip is None:
            return outcome
        frames = [(-1, clip.middle_frame, clip.middle_audio(config.max_audio_seconds))]
        frames += [(k, rgb, clip.second_audio(k)) for k, rgb in enumerate(clip.second_frames)]
        for second, rgb, audio in frames:
            media_pairs.frame_pair(
                outcome,
                config,
                rgb,
                audio,
                path=job.path,
                lossy_source=True,
                relevant=clip.has_audio,
                label=job.label,
                label_name=job.label_name,
                clip_id=job.clip_id,
                second=second,
            )
        return outcome
