"""DisColor's superpixel tokens (Xia et al., "Disentangled Image Colorization via Global
Anchors", SIGGRAPH Asia 2022): pooling pixels into tokens through SpixelNet's affinities and
back, the token transformer, and the anchor selection (k-means over tokens, one anchor per
cluster).

The token grid is the image's grid of cell x cell squares (cell = 16 in DisColor). SpixelNet
gives every pixel a soft assignment `affinity` [B, H, W, 9] to the 9 cells around its own
(itself included), in the order of `NEIGHBOURS` (row-major over the 3 x 3 neighbourhood:
top-left, top, top-right, left, centre, right, bottom-left, bottom, bottom-right). A token is
the affinity-weighted mean of the pixels that point at its cell; a pixel is the
affinity-weighted sum of the tokens it points at. Neighbours outside the grid are zeros: their
weight is lost, not renormalised (as in the official code).

Tokens are flattened row-major, [B, h, w, C] -> [B, h * w, C], everywhere.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from aiaic_jax.models.backbones.layers import sine_position_encoding, torch_default_bias

# (row, column) offset of the cell each affinity channel points at, in channel order.
NEIGHBOURS: tuple[tuple[int, int], ...] = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
# Added to the pooled affinity mass before dividing (official poolfeat).
POOL_EPS = 1e-8


def _check_grid(height: int, width: int, cell: int) -> None:
    if height % cell or width % cell:
        raise ValueError(f"image size {height}x{width} is not a multiple of the cell size {cell}")


def _cells(x: jax.Array, cell: int) -> jax.Array:
    """[B, H, W, ...] -> [B, h, cell, w, cell, ...]: pixels grouped by their cell."""
    batch, height, width, *rest = x.shape
    _check_grid(height, width, cell)
    return x.reshape(batch, height // cell, cell, width // cell, cell, *rest)


def _shift(grid: jax.Array, dy: int, dx: int) -> jax.Array:
    """out[:, i, j] = grid[:, i + dy, j + dx], zero outside the grid. grid: [B, h, w, ...]."""
    _, height, width, *rest = grid.shape
    padded = jnp.pad(grid, ((0, 0), (1, 1), (1, 1)) + ((0, 0),) * len(rest))
    return padded[:, 1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]


def _send_to_neighbours(per_direction: jax.Array) -> jax.Array:
    """Sums, at each cell, what the cells around it send to it.

    per_direction: [B, h, w, 9, ...], the quantity each cell sends in each direction k of
    `NEIGHBOURS`. Cell (i, j) sending in direction (dy, dx) reaches cell (i + dy, j + dx), so
    cell (i, j) receives direction k from cell (i - dy, j - dx). Returns [B, h, w, ...].
    """
    received = [
        _shift(per_direction[:, :, :, k], -dy, -dx) for k, (dy, dx) in enumerate(NEIGHBOURS)
    ]
    return sum(received[1:], received[0])


def _pooled_affinity(affinity: jax.Array, cell: int) -> jax.Array:
    """Mean affinity of each cell's pixels towards each direction: [B, h, w, 9]."""
    return _cells(affinity, cell).mean(axis=(2, 4))


def pool_tokens(features: jax.Array, affinity: jax.Array, cell: int) -> jax.Array:
    """Superpixel pooling (official `basic.poolfeat`): pixels -> tokens.

    features: [B, H, W, C]; affinity: [B, H, W, 9], each pixel's soft assignment to the 9 cells
    around its own (order of `NEIGHBOURS`, rows summing to 1); H, W multiples of `cell`.
    Returns tokens [B, H / cell, W / cell, C]: token (i, j) is the mean of the features of the
    pixels of its 3 x 3 cell neighbourhood, each weighted by its affinity to cell (i, j),
    i.e. sum_k shift_k(cellmean(features * a_k)) / (sum_k shift_k(cellmean(a_k)) + 1e-8).
    """
    affinity = affinity.astype(features.dtype)  # pooled in the features' dtype
    # [B, h, w, 9, C]: cell means of features * a_k, as one contraction over each cell's pixels.
    weighted = jnp.einsum(
        "bipjqc,bipjqk->bijkc",
        _cells(features, cell),
        _cells(affinity, cell),
        precision=jax.lax.Precision.HIGHEST,
    ) / (cell * cell)
    feature_sum = _send_to_neighbours(weighted)  # [B, h, w, C]
    mass = _send_to_neighbours(_pooled_affinity(affinity, cell))  # [B, h, w]
    return feature_sum / (mass[..., None] + POOL_EPS)


def unpool_tokens(tokens: jax.Array, affinity: jax.Array, cell: int) -> jax.Array:
    """Superpixel unpooling (official `basic.upfeat`): tokens -> pixels.

    tokens: [B, h, w, C]; affinity: [B, h * cell, w * cell, 9] as in `pool_tokens`.
    Returns [B, h * cell, w * cell, C]: each pixel is sum_k a_k * (the token of the k-th cell
    around the pixel's cell), with zero tokens outside the grid.
    """
    batch, height, width, channels = tokens.shape
    affinity = affinity.astype(tokens.dtype)
    neighbours = jnp.stack([_shift(tokens, dy, dx) for dy, dx in NEIGHBOURS], axis=3)
    pixels = jnp.einsum(
        "bijkc,bipjqk->bipjqc",
        neighbours,  # [B, h, w, 9, C]
        _cells(affinity, cell),  # [B, h, cell, w, cell, 9]
        precision=jax.lax.Precision.HIGHEST,
    )
    return pixels.reshape(batch, height * cell, width * cell, channels)


