"""Decoding the media AIAIC learns from: video frames, audio windows, images, audio files.

Everything here returns plain numpy arrays: RGB frames as uint8 `[H, W, 3]` and audio as int16
mono at `SAMPLE_RATE` (16 kHz), whatever the source's rate and channel layout. Times are in
seconds on the clip's own clock, whose zero is the first video frame.

A video is decoded once. For each whole second `k` it yields the frame whose presentation time is
nearest `k + 0.5` and the audio of `[k, k + 1)`; it also yields the frame nearest the middle of
the clip with the whole clip's audio. Frames are chosen by presentation time (stream time base,
start offset, variable frame rate), never by index.

Input that cannot be used raises `MediaError`, whose message names the file and the problem.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fractions
import math
import os
from collections.abc import Callable, Iterator, Sequence

import av
import numpy as np
from PIL import Image, ImageOps

# The rate every dataset stores audio at (`aiaic_jax.data.builders.common.SAMPLE_RATE`).
SAMPLE_RATE = 16_000

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts")

# Transparent pixels are composited on this background (white, as a page behind a cut-out).
BACKGROUND_RGB = (255, 255, 255)

# A pixel is "coloured" when max(R, G, B) - min(R, G, B) exceeds this (of 255). JPEG and video
# chroma noise on a grey picture stays well below it.
GREY_CHROMA_THRESHOLD = 12
# An image is grey when at most this fraction of its pixels is coloured: a black-and-white photo
# (or a black frame) is no colour ground truth. Toned photos (sepia) are not grey.
GREY_MAX_COLOURED_FRACTION = 0.01

# A last second shorter than this is still used, its audio padded with silence: clips are often a
# few milliseconds short of their nominal length (AAC padding, 29.97 fps rounding).
LAST_SECOND_TOLERANCE = 0.1


def _describe(error: Exception) -> str:
    """An error's message without the file name (MediaError puts it first)."""
    if isinstance(error, av.FFmpegError) and error.strerror:
        return error.strerror
    return str(error)


class MediaError(Exception):
    """A media file that cannot be used; `str(error)` names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


# ------------------------------------------------------------------------------------------------
# Video


@dataclasses.dataclass
class DecodedClip:
    """One decoded video: the chosen frames and its audio on the clip's clock.

    Attributes:
      path: the file.
      duration: seconds from the first video frame to the end of the last one.
      num_seconds: whole seconds of the clip (a last second short by at most
        `LAST_SECOND_TOLERANCE` counts).
      middle_frame: `[H, W, 3]` uint8, the frame nearest `duration / 2`.
      second_frames: per whole second `k`, `[H, W, 3]` uint8, the frame nearest `k + 0.5`; empty
        when decoded with `per_second=False`.
      audio: `[round(duration * SAMPLE_RATE)]` int16 mono, sample `i` at time `i / SAMPLE_RATE`;
        silence where the audio stream does not cover the video; empty when `has_audio` is False.
      has_audio: the file has an audio stream that decoded to at least one sample.
      audio_duration: seconds of decoded audio (before padding or trimming to `duration`).
      warnings: problems the decoder recovered from (corrupt packets, a truncated stream).
    """

    path: str
    duration: float
    num_seconds: int
    middle_frame: np.ndarray
    second_frames: list[np.ndarray]
    audio: np.ndarray
    has_audio: bool
    audio_duration: float
    warnings: list[str]

    def second_audio(self, second: int) -> np.ndarray:
        """The audio of `[second, second + 1)`: `[SAMPLE_RATE]` int16, empty without audio."""
        if not self.has_audio:
            return np.zeros((0,), np.int16)
        return _window(self.audio, second * SAMPLE_RATE, SAMPLE_RATE)

    def middle_audio(self, max_seconds: float | None = None) -> np.ndarray:
        """The whole clip's audio, or its `max_seconds` centred on the middle frame; int16."""
        if not self.has_audio:
            return np.zeros((0,), np.int16)
        if max_seconds is None or self.audio.size <= max_seconds * SAMPLE_RATE:
            return self.audio
        length = round(max_seconds * SAMPLE_RATE)
        start = round(self.duration / 2 * SAMPLE_RATE) - length // 2
        start = min(max(start, 0), self.audio.size - length)
        return self.audio[start : start + length]


