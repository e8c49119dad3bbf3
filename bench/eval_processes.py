"""Evaluation in one process and in two processes on localhost: the same numbers, and the time.

PYTHONPATH=. python bench/eval_processes.py [--workdir DIR] [--devices_per_process 2]

Builds a small synthetic world (32x32 pairs; val 10, ave_like 20) and a tiny model's `full`
and `wo_r` runs (tests/tiny_model.py), then runs eval.py twice: once as one process on one
device, once as two processes (JAX distributed over gloo, each with
`--devices_per_process` forced host devices, batches of 8 sharded over all four). Prints the
wall time of each and the largest relative difference between their results.json numbers.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import app, flags, logging

from aiaic_jax.convert.common import save_variables
from aiaic_jax.data.builders.synthetic import Synthetic, SyntheticConfig
from tests import tiny_model

_WORKDIR = flags.DEFINE_string("workdir", None, "Work here (default: a temporary directory).")
_DEVICES = flags.DEFINE_integer("devices_per_process", 2, "Forced host devices per process.")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 32


def _prepare(root: str) -> tuple[str, dict[str, str]]:
    data_dir = os.path.join(root, "data")
    Synthetic(
        data_dir=data_dir,
        config=SyntheticConfig(
            name="tiny",
            image_size=SIZE,
            audio_seconds=0.5,
            train_pairs=8,
            val_pairs=10,
            ave_like_videos=2,
            ood_pairs=4,
        ),
    ).build()
    model = tiny_model.tiny_model()
    full = tiny_model.random_variables(model, SIZE, seed=0)
    save_variables(os.path.join(root, "full", "baseline", "final"), full)
    save_variables(os.path.join(root, "full", "stage3", "final"), full)
    wo_r = tiny_model.random_variables(model, SIZE, seed=1)
    save_variables(os.path.join(root, "wo_r", "stage3", "final"), wo_r)
    config = tiny_model.run_config(data_dir, image_size=SIZE, eval_batch_size=8)
    config_file = tiny_model.write_config_file(os.path.join(root, "config.py"), config)
    return config_file, {"full": os.path.join(root, "full"), "wo_r": os.path.join(root, "wo_r")}


def _eval(config_file: str, runs: dict[str, str], out: str, processes: int, devices: int) -> float:
    command = [
        sys.executable,
        os.path.join(REPO, "eval.py"),
        f"--config={config_file}",
        f"--workdir={out}",
        "--runs=" + ",".join(f"{k}={v}" for k, v in runs.items()),
    ]
    env = {
        **os.environ,
        "PYTHONPATH": REPO,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
    }
    if processes > 1:
        env.update(AIAIC_COORDINATOR="localhost:12357", AIAIC_NUM_PROCESSES=str(processes))
    start = time.perf_counter()
    workers = [
        subprocess.Popen(
            command,
            env={**env, "AIAIC_PROCESS_ID": str(i)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(processes)
    ]
    for i, worker in enumerate(workers):
        output, _ = worker.communicate()
        if worker.returncode:
            raise SystemExit(f"process {i} of {processes} failed:\n{output[-4000:]}")
    return time.perf_counter() - start


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax reports every checkpoint write at INFO
    root = _WORKDIR.value or tempfile.mkdtemp(prefix="eval_processes_")
    config_file, runs = _prepare(root)
    one = os.path.join(root, "one_process")
    two = os.path.join(root, "two_processes")
    time_one = _eval(config_file, runs, one, processes=1, devices=1)
    time_two = _eval(config_file, runs, two, processes=2, devices=_DEVICES.value)
    results = []
    for directory in (one, two):
        with open(os.path.join(directory, "results.json")) as f:
            results.append(json.load(f))
    worst = 0.0
    for split, entries in results[0].items():
        if split in ("protocol", "relevance"):
            continue
        for variant, entry in entries.items():
            for metric, value in entry.items():
                other = results[1][split][variant][metric]
                worst = max(worst, abs(other - value) / max(abs(value), 1e-12))
    print(f"1 process x 1 device: {time_one:.1f} s (wall, with start-up and compilation)")
    print(f"2 processes x {_DEVICES.value} devices: {time_two:.1f} s")
    print(f"largest relative difference over every split, variant and metric: {worst:.2e}")
    print(f"same numbers (rtol 1e-5): {bool(np.isclose(worst, 0.0, atol=1e-5))}")


if __name__ == "__main__":
    app.run(main)
