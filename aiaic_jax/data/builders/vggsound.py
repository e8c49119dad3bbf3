"""VGGSound from a local copy: one pair per clip, its middle frame with its audio.

The paper trains and validates on 164 classes and tests generalisation on 20 other classes
(VGGSound_OOD). Rows of `vggsound.csv` (`YouTubeID,start_seconds,label,split`) go to:

- `train`: csv `train` rows of the train classes;
- `val`: csv `test` rows of the train classes;
- `ood`: rows of the OOD classes from the csv splits in `ood_csv_splits` (default `test`).

Labels index the sorted train classes, then the sorted OOD classes after them. Rows of other
classes are not used. A clip file that is missing or does not decode is skipped and reported.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections import Counter
from collections.abc import Iterator

from aiaic_jax.data.builders import media_pairs
from aiaic_jax.data.builders.media_pairs import (
    ManualDirError,
    MediaPairBuilder,
    MediaPairConfig,
    Outcome,
    option,
)


@dataclasses.dataclass(eq=False)
class VggsoundConfig(MediaPairConfig):
    csv_file: str = option("vggsound.csv", "metadata CSV, relative to manual_dir")
    clips_dir: str = option("video", "clip directory relative to manual_dir ('.': manual_dir)")
    clip_pattern: str = option(
        "{youtube_id}_{start:06d}.mp4", "clip file name, from the fields youtube_id and start"
    )
    train_classes: str = option(
        "",
        "classes of train and val: comma-separated names, or a text file with one per line; "
        "empty: every class not in ood_classes",
    )
    ood_classes: str = option(
        "", "held-out classes of the ood split, in the same forms; empty: no ood split"
    )
    ood_csv_splits: str = option("test", "csv splits the ood split takes rows from")
    max_audio_seconds: float = option(
        10.0, "audio stored with the middle frame: at most this many seconds, centred on it"
    )


@dataclasses.dataclass(frozen=True)
class ClipRow:
    youtube_id: str
    start: int
    label_name: str
    csv_split: str
    line: int

    @property
    def clip_id(self) -> str:
        return f"{self.youtube_id}_{self.start:06d}"


def read_vggsound_csv(path: str, report) -> list[ClipRow]:
    """The rows of `vggsound.csv`; a header line is allowed, malformed rows are reported."""
    rows = []
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        for line, fields in enumerate(csv.reader(f), start=1):
            if not fields or not "".join(fields).strip():
                continue
            where = f"{path}:{line}"
            if len(fields) < 4:
                report.skip(where, f"expected 4 fields (YouTubeID,start,label,split), got {fields}")
                continue
            youtube_id, start, label_name, csv_split = (x.strip() for x in fields[:4])
            try:
                start_seconds = int(float(start))
            except ValueError:
                if line == 1:
                    continue  # a header line
                report.skip(where, f"start_seconds {start!r} is not a number")
                continue
            if csv_split not in ("train", "test"):
                report.skip(where, f"split {csv_split!r} is neither train nor test")
                continue
            rows.append(ClipRow(youtube_id, start_seconds, label_name, csv_split, line))
    return rows


def parse_class_list(value: str, known: set[str], search_dirs: tuple[str, ...] = ()) -> list[str]:
    """Class names from a comma-separated list or a text file (one per line, # comments).

    VGGSound names may contain commas ("vehicle horn, car horn, honking"): in the comma form,
    neighbouring pieces are joined back when together they name a known class.
    """
    value = value.strip()
    if not value:
        return []
    for directory in ("", *search_dirs):
        candidate = os.path.join(directory, value)
        if os.path.isfile(candidate):
            with open(candidate, encoding="utf-8") as f:
                lines = (line.split("#", 1)[0].strip() for line in f)
                return [line for line in lines if line]
    pieces = [p.strip() for p in value.split(",")]
    names, i = [], 0
    while i < len(pieces):
        # The longest run of pieces that names a known class, else the single piece.
        for j in range(len(pieces), i, -1):
            joined = ", ".join(pieces[i:j])
            if joined in known or j == i + 1:
                names.append(joined)
                i = j
                break
    return [n for n in names if n]


class Vggsound(MediaPairBuilder):
    """VGGSound pairs: the middle frame of each 10-s clip with the clip's audio."""

    BUILDER_CONFIG_CLASS = VggsoundConfig
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Put in manual_dir: `vggsound.csv` (rows `YouTubeID,start_seconds,label,split`) and the clips
    as `video/<YouTubeID>_<start:06d>.mp4` (see --clips_dir and --clip_pattern).
    """

    def check_manual_dir(self, manual_dir: str | os.PathLike | None) -> None:
        """Raises `ManualDirError` unless manual_dir holds the csv and the clip directory."""
        config = self.builder_config
        if manual_dir is None or not os.path.isdir(manual_dir):
            raise ManualDirError(f"vggsound needs --manual_dir, a directory; got {manual_dir}")
        csv_path = media_pairs.manual_path(manual_dir, config.csv_file)
        if not os.path.isfile(csv_path):
            raise ManualDirError(f"vggsound: {csv_path} not found (the VGGSound metadata csv)")
        clips_dir = media_pairs.manual_path(manual_dir, config.clips_dir)
        if not os.path.isdir(clips_dir):
            raise ManualDirError(f"vggsound: clip directory {clips_dir} not found")

    def _split_generators(self, dl_manager) -> dict[str, Iterator]:
        config = self.builder_config
        media_pairs.check_image_options(config)
        media_pairs.check_pattern("clip_pattern", config.clip_pattern, youtube_id="x", start=0)
        manual_dir = os.fspath(dl_manager.manual_dir)
        self.check_manual_dir(manual_dir)
        rows = read_vggsound_csv(media_pairs.manual_path(manual_dir, config.csv_file), self.report)
        known = {row.label_name for row in rows}
        train_classes, ood_classes = self._classes(config, known, manual_dir)
        labels = {name: i for i, name in enumerate([*sorted(train_classes), *sorted(ood_classes)])}

        ood_csv_splits = {s.strip() for s in config.ood_csv_splits.split(",") if s.strip()}
        by_split: dict[str, list[ClipRow]] = {"train": [], "val": [], "ood": []}
        unused = Counter()
        for row in rows:
            if row.label_name in train_classes:
                by_split["train" if row.csv_split == "train" else "val"].append(row)
            elif row.label_name in ood_classes:
                if row.csv_split in ood_csv_splits:
                    by_split["ood"].append(row)
            else:
                unused[row.label_name] += 1
        if unused:
            self.report.note(
                f"{sum(unused.values())} csv rows of {len(unused)} classes outside the train "
                "and ood class lists were not used"
            )

        clips_dir = media_pairs.manual_path(manual_dir, config.clips_dir)
        splits = {}
        for split, split_rows in by_split.items():
            jobs = self._jobs(split_rows, clips_dir, labels)
            if not jobs:
                if split != "ood" or ood_classes:
                    self.report.note(f"split {split}: no clip found, split left out")
                continue
            splits[split] = self.split_pairs(split, jobs, self._clip_pair)
        return self.require_splits(splits)

    def _classes(
        self, config: VggsoundConfig, known: set[str], manual_dir: str
    ) -> tuple[set[str], set[str]]:
        ood = set(parse_class_list(config.ood_classes, known, (manual_dir,)))
        train = set(parse_class_list(config.train_classes, known, (manual_dir,)))
        if not train:
            train = known - ood
        if both := train & ood:
            raise ValueError(f"vggsound: classes in both train and ood lists: {sorted(both)}")
        for name in sorted((train | ood) - known):
            self.report.note(f"class {name!r} of the class lists has no row in the csv")
        return train & known, ood & known

    def _jobs(
        self, rows: list[ClipRow], clips_dir: str, labels: dict[str, int]
    ) -> list[tuple[str, str, int, str]]:
        """(path, clip_id, label, label_name) of each clip on disk; the others are reported."""
        config = self.builder_config
        jobs, seen = [], set()
        for row in rows:
            if row.clip_id in seen:
                self.report.note(f"{row.clip_id}: listed again on csv line {row.line}; kept once")
                continue
            seen.add(row.clip_id)
            name = config.clip_pattern.format(youtube_id=row.youtube_id, start=row.start)
            path = os.path.join(clips_dir, name)
            if not os.path.isfile(path):
                self.report.skip(path, "clip file not found")
                continue
            jobs.append((path, row.clip_id, labels[row.label_name], row.label_name))
        return jobs

    def _clip_pair(self, job: tuple[str, str, int, str]) -> Outcome:
        path, clip_id, label, label_name = job
        config = self.builder_config
        outcome = Outcome()
        clip = media_pairs.decode_clip(path, config, outcome, per_second=False)
        if clip is not None:
            media_pairs.frame_pair(
                outcome,
                config,
                clip.middle_frame,
                clip.middle_audio(config.max_audio_seconds),
                path=path,
                lossy_source=True,
                relevant=clip.has_audio,
                label=label,
                label_name=label_name,
                clip_id=clip_id,
                second=-1,
            )
        return outcome
