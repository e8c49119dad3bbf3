"""Host input pipelines: grain over a built TFDS dataset (array_record) -> batches of pairs.

Every batch is a dict of numpy arrays, the per-process share of a global batch:

    rgb        uint8  [B, H, W, 3]   the colour image at the model resolution
    audio      int16  [B, T]         16 kHz mono, tiled or cropped to `audio_seconds`
    has_audio  bool   [B]            False: the clip has no audio (audio is zeros)
    relevant   bool   [B]            the audio belongs to what the image shows
    label      int32  [B]            class index within the dataset; -1 unknown or padding
    id         str    [B]            `clip_id:second`; "" for padding
    mask       bool   [B]            False marks evaluation padding; all True in training

Colour conversion and spectrograms happen later, inside the jitted step. `train_iterator`
returns a grain `DatasetIterator` whose state (`get_state`/`set_state`) the training loop saves
in its orbax CheckpointManager (through `train.prefetch.DevicePrefetch`, which gives the state
after the last batch the step consumed) and restores with
`grain.checkpoint.CheckpointRestore(iterator)`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from typing import Any

import grain
import numpy as np
import tensorflow_datasets as tfds
from absl import flags
from PIL import Image

from aiaic_jax.data.builders.common import SAMPLE_RATE

Batch = dict[str, np.ndarray]

# Threads that read and decode records ahead of the consumer, within each process or worker.
_READ_THREADS = 4


def dataset_dir(data: Mapping[str, Any]) -> str:
    """`<data_dir>/<name>/<config_name>/<version>` of a built dataset (the newest version)."""
    config_dir = os.path.join(data["data_dir"], data["name"], data["config_name"])
    versions = []
    if os.path.isdir(config_dir):
        for entry in os.listdir(config_dir):
            try:
                version = tfds.core.Version(entry)
            except ValueError:
                continue  # e.g. an `incomplete.*` directory of an interrupted build
            if os.path.exists(os.path.join(config_dir, entry, "dataset_info.json")):
                versions.append(version)
    if not versions:
        raise FileNotFoundError(
            f"no built dataset in {config_dir}; build it with "
            f"`python -m aiaic_jax.data.build {data['name']} --data_dir {data['data_dir']}`"
        )
    return os.path.join(config_dir, str(max(versions)))


def data_source(data: Mapping[str, Any], split: str) -> grain.sources.RandomAccessDataSource:
    """The random-access records of one split; images decode to uint8 arrays on access."""
    sources = tfds.builder_from_directory(dataset_dir(data)).as_data_source()
    if split not in sources:
        raise ValueError(
            f"split {split!r} not in the dataset at {dataset_dir(data)}; "
            f"it has {', '.join(sources)}"
        )
    return sources[split]


def train_iterator(
    data: Mapping[str, Any],
    *,
    seed: int,
    split: str | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
) -> grain.DatasetIterator:
    """An endless iterator of training batches for this process.

    Each process reads its own shard (every `process_count`-th record), shuffled with `seed`
    in a new order each epoch; images are resized (shorter side) to `image_size`, randomly
    cropped and flipped. Batches hold `batch_size / process_count` pairs; the remainder of an
    epoch flows into the next one, so no pair is skipped for good.
    """
    process_index, process_count = _process(process_index, process_count)
    batch = _per_process(data["batch_size"], process_count, "batch_size")
    source = data_source(data, split or data.get("train_split", "train"))
    if len(source) < process_count:
        raise ValueError(
            f"the training split has {len(source)} pairs, fewer than {process_count} processes"
        )
    dataset = (
        grain.MapDataset.source(source)[process_index::process_count]
        .seed(seed)
        .shuffle()
        .repeat()  # reseeds the shuffle and the augmentation every epoch
        .random_map(_TrainPair(data["image_size"], _num_samples(data)))
        .to_iter_dataset(_read_options(batch))
        .batch(batch, drop_remainder=True)
    )
    return iter(_with_workers(dataset, data))


def eval_batches(
    data: Mapping[str, Any],
    split: str,
    *,
    process_index: int | None = None,
    process_count: int | None = None,
) -> Iterator[Batch]:
    """Every pair of `split` exactly once, in order, as batches for this process.

    Images are resized (shorter side) to `image_size` and centre-cropped. The last batches are
    padded (`mask` False) so that every process yields the same number of batches of
    `eval_batch_size / process_count` pairs, as a collective evaluation step needs.
    """
    process_index, process_count = _process(process_index, process_count)
    batch = _per_process(data["eval_batch_size"], process_count, "eval_batch_size")
    source = data_source(data, split)
    num_batches = num_eval_batches(len(source), batch, process_count)
    shard = _PaddedShard(
        source,
        indices=range(process_index, len(source), process_count),
        length=num_batches * batch,
        image_size=data["image_size"],
        num_samples=_num_samples(data),
    )
    dataset = (
        grain.MapDataset.source(shard)
        .map(_EvalPair(data["image_size"], _num_samples(data)))
        .to_iter_dataset(_read_options(batch))
        .batch(batch)
    )
    return _closing(iter(_with_workers(dataset, data)))


def num_eval_batches(num_pairs: int, per_process_batch: int, process_count: int) -> int:
    """Batches each process yields for a split of `num_pairs` (the largest shard, rounded up)."""
    return math.ceil(math.ceil(num_pairs / process_count) / per_process_batch)


def fit_audio(audio: np.ndarray, num_samples: int) -> np.ndarray:
    """Tiles a short clip, crops a long one (from its start); empty -> zeros. [N] -> [T] int16."""
    audio = np.asarray(audio, np.int16)
    if audio.size == 0:
        return np.zeros(num_samples, np.int16)
    return np.tile(audio, math.ceil(num_samples / audio.size))[:num_samples]


def resize_shorter_side(image: np.ndarray, size: int) -> np.ndarray:
    """Resizes (bilinear, antialiased) so the shorter side is `size`. [H, W, 3] uint8."""
    height, width = image.shape[:2]
    if min(height, width) == size:
        return image
    scale = size / min(height, width)
    new_size = (max(size, round(width * scale)), max(size, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(new_size, Image.Resampling.BILINEAR))


def _element(record: Mapping[str, Any], rgb: np.ndarray, num_samples: int) -> dict[str, Any]:
    has_audio = bool(record["has_audio"]) and np.size(record["audio"]) > 0
    return {
        "rgb": np.ascontiguousarray(rgb),
        "audio": fit_audio(record["audio"], num_samples) if has_audio else _silence(num_samples),
        "has_audio": np.bool_(has_audio),
        "relevant": np.bool_(record["relevant"]),
        "label": np.int32(record["label"]),
        "id": f"{_text(record['clip_id'])}:{record['second']}",
        "mask": np.bool_(True),
    }


class _TrainPair(grain.transforms.RandomMap):
    """Record -> training element: shorter side to size, random crop, random flip."""

    def __init__(self, image_size: int, num_samples: int):
        self.image_size = image_size
        self.num_samples = num_samples

    def random_map(self, record: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        image = resize_shorter_side(record["image"], self.image_size)
        top = rng.integers(image.shape[0] - self.image_size + 1)
        left = rng.integers(image.shape[1] - self.image_size + 1)
        image = image[top : top + self.image_size, left : left + self.image_size]
        if rng.random() < 0.5:
            image = image[:, ::-1]
        return _element(record, image, self.num_samples)


class _EvalPair(grain.transforms.Map):
    """Record -> evaluation element: shorter side to size, centre crop; padding passes through."""

    def __init__(self, image_size: int, num_samples: int):
        self.image_size = image_size
        self.num_samples = num_samples

    def map(self, record: Mapping[str, Any] | dict[str, Any]) -> dict[str, Any]:
        if "mask" in record:  # padding made by _PaddedShard
            return record
        image = resize_shorter_side(record["image"], self.image_size)
        top = (image.shape[0] - self.image_size) // 2
        left = (image.shape[1] - self.image_size) // 2
        image = image[top : top + self.image_size, left : left + self.image_size]
        return _element(record, image, self.num_samples)


class _PaddedShard(grain.sources.RandomAccessDataSource):
    """One process's records of a split, followed by masked padding up to `length`."""

    def __init__(
        self,
        source: grain.sources.RandomAccessDataSource,
        indices: range,
        length: int,
        image_size: int,
        num_samples: int,
    ):
        self.source = source
        self.indices = indices
        self.length = length
        self.image_size = image_size
        self.num_samples = num_samples

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, position: int) -> Mapping[str, Any]:
        if position < len(self.indices):
            return self.source[self.indices[position]]
        return {
            "rgb": np.zeros((self.image_size, self.image_size, 3), np.uint8),
            "audio": _silence(self.num_samples),
            "has_audio": np.bool_(False),
            "relevant": np.bool_(False),
            "label": np.int32(-1),
            "id": "",
            "mask": np.bool_(False),
        }


