"""Conversion of official DDColor and ConvNeXt checkpoints.

The fixtures list the official parameter names and shapes (DDColor-T/L from piddnad/DDColor,
ConvNeXt-T/L ImageNet-22k from facebookresearch/ConvNeXt). Fake checkpoints are built from them
with one constant per key (stored as zero-stride tensors, so the files stay small): after
conversion every Flax leaf must hold the constant of the key it was meant to come from.
Layout transforms are checked numerically against PyTorch layers.
"""

from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aiaic_jax.convert.__main__ import main as convert_main
from aiaic_jax.convert.common import (
    CheckpointMismatch,
    assign,
    read_state_dict,
    restore_variables,
)
from aiaic_jax.models.backbones.ddcolor.convert import (
    Rule,
    convert_convnext,
    convert_ddcolor,
    convert_ddcolor_state,
    convnext_key_map,
    ddcolor_config_from_state,
    ddcolor_key_map,
    ddcolor_template,
    imagenet_convnext_template,
    key_map,
)
from aiaic_jax.models.backbones.ddcolor.convnext import ConvNeXtBlock
from aiaic_jax.models.backbones.ddcolor.decoder import MultiHeadAttention
from aiaic_jax.models.backbones.ddcolor.model import DDColor

torch = pytest.importorskip("torch")  # writes the .pth files; `make test` installs the CPU build

FIXTURES = Path(__file__).parent / "fixtures"


def official_shapes(name: str) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for line in (FIXTURES / f"{name}_state_dict.tsv").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape = line.split("\t")
        shapes[key] = tuple(int(n) for n in shape.split(",")) if shape else ()
    return shapes


