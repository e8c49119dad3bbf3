"""DisColor's three convolutional networks (Xia, Hu, Wong, Wang, "Disentangled Image
Colorization via Global Anchors", SIGGRAPH Asia 2022) as Flax modules, NHWC.

- `SpixelNet` ("segnet"): a small U-Net that softly assigns every pixel to the 3x3 block of
  16x16 grid cells around its own cell (the superpixel affinity). Pretrained on its own and
  frozen inside DisColor, so its BatchNorms always use their running statistics.
- `ColorProbNet` ("repnet"): the per-pixel feature extractor, a VGG-like spectral-norm encoder
  down to 1/8 of the size with a decoder back to full size; 64 non-negative features per pixel.
- `HourGlass2` ("enhanceNet"): the pixel-wise refinement, an hourglass over [L, features
  spread from the tokens] that returns ab before the tanh its parent applies.

Module paths are those of the official state_dict with every Sequential index joined to its
parent by `_`: the indices count activations too, so `repnet.conv2_3.6` (a BatchNorm after
three conv + LeakyReLU pairs) is `conv2_3_6` here, and the numbering has gaps.

Initialisation, as the official `AnchorColorProb`: after construction it redraws every tensor
of more than one dimension with xavier_uniform (kernels, spectral-norm kernels and transposed
convolutions included; Flax's xavier over HWIO has the same fans as torch's over OIHW). 1-D
tensors keep their construction values: PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in))
for the conv biases of ColorProbNet and HourGlass2, zeros for SpixelNet's (its own init),
scale 1 and bias 0 for every BatchNorm.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from aiaic_jax.models.backbones.layers import Initializer, SpectralNormConv, torch_default_bias

# A function applied to a feature map at the guidance insertion point ([B, H, W, C] -> same).
FeatureHook = Callable[[jax.Array], jax.Array]

# The affinity's channels: the 3x3 grid cells around a pixel's own, row by row from the top
# left (the official channel order; index 4 is the pixel's own cell).
NEIGHBOURS = 9

_xavier = nn.initializers.xavier_uniform()
_KERNEL = 3  # every convolution of the three networks is 3x3 with padding 1


def _torch_bias(in_features: int) -> Initializer:
    """PyTorch's default bias init for a 3x3 conv over `in_features` channels."""
    return torch_default_bias(in_features * _KERNEL * _KERNEL)


def _conv(
    features: int,
    name: str,
    *,
    stride: int = 1,
    use_bias: bool = True,
    bias_init: Initializer = nn.initializers.zeros,
) -> nn.Conv:
    # PyTorch's padding=1 on every side. Flax's 'SAME' would pad (0, 1) at stride 2 on even
    # sizes, a different function.
    return nn.Conv(
        features,
        (_KERNEL, _KERNEL),
        strides=(stride, stride),
        padding=((1, 1), (1, 1)),
        use_bias=use_bias,
        kernel_init=_xavier,
        bias_init=bias_init,
        name=name,
    )


def _conv_torch_bias(x: jax.Array, features: int, name: str, *, stride: int = 1) -> jax.Array:
    """A 3x3 conv with bias (PyTorch's default bias init) applied to x."""
    return _conv(features, name, stride=stride, bias_init=_torch_bias(x.shape[-1]))(x)


def _spectral_conv(
    x: jax.Array, features: int, name: str, *, train: bool, stride: int = 1
) -> jax.Array:
    """A 3x3 spectral-norm conv with bias (torch.nn.utils.spectral_norm semantics)."""
    return SpectralNormConv(
        features,
        kernel_size=_KERNEL,
        padding=1,
        strides=stride,
        kernel_init=_xavier,
        bias_init=_torch_bias(x.shape[-1]),
        name=name,
    )(x, train=train)


def _batch_norm(x: jax.Array, name: str, *, train: bool) -> jax.Array:
    # PyTorch BatchNorm2d defaults: momentum 0.1 (Flax 0.9), eps 1e-5.
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        use_fast_variance=False,
        name=name,
    )(x)


