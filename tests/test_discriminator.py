"""DynamicUNetDiscriminator: DDColor's spectral-norm patch discriminator."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from aiaic_jax.models.backbones.ddcolor.discriminator import (
    DynamicUNetDiscriminator,
    SelfAttention,
    logits_side,
)
from aiaic_jax.models.backbones.layers import SpectralNormConv

# Counted from the official PyTorch module (nf=64, n_blocks=3): trainable parameters, without
# the spectral-norm u/v buffers. It does not depend on the input size.
OFFICIAL_PARAMETER_COUNT = 5_919_617

NARROW_WIDTH = 8
SPECTRAL_LAYERS = [
    "stem",
    "block0_conv",
    "block0_down",
    "block1_conv",
    "block1_down",
    "block2_conv",
    "block2_down",
    "head_conv",
    "logits",
]


def _count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


def _power_vectors(batch_stats) -> dict[str, jax.Array]:
    flat = flax.traverse_util.flatten_dict(batch_stats)
    return {"/".join(path): value for path, value in flat.items() if path[-1] == "u"}


def _random_variables(shapes, seed: int):
    """Concrete variables for a tree of shapes: He-normal kernels, small biases, unit-norm u.

    Drawn with NumPy: compiling JAX's threefry for every kernel shape costs more CPU time than
    all the tests here put together.
    """
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = path[-1]
        if name == "kernel":
            fan_in = int(np.prod(leaf.shape[:-1]))
            return rng.normal(0.0, np.sqrt(2.0 / fan_in), leaf.shape).astype(np.float32)
        if name == "bias":
            return rng.normal(0.0, 0.1, leaf.shape).astype(np.float32)
        if name == "gamma":  # open the attention gate so that gradients reach the projections
            return np.full(leaf.shape, 0.5, np.float32)
        if name in ("u", "v"):
            vector = rng.normal(size=leaf.shape)
            return (vector / np.linalg.norm(vector)).astype(np.float32)
        raise AssertionError(f"unexpected variable {path}")

    flat = flax.traverse_util.flatten_dict(shapes)
    return flax.traverse_util.unflatten_dict(
        {path: jnp.asarray(draw(path, leaf)) for path, leaf in flat.items()}
    )


@pytest.fixture(scope="module")
def narrow():
    """A narrow discriminator, random variables and a 64x64 batch of RGB in [0, 1]."""
    model = DynamicUNetDiscriminator(width=NARROW_WIDTH)
    rgb = jax.random.uniform(jax.random.key(1), (2, 64, 64, 3))
    shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, update_stats=False), rgb)
    return model, _random_variables(shapes, seed=0), rgb


@pytest.fixture(scope="module")
def evaluate(narrow):
    """The narrow model in eval mode, jitted once: (logits, batch_stats after the call)."""
    model, _, _ = narrow
    return jax.jit(
        lambda variables, rgb: model.apply(
            variables, rgb, update_stats=False, mutable=["batch_stats"]
        )
    )


def test_one_logit_per_image_at_64x64(narrow, evaluate):
    _, variables, rgb = narrow
    logits, _ = evaluate(variables, rgb)
    assert logits.shape == (2, 1)
    assert logits.dtype == jnp.float32


def test_official_width_gives_a_13x13_logit_grid_at_256x256():
    model = DynamicUNetDiscriminator(width=64)
    rgb = jax.ShapeDtypeStruct((2, 256, 256, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, update_stats=False), rgb)
    logits = jax.eval_shape(lambda v, x: model.apply(v, x, update_stats=False), variables, rgb)
    assert logits.shape == (2, 13 * 13)
    assert logits_side(256) == 13 and logits_side(64) == 1


def test_trainable_parameter_count_matches_the_official_model():
    model = DynamicUNetDiscriminator(width=64)
    rgb = jax.ShapeDtypeStruct((1, 256, 256, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, update_stats=False), rgb)
    assert _count(variables["params"]) == OFFICIAL_PARAMETER_COUNT


def test_narrow_width_keeps_the_same_layers(narrow):
    _, variables, _ = narrow
    wide = jax.eval_shape(
        lambda x: DynamicUNetDiscriminator(width=64).init(jax.random.key(0), x, update_stats=False),
        jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32),
    )
    paths = lambda tree: set(flax.traverse_util.flatten_dict(tree))
    assert paths(variables["params"]) == paths(wide["params"])
    assert paths(variables["batch_stats"]) == paths(wide["batch_stats"])
    assert variables["params"]["head_conv"]["kernel"].shape == (3, 3, 64, 64)


def test_power_iteration_vectors_live_in_batch_stats_not_params(narrow):
    _, variables, _ = narrow
    param_paths = ["/".join(p) for p in flax.traverse_util.flatten_dict(variables["params"])]
    assert not [p for p in param_paths if p.endswith(("/u", "/v"))]
    vectors = _power_vectors(variables["batch_stats"])
    # Nine convs and the attention's query, key and value projections.
    assert len(vectors) == len(SPECTRAL_LAYERS) + 3
    assert variables["batch_stats"]["stem"]["u"].shape == (NARROW_WIDTH,)
    assert variables["batch_stats"]["stem"]["v"].shape == (4 * 4 * 3,)
    for name in SPECTRAL_LAYERS:
        assert name in variables["batch_stats"]


def test_update_stats_moves_u_and_power_iteration_finds_the_largest_singular_value(narrow):
    model, variables, rgb = narrow

    @jax.jit
    def step(batch_stats):
        _, updates = model.apply(
            {"params": variables["params"], "batch_stats": batch_stats},
            rgb,
            update_stats=True,
            mutable=["batch_stats"],
        )
        return updates["batch_stats"]

    batch_stats = step(variables["batch_stats"])
    before, after = _power_vectors(variables["batch_stats"]), _power_vectors(batch_stats)
    # Every u moves, except the final conv's: with one output channel it is the scalar 1.
    moved = {k for k in before if not np.allclose(before[k], after[k])}
    assert moved == {k for k in before if before[k].size > 1}
    for _ in range(200):
        batch_stats = step(batch_stats)

    matrix = np.asarray(variables["params"]["block1_conv"]["kernel"]).reshape(-1, 2 * NARROW_WIDTH)
    largest = np.linalg.svd(matrix, compute_uv=False)[0]
    u, v = (np.asarray(batch_stats["block1_conv"][name]) for name in ("u", "v"))
    np.testing.assert_allclose(v @ matrix @ u, largest, rtol=1e-3)


def test_eval_calls_leave_the_stored_vectors_alone(narrow, evaluate):
    _, variables, rgb = narrow
    _, updates = evaluate(variables, rgb)
    before, after = _power_vectors(variables["batch_stats"]), _power_vectors(updates["batch_stats"])
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])


def test_init_is_untruncated_he_normal_with_zero_bias():
    conv = SpectralNormConv(64, 3, padding=1)
    variables = conv.init(jax.random.key(6), jnp.zeros((1, 8, 8, 64)), train=False)
    kernel = np.asarray(variables["params"]["kernel"])  # [3, 3, 64, 64]
    z = kernel.ravel() / np.sqrt(2.0 / (3 * 3 * 64))
    assert abs(z.std() - 1.0) < 0.03
    # A normal puts 4.6 % of its mass beyond 2 sigma; Flax's default he_normal truncates there.
    assert 0.035 < np.mean(np.abs(z) > 2.0) < 0.057
    assert not np.any(variables["params"]["bias"])


def test_a_strided_spectral_conv_is_torchs_in_training_and_in_evaluation():
    """The stem's 4x4 / 2 conv, padding 1, against torch.nn.utils.spectral_norm(Conv2d)."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    official = torch.nn.utils.spectral_norm(torch.nn.Conv2d(3, 8, 4, stride=2, padding=1))
    x = np.random.default_rng(0).uniform(0, 1, (2, 16, 16, 3)).astype(np.float32)
    u0, v0 = official.weight_u.clone().numpy(), official.weight_v.clone().numpy()
    variables = {
        "params": {
            "kernel": jnp.asarray(official.weight_orig.detach().numpy().transpose(2, 3, 1, 0)),
            "bias": jnp.asarray(official.bias.detach().numpy()),
        },
        # torch's v runs over (C_in, kh, kw); ours over (kh, kw, C_in).
        "batch_stats": {"u": u0, "v": v0.reshape(3, 4, 4).transpose(1, 2, 0).ravel()},
    }
    conv = SpectralNormConv(8, 4, padding=1, strides=2)
    with torch.no_grad():
        expected = official(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()  # one iteration
    out, updated = conv.apply(variables, x, train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(out, expected.transpose(0, 2, 3, 1), atol=1e-5)
    np.testing.assert_allclose(updated["batch_stats"]["u"], official.weight_u.numpy(), atol=1e-6)
    official.eval()
    with torch.no_grad():
        expected = official(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    variables["batch_stats"] = updated["batch_stats"]
    np.testing.assert_allclose(
        conv.apply(variables, x, train=False), expected.transpose(0, 2, 3, 1), atol=1e-5
    )


def test_final_conv_has_no_bias(narrow):
    _, variables, _ = narrow
    assert set(variables["params"]["logits"]) == {"kernel"}


def test_attention_weights_are_normalised_over_source_positions():
    channels, height, width = 16, 3, 4
    x = jax.random.normal(jax.random.key(2), (2, height, width, channels))
    attention = SelfAttention()
    # Kernels with orthonormal columns have every singular value 1; with u any unit vector and
    # v = W u the stored estimate sigma = v . W u is 1 too, so spectral norm leaves them as
    # they are.
    rng = np.random.default_rng(0)
    orthonormal = lambda cols: np.linalg.qr(rng.normal(size=(channels, cols)))[0]
    w_query, w_key, w_value = orthonormal(2), orthonormal(2), orthonormal(channels)
    as_1x1 = lambda w: {"kernel": jnp.asarray(w)[None, None]}
    params = {
        "query": as_1x1(w_query),
        "key": as_1x1(w_key),
        "value": as_1x1(w_value),
        "gamma": jnp.asarray([0.5]),
    }

    def vectors(w):
        u = np.eye(w.shape[1])[0]
        return {"u": jnp.asarray(u, jnp.float32), "v": jnp.asarray(w @ u, jnp.float32)}

    batch_stats = {"query": vectors(w_query), "key": vectors(w_key), "value": vectors(w_value)}
    apply = jax.jit(lambda variables, x: attention.apply(variables, x, update_stats=False))
    out = apply({"params": params, "batch_stats": batch_stats}, x)

    tokens = np.asarray(x).reshape(2, height * width, channels)
    scores = np.einsum("bic,bjc->bij", tokens @ w_query, tokens @ w_key)  # [B, source, target]
    weights = np.exp(scores - scores.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    expected = 0.5 * np.einsum("bij,bic->bjc", weights, tokens @ w_value) + tokens
    np.testing.assert_allclose(out.reshape(2, -1, channels), expected, rtol=1e-5, atol=1e-5)


def test_attention_gate_starts_closed_so_the_block_is_the_identity():
    x = jax.random.normal(jax.random.key(4), (1, 4, 4, 16))
    attention = SelfAttention()
    variables = attention.init(jax.random.key(5), x, update_stats=False)
    assert float(variables["params"]["gamma"][0]) == 0.0
    np.testing.assert_array_equal(attention.apply(variables, x, update_stats=False), x)


def test_gradients_are_finite_and_reach_every_parameter(narrow):
    model, variables, rgb = narrow
    images = jnp.concatenate([rgb, jnp.flip(rgb, axis=2)])  # real, then fake
    labels = jnp.repeat(jnp.array([1.0, 0.0]), len(rgb))[:, None]

    def discriminator_loss(params, images):
        logits, _ = model.apply(
            {"params": params, "batch_stats": variables["batch_stats"]},
            images,
            update_stats=True,
            mutable=["batch_stats"],
        )
        return optax.sigmoid_binary_cross_entropy(logits, labels).mean()

    # The fixture opens the attention gate; at its initial 0 no gradient reaches the projections.
    grad_fn = jax.jit(jax.grad(discriminator_loss, argnums=(0, 1)))
    grads, input_grad = grad_fn(variables["params"], images)
    for path, grad in flax.traverse_util.flatten_dict(grads).items():
        assert np.all(np.isfinite(grad)), path
        assert np.any(grad != 0), path
    assert np.all(np.isfinite(input_grad)) and np.any(input_grad != 0)


def test_too_small_an_input_is_refused_with_the_minimum_size(narrow):
    model, variables, _ = narrow
    with pytest.raises(ValueError, match="at least 64"):
        model.apply(variables, jnp.zeros((1, 48, 64, 3)), update_stats=False)
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        model.apply(variables, jnp.zeros((64, 64, 3)), update_stats=False)
