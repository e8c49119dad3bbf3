"""Device batches made ahead of the train step, so that the accelerator does not wait on the host.

`DevicePrefetch` wraps the host data iterator (a grain `DatasetIterator`): a background thread
takes each host batch, assembles the global sharded arrays (`parallel.to_global`) and keeps up to
`size` of them ready in a bounded queue while the step runs. The thread records the iterator's
state right after each `next()` and hands it over with that batch, so `get_state()` describes
the last batch the training loop consumed, never the batches made ahead: a checkpoint written
from it resumes exactly where training stopped.
"""

from __future__ import annotations

import copy
import queue
import threading
from collections.abc import Iterator
from typing import Any, Protocol

import jax
from jax.sharding import Mesh

from aiaic_jax.train import parallel


class HostIterator(Protocol):
    """What the prefetcher reads: host batches (dicts of numpy arrays) and a resumable state
    (grain's `DatasetIterator` has both)."""

    def __next__(self) -> dict[str, Any]: ...

    def get_state(self) -> dict[str, Any]: ...


class _Failed:
    """The exception that ended the producer, queued in place of the batch it failed to make."""

    def __init__(self, error: BaseException):
        self.error = error


class DevicePrefetch(Iterator[dict[str, jax.Array]]):
    """Global device batches from `iterator`, up to `size` made ahead by a background thread.

    iterator: host batches, each this process's share of a global batch.
    mesh: the batches are sharded over its `data` axis (`parallel.to_global`).
    size: batches kept ready ahead of the consumer (the thread prepares one more while the
        queue is full); 0 makes each batch on demand in the caller's thread, with no thread.

    An exception raised while making a batch (a bad record, the end of a finite iterator)
    is raised by the `next()` that would have returned that batch, after every batch made
    before it; the thread stops there. `close()` (or leaving a `with` block) stops the thread;
    the iterator itself stays open and belongs to the caller.
    """

    def __init__(self, iterator: HostIterator, mesh: Mesh, size: int = 2):
        if size < 0:
            raise ValueError(f"prefetch size must be 0 or more, got {size}")
        self._iterator = iterator
        self._mesh = mesh
        self._size = int(size)
        self._closed = False
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None
        if self._size == 0:
            return
        # Taken before the thread advances the iterator: the state with nothing consumed.
        self._consumed_state = copy.deepcopy(iterator.get_state())
        self._ready: queue.Queue = queue.Queue(maxsize=self._size)
        self._stop = threading.Event()
        # A daemon thread: a consumer that dies without close() does not keep the process alive.
        self._thread = threading.Thread(target=self._produce, name="device-prefetch", daemon=True)
        self._thread.start()

    @property
    def size(self) -> int:
        return self._size

    def _produce(self) -> None:
        while not self._stop.is_set():
            try:
                host_batch = next(self._iterator)
                state = copy.deepcopy(self._iterator.get_state())
                item: tuple[dict[str, jax.Array], dict[str, Any]] | _Failed = (
                    parallel.to_global(host_batch, self._mesh),
                    state,
                )
            except BaseException as error:  # every kind, StopIteration too, goes to the consumer
                item = _Failed(error)
            # Blocks while `size` batches wait; close() drains the queue, so this returns.
            self._ready.put(item)
            if isinstance(item, _Failed):
                return

    def __iter__(self) -> DevicePrefetch:
        return self

    def __next__(self) -> dict[str, jax.Array]:
        if self._closed:
            raise ValueError("the device prefetcher is closed")
        if self._failure is not None:
            raise self._failure
        if self._thread is None:
            return parallel.to_global(next(self._iterator), self._mesh)
        item = self._ready.get()
        if isinstance(item, _Failed):
            self._failure = item.error
            raise item.error
        batch, self._consumed_state = item
        return batch

    def get_state(self) -> dict[str, Any]:
        """The iterator's state just after the last batch returned by `next()` (what a
        checkpoint saves; restoring it into a fresh iterator continues with the next batch)."""
        if self._thread is None:
            return self._iterator.get_state()
        return copy.deepcopy(self._consumed_state)

    def close(self) -> None:
        """Stops the thread and drops the batches made ahead; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._thread is None:
            return
        self._stop.set()
        # The producer puts at most one more item after the stop is set; emptying the queue
        # frees room for it, so the thread is never left blocked on a full queue.
        while self._thread.is_alive():
            try:
                self._ready.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()
        while not self._ready.empty():
            self._ready.get_nowait()

    def __enter__(self) -> DevicePrefetch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
