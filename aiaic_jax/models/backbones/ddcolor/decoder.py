"""DDColor's two decoders (Kang et al., "DDColor", arXiv 2212.11613).

The pixel decoder upsamples the encoder's 1/32 features back to full resolution through three
U-Net blocks (pixel-shuffle upsampling, skip connections from the encoder) and a final x4
pixel shuffle. The colour decoder is a query-based transformer: learnable colour queries
attend, layer by layer, to the pixel decoder's 1/16, 1/8 and 1/4 features in turn, and each
query becomes a colour embedding whose dot product with the full-resolution features is one
colour map.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp

from aiaic_jax.models.backbones.layers import (
    SpectralNormConv,
    dense_dot_general,
    icnr,
    pixel_shuffle,
    relu,
    sine_position_encoding,
    subpixel_projection,
    to_subpixel_major,
    torch_default_bias,
    torch_default_kernel,
    use_rewrites,
)

# A function applied to a feature map at the guidance insertion point ([B, h, w, C] -> same).
FeatureHook = Callable[[jax.Array], jax.Array]


def _batch_norm(train: bool, name: str, bias: float = 0.0) -> nn.BatchNorm:
    # PyTorch BatchNorm2d defaults: momentum 0.1 (Flax 0.9), eps 1e-5. One difference: PyTorch
    # updates the running variance with the unbiased batch variance, Flax with the biased one
    # (a factor n / (n - 1), n = batch x pixels).
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        bias_init=nn.initializers.constant(bias),
        use_fast_variance=False,
        name=name,
    )


def _blur(x: jax.Array) -> jax.Array:
    """2x2 average over each pixel and its top-left neighbours, edges replicated.

    Removes the checkerboard pattern of pixel shuffle (arXiv 1806.02658); keeps the size.
    Computed as two separable halves with explicit edge copies (cheaper gradients than
    jnp.pad(mode="edge")).
    """
    rows = 0.5 * (x + jnp.concatenate([x[:, :1], x[:, :-1]], axis=1))
    return 0.5 * (rows + jnp.concatenate([rows[:, :, :1], rows[:, :, :-1]], axis=2))


class PixelShuffleUpsample(nn.Module):
    """1x1 spectral-norm conv (ICNR init) [-> BatchNorm] -> ReLU -> pixel shuffle -> blur."""

    features: int
    scale: int = 2
    batch_norm: bool = True  # a BatchNorm after the conv (and no conv bias)
    blur: bool = True
    kernels: str = "auto"  # see layers.use_rewrites (the projected output)
    # The projected output's CPU loop computes its features again in the backward pass instead
    # of keeping them (`layers.subpixel_projection`).
    remat: bool = False

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        *,
        train: bool,
        hook: FeatureHook | None = None,
        subpixel_output: bool = False,
        projection: jax.Array | None = None,
    ) -> jax.Array:
        """x: [B, h, w, Cin] -> [B, h * scale, w * scale, features].

        hook: applied to the output of the conv (and its BatchNorm), before the ReLU.
        subpixel_output: return the features before the shuffle and blur instead, channels in
        sub-pixel-major order, [B, h, w, scale**2 * features] (see `upsample_subpixel`); only
        without BatchNorm and hook.
        projection: [B, features, O]: return those sub-pixel features times each sample's
        matrix, [B, h, w, scale**2 * O] (`layers.subpixel_projection`); only without BatchNorm
        and hook.
        """
        channels = self.features * self.scale**2
        conv = SpectralNormConv(
            channels,
            kernel_size=1,
            use_bias=not self.batch_norm,
            kernel_init=icnr(self.scale),
            name="conv",
        )
        if self.batch_norm or hook is not None:
            if subpixel_output or projection is not None:
                raise ValueError("sub-pixel output needs an upsampling without BatchNorm or hook")
            x = conv(x, train=train)
            if self.batch_norm:
                x = _batch_norm(train, "bn")(x)
            if hook is not None:
                x = hook(x)
            x = pixel_shuffle(nn.relu(x), self.scale)
            return _blur(x) if self.blur else x
        # Nothing per-channel between conv and shuffle: compute the channels sub-pixel first,
        # which makes the shuffle a cheap transpose of whole channel vectors.
        order = partial(to_subpixel_major, scale=self.scale)
        if projection is not None:
            kernel, sigma, bias = conv.weights(x.shape[-1], train=train)
            kernel = order(kernel) / sigma  # `conv`'s own order of operations
            return subpixel_projection(
                x,
                kernel[0, 0],
                order(bias),
                projection,
                kernels=self.kernels,
                recompute=self.remat,
            )
        x = relu(conv(x, train=train, output_order=order))
        return x if subpixel_output else upsample_subpixel(x, self.scale, self.blur)


def upsample_subpixel(x: jax.Array, scale: int, blur: bool = True) -> jax.Array:
    """Sub-pixel features [B, h, w, scale**2 * C], channels (i, j, c) for the pixel
    (scale * y + i, scale * x + j), to the image [B, h * scale, w * scale, C], blurred as in
    `PixelShuffleUpsample`."""
    x = pixel_shuffle(x, scale, subpixel_major=True)
    return _blur(x) if blur else x


class UnetBlock(nn.Module):
    """Upsample x2, concatenate with the BatchNormed skip features, ReLU, 3x3 conv, ReLU, BN."""

    features: int
    blur: bool = True
    kernels: str = "auto"  # see layers.use_rewrites

    @nn.compact
    def __call__(
        self, x: jax.Array, skip: jax.Array, train: bool, hook: FeatureHook | None = None
    ) -> jax.Array:
        """x: [B, h, w, Cin]; skip: [B, 2h, 2w, Cskip] -> [B, 2h, 2w, features]."""
        up = PixelShuffleUpsample(self.features, 2, blur=self.blur, name="upsample")(
            x, train=train, hook=hook
        )
        skip = _batch_norm(train, "skip_bn", bias=1e-3)(skip)
        x = nn.relu(jnp.concatenate([up, skip], axis=-1))
        x = SpectralNormConv(
            self.features,
            kernel_size=3,
            padding=1,
            use_bias=False,
            kernels=self.kernels,
            name="conv",
        )(x, train=train)
        return _batch_norm(train, "conv_bn")(nn.relu(x))


class PixelDecoder(nn.Module):
    """Three U-Net blocks (1/32 -> 1/16 -> 1/8 -> 1/4) and a x4 pixel shuffle to full size.

    Module names: `block0`, `block1`, `block2`, `last_upsample`.
    """

    widths: Sequence[int] = (512, 512, 256)
    blur: bool = True
    kernels: str = "auto"
    # Recompute each U-Net block, and the last upsampling's features, in the backward pass.
    remat: bool = False

    @nn.compact
    def __call__(
        self,
        encoder_features: Sequence[jax.Array],
        *,
        train: bool,
        project: Callable[[list[jax.Array]], jax.Array],
        hook: FeatureHook | None = None,
    ) -> tuple[list[jax.Array], jax.Array]:
        """encoder_features: [f0 (1/4), f1 (1/8), f2 (1/16), f3 (1/32)], NHWC.

        project: from the three maps, the matrix [B, widths[2], O] that is applied to every
        full-size feature vector (DDColor's colour decoder and refine layer).
        hook: applied after the decoder's first convolutional layer (see DDColor).
        Returns the 1/16, 1/8 and 1/4 maps (widths[0..2] channels) and the full-size features
        times `project`'s matrix in sub-pixel form, [B, H/4, W/4, 16 * O];
        `upsample_subpixel(x, 4, blur)` turns them into the [B, H, W, O] image. Everything
        DDColor does with the full-size features is per pixel and linear (see DDColor), so the
        [B, H, W, widths[2]] features themselves are never formed (`last_upsample` alone with
        `subpixel_output` gives them in sub-pixel form).
        """
        x = encoder_features[-1]
        skips = encoder_features[-2::-1]  # 1/16, 1/8, 1/4
        multi_scale = []
        for index, (width, skip) in enumerate(zip(self.widths, skips)):
            # The guided block calls DSG, a module of the parent: it is never recomputed.
            block_hook = hook if index == 0 else None
            remat = self.remat and block_hook is None
            block = _remat(UnetBlock, static_argnums=(3,)) if remat else UnetBlock
            x = block(width, blur=self.blur, kernels=self.kernels, name=f"block{index}")(
                x, skip, train, block_hook
            )
            multi_scale.append(x)
        last_upsample = PixelShuffleUpsample(
            self.widths[-1],
            4,
            batch_norm=False,
            blur=self.blur,
            kernels=self.kernels,
            remat=self.remat,
            name="last_upsample",
        )
        return multi_scale, last_upsample(x, train=train, projection=project(multi_scale))


# From this many keys up, the CPU rewrite of the attention loops over the heads
# (`attention_by_head`); below, all heads at once (`dot_product_attention`). bench/kernels.py,
# DDColor-T's colour decoder at 256 px (`--only attention "attn by head"`, 2026-12-06), forward
# and gradient: with the 4096 keys of the 1/4 scale the loop is faster at batch 1 and 4 (18.2
# against 42.6 ms, 95.3 against 140.5 ms), with the 1024 of the 1/8 scale by less (4.9 against
# 6.4 ms, 19.2 against 21.8 ms); with 256 keys all heads at once are faster (1.2 against 1.4
# ms, 4.4 against 6.7 ms).
ATTENTION_LOOP_MIN_KEYS = 1024


def cpu_attention(query: jax.Array, key: jax.Array, value: jax.Array) -> jax.Array:
    """The CPU rewrite of `jax.nn.dot_product_attention` (no mask, no dropout; see
    `layers.use_rewrites`): `attention_by_head` for many keys, else `dot_product_attention`.
    query [B, Q, H, d], key/value [B, K, H, d]."""
    if key.shape[1] >= ATTENTION_LOOP_MIN_KEYS:
        return attention_by_head(query, key, value)
    return dot_product_attention(query, key, value)


@jax.custom_vjp
def dot_product_attention(query: jax.Array, key: jax.Array, value: jax.Array) -> jax.Array:
    """softmax(q k^T / sqrt(d)) v per head; query [B, Q, H, d], key/value [B, K, H, d].

    The gradient is written out (as in FlashAttention) so that the softmax backward needs a
    reduction over d, not over the keys: XLA:CPU is slow at the latter for the 4096 keys of the
    1/4 scale.
    """
    return _attention_forward(query, key, value)[0]


def _attention_forward(query, key, value):
    scale = 1.0 / math.sqrt(query.shape[-1])  # a Python float keeps the input dtype
    weights = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", query * scale, key), axis=-1)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, value)
    return out, (query, key, value, weights, out)


def _attention_backward(residuals, grad_out):
    query, key, value, weights, out = residuals
    scale = 1.0 / math.sqrt(query.shape[-1])  # a Python float keeps the input dtype
    grad_value = jnp.einsum("bhqk,bqhd->bkhd", weights, grad_out)
    grad_weights = jnp.einsum("bqhd,bkhd->bhqk", grad_out, value)
    # sum_k grad_weights * weights = grad_out . out, a reduction over d only.
    row_dot = jnp.einsum("bqhd,bqhd->bhq", grad_out, out)
    grad_logits = weights * (grad_weights - row_dot[..., None]) * scale
    grad_query = jnp.einsum("bhqk,bkhd->bqhd", grad_logits, key)
    grad_key = jnp.einsum("bhqk,bqhd->bkhd", grad_logits, query)
    return grad_query, grad_key, grad_value


dot_product_attention.defvjp(_attention_forward, _attention_backward)


def _heads_first(x: jax.Array) -> jax.Array:
    return jnp.transpose(x, (2, 0, 1, 3))  # [B, N, H, d] -> [H, B, N, d]


def _heads_back(x: jax.Array) -> jax.Array:
    return jnp.transpose(x, (1, 2, 0, 3))  # [H, B, N, d] -> [B, N, H, d]


@jax.custom_vjp
def attention_by_head(query: jax.Array, key: jax.Array, value: jax.Array) -> jax.Array:
    """`dot_product_attention` as a loop over the heads, forward and gradient: one head's
    attention weights ([B, Q, K]) are computed, normalised and used while they are in the cache,
    instead of every pass going over all of them."""
    return _attention_by_head_forward(query, key, value)[0]


def _attention_by_head_forward(query, key, value):
    scale = 1.0 / math.sqrt(query.shape[-1])  # a Python float keeps the input dtype
    queries, keys, values = _heads_first(query * scale), _heads_first(key), _heads_first(value)

    def one(_, head):
        q, k, v = head
        weights = jax.nn.softmax(jnp.einsum("bqd,bkd->bqk", q, k), axis=-1)
        return None, (jnp.einsum("bqk,bkd->bqd", weights, v), weights)

    _, (out, weights) = jax.lax.scan(one, None, (queries, keys, values))
    return _heads_back(out), (queries, keys, values, weights, out)


def _attention_by_head_backward(residuals, grad_out):
    queries, keys, values, weights, out = residuals  # queries scaled; weights [H, B, Q, K]
    scale = 1.0 / math.sqrt(queries.shape[-1])

    def one(_, head):
        q_t, k, v, w, o, g, g_t = head
        # The key and value gradients come out transposed, [B, d, K]: written as [B, K, d],
        # products of the [Q, K] operand contracted over its rows, XLA:CPU ran them 2-3 times
        # slower (bench/step_profile.py, DDColor-T at batch 4: 21-25 against 6-11 ms per
        # product and step, 4096 keys). One transpose per tensor after the loop puts them
        # back, where [B, K, d] needed one too. Their small operand comes transposed, [B, d, Q],
        # so that each product contracts its first operand's last axis, the form XLA:CPU gives
        # to YNNPACK.
        grad_value_t = jnp.einsum("bdq,bqk->bdk", g_t, w)
        # sum_k grad_weights * weights = g . out, a reduction over d only.
        grad_weights = jnp.einsum("bqd,bkd->bqk", g, v)
        grad_logits = w * (grad_weights - jnp.einsum("bqd,bqd->bq", g, o)[..., None])
        grad_query = jnp.einsum("bqk,bkd->bqd", grad_logits, k) * scale
        grad_key_t = jnp.einsum("bdq,bqk->bdk", q_t, grad_logits)  # q holds the scale
        return None, (grad_query, grad_key_t, grad_value_t)

    grads = _heads_first(grad_out)
    # Transposed once for all heads; the barrier keeps XLA from folding the transposes back
    # into the products.
    queries_t, grads_t = jax.lax.optimization_barrier(
        (jnp.swapaxes(queries, -1, -2), jnp.swapaxes(grads, -1, -2))
    )
    head_inputs = (queries_t, keys, values, weights, out, grads, grads_t)
    _, (grad_query, grad_key_t, grad_value_t) = jax.lax.scan(one, None, head_inputs)
    keys_back = partial(jnp.transpose, axes=(1, 3, 0, 2))  # [H, B, d, K] -> [B, K, H, d]
    return _heads_back(grad_query), keys_back(grad_key_t), keys_back(grad_value_t)


attention_by_head.defvjp(_attention_by_head_forward, _attention_by_head_backward)


class MultiHeadAttention(nn.Module):
    """PyTorch's nn.MultiheadAttention (no mask, no dropout) on batch-major inputs.

    Parameters as Flax's MultiHeadDotProductAttention lays them out: `query`, `key`, `value`
    kernels [E, heads, head_dim] and biases [heads, head_dim]; `out` kernel
    [heads, head_dim, E]. Initialised as DDColor does: Xavier-uniform over PyTorch's stacked
    [3E, E] q/k/v projection (scale 0.5 on each [E, E] part) and over the output projection;
    zero biases.
    """

    num_heads: int
    kernels: str = "auto"  # see layers.use_rewrites

    @nn.compact
    def __call__(self, query: jax.Array, key: jax.Array, value: jax.Array) -> jax.Array:
        """query [B, Q, E], key/value [B, K, E] -> [B, Q, E]."""
        dim = query.shape[-1]
        head_dim = dim // self.num_heads

        def project(x, name):
            return nn.DenseGeneral(
                (self.num_heads, head_dim),
                kernel_init=nn.initializers.variance_scaling(0.5, "fan_avg", "uniform"),
                bias_init=nn.initializers.zeros,
                dot_general=dense_dot_general(self.kernels),
                name=name,
            )(x)

        # Native: XLA's attention, or cuDNN's fused kernel on GPU where it applies.
        attention = cpu_attention if use_rewrites(self.kernels) else _native_attention
        attended = attention(project(query, "query"), project(key, "key"), project(value, "value"))
        return nn.DenseGeneral(
            dim,
            axis=(-2, -1),
            kernel_init=nn.initializers.xavier_uniform(),
            bias_init=nn.initializers.zeros,
            dot_general=dense_dot_general(self.kernels),
            name="out",
        )(attended)


def _native_attention(query: jax.Array, key: jax.Array, value: jax.Array) -> jax.Array:
    return jax.nn.dot_product_attention(query, key, value)


def _remat(module: type[nn.Module], static_argnums: tuple[int, ...] = ()) -> type[nn.Module]:
    """The module recomputed in the backward pass instead of keeping its activations (the same
    parameter names; argument numbers count `self`)."""
    return nn.remat(module, static_argnums=static_argnums)


def _layer_norm(name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, name=name)


class ColorDecoderLayer(nn.Module):
    """Cross-attention to one scale, self-attention among queries, FFN; each with a residual
    and a LayerNorm after it (post-norm). Positions are added to queries and keys only."""

    num_heads: int = 8
    ffn_dim: int = 2048
    kernels: str = "auto"

    @nn.compact
    def __call__(
        self, queries: jax.Array, query_pos: jax.Array, memory: jax.Array, memory_pos: jax.Array
    ) -> jax.Array:
        """queries, query_pos: [B, Q, D]; memory, memory_pos: [B, N, D] -> [B, Q, D]."""
        dim = queries.shape[-1]
        attended = MultiHeadAttention(self.num_heads, self.kernels, name="cross_attention")(
            queries + query_pos, memory + memory_pos, memory
        )
        queries = _layer_norm("cross_norm")(queries + attended)
        with_pos = queries + query_pos
        attended = MultiHeadAttention(self.num_heads, self.kernels, name="self_attention")(
            with_pos, with_pos, queries
        )
        queries = _layer_norm("self_norm")(queries + attended)
        hidden = nn.Dense(
            self.ffn_dim,
            kernel_init=nn.initializers.xavier_uniform(),
            bias_init=torch_default_bias(dim),
            dot_general=dense_dot_general(self.kernels),
            name="ffn_linear1",
        )(queries)
        out = nn.Dense(
            dim,
            kernel_init=nn.initializers.xavier_uniform(),
            bias_init=torch_default_bias(self.ffn_dim),
            dot_general=dense_dot_general(self.kernels),
            name="ffn_linear2",
        )(nn.relu(hidden))
        return _layer_norm("ffn_norm")(queries + out)


class MultiScaleColorDecoder(nn.Module):
    """Colour queries refined against multi-scale features, then embedded for the colour maps.

    Layer i attends to scale i mod num_scales. Module names: `input_proj{s}`, `layer{i}`,
    `decoder_norm`, `color_embed_{0,1,2}`; parameters `query_feat`, `query_embed`,
    `level_embed`.
    """

    num_queries: int = 100
    num_layers: int = 9
    hidden_dim: int = 256
    num_heads: int = 8
    ffn_dim: int = 2048
    embed_dim: int = 256  # channels of the full-size image features
    kernels: str = "auto"
    remat: bool = False  # recompute each layer in the backward pass

    @nn.compact
    def __call__(self, multi_scale: Sequence[jax.Array]) -> jax.Array:
        """multi_scale: num_scales maps [B, h_s, w_s, C_s].

        Returns the colour embeddings [B, num_queries, embed_dim]; `color_maps` turns them and
        the full-size image features into one colour map per query.
        """
        num_scales = len(multi_scale)
        batch = multi_scale[0].shape[0]
        level_embed = self.param(
            "level_embed", nn.initializers.normal(1.0), (num_scales, self.hidden_dim)
        )
        memories, positions = [], []
        for scale, features in enumerate(multi_scale):
            _, height, width, _ = features.shape
            projected = nn.Dense(  # a 1x1 conv
                self.hidden_dim,
                # PyTorch kaiming_uniform_(a=1): gain 1, fan_in.
                kernel_init=nn.initializers.variance_scaling(1.0, "fan_in", "uniform"),
                dot_general=dense_dot_general(self.kernels),
                name=f"input_proj{scale}",
            )(features)
            memories.append(projected.reshape(batch, height * width, -1) + level_embed[scale])
            positions.append(jnp.asarray(sine_position_encoding(height, width, self.hidden_dim)))

        query_feat = self.param(
            "query_feat", nn.initializers.normal(1.0), (self.num_queries, self.hidden_dim)
        )
        query_embed = self.param(
            "query_embed", nn.initializers.normal(1.0), (self.num_queries, self.hidden_dim)
        )
        queries = jnp.broadcast_to(query_feat, (batch, *query_feat.shape))
        query_pos = jnp.broadcast_to(query_embed, (batch, *query_embed.shape))
        layer = _remat(ColorDecoderLayer) if self.remat else ColorDecoderLayer
        for index in range(self.num_layers):
            scale = index % num_scales
            queries = layer(self.num_heads, self.ffn_dim, self.kernels, name=f"layer{index}")(
                queries, query_pos, memories[scale], positions[scale][None].astype(queries.dtype)
            )
        queries = _layer_norm("decoder_norm")(queries)

        # Three-layer MLP from each query to its colour embedding (PyTorch nn.Linear init).
        sizes = (self.hidden_dim, self.hidden_dim, self.embed_dim)
        for index, size in enumerate(sizes):
            queries = nn.Dense(
                size,
                kernel_init=torch_default_kernel,
                bias_init=torch_default_bias(self.hidden_dim),
                name=f"color_embed_{index}",
            )(queries)
            if index < len(sizes) - 1:
                queries = nn.relu(queries)
        return queries


def color_maps(color_embeddings: jax.Array, image_features: jax.Array) -> jax.Array:
    """One colour map per query: [B, Q, E] and [B, H, W, E] -> [B, H, W, Q] (dot products)."""
    return jnp.einsum("bqc,bhwc->bhwq", color_embeddings, image_features)