def spixel_sizes(affinity: jax.Array, cell: int) -> jax.Array:
    """Superpixel sizes (official `basic.get_spixel_size`).

    affinity: [B, H, W, 9] as in `pool_tokens`. Each pixel is assigned hard to its most likely
    cell (every direction that reaches the maximum counts, as the official `==` test does).
    Returns [B, H / cell, W / cell]: the number of pixels assigned to each cell, in units of a
    cell's area (cell**2 pixels), so 1 for a square superpixel; no gradient.
    """
    hard = (affinity == affinity.max(axis=-1, keepdims=True)).astype(affinity.dtype)
    return _send_to_neighbours(_pooled_affinity(hard, cell))


def sine_positions(height: int, width: int, features: int) -> np.ndarray:
    """DETR's normalised sine encoding of the token grid (official `PositionEmbeddingSine`
    with normalize=True, temperature 1e4, scale 2 pi, eps 1e-6, features / 2 per axis).

    Returns float32 [height * width, features], tokens row-major. Channels [0, features / 2)
    encode the row and [features / 2, features) the column; in each half, channel d is
    sin(p / t_d) for even d and cos(p / t_d) for odd d, with t_d = 1e4^(2 floor(d / 2) /
    (features / 2)) and p = (1-based index) / (count + 1e-6) * 2 pi, in radians. The same
    encoding as DDColor's, hence shared.
    """
    if features % 4:
        raise ValueError(f"sine positions need a multiple of 4 features, got {features}")
    return sine_position_encoding(height, width, features)


def _layer_norm(name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, name=name)


class EncoderLayer(nn.Module):
    """A post-norm transformer encoder layer (official `transformer2d.EncoderLayer`):

        x = norm1(x + dropout(self_attn(q = k = x + pos, v = x)))
        x = norm2(x + dropout(linear2(dropout(relu(linear1(x))))))

    The attention weights get dropout too (torch `nn.MultiheadAttention(dropout=...)`), drawn
    per batch element and head. Init as the official model's `_reset_parameters`:
    Xavier-uniform on every matrix (the q/k/v projections as torch's stacked [3 width, width]
    one), zero attention biases, PyTorch-default Linear biases.
    """

    width: int = 64
    heads: int = 8
    hidden: int = 256  # FFN width
    dropout: float = 0.1

    @nn.compact
    def __call__(self, tokens: jax.Array, positions: jax.Array, *, train: bool) -> jax.Array:
        """tokens: [B, L, width]; positions: [L, width] or [B, L, width] -> [B, L, width].

        train: dropout on, drawing from the 'dropout' rng stream.
        """
        deterministic = not train
        with_positions = tokens + positions
        attended = nn.MultiHeadDotProductAttention(
            num_heads=self.heads,
            qkv_features=self.width,
            out_features=self.width,
            dropout_rate=self.dropout,
            broadcast_dropout=False,
            # DenseGeneral initialises its kernel as the flat [width, width] matrix; Xavier on
            # torch's stacked [3 width, width] in_proj is that with variance scale 1/2.
            kernel_init=nn.initializers.variance_scaling(0.5, "fan_avg", "uniform"),
            out_kernel_init=nn.initializers.xavier_uniform(),
            bias_init=nn.initializers.zeros,
            name="self_attn",
        )(with_positions, with_positions, tokens, deterministic=deterministic)
        tokens = _layer_norm("norm1")(
            tokens + nn.Dropout(self.dropout)(attended, deterministic=deterministic)
        )
        hidden = nn.Dense(
            self.hidden,
            kernel_init=nn.initializers.xavier_uniform(),
            bias_init=torch_default_bias(self.width),
            name="linear1",
        )(tokens)
        hidden = nn.Dropout(self.dropout)(nn.relu(hidden), deterministic=deterministic)
        update = nn.Dense(
            self.width,
            kernel_init=nn.initializers.xavier_uniform(),
            bias_init=torch_default_bias(self.hidden),
            name="linear2",
        )(hidden)
        return _layer_norm("norm2")(
            tokens + nn.Dropout(self.dropout)(update, deterministic=deterministic)
        )


class TokenEncoder(nn.Module):
    """A stack of `EncoderLayer`s (`layers_0` ... `layers_{n-1}`) with the positions added to
    queries and keys at every layer (official `TransformerEncoder`, use_dense_pos=True)."""

    num_layers: int = 6
    width: int = 64
    heads: int = 8
    hidden: int = 256
    dropout: float = 0.1

    @nn.compact
    def __call__(self, tokens: jax.Array, positions: jax.Array, *, train: bool) -> jax.Array:
        """tokens: [B, L, width]; positions: [L, width] or [B, L, width] -> [B, L, width]."""
        for index in range(self.num_layers):
            tokens = EncoderLayer(
                self.width, self.heads, self.hidden, self.dropout, name=f"layers_{index}"
            )(tokens, positions, train=train)
        return tokens


