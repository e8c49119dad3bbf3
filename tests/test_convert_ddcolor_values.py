"""Conversion of official DDColor weights, checked on values against PyTorch.

test_convert_ddcolor.py checks that every official key lands on a leaf of the right shape; a
kernel stored with its height and width swapped, or a square [C, C] matrix left untransposed,
has the right shape and passes it. Here every kind of rule of `ddcolor.convert` (plain,
strided and depthwise conv kernels, linear layers, channels-first and channels-last
LayerNorm, BatchNorm with running statistics, spectral-norm convs with their u and v vectors,
layer scale, the attention in_proj split and out_proj, the colour decoder's input projections
and embeddings, the refine conv) is run on a PyTorch layer built as the official code
(piddnad/DDColor) builds it, with random non-symmetric weights under the official key names.
The converter's own key map and transforms turn them into Flax variables, and the project's
Flax module must compute the same function on the same random input. A reduced DDColor is
converted from a checkpoint file and compared end to end.
"""

import functools
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aiaic_jax.color import gray_rgb_from_l
from aiaic_jax.convert.common import assign
from aiaic_jax.models.backbones.ddcolor.convert import (
    OFFICIAL_NUM_HEADS,
    convert_ddcolor,
    ddcolor_config_from_state,
    ddcolor_key_map,
)
from aiaic_jax.models.backbones.ddcolor.convnext import ConvNeXt, ConvNeXtBlock
from aiaic_jax.models.backbones.ddcolor.decoder import (
    ColorDecoderLayer,
    MultiHeadAttention,
    MultiScaleColorDecoder,
    PixelShuffleUpsample,
    UnetBlock,
    _batch_norm,
    sine_position_encoding,
)
from aiaic_jax.models.backbones.ddcolor.model import IMAGENET_MEAN, IMAGENET_STD, DDColor
from aiaic_jax.models.backbones.layers import SpectralNormConv

torch = pytest.importorskip("torch")
F = torch.nn.functional

HEADS = OFFICIAL_NUM_HEADS  # the converter splits attention projections into 8 heads
HIDDEN = 16  # colour decoder width: 8 heads of 2
WIDTHS = (24, 24, HIDDEN)  # pixel decoder; the last equals HIDDEN, as 256 in DDColor-T/L
NUM_QUERIES = 6
FFN_DIM = 32


# --- PyTorch layers as the official code builds them (names give the official keys) ---------


