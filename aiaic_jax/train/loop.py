"""The training loop: `run(config, workdir, stage)` trains one stage or all of them.

For each stage (docs/runs.md): skip it if `W/<stage>/final` exists; otherwise start from
its own latest checkpoint (exact resume: train state and data iterator), else from a fresh
variable tree overlaid by the previous stage's `final` (or `config.init_from`), then by
`config.stages.<stage>.init_from`, then by the stage's own copies (RNet: E_a into
`relevance/audio_encoder`). Train with the jitted step (batch sharded over the `data` axis of
one mesh over every device of every process, state replicated), log, checkpoint, and write
`W/<stage>/final`.

Host syncs happen only at log steps (metrics), grid steps and checkpoint steps; that is also
where a non-finite step is noticed (`TrainState.first_bad_step`): training stops with
`NonFiniteError` naming the step, and nothing after the last good checkpoint is saved.
"""

from __future__ import annotations

import dataclasses
import time
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh

from aiaic_jax import host_memory, runs
from aiaic_jax.convert.common import CheckpointMismatch, merge_variables, restore_variables
from aiaic_jax.data import pipeline
from aiaic_jax.models import aiaic
from aiaic_jax.models.aiaic import AIAIC, build_model
from aiaic_jax.train import checkpoint, logs, parallel, prefetch, stages
from aiaic_jax.train.state import NO_BAD_STEP, Step, TrainState
from aiaic_jax.train.steps import make_step
from aiaic_jax.train.xla_options import FAST_COMPILE, step_compiler_options


class NonFiniteError(FloatingPointError):
    """A training step produced a non-finite loss or gradient."""


def run(
    config: ml_collections.ConfigDict, workdir: str, stage: str = "all"
) -> dict[str, dict[str, float]]:
    """Trains `stage` ('baseline', '1', '2', 'rnet', '3', 'e2e' or 'all') into `workdir`.

    Returns {stage name: its last logged metrics plus timing} for every stage trained in this
    call (stages already complete are skipped and left out).
    """
    names = stages.stages_to_run(stage, bool(config.use_relevance))
    mesh = parallel.make_mesh()
    results: dict[str, dict[str, float]] = {}
    for name in names:
        if checkpoint.is_complete(workdir, name):
            logging.info(
                "%s: complete (%s exists), skipped", name, checkpoint.final_dir(workdir, name)
            )
            continue
        results[name] = train_stage(config, workdir, name, mesh)
    return results


