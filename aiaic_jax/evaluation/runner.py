"""Evaluation of trained runs on every split: the paper's Tables 1-2 on our data.

    python eval.py --config configs/demo.py --workdir runs/demo/eval \
        --runs full=runs/demo/full,wo_r=runs/demo/wo_r,e2e=runs/demo/e2e

`run` restores the variables of every variant whose checkpoint exists (`variants.VARIANTS`;
the others are skipped with the reason printed), reads each split once and scores every variant
on every batch, and writes into the output directory:

    results.json      {"<split>": {"<variant>": {"lpips", "psnr", "ssim", "colorfulness",
                                               "ab_error", "n"}},
                       "protocol": {...}, "relevance": {"<split>": {...}},
                       "mechanisms": {...}, "criteria": [...] (`criteria.py`),
                       "by_kind": {"<split>": {"<variant>": {"relevant_audio" | "irrelevant_audio"
                                   | "no_audio": {metrics, "n"}}}} for splits that mix them}
    results.md        LPIPS / PSNR / SSIM per split and variant, colorfulness, r of `full`,
                      and the protocol under the tables
    grids/<split>.png the first pairs of each split: gray | baseline | full | w/o r | truth

Batches are sharded over the `data` axis of a mesh of every device of every process, as in
training; the variables are replicated. Every process reads its own share of each split and the
same number of batches (the pipeline pads with masked pairs); per-image values are gathered from
all processes and averaged over the real pairs on the host; only process 0 writes files.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from aiaic_jax import color
from aiaic_jax import runs as run_dirs
from aiaic_jax.data import pipeline
from aiaic_jax.evaluation import criteria as criteria_lib
from aiaic_jax.evaluation import films as film_split
from aiaic_jax.evaluation import grids, metrics, tables
from aiaic_jax.evaluation.results import METRICS, SplitEvaluation
from aiaic_jax.evaluation.variants import (
    RUNS,
    VARIANTS,
    Variant,
    colorize_batch,
    get_variant,
    load_variables,
    model_from_config,
    resolve_config,
)
from aiaic_jax.models.aiaic import AIAIC
from aiaic_jax.train import parallel

DEFAULT_GRID_PAIRS = 8


def parse_runs(text: str) -> dict[str, str]:
    """`"full=W1,wo_r=W2,e2e=W3"` (any subset) -> {"full": "W1", ...}."""
    runs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, workdir = item.partition("=")
        name, workdir = name.strip(), workdir.strip()
        if not sep or not workdir:
            raise ValueError(f"--runs: {item!r} is not NAME=WORKDIR")
        if name not in RUNS:
            raise ValueError(f"--runs: unknown run {name!r}; one of {', '.join(RUNS)}")
        if name in runs:
            raise ValueError(f"--runs: {name} is given twice")
        runs[name] = workdir
    if not runs:
        raise ValueError("--runs: give at least one of full=W, wo_r=W, e2e=W")
    return runs


@dataclasses.dataclass
class Evaluation:
    """What `run` returns: the results.json content and the per-split details."""

    results: dict[str, Any]
    splits: dict[str, SplitEvaluation]
    skipped: dict[str, str]


@functools.partial(jax.jit, static_argnames=("model", "config", "mode"))
def _predict_uint8(
    variables: Mapping[str, Any],
    batch: Mapping[str, jax.Array],
    controls: Mapping[str, jax.Array],
    *,
    model: AIAIC,
    config: ml_collections.FrozenConfigDict,
    mode: str,
) -> tuple[jax.Array, jax.Array]:
    """The protocol's prediction image: model ab with the input's own L, sRGB, rounded uint8.
    Returns (pred_u8 [B, H, W, 3], r [B])."""
    ab, relevance, gray_l = colorize_batch(model, config, variables, batch, controls, mode)
    return color.l_ab_to_rgb_uint8(gray_l, ab), relevance


_target_colorfulness = jax.jit(metrics.colorfulness_uint8)


def _to_host(tree: Any) -> Any:
    """Global (sharded) arrays -> numpy on every process."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    return multihost_utils.process_allgather(tree, tiled=True)


