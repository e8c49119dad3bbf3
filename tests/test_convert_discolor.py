"""Conversion of the official DISCO checkpoint to DisColor's variables.

A fake checkpoint is written from DisColor-demo's variables with random values, laid out as
the official PyTorch model would save them (the inverse mapping, written here from PyTorch's
conventions), and must convert back to exactly those values. The official key list
(`fixtures/discolor_full_state_dict.tsv`, AnchorColorProb in its inference configuration)
must land on DisColor-full's variables, shape for shape. A spectral-norm conv converted from
PyTorch must compute what PyTorch computes in evaluation.
"""

import re
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aiaic_jax.convert.common import CheckpointMismatch, assign, restore_variables
from aiaic_jax.models.backbones.discolor.convert import (
    convert,
    convert_state,
    convert_to_checkpoint,
    discolor_template,
    flax_module_path,
    state_key_map,
)
from aiaic_jax.models.backbones.discolor.model import discolor
from aiaic_jax.models.backbones.layers import SpectralNormConv
from aiaic_jax.trees import flatten

torch = pytest.importorskip("torch")  # writes the .pth files; `make test` installs the CPU build

FIXTURES = Path(__file__).parent / "fixtures"


def official_shapes() -> dict[str, tuple[int, ...]]:
    shapes = {}
    for line in (FIXTURES / "discolor_full_state_dict.tsv").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape = line.split("\t")
        shapes[key] = tuple(int(n) for n in shape.split(",")) if shape else ()
    return shapes


def _zero_stride(shape):
    return np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), shape, (0,) * len(shape))


@pytest.fixture(scope="module")
def demo_template():
    return discolor_template(discolor("demo"))


# ---- DisColor variables -> an official-layout state dict (PyTorch's conventions) ----


def _torch_module(flax_path: tuple[str, ...]) -> str:
    """('segnet', 'conv0a_0') -> 'segnet.net.conv0a.0'; a trailing _<n> is a Sequential index
    (true of every DisColor module: no name of its own ends in _<digits>)."""
    parts = ["segnet", "net", *flax_path[1:]] if flax_path[0] == "segnet" else list(flax_path)
    return ".".join(re.sub(r"_(\d+)$", r".\1", part) for part in parts)


