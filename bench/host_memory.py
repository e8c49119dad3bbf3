"""Does glibc's malloc cost XLA:CPU's training step time? Page faults, kernel time, step time and
peak memory of a compiled step under four allocator settings.

    PYTHONPATH=. python bench/host_memory.py        # DDColor-T 256 train bs 1, 4; demo 64 bs 16
    PYTHONPATH=. python bench/host_memory.py --only ddcolor_tiny:256:1:train --rounds 3

XLA:CPU allocates every execution's buffers anew and frees them when it ends; glibc serves each
request above its mmap threshold (32 MB at most) with a fresh mapping, so each step faults in and
zeroes its temporaries again. The settings, each in fresh processes (the first two are fixed at
process start):

- `glibc`: glibc's defaults.
- `hugetlb`: `GLIBC_TUNABLES=glibc.malloc.hugetlb=1`: glibc advises transparent huge pages on
  what it maps (this machine's THP mode is `madvise`), so a step faults 2 MB pages.
- `heap`: `mallopt` before JAX starts (two arenas, no mmap for large blocks, no trimming), so
  freed buffers stay mapped and the next step reuses them without faults.
- `retain`: what train.py, eval.py, `aiaic` and the demo do (`aiaic_jax.host_memory.retain`):
  no mmap for large blocks, no trimming, and JAX's CPU programs run on the calling thread, so
  that their buffers come from the main heap (a worker thread's arena maps blocks above 64 MB
  afresh whatever the settings).

Each configuration NAME:SIZE:BATCH:MODE (mode `train` or `forward`, as in bench/models.py) runs
once per setting per round, the settings alternating for --rounds rounds so that all see the same
drift of a shared machine. Per process: compile, two warm-up steps, then --steps timed steps;
reported are the median step time, minor page faults, user and kernel CPU time per step, and the
process's max RSS, then medians over the rounds.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIGS = (
    "ddcolor_tiny:256:1:train",
    "ddcolor_tiny:256:4:train",
    "ddcolor_demo:64:16:train",
)
SETTINGS = ("glibc", "hugetlb", "heap", "retain")
# mallopt parameters (glibc's malloc.h) for `heap`; -1 as a trim threshold is SIZE_MAX (never).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_HEAP = ((_M_ARENA_MAX, 2), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1))


def _child(config: str, steps: int, setting: str) -> dict:
    if setting == "heap":  # before JAX starts its threads: an arena, once taken, stays
        libc = ctypes.CDLL("libc.so.6")
        if not all(libc.mallopt(param, value) for param, value in _HEAP):
            raise SystemExit("mallopt refused a setting")
    if setting == "retain":
        from aiaic_jax import host_memory

        if host_memory.retain() != "retain":
            raise SystemExit(f"host_memory.retain: {host_memory.retain()}")
    from bench.models import _flax_setup

    name, size, batch, mode = config.split(":")
    run, _, _ = _flax_setup(name, int(size), int(batch), mode)
    run()
    run()
    rows = []
    for _ in range(steps):
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        run()
        elapsed = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
        rows.append(
            (
                elapsed,
                after.ru_minflt - before.ru_minflt,
                after.ru_utime - before.ru_utime,
                after.ru_stime - before.ru_stime,
            )
        )
    step_s, faults, user_s, kernel_s = (statistics.median(column) for column in zip(*rows))
    return {
        "config": config,
        "setting": setting,
        "step_s": step_s,
        "minor_faults": faults,
        "user_s": user_s,
        "kernel_s": kernel_s,
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _run(config: str, setting: str, steps: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("GLIBC_TUNABLES", None)
    env.pop("AIAIC_HOST_MEMORY", None)
    if setting == "hugetlb":
        env["GLIBC_TUNABLES"] = "glibc.malloc.hugetlb=1"
    process = subprocess.run(
        [sys.executable, __file__, "--child", config, "--setting", setting, "--steps", str(steps)],
        capture_output=True,
        text=True,
        env=env,
    )
    lines = [line for line in process.stdout.splitlines() if line.startswith("RESULT ")]
    if process.returncode or not lines:
        raise RuntimeError(f"{config} ({setting}) failed:\n{process.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def _thp_mode() -> str:
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return "unknown"
    return text.split("[")[1].split("]")[0] if "[" in text else text.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", default=list(DEFAULT_CONFIGS))
    parser.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=SETTINGS)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--setting", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(_child(args.child, args.steps, args.setting)))
        return

    print(
        f"{os.cpu_count()} CPUs, transparent huge pages: {_thp_mode()}; medians over "
        f"{args.rounds} rounds of {args.steps} steps"
    )
    print(
        f"{'config':26s} {'malloc':8s} {'step s':>7s} {'faults':>8s} {'user s':>7s} "
        f"{'kernel s':>8s} {'RSS MiB':>8s}"
    )
    for config in args.only:
        results = {setting: [] for setting in args.settings}
        for _ in range(args.rounds):
            for setting in args.settings:
                results[setting].append(_run(config, setting, args.steps))
        for setting, rows in results.items():

            def median(key: str, rows=rows) -> float:
                return statistics.median(row[key] for row in rows)

            print(
                f"{config:26s} {setting:8s} {median('step_s'):7.3f} {median('minor_faults'):8.0f} "
                f"{median('user_s'):7.3f} {median('kernel_s'):8.3f} {median('max_rss_mib'):8.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
