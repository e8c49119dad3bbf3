"""The corpus of broken media through the folder builder and `aiaic colorize`, as a user runs them.

PYTHONPATH=. python bench/broken_media.py                     # the demo model, random weights
PYTHONPATH=. python bench/broken_media.py --run runs/demo/full

Writes the corpus of tests/broken_media.py, runs `python -m aiaic_jax.data.build folder` and
`aiaic colorize` on it, each in its own process with a time limit, and prints per tool: inputs
tried (corpus entries), crashes (a traceback, or an exit status other than 0 and 1), hangs (the
time limit reached), good files lost, silently wrong results, and skips without their reason;
then every difference, file by file. The goal is 0 for each but the inputs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.colorize import random_run  # noqa: E402
from tests import broken_media  # noqa: E402


def _run(argv: list[str], timeout: float) -> tuple[int | None, str, str, float]:
    """(exit status or None after a hang, stdout, stderr, seconds)."""
    started = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": ROOT}
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
        )
    except subprocess.TimeoutExpired as expired:
        out = expired.stdout.decode() if isinstance(expired.stdout, bytes) else expired.stdout
        err = expired.stderr.decode() if isinstance(expired.stderr, bytes) else expired.stderr
        return None, out or "", err or "", time.perf_counter() - started
    return done.returncode, done.stdout, done.stderr, time.perf_counter() - started


def _build(entries: list, root: str, scratch: str, timeout: float) -> tuple[dict, list]:
    data_dir = os.path.join(scratch, "data")
    argv = [sys.executable, "-m", "aiaic_jax.data.build", "folder", "--data_dir", data_dir]
    status, _, err, seconds = _run([*argv, "--manual_dir", root], timeout)
    differences = []
    if status == 0:
        import tensorflow_datasets as tfds

        from aiaic_jax.data.builders import read_report

        dataset_dir = os.path.join(data_dir, "folder", "default", "1.0.0")
        report = read_report(dataset_dir)
        source = tfds.builder_from_directory(dataset_dir).as_data_source()["train"]
        stored = {}
        for index in range(len(source)):
            example = source[index]
            if int(example["second"]) == -1:
                stored[example["clip_id"].decode()] = bool(example["has_audio"])
        skipped = [(s.path, s.reason) for s in report.skipped]
        differences = broken_media.judge_build(entries, root, stored, skipped, report.notes)
    return _figures("builder", len(entries), status, err, seconds, differences), differences


def _colorize(
    entries: list, root: str, run: str, scratch: str, timeout: float
) -> tuple[dict, list]:
    output = os.path.join(scratch, "colour")
    argv = [sys.executable, "-m", "aiaic_jax.cli", "colorize", "--checkpoint", run, root, output]
    status, out, err, seconds = _run(argv, timeout)
    differences = []
    if status in (0, 1):
        differences = broken_media.judge_colorize(entries, root, output, out + err)
    return _figures("colorize", len(entries), status, err, seconds, differences), differences


def _figures(
    tool: str, inputs: int, status: int | None, err: str, seconds: float, differences
) -> dict:
    categories = [d.category for d in differences]
    return {
        "tool": tool,
        "inputs": inputs,
        "crashes": int(status not in (0, 1, None) or "Traceback" in err),
        "hangs": int(status is None),
        "lost": categories.count("lost"),
        "wrong": categories.count("wrong"),
        "unreported": categories.count("unreported"),
        "exit_status": status,
        "seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a training run (default: the demo model, random weights)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per tool")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = os.path.join(scratch, "corpus")
        entries = broken_media.write_corpus(root)
        run = args.run or random_run(os.path.join(scratch, "run"))
        results = [
            _build(entries, root, scratch, args.timeout),
            _colorize(entries, root, run, scratch, args.timeout),
        ]
    for figures, differences in results:
        print(json.dumps(figures))
        for difference in differences:
            print(f"  {difference}")


if __name__ == "__main__":
    main()
