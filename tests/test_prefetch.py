"""The device prefetcher: same batches in the same order as the plain iterator, a saved state
that resumes exactly after the consumed batches, errors raised at the batch that failed, and a
thread that stops on close."""

import threading
import time

import grain
import numpy as np
import pytest

from aiaic_jax.train import checkpoint, parallel
from aiaic_jax.train.prefetch import DevicePrefetch

BATCH = 2


def _iterator(seed: int = 0) -> grain.DatasetIterator:
    """An endless shuffled grain iterator of {"index": int32 [2], "value": float32 [2, 3]}."""
    dataset = (
        grain.MapDataset.range(10)
        .seed(seed)
        .shuffle()
        .repeat()
        .map(lambda i: {"index": np.int32(i), "value": np.full(3, i / 10, np.float32)})
        .to_iter_dataset(grain.ReadOptions(num_threads=0))  # no read threads: fast to start
        .batch(BATCH, drop_remainder=True)
    )
    return iter(dataset)


def _host(batch) -> dict[str, np.ndarray]:
    return {key: np.asarray(value) for key, value in batch.items()}


@pytest.fixture(scope="module")
def mesh():
    return parallel.make_mesh()


@pytest.mark.parametrize("size", [0, 1, 2, 5])
def test_batches_come_in_the_plain_iterators_order_as_global_arrays(mesh, size):
    plain = _iterator()
    expected = [next(plain) for _ in range(12)]
    with DevicePrefetch(_iterator(), mesh, size) as batches:
        got = [next(batches) for _ in range(12)]
    for want, batch in zip(expected, got, strict=True):
        assert batch["index"].sharding == parallel.batch_sharded(mesh)
        np.testing.assert_array_equal(_host(batch)["index"], want["index"])
        np.testing.assert_array_equal(_host(batch)["value"], want["value"])


@pytest.mark.parametrize("size", [0, 2])
def test_the_state_is_the_plain_iterators_after_the_consumed_batches(mesh, size):
    plain = _iterator(seed=3)
    prefetched = DevicePrefetch(_iterator(seed=3), mesh, size)
    assert prefetched.get_state() == plain.get_state()
    for _ in range(7):
        next(plain), next(prefetched)
        if size:
            time.sleep(0.01)  # let the thread run ahead: the state must not follow it
        assert prefetched.get_state() == plain.get_state()
    # A fresh iterator set to the saved state continues with the plain iterator's next batches.
    resumed = _iterator(seed=3)
    resumed.set_state(prefetched.get_state())
    prefetched.close()
    for _ in range(4):
        np.testing.assert_array_equal(next(resumed)["index"], next(plain)["index"])


def test_a_checkpoint_saves_the_consumed_state_and_restores_it(mesh, tmp_path):
    stage = checkpoint.StageCheckpoints(tmp_path, "baseline", keep=1)
    plain = _iterator(seed=1)
    with DevicePrefetch(_iterator(seed=1), mesh, 2) as batches:
        for _ in range(3):
            next(plain), next(batches)
        time.sleep(0.05)  # the thread is now batches ahead of the consumer
        stage.save(3, {"step": np.int32(3)}, batches, batch_size=BATCH)
    restored = _iterator(seed=1)
    state = {"step": np.int32(0)}
    stage.restore(3, state, parallel.replicated(mesh), restored)
    stage.close()
    for _ in range(3):
        np.testing.assert_array_equal(next(restored)["index"], next(plain)["index"])


class _Failing:
    """Batches 0, 1, 2, then `error`; states count the batches taken."""

    def __init__(self, error: BaseException):
        self.taken = 0
        self.error = error

    def __next__(self):
        if self.taken == 3:
            raise self.error
        self.taken += 1
        return {"index": np.full(BATCH, self.taken - 1, np.int32)}

    def get_state(self):
        return {"taken": self.taken}


@pytest.mark.parametrize("size", [0, 2])
def test_an_error_of_the_source_is_raised_at_the_batch_that_failed(mesh, size):
    batches = DevicePrefetch(_Failing(OSError("bad record")), mesh, size)
    for index in range(3):
        assert int(_host(next(batches))["index"][0]) == index
    with pytest.raises(OSError, match="bad record"):
        next(batches)
    assert batches.get_state() == {"taken": 3}  # the last batch consumed
    batches.close()


def test_the_end_of_a_finite_source_ends_iteration(mesh):
    with DevicePrefetch(_Failing(StopIteration()), mesh, 2) as batches:
        assert [int(_host(b)["index"][0]) for b in batches] == [0, 1, 2]


def test_close_stops_the_thread_even_with_a_full_queue(mesh):
    batches = DevicePrefetch(_iterator(), mesh, 2)
    next(batches)
    deadline = time.monotonic() + 10
    while batches._ready.qsize() < 2:  # the thread is now blocked on the full queue
        assert time.monotonic() < deadline, "the queue never filled"
        time.sleep(0.01)
    batches.close()
    assert not batches._thread.is_alive()
    assert not any(t.name == "device-prefetch" for t in threading.enumerate())
    with pytest.raises(ValueError, match="closed"):
        next(batches)


def test_size_zero_starts_no_thread(mesh):
    before = threading.active_count()
    batches = DevicePrefetch(_iterator(), mesh, 0)
    next(batches)
    assert threading.active_count() == before
    batches.close()
