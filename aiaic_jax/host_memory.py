"""Host memory for XLA:CPU's programs: freed buffers stay mapped and the next step reuses them.

XLA:CPU allocates each execution's buffers anew and frees them when it ends. glibc's malloc
serves a block above its mmap threshold (32 MB at most) with a fresh mapping and unmaps it on
free, so every training step faults its temporaries in and has the kernel zero them again: on a
2-core Xeon the demo's baseline step (batch 16, 81 MB of temporaries) takes 22,000 minor page
faults and a fifth of its CPU time in the kernel. `retain` keeps them:

- `mallopt(M_MMAP_MAX, 0)` and `mallopt(M_TRIM_THRESHOLD, SIZE_MAX)`: large blocks come from the
  heap, and freed memory stays there for the next request instead of going back to the kernel.
- `jax_cpu_enable_async_dispatch = False`: the CPU client runs each program on the thread that
  calls it, so its buffers come from the main thread's heap. Dispatched asynchronously they
  come from a worker thread's arena, whose heaps are at most 64 MB: glibc maps a larger block
  afresh whatever M_MMAP_MAX says.

`PYTHONPATH=. python bench/host_memory.py` measures it (docs/accelerators.md, "The host
allocator"). The cost: the process's memory does not shrink after its peak, and the Python
thread waits for each CPU step instead of queueing the next (a training loop reads the step's
metrics soon anyway; the input pipeline runs in its own threads).

The mains call `retain` (train.py, eval.py, `aiaic`, the demo; and the benches that time what
they run), before JAX creates its CPU client. It applies only where the programs run on the
CPU: when `JAX_PLATFORMS` names another platform first, or a GPU or TPU plugin for JAX is
installed, it changes nothing. `AIAIC_HOST_MEMORY=release` keeps glibc's and JAX's defaults.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import os
import pkgutil
import sys

import jax
from absl import logging

ENV_VAR = "AIAIC_HOST_MEMORY"
_RELEASE_VALUES = ("release", "off", "0")

# glibc's malloc.h; a trim threshold of -1 is SIZE_MAX: never trim.
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_SETTINGS = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1))

# The first call's answer, so that later calls change nothing and log nothing.
_result: tuple[str] | None = None


def retain() -> str:
    """Applies the settings above when they apply here. Returns what was done: "retain", or
    why not ("released by AIAIC_HOST_MEMORY", "not glibc", "accelerator: ...", "CPU client
    already created"). Idempotent: later calls return the first call's answer."""
    global _result
    if _result is None:
        _result = (_retain(),)
        logging.info("host memory: %s", _result[0])
    return _result[0]


def decline(reason: str) -> None:
    """Keeps glibc's and JAX's defaults in this process: a later `retain` changes nothing and
    returns `reason`. For a process that runs many unrelated programs of its own, such as a test
    session, whose mains called in-process must not change its allocator halfway."""
    global _result
    if _result is None:
        _result = (reason,)


def _retain() -> str:
    if os.environ.get(ENV_VAR, "").strip().lower() in _RELEASE_VALUES:
        return f"released by {ENV_VAR}"
    accelerator = _accelerator()
    if accelerator:
        return f"accelerator: {accelerator}"
    if not sys.platform.startswith("linux"):
        return "not glibc"
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return "not glibc"
    if _cpu_client_exists():
        return "CPU client already created"
    for parameter, value in _SETTINGS:
        if mallopt(parameter, value) != 1:
            return f"mallopt refused parameter {parameter}"
    jax.config.update("jax_cpu_enable_async_dispatch", False)
    return "retain"


def _accelerator() -> str:
    """What makes JAX's default backend something else than the CPU, or ""."""
    platforms = (os.environ.get("JAX_PLATFORMS") or jax.config.jax_platforms or "").strip()
    first = platforms.split(",")[0].strip().lower()
    if first and first != "cpu":
        return f"JAX_PLATFORMS={platforms}"
    if first == "cpu":
        return ""
    # PJRT plugins (CUDA, ROCm, ...), found as JAX finds them: modules of the `jax_plugins`
    # namespace package and entry points of the `jax_plugins` group.
    plugins = {entry.name for entry in importlib.metadata.entry_points(group="jax_plugins")}
    try:
        import jax_plugins

        plugins |= {module.name for module in pkgutil.iter_modules(jax_plugins.__path__)}
    except ImportError:
        pass
    if importlib.util.find_spec("libtpu") is not None:
        plugins.add("libtpu")
    return ", ".join(sorted(plugins))


def _cpu_client_exists() -> bool:
    from jax._src import xla_bridge

    return bool(xla_bridge.backends_are_initialized())


def release_free() -> None:
    """Returns the heap memory that compiling freed to the operating system (glibc's
    `malloc_trim`; nothing elsewhere).

    XLA's compiler allocates in many small pieces that glibc keeps after they are freed: without
    this, a DDColor-T training process at batch 4 keeps about 1 GB it never uses again
    (bench/models.py, max RSS, 2-core CPU, glibc's defaults). With `retain` the step's buffers
    then come from the heap that this leaves, faulted in once by the first step.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
