"""Host input pipelines: batches, determinism, resumable state, sharding, evaluation padding."""

import collections
import itertools

import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest

from aiaic_jax.data import pipeline
from aiaic_jax.data.builders.synthetic import Synthetic, SyntheticConfig

TRAIN_PAIRS, VAL_PAIRS = 40, 21


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """`config.data` fields over a small synthetic dataset (32x32 images, 0.5 s audio)."""
    data_dir = str(tmp_path_factory.mktemp("data"))
    config = SyntheticConfig(
        name="small",
        image_size=32,
        audio_seconds=0.5,
        train_pairs=TRAIN_PAIRS,
        val_pairs=VAL_PAIRS,
        ave_like_videos=2,
        ood_pairs=5,
    )
    Synthetic(data_dir=data_dir, config=config).build()
    return dict(
        data_dir=data_dir,
        name="synthetic",
        config_name="small",
        train_split="train",
        image_size=24,  # smaller than stored: exercises the resize
        audio_seconds=0.75,  # longer than stored: exercises the tiling
        batch_size=8,
        eval_batch_size=8,
        num_workers=0,
    )


def _train(data, seed=0, index=0, count=1, **overrides):
    return pipeline.train_iterator(
        {**data, **overrides}, seed=seed, process_index=index, process_count=count
    )


def _ids(batches):
    return [str(i) for b in batches for i, m in zip(b["id"], b["mask"]) if m]


def test_train_batches_have_the_documented_shapes_and_dtypes(data):
    batch = next(_train(data))
    expected = {
        "rgb": (np.uint8, (8, 24, 24, 3)),
        "audio": (np.int16, (8, 12000)),
        "has_audio": (np.bool_, (8,)),
        "relevant": (np.bool_, (8,)),
        "label": (np.int32, (8,)),
        "mask": (np.bool_, (8,)),
    }
    assert {k: (v.dtype.type, v.shape) for k, v in batch.items() if k != "id"} == expected
    assert batch["id"].shape == (8,) and batch["id"].dtype.kind == "U"
    assert all(i.startswith("train_") and i.endswith(":-1") for i in batch["id"])
    assert batch["mask"].all() and batch["has_audio"].all() and batch["relevant"].all()


def test_same_seed_gives_the_same_batches_and_another_seed_another_order(data):
    first = [next(it) for it in [_train(data, seed=1)] for _ in range(3)]
    again = [next(it) for it in [_train(data, seed=1)] for _ in range(3)]
    other = [next(it) for it in [_train(data, seed=2)] for _ in range(3)]
    for a, b in zip(first, again):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    assert _ids(first) != _ids(other)


def test_each_epoch_visits_every_pair_once_in_a_new_order(data):
    iterator = _train(data, batch_size=4)
    epoch = TRAIN_PAIRS // 4
    first = _ids(itertools.islice(iterator, epoch))
    second = _ids(itertools.islice(iterator, epoch))
    assert len(set(first)) == TRAIN_PAIRS and set(first) == set(second)
    assert first != second


def test_training_flips_and_crops_with_the_seed():
    record = {
        "image": np.arange(6 * 9 * 3, dtype=np.uint8).reshape(6, 9, 3),
        "audio": np.arange(5, dtype=np.int16),
        "has_audio": True,
        "relevant": True,
        "label": 3,
        "clip_id": b"clip",
        "second": 2,
    }
    transform = pipeline._TrainPair(image_size=6, num_samples=12)
    crops = [transform.random_map(record, np.random.default_rng(s))["rgb"] for s in range(16)]
    windows = [record["image"][:, left : left + 6] for left in range(4)]
    assert all(any((c == w).all() or (c == w[:, ::-1]).all() for w in windows) for c in crops)
    assert any((c == w[:, ::-1]).all() for c in crops for w in windows)  # some are flipped
    assert len({c.tobytes() for c in crops}) > 2
    element = transform.random_map(record, np.random.default_rng(0))
    assert element["id"] == "clip:2"
    np.testing.assert_array_equal(element["audio"], np.tile(np.arange(5), 3)[:12])


def test_restored_state_gives_the_same_next_batch_in_a_fresh_iterator(data):
    iterator = _train(data, seed=3)
    for _ in range(7):  # past the first epoch of 5 batches
        next(iterator)
    state = iterator.get_state()
    expected = next(iterator)
    resumed = _train(data, seed=3)
    resumed.set_state(state)
    batch = next(resumed)
    for key in expected:
        np.testing.assert_array_equal(batch[key], expected[key])