def upsample_nearest(x: jax.Array) -> jax.Array:
    """[B, H, W, C] -> [B, 2H, 2W, C], nearest neighbour (torch `interpolate(mode='nearest')`)."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def _check_size(module: str, x: jax.Array, factor: int) -> None:
    height, width = x.shape[1:3]
    if height % factor or width % factor:
        raise ValueError(f"{module}: H and W must be multiples of {factor}, got {height}x{width}")


_OWN_CELL = 4  # the centre of the 3 x 3 neighbourhood in the affinity's channel order
_OWN_CELL_LOGIT = 10.0


def _own_cell_bias(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    del key
    return jnp.zeros(shape, dtype).at[_OWN_CELL].set(_OWN_CELL_LOGIT)


class SpixelNet(nn.Module):
    """The superpixel affinity network: gray_n [B, H, W, 1] -> affinity [B, H, W, 9].

    An encoder of five levels (`widths`, full size down to 1/16; two conv-BN-LeakyReLU(0.1)
    blocks each, the first of each level after the top with stride 2) and a decoder of four
    (transposed conv x2 + LeakyReLU(0.1), concatenation [skip, upsampled], one conv-BN-LeakyReLU
    block), then a 3x3 conv to the 9 neighbour logits and a softmax over them.

    Frozen in DisColor: no `train` argument, the BatchNorms use their running statistics.
    """

    widths: Sequence[int] = (16, 32, 64, 128, 256)  # full size, 1/2, 1/4, 1/8, 1/16

    @nn.compact
    def __call__(self, gray_n: jax.Array) -> jax.Array:
        """gray_n: [B, H, W, 1], (L - 50) / 50; H and W multiples of 16.

        Returns the affinity [B, H, W, 9] (softmax over the last axis, `NEIGHBOURS` order).
        """
        if len(self.widths) != 5:
            raise ValueError(f"SpixelNet needs 5 widths, got {len(self.widths)}")
        _check_size("SpixelNet", gray_n, 16)

        def block(x: jax.Array, features: int, name: str, stride: int = 1) -> jax.Array:
            x = _conv(features, f"{name}_0", stride=stride, use_bias=False)(x)
            x = _batch_norm(x, f"{name}_1", train=False)
            return nn.leaky_relu(x, 0.1)

        # Encoder: conv0a/0b at full size, conv{k}a (stride 2) and conv{k}b at 1/2**k.
        x = gray_n
        skips = []
        for level, width in enumerate(self.widths):
            x = block(x, width, f"conv{level}a", stride=1 if level == 0 else 2)
            x = block(x, width, f"conv{level}b")
            skips.append(x)
        # Decoder: deconv{k} up to the size of level k, concatenated after that level's output.
        for level in reversed(range(len(self.widths) - 1)):
            width = self.widths[level]
            # torch ConvTranspose2d(k4, s2, p1): padding 4 - 1 - 1 = 2 on the dilated input,
            # with the kernel flipped and its channel axes swapped (transpose_kernel).
            up = nn.ConvTranspose(
                width,
                (4, 4),
                strides=(2, 2),
                padding=((2, 2), (2, 2)),
                transpose_kernel=True,
                kernel_init=_xavier,
                name=f"deconv{level}_0",
            )(x)
            x = jnp.concatenate([skips[level], nn.leaky_relu(up, 0.1)], axis=-1)
            x = block(x, width, f"conv{level}_1")
        # A fresh SpixelNet is the regular grid: zero weights and a bias towards the pixel's own
        # cell (softmax 0.9996 there). SpixelNet never trains in DisColor, and the official one
        # is always loaded pretrained; a random one would pool blurs of 3 x 3 cells.
        logits = nn.Conv(
            NEIGHBOURS,
            (_KERNEL, _KERNEL),
            padding=((1, 1), (1, 1)),
            kernel_init=nn.initializers.zeros,
            bias_init=_own_cell_bias,
            name="pred_mask0",
        )(x)
        return nn.softmax(logits, axis=-1)


class ColorProbNet(nn.Module):
    """The feature extractor: gray_n [B, H, W, 1] -> features [B, H, W, out_features] >= 0.

    Encoder (spectral-norm 3x3 convs, each followed by LeakyReLU(0.2); a BatchNorm ends every
    stage): conv1_2 (2 convs, widths[0]), conv2_3 / conv3_3 / conv4_3 (3 convs, the first with
    stride 2: widths[1..3] at 1/2, 1/4, 1/8), conv5_3 .. conv7_3 (3 convs each at widths[3]).
    Decoder (plain convs): conv8up (nearest x2, conv to widths[2]) plus conv3short8 (a conv on
    conv3_3's output), then ReLU, 2x (conv, ReLU), BN; conv9up (x2, conv to widths[1]) and
    conv9_2 (conv, ReLU, BN: no activation between the two convs, as official); conv10up (x2,
    conv to widths[0]) and conv10_2 (ReLU, conv to out_features, ReLU).
    """

    widths: Sequence[int] = (64, 128, 256, 512)  # full size, 1/2, 1/4, 1/8 (also conv5-7)
    out_features: int = 64

    @nn.compact
    def __call__(self, gray_n: jax.Array, *, train: bool) -> jax.Array:
        """gray_n: [B, H, W, C] ((L - 50) / 50 for C = 1); H and W multiples of 8.

        train: BatchNorm on batch statistics (updating `batch_stats`) and one power iteration
        in every spectral norm (updating its stored u, v); otherwise the stored values.
        Returns [B, H, W, out_features], after a final ReLU.
        """
        if len(self.widths) != 4:
            raise ValueError(f"ColorProbNet needs 4 widths, got {len(self.widths)}")
        _check_size("ColorProbNet", gray_n, 8)
        w1, w2, w4, w8 = self.widths

        def stage(x: jax.Array, features: int, name: str, convs: int, stride: int) -> jax.Array:
            # Sequential indices: conv 0, LeakyReLU 1, conv 2, ..., BatchNorm 2 * convs.
            for i in range(convs):
                x = _spectral_conv(
                    x, features, f"{name}_{2 * i}", train=train, stride=stride if i == 0 else 1
                )
                x = nn.leaky_relu(x, 0.2)
            return _batch_norm(x, f"{name}_{2 * convs}", train=train)

        f1_2 = stage(gray_n, w1, "conv1_2", convs=2, stride=1)
        f2_3 = stage(f1_2, w2, "conv2_3", convs=3, stride=2)
        f3_3 = stage(f2_3, w4, "conv3_3", convs=3, stride=2)
        x = stage(f3_3, w8, "conv4_3", convs=3, stride=2)
        for name in ("conv5_3", "conv6_3", "conv7_3"):
            x = stage(x, w8, name, convs=3, stride=1)

        # 1/8 -> 1/4, with a shortcut from conv3_3.
        x = _conv_torch_bias(upsample_nearest(x), w4, "conv8up_1")
        x = x + _conv_torch_bias(f3_3, w4, "conv3short8_0")
        x = nn.relu(x)
        x = nn.relu(_conv_torch_bias(x, w4, "conv8_3_1"))
        x = nn.relu(_conv_torch_bias(x, w4, "conv8_3_3"))
        x = _batch_norm(x, "conv8_3_5", train=train)
        # 1/4 -> 1/2.
        x = _conv_torch_bias(upsample_nearest(x), w2, "conv9up_1")
        x = nn.relu(_conv_torch_bias(x, w2, "conv9_2_0"))
        x = _batch_norm(x, "conv9_2_2", train=train)
        # 1/2 -> full size.
        x = _conv_torch_bias(upsample_nearest(x), w1, "conv10up_1")
        x = nn.relu(x)
        return nn.relu(_conv_torch_bias(x, self.out_features, "conv10_2_1"))


class ConvBlock(nn.Module):
    """HourGlass2's input block: conv (`inConv_0`), ReLU, conv (`conv_0`), ReLU, BN (`conv_2`)."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, hook: FeatureHook | None = None) -> jax.Array:
        """x: [B, H, W, Cin] -> [B, H, W, features]. hook: applied to the first conv's output,
        before its ReLU."""
        x = _conv_torch_bias(x, self.features, "inConv_0")
        if hook is not None:
            x = hook(x)
        x = nn.relu(x)
        x = nn.relu(_conv_torch_bias(x, self.features, "conv_0"))
        return _batch_norm(x, "conv_2", train=train)


class DownsampleBlock(nn.Module):
    """Stride-2 conv (`conv_0`), ReLU, conv (`conv_2`), ReLU, BN (`conv_4`): halves H and W."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """x: [B, H, W, Cin] -> [B, H/2, W/2, features]."""
        x = nn.relu(_conv_torch_bias(x, self.features, "conv_0", stride=2))
        x = nn.relu(_conv_torch_bias(x, self.features, "conv_2"))
        return _batch_norm(x, "conv_4", train=train)


class ResidualBlock(nn.Module):
    """relu(x + conv_3(relu(conv_1(conv_0(x))))): conv_1 has spectral norm, and conv_0 and
    conv_1 follow each other with no activation between them, as official. No normalisation."""

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """x: [B, H, W, C] -> [B, H, W, C]. train: one power iteration in conv_1's norm."""
        channels = x.shape[-1]
        residual = _conv_torch_bias(x, channels, "conv_0")
        residual = _spectral_conv(residual, channels, "conv_1", train=train)
        residual = _conv_torch_bias(nn.relu(residual), channels, "conv_3")
        return nn.relu(x + residual)


class UpsampleBlock(nn.Module):
    """conv (`conv1`, no activation), nearest x2, concatenation [upsampled, skip], conv
    (`combine`), ReLU, 2x (conv, ReLU) (`conv2_0`, `conv2_2`), BN (`conv2_4`)."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array, skip: jax.Array, *, train: bool) -> jax.Array:
        """x: [B, h, w, Cin]; skip: [B, 2h, 2w, features] -> [B, 2h, 2w, features]."""
        x = upsample_nearest(_conv_torch_bias(x, self.features, "conv1"))
        x = jnp.concatenate([x, skip], axis=-1)
        x = nn.relu(_conv_torch_bias(x, self.features, "combine"))
        x = nn.relu(_conv_torch_bias(x, self.features, "conv2_0"))
        x = nn.relu(_conv_torch_bias(x, self.features, "conv2_2"))
        return _batch_norm(x, "conv2_4", train=train)


class HourGlass2(nn.Module):
    """The refinement network: x [B, H, W, 1 + 64] -> ab [B, H, W, out_features] before tanh.

    inConv (full size, widths[0]), down1 (1/2, widths[1]), down2 (1/4, widths[2]),
    `num_residual` residual blocks at 1/4, up2 (skip from down1), up1 (skip from inConv), and
    a 3x3 conv `outConv`.
    """

    widths: Sequence[int] = (64, 128, 256)  # full size, 1/2, 1/4
    num_residual: int = 3
    out_features: int = 2

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, hook: FeatureHook | None = None) -> jax.Array:
        """x: [B, H, W, Cin], DisColor's [L_n, spread token features]; H, W multiples of 4.

        train: BatchNorm on batch statistics and one power iteration in the residual blocks'
        spectral norms (both update `batch_stats`); otherwise the stored values.
        hook: applied to the output of the very first conv (`inConv/inConv_0`, widths[0]
        channels at full size) before its ReLU, x -> relu(hook(conv(x))); DSG goes there.
        Returns [B, H, W, out_features], the official output before its tanh.
        """
        if len(self.widths) != 3:
            raise ValueError(f"HourGlass2 needs 3 widths, got {len(self.widths)}")
        _check_size("HourGlass2", x, 4)
        w1, w2, w4 = self.widths
        f1 = ConvBlock(w1, name="inConv")(x, train=train, hook=hook)
        f2 = DownsampleBlock(w2, name="down1")(f1, train=train)
        x = DownsampleBlock(w4, name="down2")(f2, train=train)
        for i in range(self.num_residual):
            x = ResidualBlock(name=f"residual_{i}")(x, train=train)
        x = UpsampleBlock(w2, name="up2")(x, f2, train=train)
        x = UpsampleBlock(w1, name="up1")(x, f1, train=train)
        return _conv_torch_bias(x, self.out_features, "outConv")
