"""A corpus of broken and unusual media, written at test time, with what each file must become.

`write_corpus(root)` writes a folder (one split, no class folders) holding good files in every
format the project reads, broken ones (truncated, empty, renamed, a decompression bomb, NaN
audio, a named pipe, a dangling link), same-basename collisions, unicode names and folder links
(one into another folder, one looping back, a second link to the same folder). Every entry says
what the folder builder and `aiaic colorize` must do with it: use it (an image or video with
or without sound) or skip it with a reason. `judge_build` and `judge_colorize` compare what a
run did with that, file by file, and return the differences, each in one of the categories

- "lost": a file that should be used was not;
- "wrong": a file was used, but not as it should be (sound, size), or was used although it
  should have been skipped;
- "unreported": a file that should be skipped was skipped without its reason.

tests/test_builders.py and tests/test_cli.py assert that there are none; bench/broken_media.py
runs the two commands as a user would (separate processes, with a time limit) and counts
crashes, hangs and the three categories.
"""

from __future__ import annotations

import dataclasses
import os
import struct
import zlib

import av
import numpy as np
import scipy.io.wavfile
from PIL import Image

from aiaic_jax import cli
from aiaic_jax.data import folders, media
from tests.media_factory import (
    audio_file,
    colour_clip,
    colourful_image,
    save_image,
    solid_image,
    text_file,
    tone,
    truncated_copy,
)


@dataclasses.dataclass(frozen=True)
class Expect:
    """What one tool must do with a file (or a folder link)."""

    used: bool
    reason: str = ""  # skipped: a part of the reason
    has_audio: bool | None = None  # used image or video: whether its sound is used
    warning: str = ""  # used: a part of a note (builder) or warning (colorize) naming the file


USED = Expect(True)
WITH_SOUND = Expect(True, has_audio=True)
WITHOUT_SOUND = Expect(True, has_audio=False)


@dataclasses.dataclass(frozen=True)
class Entry:
    path: str  # relative to the corpus root, '/' separators
    builder: Expect | None  # None: not an input of that tool (neither used nor reported)
    colorize: Expect | None
    size: tuple[int, int] | None = None  # a used image as displayed: (width, height)


def _both(path: str, expect: Expect, size: tuple[int, int] | None = None) -> Entry:
    return Entry(path, expect, expect, size)


SIZE = (64, 48)