class _SplitAccumulator:
    """Collects per-image values of the real pairs and the grid pairs, batch by batch."""

    def __init__(self, variants: Sequence[str], grid_pairs: int):
        self.variants = list(variants)
        self.grid_pairs = grid_pairs
        self.meta: list[dict[str, np.ndarray]] = []
        self.scores: dict[str, list[dict[str, np.ndarray]]] = {v: [] for v in variants}
        self.relevance: dict[str, list[np.ndarray]] = {v: [] for v in variants}
        self.grid_index: list[np.ndarray] = []
        self.grid_targets: list[np.ndarray] = []
        self.grid_predictions: dict[str, list[np.ndarray]] = {v: [] for v in variants}

    def add(self, outputs: dict[str, Any]) -> None:
        host = _to_host(outputs)
        real = host["meta"]["mask"]
        self.meta.append({k: v[real] for k, v in host["meta"].items()})
        for variant in self.variants:
            self.scores[variant].append({k: v[real] for k, v in host["scores"][variant].items()})
            self.relevance[variant].append(host["relevance"][variant][real])
        if "grid" in host:
            chosen = real & (host["meta"]["index"] < self.grid_pairs)
            self.grid_index.append(host["meta"]["index"][chosen])
            self.grid_targets.append(host["grid"]["target"][chosen])
            for variant in self.variants:
                self.grid_predictions[variant].append(host["grid"][variant][chosen])

    def finish(self, split: str, image_size: int) -> SplitEvaluation:
        meta = {k: np.concatenate([m[k] for m in self.meta]) for k in self.meta[0]}
        order = np.argsort(meta["index"], kind="stable")
        ordered = lambda values: np.concatenate(values)[order]
        grid_order = np.argsort(np.concatenate(self.grid_index or [np.zeros(0, int)]))
        empty = np.zeros((0, image_size, image_size, 3), np.uint8)
        grid = lambda images: np.concatenate(images)[grid_order] if images else empty
        return SplitEvaluation(
            split=split,
            index=meta["index"][order],
            has_audio=meta["has_audio"][order].astype(bool),
            relevant=meta["relevant"][order].astype(bool),
            scores={
                v: {k: ordered([b[k] for b in self.scores[v]]).astype(np.float64) for k in METRICS}
                for v in self.variants
            },
            relevance={v: ordered(self.relevance[v]).astype(np.float64) for v in self.variants},
            target_colorfulness=meta["target_colorfulness"][order].astype(np.float64),
            grid_targets=grid(self.grid_targets),
            grid_predictions={v: grid(self.grid_predictions[v]) for v in self.variants},
        )