def _power_iteration(matrix: np.ndarray, rng, steps: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Spectral-norm vectors of matrix [fan_in, O] after a few power iterations from a random
    u: u [O], v [fan_in] (what training leaves in the buffers: not converged)."""
    u = rng.standard_normal(matrix.shape[1])
    u /= np.linalg.norm(u)
    for _ in range(steps):
        v = matrix @ u
        v /= np.linalg.norm(v)
        u = v @ matrix
        u /= np.linalg.norm(u)
    return u.astype(np.float32), v.astype(np.float32)


def random_variables(template, seed: int = 0):
    """Random values for every variable; spectral-norm u, v from power iterations."""
    rng = np.random.default_rng(seed)
    variables = {}
    leaves = dict(flatten(template))
    for path, leaf in leaves.items():
        value = rng.standard_normal(leaf.shape).astype(np.float32)
        if path[-1] == "var":
            value = 0.5 + np.abs(value)
        variables[path] = value
    for path in leaves:
        if path[0] == "batch_stats" and path[-1] == "u":
            kernel = variables[("params", *path[1:-1], "kernel")]
            u, v = _power_iteration(kernel.reshape(-1, kernel.shape[-1]), rng)
            variables[path], variables[(*path[:-1], "v")] = u, v
    return variables


def official_layout(variables) -> dict[str, torch.Tensor]:
    """The state dict the official model would hold with these values."""
    spectral = {path[1:-1] for path in variables if path[-1] == "u"}
    state = {}
    attention = {}
    for path, value in variables.items():
        _, *module, leaf = path
        module = tuple(module)
        if module[-1] in ("query", "key", "value", "out"):
            attention.setdefault(module[:-1], {})[(module[-1], leaf)] = value
            continue
        prefix = _torch_module(module)
        if leaf == "kernel":
            name = "weight_orig" if module in spectral else "weight"
            # Conv HWIO -> OIHW; ConvTranspose (transpose_kernel) HWOI -> IOHW; Dense [in, out].
            value = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T
        elif leaf == "v":
            kh, kw, fan_in, _ = variables[("params", *module, "kernel")].shape
            name, value = "weight_v", value.reshape(kh, kw, fan_in).transpose(2, 0, 1).ravel()
        else:
            name = {
                "scale": "weight",
                "bias": "bias",
                "mean": "running_mean",
                "var": "running_var",
                "u": "weight_u",
            }[leaf]
        state[f"{prefix}.{name}"] = torch.from_numpy(np.ascontiguousarray(value))
        if leaf == "mean":
            state[f"{prefix}.num_batches_tracked"] = torch.tensor(7)
    for module, parts in attention.items():
        prefix = _torch_module(module)
        dim = parts[("out", "kernel")].shape[-1]
        in_weight = [parts[(p, "kernel")].reshape(dim, dim).T for p in ("query", "key", "value")]
        in_bias = [parts[(p, "bias")].ravel() for p in ("query", "key", "value")]
        state[f"{prefix}.in_proj_weight"] = torch.from_numpy(np.concatenate(in_weight))
        state[f"{prefix}.in_proj_bias"] = torch.from_numpy(np.concatenate(in_bias))
        out = parts[("out", "kernel")].reshape(dim, dim).T
        state[f"{prefix}.out_proj.weight"] = torch.from_numpy(np.ascontiguousarray(out))
        state[f"{prefix}.out_proj.bias"] = torch.from_numpy(parts[("out", "bias")])
    return state


@pytest.fixture(scope="module")
def demo_checkpoint(demo_template, tmp_path_factory):
    variables = random_variables(demo_template)
    state = official_layout(variables)
    path = tmp_path_factory.mktemp("disco") / "disco-demo.pth.tar"
    torch.save({"epoch": 1, "state_dict": state, "best_loss": 0.5}, path)
    return path, variables, state


# ---- tests ----


def test_naming_rule_collapses_segnet_net_and_joins_indices():
    assert flax_module_path("segnet.net.conv0a.0") == ("segnet", "conv0a_0")
    assert flax_module_path("repnet.conv1_2.2") == ("repnet", "conv1_2_2")
    assert flax_module_path("enhanceNet.inConv.inConv.0") == ("enhanceNet", "inConv", "inConv_0")
    assert flax_module_path("enhanceNet.residual.1.conv.3") == (
        "enhanceNet",
        "residual_1",
        "conv_3",
    )
    assert flax_module_path("wildpath.layers.3.self_attn") == ("wildpath", "layers_3", "self_attn")
    assert flax_module_path("trg_word_emb") == ("trg_word_emb",)


def test_every_official_key_lands_on_a_full_size_variable_of_its_shape():
    shapes = official_shapes()
    assert len(shapes) == 461
    state = {key: _zero_stride(shape) for key, shape in shapes.items()}
    template = discolor_template(discolor("full"))
    leaves = dict(flatten(template))
    mapping = state_key_map(state, template)
    for target, (key, transform) in mapping.items():
        assert transform(state[key]).shape == leaves[target].shape, (key, target)
    assert set(mapping) == set(leaves), sorted(set(leaves) - set(mapping))
    unused = set(shapes) - {key for key, _ in mapping.values()}
    assert unused == {k for k in shapes if k.endswith("num_batches_tracked")}
    # The official parameter and buffer counts (without the 28 step counters).
    assert sum(int(np.prod(leaf.shape)) for leaf in leaves.values()) == 43_063_739 + 86_825


def test_demo_checkpoint_converts_every_value_back_to_its_place(demo_checkpoint):
    path, variables, _ = demo_checkpoint
    converted = convert(path, "demo")
    assert set(converted) == {"params", "batch_stats"}
    leaves = dict(flatten({c: tree["backbone"] for c, tree in converted.items()}))
    assert set(leaves) == set(variables)
    for target, expected in variables.items():
        np.testing.assert_array_equal(leaves[target], expected, err_msg="/".join(target))


def test_converted_spectral_vectors_give_pytorchs_sigma(demo_checkpoint):
    path, _, state = demo_checkpoint
    converted = convert(path, "demo")
    params, batch_stats = converted["params"]["backbone"], converted["batch_stats"]["backbone"]
    for module in ("repnet/conv2_3_0", "enhanceNet/residual_0/conv_1"):
        prefix = _torch_module(tuple(module.split("/")))
        weight = state[f"{prefix}.weight_orig"].numpy()
        sigma_torch = state[f"{prefix}.weight_u"].numpy() @ (
            weight.reshape(weight.shape[0], -1) @ state[f"{prefix}.weight_v"].numpy()
        )
        node_p, node_b = params, batch_stats
        for part in module.split("/"):
            node_p, node_b = node_p[part], node_b[part]
        matrix = node_p["kernel"].reshape(-1, node_p["kernel"].shape[-1])
        sigma_ours = node_b["v"] @ matrix @ node_b["u"]
        np.testing.assert_allclose(sigma_ours, sigma_torch, rtol=1e-5)


def test_bare_state_dict_with_dataparallel_prefix_converts_and_saves(demo_checkpoint, tmp_path):
    _, variables, state = demo_checkpoint
    path = tmp_path / "bare.pth"
    torch.save({f"module.{k}": v for k, v in state.items()}, path)
    written = convert_to_checkpoint(path, tmp_path / "out", "demo")
    restored = restore_variables(written)
    kernel = restored["params"]["backbone"]["trg_word_prj"]["kernel"]
    np.testing.assert_array_equal(kernel, variables[("params", "trg_word_prj", "kernel")])


def test_mismatched_checkpoint_is_one_error_naming_the_file_and_every_problem(
    demo_checkpoint, tmp_path
):
    _, _, state = demo_checkpoint
    state = dict(state)
    del state["repnet.conv9_2.2.running_var"]
    state["hintpath.layers.0.norm3.weight"] = torch.ones(32)
    state["enhanceNet.outConv.weight"] = torch.zeros(3, 16, 3, 3)
    path = tmp_path / "broken.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointMismatch) as error:
        convert(path, "demo")
    message = str(error.value)
    assert str(path) in message
    assert "batch_stats/repnet/conv9_2_2/var" in message  # a variable without a key
    assert "hintpath.layers.0.norm3.weight" in message  # a key without a variable
    assert "enhanceNet.outConv.weight (3, 16, 3, 3)" in message  # a shape that differs


def test_full_size_is_the_default_and_a_demo_checkpoint_does_not_fit_it(demo_checkpoint):
    _, _, state = demo_checkpoint
    numpy_state = {k: v.numpy() for k, v in state.items()}
    with pytest.raises(CheckpointMismatch, match="a DisColor-demo checkpoint, not DisColor-full"):
        convert_state(numpy_state)
    with pytest.raises(ValueError, match="unknown DisColor size"):
        convert_state(numpy_state, "large")


class _OneSpectralConv(nn.Module):
    @nn.compact
    def __call__(self, x):
        return SpectralNormConv(6, kernel_size=3, padding=1, strides=2, name="conv")(x, train=False)


def test_converted_torch_spectral_norm_conv_matches_pytorch_in_evaluation():
    torch.manual_seed(0)
    conv = torch.nn.utils.spectral_norm(torch.nn.Conv2d(4, 6, 3, stride=2, padding=1))
    images = torch.randn(2, 4, 12, 12)
    conv.train()
    with torch.no_grad():
        for _ in range(3):  # moves u and v off their initial values
            conv(images)
    conv.eval()
    with torch.no_grad():
        expected = conv(images).numpy().transpose(0, 2, 3, 1)
    state = {f"conv.{k}": v.numpy() for k, v in conv.state_dict().items()}

    x = jnp.asarray(images.numpy().transpose(0, 2, 3, 1))
    module = _OneSpectralConv()
    template = jax.eval_shape(module.init, jax.random.key(0), x)
    variables = assign(state, state_key_map(state, template), template)
    ours = module.apply(variables, x)
    np.testing.assert_allclose(ours, expected, atol=1e-5)
