"""DisColor's convolutional networks: SpixelNet, ColorProbNet and HourGlass2."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aiaic_jax.models.backbones.discolor.nets import (
    NEIGHBOURS,
    ColorProbNet,
    DownsampleBlock,
    HourGlass2,
    SpixelNet,
)

# Counted from the official PyTorch modules (trainable parameters, no buffers).
OFFICIAL_COUNTS = {"segnet": 2_269_497, "repnet": 32_529_216, "enhanceNet": 7_600_962}
# Official state_dict keys per sub-network, less the BatchNorms' num_batches_tracked.
OFFICIAL_LEAVES = {"segnet": 94 - 14, "repnet": 141 - 9, "enhanceNet": 79 - 5}

# Reduced widths (official / 8) for the numerical checks.
SMALL_SPIXEL = SpixelNet(widths=(2, 4, 8, 16, 32))
SMALL_REPNET = ColorProbNet(widths=(8, 16, 32, 64), out_features=8)
SMALL_HOURGLASS = HourGlass2(widths=(8, 16, 32))
HOURGLASS_IN = 1 + 8  # [L_n, features] at the reduced widths


def _official_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """{'collection/module/.../leaf': shape} of an official-width sub-network's variables,
    from `jax.eval_shape` (nothing is computed)."""
    gray = jax.ShapeDtypeStruct((1, 32, 32, 1), jnp.float32)
    model, x, kwargs = {
        "segnet": (SpixelNet(), gray, {}),
        "repnet": (ColorProbNet(), gray, {"train": False}),
        "enhanceNet": (
            HourGlass2(),
            jax.ShapeDtypeStruct((1, 32, 32, 65), jnp.float32),
            {"train": False},
        ),
    }[name]
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, **kwargs), x)
    flat = flax.traverse_util.flatten_dict(variables)
    return {"/".join(path): leaf.shape for path, leaf in flat.items()}


@pytest.mark.parametrize("name", sorted(OFFICIAL_COUNTS))
def test_official_widths_have_the_official_parameter_count(name):
    shapes = _official_shapes(name)
    params = sum(int(np.prod(s)) for path, s in shapes.items() if path.startswith("params/"))
    assert params == OFFICIAL_COUNTS[name]
    assert len(shapes) == OFFICIAL_LEAVES[name]


REPRESENTATIVE_SHAPES = {
    "segnet": {
        "params/conv0a_0/kernel": (3, 3, 1, 16),
        "params/conv0a_1/scale": (16,),
        "batch_stats/conv0a_1/mean": (16,),
        "params/conv4a_0/kernel": (3, 3, 128, 256),
        "batch_stats/conv4b_1/var": (256,),
        # ConvTranspose2d weight (I, O, kh, kw) = (256, 128, 4, 4) -> (kh, kw, O, I).
        "params/deconv3_0/kernel": (4, 4, 128, 256),
        "params/deconv3_0/bias": (128,),
        "params/conv3_1_0/kernel": (3, 3, 256, 128),
        "params/deconv0_0/kernel": (4, 4, 16, 32),
        "params/conv0_1_1/bias": (16,),
        "params/pred_mask0/kernel": (3, 3, 16, 9),
        "params/pred_mask0/bias": (9,),
    },
    "repnet": {
        "params/conv1_2_0/kernel": (3, 3, 1, 64),
        "batch_stats/conv1_2_0/u": (64,),
        "batch_stats/conv1_2_0/v": (9,),
        "params/conv1_2_2/bias": (64,),
        "params/conv1_2_4/scale": (64,),
        "params/conv2_3_0/kernel": (3, 3, 64, 128),
        "batch_stats/conv2_3_0/v": (576,),
        "batch_stats/conv2_3_6/mean": (128,),
        "params/conv7_3_4/kernel": (3, 3, 512, 512),
        "batch_stats/conv7_3_4/v": (4608,),
        "params/conv8up_1/kernel": (3, 3, 512, 256),
        "params/conv3short8_0/kernel": (3, 3, 256, 256),
        "params/conv8_3_1/bias": (256,),
        "params/conv8_3_5/scale": (256,),
        "params/conv9up_1/kernel": (3, 3, 256, 128),
        "batch_stats/conv9_2_2/var": (128,),
        "params/conv10up_1/kernel": (3, 3, 128, 64),
        "params/conv10_2_1/kernel": (3, 3, 64, 64),
    },
    "enhanceNet": {
        "params/inConv/inConv_0/kernel": (3, 3, 65, 64),
        "params/inConv/conv_0/bias": (64,),
        "batch_stats/inConv/conv_2/mean": (64,),
        "params/down1/conv_0/kernel": (3, 3, 64, 128),
        "params/down2/conv_4/scale": (256,),
        "params/residual_0/conv_0/kernel": (3, 3, 256, 256),
        "params/residual_2/conv_1/kernel": (3, 3, 256, 256),
        "batch_stats/residual_2/conv_1/u": (256,),
        "batch_stats/residual_2/conv_1/v": (2304,),
        "params/residual_1/conv_3/bias": (256,),
        "params/up2/conv1/kernel": (3, 3, 256, 128),
        "params/up2/combine/kernel": (3, 3, 256, 128),
        "params/up2/conv2_2/kernel": (3, 3, 128, 128),
        "batch_stats/up2/conv2_4/var": (128,),
        "params/up1/combine/kernel": (3, 3, 128, 64),
        "params/outConv/kernel": (3, 3, 64, 2),
        "params/outConv/bias": (2,),
    },
}


@pytest.mark.parametrize("name", sorted(REPRESENTATIVE_SHAPES))
def test_variable_paths_are_the_official_module_paths(name):
    shapes = _official_shapes(name)
    for path, shape in REPRESENTATIVE_SHAPES[name].items():
        assert shapes.get(path) == shape, path
    # SpixelNet's convs before a BatchNorm have no bias; spectral norms keep u, v out of params.
    assert not [p for p in shapes if p.startswith("params/conv0a_0/") and p.endswith("bias")]
    assert not [p for p in shapes if p.startswith("params/") and p.endswith(("/u", "/v"))]


def _random_variables(shapes, seed: int):
    """Concrete variables for a tree of shapes, drawn with NumPy (no JAX compilation): scaled
    normal kernels, small biases, BatchNorm scales and statistics away from the identity, and
    spectral-norm vectors from a few power iterations (so that sigma is the top singular value
    and positive, as after training)."""
    rng = np.random.default_rng(seed)
    flat = flax.traverse_util.flatten_dict(shapes)
    drawn = {}
    for path, leaf in flat.items():
        name = path[-1]
        if name == "kernel":
            fan_in = int(np.prod(leaf.shape[:-1]))
            drawn[path] = rng.normal(0.0, np.sqrt(2.0 / fan_in), leaf.shape)
        elif name in ("bias", "mean"):
            drawn[path] = rng.normal(0.0, 0.1, leaf.shape)
        elif name in ("scale", "var"):
            drawn[path] = rng.uniform(0.5, 1.5, leaf.shape)
    for path, leaf in flat.items():
        if path[-1] == "u":
            kernel = drawn[("params", *path[1:-1], "kernel")]
            matrix = kernel.reshape(-1, kernel.shape[-1])  # [k*k*Cin (HWI order), Cout]
            u = rng.normal(size=leaf.shape)
            for _ in range(3):
                v = matrix @ u / np.linalg.norm(matrix @ u)
                u = v @ matrix / np.linalg.norm(v @ matrix)
            drawn[path], drawn[(*path[:-1], "v")] = u, v
    assert set(drawn) == set(flat)
    return flax.traverse_util.unflatten_dict(
        {path: jnp.asarray(value, jnp.float32) for path, value in drawn.items()}
    )


def _small_variables(model, in_channels: int, seed: int):
    x = jax.ShapeDtypeStruct((2, 32, 32, in_channels), jnp.float32)
    kwargs = {} if isinstance(model, SpixelNet) else {"train": False}
    shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, **kwargs), x)
    return _random_variables(shapes, seed)


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    gray = rng.uniform(-1.0, 1.0, (2, 48, 32, 1)).astype(np.float32)
    features = rng.uniform(0.0, 1.0, (2, 48, 32, HOURGLASS_IN - 1)).astype(np.float32)
    return gray, np.concatenate([gray, features], axis=-1)


def _init(model, x, **kwargs):
    """The real initialisation, and the output. The key is XLA's RngBitGenerator: compiling
    threefry for every kernel shape takes XLA:CPU about a minute here. Jitted: op by op the
    init dispatches hundreds of small computations."""
    init = jax.jit(lambda key, x: model.init_with_output(key, x, **kwargs))
    return init(jax.random.key(0, impl="unsafe_rbg"), x)


def test_initialised_nets_give_the_documented_shapes_and_a_normalised_affinity(inputs):
    gray, hourglass_in = inputs
    affinity, spixel = _init(SMALL_SPIXEL, gray)
    assert affinity.shape == (2, 48, 32, NEIGHBOURS)
    np.testing.assert_allclose(np.sum(affinity, axis=-1), 1.0, atol=1e-5)
    assert np.all(np.asarray(affinity) >= 0)
    # ColorProbNet's output (shape, >= 0) is checked against torch below, with copied weights.
    ab, variables = _init(SMALL_HOURGLASS, hourglass_in, train=False)
    assert ab.shape == (2, 48, 32, 2)
    assert np.all(np.isfinite(ab))

    # Initialisation as official: xavier_uniform kernels, PyTorch's default conv biases
    # U(-1/sqrt(fan_in), 1/sqrt(fan_in)) ...
    kernel = np.asarray(variables["params"]["inConv"]["inConv_0"]["kernel"])
    bound = np.sqrt(6.0 / (9 * HOURGLASS_IN + 9 * 8))  # (fan_in + fan_out) of a 3x3 conv
    assert 0.9 * bound < np.abs(kernel).max() <= bound
    bias = np.asarray(variables["params"]["inConv"]["inConv_0"]["bias"])
    assert np.abs(bias).max() <= 1.0 / np.sqrt(9 * HOURGLASS_IN) and np.any(bias)
    # ... and zeros for SpixelNet's biases (its own init), but for the last conv: a fresh
    # SpixelNet is the regular grid, every pixel in its own cell.
    assert not np.any(spixel["params"]["deconv3_0"]["bias"])
    assert not np.any(spixel["params"]["pred_mask0"]["kernel"])
    assert np.all(np.asarray(affinity)[..., 4] > 0.999)


def test_sizes_that_are_not_multiples_of_the_downsampling_are_refused():
    with pytest.raises(ValueError, match="multiples of 16"):
        SMALL_SPIXEL.init(jax.random.key(0), jnp.zeros((1, 24, 32, 1)))


class _TorchOps:
    """PyTorch (NCHW) layers over the values of a Flax variable tree, for the references."""

    def __init__(self, torch, variables, *, train: bool = False):
        self.torch, self.train = torch, train
        self.params, self.stats = variables["params"], variables.get("batch_stats", {})

    def _get(self, tree, path):
        for name in path.split("/"):
            tree = tree[name]
        return {k: self.torch.from_numpy(np.asarray(v).copy()) for k, v in tree.items()}

    def conv(self, x, path, stride=1):
        p = self._get(self.params, path)
        weight = p["kernel"].permute(3, 2, 0, 1)  # HWIO -> OIHW
        return self.torch.nn.functional.conv2d(x, weight, p.get("bias"), stride, padding=1)

    def deconv(self, x, path):
        p = self._get(self.params, path)
        weight = p["kernel"].permute(3, 2, 0, 1)  # (kh, kw, O, I) -> (I, O, kh, kw)
        return self.torch.nn.functional.conv_transpose2d(x, weight, p["bias"], stride=2, padding=1)

    def sn_conv(self, x, path, stride=1):
        p, s = self._get(self.params, path), self._get(self.stats, path)
        kh, kw, cin, cout = p["kernel"].shape
        conv = self.torch.nn.utils.spectral_norm(
            self.torch.nn.Conv2d(cin, cout, (kh, kw), stride=stride, padding=1)
        )
        with self.torch.no_grad():
            conv.weight_orig.copy_(p["kernel"].permute(3, 2, 0, 1))
            conv.bias.copy_(p["bias"])
            conv.weight_u.copy_(s["u"])
            # Ours runs over the kernel in (kh, kw, Cin) order, torch's in (Cin, kh, kw).
            conv.weight_v.copy_(s["v"].reshape(kh, kw, cin).permute(2, 0, 1).reshape(-1))
        conv.train(self.train)
        return conv(x)

    def bn(self, x, path):
        p, s = self._get(self.params, path), self._get(self.stats, path)
        return self.torch.nn.functional.batch_norm(
            x, s["mean"], s["var"], p["scale"], p["bias"], training=self.train, eps=1e-5
        )


def _up(torch, x):
    return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")


def _torch_spixelnet(torch, ops, gray):
    """The official SpixelNet forward, NCHW, at any depth of five levels."""
    lrelu = lambda x: torch.nn.functional.leaky_relu(x, 0.1)
    block = lambda x, name, stride=1: lrelu(ops.bn(ops.conv(x, f"{name}_0", stride), f"{name}_1"))
    levels = []
    x = gray
    for k in range(5):
        x = block(block(x, f"conv{k}a", 1 if k == 0 else 2), f"conv{k}b")
        levels.append(x)
    for k in (3, 2, 1, 0):
        up = lrelu(ops.deconv(x, f"deconv{k}_0"))
        x = block(torch.cat([levels[k], up], dim=1), f"conv{k}_1")
    return torch.softmax(ops.conv(x, "pred_mask0"), dim=1)


def _torch_colorprobnet(torch, ops, gray):
    lrelu = lambda x: torch.nn.functional.leaky_relu(x, 0.2)
    relu = torch.relu

    def stage(x, name, convs, stride):
        for i in range(convs):
            x = lrelu(ops.sn_conv(x, f"{name}_{2 * i}", stride if i == 0 else 1))
        return ops.bn(x, f"{name}_{2 * convs}")

    f1 = stage(gray, "conv1_2", 2, 1)
    f2 = stage(f1, "conv2_3", 3, 2)
    f3 = stage(f2, "conv3_3", 3, 2)
    x = stage(f3, "conv4_3", 3, 2)
    for name in ("conv5_3", "conv6_3", "conv7_3"):
        x = stage(x, name, 3, 1)
    x = ops.conv(_up(torch, x), "conv8up_1") + ops.conv(f3, "conv3short8_0")
    x = relu(ops.conv(relu(ops.conv(relu(x), "conv8_3_1")), "conv8_3_3"))
    x = ops.bn(x, "conv8_3_5")
    x = ops.bn(relu(ops.conv(ops.conv(_up(torch, x), "conv9up_1"), "conv9_2_0")), "conv9_2_2")
    x = relu(ops.conv(_up(torch, x), "conv10up_1"))
    return relu(ops.conv(x, "conv10_2_1"))


def _torch_hourglass(torch, ops, x, num_residual):
    relu = torch.relu
    f1 = relu(ops.conv(x, "inConv/inConv_0"))
    f1 = ops.bn(relu(ops.conv(f1, "inConv/conv_0")), "inConv/conv_2")

    def down(x, name):
        x = relu(ops.conv(relu(ops.conv(x, f"{name}/conv_0", 2)), f"{name}/conv_2"))
        return ops.bn(x, f"{name}/conv_4")

    def up(x, skip, name):
        x = _up(torch, ops.conv(x, f"{name}/conv1"))
        x = relu(ops.conv(torch.cat([x, skip], dim=1), f"{name}/combine"))
        x = relu(ops.conv(relu(ops.conv(x, f"{name}/conv2_0")), f"{name}/conv2_2"))
        return ops.bn(x, f"{name}/conv2_4")

    f2 = down(f1, "down1")
    x = down(f2, "down2")
    for i in range(num_residual):
        name = f"residual_{i}"
        residual = ops.sn_conv(ops.conv(x, f"{name}/conv_0"), f"{name}/conv_1")
        x = relu(x + ops.conv(relu(residual), f"{name}/conv_3"))
    return ops.conv(up(up(x, f2, "up2"), f1, "up1"), "outConv")


def _nchw(torch, x):
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def _assert_close_to_torch(ours, expected):
    expected = expected.detach().numpy().transpose(0, 2, 3, 1)
    assert ours.shape == expected.shape
    np.testing.assert_allclose(np.asarray(ours), expected, rtol=1e-5, atol=1e-4)


def test_stride_2_convs_pad_like_torch_on_even_sizes():
    """A stride-2 block against torch's Conv2d(3, stride=2, padding=1); Flax's 'SAME' would
    pad (0, 1) here."""
    torch = pytest.importorskip("torch")
    block = DownsampleBlock(6)
    x = np.random.default_rng(3).normal(size=(2, 16, 12, 5)).astype(np.float32)
    shapes = jax.eval_shape(lambda x: block.init(jax.random.key(0), x, train=False), x)
    variables = _random_variables(shapes, seed=3)
    ops = _TorchOps(torch, variables)
    with torch.no_grad():
        y = torch.relu(ops.conv(_nchw(torch, x), "conv_0", stride=2))
        expected = ops.bn(torch.relu(ops.conv(y, "conv_2")), "conv_4")
    _assert_close_to_torch(block.apply(variables, x, train=False), expected)


def test_spixelnet_is_the_official_forward_with_copied_weights(inputs):
    """Covers the transposed convs (k4, s2, p1), the [skip, upsampled] concatenation order and
    the affinity's channel order."""
    torch = pytest.importorskip("torch")
    gray, _ = inputs
    variables = _small_variables(SMALL_SPIXEL, 1, seed=1)
    with torch.no_grad():
        expected = _torch_spixelnet(torch, _TorchOps(torch, variables), _nchw(torch, gray))
    _assert_close_to_torch(jax.jit(SMALL_SPIXEL.apply)(variables, gray), expected)


