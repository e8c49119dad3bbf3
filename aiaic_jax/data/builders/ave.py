"""AVE (Audio-Visual Event) from a local copy: ten 1-s pairs per video with relevance labels.

manual_dir holds `Annotations.txt` (a header line, then one annotation per line),
`trainSet.txt`, `valSet.txt`, `testSet.txt` and the videos `AVE/<VideoID>.mp4`. A line reads
`Category&VideoID&Quality&StartTime&EndTime`; the whole seconds `[StartTime, EndTime)` hold the
labelled audio-visual event. Each second `k < 10` of a video gives one pair (the frame nearest
`k + 0.5`, the audio of `[k, k + 1)`), `relevant` when the second's middle lies in an event.

Annotation lines are handled so that no line stops a build:
- wrong field count, or an empty category or VideoID: the line is skipped (reported);
- times that are not numbers, or `EndTime <= StartTime` (the official file has
  `Church bell&VWi2ENBuTbw&good&0&0`): the video is kept and the line marks no event, so its
  seconds are not relevant unless another line of the video marks them (reported as a note);
- a video on several lines of a split: one set of pairs whose events are the union of the
  lines' events, labelled with the first line's category.
Labels index the sorted category names of all four files.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

from aiaic_jax.data.builders import media_pairs
from aiaic_jax.data.builders.common import BuildReport
from aiaic_jax.data.builders.media_pairs import (
    ManualDirError,
    MediaPairBuilder,
    MediaPairConfig,
    Outcome,
    option,
)

ANNOTATIONS = "Annotations.txt"
SPLIT_FILES = {"train": "trainSet.txt", "val": "valSet.txt", "test": "testSet.txt"}


@dataclasses.dataclass(eq=False)
class AveConfig(MediaPairConfig):
    # AVE evaluates all ten seconds of every video (4,020 test pairs): grey frames are kept.
    skip_grey: bool = option(False, "skip grey frames (no colour ground truth)")
    videos_dir: str = option("AVE", "video directory relative to manual_dir ('.': manual_dir)")
    video_pattern: str = option("{video_id}.mp4", "video file name, from the field video_id")
    seconds_per_video: int = option(10, "pairs per video: one per whole second from the start")


@dataclasses.dataclass
class AveVideo:
    """One video of a split: its category and the annotated event intervals, in seconds."""

    video_id: str
    category: str
    events: list[tuple[float, float]]
    line: str  # where it was first listed, "file:line"


def parse_annotation_file(path: str, report: BuildReport) -> dict[str, AveVideo]:
    """The videos of an AVE annotation file by VideoID, in order of first appearance."""
    videos: dict[str, AveVideo] = {}
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        for number, text in enumerate(f, start=1):
            text = text.strip()
            if not text:
                continue
            where = f"{path}:{number}"
            fields = [field.strip() for field in text.split("&")]
            if fields[:2] == ["Category", "VideoID"]:
                continue  # the header
            if len(fields) != 5:
                report.skip(where, f"expected 5 &-separated fields, got {len(fields)}: {text!r}")
                continue
            category, video_id, _quality, start, end = fields
            if not category or not video_id:
                report.skip(where, f"empty category or VideoID: {text!r}")
                continue
            event = _event(start, end)
            if event is None:
                report.note(f"{where}: times {start!r}..{end!r} mark no event; {video_id} kept")
            video = videos.get(video_id)
            if video is None:
                videos[video_id] = AveVideo(video_id, category, [event] if event else [], where)
                continue
            if event:
                video.events.append(event)
            if category != video.category:
                report.note(
                    f"{where}: {video_id} also listed as {category!r}; labelled "
                    f"{video.category!r} from {video.line}"
                )
    return videos


def _event(start: str, end: str) -> tuple[float, float] | None:
    try:
        start_time, end_time = float(start), float(end)
    except ValueError:
        return None
    if not end_time > start_time:
        return None
    return start_time, end_time


def in_event(second: int, events: list[tuple[float, float]]) -> bool:
    """Whether the middle of `[second, second + 1)` lies in one of the `[start, end)` events."""
    middle = second + 0.5
    return any(start <= middle < end for start, end in events)


class Ave(MediaPairBuilder):
    """AVE pairs: each whole second of each video, its middle frame with that second's audio."""

    BUILDER_CONFIG_CLASS = AveConfig
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Put in manual_dir the AVE release: `Annotations.txt`, `trainSet.txt`, `valSet.txt`,
    `testSet.txt` and the directory `AVE/` of `<VideoID>.mp4` videos.
    """

    def check_manual_dir(self, manual_dir: str | os.PathLike | None) -> None:
        """Raises `ManualDirError` unless manual_dir holds the annotation files and videos."""
        if manual_dir is None or not os.path.isdir(manual_dir):
            raise ManualDirError(f"ave needs --manual_dir, a directory; got {manual_dir}")
        for name in (ANNOTATIONS, *SPLIT_FILES.values()):
            if not os.path.isfile(os.path.join(manual_dir, name)):
                raise ManualDirError(f"ave: {os.path.join(manual_dir, name)} not found")
        videos_dir = media_pairs.manual_path(manual_dir, self.builder_config.videos_dir)
        if not os.path.isdir(videos_dir):
            raise ManualDirError(f"ave: video directory {videos_dir} not found")

    def _split_generators(self, dl_manager) -> dict[str, Iterator]:
        config = self.builder_config
        media_pairs.check_image_options(config)
        media_pairs.check_pattern("video_pattern", config.video_pattern, video_id="x")
        manual_dir = os.fspath(dl_manager.manual_dir)
        self.check_manual_dir(manual_dir)

        # Categories come from every file, so that a label means the same in every split.
        quiet = BuildReport(dataset="annotations")
        annotated = parse_annotation_file(os.path.join(manual_dir, ANNOTATIONS), quiet)
        split_videos = {
            split: parse_annotation_file(os.path.join(manual_dir, name), self.report)
            for split, name in SPLIT_FILES.items()
        }
        categories = {v.category for v in annotated.values()}
        for videos in split_videos.values():
            categories |= {v.category for v in videos.values()}
        labels = {name: i for i, name in enumerate(sorted(categories))}

        listed_in: dict[str, list[str]] = {}
        for split, videos in split_videos.items():
            for video_id in videos:
                listed_in.setdefault(video_id, []).append(split)
        for video_id, in_splits in listed_in.items():
            if len(in_splits) > 1:
                self.report.note(f"{video_id} is listed in several splits: {', '.join(in_splits)}")

        videos_dir = media_pairs.manual_path(manual_dir, config.videos_dir)
        splits = {}
        for split, videos in split_videos.items():
            jobs = []
            for video in videos.values():
                path = os.path.join(
                    videos_dir, config.video_pattern.format(video_id=video.video_id)
                )
                if os.path.isfile(path):
                    jobs.append((path, video, labels[video.category]))
                else:
                    self.report.skip(path, f"video file not found (listed at {video.line})")
            if not jobs:
                self.report.note(f"split {split}: no video found, split left out")
                continue
            splits[split] = self.split_pairs(split, jobs, self._video_pairs)
        return self.require_splits(splits)

    def _video_pairs(self, job: tuple[str, AveVideo, int]) -> Outcome:
        path, video, label = job
        config = self.builder_config
        outcome = Outcome()
        clip = media_pairs.decode_clip(path, config, outcome, per_second=True)
        if clip is None:
            return outcome
        seconds = min(clip.num_seconds, config.seconds_per_video)
        if seconds < config.seconds_per_video:
            outcome.notes.append(f"{path}: {clip.duration:.2f} s long, {seconds} pairs")
        for second in range(seconds):
            media_pairs.frame_pair(
                outcome,
                config,
                clip.second_frames[second],
                clip.second_audio(second),
                path=path,
                lossy_source=True,
                relevant=clip.has_audio and in_event(second, video.events),
                label=label,
                label_name=video.category,
                clip_id=video.video_id,
                second=second,
            )
        return outcome
