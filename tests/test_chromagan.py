"""ChromaGAN backbone: sizes, conventions, the guidance point, its critic, and the converter
of the official Keras checkpoint, checked on values against a NumPy forward pass.

The full model is only traced (`jax.eval_shape`); forward passes run on `chromagan("demo")` at
64x64. The converter reads a small `.h5` file that the tests write in the layout Keras 2.2.4's
`Model.save` uses, with the auto-numbered layer names shuffled.
"""

import json
import math
import random
import shutil

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aiaic_jax.convert.common import CheckpointMismatch, restore_variables
from aiaic_jax.models.backbones.chromagan.convert import convert, convert_to_checkpoint
from aiaic_jax.models.backbones.chromagan.critic import chromagan_critic
from aiaic_jax.models.backbones.chromagan.model import (
    CHROMAGAN_SIZES,
    VGG16Trunk,
    chromagan,
    normalize_l,
    pretrained_trunk_params,
)
from aiaic_jax.models.guidance import Guidance
from aiaic_jax.models.vgg import IMAGENET_MEAN, IMAGENET_STD, VGG16Features

GUIDANCE_DIM = 8
DEMO = CHROMAGAN_SIZES["demo"]


def _count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


def _shapes(model, size: int, guidance: bool = False):
    gray_l = jax.ShapeDtypeStruct((1, size, size, 1), jnp.float32)
    g = None
    if guidance:
        g = Guidance(
            jax.ShapeDtypeStruct((1, GUIDANCE_DIM), jnp.float32),
            jax.ShapeDtypeStruct((1,), jnp.float32),
        )
    return jax.eval_shape(lambda x, g: model.init(jax.random.key(0), x, g), gray_l, g)


def test_full_generator_has_the_official_parameter_counts():
    variables = _shapes(chromagan("full"), 224)
    params = variables["params"]
    stats = variables["batch_stats"]
    print(f"ChromaGAN full: params {_count(params):,d}, batch_stats {_count(stats):,d}")
    assert _count(params) == 171_166_090
    assert _count(stats) == 5_632
    assert _count(params["trunk"]) == 7_635_264
    class_head = [params[k] for k in ("class_dense0", "class_dense1", "class_logits")]
    assert _count(class_head) == 123_642_856
    assert _count([params[f"global_dense{i}"] for i in range(3)]) == 26_347_264
    # Flatten at 224 is 7 * 7 * 512.
    assert params["global_dense0"]["kernel"].shape == (25_088, 1024)


def test_critic_has_the_official_parameter_count_and_a_patch_map():
    critic = chromagan_critic("full")
    gray_l = jax.ShapeDtypeStruct((1, 224, 224, 1), jnp.float32)
    ab = jax.ShapeDtypeStruct((1, 224, 224, 2), jnp.float32)
    params = jax.eval_shape(critic.init, jax.random.key(0), gray_l, ab)
    print(f"ChromaGAN critic full: params {_count(params):,d}")
    assert _count(params) == 2_764_737
    assert set(params) == {"params"}  # no normalisation, so no state
    scores = jax.eval_shape(critic.apply, params, gray_l, ab)
    assert scores.shape == (1, 28, 28, 1)


def test_critic_normalises_l_and_ab_to_the_official_unit_range():
    critic = chromagan_critic("demo")
    gray_l = jnp.full((1, 16, 16, 1), 50.0)
    ab = jnp.full((1, 16, 16, 2), -1.0)
    shapes = jax.eval_shape(critic.init, jax.random.key(0), gray_l, ab)
    params = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes["params"])
    # The first conv sees [L / 100, (ab + 128) / 255]; a kernel that sums the three channels
    # at one tap reads 0.5 + 2 * 127 / 255 everywhere inside the image.
    params["conv0"]["kernel"] = params["conv0"]["kernel"].at[2, 2, :, :].set(1.0)
    scores, state = critic.apply({"params": params}, gray_l, ab, capture_intermediates=True)
    assert scores.shape == (1, 2, 2, 1)
    first_conv = state["intermediates"]["conv0"]["__call__"][0]
    np.testing.assert_allclose(first_conv[0, 4, 4, 0], 0.5 + 2 * 127 / 255, rtol=1e-6)


