"""The paper's method and its ablations as pipelines of stages, each into its own workdir.

    python train.py --config configs/X.py --workdir W_full --pipeline full
    python train.py --config configs/X.py --workdir W_wo_r --pipeline wo_r --from W_full
    python train.py --config configs/X.py --workdir W_e2e  --pipeline e2e  --from W_full

    full   baseline, stage 1, stage 2, RNet, stage 3 (the method, Sec. 3)
    wo_r   "w/o r": SG instead of DSG (use_relevance=False: no masking in stage 1, no RNet,
           r = 1 in stage 3); stages 1, 2, 3
    e2e    "w/o multi-step": backbone, E_a, A2V and the guidance MLP trained end to end from
           the baseline (stage e2e)

A comparison is fair when the ablations start where the full method starts: `--from W_full`
makes "w/o r" and "w/o multi-step" start from the full run's fine-tuned baseline
(`W_full/baseline/final`, as `config.init_from`) instead of training their own, and e2e's audio
encoder from the same initialisation as stage 2's (`config.stages.stage2.init_from`, e.g. the
VGGSound network). Without `--from`, a pipeline trains its own baseline first, in its workdir.
Every stage's schedule is the config's, the same in every pipeline.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence

import ml_collections
from absl import logging

from aiaic_jax.train import checkpoint, loop, parallel

PIPELINES = ("full", "wo_r", "e2e")
_STAGES = {
    "full": ("baseline", "stage1", "stage2", "rnet", "stage3"),
    "wo_r": ("baseline", "stage1", "stage2", "stage3"),
    "e2e": ("baseline", "e2e"),
}


def pipeline_config(
    config: ml_collections.ConfigDict, name: str, baseline_from: str | None = None
) -> ml_collections.ConfigDict:
    """The config the stages of pipeline `name` train with (a copy; `config` is unchanged).

    baseline_from: a workdir whose complete baseline the pipeline starts from.
    """
    if name not in PIPELINES:
        raise ValueError(f"unknown pipeline {name!r}; one of {', '.join(PIPELINES)}")
    config = copy.deepcopy(config)
    with config.unlocked():
        if name == "wo_r":
            config.use_relevance = False
        elif name == "full" and not bool(config.use_relevance):
            raise ValueError("the full pipeline needs use_relevance=True (wo_r is the other)")
        if baseline_from is not None:
            baseline = checkpoint.final_dir(baseline_from, "baseline")
            if not baseline.is_dir():
                raise FileNotFoundError(
                    f"--from {baseline_from}: no complete baseline there (no {baseline}); train "
                    "the full pipeline first"
                )
            config.init_from = os.fspath(baseline)
        if name == "e2e" and not config.stages.e2e.get("init_from", ""):
            # The same audio initialisation as stage 2 of the multi-step pipelines.
            config.stages.e2e.init_from = config.stages.stage2.get("init_from", "")
    return config


def stages_of(name: str, baseline_from: str | None = None) -> tuple[str, ...]:
    """The stages pipeline `name` trains, in order (no baseline when it starts from another
    run's)."""
    stages = _STAGES[name]
    return stages[1:] if baseline_from is not None else stages


def run(
    config: ml_collections.ConfigDict,
    name: str,
    workdir: str,
    baseline_from: str | None = None,
    only: Sequence[str] | None = None,
) -> dict[str, dict[str, float]]:
    """Trains pipeline `name` into `workdir` (complete stages are skipped, an interrupted one
    resumes). Returns {stage: its last metrics} for the stages trained in this call.

    only: these of the pipeline's stages, in its order (e.g. ("baseline",): the start that
    `--from` runs share); default all.
    """
    if baseline_from is not None and os.path.abspath(baseline_from) == os.path.abspath(workdir):
        raise ValueError(f"--from {baseline_from} is the workdir itself; give another run")
    stages = stages_of(name, baseline_from)
    if only is not None:
        unknown = sorted(set(only) - set(stages))
        if unknown:
            raise ValueError(f"pipeline {name} has no stages {unknown}; it trains {stages}")
        stages = tuple(stage for stage in stages if stage in only)
    config = pipeline_config(config, name, baseline_from)
    mesh = parallel.make_mesh()
    results: dict[str, dict[str, float]] = {}
    for stage in stages:
        if checkpoint.is_complete(workdir, stage):
            logging.info(
                "%s: complete (%s exists), skipped", stage, checkpoint.final_dir(workdir, stage)
            )
            continue
        results[stage] = loop.train_stage(config, workdir, stage, mesh)
    return results
