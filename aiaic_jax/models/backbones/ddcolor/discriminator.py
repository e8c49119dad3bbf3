"""DDColor's adversarial critic: the DynamicUNet discriminator, in Flax (NHWC).

DDColor (piddnad/DDColor, `DynamicUNetDiscriminator` with `nf=64`, `n_blocks=3` in its training
config) judges RGB images in [0, 1]: the ground truth, and the generator's ab put back together
with the input L and converted Lab -> RGB. The images go in without any mean/std normalisation.

Structure, for width w and three blocks (every conv spectral-normalised, with bias unless said,
ReLU after every conv but the last, no batch norm):

    stem    conv 4x4 / 2, 3 -> w
    block i conv 3x3 / 1, c -> c;  conv 4x4 / 2, c -> 2c   (c = w, 2w, 4w)
            the first block's downsampling conv is followed by self-attention (SAGAN)
    head    conv 3x3 / 1, 8w -> 8w;  conv 4x4 / 1, no padding, no bias, 8w -> 1

The output is a grid of patch logits, flattened per image: [B, 1] at 64x64, [B, 169] at
256x256. With w = 64 there are 5,919,617 trainable parameters, as in the official model.

Initialisation mirrors the official one: kernels He-normal (fan-in, gain sqrt(2), untruncated),
biases zero, the attention's residual gate gamma zero.

Spectral norm is the generator's (`backbones/layers.SpectralNormConv`, torch's
`spectral_norm`): the power-iteration vectors `u` and `v` live in the `batch_stats` collection,
never in `params`. With `update_stats=True` each call does one power iteration and stores the
new vectors, as the official model does on every forward in train mode (three times per training
iteration there: the generator's pass, then the real and the fake pass of the discriminator's
update). With `update_stats=False` the stored vectors are used as they are, as in PyTorch's eval
mode.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from aiaic_jax.models.backbones.layers import SpectralNormConv


def logits_side(size: int, num_blocks: int = 3) -> int:
    """Side of the discriminator's logit grid for an input side of `size` pixels.

    Each 4x4 / 2 conv with padding 1 maps n to n // 2; the final 4x4 conv without padding
    removes 3. Returns a value < 1 when the input is too small to be judged.
    """
    for _ in range(num_blocks + 1):
        size //= 2
    return size - 3


def _spectral_conv(
    features: int,
    kernel_size: int,
    name: str,
    *,
    strides: int = 1,
    padding: int = 1,
    bias: bool = True,
) -> SpectralNormConv:
    """A spectral-normalised conv as the official model builds it (He-normal raw kernel, zero
    bias, padding 1 unless said)."""
    return SpectralNormConv(
        features, kernel_size, padding=padding, use_bias=bias, strides=strides, name=name
    )


class SelfAttention(nn.Module):
    """SAGAN self-attention over all positions, added back through a learned gate.

    Queries and keys are projected to C // 8 channels, values to C, all by spectral-normalised
    1x1 convolutions without bias. For each output position j the values are mixed with weights
    softmax_i(q_i . k_j), normalised over the source positions i (the official model's
    `softmax(dim=1)` on the [i, j] score matrix). gamma starts at 0, so the block starts as the
    identity.
    """

    @nn.compact
    def __call__(self, x: jax.Array, *, update_stats: bool) -> jax.Array:
        """x: [B, H, W, C]. Returns [B, H, W, C]."""
        batch, height, width, channels = x.shape

        def project(features: int, name: str) -> jax.Array:
            conv = _spectral_conv(features, 1, name, padding=0, bias=False)
            return conv(x, train=update_stats).reshape(batch, height * width, features)

        query = project(channels // 8, "query")  # [B, N, C/8]
        key = project(channels // 8, "key")  # [B, N, C/8]
        value = project(channels, "value")  # [B, N, C]
        scores = jnp.einsum("bic,bjc->bij", query, key)  # [B, N_i, N_j]
        weights = jax.nn.softmax(scores, axis=1)
        attended = jnp.einsum("bij,bic->bjc", weights, value).reshape(x.shape)
        gamma = self.param("gamma", nn.initializers.zeros, (1,))
        return gamma * attended + x


class DynamicUNetDiscriminator(nn.Module):
    """DDColor's patch discriminator on RGB images in [0, 1].

    Attributes:
      width: channels of the first conv (the official `nf`; 64 in DDColor's training config).
        Each block doubles it. A smaller width keeps the structure for a CPU demo.
      num_blocks: downsampling blocks after the stem (the official `n_blocks`, 3).
    """

    width: int = 64
    num_blocks: int = 3

    @nn.compact
    def __call__(self, rgb: jax.Array, *, update_stats: bool) -> jax.Array:
        """Patch logits for a batch of images.

        Args:
          rgb: [B, H, W, 3] RGB in [0, 1], not normalised. H and W must be at least
            4 * 2**(num_blocks + 1) (64 for three blocks).
          update_stats: store the new power-iteration vectors (pass `mutable=['batch_stats']`);
            True in training, as the official model does on every training forward.

        Returns:
          [B, h * w] logits (before the sigmoid), the h x w grid flattened row by row.
        """
        if rgb.ndim != 4:
            raise ValueError(f"discriminator input must be [B, H, W, C], got shape {rgb.shape}")
        height, width = rgb.shape[1:3]
        if min(logits_side(height, self.num_blocks), logits_side(width, self.num_blocks)) < 1:
            min_side = 4 * 2 ** (self.num_blocks + 1)
            raise ValueError(
                f"discriminator input {height}x{width} is too small: each side must be at least "
                f"{min_side} pixels for {self.num_blocks} blocks"
            )

        features = self.width
        x = _spectral_conv(features, 4, "stem", strides=2)(rgb, train=update_stats)
        x = nn.relu(x)
        for i in range(self.num_blocks):
            x = _spectral_conv(features, 3, f"block{i}_conv")(x, train=update_stats)
            x = nn.relu(x)
            features *= 2
            x = _spectral_conv(features, 4, f"block{i}_down", strides=2)(x, train=update_stats)
            x = nn.relu(x)
            if i == 0:
                x = SelfAttention(name="attention")(x, update_stats=update_stats)
        x = nn.relu(_spectral_conv(features, 3, "head_conv")(x, train=update_stats))
        logits = _spectral_conv(1, 4, "logits", padding=0, bias=False)(x, train=update_stats)
        # [B, h, w, 1]
        return logits.reshape(logits.shape[0], -1)