def spectral_conv(cin: int, cout: int, kernel_size: int, bias: bool) -> torch.nn.Module:
    """fastai's `custom_conv_layer` conv with NormType.Spectral: 'same' padding."""
    conv = torch.nn.Conv2d(cin, cout, kernel_size, padding=(kernel_size - 1) // 2, bias=bias)
    return torch.nn.utils.spectral_norm(conv)


class TorchLayerNormChannelsFirst(torch.nn.Module):
    """ConvNeXt's LayerNorm(data_format='channels_first') over [B, C, H, W]."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(dim))
        self.bias = torch.nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x):
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        normalized = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * normalized + self.bias[:, None, None]


class TorchConvNeXtBlock(torch.nn.Module):
    """Depthwise 7x7 conv, channels-last LayerNorm, Linear, GELU, Linear, layer scale."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = torch.nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = torch.nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = torch.nn.Linear(dim, 4 * dim)
        self.pwconv2 = torch.nn.Linear(4 * dim, dim)
        self.gamma = torch.nn.Parameter(torch.ones(dim))

    def forward(self, x):
        h = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        h = self.gamma * self.pwconv2(F.gelu(self.pwconv1(h)))
        return x + h.permute(0, 3, 1, 2)


class TorchConvNeXt(torch.nn.Module):
    """ConvNeXt with DDColor's stage norms; returns the normed stage outputs and the embedding."""

    def __init__(self, depths, dims):
        super().__init__()
        stem = torch.nn.Sequential(
            torch.nn.Conv2d(3, dims[0], 4, stride=4), TorchLayerNormChannelsFirst(dims[0])
        )
        self.downsample_layers = torch.nn.ModuleList([stem])
        for i in range(1, 4):
            self.downsample_layers.append(
                torch.nn.Sequential(
                    TorchLayerNormChannelsFirst(dims[i - 1]),
                    torch.nn.Conv2d(dims[i - 1], dims[i], 2, stride=2),
                )
            )
        self.stages = torch.nn.ModuleList(
            torch.nn.Sequential(*[TorchConvNeXtBlock(dim) for _ in range(depth)])
            for depth, dim in zip(depths, dims)
        )
        for i, dim in enumerate(dims):
            self.add_module(f"norm{i}", TorchLayerNormChannelsFirst(dim))
        self.norm = torch.nn.LayerNorm(dims[-1], eps=1e-6)

    def forward(self, x):
        features = []
        for i in range(4):
            x = self.stages[i](self.downsample_layers[i](x))
            features.append(getattr(self, f"norm{i}")(x))
        return features, self.norm(x.mean((-2, -1)))


class TorchPixelShuffleICNR(torch.nn.Module):
    """CustomPixelShuffle_ICNR: 1x1 spectral conv [+ BatchNorm], ReLU, shuffle, blur."""

    def __init__(self, cin: int, cout: int, scale: int, batch_norm: bool):
        super().__init__()
        layers = [spectral_conv(cin, cout * scale**2, 1, bias=not batch_norm)]
        if batch_norm:
            layers.append(torch.nn.BatchNorm2d(cout * scale**2))
        self.conv = torch.nn.Sequential(*layers)
        self.scale = scale

    def forward(self, x):
        x = F.pixel_shuffle(F.relu(self.conv(x)), self.scale)
        return F.avg_pool2d(F.pad(x, (1, 0, 1, 0), mode="replicate"), 2, stride=1)


class TorchUnetBlockWide(torch.nn.Module):
    """UnetBlockWide: upsample, BatchNorm skip, concat, ReLU, 3x3 spectral conv, ReLU, BN."""

    def __init__(self, cin: int, cskip: int, cout: int):
        super().__init__()
        self.shuf = TorchPixelShuffleICNR(cin, cout, 2, batch_norm=True)
        self.bn = torch.nn.BatchNorm2d(cskip)
        self.conv = torch.nn.Sequential(
            spectral_conv(cout + cskip, cout, 3, bias=False),
            torch.nn.ReLU(),
            torch.nn.BatchNorm2d(cout),
        )

    def forward(self, x, skip):
        return self.conv(F.relu(torch.cat([self.shuf(x), self.bn(skip)], dim=1)))


class TorchCrossAttentionLayer(torch.nn.Module):
    """Post-norm cross-attention of DDColor's colour decoder; sequences [L, B, E]."""

    def __init__(self, dim: int):
        super().__init__()
        self.multihead_attn = torch.nn.MultiheadAttention(dim, HEADS)
        self.norm = torch.nn.LayerNorm(dim)

    def forward(self, queries, query_pos, memory, memory_pos):
        attended = self.multihead_attn(queries + query_pos, memory + memory_pos, memory)[0]
        return self.norm(queries + attended)


class TorchSelfAttentionLayer(torch.nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.self_attn = torch.nn.MultiheadAttention(dim, HEADS)
        self.norm = torch.nn.LayerNorm(dim)

    def forward(self, queries, query_pos):
        with_pos = queries + query_pos
        return self.norm(queries + self.self_attn(with_pos, with_pos, queries)[0])


class TorchFFNLayer(torch.nn.Module):
    def __init__(self, dim: int, ffn_dim: int):
        super().__init__()
        self.linear1 = torch.nn.Linear(dim, ffn_dim)
        self.linear2 = torch.nn.Linear(ffn_dim, dim)
        self.norm = torch.nn.LayerNorm(dim)

    def forward(self, x):
        return self.norm(x + self.linear2(F.relu(self.linear1(x))))


class TorchMLP(torch.nn.Module):
    def __init__(self, sizes):
        super().__init__()
        self.layers = torch.nn.ModuleList(
            torch.nn.Linear(a, b) for a, b in itertools.pairwise(sizes)
        )

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class TorchColorDecoder(torch.nn.Module):
    """MultiScaleColorDecoder; returns the colour embeddings [B, Q, E] (before the maps)."""

    def __init__(self, in_channels, num_layers: int, embed_dim: int):
        super().__init__()
        self.transformer_self_attention_layers = torch.nn.ModuleList(
            TorchSelfAttentionLayer(HIDDEN) for _ in range(num_layers)
        )
        self.transformer_cross_attention_layers = torch.nn.ModuleList(
            TorchCrossAttentionLayer(HIDDEN) for _ in range(num_layers)
        )
        self.transformer_ffn_layers = torch.nn.ModuleList(
            TorchFFNLayer(HIDDEN, FFN_DIM) for _ in range(num_layers)
        )
        self.decoder_norm = torch.nn.LayerNorm(HIDDEN)
        self.query_feat = torch.nn.Embedding(NUM_QUERIES, HIDDEN)
        self.query_embed = torch.nn.Embedding(NUM_QUERIES, HIDDEN)
        self.level_embed = torch.nn.Embedding(len(in_channels), HIDDEN)
        self.input_proj = torch.nn.ModuleList(torch.nn.Conv2d(c, HIDDEN, 1) for c in in_channels)
        self.color_embed = TorchMLP((HIDDEN, HIDDEN, HIDDEN, embed_dim))  # 3 Linear layers

    def forward(self, multi_scale):
        memories, positions = [], []
        for scale, features in enumerate(multi_scale):
            _, _, height, width = features.shape
            projected = self.input_proj[scale](features).flatten(2).permute(2, 0, 1)
            memories.append(projected + self.level_embed.weight[scale])  # [h w, B, E]
            # The position code is no part of the conversion: the project's own, on both sides.
            code = sine_position_encoding(height, width, HIDDEN)
            positions.append(torch.from_numpy(code)[:, None])
        batch = multi_scale[0].shape[0]
        query_pos = self.query_embed.weight[:, None].expand(-1, batch, -1)  # [Q, B, E]
        queries = self.query_feat.weight[:, None].expand(-1, batch, -1)
        for index in range(len(self.transformer_ffn_layers)):
            scale = index % len(multi_scale)
            queries = self.transformer_cross_attention_layers[index](
                queries, query_pos, memories[scale], positions[scale]
            )
            queries = self.transformer_self_attention_layers[index](queries, query_pos)
            queries = self.transformer_ffn_layers[index](queries)
        return self.color_embed(self.decoder_norm(queries).transpose(0, 1))


class TorchDDColor(torch.nn.Module):
    """The official DDColor forward, at any size: grey sRGB [B, 3, H, W] -> ab [B, 2, H, W]."""

    def __init__(self, depths, dims, num_color_layers: int):
        super().__init__()
        self.encoder = torch.nn.Module()
        self.encoder.arch = TorchConvNeXt(depths, dims)
        self.decoder = torch.nn.Module()
        channels = [dims[3], *WIDTHS]
        self.decoder.layers = torch.nn.ModuleList(
            TorchUnetBlockWide(channels[i], dims[2 - i], WIDTHS[i]) for i in range(3)
        )
        self.decoder.last_shuf = TorchPixelShuffleICNR(WIDTHS[2], WIDTHS[2], 4, batch_norm=False)
        self.decoder.color_decoder = TorchColorDecoder(WIDTHS, num_color_layers, WIDTHS[2])
        refine = spectral_conv(NUM_QUERIES + 3, 2, 1, bias=True)
        self.refine_net = torch.nn.Sequential(torch.nn.Sequential(refine))
        self.register_buffer("mean", torch.from_numpy(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.from_numpy(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, gray_rgb):
        image = (gray_rgb - self.mean) / self.std
        features, _ = self.encoder.arch(image)
        x, multi_scale = features[3], []
        for index, layer in enumerate(self.decoder.layers):
            x = layer(x, features[2 - index])
            multi_scale.append(x)
        image_features = self.decoder.last_shuf(x)
        embeddings = self.decoder.color_decoder(multi_scale)
        maps = torch.einsum("bqc,bchw->bqhw", embeddings, image_features)
        return self.refine_net(torch.cat([maps, image], dim=1))


# --- Helpers --------------------------------------------------------------------------------


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # The tensors are tiny: a second intra-op thread costs more than it saves, seconds per
    # test when the cores are busy with other work.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def randomise(module: torch.nn.Module, seed: int) -> None:
    """Random weights, norms and running statistics, none near its init (u, v excepted)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if not tensor.is_floating_point() or name in ("mean", "std"):
                continue
            if name.endswith(("weight_u", "weight_v")):
                continue  # power-iteration estimates: see warm_spectral_norms
            noise = torch.randn(tensor.shape, generator=generator)
            if name.endswith("running_var"):
                tensor.copy_(0.5 + noise.abs())
            elif name.endswith("gamma"):
                tensor.copy_(0.5 * noise)  # layer scale, 1e-6 at init
            elif tensor.ndim == 1 and name.endswith("weight"):
                tensor.copy_(1.0 + 0.3 * noise)  # norm scales
            elif tensor.ndim == 1:
                tensor.copy_(0.3 * noise)  # biases, norm shifts, running means
            else:
                tensor.copy_(noise / np.sqrt(tensor[0].numel()))


def warm_spectral_norms(module: torch.nn.Module, *inputs) -> None:
    """A few training-mode forwards, so that u and v are power-iteration estimates; then eval."""
    module.train()
    with torch.no_grad():
        for _ in range(3):
            module(*inputs)
    module.eval()


def official_state(prefix: str, module: torch.nn.Module) -> dict[str, np.ndarray]:
    """The module's state dict under an official key prefix, as numpy (step counters dropped)."""
    return {
        f"{prefix}.{key}": value.detach().numpy().copy()
        for key, value in module.state_dict().items()
        if not key.endswith("num_batches_tracked")
    }


def convert_at(state: dict[str, np.ndarray], flax_path: str, template: dict) -> dict:
    """Variables of the DDColor submodule at `flax_path` ('/'-joined), converted from `state`
    by the converter's own DDColor rules; every key of `state` must be used."""
    parts = flax_path.split("/")

    def nest(tree):
        for part in reversed(parts):
            tree = {part: tree}
        return tree

    def unnest(tree):
        for part in parts:
            tree = tree[part]
        return tree

    nested = {collection: nest(tree) for collection, tree in template.items()}
    converted = assign(state, ddcolor_key_map(nested), nested)
    return jax.tree_util.tree_map(jnp.asarray, {c: unnest(t) for c, t in converted.items()})


def apply(module: nn.Module, variables: dict, *args, **kwargs):
    """module.apply compiled as one program: on CPU much faster than op by op."""
    return jax.jit(functools.partial(module.apply, **kwargs))(variables, *args)


def shapes_of(module: nn.Module, *args, **kwargs) -> dict:
    return jax.eval_shape(lambda: module.init(jax.random.key(0), *args, **kwargs))


def nchw(shape, seed: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


def nhwc(x: torch.Tensor) -> jax.Array:
    return jnp.asarray(x.numpy().transpose(0, 2, 3, 1))


def assert_same_values(actual, expected, tolerance: float = 1e-4) -> None:
    """Equal up to `tolerance` relative to the largest |expected| (at least 1)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=tolerance * scale)


# --- ConvNeXt encoder: plain, strided and depthwise convs, Linear, LayerNorms, layer scale ---


def test_convnext_block_converts_to_the_same_depthwise_conv_mlp_and_layer_scale():
    torch.manual_seed(0)
    block = TorchConvNeXtBlock(8)
    randomise(block, seed=1)
    x = nchw((2, 8, 9, 7), seed=2)
    with torch.no_grad():
        expected = block(x).numpy().transpose(0, 2, 3, 1)

    flax_block = ConvNeXtBlock(8)
    state = official_state("encoder.arch.stages.1.0", block)
    variables = convert_at(state, "encoder/stage1_block0", shapes_of(flax_block, nhwc(x)))
    assert_same_values(apply(flax_block, variables, nhwc(x)), expected)


def test_convnext_encoder_converts_stem_downsampling_and_both_layer_norm_layouts():
    # Stem (4x4 stride 4) and downsampling (2x2 stride 2) convs, channels-first LayerNorms
    # (stem, downsampling, norm0..3) and the channels-last final norm, stage by stage. No
    # blocks: those are the test above's, and the whole model's below.
    torch.manual_seed(0)
    depths, dims = (0, 0, 0, 0), (8, 12, 16, 20)
    encoder = TorchConvNeXt(depths, dims)
    randomise(encoder, seed=3)
    image = nchw((2, 3, 64, 96), seed=4)
    with torch.no_grad():
        features, embedding = encoder(image)

    flax_encoder = ConvNeXt(depths, dims)
    state = official_state("encoder.arch", encoder)
    variables = convert_at(state, "encoder", shapes_of(flax_encoder, nhwc(image)))
    flax_features, flax_embedding = apply(flax_encoder, variables, nhwc(image))
    for stage in range(4):
        assert_same_values(flax_features[stage], features[stage].numpy().transpose(0, 2, 3, 1))
    assert_same_values(flax_embedding, embedding.numpy())


# --- Pixel decoder: spectral-norm convs (u, v in eval mode), BatchNorm ----------------------

SPECTRAL_CONVS = {
    # Flax path: (official key prefix, input channels, output channels, kernel size, bias)
    "pixel_decoder/block0/conv": ("decoder.layers.0.conv.0", 6, 5, 3, False),
    "pixel_decoder/block1/upsample/conv": ("decoder.layers.1.shuf.conv.0", 6, 20, 1, False),
    "pixel_decoder/last_upsample/conv": ("decoder.last_shuf.conv.0", 5, 32, 1, True),
    "refine": ("refine_net.0.0", NUM_QUERIES + 3, 2, 1, True),
}


def _spectral_pair(flax_path: str, seed: int):
    """A warmed torch spectral-norm conv, its converted Flax twin and a [B, C, H, W] input."""
    prefix, cin, cout, size, bias = SPECTRAL_CONVS[flax_path]
    torch.manual_seed(seed)
    conv = spectral_conv(cin, cout, size, bias)
    randomise(conv, seed)
    x = nchw((2, cin, 7, 5), seed + 1)
    warm_spectral_norms(conv, x)
    flax_conv = SpectralNormConv(cout, kernel_size=size, padding=(size - 1) // 2, use_bias=bias)
    template = shapes_of(flax_conv, nhwc(x), train=False)
    variables = convert_at(official_state(prefix, conv), flax_path, template)
    return conv, flax_conv, variables, x


@pytest.mark.parametrize("flax_path", list(SPECTRAL_CONVS))
def test_spectral_norm_conv_converts_to_the_same_eval_mode_function(flax_path):
    conv, flax_conv, variables, x = _spectral_pair(flax_path, seed=5)
    with torch.no_grad():
        expected = conv(x).numpy().transpose(0, 2, 3, 1)
    assert_same_values(apply(flax_conv, variables, nhwc(x), train=False), expected)


@pytest.mark.parametrize("flax_path", ["pixel_decoder/block0/conv", "refine"])
def test_spectral_norm_conv_continues_the_torch_power_iteration_in_training(flax_path):
    conv, flax_conv, variables, x = _spectral_pair(flax_path, seed=6)
    conv.train()
    with torch.no_grad():
        expected = conv(x).numpy().transpose(0, 2, 3, 1)
    output, updated = apply(flax_conv, variables, nhwc(x), train=True, mutable=["batch_stats"])
    assert_same_values(output, expected)
    assert_same_values(updated["batch_stats"]["u"], conv.weight_u.numpy(), 1e-5)
    # v runs over the kernel window in (kh, kw, Cin) order, PyTorch's in (Cin, kh, kw).
    _, cin, _, size, _ = SPECTRAL_CONVS[flax_path]
    v = conv.weight_v.numpy().reshape(cin, size, size).transpose(1, 2, 0).reshape(-1)
    assert_same_values(updated["batch_stats"]["v"], v, 1e-5)


def test_batch_norm_converts_with_its_running_statistics():
    bn = torch.nn.BatchNorm2d(6)
    randomise(bn, seed=7)
    bn.eval()
    x = nchw((2, 6, 4, 3), seed=8)
    with torch.no_grad():
        expected = bn(x).numpy().transpose(0, 2, 3, 1)
    flax_bn = _batch_norm(False, "skip_bn")
    state = official_state("decoder.layers.2.bn", bn)
    variables = convert_at(state, "pixel_decoder/block2/skip_bn", shapes_of(flax_bn, nhwc(x)))
    assert_same_values(apply(flax_bn, variables, nhwc(x)), expected)


def test_unet_block_converts_to_the_official_unet_block_wide():
    torch.manual_seed(0)
    block = TorchUnetBlockWide(12, 7, 10)
    randomise(block, seed=9)
    x, skip = nchw((2, 12, 3, 4), seed=10), nchw((2, 7, 6, 8), seed=11)
    warm_spectral_norms(block, x, skip)
    with torch.no_grad():
        expected = block(x, skip).numpy().transpose(0, 2, 3, 1)

    flax_block = UnetBlock(10)
    template = shapes_of(flax_block, nhwc(x), nhwc(skip), train=False)
    variables = convert_at(
        official_state("decoder.layers.1", block), "pixel_decoder/block1", template
    )
    assert_same_values(apply(flax_block, variables, nhwc(x), nhwc(skip), train=False), expected)


def test_last_upsample_converts_to_the_official_x4_pixel_shuffle_with_bias():
    torch.manual_seed(0)
    upsample = TorchPixelShuffleICNR(6, 6, 4, batch_norm=False)
    randomise(upsample, seed=12)
    x = nchw((2, 6, 3, 2), seed=13)
    warm_spectral_norms(upsample, x)
    with torch.no_grad():
        expected = upsample(x).numpy().transpose(0, 2, 3, 1)

    flax_upsample = PixelShuffleUpsample(6, 4, batch_norm=False)
    template = shapes_of(flax_upsample, nhwc(x), train=False)
    state = official_state("decoder.last_shuf", upsample)
    variables = convert_at(state, "pixel_decoder/last_upsample", template)
    assert_same_values(apply(flax_upsample, variables, nhwc(x), train=False), expected)


# --- Colour decoder: attention, input projections, embeddings, layers ------------------------

_COLOR = "decoder.color_decoder"


@pytest.mark.parametrize(
    "flax_path, prefix",
    [
        (
            "color_decoder/layer0/cross_attention",
            f"{_COLOR}.transformer_cross_attention_layers.0.multihead_attn",
        ),
        (
            "color_decoder/layer2/self_attention",
            f"{_COLOR}.transformer_self_attention_layers.2.self_attn",
        ),
    ],
    ids=["cross", "self"],
)
def test_attention_in_proj_splits_into_the_same_query_key_value_heads(flax_path, prefix):
    torch.manual_seed(0)
    attention = torch.nn.MultiheadAttention(HIDDEN, HEADS)
    randomise(attention, seed=14)
    query, key, value = nchw((5, 2, HIDDEN), 15), nchw((7, 2, HIDDEN), 16), nchw((7, 2, HIDDEN), 17)
    with torch.no_grad():
        expected = attention(query, key, value)[0].numpy().transpose(1, 0, 2)

    batch_major = [jnp.asarray(t.numpy().transpose(1, 0, 2)) for t in (query, key, value)]
    flax_attention = MultiHeadAttention(HEADS)
    state = official_state(prefix, attention)
    variables = convert_at(state, flax_path, shapes_of(flax_attention, *batch_major))
    assert_same_values(apply(flax_attention, variables, *batch_major), expected)


@pytest.mark.parametrize(
    "scale, channels", [(0, WIDTHS[0]), (2, HIDDEN)], ids=["narrowing", "square"]
)
def test_input_projection_square_or_not_converts_to_the_same_1x1_conv(scale, channels):
    torch.manual_seed(0)
    projection = torch.nn.Conv2d(channels, HIDDEN, 1)
    randomise(projection, seed=18)
    x = nchw((2, channels, 3, 4), seed=19)
    with torch.no_grad():
        expected = projection(x).numpy().transpose(0, 2, 3, 1)

    dense = nn.Dense(HIDDEN)  # MultiScaleColorDecoder's input_proj{scale}
    state = official_state(f"{_COLOR}.input_proj.{scale}", projection)
    variables = convert_at(state, f"color_decoder/input_proj{scale}", shapes_of(dense, nhwc(x)))
    assert_same_values(apply(dense, variables, nhwc(x)), expected)


def test_query_and_level_embeddings_are_copied_row_for_row():
    embeddings = {
        "query_feat": torch.nn.Embedding(NUM_QUERIES, HIDDEN),
        "query_embed": torch.nn.Embedding(NUM_QUERIES, HIDDEN),
        "level_embed": torch.nn.Embedding(3, HIDDEN),
    }
    state = {}
    for name, embedding in embeddings.items():
        randomise(embedding, seed=20)
        state |= official_state(f"{_COLOR}.{name}", embedding)
    template = {
        "params": {
            name: jax.ShapeDtypeStruct(tuple(e.weight.shape), jnp.float32)
            for name, e in embeddings.items()
        }
    }
    params = convert_at(state, "color_decoder", template)["params"]
    for name, embedding in embeddings.items():
        np.testing.assert_array_equal(params[name], embedding.weight.detach().numpy())


def test_color_decoder_layer_converts_to_the_official_cross_self_and_ffn_layers():
    torch.manual_seed(0)
    cross, self_attention = TorchCrossAttentionLayer(HIDDEN), TorchSelfAttentionLayer(HIDDEN)
    ffn = TorchFFNLayer(HIDDEN, FFN_DIM)
    for seed, module in enumerate((cross, self_attention, ffn)):
        randomise(module, seed=21 + seed)
    queries, query_pos = nchw((NUM_QUERIES, 2, HIDDEN), 24), nchw((NUM_QUERIES, 2, HIDDEN), 25)
    memory, memory_pos = nchw((9, 2, HIDDEN), 26), nchw((9, 2, HIDDEN), 27)
    with torch.no_grad():
        expected = cross(queries, query_pos, memory, memory_pos)
        expected = ffn(self_attention(expected, query_pos)).numpy().transpose(1, 0, 2)

    inputs = [jnp.asarray(t.numpy().transpose(1, 0, 2)) for t in (queries, query_pos, memory)]
    inputs.append(jnp.asarray(memory_pos.numpy().transpose(1, 0, 2)))
    layer = ColorDecoderLayer(HEADS, FFN_DIM)
    state = {
        **official_state(f"{_COLOR}.transformer_cross_attention_layers.1", cross),
        **official_state(f"{_COLOR}.transformer_self_attention_layers.1", self_attention),
        **official_state(f"{_COLOR}.transformer_ffn_layers.1", ffn),
    }
    variables = convert_at(state, "color_decoder/layer1", shapes_of(layer, *inputs))
    assert_same_values(apply(layer, variables, *inputs), expected)


def test_multi_scale_color_decoder_converts_to_the_same_color_embeddings():
    torch.manual_seed(0)
    decoder = TorchColorDecoder(WIDTHS, num_layers=3, embed_dim=WIDTHS[2])
    randomise(decoder, seed=28)
    sizes = [(2, 3), (4, 6), (8, 12)]
    multi_scale = [nchw((2, c, h, w), 29 + i) for i, (c, (h, w)) in enumerate(zip(WIDTHS, sizes))]
    with torch.no_grad():
        expected = decoder(multi_scale).numpy()

    flax_decoder = MultiScaleColorDecoder(
        num_queries=NUM_QUERIES,
        num_layers=3,
        hidden_dim=HIDDEN,
        num_heads=HEADS,
        ffn_dim=FFN_DIM,
        embed_dim=WIDTHS[2],
    )
    features = [nhwc(x) for x in multi_scale]
    template = shapes_of(flax_decoder, features)
    variables = convert_at(official_state(_COLOR, decoder), "color_decoder", template)
    assert_same_values(apply(flax_decoder, variables, features), expected)


# --- The whole model ------------------------------------------------------------------------


def test_reduced_ddcolor_checkpoint_converts_to_the_same_colorization(tmp_path):
    torch.manual_seed(0)
    depths, dims = (1, 1, 1, 1), (8, 12, 16, 20)
    official = TorchDDColor(depths, dims, num_color_layers=3)
    randomise(official, seed=32)
    rng = np.random.default_rng(33)
    gray_l = rng.uniform(0, 100, (2, 64, 96, 1)).astype(np.float32)
    gray_rgb = np.asarray(jax.jit(gray_rgb_from_l)(gray_l)).transpose(0, 3, 1, 2)
    gray_rgb = torch.from_numpy(gray_rgb.copy())  # the official model's input
    warm_spectral_norms(official, gray_rgb)
    with torch.no_grad():
        expected = official(gray_rgb).numpy().transpose(0, 2, 3, 1)
    path = tmp_path / "ddcolor_reduced.pth"
    torch.save({"params": official.state_dict()}, path)

    variables = convert_ddcolor(path)  # sizes read from the checkpoint, as the CLI does
    config = ddcolor_config_from_state({k: v.numpy() for k, v in official.state_dict().items()})
    assert config["encoder_depths"] == depths and config["encoder_dims"] == dims
    assert config["decoder_widths"] == WIDTHS and config["hidden_dim"] == HIDDEN
    backbone = {collection: tree["backbone"] for collection, tree in variables.items()}
    ab, _ = apply(DDColor(**config), backbone, jnp.asarray(gray_l))
    assert_same_values(ab, expected)