class Evaluator:
    """Scores a set of variants, batch by batch, on the mesh."""

    def __init__(
        self,
        config: ml_collections.FrozenConfigDict,
        variables: Mapping[str, Any],
        *,
        lpips_net: metrics.LpipsNet = "alexnet",
        mesh: jax.sharding.Mesh | None = None,
        variants: Sequence[Variant] | None = None,
    ):
        """variables: variant name -> variable tree (numpy or jax); replicated on the mesh.
        variants: what each name runs (default `get_variant(name)`), e.g. a `Variant` with r
        fixed at another value (bench/relevance.py)."""
        self.config = config
        self.model = model_from_config(config)
        self.mesh = mesh or parallel.make_mesh()
        self.variants = list(variants) if variants else [get_variant(name) for name in variables]
        if sorted(v.name for v in self.variants) != sorted(variables):
            raise ValueError("variants and variables must name the same variants")
        replicated: dict[int, Any] = {}  # one device copy per distinct tree
        self.variables = {}
        for name, tree in variables.items():
            if id(tree) not in replicated:
                replicated[id(tree)] = parallel.replicate(tree, self.mesh)
            self.variables[name] = replicated[id(tree)]
        self.image_metrics = metrics.ImageMetrics(lpips_net)
        size = config.data.image_size
        if size < metrics.LPIPS_MIN_SIZE[lpips_net]:
            raise ValueError(
                f"LPIPS {lpips_net} needs images of at least {metrics.LPIPS_MIN_SIZE[lpips_net]} "
                f"pixels a side; config.data.image_size is {size}"
            )

    def evaluate_split(
        self,
        split: str,
        *,
        max_pairs: int | None = None,
        grid_pairs: int = DEFAULT_GRID_PAIRS,
    ) -> SplitEvaluation:
        """Every variant on every pair of `split` (or its first `max_pairs`)."""
        data = self.config.data
        process_count, process_index = jax.process_count(), jax.process_index()
        parallel.per_process_batch_size(data.eval_batch_size)  # fits the devices, or a clear error
        local_batch = data.eval_batch_size // process_count
        batches = pipeline.eval_batches(
            data, split, process_index=process_index, process_count=process_count
        )
        # Each process holds every process_count-th pair of the split (pipeline.eval_batches).
        position = np.arange(local_batch)
        limit = None if max_pairs is None else _ceil_div(max_pairs, data.eval_batch_size)
        # Batches that hold one of the first grid_pairs pairs, the same on every process.
        grid_batches = _ceil_div(_ceil_div(grid_pairs, process_count), local_batch)
        accumulator = _SplitAccumulator([v.name for v in self.variants], grid_pairs)
        pending = None
        try:
            for number, batch in enumerate(batches):
                if limit is not None and number >= limit:
                    break
                index = process_index + process_count * (number * local_batch + position)
                mask = np.asarray(batch["mask"], bool)
                if max_pairs is not None:
                    mask &= index < max_pairs
                local = {**batch, "mask": mask, "index": np.where(mask, index, -1).astype(np.int32)}
                outputs = self._dispatch(local, with_grid=number < grid_batches)
                if pending is not None:
                    accumulator.add(pending)  # overlaps the host copy with the next batch
                pending = outputs
        finally:
            if hasattr(batches, "close"):
                batches.close()
        if pending is not None:
            accumulator.add(pending)
        if not accumulator.meta:
            raise ValueError(f"split {split!r} has no pairs to evaluate")
        return accumulator.finish(split, data.image_size)

    def _dispatch(self, local: Mapping[str, np.ndarray], *, with_grid: bool) -> dict[str, Any]:
        """Starts every variant on one batch; returns device arrays (not yet fetched)."""
        batch = parallel.to_global(local, self.mesh)
        outputs: dict[str, Any] = {
            "meta": {
                "index": batch["index"],
                "mask": batch["mask"],
                "has_audio": batch["has_audio"],
                "relevant": batch["relevant"],
                "target_colorfulness": _target_colorfulness(batch["rgb"]),
            },
            "scores": {},
            "relevance": {},
        }
        if with_grid:
            outputs["grid"] = {"target": batch["rgb"]}
        model_batch = {k: batch[k] for k in ("rgb", "audio", "has_audio", "relevant", "mask")}
        for variant in self.variants:
            pred_u8, relevance = _predict_uint8(
                self.variables[variant.name],
                model_batch,
                variant.controls(),
                model=self.model,
                config=self.config,
                mode=variant.mode,
            )
            outputs["scores"][variant.name] = self.image_metrics(pred_u8, batch["rgb"])
            outputs["relevance"][variant.name] = relevance
            if with_grid:
                outputs["grid"][variant.name] = pred_u8
        return outputs


def find_checkpoints(
    runs: Mapping[str, str], names: Sequence[str] | None = None
) -> tuple[dict[str, str], dict[str, str]]:
    """(variant -> existing checkpoint directory, variant -> why it is skipped)."""
    found, skipped = {}, {}
    for variant in _selected(names):
        directory = variant.checkpoint(runs)
        if directory is None:
            skipped[variant.name] = f"no {variant.run} run given (--runs {variant.run}=WORKDIR)"
        elif not os.path.isdir(directory):
            skipped[variant.name] = f"no checkpoint at {directory}"
        else:
            found[variant.name] = directory
    return found, skipped


def _selected(names: Sequence[str] | None) -> list[Variant]:
    if not names:
        return list(VARIANTS)
    wanted = {get_variant(name).name for name in names}  # unknown names raise
    return [v for v in VARIANTS if v.name in wanted]


