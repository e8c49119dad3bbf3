"""The embedded default, end to end on the synthetic audio-visual world (what `make demo` runs).

python -m aiaic_jax.demo --workdir runs/demo [--config configs/demo.py] [--config.data.x=...]

`main` runs `STEPS` in order; each step takes the resolved config and the workdir. The dataset
is built into `<workdir>/data` (kept between runs: a second run reuses it).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

import ml_collections
import tensorflow_datasets as tfds
from absl import app, flags
from ml_collections import config_flags

from aiaic_jax import compile_cache, host_memory
from aiaic_jax.data.builders import synthetic
from aiaic_jax.evaluation import criteria, runner
from aiaic_jax.train import logs, pipelines

_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "Where the demo writes everything.")
_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/demo.py", "The demo configuration file.", lock_config=True
)

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
    config: ml_collections.ConfigDict, workdir: str, name: str, baseline_from: str | None = None
) -> None:
    start = time.perf_counter()
    run_dir = os.path.join(workdir, name)
    results = pipelines.run(config, name, run_dir, baseline_from)
    for stage, metrics in results.items():
        print(
            f"[demo] {run_dir}/{stage}: "
            + ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()) if isinstance(v, float))
        )
    print(f"[demo] {run_dir}: {time.perf_counter() - start:.1f} s", flush=True)


def train_full(config: ml_collections.ConfigDict, workdir: str) -> None:
    """The full method: baseline, stage 1, stage 2, RNet, stage 3."""
    _timed_pipeline(config, workdir, "full")


def train_without_relevance(config: ml_collections.ConfigDict, workdir: str) -> None:
    """The "w/o r" ablation: SG instead of DSG, stages 1-3 from the full run's baseline."""
    _timed_pipeline(config, workdir, "wo_r", baseline_from=os.path.join(workdir, "full"))


def train_end_to_end(config: ml_collections.ConfigDict, workdir: str) -> None:
    """The "w/o multi-step" ablation, from the full run's baseline."""
    _timed_pipeline(config, workdir, "e2e", baseline_from=os.path.join(workdir, "full"))


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Every variant on every split; results.md, results.json (with the mechanisms of
    relevance and `criteria.DEMO_CRITERIA`) and the grids. Prints whether each criterion holds."""
    start = time.perf_counter()
    runs = {name: os.path.join(workdir, name) for name in ("full", "wo_r", "e2e")}
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
    train_full,
    train_without_relevance,
    train_end_to_end,
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
    for number, step in enumerate(STEPS, start=1):
        print(f"[demo] step {number}/{len(STEPS)}: {step.__name__}", flush=True)
        step(config, workdir)
    sys.stdout.flush()


if __name__ == "__main__":
    app.run(main)
