"""DDColor (Kang et al., "DDColor: Towards Photo-Realistic Image Colorization via Dual
Decoders", arXiv 2212.11613): ConvNeXt encoder, pixel decoder, multi-scale colour decoder.

The grey image (L as an sRGB grey, ImageNet-normalised) goes through the ConvNeXt encoder; the
pixel decoder upsamples its features; the colour decoder turns colour queries into colour
embeddings, whose dot products with the full-size features are one colour map per query;
`refine`, a 1x1 spectral-norm conv over those maps and the input image, gives ab in raw Lab
units (no squashing; clip to [-128, 127] before conversion).

Guidance (AIAIC, Sec. 4.1: "the DSG module is added following the first convolutional layer of
its decoder"). DDColor has two decoders and the pixel decoder runs first; its first
convolutional layer is the 1x1 conv (spectral norm, then BatchNorm) that expands the 1/32
encoder features by 4 before the first pixel shuffle (official `decoder.layers.0.shuf.conv`,
built by fastai's `custom_conv_layer`, which makes a "conv layer" of conv and norm). DSG is
applied to that layer's output, before its ReLU and the shuffle: 4 * decoder_widths[0]
channels (2048 for DDColor-T/L) at 1/32 of the input size. (A looser reading, after the whole
first U-Net block, would be 512 channels at 1/16; the paper names a convolutional layer.)
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from aiaic_jax.color import gray_rgb_from_l
from aiaic_jax.models.backbones.ddcolor.convnext import ConvNeXt
from aiaic_jax.models.backbones.ddcolor.decoder import (
    MultiScaleColorDecoder,
    PixelDecoder,
    upsample_subpixel,
)
from aiaic_jax.models.backbones.layers import SpectralNormConv
from aiaic_jax.models.guidance import DynamicSemanticGuidance, Guidance

_LAST_SCALE = 4  # the pixel decoder's last upsampling, 1/4 -> full size
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)

# The official sizes (num_queries 100, 3 scales, 9 colour-decoder layers, 2 output channels,
# spectral norm on the last upsampling), and a reduced one of the same architecture for CPU
# demos at 64x64.
DDCOLOR_SIZES: dict[str, dict] = {
    "tiny": {
        "encoder_depths": (3, 3, 9, 3),
        "encoder_dims": (96, 192, 384, 768),
        "decoder_widths": (512, 512, 256),
        "num_queries": 100,
        "num_color_layers": 9,
        "hidden_dim": 256,
        "num_heads": 8,
        "ffn_dim": 2048,
    },
    "large": {
        "encoder_depths": (3, 3, 27, 3),
        "encoder_dims": (192, 384, 768, 1536),
        "decoder_widths": (512, 512, 256),
        "num_queries": 100,
        "num_color_layers": 9,
        "hidden_dim": 256,
        "num_heads": 8,
        "ffn_dim": 2048,
    },
    "demo": {
        "encoder_depths": (1, 1, 1, 1),
        "encoder_dims": (32, 64, 128, 256),
        "decoder_widths": (64, 64, 32),
        "num_queries": 16,
        "num_color_layers": 3,
        "hidden_dim": 64,
        "num_heads": 4,
        "ffn_dim": 128,
    },
}


class DDColor(nn.Module):
    """DDColor backbone: gray_l [B, H, W, 1] (L in [0, 100]) -> (ab [B, H, W, 2] (raw Lab), {}).

    H and W must be multiples of 32. Submodules: `encoder` (ConvNeXt), `pixel_decoder`,
    `color_decoder`, `refine`, and `dsg` when called with guidance.
    """

    encoder_depths: Sequence[int] = (3, 3, 9, 3)
    encoder_dims: Sequence[int] = (96, 192, 384, 768)
    decoder_widths: Sequence[int] = (512, 512, 256)
    num_queries: int = 100
    num_color_layers: int = 9
    hidden_dim: int = 256
    num_heads: int = 8
    ffn_dim: int = 2048
    num_output_channels: int = 2
    blur: bool = True
    guidance_hidden: int = 256  # hidden width of the DSG's gamma/beta MLPs
    # "auto" | "rewrite" | "native": the CPU rewrites of depthwise conv, 3x3 conv and attention,
    # or XLA's native forms (layers.use_rewrites; "auto" picks by platform).
    kernels: str = "auto"
    # Recompute encoder blocks, U-Net blocks, colour-decoder layers and (on the CPU) the last
    # upsampling's features in the backward pass (memory for time: DDColor-L, large batches on
    # accelerators). The same function.
    remat: bool = False

    guidance_point = (
        "pixel decoder, output of its first conv layer (block0/upsample: 1x1 spectral conv + "
        "BatchNorm, before ReLU and pixel shuffle), 1/32 resolution"
    )

    @property
    def guidance_channels(self) -> int:
        """Channels of the feature map DSG modulates (2048 for DDColor-T/L)."""
        return 4 * self.decoder_widths[0]

    def pretrained_params(self) -> dict:
        """Parameters to lay over a fresh initialisation: none (the official ConvNeXt and
        DDColor weights come from files, through `python -m aiaic_jax.convert`)."""
        return {}

    @nn.compact
    def __call__(
        self,
        gray_l: jax.Array,
        guidance: Guidance | None = None,
        *,
        train: bool = False,
        target_ab: jax.Array | None = None,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """gray_l: [B, H, W, 1] L in [0, 100]; guidance: code c [B, Dc] and relevance r [B]
        (Eq. 8; r = 0 gives exactly the unguided output); target_ab: the ground truth that the
        backbone protocol passes in the colour stages, unused here. train: batch statistics in the
        BatchNorms and a power-iteration step in every spectral norm (both update
        `batch_stats`). Returns (ab [B, H, W, num_output_channels] in raw Lab units, {}): its
        objective needs no other output."""
        del target_ab
        _, height, width, channels = gray_l.shape
        if channels != 1 or height % 32 or width % 32:
            raise ValueError(
                f"DDColor expects gray_l [B, H, W, 1] with H and W multiples of 32, got "
                f"{gray_l.shape}"
            )
        image = (gray_rgb_from_l(gray_l) - IMAGENET_MEAN) / IMAGENET_STD  # [B, H, W, 3]
        image = image.astype(gray_l.dtype)  # the compute dtype is the input's

        encoder_features, _ = ConvNeXt(
            self.encoder_depths,
            self.encoder_dims,
            kernels=self.kernels,
            remat=self.remat,
            name="encoder",
        )(image)

        hook = None
        if guidance is not None:
            dsg = DynamicSemanticGuidance(
                features=self.guidance_channels, hidden=self.guidance_hidden, name="dsg"
            )
            hook = lambda x: dsg(x, guidance)
        color_decoder = MultiScaleColorDecoder(
            num_queries=self.num_queries,
            num_layers=self.num_color_layers,
            hidden_dim=self.hidden_dim,
            num_heads=self.num_heads,
            ffn_dim=self.ffn_dim,
            embed_dim=self.decoder_widths[-1],
            kernels=self.kernels,
            remat=self.remat,
            name="color_decoder",
        )
        # refine is a 1x1 conv over concat(colour maps, image), the maps being dot products of
        # the colour embeddings with the full-size features (`color_maps`). Both are linear and
        # per pixel, and the full-size features are the sub-pixel ones shuffled and blurred
        # (linear, across pixels). So the maps' share of refine is applied to the sub-pixel
        # features (E -> 2 channels), inside the pixel decoder's last upsampling, and only ab is
        # upsampled: the same function, without any full-resolution tensor of E or Q channels.
        kernel, bias = SpectralNormConv(
            self.num_output_channels, kernel_size=1, name="refine"
        ).normalized(self.num_queries + 3, train=train)
        maps_to_ab, image_to_ab = kernel[0, 0, : self.num_queries], kernel[0, 0, self.num_queries :]

        def features_to_ab(multi_scale: list[jax.Array]) -> jax.Array:
            color_embeddings = color_decoder(multi_scale)  # [B, Q, E]
            return jnp.einsum("bqc,qo->bco", color_embeddings, maps_to_ab)  # [B, E, 2]

        _, subpixel_ab = PixelDecoder(
            self.decoder_widths,
            self.blur,
            kernels=self.kernels,
            remat=self.remat,
            name="pixel_decoder",
        )(encoder_features, train=train, hook=hook, project=features_to_ab)  # [B, H/4, W/4, 32]
        ab = upsample_subpixel(subpixel_ab, _LAST_SCALE, self.blur)
        return ab + image @ image_to_ab + bias, {}


def ddcolor(size: str, **overrides) -> DDColor:
    """DDColor of a named size ('tiny', 'large', 'demo'), with field overrides."""
    if size not in DDCOLOR_SIZES:
        raise ValueError(f"unknown DDColor size {size!r}; one of {sorted(DDCOLOR_SIZES)}")
    return DDColor(**{**DDCOLOR_SIZES[size], **overrides})