def train_stage(
    config: ml_collections.ConfigDict, workdir: str, name: str, mesh: Mesh
) -> dict[str, float]:
    """Trains one stage to its end and writes `W/<name>/final`; returns its last metrics."""
    is_main = jax.process_index() == 0
    train_size = len(pipeline.data_source(config.data, config.data.train_split))
    stage = stages.resolve(config, name, train_size)
    checkpoints = checkpoint.StageCheckpoints(workdir, name, int(config.train.keep_checkpoints))
    start = checkpoints.latest_step()
    try:
        written_by = checkpoints.topology(start) if start is not None else None
    except Exception:  # a damaged checkpoint: found and set aside when restoring below
        written_by = None
    _check_batch_splits(stage, start, written_by)
    replicated = parallel.replicated(mesh)
    stage_index = stages.STAGE_NAMES.index(name)

    model = build_model(config.model)
    template = abstract_variables(model, config)
    stage_step = make_step(config, stage, model, template["params"])
    log = logs.StageLog(checkpoint.stage_dir(workdir, name), enabled=is_main)
    log.write_config(_config_json(config, stage))

    data_config = {**config.data.to_dict(), "batch_size": stage.batch_size}
    data_seed = int(config.seed) * 100 + stage_index
    iterator = pipeline.train_iterator(data_config, seed=data_seed)
    rng = parallel.replicate(stage_rng(config, name), mesh)
    constants = parallel.replicate(stage_step.constants(), mesh)

    discriminator_template = (
        abstract_discriminator_variables(stage_step, config) if stage_step.discriminator else None
    )
    state = None
    if start is not None:
        abstract_state = jax.eval_shape(stage_step.init_state, template, discriminator_template)
    while start is not None:
        differences = checkpoints.layout_differences(start, abstract_state)
        if differences:
            listed = "\n  ".join(differences[:12])
            more = f"\n  ... {len(differences) - 12} more" if len(differences) > 12 else ""
            raise CheckpointMismatch(
                f"{name}: the checkpoint at step {start} ({checkpoints.directory / str(start)}) "
                f"holds variables of another layout than this run's model "
                f"({len(differences)} differences; written by another version of the code or "
                f"another config?):\n  {listed}{more}\nResume it with the code and config that "
                "wrote it, or move the stage's checkpoints away to start the stage again."
            )
        try:
            written_by = checkpoints.topology(start)
            same_processes = written_by.process_count == jax.process_count()
            state = checkpoints.restore(
                start, abstract_state, replicated, iterator if same_processes else None
            )
        except Exception as error:  # orbax raises many kinds for a damaged checkpoint
            damaged = checkpoints.set_aside(start)
            logging.warning(
                "%s: the checkpoint at step %d does not restore (%s: %s); set aside as %s, "
                "trying the one before it",
                name,
                start,
                type(error).__name__,
                str(error).splitlines()[0][:300] if str(error) else "",
                damaged,
            )
            iterator = pipeline.train_iterator(data_config, seed=data_seed)
            start = checkpoints.latest_step()
            continue
        if not same_processes:
            # Each process read its own shard (every process_count-th pair) in its own order,
            # so the writer's iterator states do not describe this run's shards: the data
            # continues in a fresh shuffled order, seeded by the step so that it is not the
            # order the stage began with.
            iterator = pipeline.train_iterator(data_config, seed=data_seed + 7919 * start)
        _log_resume(name, start, written_by, stage, same_processes)
        break
    if state is None:
        start = 0
        variables = initial_variables(config, workdir, stage, model, template)
        discriminator_variables = (
            init_discriminator_variables(stage_step, config) if stage_step.discriminator else None
        )
        init_state = jax.jit(stage_step.init_state, out_shardings=replicated)
        state = init_state(
            parallel.replicate(variables, mesh),
            parallel.replicate(discriminator_variables, mesh),
        )

    log.keep_until(start)  # metrics past the step training continues from are redone
    if start < stage.num_steps:
        # Global batches made `config.train.prefetch` ahead by a background thread; its
        # `get_state()` is the iterator's state after the last batch consumed, which is what
        # the checkpoints save.
        with prefetch.DevicePrefetch(iterator, mesh, int(config.train.prefetch)) as batches:
            state, metrics = _train(
                config,
                stage,
                stage_step,
                state,
                batches,
                rng,
                constants,
                checkpoints,
                log,
                mesh,
                start,
            )
    else:
        metrics = {}
    _raise_if_bad(state, name, checkpoints)
    checkpoint.save_final(workdir, name, {"params": state.params, "batch_stats": state.batch_stats})
    checkpoints.close()
    log.close()
    logging.info("%s: complete, final variables in %s", name, checkpoint.final_dir(workdir, name))
    return metrics