def test_dsg_sits_on_the_128_channel_map_after_conv128():
    model = chromagan("full")
    assert model.guidance_channels == 128
    assert "Conv128" in model.guidance_point
    unguided = _shapes(chromagan("demo"), 64)["params"]
    guided = _shapes(chromagan("demo"), 64, guidance=True)["params"]
    assert "dsg" not in unguided
    demo = chromagan("demo")
    assert guided["dsg"]["sg"]["gamma_1"]["kernel"].shape == (256, demo.guidance_channels)
    assert guided["color_conv0"]["kernel"].shape[-1] == demo.guidance_channels


def test_input_size_must_be_a_multiple_of_32_and_widths_must_fit():
    model = chromagan("demo")
    with pytest.raises(ValueError, match="multiples of 32"):
        jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 48, 64, 1), "f4"))
    with pytest.raises(ValueError, match="global_units has 2"):
        _shapes(chromagan("demo", global_units=(64, 32)), 64)
    with pytest.raises(ValueError, match="unknown ChromaGAN size"):
        chromagan("huge")


@pytest.fixture(scope="module")
def demo():
    """chromagan("demo") with guidance variables, two grey images and a guidance code."""
    model = chromagan("demo")
    rng = np.random.default_rng(0)
    gray_l = jnp.asarray(rng.uniform(0, 100, (2, 64, 64, 1)), jnp.float32)
    code = jnp.asarray(rng.normal(size=(2, GUIDANCE_DIM)), jnp.float32)
    # Init runs once: compile it without backend optimisations (a fifth of the compile time).
    init = jax.jit(model.init, compiler_options={"xla_backend_optimization_level": 0})
    variables = init(jax.random.key(0), gray_l, Guidance(code, jnp.ones((2,))))
    # Make the SG non-trivial (its last layers start at gamma = 1, beta = 0).
    variables = jax.tree_util.tree_map_with_path(
        lambda path, x: x + 0.1 if "dsg" in jax.tree_util.keystr(path) else x, variables
    )
    guided = jax.jit(lambda v, x, g: model.apply(v, x, g))
    unguided = jax.jit(lambda v, x: model.apply(v, x))
    return model, variables, gray_l, code, guided, unguided


def test_demo_forward_returns_full_size_ab_and_class_logits(demo):
    _, variables, gray_l, code, guided, unguided = demo
    for ab, aux in (
        unguided(variables, gray_l),
        guided(variables, gray_l, Guidance(code, 0.5 * jnp.ones(2))),
    ):
        assert ab.shape == (2, 64, 64, 2)
        assert set(aux) == {"class_logits"}
        assert aux["class_logits"].shape == (2, 1000)
        assert np.all(np.isfinite(ab)) and np.all(np.isfinite(aux["class_logits"]))


def test_r_zero_leaves_the_backbone_output_unchanged(demo):
    _, variables, gray_l, code, guided, unguided = demo
    ab, aux = unguided(variables, gray_l)
    ab_zero, aux_zero = guided(variables, gray_l, Guidance(code, jnp.zeros((2,))))
    np.testing.assert_array_equal(ab_zero, ab)
    np.testing.assert_array_equal(aux_zero["class_logits"], aux["class_logits"])
    mixed, _ = guided(variables, gray_l, Guidance(code, jnp.array([1.0, 0.0])))
    assert np.abs(mixed[0] - ab[0]).max() > 1e-3
    np.testing.assert_array_equal(mixed[1], ab[1])