def _window(audio: np.ndarray, start: int, length: int) -> np.ndarray:
    """`audio[start:start + length]`, padded with silence past the end."""
    window = audio[start : start + length]
    if window.size < length:
        window = np.concatenate([window, np.zeros((length - window.size,), audio.dtype)])
    return window


@dataclasses.dataclass
class _Timeline:
    start: float  # presentation time of the first video frame, seconds
    duration: float  # to the end of the last frame


def _video_timeline(path: str) -> _Timeline:
    """When the video starts and how long the clip lasts, from its packets (demuxed only).

    The clip lasts from the first video frame to the last one plus one typical (median) frame
    interval; packet durations are not used, since with B-frames they follow decoding order. When
    the audio runs on more than a second past the video (a still picture over sound), the clip
    lasts as long as its audio and the last frame stands for the rest.
    """
    with av.open(path) as container:
        video = container.streams.video[0]
        streams = [video, *container.streams.audio[:1]]
        video_pts: list[int] = []
        audio_end = None
        for packet in container.demux(*streams):
            if packet.pts is None:
                continue
            if packet.stream is video:
                video_pts.append(packet.pts)
            else:
                end = float((packet.pts + (packet.duration or 0)) * packet.time_base)
                audio_end = end if audio_end is None else max(audio_end, end)
        if not video_pts:
            raise MediaError(path, "the video stream holds no frames")
        pts = np.unique(np.asarray(video_pts))
        time_base = video.time_base
        interval = float(np.median(np.diff(pts))) * time_base if pts.size > 1 else 0.0
        if not interval and video.average_rate:
            interval = 1 / float(video.average_rate)
        start = float(pts[0] * time_base)
        duration = float((pts[-1] - pts[0]) * time_base) + float(interval)
        if audio_end is not None and audio_end - start > duration + 1:
            duration = audio_end - start
        return _Timeline(start=start, duration=duration)


class _NearestFrames:
    """For sorted target times, keeps the decoded frame nearest each (ties go to the earlier).

    Frames arrive in presentation order, so the nearest frame to a target is the last one before
    it or the first one at or after it; only the previous frame is held.
    """

    def __init__(self, targets: Sequence[float], convert: Callable[[av.VideoFrame], np.ndarray]):
        self.targets = list(targets)
        self.chosen: list[np.ndarray | None] = [None] * len(self.targets)
        self._convert = convert
        self._next = 0
        self._previous = None  # (time, frame, converted array or None)

    def _array(self, item) -> np.ndarray:
        if item[2] is None:
            item[2] = self._convert(item[1])
        return item[2]

    def offer(self, time: float, frame) -> None:
        current = [time, frame, None]
        while self._next < len(self.targets) and self.targets[self._next] <= time:
            target = self.targets[self._next]
            previous = self._previous
            if previous is not None and target - previous[0] <= time - target:
                self.chosen[self._next] = self._array(previous)
            else:
                self.chosen[self._next] = self._array(current)
            self._next += 1
        self._previous = current

    def finish(self) -> None:
        # Targets after the last frame get the last frame.
        while self._next < len(self.targets) and self._previous is not None:
            self.chosen[self._next] = self._array(self._previous)
            self._next += 1


def _frame_converter(max_side: int | None) -> Callable[[av.VideoFrame], np.ndarray]:
    """VideoFrame -> `[H, W, 3]` uint8 RGB as displayed (the stream's display rotation
    applied), downscaled so that its longer side is at most max_side."""

    def convert(frame: av.VideoFrame) -> np.ndarray:
        width, height = frame.width, frame.height
        scale = 1.0 if not max_side else min(1.0, max_side / max(width, height))
        if scale < 1.0:
            width, height = max(1, round(width * scale)), max(1, round(height * scale))
            rgb = frame.to_ndarray(width=width, height=height, format="rgb24", interpolation="AREA")
        else:
            rgb = frame.to_ndarray(format="rgb24")
        # Phones store portrait video as landscape frames plus a display rotation
        # (counter-clockwise degrees, a multiple of 90 in practice).
        quarter_turns = round(frame.rotation / 90) % 4
        return np.ascontiguousarray(np.rot90(rgb, quarter_turns)) if quarter_turns else rgb

    return convert


_FLOAT_SAMPLE_FORMATS = ("flt", "fltp", "dbl", "dblp")


