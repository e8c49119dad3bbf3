"""DisColor, the disentangled colorization of DISCO (Xia, Hu, Wong, Wang, "Disentangled Image
Colorization via Global Anchors", SIGGRAPH Asia 2022), as a Flax module, NHWC.

The official `AnchorColorProb` in the configuration its inference loads (refinement net on,
dense positions, width 64, 8 anchors, 16-pixel superpixels):

1. `segnet` (SpixelNet, frozen): each pixel's affinity to the 9 superpixel cells around it.
2. `repnet` (ColorProbNet): 64 features per pixel at full resolution.
3. Superpixel pooling of the features (and of the ground-truth ab in training) into one token
   per 16 x 16 cell: a 16 x 16 grid at 256 x 256.
4. `wildpath`: six post-norm transformer layers over the tokens, sine positions added to queries
   and keys; `mid_word_prj` turns their output into the palette logits over the 313 ab bins.
5. Anchors: k-means (8 clusters) over the tokens; in each cluster the token of the largest
   superpixel is an anchor, its colour the top bin of the palette logits. In training the
   clusters are of the ground truth's superpixel colours and the anchors' colours are the true
   bins, as in the official training.
6. `trg_word_emb` embeds [token, anchor colour one-hot (zero off the anchors), anchor flag];
   `hintpath` (six more layers) and `trg_word_prj` give the reference logits.
7. The hint path's tokens are unpooled onto the pixels through the affinities, concatenated
   after the normalised L, and `enhanceNet` (HourGlass2) ends in tanh: ab / 110.

Conventions, the official ones, applied inside so that the module takes L in [0, 100] and
returns raw ab like every backbone: L_n = (L - 50) / 50, ab = 110 * tanh(...). H and W must be
multiples of 16 (256 x 256 for the official weights; the transformer sees (H/16) * (W/16)
tokens, so another size is another token count but the same function).

Guidance (AIAIC, Sec. 4.1: "after the first convolution of the refinement network"): DSG
modulates the output of `enhanceNet/inConv/inConv_0` (65 -> 64 channels, full resolution),
before its ReLU; see docs/training.md for the reading.

Randomness: k-means starts from random tokens. It draws from the `anchors` rng stream when
the caller passes one (the training step does) and from a fixed key otherwise, so inference is
deterministic. The transformer's dropout (0.1) draws from `dropout` in training. `anchors`
given to the call skip k-means altogether (reproducible comparisons, parity, user edits).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from aiaic_jax.models.backbones.discolor import bins, tokens
from aiaic_jax.models.backbones.discolor.nets import ColorProbNet, HourGlass2, SpixelNet
from aiaic_jax.models.guidance import DynamicSemanticGuidance, Guidance

L_CENTRE = 50.0
L_SCALE = 50.0
AB_SCALE = 110.0
CELL = 16  # superpixel grid: SpixelNet's four stride-2 levels
_FIXED_ANCHOR_KEY = 0  # k-means seed when the caller passes no `anchors` rng

# The official configuration, and a reduced one (every width / 4 or / 8, fewer layers and
# anchors) for CPU demos at 64 x 64, where the grid has 4 x 4 tokens.
DISCOLOR_SIZES: dict[str, dict[str, Any]] = {
    "full": {
        "spixel_widths": (16, 32, 64, 128, 256),
        "feature_widths": (64, 128, 256, 512),
        "width": 64,
        "num_heads": 8,
        "ffn_dim": 256,
        "num_layers": 6,
        "refine_widths": (64, 128, 256),
        "num_residual": 3,
        "num_anchors": 8,
    },
    "demo": {
        "spixel_widths": (4, 8, 16, 32, 64),
        "feature_widths": (16, 32, 64, 64),
        "width": 32,
        "num_heads": 4,
        "ffn_dim": 64,
        "num_layers": 2,
        "refine_widths": (16, 32, 64),
        "num_residual": 1,
        "num_anchors": 4,
    },
}


class Anchors(NamedTuple):
    """Anchor tokens and their colours on the token grid: mask [B, h, w] (1 at an anchor) and
    bins [B, h, w] int32 (an index of the 313 ab bins, read only where mask is 1)."""

    mask: jax.Array
    bins: jax.Array


def normalize_l(gray_l: jax.Array) -> jax.Array:
    """L in [0, 100] -> the official input (L - 50) / 50 in [-1, 1]."""
    return (gray_l - L_CENTRE) / L_SCALE


def _dense(features: int, name: str) -> nn.Dense:
    # Bias-free projections, xavier-initialised as the official model re-initialises them.
    return nn.Dense(
        features, use_bias=False, kernel_init=nn.initializers.xavier_uniform(), name=name
    )


class DisColor(nn.Module):
    """DisColor: gray_l [B, H, W, 1] (L in [0, 100]) -> (ab [B, H, W, 2] raw Lab, outputs).

    Submodules (named after the official state_dict, see `convert.py`): `segnet`, `repnet`,
    `wildpath`, `mid_word_prj`, `trg_word_emb`, `hintpath`, `trg_word_prj`, `enhanceNet`, and
    `dsg` when called with guidance.
    """

    spixel_widths: Sequence[int] = (16, 32, 64, 128, 256)
    feature_widths: Sequence[int] = (64, 128, 256, 512)
    width: int = 64  # token width (ColorProbNet's output features too)
    num_heads: int = 8
    ffn_dim: int = 256
    num_layers: int = 6  # per transformer path
    dropout: float = 0.1
    refine_widths: Sequence[int] = (64, 128, 256)
    num_residual: int = 3
    num_anchors: int = 8
    kmeans_iterations: int = 20
    guidance_hidden: int = 256  # hidden width of the DSG's gamma/beta MLPs

    guidance_point = (
        "refinement net (HourGlass2), output of its first conv (65 -> 64 channels) before "
        "its ReLU, full resolution"
    )
    # Top-level submodules that never train (the official model loads SpixelNet pretrained
    # and freezes it); the stages add them to their frozen parameters.
    frozen_modules = ("segnet",)

    @property
    def guidance_channels(self) -> int:
        """Channels of the feature map DSG modulates (64 for the official widths)."""
        return self.refine_widths[0]

    def pretrained_params(self) -> dict:
        """Parameters to lay over a fresh initialisation: none (the official DISCO weights,
        SpixelNet's included, come from a file through `python -m aiaic_jax.convert`)."""
        return {}

    @nn.compact
    def __call__(
        self,
        gray_l: jax.Array,
        guidance: Guidance | None = None,
        *,
        train: bool = False,
        target_ab: jax.Array | None = None,
        anchors: Anchors | None = None,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """gray_l: [B, H, W, 1] L in [0, 100], H and W multiples of 16; guidance: code c
        [B, Dc] and relevance r [B] (Eq. 8; r = 0 gives exactly the unguided output).

        train: batch statistics in ColorProbNet's and the refinement net's BatchNorms, a
          power-iteration step in their spectral norms, dropout in the transformers, and the
          ground truth's anchors (needs target_ab). SpixelNet always runs in evaluation mode.
        target_ab: [B, H, W, 2] raw ab, the ground truth: its superpixel bins are returned as
          "token_labels" (the objective's target), and in training they place the anchors.
        anchors: given anchors, used instead of k-means (any mode).

        Returns ab [B, H, W, 2] in raw Lab units (in (-110, 110), from the tanh) and outputs:
        "pal_logits" and "ref_logits" [B, h, w, 313] (h, w = H/16, W/16), "anchor_mask"
        [B, h, w], "anchor_bins" [B, h, w] int32, and "token_labels" [B, h, w] int32 when
        target_ab is given.
        """
        batch, height, width, channels = gray_l.shape
        if channels != 1 or height % CELL or width % CELL:
            raise ValueError(
                f"DisColor expects gray_l [B, H, W, 1] with H and W multiples of {CELL}, got "
                f"{gray_l.shape}"
            )
        if train and anchors is None and target_ab is None:
            raise ValueError(
                "DisColor trains with the ground truth's anchors: pass target_ab (or anchors)"
            )
        grid = (height // CELL, width // CELL)
        num_tokens = grid[0] * grid[1]
        gray_n = normalize_l(gray_l)

        # SpixelNet is frozen: no gradient, running statistics (its own eval mode).
        affinity = jax.lax.stop_gradient(SpixelNet(self.spixel_widths, name="segnet")(gray_n))
        features = ColorProbNet(self.feature_widths, self.width, name="repnet")(
            gray_n, train=train
        )  # [B, H, W, width]
        feature_tokens = tokens.pool_tokens(features, affinity, CELL)  # [B, h, w, width]
        source = feature_tokens.reshape(batch, num_tokens, self.width)
        # [h*w, width], in the compute dtype (the input's)
        positions = jnp.asarray(tokens.sine_positions(*grid, self.width), gray_l.dtype)

        def encoder(name: str) -> tokens.TokenEncoder:
            return tokens.TokenEncoder(
                num_layers=self.num_layers,
                width=self.width,
                heads=self.num_heads,
                hidden=self.ffn_dim,
                dropout=self.dropout,
                name=name,
            )

        encoded = encoder("wildpath")(source, positions, train=train)  # [B, L, width]
        pal_logits = _dense(bins.NUM_BINS, "mid_word_prj")(encoded)  # [B, L, 313]

        outputs: dict[str, jax.Array] = {}
        token_labels = None
        sizes = tokens.spixel_sizes(affinity, CELL).reshape(batch, num_tokens)
        if target_ab is not None:
            true_colours = tokens.pool_tokens(jax.lax.stop_gradient(target_ab), affinity, CELL)
            token_labels = bins.nearest_bin(true_colours).reshape(batch, num_tokens)
            outputs["token_labels"] = token_labels.reshape(batch, *grid)
        if anchors is not None:
            anchor_mask = anchors.mask.reshape(batch, num_tokens).astype(jnp.float32)
            anchor_bins = anchors.bins.reshape(batch, num_tokens).astype(jnp.int32)
        else:
            if self.has_rng("anchors"):
                key = self.make_rng("anchors")  # split per image inside
            else:
                # The same start for every image, so that a picture's anchors do not depend on
                # its place in the batch.
                key = jnp.repeat(jax.random.split(jax.random.key(_FIXED_ANCHOR_KEY), 1), batch)
            if train:
                # Clusters of the true superpixel colours, the true bins (official training).
                cluster_points = (true_colours / AB_SCALE).reshape(batch, num_tokens, 2)
                anchor_bins = token_labels
            else:
                cluster_points = encoded
                anchor_bins = tokens.top_bins(pal_logits)
            assignments = tokens.kmeans(
                jax.lax.stop_gradient(cluster_points),
                self.num_anchors,
                key,
                iterations=self.kmeans_iterations,
            )
            # The official count: a token picked by two clusters (one of them empty) weighs 2.
            anchor_mask = tokens.anchor_mask(assignments, sizes, self.num_anchors, binary=False)
        anchor_mask = jax.lax.stop_gradient(anchor_mask)

        flag = anchor_mask[..., None].astype(source.dtype)  # [B, L, 1]
        hint = jax.nn.one_hot(anchor_bins, bins.NUM_BINS, dtype=source.dtype) * flag
        hint_tokens = _dense(self.width, "trg_word_emb")(
            jnp.concatenate([source, hint, flag], axis=-1)
        )
        decoded = encoder("hintpath")(hint_tokens, positions, train=train)  # [B, L, width]
        ref_logits = _dense(bins.NUM_BINS, "trg_word_prj")(decoded)

        hook = None
        if guidance is not None:
            dsg = DynamicSemanticGuidance(
                features=self.guidance_channels, hidden=self.guidance_hidden, name="dsg"
            )
            hook = lambda x: dsg(x, guidance)
        pixel_tokens = tokens.unpool_tokens(
            decoded.reshape(batch, *grid, self.width), affinity, CELL
        )  # [B, H, W, width]
        refined = HourGlass2(self.refine_widths, self.num_residual, 2, name="enhanceNet")(
            jnp.concatenate([gray_n, pixel_tokens], axis=-1), train=train, hook=hook
        )
        ab = AB_SCALE * jnp.tanh(refined)
        outputs.update(
            pal_logits=pal_logits.reshape(batch, *grid, bins.NUM_BINS),
            ref_logits=ref_logits.reshape(batch, *grid, bins.NUM_BINS),
            anchor_mask=anchor_mask.reshape(batch, *grid),
            anchor_bins=anchor_bins.reshape(batch, *grid),
        )
        return ab, outputs


def discolor(size: str, **overrides) -> DisColor:
    """DisColor of a named size ('full', 'demo'), with field overrides."""
    if size not in DISCOLOR_SIZES:
        raise ValueError(f"unknown DisColor size {size!r}; one of {sorted(DISCOLOR_SIZES)}")
    return DisColor(**{**DISCOLOR_SIZES[size], **overrides})
