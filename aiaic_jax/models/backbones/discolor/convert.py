"""The official DISCO checkpoint (`disco-beta.pth.tar` and its siblings, MenghanXia/
DisentangledColorization) -> Flax variables of the DisColor backbone, `{"params": {"backbone":
...}, "batch_stats": {"backbone": ...}}`: BatchNorm running statistics and the spectral-norm
vectors `u`, `v` go to `batch_stats`.

The Flax modules carry the official module names (see `model.py`), so every key is mapped by
one rule: the torch module path with `segnet.net` collapsed to `segnet` and every numeric
Sequential/ModuleList index joined to its parent with `_` (`repnet.conv1_2.2` ->
`repnet/conv1_2_2`, `wildpath.layers.3.self_attn` -> `wildpath/layers_3/self_attn`). The leaf
follows from the torch parameter name and the kind of the Flax module it lands in:

* Conv2d / ConvTranspose2d `weight` -> `kernel` (OIHW, or IOHW for a transposed conv, ->
  HWIO / HWOI as the Flax module lays it out); Linear `weight` -> `kernel`, transposed.
* BatchNorm / LayerNorm `weight`, `bias` -> `scale`, `bias`; `running_mean`, `running_var` ->
  `batch_stats` `mean`, `var`; `num_batches_tracked` is dropped.
* spectral_norm(Conv2d) `weight_orig` -> `kernel` (unnormalised, HWIO), `weight_u` -> `u`,
  `weight_v` -> `v` re-flattened from PyTorch's (I, kh, kw) order to (kh, kw, I). With the
  same u and v, `SpectralNormConv`'s sigma in evaluation is PyTorch's.
* MultiheadAttention `in_proj_weight` / `in_proj_bias` (q, k, v stacked) -> `query`, `key`,
  `value` DenseGeneral [E, heads, head_dim] / [heads, head_dim]; `out_proj` -> `out`
  [heads, head_dim, E].

The expected variables come from the model's abstract initialisation; a key left over, a
variable without a key, or a shape that differs is one error that lists them all.

    python -m aiaic_jax.convert discolor disco-beta.pth.tar runs/init/discolor
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

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
    save_variables,
)
from aiaic_jax.models.backbones.discolor.model import (
    CELL,
    DISCOLOR_SIZES,
    Anchors,
    DisColor,
    discolor,
)
from aiaic_jax.trees import flatten

BACKBONE = "backbone"  # the composed model's name for its colorization backbone

KeyMap = dict[TargetPath, tuple[str, Transform]]

# Keys of an official state dict with no Flax counterpart: BatchNorm's step counters.
_IGNORED = re.compile(r"\.num_batches_tracked$")
_ATTENTION_PARTS = ("query", "key", "value")


def flax_module_path(torch_module: str) -> tuple[str, ...]:
    """The naming rule: 'segnet.net.conv0a.0' -> ('segnet', 'conv0a_0'),
    'enhanceNet.residual.1.conv.3' -> ('enhanceNet', 'residual_1', 'conv_3')."""
    parts = torch_module.split(".")
    if parts[:2] == ["segnet", "net"]:
        parts = ["segnet", *parts[2:]]
    path: list[str] = []
    for part in parts:
        if part.isdigit() and path:
            path[-1] = f"{path[-1]}_{part}"
        else:
            path.append(part)
    return tuple(path)


def _identity(x: np.ndarray) -> np.ndarray:
    return x


def _conv_kernel(kernel_shape: tuple[int, ...]) -> Transform:
    """A torch 4-D weight -> the layout of a Flax kernel of `kernel_shape`.

    Conv2d weight [O, I, kh, kw] -> [kh, kw, I, O]. ConvTranspose2d weight [I, O, kh, kw]:
    `nn.ConvTranspose(transpose_kernel=True)` keeps [kh, kw, O, I], the same transpose;
    with transpose_kernel=False the kernel is [kh, kw, I, O], spatially flipped.
    """

    def transform(w: np.ndarray) -> np.ndarray:
        hwio = w.transpose(2, 3, 1, 0)
        if hwio.shape != kernel_shape and w.transpose(2, 3, 0, 1).shape == kernel_shape:
            return np.flip(w, (2, 3)).transpose(2, 3, 0, 1)  # transposed conv, plain kernel
        return hwio

    return transform


def _linear_kernel(w: np.ndarray) -> np.ndarray:
    return w.T  # [out, in] -> [in, out]


def _spectral_v(kernel_shape: tuple[int, ...]) -> Transform:
    # PyTorch flattens the kernel window as (I, kh, kw), SpectralNormConv as (kh, kw, I).
    kh, kw, fan_in, _ = kernel_shape

    def transform(v: np.ndarray) -> np.ndarray:
        if v.size != kh * kw * fan_in:
            return v  # reported as a shape mismatch
        return v.reshape(fan_in, kh, kw).transpose(1, 2, 0).reshape(-1)

    return transform


def _reshaped(shape: tuple[int, ...], transform: Transform = _identity) -> Transform:
    """`transform`, then a reshape to the Flax leaf's shape when the sizes agree."""

    def apply(w: np.ndarray) -> np.ndarray:
        w = transform(w)
        return w.reshape(shape) if w.size == int(np.prod(shape)) else w

    return apply


def _in_projection(part: int, shape: tuple[int, ...], leaf: str) -> Transform:
    # in_proj_weight [3E, E] / in_proj_bias [3E] stack q, k, v (in that order); Flax keeps
    # each as kernel [E, heads, head_dim] / bias [heads, head_dim], heads in torch's order.
    def rows(w: np.ndarray) -> np.ndarray:
        dim = w.shape[0] // 3
        w = w[part * dim : (part + 1) * dim]
        return w.T if leaf == "kernel" else w

    return _reshaped(shape, rows)