class _AudioTrack:
    """Resamples decoded audio frames to 16 kHz mono int16 and remembers where they start."""

    def __init__(self):
        self.resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        self.chunks: list[np.ndarray] = []
        self.start: float | None = None  # presentation time of the first sample, seconds
        self.nonfinite = 0  # NaN or infinite float samples, set to silence

    def add(self, frame: av.AudioFrame | None) -> None:
        if frame is not None and self.start is None and frame.pts is not None:
            self.start = float(frame.pts * frame.time_base)
        if frame is not None and frame.format.name in _FLOAT_SAMPLE_FORMATS:
            frame = self._finite(frame)
        for resampled in self.resampler.resample(frame):
            self.chunks.append(resampled.to_ndarray().reshape(-1))

    def _finite(self, frame: av.AudioFrame) -> av.AudioFrame:
        """Float samples that are NaN or infinite (which the resampler would turn into
        full-scale DC) become silence; `nonfinite` counts them."""
        samples = frame.to_ndarray()
        bad = ~np.isfinite(samples)
        if not bad.any():
            return frame
        self.nonfinite += int(bad.sum())
        repaired = av.AudioFrame.from_ndarray(
            np.where(bad, 0, samples).astype(samples.dtype),
            format=frame.format.name,
            layout=frame.layout.name,
        )
        repaired.sample_rate, repaired.pts, repaired.time_base = (
            frame.sample_rate,
            frame.pts,
            frame.time_base,
        )
        return repaired

    def samples(self) -> np.ndarray:
        self.add(None)  # flush the resampler's tail
        if not self.chunks:
            return np.zeros((0,), np.int16)
        return np.concatenate(self.chunks).astype(np.int16, copy=False)


def decode_video(
    path: str | os.PathLike, *, per_second: bool = True, max_side: int | None = None
) -> DecodedClip:
    """Decodes a video once into its middle frame, per-second frames and 16 kHz mono audio.

    Args:
      path: any container and codecs FFmpeg reads.
      per_second: also keep the frame nearest the middle of each whole second.
      max_side: downscale frames so that their longer side is at most this (None: keep).

    Returns:
      A `DecodedClip`. A file without an audio stream gives `has_audio=False` and empty audio.

    Raises:
      MediaError: the file does not open, has no video stream, or no frame decodes.
    """
    path = os.fspath(path)
    try:
        timeline = _video_timeline(path)
        return _decode(path, timeline, per_second, max_side)
    except MediaError:
        raise
    except IndexError:
        raise MediaError(path, "no video stream") from None
    except (av.FFmpegError, OSError, ValueError) as error:
        raise MediaError(path, f"cannot decode ({_describe(error)})") from None


def _decode(path: str, timeline: _Timeline, per_second: bool, max_side: int | None) -> DecodedClip:
    num_seconds = math.floor(timeline.duration + LAST_SECOND_TOLERANCE)
    second_targets = [k + 0.5 for k in range(num_seconds)] if per_second else []
    middle = timeline.duration / 2
    targets = sorted([*second_targets, middle])
    frames = _NearestFrames(targets, _frame_converter(max_side))
    warnings: list[str] = []
    decode_errors = 0
    last_time = None

    with av.open(path) as container:
        video = container.streams.video[0]
        video.thread_type = "AUTO"
        audio_stream = container.streams.audio[0] if container.streams.audio else None
        track = _AudioTrack() if audio_stream is not None else None
        streams = [video] if audio_stream is None else [video, audio_stream]
        fallback_interval = 1 / float(video.average_rate) if video.average_rate else 0.04
        declared_duration = container.duration / av.time_base if container.duration else None

        for packet in container.demux(*streams):
            try:
                decoded = packet.decode()
            except av.FFmpegError:
                decode_errors += 1
                continue
            for frame in decoded:
                if packet.stream is video:
                    if frame.pts is not None:
                        time = float(frame.pts * frame.time_base) - timeline.start
                    elif last_time is not None:
                        time = last_time + fallback_interval
                    else:
                        time = 0.0
                    frames.offer(time, frame)
                    last_time = time
                else:
                    track.add(frame)
        frames.finish()

    if last_time is None:
        raise MediaError(path, "no video frame could be decoded")
    if decode_errors:
        warnings.append(f"{decode_errors} packets failed to decode and were left out")
    if last_time < timeline.duration - 1:
        warnings.append(
            f"frames stop at {last_time:.2f} s of the stream's {timeline.duration:.2f} s"
        )
    if declared_duration is not None and timeline.duration < declared_duration - 1:
        warnings.append(
            f"holds {timeline.duration:.2f} s of video of the {declared_duration:.2f} s its "
            "header declares (truncated?)"
        )

    audio, audio_duration = np.zeros((0,), np.int16), 0.0
    if track is not None:
        samples = track.samples()
        if track.nonfinite:
            warnings.append(f"{track.nonfinite} NaN or infinite audio samples set to silence")
        audio_duration = samples.size / SAMPLE_RATE
        if samples.size:
            audio = _align(samples, track.start, timeline)

    chosen = dict(zip(targets, frames.chosen))
    return DecodedClip(
        path=path,
        duration=timeline.duration,
        num_seconds=num_seconds,
        middle_frame=chosen[middle],
        second_frames=[chosen[t] for t in second_targets],
        audio=audio,
        has_audio=audio.size > 0,
        audio_duration=audio_duration,
        warnings=warnings,
    )


