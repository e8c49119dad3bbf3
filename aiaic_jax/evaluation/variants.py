"""What each evaluation variant of the paper's Tables 1-2 runs, and the colorization they share.

A variant names a run (a training workdir given on the command line), the stage directory of
that run whose `final` variables it uses (docs/runs.md), the model mode, and how r is set:

    variant               variables              mode      r
    baseline              full/baseline/final    baseline  -
    full                  full/stage3/final      audio     RNet; 0 where a pair has no audio
    wo_r                  wo_r/stage3/final      audio     1 always
    full_missing_audio    full/stage3/final      audio     audio removed from every pair -> 0
    wo_r_missing_audio    wo_r/stage3/final      audio     audio removed (silence), still 1
    wo_multistep          e2e/e2e/final          audio     1 always

"w/o r" and "w/o multi-step" have no relevance mechanism, so they cannot tell a pair without
audio from one with silent audio: their guidance then comes from silence, as in the paper's
"w/o r (missing audio)". `colorize_batch` is the one colorization path that evaluation and
`aiaic colorize` both run.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from aiaic_jax import preprocess
from aiaic_jax.convert.common import restore_variables
from aiaic_jax.models.aiaic import AIAIC, abstract_variables, build_model

# Runs a variant can come from (keys of `eval.py --runs`).
RUNS = ("full", "wo_r", "e2e")


@dataclasses.dataclass(frozen=True)
class Variant:
    """One row of Tables 1-2: which variables, which mode, how r is set."""

    name: str
    label: str  # as the paper's tables write it
    run: str  # a key of RUNS
    stage: str  # the stage directory inside the run's workdir
    mode: str  # "baseline" or "audio"
    use_rnet: bool = False  # r from RNet; else `fixed_relevance`
    fixed_relevance: float = 1.0
    gate_missing_audio: bool = False  # r = 0 where a pair has no audio
    drop_audio: bool = False  # evaluate every pair with its audio removed

    def checkpoint(self, runs: Mapping[str, str]) -> str | None:
        """`<run workdir>/<stage>/final`, or None when the run is not given."""
        workdir = runs.get(self.run)
        return None if workdir is None else os.path.join(workdir, self.stage, "final")

    def controls(self) -> dict[str, Any]:
        """How r is set, as the traced scalars of `colorize_batch`."""
        return relevance_controls(
            use_rnet=self.use_rnet,
            fixed_relevance=self.fixed_relevance,
            gate_missing_audio=self.gate_missing_audio,
            drop_audio=self.drop_audio,
        )


VARIANTS: tuple[Variant, ...] = (
    Variant("baseline", "baseline", "full", "baseline", "baseline"),
    Variant("full", "full", "full", "stage3", "audio", use_rnet=True, gate_missing_audio=True),
    Variant("wo_r", "w/o r", "wo_r", "stage3", "audio"),
    Variant(
        "full_missing_audio",
        "full (missing audio)",
        "full",
        "stage3",
        "audio",
        use_rnet=True,
        gate_missing_audio=True,
        drop_audio=True,
    ),
    Variant(
        "wo_r_missing_audio", "w/o r (missing audio)", "wo_r", "stage3", "audio", drop_audio=True
    ),
    Variant("wo_multistep", "w/o multi-step", "e2e", "e2e", "audio"),
)
VARIANT_NAMES: tuple[str, ...] = tuple(v.name for v in VARIANTS)


def get_variant(name: str) -> Variant:
    for variant in VARIANTS:
        if variant.name == name:
            return variant
    raise ValueError(f"unknown variant {name!r}; one of {', '.join(VARIANT_NAMES)}")


def relevance_controls(
    *,
    use_rnet: bool,
    fixed_relevance: float = 1.0,
    gate_missing_audio: bool = True,
    drop_audio: bool = False,
) -> dict[str, Any]:
    """The r settings of `colorize_batch` as arrays, so that one compiled program serves all."""
    return {
        "use_rnet": np.bool_(use_rnet),
        "fixed_relevance": np.float32(fixed_relevance),
        "gate_missing_audio": np.bool_(gate_missing_audio),
        "drop_audio": np.bool_(drop_audio),
    }


def colorize_batch(
    model: AIAIC,
    config: ml_collections.ConfigDict | ml_collections.FrozenConfigDict,
    variables: Mapping[str, Any],
    batch: Mapping[str, jax.Array],
    controls: Mapping[str, jax.Array],
    mode: str,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Colorizes a batch of the input pipeline; runs inside jit.

    batch: `rgb` uint8 [B, H, W, 3] at the model resolution (only its L is used), `audio` int16
      [B, T], `has_audio` [B], optionally `relevant`, `mask`.
    controls: from `relevance_controls` / `Variant.controls` (ignored in mode "baseline"):
      `drop_audio` removes every pair's audio (has_audio False, silence, all-zero spectrogram);
      `use_rnet` takes r from RNet, else r = `fixed_relevance`; `gate_missing_audio` sets r = 0
      where a pair has no audio. RNet is only run when `use_rnet` is set and some r is not
      gated to 0 (`lax.cond`).
    mode: "baseline" (backbone alone) or "audio" (DSG guided by the audio, Eq. 8).
    Returns (ab [B, H, W, 2] raw Lab units, r [B] (zeros in baseline mode), gray_l [B, H, W, 1]).
    """
    batch = dict(batch)
    batch.setdefault("relevant", batch["has_audio"])
    if mode == "baseline":
        inputs = preprocess.model_inputs(batch, config)
        ab, _ = model.apply(variables, inputs.gray_l, mode="baseline")
        return ab, jnp.zeros(ab.shape[:1], jnp.float32), inputs.gray_l
    if mode != "audio":
        raise ValueError(f"mode={mode!r}; evaluation runs 'baseline' or 'audio'")

    drop = jnp.asarray(controls["drop_audio"], bool)
    batch["has_audio"] = jnp.asarray(batch["has_audio"], bool) & ~drop
    batch["audio"] = jnp.where(drop, jnp.zeros_like(batch["audio"]), batch["audio"])
    inputs = preprocess.model_inputs(batch, config)
    num_pairs = inputs.gray_l.shape[0]

    def from_rnet() -> jax.Array:
        relevance, _ = model.apply(
            variables, inputs.gray_l, inputs.spectrogram, method=AIAIC.relevance
        )
        return relevance.astype(jnp.float32)

    def fixed() -> jax.Array:
        return jnp.full((num_pairs,), controls["fixed_relevance"], jnp.float32)

    gate_missing = jnp.asarray(controls["gate_missing_audio"], bool)
    # Where every r would be gated to 0 (no pair has audio: "full (missing audio)"), RNet's
    # answer is not needed.
    needed = ~(gate_missing & ~jnp.any(inputs.has_audio))
    relevance = jax.lax.cond(jnp.asarray(controls["use_rnet"], bool) & needed, from_rnet, fixed)
    gate = gate_missing & ~inputs.has_audio
    relevance = jnp.where(gate, 0.0, relevance)  # Eq. 8 with r = 0: the backbone alone
    ab, _ = model.apply(
        variables,
        inputs.gray_l,
        mode="audio",
        spectrogram=inputs.spectrogram,
        force_relevance=relevance,
    )
    return ab, relevance, inputs.gray_l


