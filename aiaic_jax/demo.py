"""The embedded default, end to end on the synthetic audio-visual world (what `make demo` runs).

python -m aiaic_jax.demo --workdir runs/demo [--config configs/demo.py] [--config.data.x=...]

`main` runs `STEPS` in order; each step takes the resolved config and the workdir. The dataset
is built into `<workdir>/data` (kept between runs: a second run reuses it). After the full
run's baseline, the three pipelines train at once in processes of their own (`--jobs`, default
3; `--jobs 1` trains them one after another in this process), each logging to
`<workdir>/<name>.log`; a run that stops resumes where it stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import ml_collections
import tensorflow_datasets as tfds
from absl import app, flags
from ml_collections import config_flags

from aiaic_jax import compile_cache, host_memory
from aiaic_jax.data.builders import synthetic
from aiaic_jax.evaluation import criteria, runner
from aiaic_jax.train import logs, pipelines

_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "Where the demo writes everything.")
_JOBS = flags.DEFINE_integer(
    "jobs",
    3,
    "How many of the pipelines (full, w/o r, e2e) train at once after the shared baseline, each "
    "in a process of its own; 1: one after another in this process.",
)
_PIPELINE = flags.DEFINE_enum(
    "pipeline", None, pipelines.PIPELINES, "Train only this pipeline (a --jobs process)."
)
_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/demo.py", "The demo configuration file.", lock_config=True
)

# The demo trains each of pipelines.PIPELINES into <workdir>/<name>; all start from the full
# run's baseline.
BASELINE_RUN = "full"

Step = Callable[[ml_collections.ConfigDict, str], None]


def build_data(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Builds the synthetic world into `config.data.data_dir` and prints its build report."""
    del workdir  # the data directory is already resolved into the config
    builder_config = synthetic.SyntheticConfig(
        name=config.data.config_name, **config.data.builder_options.to_dict()
    )
    builder = synthetic.Synthetic(data_dir=config.data.data_dir, config=builder_config)
    if builder.data_path.exists():
        _check_same_world(os.fspath(builder.data_path), builder_config)
    start = time.perf_counter()
    report = builder.build()
    print(f"[demo] synthetic world in {builder.data_path} ({time.perf_counter() - start:.1f} s)")
    print(report.format(), flush=True)


def _timed_pipeline(
    config: ml_collections.ConfigDict,
    workdir: str,
    name: str,
    only: tuple[str, ...] | None = None,
) -> None:
    start = time.perf_counter()
    run_dir = os.path.join(workdir, name)
    baseline_from = os.path.join(workdir, BASELINE_RUN) if name != BASELINE_RUN else None
    results = pipelines.run(config, name, run_dir, baseline_from, only=only)
    for stage, metrics in results.items():
        print(
            f"[demo] {run_dir}/{stage}: "
            + ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()) if isinstance(v, float))
        )
    print(f"[demo] {run_dir}: {time.perf_counter() - start:.1f} s", flush=True)


def train_baseline(config: ml_collections.ConfigDict, workdir: str) -> None:
    """The full run's baseline: the backbone fine-tuned without audio, where every pipeline
    starts."""
    _timed_pipeline(config, workdir, BASELINE_RUN, only=("baseline",))


def train_pipelines(config: ml_collections.ConfigDict, workdir: str) -> None:
    """The full method's stages 1, 2, RNet and 3, the "w/o r" ablation (SG instead of DSG) and
    the "w/o multi-step" one (e2e), each from the full run's baseline.

    With --jobs > 1 they train at once, each in a process of its own (this module with
    --pipeline), its log in <workdir>/<name>.log. One process keeps 2 cores busy about three
    quarters of the time, so three at once finish sooner than one after another
    (docs/synthetic.md, "Where the demo's time goes"), with the same results: each runs the
    same programs on the same data.
    """
    jobs = _JOBS.value
    if jobs <= 1:
        for name in pipelines.PIPELINES:
            _timed_pipeline(config, workdir, name)
        return
    # What training the baseline here freed goes back to the system before the children start
    # (host_memory.retain keeps freed memory otherwise).
    host_memory.release_free()
    # This process's own flags (workdir, config and its overrides) and the pipeline's name.
    names = pipelines.PIPELINES
    commands = {
        name: [sys.executable, "-m", "aiaic_jax.demo", *sys.argv[1:], f"--pipeline={name}"]
        for name in names
    }
    log_paths = {name: os.path.join(workdir, f"{name}.log") for name in names}
    print(
        f"[demo] {', '.join(names)}: {min(jobs, len(names))} at once, logs in "
        + ", ".join(log_paths.values()),
        flush=True,
    )
    start = time.perf_counter()
    for name in run_processes(commands, log_paths, jobs):
        with open(log_paths[name]) as f:
            print("".join(line for line in f if line.startswith("[demo] ")), end="", flush=True)
    print(f"[demo] {', '.join(names)}: {time.perf_counter() - start:.1f} s", flush=True)


