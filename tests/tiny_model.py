"""A small AIAIC (DDColor demo backbone, narrow branches) and its variables, for tests of
evaluation and inference.

`random_variables` fills the model's variable tree from its shapes with a seeded numpy
generator instead of running `init_variables`: the compiled initialiser of the whole model
takes about half a minute on a 2-core CPU, these trees take a second. Kernels are scaled by
their fan-in, normalisation statistics are sane, and every spectral norm gets the singular
vectors of its kernel, so outputs are finite, vary with the input and differ between seeds.
"""

from __future__ import annotations

import functools
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from aiaic_jax.models.aiaic import AIAIC, build_model, default_model_config


def model_config() -> ml_collections.ConfigDict:
    config = default_model_config()
    config.backbone = "ddcolor_demo"
    # XLA's own convolutions rather than the CPU rewrites: the tests that use this model train
    # and evaluate a few steps, where compiling is the cost, and the rewrites compile slower
    # (tests/test_kernels.py checks every rewrite against these in values and gradients).
    config.backbone_overrides = ml_collections.ConfigDict(
        {"num_color_layers": 1, "num_queries": 4, "kernels": "native"}
    )
    config.semantic_dim = 16
    config.semantic_channels = (8, 8, 16, 16)
    config.semantic_hidden = 32
    config.guidance_dim = 16
    config.guidance_hidden = 32
    config.audio_width = 8
    config.a2v_hidden = (32,)
    config.relevance_dim = 16
    config.relevance_hidden = 32
    config.relevance_audio_width = 8
    return config


def run_config(
    data_dir: str = "unused",
    *,
    data_name: str = "tiny",
    image_size: int = 32,
    audio_seconds: float = 0.5,
    eval_batch_size: int = 4,
    eval_splits: tuple[str, ...] = ("val", "ave_like"),
) -> ml_collections.ConfigDict:
    """A whole run config (`model`, `data`, `audio`) over a built synthetic dataset."""
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.model = model_config()
    config.audio = ml_collections.ConfigDict({"kind": "vggsound"})
    config.data = ml_collections.ConfigDict(
        dict(
            name="synthetic",
            config_name=data_name,
            data_dir=data_dir,
            train_split="train",
            eval_splits=eval_splits,
            image_size=image_size,
            audio_seconds=audio_seconds,
            batch_size=eval_batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=0,
        )
    )
    return config


def write_config_file(path: str | os.PathLike, config: ml_collections.ConfigDict) -> str:
    """A config .py file (for `--config`) that returns `config`."""
    path = os.fspath(path)
    with open(path + ".json", "w") as f:
        json.dump(config.to_dict(), f)
    with open(path, "w") as f:
        f.write(
            "import json\n\nimport ml_collections\n\n\ndef get_config():\n"
            f"    with open({path + '.json'!r}) as f:\n"
            "        return ml_collections.ConfigDict(json.load(f))\n"
        )
    return path


OUTPUT_SIGMA_FACTOR = 0.02


@functools.cache
def _shapes(model: AIAIC, image_size: int):
    gray_l = jax.ShapeDtypeStruct((1, image_size, image_size, 1), jnp.float32)
    color_rgb = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
    spectrogram = jax.ShapeDtypeStruct((1, 257, 49), jnp.float32)
    init = functools.partial(model.init, method=AIAIC.init_all)
    return jax.eval_shape(init, jax.random.key(0, impl="rbg"), gray_l, color_rgb, spectrogram)


def random_variables(model: AIAIC, image_size: int, seed: int = 0) -> dict:
    """Every variable of `model` at model resolution `image_size`, drawn from `seed`."""
    rng = np.random.default_rng(seed)
    shapes = _shapes(model, image_size)
    flat = jax.tree_util.tree_flatten_with_path(shapes)[0]

    def draw(path, spec):
        name = path[-1].key
        shape = spec.shape
        if name == "kernel":
            fan_in = int(np.prod(shape[:-1])) or 1
            value = rng.normal(0.0, 1.0 / np.sqrt(fan_in), shape)
        elif name == "scale":
            value = 1.0 + 0.1 * rng.normal(size=shape)
        elif name == "gamma":
            value = 0.1 + 0.05 * rng.normal(size=shape)
        elif name == "var":
            value = 1.0 + 0.2 * rng.uniform(size=shape)
        elif name == "mean":
            value = 0.1 * rng.normal(size=shape)
        else:  # biases, embeddings, query features, singular vectors (fixed below)
            value = 0.1 * rng.normal(size=shape)
        return np.asarray(value, spec.dtype)

    leaves = {tuple(k.key for k in path): draw(path, spec) for path, spec in flat}
    for path in [p for p in leaves if p[0] == "batch_stats" and p[-1] == "u"]:
        module = path[1:-1]
        matrix = leaves[("params", *module, "kernel")].reshape(-1, leaves[path].shape[0])
        u = rng.normal(size=matrix.shape[1])
        for _ in range(30):  # power iteration: sigma = v^T W u is then the top singular value
            v = matrix @ u
            v /= np.linalg.norm(v)
            u = v @ matrix
            u /= np.linalg.norm(u)
        if module[-1] == "refine":
            # The output layer: a smaller stored sigma makes ab span tens of Lab units, as a
            # trained model's does (random features alone give ab of about 1).
            u *= OUTPUT_SIGMA_FACTOR
        leaves[path] = u.astype(np.float32)
        leaves[("batch_stats", *module, "v")] = v.astype(np.float32)

    tree: dict = {}
    for path, value in leaves.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return tree


def tiny_model() -> AIAIC:
    return build_model(model_config())
