"""DisColor's superpixel tokens: pooling, unpooling, sizes, positions, the token encoder,
k-means and the anchor choice."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from aiaic_jax.models.backbones.discolor import tokens  # noqa: E402

F = torch.nn.functional
# Direction k of the affinity channels points at the cell offset by OFFSETS[k] = (dy, dx).
OFFSETS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
WIDTH, HEADS, HIDDEN = 64, 8, 256
# Compiled once for all the k-means tests (eager calls retrace the loop every time).
_kmeans = jax.jit(tokens.kmeans, static_argnums=(1,))


def _key(seed: int) -> jax.Array:
    # Threefry keys make random initialisers and dropout slow to compile on CPU; rbg keys do not.
    return jax.random.key(seed, impl="rbg")


def _random_affinity(rng, batch, height, width):
    logits = rng.normal(0.0, 2.0, (batch, height, width, 9))
    return jax.nn.softmax(jnp.asarray(logits, jnp.float32), axis=-1)


def _nchw(x) -> "torch.Tensor":
    return torch.from_numpy(np.array(x, np.float32)).permute(0, 3, 1, 2)


def _nhwc(x: "torch.Tensor") -> np.ndarray:
    return x.permute(0, 2, 3, 1).numpy()


def _torch_scatter_pool(values, affinity, cell):
    """Each pixel of cell (I, J) sends value * a_k to token (I + dy_k, J + dx_k).

    values [B, C, H, W], affinity [B, 9, H, W] -> (received sums [B, C, h, w], received
    affinity mass [B, 1, h, w]), tokens outside the grid dropped.
    """
    batch, channels, height, width = values.shape
    h, w = height // cell, width // cell
    sums = torch.zeros(batch, channels, h + 2, w + 2)
    mass = torch.zeros(batch, 1, h + 2, w + 2)
    for k, (dy, dx) in enumerate(OFFSETS):
        weight = affinity[:, k : k + 1]
        rows, cols = slice(1 + dy, 1 + dy + h), slice(1 + dx, 1 + dx + w)
        sums[:, :, rows, cols] += F.avg_pool2d(values * weight, cell)
        mass[:, :, rows, cols] += F.avg_pool2d(weight, cell)
    return sums[:, :, 1:-1, 1:-1], mass[:, :, 1:-1, 1:-1]


def _torch_pool(features, affinity, cell):
    sums, mass = _torch_scatter_pool(features, affinity, cell)
    return sums / (mass + 1e-8)


def _torch_unpool(token_grid, affinity, cell):
    """Each pixel of cell (I, J) reads sum_k a_k * token(I + dy_k, J + dx_k), zero outside."""
    _, _, h, w = token_grid.shape
    padded = F.pad(token_grid, (1, 1, 1, 1))
    out = 0.0
    for k, (dy, dx) in enumerate(OFFSETS):
        neighbour = padded[:, :, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
        upsampled = neighbour.repeat_interleave(cell, dim=2).repeat_interleave(cell, dim=3)
        out = out + upsampled * affinity[:, k : k + 1]
    return out


def _torch_sizes(affinity, cell):
    hard = (affinity == affinity.max(dim=1, keepdim=True).values).float()
    ones = torch.ones_like(affinity[:, :1])
    return _torch_scatter_pool(ones, hard, cell)[1][:, 0]


@pytest.mark.parametrize("cell", [16, 8])
def test_pool_unpool_and_sizes_match_torch(cell):
    rng = np.random.default_rng(cell)
    batch, height, width, channels = 2, 32, 48, 5
    features = rng.normal(0.0, 1.0, (batch, height, width, channels)).astype(np.float32)
    affinity = _random_affinity(rng, batch, height, width)
    grid = (height // cell, width // cell)
    token_grid = rng.normal(0.0, 1.0, (batch, *grid, channels)).astype(np.float32)

    pooled = tokens.pool_tokens(jnp.asarray(features), affinity, cell)
    unpooled = tokens.unpool_tokens(jnp.asarray(token_grid), affinity, cell)
    sizes = tokens.spixel_sizes(affinity, cell)

    assert pooled.shape == (batch, *grid, channels)
    assert unpooled.shape == (batch, height, width, channels)
    assert sizes.shape == (batch, *grid)
    torch_affinity = _nchw(affinity)
    expected_pool = _nhwc(_torch_pool(_nchw(features), torch_affinity, cell))
    expected_unpool = _nhwc(_torch_unpool(_nchw(token_grid), torch_affinity, cell))
    expected_sizes = _torch_sizes(torch_affinity, cell).numpy()
    np.testing.assert_allclose(pooled, expected_pool, atol=1e-5, rtol=0)
    np.testing.assert_allclose(unpooled, expected_unpool, atol=1e-5, rtol=0)
    np.testing.assert_allclose(sizes, expected_sizes, atol=1e-5, rtol=0)


def test_centre_affinity_pools_cell_means_and_unpools_to_nearest():
    rng = np.random.default_rng(0)
    features = jnp.asarray(rng.normal(size=(1, 16, 8, 3)), jnp.float32)
    affinity = jnp.zeros((1, 16, 8, 9)).at[..., 4].set(1.0)  # every pixel keeps its own cell
    pooled = tokens.pool_tokens(features, affinity, 8)
    cell_means = features.reshape(1, 2, 8, 1, 8, 3).mean(axis=(2, 4))
    np.testing.assert_allclose(pooled, cell_means, atol=1e-6)
    np.testing.assert_allclose(tokens.spixel_sizes(affinity, 8), np.ones((1, 2, 1)))
    nearest = jnp.repeat(jnp.repeat(pooled, 8, axis=1), 8, axis=2)
    np.testing.assert_allclose(tokens.unpool_tokens(pooled, affinity, 8), nearest, atol=1e-6)


def test_sine_positions_follow_the_detr_formula():
    height, width, features = 3, 5, 16
    half = features // 2
    positions = tokens.sine_positions(height, width, features)
    assert positions.shape == (height * width, features)

    expected = np.zeros((height, width, features))
    periods = 10000.0 ** (2 * (np.arange(half) // 2) / half)
    for i in range(height):
        for j in range(width):
            row = (i + 1) / (height + 1e-6) * 2 * np.pi
            col = (j + 1) / (width + 1e-6) * 2 * np.pi
            for d in range(half):
                wave = np.sin if d % 2 == 0 else np.cos
                expected[i, j, d] = wave(row / periods[d])  # rows first
                expected[i, j, half + d] = wave(col / periods[d])  # then columns
    np.testing.assert_allclose(positions, expected.reshape(height * width, features), atol=1e-5)


class _TorchPostNormLayer(torch.nn.Module):
    """Self-attention with positions on queries and keys, FFN; residual + LayerNorm after
    each (sequence-first, as torch's nn.MultiheadAttention)."""

    def __init__(self):
        super().__init__()
        self.self_attn = torch.nn.MultiheadAttention(WIDTH, HEADS, dropout=0.1)
        self.linear1 = torch.nn.Linear(WIDTH, HIDDEN)
        self.linear2 = torch.nn.Linear(HIDDEN, WIDTH)
        self.norm1 = torch.nn.LayerNorm(WIDTH)
        self.norm2 = torch.nn.LayerNorm(WIDTH)

    def forward(self, src, pos):  # src, pos: [L, B, E]
        attended = self.self_attn(src + pos, src + pos, src, need_weights=False)[0]
        src = self.norm1(src + attended)
        return self.norm2(src + self.linear2(F.relu(self.linear1(src))))


def _load_into_torch(layer: _TorchPostNormLayer, params) -> None:
    attn = params["self_attn"]
    as_torch = lambda name: np.asarray(attn[name]["kernel"]).reshape(WIDTH, WIDTH).T
    in_proj = np.concatenate([as_torch("query"), as_torch("key"), as_torch("value")])
    in_bias = np.concatenate(
        [np.asarray(attn[n]["bias"]).reshape(WIDTH) for n in ("query", "key", "value")]
    )
    state = {
        "self_attn.in_proj_weight": in_proj,
        "self_attn.in_proj_bias": in_bias,
        "self_attn.out_proj.weight": np.asarray(attn["out"]["kernel"]).reshape(WIDTH, WIDTH).T,
        "self_attn.out_proj.bias": np.asarray(attn["out"]["bias"]),
    }
    for name in ("linear1", "linear2"):
        state[f"{name}.weight"] = np.asarray(params[name]["kernel"]).T
        state[f"{name}.bias"] = np.asarray(params[name]["bias"])
    for name in ("norm1", "norm2"):
        state[f"{name}.weight"] = np.asarray(params[name]["scale"])
        state[f"{name}.bias"] = np.asarray(params[name]["bias"])
    layer.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})


