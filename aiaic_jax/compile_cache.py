"""JAX's persistent compilation cache for the programs: train.py, eval.py, `aiaic`, the demo.

XLA programs compiled by one run are written to a directory and read back by the next, so a
second `make demo` (or a resumed training run, or `aiaic colorize` on another file) does not
compile the train steps, initialisers and evaluation functions again. The directory is
chosen by `enable`, in this order:

1. `AIAIC_COMPILATION_CACHE`: a directory; `off`, `0` or an empty value turns the cache off.
2. `JAX_COMPILATION_CACHE_DIR`, JAX's own variable (or `jax_compilation_cache_dir` set by
   other code): JAX already uses it with its own settings; `enable` leaves it alone.
3. `default_dir` when the caller gives one, else `$XDG_CACHE_HOME/aiaic_jax/jax`, else
   `~/.cache/aiaic_jax/jax`.

The cache holds only compiled programs, keyed by the program, the compile options, the
devices and the jax/jaxlib version; it can be deleted at any time (the next run compiles
again). JAX trusts what it reads from the directory: do not point it at a folder that others
can write. It is not size-limited; JAX's `JAX_COMPILATION_CACHE_MAX_SIZE` (bytes) bounds it.

Libraries never call `enable`: only the mains do, after parsing their command line and before
anything compiles (JAX decides once per process, at the first compile, whether it uses a
cache). The tests, and the mains they start, use the session cache that tests/conftest.py
names in `JAX_COMPILATION_CACHE_DIR`, not the user's.
"""

from __future__ import annotations

import os
import tempfile

import jax
from absl import logging

ENV_VAR = "AIAIC_COMPILATION_CACHE"
_OFF_VALUES = ("", "0", "off")

# Programs that compile faster than this are not written. JAX's default, 1 s, would drop those
# of 0.1-1 s (colorize's compositing: 0.9 s on a 2-core CPU; parts of the metrics), which load
# back in milliseconds. Below 0.1 s are mostly the one-op programs of eager jnp calls, a new
# one for every new shape (each image size `aiaic colorize` meets): left out, so that the cache
# does not fill with them.
MIN_COMPILE_SECONDS = 0.1

# The first call's answer: (directory or None,). Later calls return it unchanged, so a main
# may call `enable` more than once and warnings appear once.
_result: tuple[str | None] | None = None


def enable(default_dir: str | os.PathLike | None = None) -> str | None:
    """Turns on JAX's persistent compilation cache (see the module docstring for where).

    Args:
      default_dir: the directory when neither AIAIC_COMPILATION_CACHE nor JAX's own setting
        names one (default: the user's cache folder, `~/.cache/aiaic_jax/jax`).

    Returns:
      The cache directory in use, or None when the cache is off: turned off by the variable,
      by `JAX_ENABLE_COMPILATION_CACHE=false`, or because the directory cannot be created or
      written (a warning says so; the program runs on without a cache). Idempotent: later
      calls return the first call's answer and change nothing.
    """
    global _result
    if _result is None:
        _result = (_enable(default_dir),)
    return _result[0]


def _enable(default_dir: str | os.PathLike | None) -> str | None:
    if not jax.config.jax_enable_compilation_cache:
        logging.info("JAX compilation cache: off (jax_enable_compilation_cache is false)")
        return None
    requested = os.environ.get(ENV_VAR)
    if requested is not None and requested.strip().lower() in _OFF_VALUES:
        logging.info("JAX compilation cache: off (%s=%r)", ENV_VAR, requested)
        return None
    if requested is None and jax.config.jax_compilation_cache_dir:
        directory = jax.config.jax_compilation_cache_dir
        logging.info("JAX compilation cache: %s (JAX's own setting)", directory)
        return directory

    if requested is not None:
        directory, source = os.path.expanduser(requested), ENV_VAR
    elif default_dir is not None:
        directory, source = os.fspath(default_dir), "default"
    else:
        directory, source = _user_cache_dir(), "default"
    directory = os.path.abspath(directory)
    problem = _unwritable(directory)
    if problem is not None:
        logging.warning(
            "JAX compilation cache: %s (%s) cannot be used (%s); running without it, every "
            "program is compiled. Set %s to another directory, or to 'off'.",
            directory,
            source,
            problem,
            ENV_VAR,
        )
        return None

    jax.config.update("jax_compilation_cache_dir", directory)
    # A threshold the user set through JAX's own variables stays theirs.
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    if "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES" not in os.environ:
        # -1: entries of any size; 0 (JAX's default) would let JAX pick a filesystem minimum.
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    logging.info(
        "JAX compilation cache: %s (%s; safe to delete; %s=off disables it)",
        directory,
        source,
        ENV_VAR,
    )
    return directory


def _user_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "aiaic_jax", "jax")


def _unwritable(directory: str) -> str | None:
    """Why `directory` cannot hold the cache (it is created if missing), or None."""
    try:
        os.makedirs(directory, exist_ok=True)
        # A real write: os.access says yes on read-only mounts and to root.
        descriptor, probe = tempfile.mkstemp(dir=directory, prefix=".write_test_")
        os.close(descriptor)
        os.remove(probe)
    except OSError as error:
        return f"{type(error).__name__}: {error.strerror or error}"
    return None