def _with_workers(dataset: grain.IterDataset, data: Mapping[str, Any]) -> grain.IterDataset:
    workers = int(data.get("num_workers", 0))
    if workers <= 0:
        return dataset
    # Grain's workers read its absl flags; outside an absl main nothing has parsed them, and
    # their defaults are what we want.
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    return dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))


def _closing(iterator: grain.DatasetIterator) -> Iterator[Batch]:
    # Stops worker processes as soon as the split is done (or the consumer stops early).
    try:
        yield from iterator
    finally:
        iterator.close()


def _read_options(batch: int) -> grain.ReadOptions:
    return grain.ReadOptions(num_threads=_READ_THREADS, prefetch_buffer_size=2 * batch)


def _process(index: int | None, count: int | None) -> tuple[int, int]:
    if index is None or count is None:
        import jax  # only here: tests and tools pass the process explicitly

        index = jax.process_index() if index is None else index
        count = jax.process_count() if count is None else count
    if not 0 <= index < count:
        raise ValueError(f"process index {index} is outside [0, {count})")
    return index, count


def _per_process(global_batch: int, process_count: int, name: str) -> int:
    if global_batch <= 0 or global_batch % process_count:
        raise ValueError(
            f"data.{name}={global_batch} must be a positive multiple of the process count "
            f"{process_count}"
        )
    return global_batch // process_count


def _num_samples(data: Mapping[str, Any]) -> int:
    return round(data["audio_seconds"] * SAMPLE_RATE)


def _silence(num_samples: int) -> np.ndarray:
    return np.zeros(num_samples, np.int16)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