def _randomized(params, seed):
    """Parameters with non-trivial LayerNorm and bias values, so every leaf matters."""
    rng = np.random.default_rng(seed)
    flat = flax.traverse_util.flatten_dict(params)
    for path, leaf in flat.items():
        if path[-1] in ("bias", "scale"):
            base = 1.0 if path[-1] == "scale" else 0.0
            flat[path] = jnp.asarray(base + rng.normal(0.0, 0.2, leaf.shape), jnp.float32)
    return flax.traverse_util.unflatten_dict(flat)


def test_encoder_layer_in_eval_matches_torch_post_norm_layer():
    rng = np.random.default_rng(1)
    batch, length = 2, 12
    src = rng.normal(0.0, 1.0, (batch, length, WIDTH)).astype(np.float32)
    pos = tokens.sine_positions(3, 4, WIDTH)  # [L, E]
    layer = tokens.EncoderLayer()
    params = layer.init(_key(0), src, pos, train=False)["params"]
    params = _randomized(params, 2)
    ours = layer.apply({"params": params}, src, pos, train=False)

    reference = _TorchPostNormLayer().eval()
    _load_into_torch(reference, params)
    with torch.no_grad():
        seq_first = torch.from_numpy(src).transpose(0, 1)
        pos_seq = torch.from_numpy(pos)[:, None, :].expand(-1, batch, -1)
        expected = reference(seq_first, pos_seq).transpose(0, 1).numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-5, rtol=0)