def resolve_config(config: ml_collections.ConfigDict) -> ml_collections.FrozenConfigDict:
    """The config as evaluation and inference read it: `model` required, `audio` defaulted.

    Returns a frozen (hashable) copy, usable as a static argument of jit.
    """
    if "model" not in config:
        raise ValueError(
            "the config has no `model` section (the fields of "
            "aiaic_jax.models.aiaic.default_model_config); use the config the run was trained with"
        )
    resolved = ml_collections.ConfigDict(config.to_dict())
    if "audio" not in resolved:
        resolved.audio = preprocess.audio_config()
    return ml_collections.FrozenConfigDict(resolved)


def model_from_config(config: ml_collections.FrozenConfigDict) -> AIAIC:
    model_config = config.model
    if isinstance(model_config, ml_collections.FrozenConfigDict):
        model_config = ml_collections.ConfigDict(model_config.as_configdict())
    return build_model(model_config)


@functools.cache
def _variable_template(model: AIAIC, image_size: int) -> dict[str, Any]:
    """Shapes and dtypes of every variable of `model` (traced, not computed), once per model."""
    return abstract_variables(model, image_size)


def load_variables(model: AIAIC, directory: str | os.PathLike, image_size: int) -> dict[str, Any]:
    """Restores variables written by `save_variables` and checks that they fit `model`.

    Returns the tree as numpy arrays in the model's dtypes. Raises FileNotFoundError when the
    directory does not exist and ValueError naming the directory and every missing, unexpected
    or misshapen variable when the checkpoint belongs to another model.
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{directory}: no such checkpoint directory")
    try:
        restored = restore_variables(directory)
    except Exception as error:  # orbax raises many kinds for a damaged or foreign directory
        raise ValueError(f"{directory}: not a readable variables checkpoint ({error})") from error
    template = _variable_template(model, image_size)
    wanted = _leaves(template)
    found = _leaves(restored)
    problems = [f"missing {path}" for path in sorted(set(wanted) - set(found))]
    problems += [f"unexpected {path}" for path in sorted(set(found) - set(wanted))]
    for path in sorted(set(wanted) & set(found)):
        if tuple(np.shape(found[path])) != tuple(wanted[path].shape):
            problems.append(
                f"{path} has shape {tuple(np.shape(found[path]))}, the model "
                f"{tuple(wanted[path].shape)}"
            )
    if problems:
        shown = problems[:20] + ([f"... {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise ValueError(
            f"{directory}: the variables do not fit the configured model "
            f"({len(problems)} problems; is it the config the run was trained with?):\n  "
            + "\n  ".join(shown)
        )
    return jax.tree.map(lambda value, spec: np.asarray(value, spec.dtype), restored, template)


def _leaves(tree: Mapping[str, Any]) -> dict[str, Any]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {"/".join(str(getattr(k, "key", k)) for k in path): leaf for path, leaf in flat}
