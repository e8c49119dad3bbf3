"""A tiny training setup shared by the training tests: a 64x64 synthetic world and a reduced
DDColor demo model (same architecture, fewer queries and colour-decoder layers); and a run of
that model long enough to learn the method (`LEARNING_WORLD`, `learning_config`)."""

from __future__ import annotations

import os

import jax
import numpy as np

from aiaic_jax.data.builders.synthetic import Synthetic, SyntheticConfig
from configs import common
from tests import tiny_model

IMAGE_SIZE = 64
AUDIO_SECONDS = 0.5
TRAIN_PAIRS = 16


# A world in which the tiny model learns the method in a few hundred steps: four hues (so the
# guidance has few colours to tell apart) and the synthetic world's six scenes (so that another
# clip's audio mostly comes from another scene, which RNet can see in the grey image).
LEARNING_WORLD = dict(
    train_pairs=256,
    val_pairs=64,
    ave_like_videos=12,
    ood_pairs=4,
    train_classes=4,
    ood_classes=1,
)
# Steps of each stage of `learning_config`, at batch 8.
LEARNING_STEPS = dict(baseline=40, stage1=200, stage2=60, rnet=150, stage3=50)


def build_data(data_dir: str | os.PathLike, **options) -> str:
    """Builds the tiny synthetic world into data_dir (about half a second); `options` replace
    its sizes (e.g. `**LEARNING_WORLD`, a few seconds)."""
    sizes = dict(train_pairs=TRAIN_PAIRS, val_pairs=8, ave_like_videos=2, ood_pairs=4)
    config = SyntheticConfig(
        name="tiny",
        image_size=IMAGE_SIZE,
        audio_seconds=AUDIO_SECONDS,
        **{**sizes, **options},
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

    config.model = tiny_model.model_config()  # the evaluation tests' tiny model

    # The perceptual and GAN terms in stage 3 only, the cheapest colour stage to compile
    # (frozen backbone), with a narrow discriminator; the other colour stages train on L1 and
    # colourfulness and compile faster.
    config.loss.gan_weight = 0.0
    config.loss.perceptual_weight = 0.0
    config.stages.stage3.loss.gan_weight = 1.0
    config.stages.stage3.loss.perceptual_weight = 5.0
    config.discriminator.width = 8
    for name in config.stages:
        config.stages[name].num_steps = steps
        config.stages[name].batch_size = batch_size
    config.train.log_every = 1
    config.train.checkpoint_every = steps
    config.train.grid_every = 0
    config.train.grid_images = 2
    config.train.fast_compile = True
    return config


def learning_config(data_dir: str | os.PathLike):
    """The tiny model trained as the demo trains (L1 on ab only, RNet's audio encoder trained,
    XLA's full optimisation: quicker than `fast_compile` beyond about 80 steps) for
    `LEARNING_STEPS`, evaluated on val and ave_like."""
    config = tiny_config(data_dir, batch_size=8)
    for name, steps in LEARNING_STEPS.items():
        config.stages[name].num_steps = steps
    config.loss.colorfulness_weight = 0.0
    config.stages.stage3.loss.gan_weight = 0.0
    config.stages.stage3.loss.perceptual_weight = 0.0
    config.stages.rnet.trainable = (r"^relevance/(audio_head|image_head|fc|audio_encoder)/",)
    config.stages.rnet.frozen = (r"^relevance/image_encoder/",)
    config.optimizer.lr = 5e-4
    config.data.eval_splits = ("val", "ave_like")
    config.data.eval_batch_size = 32
    config.train.log_every = 25
    config.train.checkpoint_every = 0  # at the end of each stage only
    config.train.fast_compile = False
    return config


def get_config(data_dir: str = "runs/tiny/data"):
    """For `train.py --config tests/tiny_training.py:<data_dir>` in subprocess tests."""
    return tiny_config(data_dir)


def random_variables(template, seed: int = 0):
    """Random values of the template's shapes: quicker than an init for tests that only need
    some variables (BatchNorm variances positive, spectral-norm vectors unit length)."""
    rng = np.random.default_rng(seed)

    def value(path, leaf):
        name = str(getattr(path[-1], "key", path[-1]))
        if name == "var":
            return rng.uniform(0.5, 1.5, leaf.shape).astype(leaf.dtype)
        if name in ("u", "v"):
            vector = rng.normal(size=leaf.shape)
            return (vector / np.linalg.norm(vector)).astype(leaf.dtype)
        scale = 0.0 if name == "mean" else 0.1
        return (scale * rng.normal(size=leaf.shape)).astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(value, template)


def random_batch(batch_size: int, seed: int = 0, *, image_size: int = IMAGE_SIZE):
    """A host batch like the training pipeline's (without ids), from a seeded generator."""
    rng = np.random.default_rng(seed)
    samples = round(AUDIO_SECONDS * 16000)
    return {
        "rgb": rng.integers(0, 256, (batch_size, image_size, image_size, 3), dtype=np.uint8),
        "audio": rng.integers(-8000, 8000, (batch_size, samples)).astype(np.int16),
        "has_audio": np.arange(batch_size) % 4 != 3,
        "relevant": np.ones(batch_size, bool),
        "label": (np.arange(batch_size) % 3).astype(np.int32),
        "mask": np.ones(batch_size, bool),
    }
