"""Trains AIAIC, one stage or all of them (DESIGN.md section 2, RUNS_CONTRACT.md).

python train.py --config configs/demo.py --workdir runs/demo --stage all \
    --config.data.data_dir=runs/demo/data
python train.py --config configs/ddcolor_tiny.py --workdir runs/ddc_t --stage 1 \
    --config.data.batch_size=8
Multi-host: add --coordinator_address host:port --num_processes N --process_id i on every host
(or rely on JAX's own cluster detection with AIAIC_DISTRIBUTED=1). Re-running the same command
resumes where it stopped; complete stages are skipped.
"""

import json

from absl import app, flags
from ml_collections import config_flags

from aiaic_jax.train import logs, loop, parallel, stages

_CONFIG = config_flags.DEFINE_config_file("config", None, "Configuration file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where every stage writes (W/<stage>/...).")
_STAGE = flags.DEFINE_enum("stage", "all", list(stages.STAGE_ARGS), "The stage to train.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes of a multi-host run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logs.quiet_dependencies()
    parallel.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    try:
        results = loop.run(_CONFIG.value, _WORKDIR.value, _STAGE.value)
    except loop.NonFiniteError as error:
        raise SystemExit(f"train.py: {error}") from error
    print(json.dumps(results, indent=2, sort_keys=True))


if __name__ == "__main__":
    app.run(main)