def _align(samples: np.ndarray, start: float | None, timeline: _Timeline) -> np.ndarray:
    """Places decoded audio on the clip clock: sample 0 at the first video frame."""
    offset = round(
        ((start if start is not None else timeline.start) - timeline.start) * SAMPLE_RATE
    )
    if offset > 0:
        samples = np.concatenate([np.zeros((offset,), np.int16), samples])
    elif offset < 0:
        samples = samples[-offset:]
    return _window(samples, 0, round(timeline.duration * SAMPLE_RATE))


# ------------------------------------------------------------------------------------------------
# Audio files


def video_frames(path: str | os.PathLike) -> Iterator[tuple[np.ndarray, float | None]]:
    """Every frame of the first video stream as displayed ([H, W, 3] uint8, the stream's display
    rotation applied) with its presentation time in seconds (None when unknown)."""
    try:
        with av.open(os.fspath(path)) as container:
            if not container.streams.video:
                raise MediaError(os.fspath(path), "no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for packet in container.demux(stream):
                try:
                    decoded = packet.decode()
                except av.FFmpegError:
                    continue  # a damaged packet: its frames are lost
                for frame in decoded:
                    rgb = frame.to_ndarray(format="rgb24")
                    quarter_turns = round(frame.rotation / 90) % 4
                    if quarter_turns:
                        rgb = np.ascontiguousarray(np.rot90(rgb, quarter_turns))
                    yield rgb, None if frame.time is None else float(frame.time)
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError) as error:
        raise MediaError(os.fspath(path), f"cannot decode ({error})") from None


def load_audio(path: str | os.PathLike, *, max_seconds: float | None = None) -> np.ndarray:
    """Decodes an audio file (wav, flac, ogg, mp3, or a video's sound) to 16 kHz mono int16.

    Args:
      path: the file; its first audio stream is used, at any rate and channel layout.
      max_seconds: stop after this many seconds (None: the whole file).

    Returns:
      `[N]` int16. Silence is valid audio and is returned as zeros.

    Raises:
      MediaError: the file does not open, has no audio stream, or holds no samples.
    """
    path = os.fspath(path)
    limit = None if max_seconds is None else round(max_seconds * SAMPLE_RATE)
    try:
        with av.open(path) as container:
            if not container.streams.audio:
                raise MediaError(path, "no audio stream")
            track = _AudioTrack()
            decoded = 0
            for frame in container.decode(container.streams.audio[0]):
                track.add(frame)
                decoded += frame.samples * SAMPLE_RATE / frame.sample_rate
                if limit is not None and decoded >= limit + SAMPLE_RATE:
                    break
            samples = track.samples()
            if track.nonfinite:
                raise MediaError(
                    path,
                    f"{track.nonfinite} of its audio samples are NaN or infinite (refused: a "
                    "damaged or wrongly encoded float file)",
                )
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError) as error:
        raise MediaError(path, f"cannot decode audio ({_describe(error)})") from None
    if samples.size == 0:
        raise MediaError(path, "the audio stream holds no samples")
    return samples if limit is None else samples[:limit]


# ------------------------------------------------------------------------------------------------
# Images


@dataclasses.dataclass
class LoadedImage:
    """An image as `[H, W, 3]` uint8 sRGB, and what had to be repaired to get there."""

    rgb: np.ndarray
    repairs: list[str]


