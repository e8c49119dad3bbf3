"""Session set-up shared by every test process.

One persistent JAX compilation cache for the whole session: the xdist workers and the
training subprocesses that tests start inherit its directory from the controlling process,
so a program that several tests compile (the tiny model's stage steps, its evaluation) is
compiled once. It starts empty every session (nothing carries over between runs) and is
removed at the end. A directory set by the user (JAX_COMPILATION_CACHE_DIR) is left alone;
the project's own variable (AIAIC_COMPILATION_CACHE, which the mains read) is dropped, so that the
mains tests start use the session's cache, never the user's.

The test processes keep glibc's and JAX's host-memory defaults (`host_memory.decline`): a main
called in-process (`cli.main`) must not change a worker's allocator halfway through the session.
The mains that tests start as subprocesses set theirs as they do outside the tests.
"""

from __future__ import annotations

import os
import shutil
import tempfile

_OWN_CACHE = "AIAIC_TEST_OWN_JAX_CACHE"

# The modules that take a minute or more of a 2-core machine (`--durations`), longest first.
# `make test` hands whole modules to its two workers in collection order (`--dist loadfile
# --no-loadscope-reorder`). With these first, the short modules fill in at the end and both
# workers finish together; xdist's own order (most tests first) left one worker idle for
# about a minute while the other ran a long module.
LONG_MODULES = (
    "test_loop.py",
    "test_learning.py",
    "test_discolor.py",
    "test_runs.py",
    "test_precision.py",
    "test_eval.py",
    "test_parallel.py",
)


def pytest_configure(config) -> None:
    from aiaic_jax import host_memory

    host_memory.decline("the test process keeps the defaults")
    os.environ.pop("AIAIC_COMPILATION_CACHE", None)
    if hasattr(config, "workerinput") or "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return  # a worker inherits the controller's directory
    directory = tempfile.mkdtemp(prefix="aiaic_test_jax_cache_")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = directory
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
    os.environ[_OWN_CACHE] = directory


def pytest_unconfigure(config) -> None:
    if hasattr(config, "workerinput"):
        return
    directory = os.environ.pop(_OWN_CACHE, None)
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)
        os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)


def pytest_collection_modifyitems(config, items) -> None:
    """The long modules first (LONG_MODULES), the others in their collection order."""
    rank = {name: index for index, name in enumerate(LONG_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