KMEANS_TOLERANCE = 1e-4  # official: stop once (sum of the centres' shifts)^2 falls below it


def _kmeans_one(points: jax.Array, key: jax.Array, num_clusters: int, iterations: int):
    """Lloyd's k-means on points [L, D] -> assignments [L] int32."""
    length = points.shape[0]
    init_key, reseed_key = jax.random.split(key)
    centres = points[jax.random.choice(init_key, length, (num_clusters,), replace=False)]

    def step(index, carry):
        centres, previous, done = carry
        # Squared Euclidean distances [L, K], as differences (the official way), not expanded.
        distances = jnp.sum((points[:, None, :] - centres[None, :, :]) ** 2, axis=-1)
        assignments = jnp.argmin(distances, axis=1).astype(jnp.int32)
        members = jax.nn.one_hot(assignments, num_clusters, dtype=points.dtype)  # [L, K]
        counts = members.sum(axis=0)  # [K]
        sums = jnp.einsum("lk,ld->kd", members, points, precision=jax.lax.Precision.HIGHEST)
        means = sums / jnp.maximum(counts, 1.0)[:, None]
        # An empty cluster restarts from a random point (official; one draw per cluster and
        # iteration, used only where the cluster is empty).
        restarts = points[
            jax.random.randint(jax.random.fold_in(reseed_key, index), (num_clusters,), 0, length)
        ]
        moved = jnp.where(counts[:, None] > 0, means, restarts)
        shift = jnp.sum(jnp.sqrt(jnp.sum((moved - centres) ** 2, axis=-1)))
        # Once converged, every later iteration keeps the state (the official loop breaks).
        return (
            jnp.where(done, centres, moved),
            jnp.where(done, previous, assignments),
            done | (shift**2 < KMEANS_TOLERANCE),
        )

    initial = (centres, jnp.zeros((length,), jnp.int32), jnp.zeros((), bool))
    _, assignments, _ = jax.lax.fori_loop(0, iterations, step, initial)
    return assignments


def kmeans(points: jax.Array, num_clusters: int, key: jax.Array, iterations: int = 20) -> jax.Array:
    """Batched k-means (official `clusterkit.batch_kmeans_pytorch`, Euclidean), jittable.

    points: [B, L, D] (L >= num_clusters); key: one PRNG key (each batch element gets its own
    split) or a key per batch element [B]. Centres start at num_clusters distinct random
    points; each iteration assigns every point to its nearest centre (squared Euclidean
    distance, ties to the lower index) and moves each centre to the mean of its points; an
    empty cluster's centre jumps to a random point. It stops after `iterations`, or earlier
    once the summed shift of the centres, squared, is below 1e-4 (as the official; here the
    remaining iterations of the fixed-length loop keep the state). Returns int32 [B, L], the
    assignments of the last iteration run (made before its centre update, as the official
    code returns them). Random numbers come from `key`, not NumPy's and torch's global state.
    """
    keys = key if key.ndim == 1 else jax.random.split(key, points.shape[0])
    cluster = lambda p, k: _kmeans_one(p, k, num_clusters, iterations)
    return jax.vmap(cluster)(points, keys)


def anchor_mask(
    assignments: jax.Array, sizes: jax.Array, num_clusters: int, *, binary: bool = True
) -> jax.Array:
    """Anchor tokens (official `AnchorAnalysis`, clustering mode): per cluster, its largest
    superpixel.

    assignments: int [B, L] cluster of each token; sizes: [B, L] superpixel sizes
    (`spixel_sizes`, in cell areas, below 100). For each cluster c the anchor is the argmax
    over tokens of (assignment == c) + 0.01 * size, the first on ties, so an empty cluster
    picks the largest superpixel of the image, which some cluster has already picked.
    Returns float32 [B, L]: binary=True, 1 at every anchor (the union; the mask sums to the
    number of non-empty clusters); binary=False, the number of clusters that picked each token
    (the official sum over clusters, which sums to num_clusters, with values above 1 where an
    empty cluster duplicated a pick).
    """
    members = jax.nn.one_hot(assignments, num_clusters, dtype=jnp.float32)  # [B, L, K]
    scores = members + 0.01 * sizes.astype(jnp.float32)[..., None]
    picks = jnp.argmax(scores, axis=1)  # [B, K]
    counts = jax.nn.one_hot(picks, assignments.shape[1], dtype=jnp.float32).sum(axis=1)
    return jnp.minimum(counts, 1.0) if binary else counts


def top_bins(logits: jax.Array) -> jax.Array:
    """The most likely colour bin: logits [..., 313] -> int32 [...].

    The official anchor colour at T=0 is the top-1 bin of softmax(logits), decoded to its ab
    centre and encoded again, which gives back the same bin.
    """
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
