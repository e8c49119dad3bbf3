"""A run directory as training leaves it, read back by evaluation, colorization and resumption.

docs/runs.md is the contract. In short, `python train.py --workdir W` writes, per stage:

    W/<stage>/config.json            {"config": the run's resolved config, "stage": the stage}
    W/<stage>/final/                 {"params", "batch_stats"} (orbax); the stage is complete
    W/<stage>/checkpoints/<step>/    train state, data iterator state, topology (resumption)
    W/<stage>/metrics.jsonl, tb/, grids/

A run directory is enough to evaluate and colorize with: `find_checkpoint` picks a stage's
`final` and `read_config` the config training wrote beside it. A config file given on the
command line (with `--config.x=y` overrides) still takes precedence.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections

from aiaic_jax.train import checkpoint as checkpoint_lib
from aiaic_jax.train import stages

CONFIG_FILE = "config.json"
FINAL = checkpoint_lib.FINAL
# The stage whose `final` a run is colorized with when none is named: the full method or
# "w/o r" (stage3), the "w/o multi-step" ablation (e2e), a visual baseline alone (baseline).
COLORIZE_PREFERENCE = ("stage3", "e2e", "baseline")
# Config fields that name paths; config.json holds them absolute, so the file stays valid when
# it is read from another working directory.
_PATH_FIELDS = (("data", "data_dir"), ("init_from",))


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A `final` variables directory and what is known of the run that wrote it."""

    path: Path  # the orbax checkpoint (`W/<stage>/final`, or a converted one)
    stage: str | None  # the stage that wrote it (None for a converted checkpoint)
    config_file: Path | None  # `W/<stage>/config.json` when it exists


def _is_orbax_checkpoint(path: Path) -> bool:
    return path.is_dir() and any(
        (path / marker).exists() for marker in ("_CHECKPOINT_METADATA", "_METADATA", "checkpoint")
    )


def _complete_stages(run: Path) -> list[str]:
    return [name for name in stages.STAGE_NAMES if (run / name / FINAL).is_dir()]


