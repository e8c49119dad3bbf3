"""The VGGSound audio network (hche11/VGGSound, `H.pth.tar`) -> `AudioResNet18` variables.

The checkpoint holds `model_state_dict` with keys `audnet.<torchvision ResNet-18 name>`. Convs
become HWIO kernels, BN weight/bias become scale/bias, BN running mean/var go to
`batch_stats`; `num_batches_tracked` and the 309-class `fc` have no counterpart. The result is
a partial variable tree of the composed model, placed under each module named in `into`:
`audio` (E_a) and, since the paper uses the same pretrained network in RNet,
optionally `relevance/audio_encoder`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from aiaic_jax.convert.common import (
    CheckpointMismatch,
    StateDict,
    TargetPath,
    Transform,
    Tree,
    assign,
    read_state_dict,
    strip_prefix,
)
from aiaic_jax.models.audio_encoder import AudioResNet18

# Where E_a's variables live in the composed model (`aiaic_jax.models.aiaic.AIAIC`).
DESTINATIONS = {"audio": ("audio",), "relevance/audio_encoder": ("relevance", "audio_encoder")}
_PREFIX = "audnet."


def _conv_kernel(weight: np.ndarray) -> np.ndarray:
    return np.transpose(weight, (2, 3, 1, 0))  # OIHW -> HWIO


def _same(value: np.ndarray) -> np.ndarray:
    return value


def _batch_norm(
    flax_path: TargetPath, torch_name: str, destination: TargetPath
) -> dict[TargetPath, tuple[str, Transform]]:
    return {
        ("params", *destination, *flax_path, "scale"): (f"{torch_name}.weight", _same),
        ("params", *destination, *flax_path, "bias"): (f"{torch_name}.bias", _same),
        ("batch_stats", *destination, *flax_path, "mean"): (f"{torch_name}.running_mean", _same),
        ("batch_stats", *destination, *flax_path, "var"): (f"{torch_name}.running_var", _same),
    }


def audio_resnet18_key_map(
    destination: TargetPath = ("audio",), stage_sizes: Sequence[int] = (2, 2, 2, 2)
) -> dict[TargetPath, tuple[str, Transform]]:
    """Flax target path -> (official key without `audnet.`, transform) for one destination."""
    mapping: dict[TargetPath, tuple[str, Transform]] = {
        ("params", *destination, "conv1", "kernel"): ("conv1.weight", _conv_kernel),
        **_batch_norm(("bn1",), "bn1", destination),
    }
    for stage, num_blocks in enumerate(stage_sizes):
        for block in range(num_blocks):
            flax_block = f"layer{stage + 1}_{block}"
            torch_block = f"layer{stage + 1}.{block}"
            for i in (1, 2):
                mapping[("params", *destination, flax_block, f"conv{i}", "kernel")] = (
                    f"{torch_block}.conv{i}.weight",
                    _conv_kernel,
                )
                mapping.update(
                    _batch_norm((flax_block, f"bn{i}"), f"{torch_block}.bn{i}", destination)
                )
            if stage > 0 and block == 0:
                mapping[("params", *destination, flax_block, "downsample_conv", "kernel")] = (
                    f"{torch_block}.downsample.0.weight",
                    _conv_kernel,
                )
                mapping.update(
                    _batch_norm(
                        (flax_block, "downsample_bn"), f"{torch_block}.downsample.1", destination
                    )
                )
    return mapping


def _is_ignored(key: str) -> bool:
    return key.endswith("num_batches_tracked") or key.startswith("fc.")


def _template(destinations: Sequence[TargetPath]) -> Tree:
    shapes = jax.eval_shape(
        AudioResNet18().init, jax.random.key(0), jnp.zeros((1, 64, 64), jnp.float32)
    )
    template: Tree = {}
    for collection in ("params", "batch_stats"):
        for destination in destinations:
            node = template.setdefault(collection, {})
            for name in destination[:-1]:
                node = node.setdefault(name, {})
            node[destination[-1]] = shapes[collection]
    return template


def convert_state_dict(
    state: StateDict, *, into: Sequence[str] = ("audio",), source: str = "state dict"
) -> Tree:
    """An official VGGSound audio-net state dict (keys with or without `audnet.`) -> variables."""
    unknown = [name for name in into if name not in DESTINATIONS]
    if unknown or not into:
        raise ValueError(f"into={tuple(into)}: choose one or more of {tuple(DESTINATIONS)}")
    state = strip_prefix(state, "module.") if any(k.startswith("module.") for k in state) else state
    if any(k.startswith(_PREFIX) for k in state):
        state = strip_prefix(state, _PREFIX)
    if "conv1.weight" not in state:
        raise CheckpointMismatch(
            f"{source}: no audnet.conv1.weight; not a VGGSound audio-network checkpoint "
            f"(first keys: {sorted(state)[:5]})"
        )
    destinations = [DESTINATIONS[name] for name in into]
    mapping: dict[TargetPath, tuple[str, Transform]] = {}
    for destination in destinations:
        mapping.update(audio_resnet18_key_map(destination))
    return assign(state, mapping, _template(destinations), ignore=_is_ignored, source=source)


def convert_vggsound(path: str | os.PathLike, *, into: Sequence[str] = ("audio",)) -> Tree:
    """Reads `H.pth.tar` and returns `{"params": {...}, "batch_stats": {...}}` for `into`.

    into: any of "audio" (E_a) and "relevance/audio_encoder" (RNet's audio encoder).
    Raises CheckpointMismatch listing every missing, unexpected or mis-shaped key.
    """
    return convert_state_dict(read_state_dict(path), into=into, source=str(path))