def test_ab_stays_in_the_8_bit_lab_range(demo):
    _, variables, gray_l, _, _, unguided = demo
    ab, _ = unguided(variables, gray_l)
    assert float(ab.min()) > -128.0 and float(ab.max()) <= 127.0
    assert float(ab.std()) > 0.0
    # Saturated: the sigmoid's bounds are ab = -128 and 127 exactly, never beyond.
    params = dict(variables["params"])
    params["color_out"] = jax.tree.map(lambda x: 1e4 * x, params["color_out"])
    saturated, _ = unguided({**variables, "params": params}, gray_l)
    assert float(saturated.min()) >= -128.0 and float(saturated.max()) <= 127.0
    assert float(saturated.max()) - float(saturated.min()) > 200.0


def test_training_mode_updates_batch_norm_statistics(demo):
    model, variables, gray_l, _, _, _ = demo
    (ab, _), updates = jax.jit(
        lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]),
        compiler_options={"xla_backend_optimization_level": 0},
    )(variables, gray_l)
    before, after = variables["batch_stats"], updates["batch_stats"]
    assert set(after) == {f"global_bn{i}" for i in range(4)} | {"mid_bn0", "mid_bn1"}
    assert not np.allclose(before["mid_bn1"]["mean"], after["mid_bn1"]["mean"])
    assert np.all(np.isfinite(ab))


def test_trunk_from_lpips_vgg16_gives_vgg16_relu4_3():
    vgg = pretrained_trunk_params()
    template = _shapes(chromagan("full"), 32)["params"]["trunk"]
    assert jax.tree.map(lambda x: x.shape, vgg) == jax.tree.map(lambda x: x.shape, template)

    gray_l = jax.random.uniform(jax.random.key(0), (1, 32, 32, 1), maxval=100.0)
    image = normalize_l(gray_l)  # what the trunk sees: L / 100 on three channels
    ours = VGG16Trunk().apply({"params": vgg}, image)
    # VGG16Features normalises with ImageNet mean/std inside; undo that on its input.
    rgb = image * jnp.asarray(IMAGENET_STD) + jnp.asarray(IMAGENET_MEAN)
    reference = VGG16Features().apply({"params": vgg}, rgb, ("relu4_3",))["relu4_3"]
    assert ours.shape == reference.shape == (1, 4, 4, 512)
    scale = float(jnp.abs(reference).max())
    np.testing.assert_allclose(ours, reference, atol=1e-4 * scale)


# ----- The official Keras checkpoint ------------------------------------------------------------


def _conv_config(name, filters, kernel=3, stride=1, activation="relu"):
    return {
        "name": name,
        "trainable": True,
        "filters": filters,
        "kernel_size": [kernel, kernel],
        "strides": [stride, stride],
        "padding": "same",
        "data_format": "channels_last",
        "dilation_rate": [1, 1],
        "activation": activation,
        "use_bias": True,
    }


def _layer(name, kind, config, inputs, node=0):
    return {
        "name": name,
        "class_name": kind,
        "config": {"name": name, **config},
        "inbound_nodes": [[[i, node, 0, {}] for i in inputs]] if inputs else [],
    }


class _Names:
    """Keras-style auto-numbered names, handed out in shuffled order."""

    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.next_number = {}

    def take(self, prefix, count):
        start = self.next_number.get(prefix, 3)  # as if a session had built layers before
        self.next_number[prefix] = start + count
        numbers = list(range(start, start + count))
        self.rng.shuffle(numbers)
        return [f"{prefix}_{n}" for n in numbers]