def load_image(path: str | os.PathLike, *, max_side: int | None = None) -> LoadedImage:
    """Reads an image file as 8-bit RGB.

    Transparency (RGBA, LA, palette with a transparent entry) is composited on `BACKGROUND_RGB`;
    16-bit images are reduced to 8 bits; palette, grey and CMYK images are converted to RGB; the
    EXIF orientation is applied. The pixel values are taken as sRGB (ICC profiles are ignored).

    Args:
      path: jpg, jpeg, png or webp (any format Pillow reads).
      max_side: downscale (Lanczos) so that the longer side is at most this (None: keep).

    Raises:
      MediaError: the file is not a readable image (unknown format, truncated data).
    """
    path = os.fspath(path)
    repairs: list[str] = []
    try:
        with Image.open(path) as image:
            if max_side and image.format == "JPEG":
                # Decode a huge JPEG at a reduced DCT scale (still at least max_side).
                image.draft("RGB", (max_side, max_side))
            image.load()
            image = ImageOps.exif_transpose(image)
            image = _to_rgb(image, repairs)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise MediaError(path, f"not a readable image ({error})") from None
    if max_side and max(image.size) > max_side:
        scale = max_side / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return LoadedImage(rgb=np.asarray(image, dtype=np.uint8), repairs=repairs)


def _to_rgb(image: Image.Image, repairs: list[str]) -> Image.Image:
    mode = image.mode
    if mode.startswith("I") or mode == "F":
        # 16-bit (or 32-bit) grey: Pillow's own conversion to 8 bits saturates; scale instead.
        values = np.asarray(image).astype(np.float64)
        peak = 65535.0 if values.max(initial=0) > 255 else 255.0
        grey = np.clip(np.round(values * 255.0 / peak), 0, 255).astype(np.uint8)
        if peak > 255:
            repairs.append("16-bit grey reduced to 8 bits")
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "P":
        mode = "RGBA" if "transparency" in image.info else "RGB"
        image = image.convert(mode)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        alpha = np.asarray(rgba)[..., 3]
        if alpha.min() < 255:
            repairs.append(f"transparent pixels composited on RGB {BACKGROUND_RGB}")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND_RGB, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if mode == "RGB" else image.convert("RGB")


def image_problem(rgb: np.ndarray, *, min_side: int = 0, reject_grey: bool = True) -> str | None:
    """Why an RGB image is no usable colour ground truth, or None when it is.

    Args:
      rgb: `[H, W, 3]` uint8.
      min_side: images whose shorter side is below this are too small.
      reject_grey: reject grey images (see `is_grey`).
    """
    height, width = rgb.shape[:2]
    if min(height, width) < min_side:
        return f"image is {width}x{height}, below the minimum side of {min_side} px"
    if reject_grey and is_grey(rgb):
        return (
            "grey image (no colour ground truth): at most "
            f"{GREY_MAX_COLOURED_FRACTION:.0%} of pixels have max-min RGB above "
            f"{GREY_CHROMA_THRESHOLD}"
        )
    return None


def is_grey(rgb: np.ndarray) -> bool:
    """True when at most `GREY_MAX_COLOURED_FRACTION` of pixels have a chroma (max(R, G, B) -
    min(R, G, B)) above `GREY_CHROMA_THRESHOLD`. `rgb`: `[H, W, 3]` uint8."""
    # A strided view of at most ~256k pixels decides as well as all of them.
    step = max(1, int(math.sqrt(rgb.shape[0] * rgb.shape[1] / 262_144)))
    view = rgb[::step, ::step].astype(np.int16)
    chroma = view.max(axis=-1) - view.min(axis=-1)
    return float(np.mean(chroma > GREY_CHROMA_THRESHOLD)) <= GREY_MAX_COLOURED_FRACTION


# ------------------------------------------------------------------------------------------------
# Writing video