def _train(
    config: ml_collections.ConfigDict,
    stage: stages.Stage,
    stage_step: Step,
    state: TrainState,
    batches: prefetch.DevicePrefetch,
    rng: jax.Array,
    constants: Any,
    checkpoints: checkpoint.StageCheckpoints,
    log: logs.StageLog,
    mesh: Mesh,
    start: int,
) -> tuple[TrainState, dict[str, float]]:
    batch = next(batches)
    started = time.perf_counter()
    compiled = compile_train_step(
        stage_step, mesh, state, batch, rng, constants, fast=bool(config.train.fast_compile)
    )
    compile_seconds = time.perf_counter() - started
    logging.info("%s: train step compiled in %.1f s", stage.name, compile_seconds)

    log_every = max(1, int(config.train.log_every))
    checkpoint_every = int(config.train.checkpoint_every)
    grid_every = int(config.train.grid_every)
    preview = _Preview(config, stage_step, mesh) if grid_every > 0 else None
    bar = logs.progress_bar(stage.num_steps, start, enabled=log.enabled, description=stage.name)
    metrics: dict[str, float] = {"compile_seconds": compile_seconds}
    timer_start, timer_step = time.perf_counter(), start
    window, window_steps = None, 0  # metrics summed on the device since the last log
    try:
        for step in range(start + 1, stage.num_steps + 1):
            if step > start + 1:
                batch = next(batches)
            state, step_metrics = compiled(state, batch, rng, constants)
            window = step_metrics if window is None else _add_metrics(window, step_metrics)
            window_steps += 1
            bar.update(1)
            last = step == stage.num_steps
            if step % log_every == 0 or last:
                values = {k: float(v) / window_steps for k, v in jax.device_get(window).items()}
                window, window_steps = None, 0
                elapsed = time.perf_counter() - timer_start
                steps_per_second = (step - timer_step) / max(elapsed, 1e-9)
                values["steps_per_second"] = steps_per_second
                values["images_per_second"] = steps_per_second * stage.batch_size
                values["compile_seconds"] = compile_seconds
                log.scalars(step, values)
                bar.set_postfix(
                    loss=f"{values['loss']:.4g}", img_s=f"{values['images_per_second']:.1f}"
                )
                metrics = values
                _raise_if_bad(state, stage.name, checkpoints)
                timer_start, timer_step = time.perf_counter(), step
            if preview is not None and (step % grid_every == 0 or last):
                log.grid(step, preview(state))
                timer_start, timer_step = time.perf_counter(), step
            if (checkpoint_every > 0 and step % checkpoint_every == 0) or last:
                _raise_if_bad(state, stage.name, checkpoints)
                checkpoints.save(step, state, batches, stage.batch_size)
                timer_start, timer_step = time.perf_counter(), step
    finally:
        bar.close()
    return state, metrics


def _check_batch_splits(
    stage: stages.Stage, start: int | None, written_by: checkpoint.Topology | None
) -> None:
    """Fails before anything is built if the global batch does not split over the devices;
    when resuming, the message names the device counts of the writer and of this run."""
    try:
        parallel.per_process_batch_size(stage.batch_size)
    except ValueError as error:
        if start is None or written_by is None:
            raise
        raise ValueError(
            f"{stage.name}: cannot resume the checkpoint at step {start}, written by "
            f"{written_by.describe()}, on {jax.process_count()} processes, {jax.device_count()} "
            f"devices: {error} (set config.stages.{stage.name}.batch_size)"
        ) from None


def _log_resume(
    name: str,
    start: int,
    written_by: checkpoint.Topology,
    stage: stages.Stage,
    same_processes: bool,
) -> None:
    here = checkpoint.Topology.current(stage.batch_size)
    logging.info("%s: resumed from its checkpoint at step %d", name, start)
    if written_by.device_count is not None and written_by.device_count != here.device_count:
        logging.info(
            "%s: the checkpoint was written by %s; continuing on %s",
            name,
            written_by.describe(),
            here.describe(),
        )
    if not same_processes:
        logging.warning(
            "%s: the checkpoint was written by %d processes, this run has %d: the train state "
            "continues from step %d, the data in a new shuffled order (a data iterator's "
            "position is per process and does not carry over)",
            name,
            written_by.process_count,
            here.process_count,
            start,
        )
    if written_by.batch_size is not None and written_by.batch_size != stage.batch_size:
        logging.warning(
            "%s: the global batch changes from %d (the checkpoint's) to %d at step %d",
            name,
            written_by.batch_size,
            stage.batch_size,
            start,
        )


@jax.jit
def _add_metrics(total: dict[str, jax.Array], step: dict[str, jax.Array]) -> dict[str, jax.Array]:
    return jax.tree.map(jnp.add, total, step)


def stage_rng(config: ml_collections.ConfigDict, name: str) -> np.ndarray:
    """Raw key data of a stage's key (the train step folds the step number into it)."""
    key = jax.random.fold_in(jax.random.key(int(config.seed)), stages.STAGE_NAMES.index(name))
    return np.asarray(jax.random.key_data(key))


