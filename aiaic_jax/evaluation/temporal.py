"""Temporal stability of a video: the colour distribution consistency (CDC).

CDC, as the video-colorization literature reports it (lower is steadier): for each gap t of
`GAPS` (frames 1, 2 and 4 apart), the Jensen-Shannon divergence between the colour histograms
of frame i and frame i + t, per RGB channel (256 bins of the uint8 values, each normalised to a
distribution; natural logarithm, so a divergence lies in [0, ln 2]), averaged over the three
channels and over every pair (i, i + t) of the video; CDC is the mean of the three gaps'
values, and over several videos the mean of the videos' CDCs. A video with fewer frames than a
gap has no pairs for it: that gap is left out of its mean (a single frame has no CDC).

The frames stream through `CdcMeter` (only the last `max(GAPS)` frames' histograms are kept), so
a film of any length is measured in constant memory.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from collections.abc import Iterable, Sequence

import numpy as np

GAPS = (1, 2, 4)
BINS = 256


def channel_histograms(frame: np.ndarray) -> np.ndarray:
    """[3, 256] float64: the distribution of each RGB channel's uint8 values in `frame`
    ([H, W, 3] uint8)."""
    if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"a frame is [H, W, 3] uint8, got {frame.shape} {frame.dtype}")
    pixels = frame.reshape(-1, 3)
    counts = np.stack([np.bincount(pixels[:, c], minlength=BINS) for c in range(3)])
    return counts / pixels.shape[0]


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The Jensen-Shannon divergence (natural log) between distributions along the last axis."""
    m = 0.5 * (p + q)
    return 0.5 * _kl(p, m) + 0.5 * _kl(q, m)


def _kl(p: np.ndarray, m: np.ndarray) -> np.ndarray:
    # 0 log 0 = 0; where p > 0, m >= p / 2 > 0.
    ratio = np.divide(p, m, out=np.ones_like(p), where=p > 0)
    return np.sum(p * np.log(ratio), axis=-1)


@dataclasses.dataclass(frozen=True)
class Cdc:
    """One video's CDC: `value` (mean over the gaps that have pairs; None under two frames),
    `per_gap` ({gap: mean divergence}), `frames` counted."""

    value: float | None
    per_gap: dict[int, float]
    frames: int

    def to_json(self) -> dict:
        return {
            "cdc": self.value,
            "per_gap": {str(k): v for k, v in self.per_gap.items()},
            "frames": self.frames,
        }


class CdcMeter:
    """Streaming CDC: `add` each frame in order, then `result()`."""

    def __init__(self, gaps: Sequence[int] = GAPS):
        if not gaps or any(int(g) < 1 for g in gaps):
            raise ValueError(f"gaps are positive frame distances, got {tuple(gaps)}")
        self.gaps = tuple(sorted({int(g) for g in gaps}))
        self._recent: collections.deque[np.ndarray] = collections.deque(maxlen=max(self.gaps))
        self._sums = dict.fromkeys(self.gaps, 0.0)
        self._pairs = dict.fromkeys(self.gaps, 0)
        self.frames = 0

    def cut(self) -> None:
        """A new shot starts with the next frame: it is not paired with frames before it."""
        self._recent.clear()

    def add(self, frame: np.ndarray) -> None:
        histograms = channel_histograms(frame)
        for gap in self.gaps:
            if len(self._recent) >= gap:
                earlier = self._recent[-gap]
                self._sums[gap] += float(np.mean(js_divergence(earlier, histograms)))
                self._pairs[gap] += 1
        self._recent.append(histograms)
        self.frames += 1

    def result(self) -> Cdc:
        per_gap = {g: self._sums[g] / self._pairs[g] for g in self.gaps if self._pairs[g]}
        value = float(np.mean(list(per_gap.values()))) if per_gap else None
        return Cdc(value, per_gap, self.frames)


def cdc(frames: Iterable[np.ndarray], gaps: Sequence[int] = GAPS, cuts: Iterable[int] = ()) -> Cdc:
    """The CDC of a sequence of [H, W, 3] uint8 frames; with `cuts` (indices of the frames
    that start a shot), within shots only."""
    cuts = set(cuts)
    meter = CdcMeter(gaps)
    for index, frame in enumerate(frames):
        if index in cuts:
            meter.cut()
        meter.add(frame)
    return meter.result()


def video_cdc(
    path: str | os.PathLike, gaps: Sequence[int] = GAPS, cut_threshold: float | None = None
) -> Cdc:
    """The CDC of a video file's first video stream, decoded frame by frame (PyAV); with
    `cut_threshold`, within the shots that `aiaic_jax.film`'s detector finds at that threshold.

    Raises `media.MediaError` naming the file when it cannot be opened or holds no video
    stream; a stream that breaks off is measured on the frames decoded before it."""
    from aiaic_jax import film  # the film path's shot detector
    from aiaic_jax.data import media

    meter = CdcMeter(gaps)
    previous = None
    for frame, _ in media.video_frames(path):
        if cut_threshold is not None:
            histogram = film.grey_histogram(frame)
            distance = None if previous is None else film.histogram_distance(previous, histogram)
            if distance is not None and distance > cut_threshold:
                meter.cut()
            previous = histogram
        meter.add(frame)
    return meter.result()


def mean_cdc(results: Iterable[Cdc]) -> float | None:
    """The mean CDC over videos (those with a CDC)."""
    values = [r.value for r in results if r.value is not None]
    return float(np.mean(values)) if values else None