def _official_demo_file(path, size=64, seed=0):
    """Writes ChromaGAN with the demo widths in Keras 2.2.4's Model.save layout, with random
    weights. Returns the weights by role ('trunk3', 'global_bn1', 'class2', 'color_out', ...:
    {'kernel': array, ...}) and the Keras layer name of each role."""
    rng = np.random.default_rng(seed)
    names = _Names(seed)
    weights: dict[str, dict[str, np.ndarray]] = {}

    def conv_weights(role, cin, cout, kernel=3):
        std = math.sqrt(2.0 / (kernel * kernel * cin))
        weights[role] = {
            "kernel": rng.normal(0, std, (kernel, kernel, cin, cout)).astype(np.float32),
            "bias": rng.normal(0, 0.1, cout).astype(np.float32),
        }

    def bn_weights(role, c):
        weights[role] = {
            "gamma": rng.uniform(0.5, 1.5, c).astype(np.float32),
            "beta": rng.normal(0, 0.1, c).astype(np.float32),
            "moving_mean": rng.uniform(0, 0.5, c).astype(np.float32),
            "moving_variance": rng.uniform(0.5, 2.0, c).astype(np.float32),
        }

    def dense_weights(role, n_in, n_out):
        weights[role] = {
            "kernel": rng.normal(0, math.sqrt(1.0 / n_in), (n_in, n_out)).astype(np.float32),
            "bias": rng.normal(0, 0.1, n_out).astype(np.float32),
        }

    layer_of: dict[str, str] = {}  # role -> Keras layer name

    # The nested VGG16 model; its layers get names that reveal nothing either.
    vgg_input, model_name, image_input = "input_9", "model_4", "input_5"
    vgg_convs = names.take("conv2d", 10)
    vgg_pools = names.take("max_pooling2d", 3)
    vgg_layers = [_layer(vgg_input, "InputLayer", {"batch_input_shape": [None, None, None, 3]}, [])]
    previous, cin, k = vgg_input, 3, 0
    for block, convs in enumerate((2, 2, 3, 3)):
        width = DEMO["trunk_widths"][block]
        if block:
            pool = vgg_pools[block - 1]
            pool_config = {"pool_size": [2, 2], "padding": "valid", "strides": [2, 2]}
            vgg_layers.append(_layer(pool, "MaxPooling2D", pool_config, [previous]))
            previous = pool
        for _ in range(convs):
            name = vgg_convs[k]
            vgg_layers.append(_layer(name, "Conv2D", _conv_config(name, width), [previous]))
            conv_weights(f"trunk{k}", cin, width)
            layer_of[f"trunk{k}"] = name
            previous, cin, k = name, width, k + 1
    random.Random(seed).shuffle(vgg_layers)  # the graph, not the list order, says the order
    vgg_model = {
        "name": model_name,
        "layers": vgg_layers,
        "input_layers": [[vgg_input, 0, 0]],
        "output_layers": [[previous, 0, 0]],
    }

    convs = iter(names.take("conv2d", 12))
    bns = iter(names.take("batch_normalization", 6))
    denses = iter(names.take("dense", 6))
    flattens = iter(names.take("flatten", 2))
    ups = iter(names.take("up_sampling2d", 3))
    layers = [
        _layer(image_input, "InputLayer", {"batch_input_shape": [None, size, size, 3]}, []),
        {
            "name": model_name,
            "class_name": "Model",
            "config": vgg_model,
            "inbound_nodes": [[[image_input, 0, 0, {}]]],
        },
    ]

    def add(role, kind, config, inputs, node=0):
        name = config.pop("name")
        layers.append(_layer(name, kind, config, inputs, node))
        layer_of[role] = name
        return name

    def conv_bn(prefix, i, source, cin, width, stride, node=0):
        conv = add(
            f"{prefix}{i}",
            "Conv2D",
            _conv_config(next(convs), width, stride=stride),
            [source],
            node,
        )
        conv_weights(f"{prefix}{i}", cin, width)
        bn_config = {"name": next(bns), "axis": -1, "momentum": 0.99, "epsilon": 0.001}
        bn = add(
            f"{prefix}_bn{i}",
            "BatchNormalization",
            {**bn_config, "center": True, "scale": True},
            [conv],
        )
        bn_weights(f"{prefix}_bn{i}", width)
        return bn

    trunk_out = DEMO["trunk_widths"][-1]
    source, cin = model_name, trunk_out
    for i, (width, stride) in enumerate(zip(DEMO["global_widths"], (2, 1, 2, 1))):
        source = conv_bn("global", i, source, cin, width, stride, node=1 if i == 0 else 0)
        cin = width
    global_features = source
    flat_size = (size // 32) ** 2 * cin

    def dense_stack(prefix, units, activations):
        source = add(f"{prefix}_flatten", "Flatten", {"name": next(flattens)}, [global_features])
        n_in = flat_size
        for i, (n, activation) in enumerate(zip(units, activations)):
            config = {"name": next(denses), "units": n, "activation": activation, "use_bias": True}
            source = add(f"{prefix}{i}", "Dense", config, [source])
            dense_weights(f"{prefix}{i}", n_in, n)
            n_in = n
        return source

    class_output = dense_stack(
        "class", (*DEMO["class_units"], DEMO["num_classes"]), ("linear", "linear", "softmax")
    )
    grid = size // 8
    vector = dense_stack("gdense", DEMO["global_units"], ("linear",) * 3)
    units = DEMO["global_units"][-1]
    repeat = add("repeat", "RepeatVector", {"name": "repeat_vector_2", "n": grid * grid}, [vector])
    reshape = add(
        "reshape", "Reshape", {"name": "reshape_2", "target_shape": [grid, grid, units]}, [repeat]
    )

    source, cin = model_name, trunk_out
    for i, width in enumerate(DEMO["mid_widths"]):
        source = conv_bn("mid", i, source, cin, width, 1, node=1 if i == 0 else 0)
        cin = width
    fused = add(
        "concatenate", "Concatenate", {"name": "concatenate_2", "axis": -1}, [source, reshape]
    )
    cin += units
    fusion = add(
        "fusion", "Conv2D", _conv_config(next(convs), DEMO["fusion_width"], kernel=1), [fused]
    )
    conv_weights("fusion", cin, DEMO["fusion_width"], kernel=1)
    source, cin = fusion, DEMO["fusion_width"]
    for i, width in enumerate(DEMO["color_widths"]):
        source = add(f"color{i}", "Conv2D", _conv_config(next(convs), width), [source])
        conv_weights(f"color{i}", cin, width)
        cin = width
        if i in (0, 2):
            source = add(f"up{i}", "UpSampling2D", {"name": next(ups), "size": [2, 2]}, [source])
    source = add(
        "color_out", "Conv2D", _conv_config(next(convs), 2, activation="sigmoid"), [source]
    )
    conv_weights("color_out", cin, 2)
    ab_output = add("up_out", "UpSampling2D", {"name": next(ups), "size": [2, 2]}, [source])

    random.Random(seed + 1).shuffle(layers)
    model_config = {
        "class_name": "Model",
        "config": {
            "name": "model_6",
            "layers": layers,
            "input_layers": [[image_input, 0, 0]],
            "output_layers": [[ab_output, 0, 0], [class_output, 0, 0]],
        },
    }

    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = b"2.2.4"
        f.attrs["backend"] = b"tensorflow"
        f.attrs["model_config"] = json.dumps(model_config).encode("utf8")
        f.attrs["training_config"] = json.dumps({"loss": "mse"}).encode("utf8")
        group = f.create_group("model_weights")
        group.attrs["layer_names"] = [layer["name"].encode("utf8") for layer in layers]
        for layer in layers:
            layer_group = group.create_group(layer["name"])
            stored = []
            if layer["name"] == model_name:
                # Keras names a nested model's weights after its layers' name scopes, which
                # TensorFlow may have made unique ("conv2d_7_1").
                for role, name in layer_of.items():
                    if role.startswith("trunk"):
                        for leaf, value in weights[role].items():
                            stored.append((f"{name}_1/{leaf}:0", value))
            else:
                role = next((r for r, n in layer_of.items() if n == layer["name"]), None)
                for leaf, value in weights.get(role, {}).items():
                    stored.append((f"{layer['name']}/{leaf}:0", value))
            layer_group.attrs["weight_names"] = np.asarray([w.encode("utf8") for w, _ in stored])
            for weight, value in stored:
                layer_group.create_dataset(weight, data=value)
        # Optimizer state is not the model's: the converter leaves it alone.
        f.create_group("optimizer_weights").create_dataset("Adam/iterations:0", data=np.int64(7))
    return weights, layer_of


# A NumPy forward pass of the Keras model, from its weights by role.
def _conv_same(x, kernel, bias, stride=1):
    kh, kw, _, cout = kernel.shape
    batch, height, width, _ = x.shape
    out_h, out_w = -(-height // stride), -(-width // stride)
    pad_h = max((out_h - 1) * stride + kh - height, 0)  # TF's 'same': extra pixel at the end
    pad_w = max((out_w - 1) * stride + kw - width, 0)
    x = np.pad(
        x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0))
    )
    out = np.zeros((batch, out_h, out_w, cout))
    for i in range(kh):
        for j in range(kw):
            window = x[
                :,
                i : i + stride * (out_h - 1) + 1 : stride,
                j : j + stride * (out_w - 1) + 1 : stride,
            ]
            out += window @ kernel[i, j]
    return out + bias


