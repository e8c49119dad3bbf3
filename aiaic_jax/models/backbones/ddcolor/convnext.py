"""ConvNeXt (Liu et al., "A ConvNet for the 2020s", arXiv 2201.03545), the DDColor encoder.

Returns the feature maps of the four stages, each through its own LayerNorm (`norm0` ..
`norm3`, which DDColor adds to the ImageNet architecture), plus the ImageNet embedding (global
average pool and the final `norm`). DDColor uses only the four feature maps; the final norm is
kept so that the parameters, and converted ImageNet checkpoints, match the original one to one.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from aiaic_jax.models.backbones.layers import DepthwiseConv, dense_dot_general

# Sizes of the ImageNet-22k checkpoints DDColor starts from.
CONVNEXT_SIZES = {
    "tiny": {"depths": (3, 3, 9, 3), "dims": (96, 192, 384, 768)},
    "large": {"depths": (3, 3, 27, 3), "dims": (192, 384, 768, 1536)},
}

# The original initialises every conv and linear kernel with trunc_normal_(std=.02) and bounds
# at +-2 (absolute), i.e. +-100 std: in effect an untruncated normal.
_kernel_init = nn.initializers.normal(0.02)


def _layer_norm(name: str) -> nn.LayerNorm:
    # Two-pass variance: ConvNeXt activations have large means, where E[x^2] - E[x]^2 loses
    # float32 precision.
    return nn.LayerNorm(epsilon=1e-6, use_fast_variance=False, name=name)


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 conv -> LayerNorm -> Linear(4 dim) -> GELU -> Linear(dim) -> layer scale,
    plus the residual."""

    dim: int
    layer_scale_init: float = 1e-6
    kernels: str = "auto"  # see layers.use_rewrites

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: [B, H, W, dim] -> [B, H, W, dim]."""
        residual = x
        x = DepthwiseConv(7, kernel_init=_kernel_init, kernels=self.kernels, name="dwconv")(x)
        x = _layer_norm("norm")(x)
        dot_general = dense_dot_general(self.kernels)
        x = nn.Dense(
            4 * self.dim, kernel_init=_kernel_init, dot_general=dot_general, name="pwconv1"
        )(x)
        x = nn.gelu(x, approximate=False)  # PyTorch's nn.GELU is the exact erf form
        x = nn.Dense(self.dim, kernel_init=_kernel_init, dot_general=dot_general, name="pwconv2")(x)
        gamma = self.param("gamma", nn.initializers.constant(self.layer_scale_init), (self.dim,))
        return residual + gamma * x


class ConvNeXt(nn.Module):
    """ConvNeXt feature extractor with per-stage output norms.

    Module names: `stem_conv`, `stem_norm`, `downsample{1,2,3}_{norm,conv}`,
    `stage{i}_block{j}`, `norm{i}` (the stage outputs), `norm` (the ImageNet embedding).
    """

    depths: Sequence[int] = (3, 3, 9, 3)
    dims: Sequence[int] = (96, 192, 384, 768)
    kernels: str = "auto"
    remat: bool = False  # recompute each block in the backward pass (memory for time)

    @nn.compact
    def __call__(self, image: jax.Array) -> tuple[list[jax.Array], jax.Array]:
        """image: [B, H, W, 3], H and W multiples of 32.

        Returns ([f0, f1, f2, f3], embedding): f_i [B, H / 2**(i+2), W / 2**(i+2), dims[i]]
        after `norm{i}`; embedding [B, dims[-1]].
        """
        x = nn.Conv(
            self.dims[0],
            (4, 4),
            strides=4,
            padding="VALID",
            kernel_init=_kernel_init,
            name="stem_conv",
        )(image)
        x = _layer_norm("stem_norm")(x)
        features = []
        for stage, (depth, dim) in enumerate(zip(self.depths, self.dims)):
            if stage > 0:
                x = _layer_norm(f"downsample{stage}_norm")(x)
                x = nn.Conv(
                    dim,
                    (2, 2),
                    strides=2,
                    padding="VALID",
                    kernel_init=_kernel_init,
                    name=f"downsample{stage}_conv",
                )(x)
            block_class = nn.remat(ConvNeXtBlock) if self.remat else ConvNeXtBlock
            for block in range(depth):
                x = block_class(dim, kernels=self.kernels, name=f"stage{stage}_block{block}")(x)
            # The stage output feeds the next stage un-normalised; only the copy handed to the
            # decoder goes through norm{stage}.
            features.append(_layer_norm(f"norm{stage}")(x))
        embedding = _layer_norm("norm")(jnp.mean(x, axis=(1, 2)))
        return features, embedding
