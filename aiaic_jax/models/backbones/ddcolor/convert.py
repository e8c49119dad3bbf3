"""Official DDColor and ConvNeXt checkpoints -> Flax variables of the DDColor backbone.

DDColor checkpoints (`ddcolor_paper_tiny.pth`, `ddcolor_paper.pth`, `ddcolor_modelscope.pth`,
`ddcolor_artistic.pth`; a raw state dict or `{'params': ...}`) become
`{"params": {"backbone": ...}, "batch_stats": {"backbone": ...}}`: BatchNorm running statistics
and the spectral-norm vectors `weight_u`/`weight_v` go to `batch_stats`. ConvNeXt ImageNet
checkpoints (`convnext_{tiny,large}_22k_224.pth` with facebookresearch key names, or timm's
names) become `{"params": {"backbone": {"encoder": ...}}}`; the classifier head is dropped and
DDColor's stage norms `norm0..3`, which ImageNet models lack, keep their initial values (the
official code loads these checkpoints with strict=False to the same effect).

Every variable is matched to a PyTorch key by an explicit rule on its Flax path; a key left
over, a variable without a key, or a shape that differs is an error that lists them all.
"""

from __future__ import annotations

import os
import re
from typing import Any, NamedTuple

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
)
from aiaic_jax.models.backbones.ddcolor.convnext import CONVNEXT_SIZES, ConvNeXt
from aiaic_jax.models.backbones.ddcolor.model import DDCOLOR_SIZES, DDColor

BACKBONE = "backbone"  # the composed model's name for its colorization backbone
OFFICIAL_NUM_HEADS = 8  # not recoverable from a checkpoint; every official model uses 8

KeyMap = dict[TargetPath, tuple[str, Transform]]


class Rule(NamedTuple):
    flax_module: str  # regex over the '/'-joined Flax module path
    torch_module: str  # PyTorch module prefix, may use the regex groups
    kind: str  # how the leaves map: see _leaf_key


# ConvNeXt, relative to the encoder (PyTorch: the `ConvNeXt` module).
_CONVNEXT_RULES = [
    Rule(r"stem_conv", r"downsample_layers.0.0", "linear"),
    Rule(r"stem_norm", r"downsample_layers.0.1", "norm"),
    Rule(r"downsample(\d)_norm", r"downsample_layers.\1.0", "norm"),
    Rule(r"downsample(\d)_conv", r"downsample_layers.\1.1", "linear"),
    Rule(r"stage(\d+)_block(\d+)", r"stages.\1.\2", "layer_scale"),
    Rule(r"stage(\d+)_block(\d+)/(dwconv|pwconv1|pwconv2)", r"stages.\1.\2.\3", "linear"),
    Rule(r"stage(\d+)_block(\d+)/norm", r"stages.\1.\2.norm", "norm"),
    Rule(r"norm(\d?)", r"norm\1", "norm"),
]

_COLOR = "decoder.color_decoder"
_DDCOLOR_RULES = [
    *[
        Rule(f"encoder/{rule.flax_module}", f"encoder.arch.{rule.torch_module}", rule.kind)
        for rule in _CONVNEXT_RULES
    ],
    Rule(r"pixel_decoder/block(\d)/upsample/conv", r"decoder.layers.\1.shuf.conv.0", "spectral"),
    Rule(r"pixel_decoder/block(\d)/upsample/bn", r"decoder.layers.\1.shuf.conv.1", "norm"),
    Rule(r"pixel_decoder/block(\d)/skip_bn", r"decoder.layers.\1.bn", "norm"),
    Rule(r"pixel_decoder/block(\d)/conv", r"decoder.layers.\1.conv.0", "spectral"),
    Rule(r"pixel_decoder/block(\d)/conv_bn", r"decoder.layers.\1.conv.2", "norm"),
    Rule(r"pixel_decoder/last_upsample/conv", r"decoder.last_shuf.conv.0", "spectral"),
    Rule(r"color_decoder", _COLOR, "embedding"),
    Rule(r"color_decoder/input_proj(\d)", rf"{_COLOR}.input_proj.\1", "linear"),
    Rule(
        r"color_decoder/layer(\d+)/cross_attention/(query|key|value|out)",
        rf"{_COLOR}.transformer_cross_attention_layers.\1.multihead_attn|\2",
        "attention",
    ),
    Rule(
        r"color_decoder/layer(\d+)/cross_norm",
        rf"{_COLOR}.transformer_cross_attention_layers.\1.norm",
        "norm",
    ),
    Rule(
        r"color_decoder/layer(\d+)/self_attention/(query|key|value|out)",
        rf"{_COLOR}.transformer_self_attention_layers.\1.self_attn|\2",
        "attention",
    ),
    Rule(
        r"color_decoder/layer(\d+)/self_norm",
        rf"{_COLOR}.transformer_self_attention_layers.\1.norm",
        "norm",
    ),
    Rule(
        r"color_decoder/layer(\d+)/ffn_(linear\d)",
        rf"{_COLOR}.transformer_ffn_layers.\1.\2",
        "linear",
    ),
    Rule(r"color_decoder/layer(\d+)/ffn_norm", rf"{_COLOR}.transformer_ffn_layers.\1.norm", "norm"),
    Rule(r"color_decoder/decoder_norm", rf"{_COLOR}.decoder_norm", "norm"),
    Rule(r"color_decoder/color_embed_(\d)", rf"{_COLOR}.color_embed.layers.\1", "linear"),
    Rule(r"refine", r"refine_net.0.0", "spectral"),
]

