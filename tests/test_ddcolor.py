"""DDColor backbone: sizes, the guidance insertion point, train/eval state, and its layers
against PyTorch and skimage references.

DDColor-T/L are only traced (`jax.eval_shape`); forward passes run on `ddcolor_demo` at 64x64.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

try:  # the PyTorch references; `make test` installs the CPU build
    import torch
except ImportError:
    torch = None

from aiaic_jax.models.backbones import BACKBONE_NAMES, get_backbone
from aiaic_jax.models.backbones.ddcolor.decoder import (
    PixelShuffleUpsample,
    sine_position_encoding,
)
from aiaic_jax.models.backbones.layers import (
    SpectralNormConv,
    icnr,
    pixel_shuffle,
    to_subpixel_major,
)
from aiaic_jax.models.guidance import Guidance

GUIDANCE_DIM = 8
needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")


def _count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


def _shapes(name: str, guidance: bool = False):
    model = get_backbone(name)
    gray_l = jax.ShapeDtypeStruct((1, 64, 64, 1), jnp.float32)
    g = None
    if guidance:
        g = Guidance(
            jax.ShapeDtypeStruct((1, GUIDANCE_DIM), jnp.float32),
            jax.ShapeDtypeStruct((1,), jnp.float32),
        )
    return jax.eval_shape(lambda x, g: model.init(jax.random.key(0), x, g), gray_l, g)


def test_registry_has_the_ddcolor_sizes_and_applies_overrides():
    assert {"ddcolor_tiny", "ddcolor_large", "ddcolor_demo"} <= set(BACKBONE_NAMES)
    assert get_backbone("ddcolor_demo", num_queries=8).num_queries == 8
    with pytest.raises(ValueError, match="ddcolor_tiny"):
        get_backbone("ddcolor_huge")
    with pytest.raises(TypeError, match="num_querys"):
        get_backbone("ddcolor_demo", num_querys=8)


@pytest.mark.parametrize(
    "name, total, encoder, decoder",
    [
        ("ddcolor_tiny", 55_006_640, 27_823_008, 27_183_424),
        ("ddcolor_large", 227_869_328, 196_236_096, 31_633_024),
    ],
)
def test_trainable_parameter_counts_equal_the_official_model(name, total, encoder, decoder):
    params = _shapes(name)["params"]
    assert _count(params) == total
    assert _count(params["encoder"]) == encoder
    # The official `decoder` holds both decoders.
    assert _count(params["pixel_decoder"]) + _count(params["color_decoder"]) == decoder
    assert _count(params["refine"]) == 208


def test_spectral_norm_vectors_are_state_not_parameters():
    variables = _shapes("ddcolor_demo")
    refine = variables["batch_stats"]["refine"]
    assert set(refine) == {"u", "v"}
    assert set(variables["params"]["refine"]) == {"kernel", "bias"}


def test_dsg_sits_at_the_declared_point_with_the_declared_channels():
    model = get_backbone("ddcolor_tiny")
    assert model.guidance_channels == 2048
    assert "pixel decoder" in model.guidance_point
    unguided = _shapes("ddcolor_demo")["params"]
    guided = _shapes("ddcolor_demo", guidance=True)["params"]
    assert "dsg" not in unguided
    demo = get_backbone("ddcolor_demo")
    # gamma's last layer produces one scale per channel at the insertion point.
    assert guided["dsg"]["sg"]["gamma_1"]["kernel"].shape == (256, demo.guidance_channels)
    # The first conv of the pixel decoder outputs exactly that many channels.
    first_conv = guided["pixel_decoder"]["block0"]["upsample"]["conv"]["kernel"]
    assert first_conv.shape[-1] == demo.guidance_channels


def test_input_size_must_be_a_multiple_of_32():
    model = get_backbone("ddcolor_demo")
    with pytest.raises(ValueError, match="multiples of 32"):
        jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 48, 64, 1), "f4"))


@pytest.fixture(scope="module")
def demo():
    """ddcolor_demo with guidance variables, a batch of grey images and a guidance code."""
    model = get_backbone("ddcolor_demo")
    rng = np.random.default_rng(0)
    gray_l = jnp.asarray(rng.uniform(0, 100, (2, 64, 64, 1)), jnp.float32)
    code = jnp.asarray(rng.normal(size=(2, GUIDANCE_DIM)), jnp.float32)
    guidance = Guidance(code, jnp.ones((2,)))
    # Init runs once: compile it without backend optimisations (half the compile time).
    init = jax.jit(model.init, compiler_options={"xla_backend_optimization_level": 0})
    variables = init(jax.random.key(0), gray_l, guidance)
    # Make the SG non-trivial (its last layers start at gamma = 1, beta = 0).
    variables = jax.tree_util.tree_map_with_path(
        lambda path, x: x + 0.1 if "dsg" in jax.tree_util.keystr(path) else x, variables
    )
    guided = jax.jit(lambda v, x, g: model.apply(v, x, g)[0])
    unguided = jax.jit(lambda v, x: model.apply(v, x)[0])
    return model, variables, gray_l, code, guided, unguided


def test_r_zero_leaves_backbone_output_unchanged(demo):
    _, variables, gray_l, code, guided, unguided = demo
    ab = unguided(variables, gray_l)
    assert ab.shape == (2, 64, 64, 2)
    assert np.all(np.isfinite(ab))
    np.testing.assert_array_equal(guided(variables, gray_l, Guidance(code, jnp.zeros((2,)))), ab)


def test_relevance_gates_the_guidance_per_sample(demo):
    _, variables, gray_l, code, guided, unguided = demo
    ab = unguided(variables, gray_l)
    mixed = guided(variables, gray_l, Guidance(code, jnp.array([1.0, 0.0])))
    assert np.abs(mixed[0] - ab[0]).max() > 1e-3
    np.testing.assert_array_equal(mixed[1], ab[1])


def test_training_mode_updates_batch_stats_and_evaluation_reads_them(demo):
    model, variables, gray_l, _, _, unguided = demo
    (ab, _), updates = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(
        variables, gray_l
    )
    before, after = variables["batch_stats"], updates["batch_stats"]
    bn = ("pixel_decoder", "block0", "conv_bn", "mean")
    u = ("refine", "u")

    def get(tree, path):
        for key in path:
            tree = tree[key]
        return np.asarray(tree)

    assert not np.allclose(get(before, bn), get(after, bn))
    assert not np.allclose(get(before, u), get(after, u))
    np.testing.assert_allclose(np.linalg.norm(get(after, u)), 1.0, rtol=1e-5)
    assert np.all(np.isfinite(ab))
    # Evaluation with the new statistics gives a different, still finite, output.
    evaluated = unguided({**variables, "batch_stats": after}, gray_l)
    assert np.all(np.isfinite(evaluated))
    assert np.abs(evaluated - unguided(variables, gray_l)).max() > 0


@needs_torch
# (kernel size, input channels, image size): the last two have outputs smaller than their
# kernels, where the layer divides the output rather than the kernel by sigma.
@pytest.mark.parametrize(
    "kernel_size, channels, size", [(1, 5, 6), (3, 5, 6), (3, 32, 2), (1, 32, 1)]
)
def test_spectral_norm_conv_matches_torch_in_both_modes(kernel_size, channels, size):
    torch.manual_seed(0)
    conv = torch.nn.utils.spectral_norm(
        torch.nn.Conv2d(channels, 7, kernel_size, padding=kernel_size // 2, bias=True)
    )
    x = torch.randn(2, channels, size, size)
    with torch.no_grad():
        conv.train()
        conv(x)  # one power iteration, so u and v are not the random start
    state = {k: v.detach().numpy().copy() for k, v in conv.state_dict().items()}
    w = state["weight_orig"]
    variables = {
        "params": {"kernel": w.transpose(2, 3, 1, 0), "bias": state["bias"]},
        "batch_stats": {
            "u": state["weight_u"],
            # PyTorch flattens the window as (I, kh, kw); the Flax layer as (kh, kw, I).
            "v": state["weight_v"]
            .reshape(channels, kernel_size, kernel_size)
            .transpose(1, 2, 0)
            .ravel(),
        },
    }
    layer = SpectralNormConv(7, kernel_size, padding=kernel_size // 2)
    x_nhwc = jnp.asarray(x.numpy().transpose(0, 2, 3, 1))

    conv.eval()
    with torch.no_grad():
        expected = conv(x).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(layer.apply(variables, x_nhwc, train=False), expected, atol=1e-5)

    conv.train()
    with torch.no_grad():
        expected = conv(x).numpy().transpose(0, 2, 3, 1)
    out, updates = layer.apply(variables, x_nhwc, train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(out, expected, atol=1e-5)
    np.testing.assert_allclose(updates["batch_stats"]["u"], conv.weight_u.numpy(), atol=1e-6)


@needs_torch
def test_pixel_shuffle_matches_torch():
    x = np.arange(2 * 3 * 4 * 18, dtype=np.float32).reshape(2, 3, 4, 18)  # NHWC, 2 x 3^2 ch
    expected = torch.nn.functional.pixel_shuffle(torch.from_numpy(x.transpose(0, 3, 1, 2)), 3)
    np.testing.assert_array_equal(
        pixel_shuffle(jnp.asarray(x), 3), expected.numpy().transpose(0, 2, 3, 1)
    )


def test_subpixel_major_channels_shuffle_to_the_same_image():
    x = jax.random.normal(jax.random.key(0), (2, 3, 4, 32))
    np.testing.assert_array_equal(
        pixel_shuffle(to_subpixel_major(x, 4), 4, subpixel_major=True), pixel_shuffle(x, 4)
    )


def test_spectral_norm_conv_output_order_permutes_only_the_output():
    layer = SpectralNormConv(8, kernel_size=1)
    x = jax.random.normal(jax.random.key(0), (1, 3, 3, 5))
    variables = layer.init(jax.random.key(1), x, train=False)
    order = np.array([3, 1, 0, 2, 7, 6, 5, 4])
    np.testing.assert_allclose(
        layer.apply(variables, x, train=False, output_order=lambda a: a[..., order]),
        layer.apply(variables, x, train=False)[..., order],
        rtol=1e-6,
    )


def test_icnr_upsampling_starts_as_nearest_neighbour():
    kernel = icnr(2)(jax.random.key(0), (1, 1, 3, 8))  # 3 -> 2 channels after the shuffle
    x = jax.random.normal(jax.random.key(1), (1, 4, 4, 3))
    up = pixel_shuffle(jnp.einsum("bhwi,io->bhwo", x, kernel[0, 0]), 2)  # [1, 8, 8, 2]
    blocks = up.reshape(1, 4, 2, 4, 2, 2)
    np.testing.assert_allclose(blocks, jnp.broadcast_to(blocks[:, :, :1, :, :1], blocks.shape))


@needs_torch
def test_upsample_blur_matches_replication_pad_and_average_pool():
    layer = PixelShuffleUpsample(3, scale=2, batch_norm=False, blur=True)
    x = jax.random.normal(jax.random.key(0), (1, 3, 5, 4))
    variables = layer.init(jax.random.key(1), x, train=False)
    out = layer.apply(variables, x, train=False)
    unblurred = PixelShuffleUpsample(3, scale=2, batch_norm=False, blur=False).apply(
        variables, x, train=False
    )
    pad_pool = torch.nn.Sequential(
        torch.nn.ReplicationPad2d((1, 0, 1, 0)), torch.nn.AvgPool2d(2, stride=1)
    )
    expected = pad_pool(torch.from_numpy(np.asarray(unblurred).transpose(0, 3, 1, 2).copy()))
    np.testing.assert_allclose(out, expected.numpy().transpose(0, 2, 3, 1), atol=1e-6)


def test_sine_position_encoding_is_detr_normalised_sine():
    height, width, channels = 4, 6, 16
    code = sine_position_encoding(height, width, channels).reshape(height, width, channels)
    row = 2 * np.pi * np.arange(1, height + 1) / (height + 1e-6)
    col = 2 * np.pi * np.arange(1, width + 1) / (width + 1e-6)
    half = channels // 2
    for k in range(half):
        period = 10000 ** (2 * (k // 2) / half)
        wave = np.sin if k % 2 == 0 else np.cos
        np.testing.assert_allclose(code[:, 0, k], wave(row / period), atol=1e-6)
        np.testing.assert_allclose(code[0, :, half + k], wave(col / period), atol=1e-6)