def test_colorprobnet_in_evaluation_is_the_official_forward_with_copied_weights(inputs):
    torch = pytest.importorskip("torch")
    gray, _ = inputs
    variables = _small_variables(SMALL_REPNET, 1, seed=2)
    with torch.no_grad():
        expected = _torch_colorprobnet(torch, _TorchOps(torch, variables), _nchw(torch, gray))
    ours = jax.jit(lambda v, x: SMALL_REPNET.apply(v, x, train=False))(variables, gray)
    assert ours.shape == (2, 48, 32, 8)
    assert np.all(np.asarray(ours) >= 0)  # the final ReLU
    _assert_close_to_torch(ours, expected)


@pytest.mark.parametrize("train", [False, True])
def test_hourglass_is_the_official_forward_with_copied_weights(inputs, train):
    """In evaluation (stored u, v and running statistics) and in training (one power iteration
    from the stored u, batch statistics)."""
    torch = pytest.importorskip("torch")
    _, x = inputs
    variables = _small_variables(SMALL_HOURGLASS, HOURGLASS_IN, seed=4)
    with torch.no_grad():
        ops = _TorchOps(torch, variables, train=train)
        expected = _torch_hourglass(torch, ops, _nchw(torch, x), SMALL_HOURGLASS.num_residual)
    ours, _ = SMALL_HOURGLASS.apply(variables, x, train=train, mutable=["batch_stats"])
    _assert_close_to_torch(ours, expected)