# Keys of an official DDColor state dict with no Flax counterpart: the ImageNet mean/std
# buffers (constants in DDColor) and BatchNorm's step counters.
_DDCOLOR_IGNORED = re.compile(r"^(mean|std)$|\.num_batches_tracked$")
_CONVNEXT_IGNORED = re.compile(r"^head\.")


def _identity(x: np.ndarray) -> np.ndarray:
    return x


def _conv_kernel(w: np.ndarray) -> np.ndarray:
    return w.transpose(2, 3, 1, 0)  # [O, I, kh, kw] -> [kh, kw, I, O]; depthwise: I = 1


def _linear_kernel(w: np.ndarray) -> np.ndarray:
    return w.reshape(w.shape[0], -1).T  # [out, in] or 1x1 conv [out, in, 1, 1] -> [in, out]


def _spectral_v(kernel_shape: tuple[int, ...]) -> Transform:
    # PyTorch flattens the kernel window as (I, kh, kw), SpectralNormConv as (kh, kw, I).
    kh, kw, fan_in, _ = kernel_shape
    return lambda v: v.reshape(fan_in, kh, kw).transpose(1, 2, 0).reshape(-1)


def _in_proj(part: int, leaf: str, heads: int) -> Transform:
    # in_proj_weight [3E, E] / in_proj_bias [3E] stack q, k, v; Flax keeps each projection as
    # kernel [E, heads, head_dim] and bias [heads, head_dim], heads in PyTorch's order.
    def transform(w: np.ndarray) -> np.ndarray:
        dim = w.shape[0] // 3
        rows = w[part * dim : (part + 1) * dim]
        if leaf == "kernel":
            return rows.T.reshape(rows.shape[1], heads, dim // heads)
        return rows.reshape(heads, dim // heads)

    return transform


def _out_proj(heads: int) -> Transform:
    def transform(w: np.ndarray) -> np.ndarray:
        dim_out, dim_in = w.shape
        return w.T.reshape(heads, dim_in // heads, dim_out)  # -> [heads, head_dim, E]

    return transform


def _leaf_key(
    kind: str, module: str, leaf: str, kernel_shape: tuple[int, ...] | None, heads: int
) -> tuple[str, Transform] | None:
    """The PyTorch key and the transform for one leaf of a module of the given kind."""
    if kind == "linear":  # nn.Conv2d or nn.Linear
        if leaf == "kernel":
            transform = _conv_kernel if len(kernel_shape or ()) == 4 else _linear_kernel
            return f"{module}.weight", transform
        if leaf == "bias":
            return f"{module}.bias", _identity
    elif kind == "norm":  # LayerNorm or BatchNorm
        names = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
        if leaf in names:
            return f"{module}.{names[leaf]}", _identity
    elif kind == "spectral":  # torch.nn.utils.spectral_norm(nn.Conv2d)
        if leaf == "kernel":
            return f"{module}.weight_orig", _conv_kernel
        if leaf == "bias":
            return f"{module}.bias", _identity
        if leaf == "u":
            return f"{module}.weight_u", _identity
        if leaf == "v" and kernel_shape is not None:
            return f"{module}.weight_v", _spectral_v(kernel_shape)
    elif kind == "layer_scale":
        if leaf == "gamma":
            return f"{module}.gamma", _identity
    elif kind == "embedding":
        if leaf in ("query_feat", "query_embed", "level_embed"):
            return f"{module}.{leaf}.weight", _identity
    elif kind == "attention":  # nn.MultiheadAttention
        module, projection = module.split("|")
        if projection == "out":
            if leaf == "kernel":
                return f"{module}.out_proj.weight", _out_proj(heads)
            return f"{module}.out_proj.bias", _identity
        part = ("query", "key", "value").index(projection)
        name = "in_proj_weight" if leaf == "kernel" else "in_proj_bias"
        return f"{module}.{name}", _in_proj(part, leaf, heads)
    return None


def _leaves(tree: Any, prefix: TargetPath = ()) -> list[tuple[TargetPath, Any]]:
    if isinstance(tree, dict):
        return [item for key, value in tree.items() for item in _leaves(value, (*prefix, key))]
    return [(prefix, tree)]


def key_map(template: Tree, rules: list[Rule], heads: int = OFFICIAL_NUM_HEADS) -> KeyMap:
    """Maps every leaf of a variables tree (collection, module..., leaf) to a PyTorch key.

    Raises CheckpointMismatch naming the leaves that no rule covers (a model change that the
    converter has not caught up with).
    """
    mapping: KeyMap = {}
    uncovered = []
    params = dict(_leaves(template.get("params", {})))
    for path, _ in _leaves(template):
        module, leaf = "/".join(path[1:-1]), path[-1]
        kernel = params.get((*path[1:-1], "kernel"))
        kernel_shape = tuple(kernel.shape) if kernel is not None else None
        for rule in rules:
            match = re.fullmatch(rule.flax_module, module)
            if match is None:
                continue
            found = _leaf_key(rule.kind, match.expand(rule.torch_module), leaf, kernel_shape, heads)
            if found is not None:
                mapping[path] = found
                break
        else:
            uncovered.append("/".join(path))
    if uncovered:
        raise CheckpointMismatch("no conversion rule for: " + ", ".join(uncovered))
    return mapping


def ddcolor_key_map(template: Tree, heads: int = OFFICIAL_NUM_HEADS) -> KeyMap:
    """Flax path -> (official PyTorch key, transform) for a DDColor variables tree."""
    return key_map(template, _DDCOLOR_RULES, heads)


def convnext_key_map(template: Tree) -> KeyMap:
    """Flax path -> (facebookresearch ConvNeXt key, transform) for a ConvNeXt variables tree."""
    return key_map(template, _CONVNEXT_RULES)


def _count_indices(state: StateDict, pattern: str) -> int:
    found = {m.group(1) for key in state if (m := re.fullmatch(pattern, key))}
    return len(found)


def _shape(state: StateDict, key: str, source: str) -> tuple[int, ...]:
    if key not in state:
        raise CheckpointMismatch(f"{source}: not an official DDColor/ConvNeXt state dict, no {key}")
    return tuple(state[key].shape)


def convnext_config_from_state(state: StateDict, prefix: str = "", source: str = "") -> dict:
    """ConvNeXt depths and dims read from a (facebookresearch-named) state dict."""
    dims = tuple(
        _shape(state, f"{prefix}downsample_layers.{i}.{min(i, 1)}.weight", source)[0]
        for i in range(4)
    )
    depths = tuple(
        _count_indices(state, rf"{re.escape(prefix)}stages\.{i}\.(\d+)\.gamma") for i in range(4)
    )
    return {"depths": depths, "dims": dims}


def ddcolor_config_from_state(state: StateDict, source: str = "checkpoint") -> dict[str, Any]:
    """DDColor attributes read from an official state dict (num_heads is not in it: 8)."""
    encoder = convnext_config_from_state(state, "encoder.arch.", source)
    query_shape = _shape(state, f"{_COLOR}.query_feat.weight", source)
    return {
        "encoder_depths": encoder["depths"],
        "encoder_dims": encoder["dims"],
        "decoder_widths": tuple(
            _shape(state, f"decoder.layers.{i}.conv.0.weight_orig", source)[0] for i in range(3)
        ),
        "num_queries": query_shape[0],
        "num_color_layers": _count_indices(
            state, rf"{_COLOR}\.transformer_ffn_layers\.(\d+)\.linear1\.weight"
        ),
        "hidden_dim": query_shape[1],
        "num_heads": OFFICIAL_NUM_HEADS,
        "ffn_dim": _shape(state, f"{_COLOR}.transformer_ffn_layers.0.linear1.weight", source)[0],
        "num_output_channels": _shape(state, "refine_net.0.0.weight_orig", source)[0],
    }


def ddcolor_size_name(config: dict[str, Any]) -> str | None:
    """The registered DDColor size ('tiny', 'large', ...) with these attributes, if any."""
    for name, size in DDCOLOR_SIZES.items():
        if (
            all(config.get(k) == v for k, v in size.items())
            and config.get("num_output_channels", 2) == 2
        ):
            return name
    return None


def _strip_module_prefix(state: StateDict) -> StateDict:
    # Checkpoints saved from DistributedDataParallel prefix every key with 'module.'.
    if state and all(key.startswith("module.") for key in state):
        return {key[len("module.") :]: value for key, value in state.items()}
    return state


def ddcolor_template(model: DDColor) -> Tree:
    """Shapes of the model's variables (no memory, no compute)."""
    gray_l = jax.ShapeDtypeStruct((1, 32, 32, 1), jnp.float32)
    return jax.eval_shape(model.init, jax.random.key(0), gray_l)


def convert_ddcolor_state(
    state: StateDict, size: str | None = None, source: str = "checkpoint"
) -> Tree:
    """An official DDColor state dict -> {"params": {"backbone": ...}, "batch_stats": ...}.

    size: 'tiny', 'large', ...; when given, the checkpoint must be of that size. When not, the
    sizes are read from the checkpoint.
    """
    state = _strip_module_prefix(state)
    config = ddcolor_config_from_state(state, source)
    if size is not None:
        if size not in DDCOLOR_SIZES:
            raise ValueError(f"unknown DDColor size {size!r}; one of {sorted(DDCOLOR_SIZES)}")
        expected = {**DDCOLOR_SIZES[size], "num_output_channels": 2}
        differences = {k: (config[k], v) for k, v in expected.items() if config[k] != v}
        if differences:
            raise CheckpointMismatch(
                f"{source} is not DDColor-{size}: "
                + ", ".join(
                    f"{k} is {have}, expected {want}" for k, (have, want) in differences.items()
                )
            )
    template = ddcolor_template(DDColor(**config))
    tree = assign(
        state,
        ddcolor_key_map(template),
        template,
        ignore=lambda key: bool(_DDCOLOR_IGNORED.search(key)),
        source=source,
    )
    return {collection: {BACKBONE: variables} for collection, variables in tree.items()}


def convert_ddcolor(path: str | os.PathLike, size: str | None = None) -> Tree:
    """Reads an official DDColor checkpoint file and converts it (see convert_ddcolor_state)."""
    return convert_ddcolor_state(read_state_dict(path), size, source=str(path))


# timm's ConvNeXt names -> facebookresearch's, as DDColor's encoder uses them.
_TIMM_RENAMES = [
    (r"^stem\.(\d)\.", r"downsample_layers.0.\1."),
    (r"^stages\.(\d)\.downsample\.(\d)\.", r"downsample_layers.\1.\2."),
    (r"^stages\.(\d)\.blocks\.(\d+)\.conv_dw\.", r"stages.\1.\2.dwconv."),
    (r"^stages\.(\d)\.blocks\.(\d+)\.mlp\.fc(\d)\.", r"stages.\1.\2.pwconv\3."),
    (r"^stages\.(\d)\.blocks\.(\d+)\.", r"stages.\1.\2."),
    (r"^head\.norm\.", r"norm."),
    (r"^head\.fc\.", r"head."),
]


def _facebook_convnext_names(state: StateDict) -> StateDict:
    if not any(key.startswith("stem.") for key in state):
        return state
    renamed = {}
    for key, value in state.items():
        for pattern, replacement in _TIMM_RENAMES:
            key, count = re.subn(pattern, replacement, key)
            if count:
                break
        renamed[key] = value
    return renamed


def imagenet_convnext_template(depths: tuple[int, ...], dims: tuple[int, ...]) -> Tree:
    """Shapes of the encoder parameters an ImageNet ConvNeXt provides (all but norm0..3)."""
    image = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    template = jax.eval_shape(ConvNeXt(depths, dims).init, jax.random.key(0), image)
    # DDColor's stage norms are not part of an ImageNet model.
    return {
        "params": {k: v for k, v in template["params"].items() if not re.fullmatch(r"norm\d", k)}
    }


def convert_convnext_state(
    state: StateDict, size: str | None = None, source: str = "checkpoint"
) -> Tree:
    """An ImageNet ConvNeXt state dict -> {"params": {"backbone": {"encoder": ...}}}."""
    state = _facebook_convnext_names(_strip_module_prefix(state))
    config = convnext_config_from_state(state, source=source)
    if size is not None:
        if size not in CONVNEXT_SIZES:
            raise ValueError(f"unknown ConvNeXt size {size!r}; one of {sorted(CONVNEXT_SIZES)}")
        if config != {k: tuple(v) for k, v in CONVNEXT_SIZES[size].items()}:
            raise CheckpointMismatch(
                f"{source} is not ConvNeXt-{size}: depths {config['depths']}, dims {config['dims']}"
            )
    template = imagenet_convnext_template(config["depths"], config["dims"])
    tree = assign(
        state,
        convnext_key_map(template),
        template,
        ignore=lambda key: bool(_CONVNEXT_IGNORED.search(key)),
        source=source,
    )
    return {"params": {BACKBONE: {"encoder": tree["params"]}}}


def convert_convnext(path: str | os.PathLike, size: str | None = None) -> Tree:
    """Reads an ImageNet ConvNeXt checkpoint file and converts it to DDColor's encoder."""
    return convert_convnext_state(read_state_dict(path), size, source=str(path))
