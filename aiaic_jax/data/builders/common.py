"""What every AIAIC dataset stores, the build report, and the base class of the builders.

Every builder writes array_record files that `tfds.data_source` reads without TensorFlow. To
stay TensorFlow-free, images reach TFDS already encoded (PNG or JPEG bytes) and audio is an int16
`Tensor` (16 kHz mono), never `tfds.features.Audio`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds

from aiaic_jax.data.media import SAMPLE_RATE as SAMPLE_RATE  # the rate every dataset stores

REPORT_KEY = "build_report"


def option(default: Any, help: str) -> Any:
    """A builder option: a config field with the help text the build command line shows."""
    return dataclasses.field(default=default, metadata={"help": help})


def pair_features() -> tfds.features.FeaturesDict:
    """The features of one image-audio pair, shared by every builder."""
    return tfds.features.FeaturesDict(
        {
            # Encoded RGB bytes (PNG or JPEG); decoded with PIL by `tfds.data_source`.
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
            # 16 kHz mono int16 waveform; empty when the clip has no audio.
            # Stored as raw bytes: TFDS's default writes each sample as an int64, element by
            # element, which is slow and three times larger.
            "audio": tfds.features.Tensor(
                shape=(None,), dtype=np.int16, encoding=tfds.features.Encoding.BYTES
            ),
            "has_audio": np.bool_,
            # The audio belongs to what the image shows (AVE: the second lies inside the
            # annotated event; synthetic `ave_like`: the audio is the clip's own).
            "relevant": np.bool_,
            "label": np.int32,  # class index within the dataset; -1 when unknown
            "label_name": tfds.features.Text(),
            "clip_id": tfds.features.Text(),
            "second": np.int32,  # which whole second of the clip; -1 for the whole clip
        }
    )


@dataclasses.dataclass
class Skipped:
    path: str
    reason: str


@dataclasses.dataclass
class BuildReport:
    """Pairs written per split and every input the build could not use, with the reason."""

    dataset: str
    pairs: Counter = dataclasses.field(default_factory=Counter)
    skipped: list[Skipped] = dataclasses.field(default_factory=list)
    # Input that was used after a repair (e.g. an annotation line with EndTime 0).
    notes: list[str] = dataclasses.field(default_factory=list)
    # How many inputs a note applies to, for notes that would repeat per file
    # (e.g. "images stored without audio ...").
    tallies: Counter = dataclasses.field(default_factory=Counter)

    def count(self, split: str, n: int = 1) -> None:
        self.pairs[split] += n

    def skip(self, path: str | os.PathLike, reason: str) -> None:
        self.skipped.append(Skipped(os.fspath(path), reason))

    def note(self, text: str) -> None:
        self.notes.append(text)

    def tally(self, text: str, n: int = 1) -> None:
        self.tallies[text] += n

    @property
    def total_pairs(self) -> int:
        return sum(self.pairs.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "pairs": dict(sorted(self.pairs.items())),
            "skipped": [dataclasses.asdict(s) for s in self.skipped],
            "notes": list(self.notes),
            "tallies": dict(sorted(self.tallies.items())),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BuildReport:
        return cls(
            dataset=data["dataset"],
            pairs=Counter(data["pairs"]),
            skipped=[Skipped(**s) for s in data["skipped"]],
            notes=list(data.get("notes", [])),
            tallies=Counter(data.get("tallies", {})),
        )

    def format(self) -> str:
        """Human-readable report; the last line is `pairs=<N> skipped=<M>`."""
        lines = [f"dataset {self.dataset}"]
        lines += [f"  {split}: {n} pairs" for split, n in sorted(self.pairs.items())]
        notes = [*self.notes, *(f"{text}: {n}" for text, n in sorted(self.tallies.items()))]
        if notes:
            lines.append(f"notes ({len(notes)}):")
            lines += [f"  {n}" for n in notes]
        if self.skipped:
            lines.append(f"skipped ({len(self.skipped)}):")
            lines += [f"  {s.path}: {s.reason}" for s in self.skipped]
        lines.append(f"pairs={self.total_pairs} skipped={len(self.skipped)}")
        return "\n".join(lines)


class PairBuilder(tfds.core.GeneratorBasedBuilder):
    """Base of the AIAIC builders: shared features, a build report, array_record output.

    Subclasses define `BUILDER_CONFIG_CLASS` (a `tfds.core.BuilderConfig` dataclass whose extra
    fields are the builder's options; the build command line turns them into flags) and
    `_split_generators`, wrapping each split's (key, example) iterator in `self.pairs(split, it)`.
    Generators call `self.report.skip(path, reason)` for each input they cannot use and never
    raise for a bad input file. The report is stored in the dataset's `metadata.json`, written
    by TFDS together with the data, so a dataset on disk always carries the report of its build.
    """

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIG_CLASS: ClassVar[type[tfds.core.BuilderConfig]] = tfds.core.BuilderConfig

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)
        self.report = BuildReport(dataset=f"{self.name}/{self.builder_config.name}")

    # TFDS looks for a checksums file next to a builder's code through `importlib_resources`,
    # which it does not declare as a dependency on Python >= 3.9; nothing is downloaded here.
    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> None:
        return None

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self, features=pair_features(), metadata=tfds.core.MetadataDict()
        )

    def pairs(
        self, split: str, examples: Iterator[tuple[str, dict[str, Any]]]
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Passes a split's (key, example) pairs to TFDS, counting them in the report."""
        for key, example in examples:
            self.report.count(split)
            yield key, example
        # TFDS writes the metadata after the last split, inside the same atomic rename.
        self.info.metadata[REPORT_KEY] = self.report.to_json()

    def build(self, manual_dir: str | os.PathLike | None = None) -> BuildReport:
        """Generates every split unless the dataset is already built; returns its build report."""
        if not self.data_path.exists():
            config = tfds.download.DownloadConfig(
                manual_dir=os.fspath(manual_dir) if manual_dir else None
            )
            self.download_and_prepare(download_config=config)
        return read_report(self.data_dir)


def read_report(dataset_dir: str | os.PathLike) -> BuildReport:
    """The build report stored with a built dataset (`<data_dir>/<name>/<config>/<version>`)."""
    with open(os.path.join(dataset_dir, "metadata.json")) as f:
        return BuildReport.from_json(json.load(f)[REPORT_KEY])