def lower_train_step(
    stage_step: Step,
    mesh: Mesh,
    state: TrainState,
    batch: dict[str, jax.Array],
    rng: jax.Array,
    constants: Any,
) -> jax.stages.Lowered:
    """The stage's train step lowered for these arguments: batch sharded over the mesh's `data`
    axis, everything else replicated, the state donated.

    Every argument is kept, the unused ones too (spectral norm's `v`, which the step only
    writes): JAX pairs the donated buffers with the outputs by shape, in order, and one pruned
    state leaf would hand every later output of its shape the buffer of another leaf, and XLA
    would copy values around in every step to keep them apart.
    """
    replicated, sharded = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    train_step = jax.jit(
        stage_step.train_step,
        in_shardings=(replicated, sharded, replicated, replicated),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
        keep_unused=True,
    )
    return train_step.lower(state, batch, rng, constants)


def compile_train_step(
    stage_step: Step,
    mesh: Mesh,
    state: TrainState,
    batch: dict[str, jax.Array],
    rng: jax.Array,
    constants: Any,
    *,
    fast: bool = False,
):
    """`lower_train_step`, compiled. fast: `FAST_COMPILE`, else `step_compiler_options`."""
    lowered = lower_train_step(stage_step, mesh, state, batch, rng, constants)
    compiled = lowered.compile(compiler_options=step_compiler_options(fast))
    host_memory.release_free()
    return compiled