def _relu(x):
    return np.maximum(x, 0.0)


def _keras_forward(weights, gray_l):
    w = {
        role: {k: v.astype(np.float64) for k, v in leaves.items()}
        for role, leaves in weights.items()
    }

    def conv(role, x, stride=1, activation=_relu):
        return activation(_conv_same(x, w[role]["kernel"], w[role]["bias"], stride))

    def bn(role, x):
        p = w[role]
        return (
            p["gamma"] * (x - p["moving_mean"]) / np.sqrt(p["moving_variance"] + 1e-3) + p["beta"]
        )

    def dense(role, x):
        return x @ w[role]["kernel"] + w[role]["bias"]

    def up(x):
        return x.repeat(2, axis=1).repeat(2, axis=2)

    x = np.repeat(gray_l.astype(np.float64) / 100.0, 3, axis=-1)
    k = 0
    for block, convs in enumerate((2, 2, 3, 3)):
        if block:
            b, h, wd, c = x.shape
            x = x.reshape(b, h // 2, 2, wd // 2, 2, c).max(axis=(2, 4))
        for _ in range(convs):
            x = conv(f"trunk{k}", x)
            k += 1
    trunk = x
    for i, stride in enumerate((2, 1, 2, 1)):
        x = bn(f"global_bn{i}", conv(f"global{i}", x, stride))
    flat = x.reshape(x.shape[0], -1)
    logits = dense("class2", dense("class1", dense("class0", flat)))
    vector = dense("gdense2", dense("gdense1", dense("gdense0", flat)))
    mid = trunk
    for i in range(2):
        mid = bn(f"mid_bn{i}", conv(f"mid{i}", mid))
    grid = np.broadcast_to(vector[:, None, None, :], (*mid.shape[:3], vector.shape[-1]))
    x = conv("fusion", np.concatenate([mid, grid], axis=-1))
    x = up(conv("color0", x))
    x = up(conv("color2", conv("color1", x)))
    x = conv("color_out", conv("color3", x), activation=lambda z: 1.0 / (1.0 + np.exp(-z)))
    return 255.0 * up(x) - 128.0, logits


@pytest.fixture(scope="module")
def official_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("chromagan") / "my_model_colorization.h5"
    weights, layer_of = _official_demo_file(path)
    return path, weights, layer_of


def test_converted_checkpoint_computes_what_the_keras_model_computes(official_file):
    path, weights, _ = official_file
    variables = convert(path, size="demo")
    assert set(variables) == {"params", "batch_stats"}
    backbone = {collection: tree["backbone"] for collection, tree in variables.items()}

    gray_l = np.random.default_rng(1).uniform(0, 100, (2, 64, 64, 1)).astype(np.float32)
    ab, aux = jax.jit(chromagan("demo").apply)(backbone, gray_l)
    expected_ab, expected_logits = _keras_forward(weights, gray_l)

    assert float(np.std(expected_ab)) > 5.0  # not a saturated or constant output
    np.testing.assert_allclose(ab, expected_ab, atol=1e-3)
    np.testing.assert_allclose(
        aux["class_logits"], expected_logits, atol=1e-3 * np.abs(expected_logits).max()
    )


def test_converter_places_each_weight_by_the_graph_not_by_the_layer_names(official_file):
    path, weights, _ = official_file
    backbone = convert(path)["params"]["backbone"]
    np.testing.assert_array_equal(
        backbone["trunk"]["conv3_2"]["kernel"], weights["trunk5"]["kernel"]
    )
    np.testing.assert_array_equal(backbone["global_conv2"]["kernel"], weights["global2"]["kernel"])
    np.testing.assert_array_equal(backbone["mid_bn1"]["scale"], weights["mid_bn1"]["gamma"])
    np.testing.assert_array_equal(backbone["class_logits"]["kernel"], weights["class2"]["kernel"])
    np.testing.assert_array_equal(backbone["color_conv3"]["bias"], weights["color3"]["bias"])
    stats = convert(path)["batch_stats"]["backbone"]
    np.testing.assert_array_equal(
        stats["global_bn3"]["var"], weights["global_bn3"]["moving_variance"]
    )


def test_converter_checks_the_size_when_asked(official_file):
    path, _, _ = official_file
    with pytest.raises(CheckpointMismatch, match="not ChromaGAN-full"):
        convert(path, size="full")


def _edited_copy(official_file, tmp_path, edit):
    path, _, layer_of = official_file
    copy = tmp_path / "edited.h5"
    shutil.copy(path, copy)
    with h5py.File(copy, "r+") as f:
        edit(f, layer_of)
    return copy


def test_a_missing_layer_is_named(official_file, tmp_path):
    def drop_global_conv(f, layer_of):
        del f["model_weights"][layer_of["global1"]]

    path = _edited_copy(official_file, tmp_path, drop_global_conv)
    name = official_file[2]["global1"]
    with pytest.raises(CheckpointMismatch, match=rf"missing key {name}/{name}/kernel:0"):
        convert(path)


def test_a_weight_of_the_wrong_shape_is_named(official_file, tmp_path):
    def shrink_bn(f, layer_of):
        name = layer_of["mid_bn0"]
        group = f["model_weights"][name]
        del group[f"{name}/gamma:0"]
        group.create_dataset(f"{name}/gamma:0", data=np.ones(3, np.float32))

    path = _edited_copy(official_file, tmp_path, shrink_bn)
    name = official_file[2]["mid_bn0"]
    with pytest.raises(CheckpointMismatch, match=rf"shape of {name}/{name}/gamma:0 \(3,\)"):
        convert(path)


def test_a_layer_configured_unlike_chromagan_is_named(official_file, tmp_path):
    def unstride(f, layer_of):
        config = json.loads(f.attrs["model_config"])
        for layer in config["config"]["layers"]:
            if layer["name"] == layer_of["global2"]:
                layer["config"]["strides"] = [1, 1]
        f.attrs["model_config"] = json.dumps(config).encode("utf8")

    path = _edited_copy(official_file, tmp_path, unstride)
    name = official_file[2]["global2"]
    with pytest.raises(CheckpointMismatch, match=rf"{name} \(global_conv2\): strides"):
        convert(path)


def test_converted_checkpoint_is_written_for_init_from(official_file, tmp_path):
    path, weights, _ = official_file
    written = convert_to_checkpoint(path, tmp_path / "chromagan_demo")
    restored = restore_variables(written)
    kernel = restored["params"]["backbone"]["fusion"]["kernel"]
    np.testing.assert_array_equal(kernel, weights["fusion"]["kernel"])
