"""A tiny training setup shared by the training tests: a 64x64 synthetic world and a reduced
DDColor demo model (same architecture, fewer queries and colour-decoder layers); and a run of
that model long enough to learn the method (`LEARNING_WORLD`, `learning_config`)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np

from aiaic_jax import runs
from aiaic_jax.convert.common import save_variables
from aiaic_jax.data.builders.synthetic import Synthetic, SyntheticConfig
from aiaic_jax.evaluation import runner
from aiaic_jax.models.aiaic import build_model, with_pretrained_parts
from aiaic_jax.train import loop
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
# Steps of each stage of `learning_config`, at batch 8. RNet's and stage 3's steps run RNet's VGG16
# on every image (RNet about 9 steps/s, stage 3 about 8 on a 2-core CPU, stage 1 19).
LEARNING_STEPS = dict(baseline=40, stage1=200, stage2=60, rnet=75, stage3=30)
# What tests/test_learning.py requires of that run: full's val PSNR above the baseline's by more
# than `psnr_gain` dB; RNet's mean r on ave_like, own audio above another clip's by more than
# `r_gap`, and the AUC of the two above `auc` (chance 0.5).
LEARNING_BOUNDS = dict(psnr_gain=2.5, r_gap=0.05, auc=0.65)


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
    XLA's full optimisation: quicker than `fast_compile` beyond about 80 steps; the CPU
    rewrites of the backbone's convolutions, as the demo: they add 1.5-3 s to each backbone
    compile and take stage 1 from 11 to 18-19 steps/s) for `LEARNING_STEPS`, evaluated
    on val and ave_like."""
    config = tiny_config(data_dir, batch_size=8)
    config.model.backbone_overrides.kernels = "auto"
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


def run_learning(root: str | os.PathLike, seed: int = 0, overrides: Sequence[str] = ()) -> dict:
    """The learning run of tests/test_learning.py (and bench/learning.py) in `root`: builds
    `LEARNING_WORLD` with `seed`, trains every stage of `learning_config` from random variables
    of that seed (with the shipped ImageNet VGG16 in RNet's image encoder: the model's own
    initialiser would take half a minute to compile), then evaluates baseline and full on val
    and ave_like. `overrides` change config fields as `runs.apply_overrides` does
    (bench/learning.py's `--set`, e.g. "stages.rnet.num_steps=150"). Returns the evaluation's
    results, the stages' last logged metrics (`"stages"`) and the wall seconds of the world,
    the training and the evaluation (`"seconds"`)."""
    root = Path(root)
    started = time.perf_counter()
    config = learning_config(build_data(root / "data", seed=seed, **LEARNING_WORLD))
    config.seed = seed
    config = runs.apply_overrides(config, overrides)
    model = build_model(config.model)
    start = tiny_model.random_variables(model, IMAGE_SIZE, seed=seed)
    config.init_from = str(save_variables(root / "start", with_pretrained_parts(model, start)))
    training_started = time.perf_counter()
    stages = loop.run(config, str(root / "full"), "all")
    evaluation_started = time.perf_counter()
    result = runner.run(
        config,
        root / "eval",
        {"full": str(root / "full")},
        variants=("baseline", "full"),
        grid_pairs=0,
    )
    seconds = {
        "world": training_started - started,
        "training": evaluation_started - training_started,
        "evaluation": time.perf_counter() - evaluation_started,
    }
    return {**result.results, "stages": stages, "seconds": seconds}


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
