"""`compile_cache.enable`: where the persistent compilation cache lives, and that a second
process reads back what the first one compiled."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from aiaic_jax import compile_cache

ROOT = Path(__file__).resolve().parents[1]
_JAX_OPTIONS = (
    "jax_enable_compilation_cache",
    "jax_compilation_cache_dir",
    "jax_persistent_cache_min_compile_time_secs",
    "jax_persistent_cache_min_entry_size_bytes",
)
_VARIABLES = (
    compile_cache.ENV_VAR,
    "JAX_COMPILATION_CACHE_DIR",
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES",
    "XDG_CACHE_HOME",
)


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """A process in which `enable` was never called and nothing names a cache; the session's
    JAX options (tests/conftest.py's cache directory) come back afterwards. Nothing compiles
    while they are changed, so no other test sees them."""
    saved = {name: getattr(jax.config, name) for name in _JAX_OPTIONS}
    monkeypatch.setattr(compile_cache, "_result", None)
    for name in _VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", None)
    yield monkeypatch
    for name, value in saved.items():
        jax.config.update(name, value)


def test_the_project_variable_names_the_directory_and_lowers_the_thresholds(fresh, tmp_path):
    fresh.setenv(compile_cache.ENV_VAR, str(tmp_path / "mine"))
    fresh.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax_own"))
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "jax_own"))

    assert compile_cache.enable() == str(tmp_path / "mine")
    assert (tmp_path / "mine").is_dir()
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "mine")
    assert jax.config.jax_persistent_cache_min_compile_time_secs == (
        compile_cache.MIN_COMPILE_SECONDS
    )
    assert jax.config.jax_persistent_cache_min_entry_size_bytes == -1


def test_a_threshold_set_through_jax_variables_is_kept(fresh, tmp_path):
    fresh.setenv(compile_cache.ENV_VAR, str(tmp_path / "mine"))
    fresh.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "3")
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 3.0)

    compile_cache.enable()
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 3.0


@pytest.mark.parametrize("value", ["off", "OFF", "0", ""])
def test_off_values_turn_the_cache_off(fresh, tmp_path, value):
    fresh.setenv(compile_cache.ENV_VAR, value)
    fresh.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))

    assert compile_cache.enable() is None
    assert jax.config.jax_compilation_cache_dir is None
    assert not (tmp_path / "xdg").exists()


def test_jax_own_directory_is_left_to_jax(fresh, tmp_path):
    fresh.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax_own"))
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "jax_own"))  # as at import
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)

    assert compile_cache.enable() == str(tmp_path / "jax_own")
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "jax_own")
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 1.0


def test_the_default_is_under_xdg_cache_home_else_home_cache(fresh, tmp_path):
    fresh.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    expected = tmp_path / "xdg" / "aiaic_jax" / "jax"
    assert compile_cache.enable() == str(expected)
    assert expected.is_dir()

    fresh.setattr(compile_cache, "_result", None)  # as in a new process
    jax.config.update("jax_compilation_cache_dir", None)
    fresh.delenv("XDG_CACHE_HOME")
    expected = tmp_path / "home" / ".cache" / "aiaic_jax" / "jax"
    assert compile_cache.enable() == str(expected)
    assert jax.config.jax_compilation_cache_dir == str(expected)


def test_later_calls_return_the_first_answer(fresh, tmp_path):
    fresh.setenv(compile_cache.ENV_VAR, str(tmp_path / "first"))
    assert compile_cache.enable() == str(tmp_path / "first")
    fresh.setenv(compile_cache.ENV_VAR, str(tmp_path / "second"))
    assert compile_cache.enable(tmp_path / "third") == str(tmp_path / "first")
    assert not (tmp_path / "second").exists()


def test_an_unusable_directory_warns_once_and_runs_without_cache(fresh, tmp_path, caplog):
    (tmp_path / "a_file").write_text("not a folder")
    fresh.setenv(compile_cache.ENV_VAR, str(tmp_path / "a_file" / "cache"))

    with caplog.at_level(logging.WARNING):
        assert compile_cache.enable() is None
        assert compile_cache.enable() is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(tmp_path / "a_file" / "cache") in warnings[0].getMessage()
    assert jax.config.jax_compilation_cache_dir is None


# A fresh process that compiles the way the train loop does (train/loop.py `_fast_init`:
# `.lower().compile(compiler_options=...)` under the non-partitionable threefry) and reports
# whether that compile was read from the cache.
_COMPILE_ONCE = """
import json, sys
import jax, jax.numpy as jnp
from aiaic_jax import compile_cache

directory = compile_cache.enable()
hits = []
jax.monitoring.register_event_listener(
    lambda event, **_: hits.append(event) if event == "/jax/compilation_cache/cache_hits" else None
)

def init(key, x):
    w = jax.random.normal(key, (32, 32))
    return jnp.tanh(x @ w).sum()

options = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
with jax.threefry_partitionable(False):
    lowered = jax.jit(init).lower(jax.random.key(0), jnp.ones((4, 32)))
    before = len(hits)
    compiled = lowered.compile(compiler_options=options)
    value = float(compiled(jax.random.key(0), jnp.ones((4, 32))))
print(json.dumps({"directory": directory, "hit": len(hits) > before, "value": value}))
"""


def test_a_second_process_reads_the_first_ones_compile_from_the_cache(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "AIAIC_"))}
    env.update(
        JAX_PLATFORMS="cpu",
        PYTHONPATH=str(ROOT),
        AIAIC_COMPILATION_CACHE=str(tmp_path / "cache"),
        # Every compile is written, however fast: this small one takes milliseconds.
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    )

    def run():
        done = subprocess.run(
            [sys.executable, "-c", _COMPILE_ONCE], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.splitlines()[-1])

    first = run()
    entries = sorted(p.name for p in (tmp_path / "cache").glob("jit_init-*"))
    second = run()

    assert first["directory"] == str(tmp_path / "cache")
    assert not first["hit"]
    assert len(entries) == 1
    assert second["hit"]
    assert sorted(p.name for p in (tmp_path / "cache").glob("jit_init-*")) == entries
    assert second["value"] == first["value"]