def find_checkpoint(path: str | os.PathLike, stage: str | None = None) -> Checkpoint:
    """The `final` directory that `path` names.

    path: a run directory `W` (then `stage`, or the first of `COLORIZE_PREFERENCE` that is
      complete), a stage directory `W/<stage>`, or a variables directory (`W/<stage>/final`, a
      converted checkpoint).
    stage: a stage name (`stage3`, `e2e`, `baseline`, ...; `3` and `1` are accepted); only
      with a run directory.
    Raises FileNotFoundError naming what is missing and what the directory holds.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such run, stage or checkpoint directory")
    if stage is not None:
        name = stages.stage_name(stage)  # raises ValueError naming the stages
        if not (path / name / FINAL).is_dir():
            complete = _complete_stages(path)
            raise FileNotFoundError(
                f"{path}: stage {name} is not complete (no {path / name / FINAL}); complete "
                f"stages: {', '.join(complete) or 'none'}"
            )
        path = path / name / FINAL
    elif (path / FINAL).is_dir():
        path = path / FINAL
    elif not _is_orbax_checkpoint(path):
        complete = _complete_stages(path)
        chosen = next((name for name in COLORIZE_PREFERENCE if name in complete), None)
        if chosen is None:
            held = f"its complete stages: {', '.join(complete)}" if complete else "no stage"
            raise FileNotFoundError(
                f"{path}: not a run directory with a complete {', '.join(COLORIZE_PREFERENCE)} "
                f"stage, a stage directory or a checkpoint ({held}); name a stage to use"
            )
        path = path / chosen / FINAL
    config_file = path.parent / CONFIG_FILE
    stage_name = path.parent.name if path.name == FINAL and config_file.is_file() else None
    return Checkpoint(path, stage_name, config_file if config_file.is_file() else None)


def _tuples(value: Any) -> Any:
    # JSON has lists where the configs have tuples; ml_collections overrides only tuples.
    if isinstance(value, Mapping):
        return {key: _tuples(item) for key, item in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(item) for item in value)
    return value


def read_config(path: str | os.PathLike) -> ml_collections.ConfigDict:
    """The config a run was trained with.

    path: a `config.json` as training writes it (`{"config": ..., "stage": ...}`; a file
      holding the config alone is accepted too), or a run, stage or `final` directory
      (`find_checkpoint` picks the stage).
    """
    path = Path(path)
    if path.is_dir() and (path / CONFIG_FILE).is_file():
        path = path / CONFIG_FILE  # a stage directory, complete or not
    elif path.is_dir():
        checkpoint = find_checkpoint(path)
        if checkpoint.config_file is None:
            raise FileNotFoundError(
                f"{path}: no {CONFIG_FILE} beside {checkpoint.path} (a converted checkpoint?); "
                "give the config the model was trained with"
            )
        path = checkpoint.config_file
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config file")
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not a readable config.json ({error})") from None
    if not isinstance(document, dict):
        raise ValueError(f"{path}: not a config (a JSON object was expected)")
    config = document.get("config", document)
    if "model" not in config:
        raise ValueError(f"{path}: the config has no `model` section")
    return ml_collections.ConfigDict(_tuples(config))


def config_document(config: ml_collections.ConfigDict, stage: Mapping[str, Any]) -> str:
    """The text of `W/<stage>/config.json`: the resolved config, its paths made absolute, and
    the resolved stage."""
    resolved = json.loads(config.to_json_best_effort())
    for field in _PATH_FIELDS:
        holder = resolved
        for key in field[:-1]:
            holder = holder.get(key, {})
        if holder.get(field[-1]):
            holder[field[-1]] = os.path.abspath(holder[field[-1]])
    for spec in resolved.get("stages", {}).values():
        if isinstance(spec, dict) and spec.get("init_from"):
            spec["init_from"] = os.path.abspath(spec["init_from"])
    document = {"config": resolved, "stage": dict(stage)}
    return json.dumps(document, indent=2, default=str)


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Sequence[str]
) -> ml_collections.ConfigDict:
    """A copy of `config` with command-line overrides applied, as ml_collections parses them.

    overrides: `--config.data.data_dir=/d`, `--config.data.eval_splits=(val,ood)` (the values
    are typed by the existing fields). Raises ValueError naming an unknown field.
    """
    if not overrides:
        return config
    from absl import flags
    from ml_collections import config_flags

    argv = ["aiaic"]
    for item in overrides:
        text = item if item.startswith("--") else f"--config.{item}"
        if not text.startswith("--config.") or "=" not in text:
            raise ValueError(f"{item}: an override is --config.FIELD=VALUE")
        argv.append(text)
    values = flags.FlagValues()
    try:
        config_flags.DEFINE_config_dict(
            "config",
            ml_collections.ConfigDict(config.to_dict()),
            "the run's config",
            flag_values=values,
            lock_config=True,
            sys_argv=argv,
        )
        values(argv)
    except (AttributeError, KeyError, TypeError, ValueError, flags.Error) as error:
        raise ValueError(f"cannot apply {' '.join(argv[1:])}: {error}") from None
    return values.config


def config_for_runs(
    checkpoints: Mapping[str, str | os.PathLike],
) -> tuple[ml_collections.ConfigDict, Path]:
    """One config for evaluating several checkpoints together (eval.py without --config).

    checkpoints: variant -> its `final` directory. The config is the first one's config.json;
    the others must agree on what evaluation reads (the model, the image size, the audio
    features): different runs of one comparison differ in their stages, never in the model.
    Returns (config, the file it came from).
    """
    files = {}
    for name, directory in checkpoints.items():
        found = find_checkpoint(directory)
        if found.config_file is None:
            raise FileNotFoundError(
                f"{name}: no {CONFIG_FILE} beside {found.path}; pass --config (the config the "
                "runs were trained with)"
            )
        files[name] = found.config_file
    if not files:
        raise ValueError("no checkpoint to read a config from")
    first_name, first_file = next(iter(files.items()))
    config = read_config(first_file)
    reference = _evaluated_fields(config)
    for name, file in files.items():
        other = _evaluated_fields(read_config(file))
        differing = sorted(
            key for key in reference.keys() | other.keys() if reference.get(key) != other.get(key)
        )
        if differing:
            raise ValueError(
                f"{file} ({name}) and {first_file} ({first_name}) differ in "
                f"{', '.join(differing)}; runs evaluated together need the same model and data "
                "(pass --config to choose one)"
            )
    return config, first_file


def _evaluated_fields(config: ml_collections.ConfigDict) -> dict[str, Any]:
    data = config.get("data", ml_collections.ConfigDict())
    fields = {
        "model": config.model.to_dict(),
        "audio": config.get("audio", ml_collections.ConfigDict()).to_dict(),
        "data.image_size": data.get("image_size"),
        "data.audio_seconds": data.get("audio_seconds"),
    }
    return json.loads(json.dumps(fields, default=str))
