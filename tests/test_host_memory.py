"""`host_memory.retain`: a CPU program's buffers are reused, not faulted in again each call."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

import jax.numpy as jnp
import pytest

from aiaic_jax import host_memory

ROOT = Path(__file__).resolve().parents[1]

# 64 MB in, 64 MB out and as much again in temporaries: above glibc's largest mmap threshold
# (32 MB), so under its defaults every call maps its buffers afresh.
_CALLS = textwrap.dedent(
    """
    import json, resource, sys
    from aiaic_jax import host_memory
    outcome = host_memory.retain()
    import jax, jax.numpy as jnp
    f = jax.jit(lambda x: jnp.cumsum(jnp.sin(x) * 2.0) + jnp.cos(x[::-1]))
    x = jnp.ones((16 * 2**20,), jnp.float32)
    for _ in range(2):
        f(x).block_until_ready()
    faults = []
    for _ in range(5):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        f(x).block_until_ready()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(json.dumps({"outcome": outcome, "faults": faults}))
    """
)


def _calls(**env: str) -> dict:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", **env}
    environment.pop("GLIBC_TUNABLES", None)
    if host_memory.ENV_VAR not in env:
        environment.pop(host_memory.ENV_VAR, None)
    done = subprocess.run(
        [sys.executable, "-c", _CALLS], capture_output=True, text=True, env=environment, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_retain_reuses_the_buffers_of_earlier_calls():
    kept = _calls()
    released = _calls(AIAIC_HOST_MEMORY="release")
    assert kept["outcome"] == "retain"
    assert released["outcome"] == "released by AIAIC_HOST_MEMORY"
    # Released, each of the 5 calls faults its 128 MB or more in again: 32,768 pages of 4 KB, or
    # 64 huge pages where transparent huge pages are always on. Kept, hardly any in a typical
    # call: the median, since on a loaded machine the five calls together once faulted 17,481
    # pages (a CI run, tests in parallel), a few when run alone.
    assert statistics.median(released["faults"]) >= 64, released
    assert statistics.median(kept["faults"]) < statistics.median(released["faults"]) / 10, (
        kept,
        released,
    )


def _fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host_memory, "_result", None)
    monkeypatch.delenv(host_memory.ENV_VAR, raising=False)
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)


def test_an_accelerator_named_first_leaves_the_defaults(monkeypatch):
    _fresh(monkeypatch)
    monkeypatch.setenv("JAX_PLATFORMS", "cuda,cpu")
    assert host_memory.retain() == "accelerator: JAX_PLATFORMS=cuda,cpu"
    # Idempotent: the first answer stays, whatever changes after it.
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert host_memory.retain() == "accelerator: JAX_PLATFORMS=cuda,cpu"


def test_the_test_process_itself_keeps_the_defaults():
    assert host_memory.retain() == "the test process keeps the defaults"


def test_release_and_a_running_client_leave_the_defaults(monkeypatch):
    _fresh(monkeypatch)
    monkeypatch.setenv(host_memory.ENV_VAR, "release")
    assert host_memory.retain() == "released by AIAIC_HOST_MEMORY"

    _fresh(monkeypatch)
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    jnp.zeros(2).block_until_ready()  # this process's CPU client exists from here on
    assert host_memory.retain() == "CPU client already created"
