"""DisColor's perceptual network (models/backbones/discolor/vgg19.py): VGG19's conv stack and
its torchvision converter, checked on values against a PyTorch forward pass of a network with
torchvision's `features` layout that the test builds itself (no torchvision)."""

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from aiaic_jax.convert.common import CheckpointMismatch, save_variables  # noqa: E402
from aiaic_jax.models.backbones.discolor.vgg19 import (  # noqa: E402
    CONV_NAMES,
    LAYER_NAMES,
    TORCH_CONV_INDICES,
    VGG19_BLOCK_WIDTHS,
    VGG19Features,
    convert_vgg19,
    load_vgg19,
    vgg19_from_params,
    vgg19_template,
)

SIZE = 32
RELU_X_1 = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
# Distinct widths, so that a transposed kernel cannot fit by accident.
NARROW = (4, 6, 8, 10, 12)


def torch_vgg19_features(block_widths=VGG19_BLOCK_WIDTHS, seed=0):
    """torchvision's vgg19().features layout: Conv2d/ReLU per conv, MaxPool2d after each block;
    He-normal weights so that activations keep their scale through the 16 layers."""
    torch.manual_seed(seed)
    layers, channels = [], 3
    for convs, width in zip((2, 2, 4, 4, 4), block_widths):
        for _ in range(convs):
            conv = torch.nn.Conv2d(channels, width, 3, padding=1)
            torch.nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            torch.nn.init.uniform_(conv.bias, -0.1, 0.1)
            layers += [conv, torch.nn.ReLU(inplace=False)]
            channels = width
        layers.append(torch.nn.MaxPool2d(2, 2))
    return torch.nn.Sequential(*layers).eval()


def save_torchvision_file(path, features, classifier=True):
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    if classifier:  # torchvision's head: ignored by the converter
        state["classifier.0.weight"] = torch.zeros(8, 4)
        state["classifier.0.bias"] = torch.zeros(8)
    torch.save(state, path)
    return path


def torch_activations(features, rgb_nhwc):
    """{layer name: NHWC activation} of the torch network, ImageNet-normalised input."""
    mean = torch.tensor([0.485, 0.456, 0.406])[None, :, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[None, :, None, None]
    x = (torch.from_numpy(rgb_nhwc).permute(0, 3, 1, 2) - mean) / std
    out = {}
    with torch.no_grad():
        for name, layer in zip(LAYER_NAMES, features):
            x = layer(x)
            out[name] = x.permute(0, 2, 3, 1).numpy()
    return out


def test_vgg19_layout_and_size():
    assert TORCH_CONV_INDICES == (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
    assert len(LAYER_NAMES) == 37  # torchvision's vgg19().features has 37 modules
    params = vgg19_template()["params"]
    assert tuple(params) == CONV_NAMES
    count = sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(params))
    assert count == 20_024_384  # torchvision's VGG19 features
    assert params["conv5_4"]["kernel"].shape == (3, 3, 512, 512)


def test_converted_torchvision_vgg19_gives_torchs_features(tmp_path):
    features = torch_vgg19_features()
    path = save_torchvision_file(tmp_path / "vgg19-fake.pth", features)
    variables = convert_vgg19(path)
    rgb = np.random.default_rng(0).uniform(0, 1, (2, SIZE, SIZE, 3)).astype(np.float32)
    ours = jax.jit(lambda v, x: VGG19Features().apply(v, x, RELU_X_1))(variables, rgb)
    theirs = torch_activations(features, rgb)
    for name in RELU_X_1:
        scale = float(np.abs(theirs[name]).max())
        assert scale > 0.1, (name, scale)  # the comparison is not between near-zeros
        np.testing.assert_allclose(ours[name], theirs[name], atol=1e-4 * max(1.0, scale))


def test_stops_after_the_deepest_requested_layer():
    model = VGG19Features(block_widths=NARROW)
    variables = vgg19_template(model)
    rgb = jax.ShapeDtypeStruct((1, SIZE, SIZE, 3), np.float32)
    apply = lambda layers: jax.eval_shape(lambda v, x: model.apply(v, x, layers), variables, rgb)
    out = apply(("relu2_1", "conv1_2"))
    assert set(out) == {"relu2_1", "conv1_2"}
    assert out["relu2_1"].shape == (1, SIZE // 2, SIZE // 2, NARROW[1])
    with pytest.raises(ValueError, match="unknown VGG19 layers"):
        apply(("relu5_5",))


def test_a_missing_or_misshaped_key_is_named_with_the_file(tmp_path):
    state = {f"features.{k}": v for k, v in torch_vgg19_features(NARROW).state_dict().items()}
    narrow = VGG19Features(block_widths=NARROW)
    del state["features.34.bias"]
    state["features.5.weight"] = torch.zeros(NARROW[1], NARROW[0], 5, 5)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointMismatch) as error:
        convert_vgg19(path, model=narrow)
    message = str(error.value)
    assert str(path) in message
    assert "missing key features.34.bias" in message
    assert "shape of features.5.weight" in message and "conv2_1/kernel" in message
    # A narrow file does not fit the full-size VGG19 either.
    with pytest.raises(CheckpointMismatch, match=r"shape of features\.0\.weight"):
        convert_vgg19(save_torchvision_file(tmp_path / "narrow.pth", torch_vgg19_features(NARROW)))


def test_rejects_vgg19_bn_and_a_size(tmp_path):
    state = {"features.1.running_mean": torch.zeros(64)}
    torch.save(state, tmp_path / "bn.pth")
    with pytest.raises(CheckpointMismatch, match="VGG19-BN"):
        convert_vgg19(tmp_path / "bn.pth")
    with pytest.raises(ValueError, match="one size"):
        convert_vgg19(tmp_path / "bn.pth", "large")


def test_saved_conversion_loads_back_as_the_network_it_was(tmp_path):
    narrow = VGG19Features(block_widths=NARROW)
    path = save_torchvision_file(tmp_path / "narrow.pth", torch_vgg19_features(NARROW))
    directory = save_variables(tmp_path / "converted", convert_vgg19(path, model=narrow))
    params = load_vgg19(directory)
    assert vgg19_from_params(params).block_widths == NARROW
    assert vgg19_from_params(vgg19_template()["params"]).block_widths == VGG19_BLOCK_WIDTHS
    with pytest.raises(ValueError, match="not VGG19's convs"):
        vgg19_from_params({"conv1_1": params["conv1_1"]}, source="x")
    broken = dict(params, conv3_2={"kernel": np.zeros((3, 3, 5, 8)), "bias": np.zeros(8)})
    with pytest.raises(ValueError, match="conv3_2/kernel"):
        vgg19_from_params(broken)
