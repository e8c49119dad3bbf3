"""ChromaGAN's VGG16 teacher: its size, its input conventions, and its two converters, checked
on values against a PyTorch forward pass (torchvision's layout) and a NumPy one (Keras').

The full classifier is only traced (`jax.eval_shape`). Forward passes run a narrow one (the
same 13 convs, 5 pools and 3 dense layers, a few channels wide) at 224x224, the teacher's only
input size; the tests write its weight files themselves.
"""

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aiaic_jax.convert.common import CheckpointMismatch, restore_variables
from aiaic_jax.models.backbones.chromagan.teacher import (
    CAFFE_BGR_MEAN,
    KERAS_LAYER_NAMES,
    VGG16Classifier,
    convert_keras_vgg16,
    convert_teacher,
    convert_teacher_to_checkpoint,
    convert_torchvision_vgg16,
    preprocess_for_vgg16,
    teacher_template,
)
from aiaic_jax.models.vgg import CONV_NAMES, IMAGENET_MEAN, IMAGENET_STD, pretrained_vgg16_params

# Distinct widths, so that a transposed kernel or a misordered flatten cannot fit by accident.
NARROW = dict(
    conv_widths=(4, 5, 6, 6, 7, 7, 7, 8, 8, 8, 6, 6, 5), fc_units=(16, 12), num_classes=10
)
SIZE = 224
POOLED_AFTER = ("conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3")


def _count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


@pytest.fixture(scope="module")
def narrow():
    return VGG16Classifier(**NARROW)


@pytest.fixture(scope="module")
def rgb():
    return np.asarray(jax.random.uniform(jax.random.key(0), (2, SIZE, SIZE, 3)), np.float32)


@pytest.fixture(scope="module")
def logits_of(narrow):
    return jax.jit(lambda params, x: narrow.apply({"params": params}, x))


def test_default_is_vgg16_with_its_classifier():
    params = teacher_template()["params"]
    print(f"VGG16 teacher: params {_count(params):,d}")
    assert _count(params) == 138_357_544
    assert tuple(params) == (*CONV_NAMES, "fc6", "fc7", "fc8")
    assert params["fc6"]["kernel"].shape == (7 * 7 * 512, 4096)
    assert params["fc7"]["kernel"].shape == (4096, 4096)
    assert params["fc8"]["kernel"].shape == (4096, 1000)


def test_conv_params_take_the_projects_imagenet_vgg16_weights():
    convs = {name: teacher_template()["params"][name] for name in CONV_NAMES}
    pretrained = pretrained_vgg16_params()
    assert jax.tree.map(lambda x: x.shape, convs) == jax.tree.map(lambda x: x.shape, pretrained)


def test_rejects_inputs_that_do_not_pool_to_7x7():
    model = VGG16Classifier()
    for size in (32, 256):
        with pytest.raises(ValueError, match="224"):
            jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 255, 255, 3)))


def test_preprocessing_modes_do_what_their_docstrings_say(rgb):
    x = jnp.asarray(rgb[:, :4, :4])
    np.testing.assert_array_equal(preprocess_for_vgg16(x, "none"), x)
    np.testing.assert_allclose(
        preprocess_for_vgg16(x, "torchvision"),
        (rgb[:, :4, :4] - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD),
        rtol=1e-6,
        atol=1e-6,
    )
    # Keras' caffe mode: B, G, R channels in [0, 255], minus the BGR means.
    pixels = jnp.array([[[[1.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.2]]]])  # red, white, blue
    expected = np.array(
        [
            [0 - 103.939, 0 - 116.779, 255 - 123.68],
            [255 - 103.939, 255 - 116.779, 255 - 123.68],
            [51 - 103.939, 0 - 116.779, 0 - 123.68],
        ]
    )
    np.testing.assert_allclose(preprocess_for_vgg16(pixels, "caffe")[0, 0], expected, atol=1e-4)
    assert CAFFE_BGR_MEAN == (103.939, 116.779, 123.68)
    with pytest.raises(ValueError, match="caffe"):
        preprocess_for_vgg16(x, "imagenet")


def test_call_applies_the_requested_preprocessing(narrow, keras_reference, rgb):
    variables = {"params": _params_of(keras_reference[0])}
    apply = jax.jit(narrow.apply, static_argnames="preprocess")
    for mode in ("torchvision", "caffe"):
        expected = apply(variables, preprocess_for_vgg16(jnp.asarray(rgb), mode))
        scale = float(jnp.max(jnp.abs(expected)))
        np.testing.assert_allclose(
            apply(variables, rgb, preprocess=mode), expected, atol=1e-5 * scale, rtol=0
        )
    assert apply(variables, rgb).shape == (2, NARROW["num_classes"])


# --- torchvision ----------------------------------------------------------------------------