def constant_state_dict(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Key number i holds the constant i everywhere, without allocating the full tensor."""
    return {
        key: torch.tensor(float(i)).expand(shape) if shape else torch.tensor(float(i))
        for i, (key, shape) in enumerate(shapes.items())
    }


def _leaves(tree, prefix=()):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _leaves(value, (*prefix, key))
    else:
        yield prefix, tree


def _zero_stride(shape):
    return np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), shape, (0,) * len(shape))


@pytest.mark.parametrize("size", ["tiny", "large"])
def test_every_official_ddcolor_key_maps_to_a_leaf_of_the_same_size(size):
    shapes = official_shapes(f"ddcolor_{size}")
    config = ddcolor_config_from_state({k: _zero_stride(s) for k, s in shapes.items()})
    template = ddcolor_template(DDColor(**config))
    mapping = ddcolor_key_map(template)
    leaves = dict(_leaves(template))
    used = set()
    for target, (key, transform) in mapping.items():
        assert key in shapes, f"{'/'.join(target)} expects {key}, not in the official model"
        assert transform(_zero_stride(shapes[key])).shape == leaves[target].shape, key
        used.add(key)
    left_over = {k for k in shapes if k not in used}
    assert left_over == {"mean", "std"} | {k for k in shapes if k.endswith("num_batches_tracked")}


def test_ddcolor_checkpoint_converts_every_value_to_its_place(tmp_path):
    shapes = official_shapes("ddcolor_tiny")
    index = {key: i for i, key in enumerate(shapes)}
    path = tmp_path / "ddcolor_paper_tiny.pth"
    torch.save({"params": constant_state_dict(shapes)}, path)

    variables = convert_ddcolor(path, "tiny")

    assert set(variables) == {"params", "batch_stats"}
    backbone = {c: v["backbone"] for c, v in variables.items()}
    mapping = ddcolor_key_map(backbone)
    for target, (key, _) in mapping.items():
        value = dict(_leaves(backbone))[target]
        assert np.all(value == index[key]), f"{'/'.join(target)} does not hold {key}"
    # Spot checks of the key map itself.
    assert mapping[("params", "pixel_decoder", "block0", "upsample", "conv", "kernel")][0] == (
        "decoder.layers.0.shuf.conv.0.weight_orig"
    )
    assert mapping[("batch_stats", "refine", "v")][0] == "refine_net.0.0.weight_v"
    assert mapping[("params", "color_decoder", "layer4", "self_attention", "value", "bias")][0] == (
        "decoder.color_decoder.transformer_self_attention_layers.4.self_attn.in_proj_bias"
    )


def test_mismatched_checkpoint_lists_every_problem():
    shapes = official_shapes("ddcolor_tiny")
    state = {k: _zero_stride(s) for k, s in shapes.items()}
    del state["decoder.color_decoder.decoder_norm.bias"]
    state["decoder.extra.weight"] = _zero_stride((3,))
    state["decoder.layers.1.bn.weight"] = _zero_stride((7,))
    with pytest.raises(CheckpointMismatch) as error:
        convert_ddcolor_state(state, "tiny")
    message = str(error.value)
    assert "decoder.color_decoder.decoder_norm.bias" in message
    assert "decoder.extra.weight" in message
    assert "decoder.layers.1.bn.weight" in message


def test_size_is_checked_when_given():
    state = {k: _zero_stride(s) for k, s in official_shapes("ddcolor_tiny").items()}
    with pytest.raises(CheckpointMismatch, match="not DDColor-large"):
        convert_ddcolor_state(state, "large")


# timm's names for the same ConvNeXt parameters (its checkpoint filter, in reverse).
def _timm_name(key: str) -> str:
    import re

    for pattern, replacement in [
        (r"^downsample_layers\.0\.", "stem."),
        (r"^downsample_layers\.(\d)\.", r"stages.\1.downsample."),
        (r"^stages\.(\d)\.(\d+)\.dwconv\.", r"stages.\1.blocks.\2.conv_dw."),
        (r"^stages\.(\d)\.(\d+)\.pwconv(\d)\.", r"stages.\1.blocks.\2.mlp.fc\3."),
        (r"^stages\.(\d)\.(\d+)\.", r"stages.\1.blocks.\2."),
        (r"^norm\.", "head.norm."),
        (r"^head\.", "head.fc."),
    ]:
        new, count = re.subn(pattern, replacement, key)
        if count:
            return new
    return key


@pytest.mark.parametrize("names", ["facebook", "timm"])
def test_convnext_checkpoint_becomes_the_encoder_without_its_head(tmp_path, names):
    shapes = official_shapes("convnext_tiny_22k")
    index = {key: i for i, key in enumerate(shapes)}
    state = constant_state_dict(shapes)
    if names == "timm":
        state = {_timm_name(k): v for k, v in state.items()}
    path = tmp_path / "convnext_tiny_22k_224.pth"
    torch.save({"model": state}, path)

    encoder = convert_convnext(path, "tiny")["params"]["backbone"]["encoder"]

    assert not any(k in encoder for k in ("norm0", "norm1", "norm2", "norm3", "head"))
    assert np.all(
        encoder["stage2_block8"]["pwconv2"]["kernel"] == index["stages.2.8.pwconv2.weight"]
    )
    assert np.all(encoder["downsample3_norm"]["scale"] == index["downsample_layers.3.0.weight"])
    assert np.all(encoder["norm"]["bias"] == index["norm.bias"])
    assert np.all(encoder["stem_conv"]["kernel"] == index["downsample_layers.0.0.weight"])


def test_every_imagenet_convnext_large_key_maps_except_the_head():
    shapes = official_shapes("convnext_large_22k")
    template = imagenet_convnext_template((3, 3, 27, 3), (192, 384, 768, 1536))
    leaves = dict(_leaves(template))
    used = set()
    for target, (key, transform) in convnext_key_map(template).items():
        assert transform(_zero_stride(shapes[key])).shape == leaves[target].shape, key
        used.add(key)
    assert set(shapes) - used == {"head.weight", "head.bias"}


def test_command_line_writes_a_restorable_checkpoint(tmp_path, capsys):
    shapes = official_shapes("convnext_tiny_22k")
    path = tmp_path / "convnext_tiny_22k_224.pth"
    torch.save({"model": constant_state_dict(shapes)}, path)
    convert_main(["convnext", str(path), str(tmp_path / "out"), "--size", "tiny"])
    assert "wrote" in capsys.readouterr().out
    restored = restore_variables(tmp_path / "out")
    stem = restored["params"]["backbone"]["encoder"]["stem_conv"]["kernel"]
    assert stem.shape == (4, 4, 3, 96)
    assert np.all(np.asarray(stem) == list(shapes).index("downsample_layers.0.0.weight"))


class _Attention(nn.Module):
    @nn.compact
    def __call__(self, q, k, v):
        return MultiHeadAttention(num_heads=4, name="attn")(q, k, v)


def test_attention_weights_convert_to_the_same_function_as_torch():
    torch.manual_seed(0)
    reference = torch.nn.MultiheadAttention(16, 4)
    with torch.no_grad():
        for p in reference.parameters():
            p.copy_(torch.randn(p.shape))
    q, k, v = (torch.randn(5 if i == 0 else 7, 2, 16) for i in range(3))  # [L, B, E]
    with torch.no_grad():
        expected = reference(q, k, v)[0].numpy().transpose(1, 0, 2)

    flax_inputs = [jnp.asarray(t.numpy().transpose(1, 0, 2)) for t in (q, k, v)]
    template = jax.eval_shape(_Attention().init, jax.random.key(0), *flax_inputs)
    rules = [Rule(r"attn/(query|key|value|out)", r"mha|\1", "attention")]
    state = {f"mha.{k}": v.numpy() for k, v in reference.state_dict().items()}
    variables = assign(state, key_map(template, rules, heads=4), template)
    np.testing.assert_allclose(_Attention().apply(variables, *flax_inputs), expected, atol=1e-4)


def test_convnext_block_kernels_convert_to_the_same_convolutions_as_torch():
    torch.manual_seed(0)
    dim = 8
    dwconv = torch.nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
    pwconv1, pwconv2 = torch.nn.Linear(dim, 4 * dim), torch.nn.Linear(4 * dim, dim)
    norm = torch.nn.LayerNorm(dim, eps=1e-6)
    gamma = torch.randn(dim)
    x = torch.randn(2, dim, 9, 9)
    with torch.no_grad():
        h = norm(dwconv(x).permute(0, 2, 3, 1))
        h = pwconv2(torch.nn.functional.gelu(pwconv1(h)))
        expected = (x.permute(0, 2, 3, 1) + gamma * h).numpy()
    state = {"stages.0.0.gamma": gamma.numpy()}
    for name, module in [("dwconv", dwconv), ("pwconv1", pwconv1), ("pwconv2", pwconv2)]:
        state |= {f"stages.0.0.{name}.{k}": v.numpy() for k, v in module.state_dict().items()}
    state |= {f"stages.0.0.norm.{k}": v.numpy() for k, v in norm.state_dict().items()}

    block = ConvNeXtBlock(dim)
    x_nhwc = jnp.asarray(x.numpy().transpose(0, 2, 3, 1))
    template = {
        "params": {"stage0_block0": jax.eval_shape(block.init, jax.random.key(0), x_nhwc)["params"]}
    }
    rules = [
        Rule(r"stage(\d+)_block(\d+)", r"stages.\1.\2", "layer_scale"),
        Rule(r"stage(\d+)_block(\d+)/(dwconv|pwconv1|pwconv2)", r"stages.\1.\2.\3", "linear"),
        Rule(r"stage(\d+)_block(\d+)/norm", r"stages.\1.\2.norm", "norm"),
    ]
    params = assign(state, key_map(template, rules), template)["params"]["stage0_block0"]
    np.testing.assert_allclose(block.apply({"params": params}, x_nhwc), expected, atol=1e-5)


def test_a_torch_older_than_2_6_is_refused_for_pth_files(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    path = tmp_path / "weights.pth"
    torch.save({"a": torch.zeros(1)}, path)
    assert set(read_state_dict(path)) == {"a"}
    monkeypatch.setattr(torch, "__version__", "2.5.1")
    with pytest.raises(ImportError, match="CVE-2025-32434"):
        read_state_dict(path)
