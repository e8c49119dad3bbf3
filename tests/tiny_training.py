"""A tiny training setup shared by the training tests: a 64x64 synthetic world and a reduced
DDColor demo model (same architecture, fewer queries and colour-decoder layers)."""

from __future__ import annotations

import os

import ml_collections

from aiaic_jax.data.builders.synthetic import Synthetic, SyntheticConfig
from configs import common

IMAGE_SIZE = 64
AUDIO_SECONDS = 0.5
TRAIN_PAIRS = 16


def build_data(data_dir: str | os.PathLike) -> str:
    """Builds the tiny synthetic world into data_dir (about half a second)."""
    config = SyntheticConfig(
        name="tiny",
        image_size=IMAGE_SIZE,
        audio_seconds=AUDIO_SECONDS,
        train_pairs=TRAIN_PAIRS,
        val_pairs=8,
        ave_like_videos=2,
        ood_pairs=4,
    )
    Synthetic(data_dir=os.fspath(data_dir), config=config).build()
    return os.fspath(data_dir)


def tiny_config(data_dir: str | os.PathLike, *, steps: int = 2, batch_size: int = 4):
    """A config whose every stage runs `steps` steps of `batch_size` on the tiny world."""
    config = common.get_config()
    config.data.data_dir = os.fspath(data_dir)
    config.data.config_name = "tiny"
    config.data.eval_splits = ("val",)
    config.data.image_size = IMAGE_SIZE
    config.data.audio_seconds = AUDIO_SECONDS
    config.data.batch_size = batch_size
    config.data.eval_batch_size = batch_size

    model = config.model
    model.backbone = "ddcolor_demo"
    model.backbone_overrides = ml_collections.ConfigDict({"num_queries": 4, "num_color_layers": 1})
    model.semantic_dim = 16
    model.semantic_channels = (8, 8, 16, 16)
    model.semantic_hidden = 32
    model.guidance_dim = 16
    model.guidance_hidden = 32
    model.audio_width = 8
    model.a2v_hidden = (32,)
    model.relevance_dim = 16
    model.relevance_hidden = 32
    model.relevance_audio_width = 8

    config.loss.gan_weight = 0.0  # the discriminator needs 64x64 images
    for name in config.stages:
        config.stages[name].num_steps = steps
        config.stages[name].batch_size = batch_size
    config.train.log_every = 1
    config.train.checkpoint_every = steps
    config.train.grid_every = 0
    config.train.grid_images = 2
    config.train.fast_compile = True
    return config