class _Preview:
    """The images of a grid, from a fixed batch of the first evaluation split."""

    def __init__(self, config: ml_collections.ConfigDict, stage_step: Step, mesh: Mesh):
        replicated, sharded = parallel.replicated(mesh), parallel.batch_sharded(mesh)
        devices = jax.device_count()
        wanted = max(1, int(config.train.grid_images))
        size = -(-wanted // devices) * devices  # a multiple of the device count
        splits = tuple(config.data.get("eval_splits", ())) or (config.data.train_split,)
        data = {**config.data.to_dict(), "eval_batch_size": size}
        batches = pipeline.eval_batches(data, splits[0])
        self.batch = parallel.to_global(next(batches), mesh)
        batches.close()
        self.preview = jax.jit(
            stage_step.preview,
            in_shardings=(replicated, replicated, sharded, replicated),
            out_shardings=replicated,
        )
        self.fast = bool(config.train.fast_compile)
        self.compiled = None
        self.constants = parallel.replicate({}, mesh)

    def __call__(self, state: TrainState) -> dict[str, np.ndarray]:
        arguments = (state.params, state.batch_stats, self.batch, self.constants)
        if self.compiled is None:
            options = FAST_COMPILE if self.fast else None
            self.compiled = self.preview.lower(*arguments).compile(compiler_options=options)
        images = jax.device_get(self.compiled(*arguments))
        keep = np.asarray(images.pop("mask"), bool)  # drops the padding of a short split
        return {name: np.asarray(value)[keep] for name, value in images.items()}


def _raise_if_bad(state: TrainState, stage: str, checkpoints: checkpoint.StageCheckpoints) -> None:
    bad = int(jax.device_get(state.first_bad_step))
    if bad != NO_BAD_STEP:
        last = checkpoints.latest_step()
        kept = f"step {last}" if last is not None else "none"
        raise NonFiniteError(
            f"{stage}: the loss or a gradient was not finite at step {bad}; training stopped "
            f"and nothing after it was saved (last good checkpoint: {kept})"
        )


# --------------------------------------------------------------------------- initialisation


def _init_key(config: ml_collections.ConfigDict) -> jax.Array:
    return jax.random.key(int(config.seed))


def abstract_variables(model: AIAIC, config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Shapes and dtypes of every model variable (no computation)."""
    return aiaic.abstract_variables(model, int(config.data.image_size))


def _fast_init(init_fn, *args) -> Any:
    """Runs a random initialiser compiled for compile speed, not run speed.

    The non-partitionable threefry (`jax_threefry_partitionable=False`) compiles the many
    random initialisers of the model about twice as fast as the partitionable default, and
    the XLA options in `FAST_COMPILE` halve it again (measured on the demo model, 2-core
    CPU: 48 s -> 11 s). Values are deterministic in the seed, as always.
    """
    with jax.threefry_partitionable(False):
        compiled = jax.jit(init_fn).lower(*args).compile(compiler_options=FAST_COMPILE)
        return compiled(*args)


def init_model_variables(model: AIAIC, config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Every model variable, freshly initialised, with the shipped pretrained parts
    (`aiaic.with_pretrained_parts`: ImageNet VGG16 in RNet's image encoder, ...)."""
    init = partial(model.init, method=AIAIC.init_all)
    inputs = aiaic.template_inputs(int(config.data.image_size))
    return aiaic.with_pretrained_parts(model, _fast_init(init, _init_key(config), *inputs))


def abstract_discriminator_variables(
    stage_step: Step, config: ml_collections.ConfigDict
) -> dict[str, Any]:
    init = partial(stage_step.init_discriminator, image_size=int(config.data.image_size))
    return jax.eval_shape(init, _init_key(config))


def init_discriminator_variables(
    stage_step: Step, config: ml_collections.ConfigDict
) -> dict[str, Any]:
    """A fresh discriminator: each colour stage with an adversary starts its own."""
    init = partial(stage_step.init_discriminator, image_size=int(config.data.image_size))
    return _fast_init(init, jax.random.fold_in(_init_key(config), 1))


def _leaf_paths(tree: Any) -> set[tuple[str, ...]]:
    return {
        tuple(str(getattr(k, "key", k)) for k in path)
        for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def initial_variables(
    config: ml_collections.ConfigDict,
    workdir: str,
    stage: stages.Stage,
    model: AIAIC,
    template: dict[str, Any],
) -> dict[str, Any]:
    """The variables a stage starts from when it has no checkpoint (docs/runs.md).

    A fresh init runs only when the sources below leave some variable unset.
    """
    sources: list[tuple[str, dict[str, Any]]] = []
    previous = stage.previous
    if previous is not None and checkpoint.is_complete(workdir, previous):
        sources.append((f"{previous}/final", checkpoint.load_final(workdir, previous)))
    elif config.get("init_from", ""):
        sources.append((config.init_from, restore_variables(config.init_from)))
    elif previous is not None:
        logging.warning(
            "%s: neither %s/final nor config.init_from exists; starting from a fresh init",
            stage.name,
            previous,
        )
    stage_source = None
    if stage.init_from:
        stage_source = restore_variables(stage.init_from)
        sources.append((stage.init_from, stage_source))

    covered = set().union(*(_leaf_paths(tree) for _, tree in sources)) if sources else set()
    if _leaf_paths(template) <= covered:
        variables = template  # every leaf is replaced below
    else:
        variables = init_model_variables(model, config)
    for description, tree in sources:
        try:
            variables = merge_variables(variables, tree)
        except CheckpointMismatch as error:
            raise CheckpointMismatch(f"{description}: {error}") from error

    if stage.copy_audio_encoder:
        given = stage_source is not None and any(
            path[:3] == ("params", "relevance", "audio_encoder")
            for path in _leaf_paths(stage_source)
        )
        if given:
            logging.info("%s: relevance/audio_encoder from %s", stage.name, stage.init_from)
        else:
            variables = _copy_audio_encoder(variables)
    return variables


def _copy_audio_encoder(variables: dict[str, Any]) -> dict[str, Any]:
    """E_a (stage 2) -> RNet's audio encoder; both must have the same width."""
    copy = {
        collection: {"relevance": {"audio_encoder": variables[collection]["audio"]}}
        for collection in ("params", "batch_stats")
    }
    try:
        return merge_variables(variables, copy)
    except CheckpointMismatch as error:
        raise CheckpointMismatch(
            "rnet: cannot copy `audio` into `relevance/audio_encoder` (set model.audio_width "
            "equal to model.relevance_audio_width, or give config.stages.rnet.init_from): "
            f"{error}"
        ) from error


def _config_json(config: ml_collections.ConfigDict, stage: stages.Stage) -> str:
    resolved = dataclasses.asdict(stage)
    resolved["loss"] = stage.loss.to_dict()
    resolved["optimizer"] = stage.optimizer.to_dict()
    return runs.config_document(config, resolved)