def test_training_calls_update_batchnorm_and_spectral_norm_statistics(inputs):
    gray, _ = inputs
    variables = _small_variables(SMALL_REPNET, 1, seed=5)
    features, updates = jax.jit(
        lambda v, x: SMALL_REPNET.apply(v, x, train=True, mutable=["batch_stats"])
    )(variables, gray)
    assert np.all(np.asarray(features) >= 0)
    before = flax.traverse_util.flatten_dict(variables["batch_stats"])
    after = flax.traverse_util.flatten_dict(updates["batch_stats"])
    assert set(before) == set(after)
    assert not np.allclose(before[("conv1_2_4", "mean")], after[("conv1_2_4", "mean")])
    assert not np.allclose(before[("conv2_3_0", "u")], after[("conv2_3_0", "u")])


def test_hook_sees_the_first_conv_output_before_its_relu(inputs):
    """Negating inside the hook is the same as negating the first conv's weights and bias; a
    hook after the ReLU could not be."""
    _, x = inputs
    variables = _small_variables(SMALL_HOURGLASS, HOURGLASS_IN, seed=6)
    seen = []

    def negate(features):
        seen.append(features.shape)
        return -features

    hooked = SMALL_HOURGLASS.apply(variables, x, train=False, hook=negate)
    assert seen == [(2, 48, 32, SMALL_HOURGLASS.widths[0])]
    negated = jax.tree_util.tree_map(lambda a: a, variables)  # a copy of the tree
    first = negated["params"]["inConv"]["inConv_0"]
    negated["params"]["inConv"]["inConv_0"] = jax.tree_util.tree_map(lambda a: -a, first)
    expected = SMALL_HOURGLASS.apply(negated, x, train=False)
    np.testing.assert_allclose(hooked, expected, rtol=1e-5, atol=1e-5)
    plain = SMALL_HOURGLASS.apply(variables, x, train=False)
    assert not np.allclose(hooked, plain, atol=1e-3)
