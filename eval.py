"""Evaluates trained runs: the variants of the paper's Tables 1-2 on every evaluation split.

python eval.py --workdir runs/demo/eval \
    --runs full=runs/demo/full,wo_r=runs/demo/wo_r,e2e=runs/demo/e2e
python eval.py --config configs/run.py:runs/demo/full --config.data.data_dir=/data/tfds ...

Without --config, the config is the one training wrote into the runs (W/<stage>/config.json;
the runs must agree on the model and data). --config names another config file; to change a
field of a run's own config, give it as `configs/run.py:W` and override fields after it.

Writes results.json, results.md and grids/<split>.png into --workdir (see
aiaic_jax/evaluation/runner.py); a variant whose checkpoint is missing is skipped with a message.
Multi-process: set AIAIC_COORDINATOR, AIAIC_NUM_PROCESSES and AIAIC_PROCESS_ID (or
AIAIC_DISTRIBUTED=1 on a cluster JAX detects) and start the same command in every process.
"""

from absl import app, flags
from ml_collections import config_flags

from aiaic_jax import compile_cache, host_memory
from aiaic_jax.evaluation import films, runner
from aiaic_jax.evaluation.variants import VARIANT_NAMES
from aiaic_jax.train import logs, parallel

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "A config file (default: the config.json the runs were trained with).",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory for results and grids.")
_RUNS = flags.DEFINE_string(
    "runs",
    None,
    "Training workdirs by run: full=W1,wo_r=W2,e2e=W3 (any subset). Variants whose "
    "checkpoint (W/<stage>/final) is missing are skipped.",
)
_VARIANTS = flags.DEFINE_list(
    "variants", None, f"Only these variants (default all): {', '.join(VARIANT_NAMES)}."
)
_SPLITS = flags.DEFINE_list("splits", None, "Splits to evaluate (default config.data.eval_splits).")
_LPIPS_NET = flags.DEFINE_enum("lpips_net", "alexnet", ["alexnet", "vgg16"], "LPIPS network.")
_MAX_PAIRS = flags.DEFINE_integer(
    "max_pairs", None, "Only the first pairs of each split, for a quick look (not the protocol)."
)
_GRID_PAIRS = flags.DEFINE_integer(
    "grid_pairs", runner.DEFAULT_GRID_PAIRS, "Pairs shown in each split's image grid."
)

_FILMS = flags.DEFINE_integer(
    "films",
    0,
    "Synthetic world only: also colorize its first N films (pans and zooms with their sound, "
    "cuts between clips) through `aiaic colorize`'s film path and score PSNR and temporal "
    "stability (CDC), as colorized and steadied (aiaic_jax/evaluation/films.py).",
)
_STEADY = flags.DEFINE_float(
    "steady", films.STEADY_SECONDS, "Time constant of the steadied films (colorize --steady)."
)

flags.mark_flags_as_required(["workdir", "runs"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logs.quiet_dependencies()
    compile_cache.enable()
    host_memory.retain()
    parallel.initialize_distributed()
    try:
        runs = runner.parse_runs(_RUNS.value)
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    runner.run(
        _CONFIG.value,
        _WORKDIR.value,
        runs,
        variants=_VARIANTS.value,
        splits=_SPLITS.value,
        lpips_net=_LPIPS_NET.value,
        max_pairs=_MAX_PAIRS.value,
        grid_pairs=_GRID_PAIRS.value,
        films=_FILMS.value,
        steady_seconds=_STEADY.value,
    )


if __name__ == "__main__":
    app.run(main)