def state_key_map(state: StateDict, template: Tree) -> KeyMap:
    """Flax leaf path (collection first) -> (official key, transform), for every key of the
    state dict that the naming rule puts on a variable of `template` (the model's variables,
    shapes only). Keys that land on nothing are left out of the map (`assign` reports them)."""
    shapes = {path: tuple(leaf.shape) for path, leaf in flatten(template)}

    def exists(*path: str) -> bool:
        return path in shapes

    mapping: KeyMap = {}
    for key in state:
        module_key, _, name = key.rpartition(".")
        module = flax_module_path(module_key)
        kernel = ("params", *module, "kernel")
        targets: list[tuple[TargetPath, Transform]] = []
        if name in ("in_proj_weight", "in_proj_bias"):
            leaf = "kernel" if name == "in_proj_weight" else "bias"
            for part, projection in enumerate(_ATTENTION_PARTS):
                target = ("params", *module, projection, leaf)
                if exists(*target):
                    targets.append((target, _in_projection(part, shapes[target], leaf)))
        elif module and module[-1] == "out_proj":  # MultiheadAttention's output projection
            target = ("params", *module[:-1], "out", "kernel" if name == "weight" else "bias")
            if exists(*target):
                transform = _linear_kernel if name == "weight" else _identity
                targets.append((target, _reshaped(shapes[target], transform)))
        elif name in ("weight", "weight_orig") and exists(*kernel):
            shape = shapes[kernel]
            transform = _conv_kernel(shape) if len(shape) == 4 else _linear_kernel
            targets.append((kernel, transform))
        elif name == "weight" and exists("params", *module, "scale"):
            targets.append((("params", *module, "scale"), _identity))
        elif name == "weight_u":
            targets.append((("batch_stats", *module, "u"), _identity))
        elif name == "weight_v" and exists(*kernel):
            targets.append((("batch_stats", *module, "v"), _spectral_v(shapes[kernel])))
        elif name == "bias":
            targets.append((("params", *module, "bias"), _identity))
        elif name in ("running_mean", "running_var"):
            targets.append((("batch_stats", *module, name.removeprefix("running_")), _identity))
        for target, transform in targets:
            if exists(*target):
                mapping[target] = (key, transform)
    return mapping


def strip_module_prefix(state: StateDict) -> StateDict:
    """Keys without the 'module.' that (Distributed)DataParallel puts before every key."""
    if state and all(key.startswith("module.") for key in state):
        return {key[len("module.") :]: value for key, value in state.items()}
    return state


def discolor_template(model: DisColor) -> Tree:
    """Shapes of the model's variables (no memory, no compute). Anchors are given, so the
    abstract initialisation skips k-means; no variable depends on the input size."""
    gray_l = jax.ShapeDtypeStruct((1, 2 * CELL, 2 * CELL, 1), jnp.float32)
    anchors = Anchors(jnp.zeros((1, 2, 2), jnp.float32), jnp.zeros((1, 2, 2), jnp.int32))
    init = functools.partial(model.init, anchors=anchors)
    return jax.eval_shape(init, jax.random.key(0), gray_l)


def _fits(state: StateDict, template: Tree) -> bool:
    """Whether every variable of `template` gets a key of the right shape and no key is left."""
    mapping = state_key_map(state, template)
    shapes = {path: tuple(leaf.shape) for path, leaf in flatten(template)}
    used = {key for key, _ in mapping.values()}
    return (
        set(mapping) == set(shapes)
        and all(transform(state[key]).shape == shapes[t] for t, (key, transform) in mapping.items())
        and all(key in used or _IGNORED.search(key) for key in state)
    )


def convert_state(state: StateDict, size: str | None = None, source: str = "checkpoint") -> Tree:
    """An official DISCO state dict -> {"params": {"backbone": ...}, "batch_stats": ...}.

    size: 'full' (the official 256 x 256 model, the default) or 'demo'; the checkpoint must
    have that size's shapes. Raises CheckpointMismatch naming `source` and listing every key
    without a variable, every variable without a key and every shape that differs (and the
    size it is, if it is a checkpoint of another size).
    """
    size = size or "full"
    if size not in DISCOLOR_SIZES:
        raise ValueError(f"unknown DisColor size {size!r}; one of {sorted(DISCOLOR_SIZES)}")
    state = strip_module_prefix(state)
    template = discolor_template(discolor(size))
    try:
        tree = assign(
            state,
            state_key_map(state, template),
            template,
            ignore=lambda key: bool(_IGNORED.search(key)),
            source=f"{source} (DisColor-{size})",
        )
    except CheckpointMismatch as error:
        for other in DISCOLOR_SIZES:
            if other != size and _fits(state, discolor_template(discolor(other))):
                raise CheckpointMismatch(
                    f"{source} is a DisColor-{other} checkpoint, not DisColor-{size}: pass "
                    f"size={other!r} (--size {other})"
                ) from error
        raise
    return {collection: {BACKBONE: variables} for collection, variables in tree.items()}


def convert(path: str | os.PathLike, size: str | None = None) -> Tree:
    """Reads an official DISCO checkpoint (`torch.save({'state_dict': ..., ...})` or a bare
    state dict) and converts it (see `convert_state`)."""
    return convert_state(read_state_dict(path), size, source=str(path))


def convert_to_checkpoint(
    path: str | os.PathLike, output: str | os.PathLike, size: str | None = None
) -> Path:
    """Converts the official checkpoint and writes the variables as an orbax checkpoint at
    `output` (a stage's `init_from`). Returns the directory written."""
    return save_variables(output, convert(path, size))
