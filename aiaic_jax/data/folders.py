"""How a folder of media is read, the same way by the folder builder and by `aiaic colorize`.

- `scan` lists every file below a folder in sorted order (hidden files and folders left out),
  following links to folders; a folder reached a second time (a link loop, or two links to one
  folder) is read once and the other path is reported.
- `group` sorts the files into same-basename groups of one folder (`x.jpg` with `x.wav`), and
  reports what is no media file or no regular file (a named pipe would block its reader).
- Of several same-basename files, the first by name *that decodes* is used
  (`first_readable_image`, `first_readable_audio`): a broken file never hides a good one.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

from aiaic_jax.data import media

NOT_A_REGULAR_FILE = "not a regular file (a named pipe, socket, device or broken link)"
NOT_MEDIA = "not an image, audio or video file (by its extension)"


def kind(path: str) -> str | None:
    """ "image", "audio" or "video" by the file's extension, else None."""
    extension = os.path.splitext(path)[1].lower()
    if extension in media.IMAGE_EXTENSIONS:
        return "image"
    if extension in media.AUDIO_EXTENSIONS:
        return "audio"
    if extension in media.VIDEO_EXTENSIONS:
        return "video"
    return None


@dataclasses.dataclass
class Scan:
    files: list[str]
    # Folders reached a second time through a link, and folders that cannot be listed, each
    # with the reason: (path, reason).
    repeated: list[tuple[str, str]]
    unreadable: list[tuple[str, str]]

    @property
    def skipped(self) -> list[tuple[str, str]]:
        return self.repeated + self.unreadable


def scan(directory: str) -> Scan:
    """Every file below `directory`: a folder's files (sorted), then its subfolders (sorted)."""
    found = Scan([], [], [])
    first_path: dict[str, str] = {}  # real path of each folder read -> the path it was read by
    stack = [directory]
    while stack:
        folder = stack.pop()
        real = os.path.realpath(folder)
        if real in first_path:
            found.repeated.append(
                (folder, f"a link to a folder already read as {first_path[real]} (not read twice)")
            )
            continue
        first_path[real] = folder
        try:
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError as error:
            found.unreadable.append(
                (folder, f"cannot list this folder ({error.strerror or error})")
            )
            continue
        subfolders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_folder = entry.is_dir()  # follows links
            except OSError:
                is_folder = False
            (subfolders if is_folder else found.files).append(entry.path)
        stack.extend(reversed(subfolders))
    return found


@dataclasses.dataclass(frozen=True)
class Group:
    """The media files of one folder that share a basename, each list sorted by name."""

    images: tuple[str, ...] = ()
    audio: tuple[str, ...] = ()
    videos: tuple[str, ...] = ()


def group(files: Sequence[str]) -> tuple[list[Group], list[tuple[str, str]]]:
    """Same-basename groups (sorted by folder and basename), and the files that are no media
    or no regular file, with the reason."""
    by_stem: dict[tuple[str, str], dict[str, list[str]]] = {}
    skipped = []
    for path in files:
        what = kind(path)
        if what is None:
            skipped.append((path, NOT_MEDIA))
        elif not os.path.isfile(path):
            skipped.append((path, NOT_A_REGULAR_FILE))
        else:
            stem = os.path.splitext(path)[0]
            members = by_stem.setdefault((os.path.dirname(path), stem), {})
            members.setdefault(what, []).append(path)
    groups = [
        Group(
            images=tuple(sorted(members.get("image", ()))),
            audio=tuple(sorted(members.get("audio", ()))),
            videos=tuple(sorted(members.get("video", ()))),
        )
        for _, members in sorted(by_stem.items())
    ]
    return groups, skipped


def same_basename_audio(image_path: str) -> tuple[str, ...]:
    """The audio files beside an image with its basename (any case of extension), sorted."""
    folder = os.path.dirname(image_path) or "."
    stem = os.path.splitext(os.path.basename(image_path))[0]
    try:
        names = os.listdir(folder)
    except OSError:
        return ()
    return tuple(
        sorted(
            os.path.join(os.path.dirname(image_path), name)
            for name in names
            if os.path.splitext(name)[0] == stem and kind(name) == "audio"
        )
    )


@dataclasses.dataclass
class Chosen:
    """The first readable file of same-basename candidates (`path` None when none reads),
    its decoded `value`, and the others: those that failed to decode and those not needed,
    each with the reason."""

    path: str | None = None
    value: Any = None
    failed: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    unused: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    @property
    def skipped(self) -> list[tuple[str, str]]:
        return self.failed + self.unused


def first_readable_image(paths: Sequence[str], *, max_side: int | None = None) -> Chosen:
    """Decodes the images in order until one reads (`value`: its `media.LoadedImage`)."""
    return _first_readable(paths, lambda path: media.load_image(path, max_side=max_side), "image")


def first_readable_audio(paths: Sequence[str], *, max_seconds: float | None = None) -> Chosen:
    """Decodes the audio files in order until one reads (`value`: 16 kHz mono int16)."""
    return _first_readable(
        paths, lambda path: media.load_audio(path, max_seconds=max_seconds), "audio file"
    )


def _first_readable(paths: Sequence[str], load: Callable[[str], Any], what: str) -> Chosen:
    chosen = Chosen()
    for path in paths:
        if chosen.path is not None:
            chosen.unused.append((path, f"another {what} has the same basename: {chosen.path}"))
            continue
        try:
            chosen.value = load(path)
        except media.MediaError as error:
            chosen.failed.append((error.path, error.problem))
            continue
        chosen.path = path
    return chosen


def audio_failures(image_path: str, audio: Chosen) -> list[tuple[str, str]]:
    """The audio files of an image that failed to decode; when none was readable, each reason
    says that the image is used without audio."""
    if audio.path is not None:
        return audio.failed
    return [
        (path, f"{reason}; {image_path} is used without audio") for path, reason in audio.failed
    ]