def test_orbax_checkpoint_manager_saves_and_restores_the_iterator(data, tmp_path):
    iterator = _train(data, seed=4)
    next(iterator)
    with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
        manager.save(1, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(iterator)))
        manager.wait_until_finished()
    expected = next(iterator)
    resumed = _train(data, seed=4)
    with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
        manager.restore(
            1, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(resumed))
        )
    np.testing.assert_array_equal(next(resumed)["id"], expected["id"])


def test_process_shards_are_disjoint_and_cover_the_split(data):
    shards = []
    for index in range(2):
        iterator = _train(data, index=index, count=2, batch_size=2)  # one pair per batch
        shards.append(set(_ids(itertools.islice(iterator, TRAIN_PAIRS // 2))))
    assert not shards[0] & shards[1]
    assert len(shards[0] | shards[1]) == TRAIN_PAIRS


@pytest.mark.parametrize("count", [1, 2, 3])
def test_evaluation_pads_so_every_pair_comes_once_and_processes_agree(data, count):
    per_process = [
        list(
            pipeline.eval_batches(
                {**data, "eval_batch_size": 2 * count}, "val", process_index=i, process_count=count
            )
        )
        for i in range(count)
    ]
    assert len({len(batches) for batches in per_process}) == 1
    ids = [i for batches in per_process for i in _ids(batches)]
    assert len(ids) == VAL_PAIRS and len(set(ids)) == VAL_PAIRS
    padding = [b for batches in per_process for b in batches if not b["mask"].all()]
    for batch in padding:
        assert not batch["has_audio"][~batch["mask"]].any()
        assert (batch["label"][~batch["mask"]] == -1).all()
        assert (batch["rgb"][~batch["mask"]] == 0).all()
    assert all(b["rgb"].shape == (2, 24, 24, 3) for b in per_process[0])


def test_evaluation_is_the_same_every_time(data):
    first = list(pipeline.eval_batches(data, "val", process_index=0, process_count=1))
    again = list(pipeline.eval_batches(data, "val", process_index=0, process_count=1))
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a["rgb"], b["rgb"])


def test_missing_audio_becomes_zeros_with_has_audio_false(data):
    batches = list(pipeline.eval_batches(data, "ave_like", process_index=0, process_count=1))
    has_audio = np.concatenate([b["has_audio"][b["mask"]] for b in batches])
    relevant = np.concatenate([b["relevant"][b["mask"]] for b in batches])
    audio = np.concatenate([b["audio"][b["mask"]] for b in batches])
    assert (~has_audio).sum() == 3 and (has_audio & ~relevant).sum() == 5  # 15%, 25% of 20
    assert not audio[~has_audio].any() and audio[has_audio].any(axis=1).all()
    ids = collections.Counter(i.split(":")[1] for i in _ids(batches))
    assert sorted(ids) == [str(s) for s in range(10)]


def test_worker_processes_give_the_same_batches(data):
    expected = [next(it) for it in [_train(data, seed=5)] for _ in range(2)]
    iterator = _train(data, seed=5, num_workers=1)
    try:
        batches = [next(iterator) for _ in range(2)]
    finally:
        iterator.close()
    for a, b in zip(expected, batches):
        np.testing.assert_array_equal(a["rgb"], b["rgb"])
        np.testing.assert_array_equal(a["id"], b["id"])


def test_fit_audio_tiles_short_crops_long_and_fills_empty():
    clip = np.array([1, 2, 3], np.int16)
    np.testing.assert_array_equal(pipeline.fit_audio(clip, 7), [1, 2, 3, 1, 2, 3, 1])
    np.testing.assert_array_equal(pipeline.fit_audio(clip, 2), [1, 2])
    empty = pipeline.fit_audio(np.zeros(0, np.int16), 4)
    assert empty.dtype == np.int16 and not empty.any() and empty.shape == (4,)


def test_resize_makes_the_shorter_side_the_model_size():
    image = np.zeros((40, 100, 3), np.uint8)
    assert pipeline.resize_shorter_side(image, 20).shape == (20, 50, 3)
    assert pipeline.resize_shorter_side(image, 40) is image


def test_unusable_settings_fail_with_a_clear_message(data, tmp_path):
    with pytest.raises(ValueError, match="batch_size=9"):
        _train(data, count=2, batch_size=9)
    with pytest.raises(FileNotFoundError, match="no built dataset"):
        _train(data, data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="'test' not in"):
        pipeline.eval_batches(data, "test", process_index=0, process_count=1)
