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

from aiaic_jax.data import folders
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
    """One unit of decoding: a video, or the same-basename images of a folder (the first that
    decodes is used) with their audio files."""

    kind: str  # "image" or "video"
    paths: tuple[str, ...]
    directory: str  # the split's directory: clip ids are relative to it
    labels: dict[str, int]
    audio: tuple[str, ...] = ()

    def clip(self, path: str) -> tuple[str, int, str]:
        """(clip_id, label, label_name) of one of the job's files."""
        relative = os.path.relpath(path, self.directory).replace(os.sep, "/")
        label_name = _class_of(relative)
        return relative, self.labels.get(label_name, -1), label_name


def find_splits(root: str) -> dict[str, str]:
    """Split name -> directory, following the layout in the module docstring."""
    present = [s for s in SPLIT_DIRS if os.path.isdir(os.path.join(root, s))]
    if not present:
        return {SINGLE_SPLIT: root}
    return {s: os.path.join(root, s) for s in present}


def _class_of(relative: str) -> str:
    parts = relative.split("/")
    return parts[0] if len(parts) > 1 else ""


WITHOUT_AUDIO = "images stored with has_audio=False: no audio file of their basename"
AUDIO_UNREADABLE = "images stored with has_audio=False: their audio file could not be read"


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
        if not folders.scan(os.fspath(manual_dir)).files:
            raise ManualDirError(f"folder: {manual_dir} holds no files")

    def _split_generators(self, dl_manager) -> dict[str, Iterator]:
        config = self.builder_config
        media_pairs.check_image_options(config)
        root = os.fspath(dl_manager.manual_dir)
        self.check_manual_dir(root)
        split_dirs = find_splits(root)
        if root not in split_dirs.values():
            self._report_outside(root)

        files = {}
        for split, directory in split_dirs.items():
            found = folders.scan(directory)
            for path, reason in found.skipped:
                self.report.skip(path, reason)
            files[split] = found.files
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
        return self.require_splits(splits)

    def _report_outside(self, root: str) -> None:
        for name in sorted(os.listdir(root)):
            if name.startswith(".") or name in SPLIT_DIRS:
                continue
            self.report.skip(
                os.path.join(root, name), f"outside the split directories {'/, '.join(SPLIT_DIRS)}/"
            )

    def _jobs(self, directory: str, paths: list[str], labels: dict[str, int]) -> list[Job]:
        """Groups files by folder and basename into image jobs and videos."""
        config = self.builder_config
        groups, skipped = folders.group(paths)
        for path, reason in skipped:
            self.report.skip(path, reason)
        jobs = []
        for group in groups:
            jobs += [Job("video", (video,), directory, labels) for video in group.videos]
            if group.images and not group.audio and not config.keep_images_without_audio:
                for image in group.images:
                    self.report.skip(image, "no audio file with the same basename")
            elif group.images:
                jobs.append(Job("image", group.images, directory, labels, audio=group.audio))
            else:
                for audio in group.audio:
                    self.report.skip(audio, "no image with the same basename")
        return jobs

    def _job_pairs(self, job: Job) -> Outcome:
        return self._video_pairs(job) if job.kind == "video" else self._image_pair(job)

    def _image_pair(self, job: Job) -> Outcome:
        config = self.builder_config
        outcome = Outcome()
        image = folders.first_readable_image(job.paths, max_side=config.max_side or None)
        outcome.skipped += image.skipped
        if image.path is None:
            outcome.skipped += [
                (path, "no image of its basename could be read") for path in job.audio
            ]
            return outcome
        audio = folders.first_readable_audio(job.audio, max_seconds=config.max_audio_seconds)
        outcome.skipped += folders.audio_failures(image.path, audio) + audio.unused
        if audio.path is None and job.audio and not config.keep_images_without_audio:
            outcome.skipped.append((image.path, "its audio file could not be read"))
            return outcome
        outcome.notes.extend(f"{image.path}: {repair}" for repair in image.value.repairs)
        samples = audio.value if audio.path is not None else np.zeros((0,), np.int16)
        clip_id, label, label_name = job.clip(image.path)
        stored = media_pairs.frame_pair(
            outcome,
            config,
            image.value.rgb,
            samples,
            path=image.path,
            lossy_source=os.path.splitext(image.path)[1].lower() in (".jpg", ".jpeg"),
            relevant=samples.size > 0,
            label=label,
            label_name=label_name,
            clip_id=clip_id,
            second=-1,
        )
        if stored and audio.path is None:
            outcome.tallies[AUDIO_UNREADABLE if job.audio else WITHOUT_AUDIO] += 1
        return outcome

    def _video_pairs(self, job: Job) -> Outcome:
        config = self.builder_config
        outcome = Outcome()
        (path,) = job.paths
        clip_id, label, label_name = job.clip(path)
        clip = media_pairs.decode_clip(path, config, outcome, per_second=config.per_second)
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
                path=path,
                lossy_source=True,
                relevant=clip.has_audio,
                label=label,
                label_name=label_name,
                clip_id=clip_id,
                second=second,
            )
        return outcome