def _torch_vgg16(torch, conv_widths, fc_units, num_classes):
    """The narrow VGG16 in torchvision's layout (`features.<i>`, `avgpool`, `classifier.<i>`)."""
    nn = torch.nn
    layers, channels = [], 3
    for name, width in zip(CONV_NAMES, conv_widths):
        layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
        if name in POOLED_AFTER:
            layers.append(nn.MaxPool2d(2, 2))
        channels = width

    class Reference(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(*layers)
            self.avgpool = nn.AdaptiveAvgPool2d(7)
            self.classifier = nn.Sequential(
                nn.Linear(channels * 49, fc_units[0]),
                nn.ReLU(),
                nn.Dropout(),
                nn.Linear(fc_units[0], fc_units[1]),
                nn.ReLU(),
                nn.Dropout(),
                nn.Linear(fc_units[1], num_classes),
            )

        def forward(self, x):
            return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

    model = Reference()
    for name, value in model.named_parameters():
        if name.endswith("weight"):
            nn.init.kaiming_normal_(value, nonlinearity="relu")  # keeps activations O(1)
        else:
            nn.init.normal_(value, std=0.1)
    return model.eval()


@pytest.fixture(scope="module")
def torch_reference(tmp_path_factory, rgb):
    """(path of the narrow net's state dict, its logits on rgb)."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = _torch_vgg16(torch, **NARROW)
    state = model.state_dict()
    conv_keys = [k for k in state if k.startswith("features.") and k.endswith(".weight")]
    indices = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
    assert conv_keys == [f"features.{i}.weight" for i in indices]
    path = tmp_path_factory.mktemp("torchvision") / "vgg16-narrow.pth"
    torch.save(state, path)
    with torch.no_grad():
        logits = model(torch.tensor(rgb).permute(0, 3, 1, 2)).numpy()
    return path, logits


def test_torchvision_weights_give_the_torch_logits(narrow, torch_reference, rgb, logits_of):
    path, expected = torch_reference
    variables = convert_torchvision_vgg16(path, narrow)
    assert set(variables) == {"params"}
    logits = np.asarray(logits_of(variables["params"], rgb))
    scale = float(np.max(np.abs(expected)))
    print(f"torch logits scale {scale:.3g}, max diff {np.max(np.abs(logits - expected)):.2g}")
    assert scale > 0.1 and np.std(expected[0] - expected[1]) > 1e-3 * scale  # not degenerate
    np.testing.assert_allclose(logits, expected, atol=1e-4 * max(1.0, scale), rtol=0)


def test_torchvision_mismatches_are_listed_with_the_file(narrow, torch_reference, tmp_path):
    torch = pytest.importorskip("torch")
    path, _ = torch_reference
    state = torch.load(path, weights_only=True)
    del state["classifier.3.weight"], state["classifier.3.bias"]
    state["features.5.weight"] = torch.zeros(6, 4, 3, 3)  # conv2_1 takes 5 channels, not 4
    broken = tmp_path / "vgg16-broken.pth"
    torch.save(state, broken)
    with pytest.raises(CheckpointMismatch) as error:
        convert_torchvision_vgg16(broken, narrow)
    message = str(error.value)
    assert str(broken) in message
    assert "missing key classifier.3.weight" in message
    assert "missing key classifier.3.bias" in message
    assert "features.5.weight" in message and "conv2_1/kernel" in message


def test_torchvision_weights_do_not_fit_another_width(torch_reference):
    path, _ = torch_reference
    with pytest.raises(CheckpointMismatch, match=r"features\.0\.weight"):
        convert_torchvision_vgg16(path)  # the full VGG16


# --- Keras ---------------------------------------------------------------------------------


def _keras_weights(seed=0):
    """Keras layer name -> (kernel HWIO or (in, out), bias) for the narrow network."""
    rng = np.random.default_rng(seed)
    shapes, channels = {}, 3
    for name, width in zip(CONV_NAMES, NARROW["conv_widths"]):
        shapes[name] = (3, 3, channels, width)
        channels = width
    units = (channels * 49, *NARROW["fc_units"], NARROW["num_classes"])
    for i, name in enumerate(("fc6", "fc7", "fc8")):
        shapes[name] = (units[i], units[i + 1])
    weights = {}
    for keras, ours in KERAS_LAYER_NAMES.items():
        shape = shapes[ours]
        fan_in = int(np.prod(shape[:-1]))
        kernel = rng.normal(0, np.sqrt(2 / fan_in), shape).astype(np.float32)
        weights[keras] = (kernel, rng.normal(0, 0.1, shape[-1]).astype(np.float32))
    return weights


def _layer_order():
    """Keras' VGG16 layers in order, weighted or not."""
    names = ["input_1"]
    for keras, ours in KERAS_LAYER_NAMES.items():
        names.append(keras)
        if ours in POOLED_AFTER:
            names.append(keras.split("_")[0] + "_pool")
        if ours == "conv5_3":
            names.append("flatten")
    return names


def _write_keras_h5(path, weights, *, model_weights=False, keras1_names=False):
    """A Keras HDF5 weights file: Keras 1's `<layer>_W_1:0` / `<layer>_b_1:0` datasets in each
    layer group (as the application files have them), or Keras 2's `<layer>/kernel:0` in a
    subgroup; at the root (`save_weights`) or under `model_weights` (`Model.save`)."""
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = b"2.2.4"
        f.attrs["backend"] = b"tensorflow"
        root = f.create_group("model_weights") if model_weights else f
        layers = _layer_order()
        root.attrs["layer_names"] = [name.encode() for name in layers]
        for layer in layers:
            group = root.create_group(layer)
            names = []
            if layer in weights:
                if keras1_names:
                    names = [f"{layer}_W_1:0", f"{layer}_b_1:0"]
                else:
                    names = [f"{layer}/kernel:0", f"{layer}/bias:0"]
                for name, value in zip(names, weights[layer]):
                    group.create_dataset(name, data=value)
            group.attrs["weight_names"] = [name.encode() for name in names]


def _numpy_forward(weights, rgb):
    """Keras VGG16 in NumPy: 'same' 3x3 convs, ReLU, 2x2 pools, flatten (h, w, c), dense."""
    x = rgb.astype(np.float64)
    for keras, ours in KERAS_LAYER_NAMES.items():
        kernel, bias = (w.astype(np.float64) for w in weights[keras])
        if ours.startswith("conv"):
            padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
            height, width = x.shape[1:3]
            x = sum(
                padded[:, dy : dy + height, dx : dx + width] @ kernel[dy, dx]
                for dy in range(3)
                for dx in range(3)
            )
            x = np.maximum(x + bias, 0)
            if ours in POOLED_AFTER:
                b, h, w, c = x.shape
                x = x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
            if ours == "conv5_3":
                x = x.reshape(x.shape[0], -1)
        else:
            x = x @ kernel + bias
            if ours != "fc8":
                x = np.maximum(x, 0)
    return x


def _params_of(keras_weights):
    """The teacher's params tree holding the Keras weights, mapped by hand."""
    return {
        ours: {"kernel": keras_weights[keras][0], "bias": keras_weights[keras][1]}
        for keras, ours in KERAS_LAYER_NAMES.items()
    }


@pytest.fixture(scope="module")
def keras_reference(rgb):
    weights = _keras_weights()
    return weights, _numpy_forward(weights, rgb)


@pytest.mark.parametrize(
    "layout", ["application file (Keras 1 names, top level)", "Model.save (model_weights)"]
)
def test_keras_weights_give_the_numpy_logits(
    narrow, keras_reference, rgb, logits_of, tmp_path, layout
):
    weights, expected = keras_reference
    path = tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
    in_model_weights = "model_weights" in layout
    _write_keras_h5(
        path, weights, model_weights=in_model_weights, keras1_names=not in_model_weights
    )
    params = convert_keras_vgg16(path, narrow)["params"]
    jax.tree.map(np.testing.assert_array_equal, params, _params_of(weights))  # copied unchanged
    logits = np.asarray(logits_of(params, rgb))
    scale = float(np.max(np.abs(expected)))
    assert scale > 0.1 and np.std(expected[0] - expected[1]) > 1e-3 * scale  # not degenerate
    np.testing.assert_allclose(logits, expected, atol=1e-4 * max(1.0, scale), rtol=0)


def test_keras_mismatches_are_listed_with_the_file(narrow, keras_reference, tmp_path):
    weights = dict(keras_reference[0])
    del weights["fc2"]
    weights["block3_conv2"] = (np.zeros((3, 3, 7, 9), np.float32), weights["block3_conv2"][1])
    path = tmp_path / "broken.h5"
    _write_keras_h5(path, weights)
    with pytest.raises(CheckpointMismatch) as error:
        convert_keras_vgg16(path, narrow)
    message = str(error.value)
    assert str(path) in message
    assert "missing key fc2/kernel (for params/fc7/kernel)" in message
    assert "missing key fc2/bias" in message
    assert "block3_conv2/kernel (3, 3, 7, 9)" in message and "conv3_2/kernel" in message


def test_keras_reader_rejects_files_without_layer_names(tmp_path):
    path = tmp_path / "not_keras.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("weights", data=np.zeros(3))
    with pytest.raises(CheckpointMismatch, match="layer_names"):
        convert_keras_vgg16(path)


# --- dispatch ------------------------------------------------------------------------------


def test_convert_teacher_reads_h5_as_keras_and_writes_a_checkpoint(
    narrow, keras_reference, tmp_path
):
    h5 = tmp_path / "teacher.h5"
    _write_keras_h5(h5, keras_reference[0])
    converted = convert_teacher(h5, narrow)
    np.testing.assert_array_equal(
        converted["params"]["fc8"]["kernel"], keras_reference[0]["predictions"][0]
    )
    restored = restore_variables(convert_teacher_to_checkpoint(h5, tmp_path / "ckpt", narrow))
    jax.tree.map(np.testing.assert_array_equal, restored, converted)


def test_convert_teacher_reads_pth_as_torchvision(narrow, torch_reference):
    converted = convert_teacher(torch_reference[0], narrow)
    expected = convert_torchvision_vgg16(torch_reference[0], narrow)
    jax.tree.map(np.testing.assert_array_equal, converted, expected)


def test_convert_teacher_rejects_other_suffixes(tmp_path):
    with pytest.raises(ValueError, match=r"\.safetensors"):
        convert_teacher(tmp_path / "teacher.npz")