def test_token_encoder_names_shapes_and_init_follow_the_official_model():
    src = jnp.zeros((1, 4, WIDTH))
    pos = tokens.sine_positions(2, 2, WIDTH)
    params = tokens.TokenEncoder().init(_key(0), src, pos, train=False)["params"]
    assert sorted(params) == [f"layers_{i}" for i in range(6)]
    layer = params["layers_0"]
    assert sorted(layer) == ["linear1", "linear2", "norm1", "norm2", "self_attn"]
    assert layer["self_attn"]["query"]["kernel"].shape == (WIDTH, HEADS, WIDTH // HEADS)
    assert layer["self_attn"]["out"]["kernel"].shape == (HEADS, WIDTH // HEADS, WIDTH)
    count = sum(leaf.size for leaf in jax.tree_util.tree_leaves(layer))
    assert count == 49_984  # the official EncoderLayer's parameter count

    # Xavier-uniform bounds of the official init (in_proj as one [192, 64] matrix).
    qkv_bound, out_bound = np.sqrt(6 / (WIDTH + 3 * WIDTH)), np.sqrt(6 / (2 * WIDTH))
    for name in ("query", "key", "value"):
        kernel = np.abs(layer["self_attn"][name]["kernel"])
        assert kernel.max() <= qkv_bound and kernel.max() > 0.9 * qkv_bound
        assert not np.any(layer["self_attn"][name]["bias"])
    out_kernel = np.abs(layer["self_attn"]["out"]["kernel"])
    assert out_kernel.max() <= out_bound and out_kernel.max() > 0.9 * out_bound
    ffn_bound = np.sqrt(6 / (WIDTH + HIDDEN))
    assert np.abs(layer["linear1"]["kernel"]).max() <= ffn_bound
    assert np.abs(layer["linear1"]["bias"]).max() <= 1 / np.sqrt(WIDTH)
    assert np.abs(layer["linear2"]["bias"]).max() <= 1 / np.sqrt(HIDDEN)


def test_dropout_is_active_only_in_training():
    rng = np.random.default_rng(3)
    src = jnp.asarray(rng.normal(size=(2, 6, WIDTH)), jnp.float32)
    pos = jnp.asarray(rng.normal(size=(2, 6, WIDTH)), jnp.float32)  # batched positions
    encoder = tokens.TokenEncoder(num_layers=2)
    variables = encoder.init(_key(0), src, pos, train=False)
    apply = jax.jit(
        lambda key, train: encoder.apply(
            variables, src, pos, train=train, rngs={"dropout": _key(key)}
        ),
        static_argnums=(1,),
    )
    run = lambda train, key: apply(key, train)

    np.testing.assert_array_equal(run(False, 0), run(False, 1))
    np.testing.assert_array_equal(run(True, 5), run(True, 5))
    assert not np.allclose(run(True, 5), run(False, 0), atol=1e-3)
    assert not np.allclose(run(True, 5), run(True, 6), atol=1e-3)


def _blobs(rng, centres, per_blob, spread=0.05):
    labels = np.repeat(np.arange(len(centres)), per_blob)
    points = np.asarray(centres)[labels] + rng.normal(0.0, spread, (len(labels), len(centres[0])))
    order = rng.permutation(len(labels))
    return points[order].astype(np.float32), labels[order]


def _same_partition(found, truth) -> bool:
    pairs = set(zip(found.tolist(), truth.tolist()))
    return len(pairs) == len(set(found.tolist())) == len(set(truth.tolist()))


def _is_lloyd_fixed_point(points, found) -> bool:
    """Every point is nearest to the mean of its own cluster."""
    labels = np.unique(found)
    means = np.stack([points[found == label].mean(axis=0) for label in labels])
    nearest = labels[np.argmin(((points[:, None] - means[None]) ** 2).sum(-1), axis=1)]
    return bool(np.all(nearest == found))


def test_kmeans_recovers_well_separated_blobs():
    rng = np.random.default_rng(4)
    centres = [[0, 0, 0], [5, 0, 0], [0, 5, 0], [0, 0, 5]]
    first, first_truth = _blobs(rng, centres, 15)
    second, second_truth = _blobs(rng, centres, 15)
    points = jnp.asarray(np.stack([first, second]))  # [2, 60, 3]

    # The official initial centres are random points: two can fall in one blob, a local
    # minimum (two blobs share a centre) that Lloyd's iterations never leave. Key 2 starts
    # both batch elements with one centre per blob (about a quarter of the keys do).
    found = np.asarray(_kmeans(points, 4, _key(2)))
    assert found.dtype == np.int32 and found.shape == (2, 60)
    assert _same_partition(found[0], first_truth)
    assert _same_partition(found[1], second_truth)
    np.testing.assert_array_equal(found, _kmeans(points, 4, _key(2)))

    for seed in (0, 1, 3):  # other keys: maybe another partition, but a converged one
        found = np.asarray(_kmeans(points, 4, _key(seed)))
        assert found.min() >= 0 and found.max() < 4
        assert _is_lloyd_fixed_point(first, found[0])
        assert _is_lloyd_fixed_point(second, found[1])


def test_kmeans_with_any_key_splits_two_blobs():
    # With two well-separated blobs, Lloyd's iterations recover them from any start.
    rng = np.random.default_rng(5)
    first, first_truth = _blobs(rng, [[0, 0], [3, 3]], 20)
    second, second_truth = _blobs(rng, [[0, 3], [3, 0]], 20)
    points = jnp.asarray(np.stack([first, second]))
    for seed in range(5):
        found = np.asarray(_kmeans(points, 2, _key(seed)))
        assert _same_partition(found[0], first_truth)
        assert _same_partition(found[1], second_truth)


def test_kmeans_survives_empty_clusters():
    # Eight identical points and one other: at most two clusters can hold points, the other
    # centres restart from random points every iteration.
    points = jnp.concatenate([jnp.zeros((1, 8, 2)), jnp.ones((1, 1, 2))], axis=1)
    found = np.asarray(_kmeans(points, 4, _key(0)))
    assert found.min() >= 0 and found.max() < 4
    assert len(set(found[0, :8].tolist())) == 1 and found[0, 8] != found[0, 0]


def test_anchor_mask_picks_the_largest_superpixel_of_each_cluster():
    assignments = jnp.asarray([[0, 0, 1, 1, 1, 0, 0, 1]])  # cluster 2 is empty
    sizes = jnp.asarray([[1.0, 1.6, 0.5, 2.1, 0.9, 1.2, 0.3, 2.0]])
    mask = tokens.anchor_mask(assignments, sizes, 3)
    np.testing.assert_array_equal(mask, [[0, 1, 0, 1, 0, 0, 0, 0]])
    assert mask.dtype == jnp.float32 and float(mask.sum()) == 2  # non-empty clusters
    # The official sum over clusters: the empty cluster re-picks the largest superpixel.
    counts = tokens.anchor_mask(assignments, sizes, 3, binary=False)
    np.testing.assert_array_equal(counts, [[0, 1, 0, 2, 0, 0, 0, 0]])


def test_anchor_mask_matches_a_per_cluster_search():
    rng = np.random.default_rng(6)
    assignments = rng.integers(0, 8, (2, 64))
    sizes = rng.uniform(0.0, 3.0, (2, 64)).astype(np.float32)
    mask = np.asarray(tokens.anchor_mask(jnp.asarray(assignments), jnp.asarray(sizes), 8))
    for b in range(2):
        expected = np.zeros(64)
        for c in np.unique(assignments[b]):
            members = np.flatnonzero(assignments[b] == c)
            expected[members[np.argmax(sizes[b, members])]] = 1
        np.testing.assert_array_equal(mask[b], expected)
        assert mask[b].sum() == len(np.unique(assignments[b]))


def test_top_bins_is_the_most_likely_bin():
    logits = jnp.asarray(np.random.default_rng(7).normal(size=(2, 3, 313)), jnp.float32)
    bins = tokens.top_bins(logits)
    assert bins.dtype == jnp.int32 and bins.shape == (2, 3)
    probabilities = jax.nn.softmax(logits, axis=-1)
    np.testing.assert_array_equal(bins, np.argsort(-probabilities, axis=-1)[..., 0])