def run_processes(
    commands: dict[str, list[str]], log_paths: dict[str, str], jobs: int
) -> Iterator[str]:
    """Runs each command with its stdout and stderr into its log file, at most `jobs` at once,
    in the given order; yields each name as its process ends well.

    If one fails, the others are stopped and SystemExit names it, with the end of its log; so
    does a stop of this process (KeyboardInterrupt, or SIGTERM once `main` has made it
    SystemExit).
    """
    waiting = list(commands)
    running: dict[str, subprocess.Popen] = {}
    try:
        while waiting or running:
            while waiting and len(running) < jobs:
                name = waiting.pop(0)
                with open(log_paths[name], "w") as log:
                    running[name] = subprocess.Popen(
                        commands[name], stdout=log, stderr=subprocess.STDOUT
                    )
            finished = [name for name, process in running.items() if process.poll() is not None]
            if not finished:
                time.sleep(0.2)
                continue
            for name in finished:
                code = running.pop(name).returncode
                if code != 0:
                    with open(log_paths[name]) as f:
                        tail = "".join(f.readlines()[-20:])
                    how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
                    raise SystemExit(
                        f"{tail}\n[demo] {name} failed ({how}); its log: {log_paths[name]}. "
                        "Run the demo again to resume where it stopped."
                    )
                yield name
    finally:
        for process in running.values():
            process.terminate()
        for process in running.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Every variant on every split; results.md, results.json (with the mechanisms of
    relevance and `criteria.DEMO_CRITERIA`) and the grids. Prints whether each criterion holds."""
    start = time.perf_counter()
    runs = {name: os.path.join(workdir, name) for name in pipelines.PIPELINES}
    evaluation = runner.run(config, workdir, runs, criteria=criteria.DEMO_CRITERIA)
    print(f"[demo] evaluation: {time.perf_counter() - start:.1f} s", flush=True)
    checked = evaluation.results.get("criteria", [])
    for entry in checked:
        verdict = {True: "holds", False: "FAILS", None: "not measured"}[entry["holds"]]
        value = "—" if entry["value"] is None else f"{entry['value']:.4g}"
        print(
            f"[demo] criterion {entry['name']}: {value} {entry['op']} {entry['bound']:g} "
            f"{verdict} ({entry['measure']})"
        )
    held = sum(1 for entry in checked if entry["holds"])
    print(f"[demo] {held} of {len(checked)} criteria hold", flush=True)


STEPS: tuple[Step, ...] = (
    build_data,
    train_baseline,
    train_pipelines,
    evaluate,
)


def _check_same_world(dataset_dir: str, builder_config: synthetic.SyntheticConfig) -> None:
    defaults = synthetic.world_spec(synthetic.SyntheticConfig(name="defaults"))["options"]
    # A world built before an option existed was built with that option's default.
    stored = {**defaults, **synthetic.read_world(dataset_dir)["options"]}
    wanted = synthetic.world_spec(builder_config)["options"]
    if stored != wanted:
        changed = sorted(k for k in wanted if stored.get(k) != wanted[k])
        raise SystemExit(
            f"{dataset_dir} holds a synthetic world built with other options ({', '.join(changed)}"
            "); delete it or choose another --config.data.config_name"
        )


def _exit_on_sigterm(signum: int, frame: object) -> None:
    del frame
    raise SystemExit(f"[demo] stopped by signal {signum}; run the demo again to resume")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    config = _CONFIG.value
    workdir = _WORKDIR.value
    config.data.data_dir = os.path.join(workdir, "data")
    tfds.disable_progress_bar()
    logs.quiet_dependencies()
    compile_cache.enable()
    host_memory.retain()
    if _PIPELINE.value:
        _timed_pipeline(config, workdir, _PIPELINE.value)
        return
    # A stop by SIGTERM (`kill`, a CI's cancel) unwinds like Ctrl-C, so that the pipelines'
    # processes are stopped with this one (run_processes).
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    for number, step in enumerate(STEPS, start=1):
        print(f"[demo] step {number}/{len(STEPS)}: {step.__name__}", flush=True)
        step(config, workdir)
    sys.stdout.flush()


if __name__ == "__main__":
    app.run(main)
