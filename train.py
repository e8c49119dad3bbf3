"""Trains AIAIC, one stage or all of them (DESIGN.md section 2, docs/runs.md).

python train.py --config configs/demo.py --workdir runs/demo --stage all \
    --config.data.data_dir=runs/demo/data
python train.py --config configs/ddcolor_tiny.py --workdir runs/ddc_t --stage 1 \
    --config.data.batch_size=8
python train.py --config configs/ddcolor_tiny.py --workdir runs/ddc_t_wo_r --pipeline wo_r \
    --from runs/ddc_t            # the "w/o r" ablation from the full run's baseline
Multi-host: add --coordinator_address host:port --num_processes N --process_id i on every host
(or rely on JAX's own cluster detection with AIAIC_DISTRIBUTED=1). Re-running the same command
resumes where it stopped; complete stages are skipped.
"""

import json

from absl import app, flags
from ml_collections import config_flags

from aiaic_jax import compile_cache, host_memory
from aiaic_jax.train import logs, loop, parallel, pipelines, stages

_CONFIG = config_flags.DEFINE_config_file("config", None, "Configuration file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where every stage writes (W/<stage>/...).")
_STAGE = flags.DEFINE_enum("stage", "all", list(stages.STAGE_ARGS), "The stage to train.")
_PIPELINE = flags.DEFINE_enum(
    "pipeline",
    None,
    list(pipelines.PIPELINES),
    "Train a whole pipeline instead of --stage: full, wo_r (w/o r) or e2e (w/o multi-step).",
)
_FROM = flags.DEFINE_string(
    "from",
    None,
    "With --pipeline: a workdir whose baseline the pipeline starts from (the full run's, for "
    "fair ablations) instead of training its own.",
)
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes of a multi-host run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logs.quiet_dependencies()
    compile_cache.enable()
    host_memory.retain()
    parallel.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    if _FROM.value is not None and _PIPELINE.value is None:
        raise app.UsageError("--from goes with --pipeline")
    if _PIPELINE.value is not None and flags.FLAGS["stage"].present:
        raise app.UsageError("give --pipeline or --stage, not both")
    try:
        if _PIPELINE.value is not None:
            results = pipelines.run(_CONFIG.value, _PIPELINE.value, _WORKDIR.value, _FROM.value)
        else:
            results = loop.run(_CONFIG.value, _WORKDIR.value, _STAGE.value)
    except loop.NonFiniteError as error:
        raise SystemExit(f"train.py: {error}") from error
    print(json.dumps(results, indent=2, sort_keys=True))


if __name__ == "__main__":
    app.run(main)