@contextlib.contextmanager
def written_whole(path: str) -> Iterator[str]:
    """A temporary name beside `path` (same extension, so the format is the same) to write to;
    renamed to `path` when the block ends without an error, removed when it raises. An output
    that exists is therefore complete: an interrupted run leaves none (or a hidden `.partial`
    file that the next run replaces), never a truncated file that a rerun would keep."""
    directory, name = os.path.split(os.path.abspath(path))
    stem, extension = os.path.splitext(name)
    temporary = os.path.join(directory, f".{stem}.partial-{os.getpid()}{extension}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if os.path.lexists(temporary):
            os.remove(temporary)


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray | Sequence[np.ndarray],
    audio: np.ndarray | None,
    fps: float,
    sample_rate: int = SAMPLE_RATE,
    *,
    frame_times: Sequence[float] | None = None,
    crf: int = 18,
    audio_bitrate: int = 128_000,
    faststart: bool = False,
    rotation: int = 0,
) -> None:
    """Writes frames and sound as H.264 (yuv420p) + AAC, e.g. an `.mp4` or `.mkv`.

    Args:
      path: output file; the container follows the extension.
      frames: `[T, H, W, 3]` uint8 RGB. H.264 4:2:0 needs even sides: an odd height or width is
        padded by repeating the last row or column.
      audio: `[N]` (mono) or `[N, C]` int16 at `sample_rate`; C of 1, 2 or 6 (5.1). None or
        empty: no audio stream.
      fps: frame rate; frame `i` is shown at `i / fps` unless `frame_times` is given.
      sample_rate: audio sample rate in Hz.
      frame_times: presentation time of each frame in seconds, increasing (variable frame rate).
      crf: x264 constant rate factor (lower is better quality; 18 is visually lossless).
      audio_bitrate: AAC bit rate in bit/s.
      faststart: MP4/MOV only: put the index first, so that players start before the download
        ends (and a cut-off file still plays up to the cut).
      rotation: display rotation stored in the file, counter-clockwise degrees (players and
        `decode_video` turn the frames by it).
    """
    path = os.fspath(path)
    frames = [np.asarray(f, np.uint8) for f in frames]
    if not frames:
        raise ValueError(f"{path}: no frames to write")
    height, width = frames[0].shape[:2]
    padded_height, padded_width = height + height % 2, width + width % 2
    rate = fractions.Fraction(fps).limit_denominator(1001)
    # A fine time base when frames have their own times; 1/fps otherwise.
    time_base = fractions.Fraction(1, 90_000) if frame_times is not None else 1 / rate

    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(path, "w", options=options) as container:
        video = container.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = padded_width, padded_height, "yuv420p"
        video.time_base = time_base
        video.codec_context.time_base = time_base
        video.options = {"crf": str(crf)}
        if rotation:
            video.set_display_rotation(rotation)
        audio_stream, audio = _add_audio_stream(container, audio, sample_rate, audio_bitrate)

        for index, rgb in enumerate(frames):
            if rgb.shape[:2] != (height, width):
                raise ValueError(f"{path}: frame {index} is {rgb.shape}, not {(height, width)}")
            if (padded_height, padded_width) != (height, width):
                rgb = np.pad(
                    rgb, ((0, padded_height - height), (0, padded_width - width), (0, 0)), "edge"
                )
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[..., :3]), format="rgb24")
            if frame_times is None:
                frame.pts, frame.duration = index, 1
            else:
                # Each frame lasts until the next one; the last one lasts 1/fps.
                end = (
                    frame_times[index + 1]
                    if index + 1 < len(frames)
                    else frame_times[-1] + 1 / rate
                )
                frame.pts = round(frame_times[index] / time_base)
                frame.duration = round(end / time_base) - frame.pts
            frame.time_base = time_base
            container.mux(video.encode(frame))
        container.mux(video.encode(None))

        if audio_stream is not None:
            layout = audio_stream.layout.name
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(audio.reshape(1, -1)), format="s16", layout=layout
            )
            frame.sample_rate = sample_rate
            frame.pts = 0
            frame.time_base = fractions.Fraction(1, sample_rate)
            container.mux(audio_stream.encode(frame))
            container.mux(audio_stream.encode(None))


_LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1"}


def _add_audio_stream(container, audio, sample_rate: int, bitrate: int):
    if audio is None or np.asarray(audio).size == 0:
        return None, None
    audio = np.asarray(audio)
    if audio.dtype != np.int16:
        raise ValueError(f"audio must be int16, got {audio.dtype}")
    if audio.ndim == 1:
        audio = audio[:, None]
    channels = audio.shape[1]
    if channels not in _LAYOUTS:
        raise ValueError(f"audio with {channels} channels; expected one of {sorted(_LAYOUTS)}")
    stream = container.add_stream("aac", rate=sample_rate, layout=_LAYOUTS[channels])
    stream.bit_rate = bitrate
    # Interleaved samples [N * C], as the packed s16 format stores them.
    return stream, np.ascontiguousarray(audio)
