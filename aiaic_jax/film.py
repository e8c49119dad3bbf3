"""Colorizing a film with its soundtrack: streamed, heard once per sound window, resumable.

    from aiaic_jax.film import colorize_film
    summary = colorize_film(colorizer, "old_film.mp4", "old_film_colour.mp4")

The film is decoded frame by frame and colorized `colorizer.batch_size` frames per model call;
nothing holds more than a batch of frames and a few seconds of sound, whatever the film's
length.

Sound. Time is cut into windows of `hop_seconds` (default 1 s) from the first frame: the frames
shown in [k h, (k + 1) h) all hear window k, the `window_seconds` of sound (default: the length
the model was trained with) centred on (k + 1/2) h, moved inside the soundtrack at its ends.
Each window's spectrogram, guidance code and RNet audio embedding are computed once
(`Colorizer.hear`) and shared by its frames; RNet's image side and the backbone run per frame.
A film without an audio stream (or whose sound cannot be decoded at all) is coloured by the
visual backbone alone (r = 0), with one warning.

Shots. A cut is where the grey-level histograms of consecutive frames differ by more than
`cut_threshold` (total variation distance; default 0.12: over the first 20 films of the
synthetic world, `synthetic.render_film`, consecutive frames within a pan or zoom differ by at
most 0.094 and cuts by 0.153 or more; in bench/film.py's films pans stay below 0.015 and cuts
reach 0.2-0.3; no real film was at hand to tune it on). Within a shot, r and the guidance code
are averaged over time (`Shots`, `smoothing_seconds`), so that the colour does not jump at every
sound window, and they restart at each cut; `steady_seconds` also steadies the colour itself
(`Shots`). `OUTPUT.shots.json` lists each shot: its time span, frames, mean r
(RNet's, and the smoothed r used) and the sound windows it heard.

Output. H.264 (x264, crf 18) with the original sound re-encoded as AAC at its own rate and
channels, in the container the output's extension names. The film is encoded in segments of
about `segment_seconds` (whole batches), each a finished file in a hidden folder beside the
output (`.NAME.parts/`); when the last is done they are joined without re-encoding into a
hidden temporary file, which is renamed to the output. A run that is interrupted (killed,
power lost) leaves no output, and the next run with the same film, model and options resumes
after the last finished segment; its output is the same as an uninterrupted run's. A different
film, model or option starts over.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fractions
import hashlib
import itertools
import json
import math
import os
import shutil
import sys
from collections.abc import Iterator

import av
import jax
import numpy as np

from aiaic_jax.data import media
from aiaic_jax.data.media import MediaError, written_whole
from aiaic_jax.inference import Box, Colorizer, Guide, Heard, Settle

SAMPLE_RATE = media.SAMPLE_RATE
HOP_SECONDS = 1.0
SEGMENT_SECONDS = 60.0
CUT_THRESHOLD = 0.12  # of `histogram_distance` between consecutive frames (docs: Shots)
SMOOTHING_SECONDS = 1.0
HISTOGRAM_BINS = 32
CRF = 18
_TIME_BASE = fractions.Fraction(1, 90_000)  # of every written video stream
_LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1"}  # other layouts are mixed down to stereo
_FORMAT_VERSION = 1  # of the parts folder; another version starts over


@dataclasses.dataclass(frozen=True)
class VideoHeader:
    start: float  # seconds: the first frame's time
    fps: float
    frames: int  # the frame count the container declares; 0 when it declares none
    audio: tuple[int, str] | None  # (sample rate, channel layout) of the sound written out


def read_header(path: str) -> VideoHeader:
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise MediaError(path, "no video stream")
            stream = container.streams.video[0]
            start = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
            rate = stream.average_rate or stream.guessed_rate or fractions.Fraction(25)
            audio = None
            if container.streams.audio:
                context = container.streams.audio[0].codec_context
                layout = _LAYOUTS.get(context.channels, "stereo")
                audio = (context.sample_rate or SAMPLE_RATE, layout)
            return VideoHeader(start, float(rate), max(int(stream.frames or 0), 0), audio)
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError) as error:
        raise MediaError(path, f"cannot decode ({error})") from None


# ------------------------------------------------------------------------------------------------
# Sound, decoded lazily


def sound_chunks(path: str, video_start: float, rate: int, layout: str) -> Iterator[np.ndarray]:
    """The first audio stream, resampled to `rate` and `layout`, as int16 chunks [n, channels]
    in order, on the video's clock: sample 0 is shown with the first frame (silence first when
    the sound starts later, cut when it starts earlier). A damaged packet loses its stretch."""
    channels = av.AudioLayout(layout).nb_channels
    resampler = av.AudioResampler(format="s16", layout=layout, rate=rate)
    offset: int | None = None  # samples still to drop (> 0) or silence to add (< 0)

    def aligned(frames: list[av.AudioFrame]) -> Iterator[np.ndarray]:
        nonlocal offset
        for frame in frames:
            samples = frame.to_ndarray().reshape(-1, channels)
            if offset is None:
                offset = 0
            if offset < 0:
                yield np.zeros((-offset, channels), np.int16)
                offset = 0
            if offset > 0:
                cut = min(offset, len(samples))
                samples, offset = samples[cut:], offset - cut
            if len(samples):
                yield samples

    try:
        with av.open(path) as container:
            stream = container.streams.audio[0]
            for packet in container.demux(stream):
                try:
                    decoded = packet.decode()
                except av.FFmpegError:
                    continue
                for frame in decoded:
                    if offset is None:
                        start = float(frame.time) if frame.time is not None else video_start
                        offset = round((video_start - start) * rate)
                    yield from aligned(resampler.resample(frame))
            yield from aligned(resampler.resample(None))
    except (av.FFmpegError, OSError, ValueError) as error:
        raise MediaError(path, f"cannot decode its audio ({error})") from None


class SoundWindows:
    """The model's sound for window k of a film (module docstring), from 16 kHz mono chunks
    decoded only as far as needed; what no later window can use is dropped."""

    def __init__(self, chunks: Iterator[np.ndarray], seconds: float, hop: float):
        self._chunks = chunks
        self._length = round(seconds * SAMPLE_RATE)
        self._hop = hop
        self._buffer = np.zeros(0, np.int16)
        self._base = 0  # the sample index of _buffer[0]
        self._ended = False

    def _fill(self, start: int, end: int) -> None:
        """Decodes until sample `end` is known (or the sound ends), keeping only what a window
        starting at `start` can use: from `start`, or the last window length before the
        end of what is known (where the sound may end). Memory stays a few windows long even
        when the first window asked for is far into the sound (a resumed film)."""
        parts = [self._buffer]
        known = self._base + self._buffer.size
        held = self._buffer.size
        while known < end and not self._ended:
            chunk = next(self._chunks, None)
            if chunk is None:
                self._ended = True
                break
            parts.append(chunk.reshape(-1))
            known += chunk.size
            held += chunk.size
            if held > 8 * self._length + (1 << 16):  # consolidate and drop what is not needed
                self._buffer, parts = np.concatenate(parts), []
                self._keep(min(start, known - self._length))
                parts, held = [self._buffer], self._buffer.size
        if len(parts) > 1:
            self._buffer = np.concatenate(parts)

    def _keep(self, first: int) -> None:
        """Drops the samples before sample `first`."""
        first = min(max(first, self._base), self._base + self._buffer.size)
        self._buffer = self._buffer[first - self._base :]
        self._base = first

    def window(self, k: int) -> np.ndarray | None:
        """Window k's samples (fewer when the whole sound is shorter), None without sound."""
        centre = round((k + 0.5) * self._hop * SAMPLE_RATE)
        start = max(centre - self._length // 2, 0)
        self._fill(start, start + self._length)
        total = self._base + self._buffer.size
        if self._ended and start + self._length > total:
            start = max(total - self._length, 0)
        samples = self._buffer[start - self._base : start - self._base + self._length].copy()
        self._keep(start - self._length)  # the end may move a later window back
        return samples if samples.size else None


# ------------------------------------------------------------------------------------------------
# Shots


def grey_histogram(rgb: np.ndarray) -> np.ndarray:
    """The normalised histogram (`HISTOGRAM_BINS` bins) of a frame's grey level (Rec. 601
    luma; every n-th pixel in each direction, n such that at least 90 rows and columns are
    read). A film to colour is grey: its colour carries nothing, so shots are told apart by
    their brightness distributions."""
    step = max(1, min(rgb.shape[:2]) // 90)
    small = rgb[::step, ::step].astype(np.float32)
    luma = small[..., 0] * 0.299 + small[..., 1] * 0.587 + small[..., 2] * 0.114
    bins = np.minimum((luma * (HISTOGRAM_BINS / 256.0)).astype(np.int64), HISTOGRAM_BINS - 1)
    counts = np.bincount(bins.ravel(), minlength=HISTOGRAM_BINS).astype(np.float64)
    return counts / counts.sum()


def histogram_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Total variation distance of two histograms, in [0, 1]: the share of pixels that would
    have to change bin."""
    return 0.5 * float(np.abs(np.asarray(a) - np.asarray(b)).sum())


class Shots:
    """Cuts; r and the guidance code smoothed within a shot; optionally the colour steadied.

    A frame starts a new shot when the `histogram_distance` of its grey histogram to the
    previous frame's exceeds `threshold`. Within a shot, r and the code the backbone is guided
    with follow the per-frame r (RNet's, or the mode's) and the window's code through an
    exponential moving average with time constant `smoothing` seconds (0: none): weight
    1 - exp(-dt / smoothing) on the new frame, dt the time since the previous frame. A frame
    without sound (r = 0) keeps the code and pulls r towards 0 the same way.

    With `steady` > 0 seconds, the colour is steadied: each frame's predicted ab (at the
    model's resolution, over the picture's box) is shifted and scaled per channel so that its
    mean and standard deviation follow the same kind of moving average of the frames' means and
    deviations (time constant `steady`), restarted at cuts; where each colour lies in the frame
    stays the frame's own. What flickers in a colorized film is mostly the overall cast and
    saturation drifting and jumping as the view changes; this holds them and leaves moving
    content alone.

    All state and the shot records are plain JSON, saved with each segment, so that a resumed
    film continues exactly.
    """

    def __init__(
        self, threshold: float, smoothing: float, state: dict | None = None, steady: float = 0.0
    ):
        self.threshold = threshold
        self.smoothing = smoothing
        self.steady = steady
        self.state = dict(state or {"shot": -1, "histogram": None, "time": None, "r": None})
        self.state.setdefault("code", None)
        self.state.setdefault("ab_moments", None)
        self.state.setdefault("ab_time", None)
        self.pieces: dict[int, dict] = {}  # shot -> its record within the current segment

    @staticmethod
    def _weight(time_constant: float, dt: float) -> float:
        return 1.0 if time_constant <= 0 else 1.0 - math.exp(-dt / time_constant)

    def batch(
        self, frames: list[np.ndarray], times: list[float], windows: list[int], heard: list[bool]
    ) -> tuple[Guide, Settle | None]:
        """The `Colorizer.colorize_heard` guide and settle (None without `steady`) of one batch
        of frames (in order): their times on the film's clock, sound windows and whether each
        has sound."""
        starts = []
        for rgb in frames:
            histogram = grey_histogram(rgb)
            previous = self.state["histogram"]
            cut = previous is None or histogram_distance(previous, histogram) > self.threshold
            starts.append(cut)
            self.state["histogram"] = histogram.tolist()

        def settle(ab: np.ndarray, boxes: list[Box]) -> np.ndarray:
            state = self.state
            for i, (time, cut, box) in enumerate(zip(times, starts, boxes)):
                inside = ab[i, box.top : box.top + box.height, box.left : box.left + box.width]
                values = inside.reshape(-1, 2).astype(np.float64)
                moments = np.concatenate([values.mean(axis=0), values.std(axis=0)])
                if cut or state["ab_moments"] is None:
                    target = moments
                else:
                    previous = np.asarray(state["ab_moments"])
                    weight = self._weight(self.steady, time - state["ab_time"])
                    target = previous + weight * (moments - previous)
                state["ab_moments"], state["ab_time"] = target.tolist(), time
                scale = target[2:] / np.maximum(moments[2:], 1e-6)
                ab[i] = ((ab[i] - moments[:2]) * scale + target[:2]).astype(np.float32)
            return ab

        def smooth(relevance: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            state = self.state
            used_r = np.zeros_like(relevance)
            used_codes = np.zeros_like(codes)
            for i, (time, window, cut) in enumerate(zip(times, windows, starts)):
                if cut:
                    state["shot"] += 1
                    state["r"] = state["code"] = None
                weight = 1.0
                if state["r"] is not None:
                    weight = self._weight(self.smoothing, time - state["time"])
                r = float(relevance[i])
                state["r"] = r if state["r"] is None else state["r"] + weight * (r - state["r"])
                if heard[i]:
                    code = codes[i].astype(np.float64)
                    if state["code"] is not None:
                        previous = np.asarray(state["code"])
                        code = previous + weight * (code - previous)
                    state["code"] = code.tolist()
                state["time"] = time
                if state["code"] is not None:  # else nothing heard in this shot: r = 0
                    used_r[i], used_codes[i] = state["r"], state["code"]
                self._record(state["shot"], time, window, heard[i], r, float(used_r[i]))
            return used_r, used_codes

        return smooth, (settle if self.steady > 0 else None)

    def _record(self, shot, time, window, heard, relevance, used) -> None:
        piece = self.pieces.setdefault(
            shot,
            {"shot": shot, "start": time, "end": time, "frames": 0, "heard_frames": 0,
             "r_sum": 0.0, "r_used_sum": 0.0, "windows": []},
        )  # fmt: skip
        piece["end"] = time
        piece["frames"] += 1
        if heard:
            piece["heard_frames"] += 1
            piece["r_sum"] += relevance
            piece["r_used_sum"] += float(used)
            if not piece["windows"] or piece["windows"][-1] != window:
                piece["windows"].append(window)

    def take_pieces(self) -> list[dict]:
        """The shot records since the last call (a segment's), in order."""
        pieces = [self.pieces[k] for k in sorted(self.pieces)]
        self.pieces = {}
        return pieces


# ------------------------------------------------------------------------------------------------
# Segments


@dataclasses.dataclass
class _Segment:
    """A finished segment's record (`segment-NNNNN.json` beside its video)."""

    frames: int
    relevance_sum: float
    relevance_min: float
    relevance_max: float
    heard_frames: int  # frames with sound (those r is taken over)
    state: dict = dataclasses.field(default_factory=dict)  # `Shots` state at its end
    shots: list = dataclasses.field(default_factory=list)  # `Shots` records of its frames


class _Parts:
    """The hidden folder beside an output that holds its finished segments."""

    def __init__(self, output: str, identity: dict):
        directory, name = os.path.split(os.path.abspath(output))
        self.path = os.path.join(directory, f".{name}.parts")
        self.identity = identity

    def finished(self) -> list[_Segment]:
        """The segments a previous run finished for the same job, in order; a folder of another
        job (or of an unreadable one) is cleared."""
        try:
            with open(os.path.join(self.path, "job.json")) as f:
                same = json.load(f) == self.identity
        except (OSError, ValueError):
            same = False
        if not same:
            shutil.rmtree(self.path, ignore_errors=True)
            os.makedirs(self.path)
            with written_whole(os.path.join(self.path, "job.json")) as temporary:
                with open(temporary, "w") as f:
                    json.dump(self.identity, f, indent=1)
            return []
        segments = []
        while True:
            record = self.record(len(segments))
            if not os.path.exists(self.video(len(segments))) or not os.path.exists(record):
                break
            try:
                with open(record) as f:
                    segments.append(_Segment(**json.load(f)))
            except (OSError, ValueError, TypeError):
                break
        return segments

    def video(self, index: int) -> str:
        return os.path.join(self.path, f"segment-{index:05d}.mp4")

    def record(self, index: int) -> str:
        return os.path.join(self.path, f"segment-{index:05d}.json")

    def save(self, index: int, segment: _Segment) -> None:
        with written_whole(self.record(index)) as temporary:
            with open(temporary, "w") as f:
                json.dump(dataclasses.asdict(segment), f)


class _SegmentEncoder:
    """H.264 of one segment's frames, with their times on the film's clock (1/90000 s)."""

    def __init__(self, path: str, height: int, width: int, fps: float):
        self.container = av.open(path, "w")
        self.stream = self.container.add_stream(
            "libx264", rate=fractions.Fraction(fps).limit_denominator(1001)
        )
        self.stream.width, self.stream.height = width + width % 2, height + height % 2
        self.stream.pix_fmt = "yuv420p"
        self.stream.time_base = self.stream.codec_context.time_base = _TIME_BASE
        # Macroblock-tree rate control off: with it, x264 gave different bytes for the same
        # frames from one run to the next here, and a resumed film must equal an uninterrupted
        # run's output.
        self.stream.options = {"crf": str(CRF), "x264-params": "no-mbtree=1"}
        self.duration = max(round(1 / (fps * _TIME_BASE)), 1)
        self.size = (height, width)

    def encode(self, rgb: np.ndarray, pts: int) -> None:
        if rgb.shape[:2] != self.size:
            raise ValueError(f"a frame of {rgb.shape[:2]}; the film's frames are {self.size}")
        height, width = self.size
        if height % 2 or width % 2:  # 4:2:0 needs even sides: repeat the last row / column
            rgb = np.pad(rgb, ((0, height % 2), (0, width % 2), (0, 0)), "edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts, frame.duration, frame.time_base = pts, self.duration, _TIME_BASE
        self.container.mux(self.stream.encode(frame))

    def close(self) -> None:
        self.container.mux(self.stream.encode(None))
        self.container.close()


def _encode_batch(encoder: _SegmentEncoder, frames: list[np.ndarray], pts: list[int]) -> None:
    for rgb, stamp in zip(frames, pts):
        encoder.encode(rgb, stamp)


# ------------------------------------------------------------------------------------------------
# The film


def _identity(
    colorizer: Colorizer, path: str, window_seconds: float, hop: float, segment_frames: int
) -> dict:
    """What a resumed run must share with the interrupted one."""
    status = os.stat(path)
    digest = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(colorizer.variables):
        digest.update(np.asarray(leaf).tobytes())
    return {
        "version": _FORMAT_VERSION,
        "film": os.path.abspath(path),
        "film_size": status.st_size,
        "film_mtime_ns": status.st_mtime_ns,
        "variables_sha256": digest.hexdigest(),
        "model": colorizer.config.to_json(sort_keys=True),
        "mode": colorizer.mode,
        "resize": colorizer.resize,
        "batch_size": colorizer.batch_size,
        "window_seconds": window_seconds,
        "hop_seconds": hop,
        "segment_frames": segment_frames,
        "crf": CRF,
    }


def _progress(total: int, done: int, enabled: bool | None):
    from tqdm import tqdm

    return tqdm(
        total=total or None,
        initial=done,
        unit="frame",
        dynamic_ncols=True,
        disable=enabled is False or (enabled is None and not sys.stderr.isatty()),
        file=sys.stderr,
    )


def colorize_film(
    colorizer: Colorizer,
    path: str,
    output: str,
    *,
    window_seconds: float | None = None,
    hop_seconds: float = HOP_SECONDS,
    segment_seconds: float = SEGMENT_SECONDS,
    cut_threshold: float = CUT_THRESHOLD,
    smoothing_seconds: float = SMOOTHING_SECONDS,
    steady_seconds: float = 0.0,
    progress: bool | None = None,
) -> str:
    """Colorizes a film with its sound into `output` (module docstring); returns a summary line.

    Writes the shot report `output + ".shots.json"` beside it (`Shots`: each shot's time span,
    frames, mean r and the sound windows it heard).
    cut_threshold, smoothing_seconds, steady_seconds: `Shots`' threshold, smoothing and
    steady (0: the colour is not steadied).
    progress: a bar with frames/s and the time left on stderr (None: when it is a terminal).
    Raises MediaError naming the file when the film cannot be read or the output written; a
    film cut off mid-way is colorized as far as it decodes, with a warning saying where.
    """
    window_seconds = window_seconds or colorizer.audio_seconds
    if window_seconds <= 0 or hop_seconds <= 0 or segment_seconds <= 0:
        raise ValueError("window, hop and segment lengths must be positive")
    if smoothing_seconds < 0 or steady_seconds < 0 or not 0 <= cut_threshold <= 1:
        raise ValueError("smoothing and steady are at least 0, cut_threshold in [0, 1]")
    try:
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    except OSError as error:
        raise MediaError(output, f"cannot create its folder ({error})") from None
    header = read_header(path)
    batch = colorizer.batch_size
    segment_frames = batch * max(math.ceil(segment_seconds * header.fps / batch), 1)
    identity = _identity(colorizer, path, window_seconds, hop_seconds, segment_frames)
    identity.update(
        cut_threshold=cut_threshold,
        smoothing_seconds=smoothing_seconds,
        steady_seconds=steady_seconds,
    )
    parts = _Parts(output, identity)
    try:
        done = parts.finished()
    except OSError as error:
        raise MediaError(output, f"cannot write beside it ({error})") from None
    if header.audio is None:
        print(
            f"warning: {path}: no audio stream; r = 0, the visual backbone alone colours it",
            file=sys.stderr,
            flush=True,
        )
        windows = None
    else:
        mono = sound_chunks(path, header.start, SAMPLE_RATE, "mono")
        windows = SoundWindows(mono, window_seconds, hop_seconds)

    heard: dict[int, Heard | None] = {}

    def hear(indices: list[int]) -> list[Heard | None]:
        """Each window's `Heard`, computing missing ones a batch ahead."""
        if windows is None:
            return [None] * len(indices)
        missing = sorted({k for k in indices if k not in heard})
        if missing:
            ahead = list(range(missing[0], missing[0] + batch))
            wanted = sorted(set(missing) | set(ahead))[: max(batch, len(missing))]
            sounds = [windows.window(k) for k in wanted]
            present = [s for s in sounds if s is not None]
            computed = iter(colorizer.hear(present))
            for k, sound in zip(wanted, sounds):
                heard[k] = None if sound is None else next(computed)
            for k in [k for k in heard if k < min(indices)]:
                del heard[k]
        return [heard[k] for k in indices]

    shots = Shots(
        cut_threshold, smoothing_seconds, done[-1].state if done else None, steady_seconds
    )
    skip = sum(segment.frames for segment in done)
    segments = list(done)
    frames = media.video_frames(path)
    count, last_pts = 0, -1
    bar = _progress(header.frames, skip, progress)
    try:
        with contextlib.closing(frames), bar:
            pending: list[tuple[np.ndarray, int]] = []
            encoder: _SegmentEncoder | None = None
            current = _Segment(0, 0.0, math.inf, -math.inf, 0)

            def finish_batch() -> None:
                nonlocal encoder
                pictures = [f for f, _ in pending]
                times = [float(pts * _TIME_BASE) for _, pts in pending]
                indices = [int(t // hop_seconds) for t in times]
                sounds = hear(indices)
                guide, settle = shots.batch(
                    pictures, times, indices, [h is not None for h in sounds]
                )
                results = colorizer.colorize_heard(pictures, sounds, guide=guide, settle=settle)
                if encoder is None:
                    height, width = results[0].rgb.shape[:2]
                    encoder = _SegmentEncoder(
                        parts.video(len(segments)) + ".partial.mp4", height, width, header.fps
                    )
                _encode_batch(encoder, [r.rgb for r in results], [p for _, p in pending])
                current.frames += len(results)
                for result in results:
                    if result.has_audio:
                        current.heard_frames += 1
                        current.relevance_sum += result.relevance
                        current.relevance_min = min(current.relevance_min, result.relevance)
                        current.relevance_max = max(current.relevance_max, result.relevance)
                bar.update(len(results))
                pending.clear()

            def finish_segment() -> None:
                nonlocal encoder, current
                encoder.close()
                index = len(segments)
                current.state, current.shots = dict(shots.state), shots.take_pieces()
                os.replace(parts.video(index) + ".partial.mp4", parts.video(index))
                parts.save(index, current)
                segments.append(current)
                encoder, current = None, _Segment(0, 0.0, math.inf, -math.inf, 0)

            try:
                for rgb, time in frames:
                    # The frame's time on the film's clock; from its index where it has none
                    # or would go back.
                    pts = -1 if time is None else round((time - header.start) / _TIME_BASE)
                    if pts <= last_pts:
                        pts = max(last_pts + 1, round(count / header.fps / _TIME_BASE))
                    last_pts = pts
                    count += 1
                    if count <= skip:
                        continue  # in a segment a previous run finished
                    pending.append((rgb, pts))
                    if len(pending) == batch:
                        finish_batch()
                        if current.frames == segment_frames:
                            finish_segment()
                if pending:
                    finish_batch()
                if encoder is not None:
                    finish_segment()
            finally:
                if encoder is not None:  # broken off: this segment is redone by the next run
                    with contextlib.suppress(av.FFmpegError, OSError):
                        encoder.container.close()
    except (av.FFmpegError, OSError, ValueError) as error:
        raise MediaError(output, f"cannot write the video ({error})") from None
    if count == 0:
        raise MediaError(path, "no video frame could be decoded")
    if count < skip:
        raise MediaError(path, f"has {count} frames now, fewer than a previous run colorized")

    _join(parts, len(segments), output, path, header)
    report = _shot_report(path, output, header, segments, window_seconds, hop_seconds)
    report.update(
        cut_threshold=cut_threshold,
        smoothing_seconds=smoothing_seconds,
        steady_seconds=steady_seconds,
    )
    try:
        with written_whole(output + ".shots.json") as temporary, open(temporary, "w") as f:
            json.dump(report, f, indent=1)
    except OSError as error:
        raise MediaError(output + ".shots.json", f"cannot write ({error})") from None
    shutil.rmtree(parts.path, ignore_errors=True)
    stopped = float(last_pts * _TIME_BASE)
    return _summary(path, output, header, segments, count, len(report["shots"]), stopped)


def _join(parts: _Parts, count: int, output: str, path: str, header: VideoHeader) -> None:
    """The segments' video packets (not re-encoded) and the film's sound, encoded as AAC, into
    the output; the sound is interleaved with the video as it goes."""
    try:
        with written_whole(output) as temporary, av.open(temporary, "w") as container:
            with av.open(parts.video(0)) as first:
                video = container.add_stream_from_template(first.streams.video[0])
            video.time_base = _TIME_BASE
            sound = None
            if header.audio is not None:
                rate, layout = header.audio
                chunks = sound_chunks(path, header.start, rate, layout)
                head = next(chunks, None)  # a sound that decodes to nothing: no audio stream
                if head is not None:
                    sound = _SoundEncoder(container, itertools.chain([head], chunks), rate, layout)
            for index in range(count):
                with av.open(parts.video(index)) as segment:
                    for packet in segment.demux(segment.streams.video[0]):
                        if packet.size == 0:
                            continue
                        if sound is not None and packet.dts is not None:
                            sound.until(float(packet.dts * packet.time_base) + 1.0)
                        packet.stream = video
                        container.mux(packet)
            if sound is not None:
                sound.finish()
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError) as error:
        raise MediaError(output, f"cannot write the video ({error})") from None


class _SoundEncoder:
    """AAC of a film's sound, encoded as far as the video has come."""

    def __init__(self, container, chunks: Iterator[np.ndarray], rate: int, layout: str):
        self.container, self.chunks, self.rate, self.layout = container, chunks, rate, layout
        self.stream = container.add_stream("aac", rate=rate, layout=layout)
        self.stream.bit_rate = 128_000
        self.written = 0  # samples

    def _encode(self, samples: np.ndarray) -> None:
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples.reshape(1, -1)), format="s16", layout=self.layout
        )
        frame.sample_rate = self.rate
        frame.pts, frame.time_base = self.written, fractions.Fraction(1, self.rate)
        self.written += len(samples)
        self.container.mux(self.stream.encode(frame))

    def until(self, seconds: float) -> None:
        while self.written < seconds * self.rate:
            chunk = next(self.chunks, None)
            if chunk is None:
                return
            self._encode(chunk)

    def finish(self) -> None:
        for chunk in self.chunks:
            self._encode(chunk)
        self.container.mux(self.stream.encode(None))


def _shot_report(
    path: str,
    output: str,
    header: VideoHeader,
    segments: list[_Segment],
    window_seconds: float,
    hop_seconds: float,
) -> dict:
    """Each shot's span, frames, r and sound windows, from the segments' records."""
    merged: dict[int, dict] = {}
    for segment in segments:
        for piece in segment.shots:
            shot = merged.get(piece["shot"])
            if shot is None:
                merged[piece["shot"]] = {**piece, "windows": list(piece["windows"])}
                continue
            shot["end"] = piece["end"]
            for key in ("frames", "heard_frames", "r_sum", "r_used_sum"):
                shot[key] += piece[key]
            shot["windows"] += [w for w in piece["windows"] if w not in shot["windows"][-1:]]
    shots = []
    for shot in (merged[k] for k in sorted(merged)):
        heard = shot["heard_frames"]
        shots.append(
            {
                "shot": shot["shot"],
                "start": round(shot["start"], 6),
                "end": round(shot["end"] + 1 / header.fps, 6),
                "frames": shot["frames"],
                "frames_with_sound": heard,
                "mean_r": round(shot["r_sum"] / heard, 4) if heard else None,
                "mean_r_used": round(shot["r_used_sum"] / heard, 4) if heard else None,
                "sound_windows": [
                    [round(max((k + 0.5) * hop_seconds - window_seconds / 2, 0.0), 6),
                     round((k + 0.5) * hop_seconds + window_seconds / 2, 6)]
                    for k in shot["windows"]
                ],
            }
        )  # fmt: skip
    return {
        "film": os.path.abspath(path),
        "output": os.path.abspath(output),
        "fps": header.fps,
        "frames": sum(s["frames"] for s in shots),
        "window_seconds": window_seconds,
        "hop_seconds": hop_seconds,
        "shots": shots,
    }


def _summary(
    path: str,
    output: str,
    header: VideoHeader,
    segments: list[_Segment],
    count: int,
    shots: int,
    stopped: float,
) -> str:
    heard = sum(s.heard_frames for s in segments)
    if header.audio is None or heard == 0:
        sound = "no audio: r = 0, the backbone alone"
    else:
        mean = sum(s.relevance_sum for s in segments) / heard
        low = min(s.relevance_min for s in segments if s.heard_frames)
        high = max(s.relevance_max for s in segments if s.heard_frames)
        sound = f"r mean {mean:.2f} (min {low:.2f}, max {high:.2f})"
    summary = f"{path} -> {output}: {count} frames, {shots} shots, {sound}"
    if count < header.frames:
        warning = (
            f"{path}: only {count} of the {header.frames} frames its header declares could be "
            f"decoded (a damaged or cut-off file): decoding stopped at {stopped:.2f} s; the "
            "output is that much shorter"
        )
        print(f"warning: {warning}", file=sys.stderr, flush=True)
        summary += f" (warning: {count} of {header.frames} frames decoded)"
    return summary