def _png_bomb(path: str, side: int = 40_000) -> None:
    """A PNG whose header declares side x side pixels (far over Pillow's limit) on a few bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)))
        f.write(chunk(b"IEND", b""))


def write_corpus(root: str | os.PathLike) -> list[Entry]:
    """Writes the corpus into `root` (created) and a sibling folder `root`_elsewhere that a
    link points to; returns the entries."""
    root = os.fspath(root)
    os.makedirs(root)
    entries: list[Entry] = []

    def at(name: str) -> str:
        return os.path.join(root, name)

    def image(name: str, seed: int, size: tuple[int, int] = SIZE, **options) -> None:
        save_image(at(name), colourful_image(size, seed=seed), **options)

    # Images in every mode Pillow reads, each with or without sound.
    image("rgb.png", 0)
    audio_file(at("rgb.wav"), tone(1, 16_000)[:, 0], 16_000)
    entries += [_both("rgb.png", WITH_SOUND, SIZE), _both("rgb.wav", USED)]

    rgba = np.dstack([colourful_image(SIZE, seed=1), np.full(SIZE[::-1], 128, np.uint8)])
    save_image(at("rgba.png"), rgba)
    composited = Expect(True, has_audio=False, warning="composited")
    entries.append(Entry("rgba.png", composited, WITHOUT_SOUND, SIZE))

    Image.fromarray(colourful_image(SIZE, seed=2)).convert("CMYK").save(at("cmyk.jpg"))
    entries.append(_both("cmyk.jpg", WITHOUT_SOUND, SIZE))

    Image.fromarray(colourful_image(SIZE, seed=3)).quantize(32).save(at("palette.png"))
    entries.append(_both("palette.png", WITHOUT_SOUND, SIZE))

    deep = colourful_image(SIZE, seed=4).astype(np.uint16) * 257  # 16 bits per channel
    with av.open(at("deep.png"), "w", format="image2") as container:
        stream = container.add_stream("png", rate=1)
        stream.width, stream.height, stream.pix_fmt = *SIZE, "rgb48be"
        container.mux(stream.encode(av.VideoFrame.from_ndarray(deep, format="rgb48le")))
        container.mux(stream.encode(None))
    entries.append(_both("deep.png", WITHOUT_SOUND, SIZE))

    exif = Image.Exif()
    exif[0x0112] = 6  # displayed turned a quarter clockwise
    image("turned.jpg", 4, exif=exif.tobytes(), quality=95)
    entries.append(_both("turned.jpg", WITHOUT_SOUND, SIZE[::-1]))

    save_image(at("tiny.png"), colourful_image((8, 8), seed=5))
    entries.append(
        Entry("tiny.png", Expect(False, "below the minimum side"), WITHOUT_SOUND, (8, 8))
    )

    save_image(at("grey.jpg"), solid_image((90, 90, 90)))
    entries.append(Entry("grey.jpg", Expect(False, "grey"), WITHOUT_SOUND, SIZE))

    # Broken images.
    _png_bomb(at("bomb.png"))
    image("cut.jpg", 6, size=(256, 192), quality=95)
    truncated_copy(at("cut.jpg"), at("cut_short.jpg"), keep=0.3)
    os.remove(at("cut.jpg"))
    text_file(at("text.png"))
    open(at("empty.png"), "wb").close()
    entries += [
        _both("bomb.png", Expect(False, "not a readable image")),
        _both("cut_short.jpg", Expect(False, "not a readable image")),
        _both("text.png", Expect(False, "not a readable image")),
        _both("empty.png", Expect(False, "not a readable image")),
    ]

    # Same basenames: a broken image beside a good one, broken sound beside good sound.
    text_file(at("dup.jpeg"))
    image("dup.png", 7)
    audio_file(at("dup.wav"), tone(1, 16_000)[:, 0], 16_000)
    entries += [
        _both("dup.jpeg", Expect(False, "not a readable image")),
        _both("dup.png", WITH_SOUND, SIZE),
        _both("dup.wav", USED),
    ]
    image("mute.png", 8)
    open(at("mute.wav"), "wb").close()
    entries += [
        _both("mute.png", WITHOUT_SOUND, SIZE),
        _both("mute.wav", Expect(False, "mute.png is used without audio")),
    ]
    image("two.png", 9)
    with open(at("two.flac"), "wb") as f:
        f.write(b"fLaC" + bytes(range(256)) * 4)
    audio_file(at("two.ogg"), tone(1, 24_000)[:, 0], 24_000)
    entries += [
        _both("two.png", WITH_SOUND, SIZE),
        _both("two.flac", Expect(False, "cannot decode")),
        _both("two.ogg", USED),
    ]

    # Sound at every common rate and channel count, in every container; sound that lies.
    for name, rate, channels in (
        ("r8k.wav", 8_000, 1),
        ("r11k.flac", 11_025, 2),
        ("r22k.mp3", 22_050, 2),
        ("r44k.wav", 44_100, 2),
        ("r48k.ogg", 48_000, 2),
    ):
        stem = os.path.splitext(name)[0]
        image(f"{stem}.png", 10 + rate % 7)
        audio_file(at(name), tone(1, rate, channels), rate)
        entries += [_both(f"{stem}.png", WITH_SOUND, SIZE), _both(name, USED)]
    image("mp3named.png", 20)
    audio_file(at("mp3named.wav"), tone(1, 22_050)[:, 0], 22_050, codec="libmp3lame")
    entries += [_both("mp3named.png", WITH_SOUND, SIZE), _both("mp3named.wav", USED)]
    image("nan.png", 21)
    samples = tone(1, 16_000)[:, 0].astype(np.float32) / 32768
    samples[100:200] = np.nan
    samples[300] = np.inf
    scipy.io.wavfile.write(at("nan.wav"), 16_000, samples)
    entries += [
        _both("nan.png", WITHOUT_SOUND, SIZE),
        _both("nan.wav", Expect(False, "nan.png is used without audio")),
    ]

    # Names and things that are no media files.
    image("façade 夜.png", 22)
    audio_file(at("façade 夜.wav"), tone(1, 16_000)[:, 0], 16_000)
    entries += [_both("façade 夜.png", WITH_SOUND, SIZE), _both("façade 夜.wav", USED)]
    audio_file(at("orphan.wav"), tone(1, 16_000)[:, 0], 16_000)
    entries.append(Entry("orphan.wav", Expect(False, "no image with the same basename"), None))
    text_file(at("notes.txt"))
    entries.append(_both("notes.txt", Expect(False, "not an image, audio or video")))
    os.symlink(at("gone.png"), at("dangling.png"))
    entries.append(_both("dangling.png", Expect(False, "not a regular file")))
    if hasattr(os, "mkfifo"):
        os.mkfifo(at("pipe.png"))
        entries.append(_both("pipe.png", Expect(False, "not a regular file")))

    # Videos.
    colour_clip(at("clip.mp4"), sample_rate=44_100, channels=2)
    colour_clip(at("silent.mkv"), sample_rate=None)
    colour_clip(at("surround.mov"), sample_rate=48_000, channels=6)
    entries += [
        _both("clip.mp4", WITH_SOUND),
        _both("silent.mkv", WITHOUT_SOUND),
        _both("surround.mov", WITH_SOUND),
    ]
    colour_clip(at("whole.mp4"))
    truncated_copy(at("whole.mp4"), at("truncated.mp4"))
    os.remove(at("whole.mp4"))
    open(at("empty.mp4"), "wb").close()
    entries += [
        _both("truncated.mp4", Expect(False, "cannot decode")),
        _both("empty.mp4", Expect(False, "cannot decode")),
    ]
    frames = [colourful_image(SIZE, seed=30 + i // 10) for i in range(40)]
    media.write_video(at("whole.mp4"), frames, tone(4, 16_000), 10, 16_000, faststart=True)
    truncated_copy(at("whole.mp4"), at("cut_off.mp4"), keep=0.5)
    os.remove(at("whole.mp4"))
    entries.append(
        Entry(
            "cut_off.mp4",
            Expect(True, has_audio=True, warning="truncated"),
            Expect(True, has_audio=True, warning="decoding stopped at"),
        )
    )

    # Folder links: one to a folder outside, a second one to it, one looping back.
    elsewhere = root + "_elsewhere"
    os.makedirs(elsewhere)
    save_image(os.path.join(elsewhere, "far.png"), colourful_image(SIZE, seed=40))
    audio_file(os.path.join(elsewhere, "far.wav"), tone(1, 16_000)[:, 0], 16_000)
    os.symlink(elsewhere, at("linked"))
    os.symlink(elsewhere, at("linked_again"))
    os.makedirs(at("sub"))
    os.symlink(root, at("sub/back"))
    entries += [
        _both("linked/far.png", WITH_SOUND, SIZE),
        _both("linked/far.wav", USED),
        _both("linked_again", Expect(False, "already read as")),
        _both("sub/back", Expect(False, "already read as")),
    ]
    return entries


@dataclasses.dataclass(frozen=True)
class Difference:
    category: str  # "lost", "wrong" or "unreported"
    path: str
    what: str

    def __str__(self) -> str:
        return f"{self.category}: {self.path}: {self.what}"


def _is_picture(path: str) -> bool:
    return folders.kind(path) in ("image", "video")


def judge_build(
    entries: list[Entry],
    root: str,
    stored: dict[str, bool],
    skipped: list[tuple[str, str]],
    notes: list[str],
) -> list[Difference]:
    """`stored`: clip id -> has_audio of each stored whole-clip pair; `skipped`: the report's
    (path, reason); `notes`: its notes."""
    differences = []
    expected_ids = set()
    for entry in entries:
        expect = entry.builder
        if expect is None:
            continue
        full = os.path.join(root, entry.path)
        reasons = [reason for path, reason in skipped if path == full]
        if expect.used:
            if _is_picture(entry.path):
                expected_ids.add(entry.path)
                if entry.path not in stored:
                    what = f"skipped: {reasons}" if reasons else "neither stored nor reported"
                    differences.append(Difference("lost", entry.path, what))
                elif expect.has_audio is not None and stored[entry.path] != expect.has_audio:
                    what = f"stored with has_audio={stored[entry.path]}"
                    differences.append(Difference("wrong", entry.path, what))
            elif reasons:
                differences.append(Difference("lost", entry.path, f"skipped: {reasons}"))
            if expect.warning and not any(
                full in note and expect.warning in note for note in notes
            ):
                what = f"no note with {expect.warning!r}"
                differences.append(Difference("unreported", entry.path, what))
        else:
            if entry.path in stored:
                differences.append(Difference("wrong", entry.path, "stored; should be skipped"))
            if not any(expect.reason in reason for reason in reasons):
                what = f"expected a skip with {expect.reason!r}, got {reasons or 'nothing'}"
                differences.append(Difference("unreported", entry.path, what))
    for clip_id in sorted(set(stored) - expected_ids):
        differences.append(Difference("wrong", clip_id, "stored; not expected"))
    return differences


def colorize_output(output_root: str, path: str) -> str:
    """Where colorize writes the output of the corpus file `path` (relative)."""
    output = os.path.join(output_root, path)
    return cli._video_output(output) if folders.kind(path) == "video" else output


def judge_colorize(
    entries: list[Entry], root: str, output_root: str, printed: str
) -> list[Difference]:
    """`printed`: what the command wrote to stdout and stderr."""
    lines = printed.splitlines()
    differences = []
    for entry in entries:
        expect = entry.colorize
        if expect is None:
            continue
        full = os.path.join(root, entry.path)
        skips = [line for line in lines if line.startswith(f"skipped {full}: ")]
        output = colorize_output(output_root, entry.path)
        if expect.used:
            if skips:
                differences.append(Difference("lost", entry.path, f"skipped: {skips}"))
            if _is_picture(entry.path):
                done = [line for line in lines if line.startswith(f"{full} -> {output}")]
                if not os.path.isfile(output) or not done:
                    differences.append(Difference("lost", entry.path, "no output"))
                    continue
                if expect.has_audio is not None and expect.has_audio == any(
                    "no audio" in line for line in done
                ):
                    differences.append(Difference("wrong", entry.path, f"sound: {done}"))
                if entry.size is not None:
                    with Image.open(output) as written:
                        if written.size != entry.size:
                            what = f"output {written.size}, input shows {entry.size}"
                            differences.append(Difference("wrong", entry.path, what))
            if expect.warning and not any(
                full in line and expect.warning in line for line in lines
            ):
                what = f"no warning with {expect.warning!r}"
                differences.append(Difference("unreported", entry.path, what))
        else:
            if _is_picture(entry.path) and os.path.exists(output):
                differences.append(Difference("wrong", entry.path, "written; should be skipped"))
            if not any(expect.reason in line for line in skips):
                what = f"expected a skip with {expect.reason!r}, got {skips or 'nothing'}"
                differences.append(Difference("unreported", entry.path, what))
    return differences