def run(
    config: ml_collections.ConfigDict | None,
    workdir: str | os.PathLike,
    runs: Mapping[str, str],
    *,
    variants: Sequence[str] | None = None,
    splits: Sequence[str] | None = None,
    lpips_net: metrics.LpipsNet = "alexnet",
    max_pairs: int | None = None,
    grid_pairs: int = DEFAULT_GRID_PAIRS,
    criteria: Sequence[criteria_lib.Criterion] = (),
    films: int = 0,
    steady_seconds: float = film_split.STEADY_SECONDS,
) -> Evaluation:
    """Evaluates every variant whose checkpoint exists on every split; writes the results.

    config: the runs' config (`model`, `data`, `audio`); None reads the config.json that
    training wrote beside the checkpoints (`runs.config_for_runs`). workdir: output directory.
    runs: run name ("full", "wo_r", "e2e") -> its training workdir (docs/runs.md).
    variants: a subset of `VARIANT_NAMES` (default all); splits: default
    `config.data.eval_splits`; max_pairs: only the first pairs of each split (a quick look;
    the numbers are then not the paper's protocol); grid_pairs: pairs shown per grid;
    criteria: checked on the results (results.json "criteria"; e.g. `criteria.DEMO_CRITERIA`).
    films: with a synthetic world, also colorize and score its first `films` films
    (`films.evaluate`: PSNR and CDC, as colorized and steadied by `steady_seconds`; results.json
    "films"); process 0 alone runs them.
    """
    found, skipped = find_checkpoints(runs, variants)
    writer = jax.process_index() == 0
    for name, reason in skipped.items():
        _log(f"skipping {name}: {reason}")
    if not found:
        raise ValueError(
            "nothing to evaluate: " + "; ".join(f"{k}: {v}" for k, v in skipped.items())
        )
    if config is None:
        config, source = run_dirs.config_for_runs(found)
        _log(f"config from {source}")
    config = resolve_config(config)
    model = model_from_config(config)
    by_directory: dict[str, Any] = {}
    variables = {}
    for name, directory in found.items():
        if directory not in by_directory:
            _log(f"restoring {directory}")
            by_directory[directory] = load_variables(model, directory, config.data.image_size)
        variables[name] = by_directory[directory]
    evaluator = Evaluator(config, variables, lpips_net=lpips_net)

    split_names = list(splits or config.data.eval_splits)
    evaluations = {}
    for split in split_names:
        start = time.perf_counter()
        evaluations[split] = evaluator.evaluate_split(
            split, max_pairs=max_pairs, grid_pairs=grid_pairs
        )
        _log(
            f"{split}: {evaluations[split].num_pairs} pairs x {len(found)} variants in "
            f"{time.perf_counter() - start:.1f} s"
        )

    protocol = tables.protocol(config, lpips_net, max_pairs=max_pairs, checkpoints=found)
    results: dict[str, Any] = {
        split: {name: evaluation.summary(name) for name in found}
        for split, evaluation in evaluations.items()
    }
    results["protocol"] = protocol
    if "full" in found:
        results["relevance"] = {
            split: evaluation.relevance_summary("full") for split, evaluation in evaluations.items()
        }
    by_kind = {
        split: {name: evaluation.by_kind(name) for name in found}
        for split, evaluation in evaluations.items()
        if evaluation.mixed()
    }
    if by_kind:
        results["by_kind"] = by_kind
    mechanisms = criteria_lib.mechanisms(evaluations)
    if mechanisms is not None:
        results["mechanisms"] = mechanisms
    sections = []
    if films and writer:
        start = time.perf_counter()
        results["films"] = film_split.evaluate(
            os.fspath(workdir),
            runs,
            config,
            films=films,
            variants=[v for v in found if v in film_split.FILM_VARIANTS],
            steady_seconds=steady_seconds,
        )
        sections.append(film_split.markdown(results["films"]))
        _log(f"films: {films} films in {time.perf_counter() - start:.1f} s")
    checked = criteria_lib.check(criteria, results)
    if checked:
        results["criteria"] = checked
    target_colorfulness = {
        split: float(np.mean(evaluation.target_colorfulness))
        for split, evaluation in evaluations.items()
    }
    markdown = tables.results_markdown(
        results,
        split_names,
        skipped,
        target_colorfulness,
        sections="\n".join([criteria_lib.markdown(mechanisms, checked), *sections]),
    )
    if writer:
        _write(workdir, results, markdown, evaluations)
        print(markdown, flush=True)
    return Evaluation(results=results, splits=evaluations, skipped=skipped)


def _write(
    workdir: str | os.PathLike,
    results: Mapping[str, Any],
    markdown: str,
    evaluations: Mapping[str, SplitEvaluation],
) -> None:
    os.makedirs(os.path.join(workdir, "grids"), exist_ok=True)
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    with open(os.path.join(workdir, "results.md"), "w") as f:
        f.write(markdown)
    for split, evaluation in evaluations.items():
        path = os.path.join(workdir, "grids", f"{split}.png")
        grids.split_grid(evaluation).save(path)
    _log(f"wrote results.json, results.md and grids/ in {workdir}")


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def _log(message: str) -> None:
    if jax.process_index() == 0:
        print(f"[eval] {message}", flush=True)
