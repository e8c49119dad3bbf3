"""Numerical parity of the Flax ChromaGAN with the official Keras ChromaGAN generator.

One script, two steps in two environments. TensorFlow is not a dependency of the project: the
first step runs in a bench-only environment with a CPU TensorFlow 2.15 (its Keras 2.15 keeps
the Keras 2 API the official code is written against), the second in the project's venv. The
first step never imports jax and the second never imports tensorflow.

    # once: the bench-only TensorFlow environment, and the official source out of a checkout
    python3.11 -m venv /tmp/tfenv
    /tmp/tfenv/bin/pip install tensorflow-cpu==2.15.1 h5py
    git -C /path/to/ChromaGAN archive HEAD SOURCE | tar -x -C /tmp/chromagan_official

    # 1. official model, random weights, Model.save (.h5) and its outputs (.npz)
    /tmp/tfenv/bin/python bench/parity_chromagan.py \\
        --official_src /tmp/chromagan_official --out /tmp/parity_chromagan [--batch 2]
    # 2. converts the .h5 with the project's converter and compares (project venv)
    PYTHONPATH=. .venv/bin/python bench/parity_chromagan.py --compare /tmp/parity_chromagan

Step 1 also runs unchanged in the official code's own environment, which writes the .h5 exactly
as the released checkpoint was written (Keras 2.2.4: nested model of class "Model", BatchNorm
axis -1, byte-string attributes) and needs only the cv2 and VGG16 shims below:

    python3.7 -m venv /tmp/tf1env
    /tmp/tf1env/bin/pip install tensorflow==1.15.5 keras==2.2.4 "h5py<3" protobuf==3.20.3

Step 1 imports `SOURCE/ChromaGAN.py` of the official checkout (github.com/pvitoria/ChromaGAN;
`--official_src` is the checkout or its SOURCE folder) and builds the critic and then the
generator with its own `MODEL.discriminator` and `MODEL.colorization_model` (the critic first,
as `MODEL.__init__` does, so that Keras numbers the generator's layers as in a training
session), compiles the generator with its official losses and optimizer, and gives every
weight random values: He-scaled convs, variance-keeping dense layers (the class logits scaled
up so that the softmax is peaked), random biases, and random BatchNorm gamma, beta, moving mean
and moving variance, so that no branch hides behind a trivial initialisation. It saves the
generator with Keras' `Model.save` (the HDF5 layout of the released `my_model_colorization.h5`,
nested VGG16 included) and runs it with `predict` on smooth random grey images in the official
convention (L8 / 255 tiled to three channels, (N, 224, 224, 3)); the inputs, predAB
((ab + 128) / 255) and the class softmax go to an .npz.

Step 2 converts the .h5 with `aiaic_jax.models.backbones.chromagan.convert.convert`, runs the
Flax ChromaGAN in evaluation mode on gray_l = 100 x the official input channel (L in [0, 100])
and prints the largest absolute differences of ab (official [0, 1] units and raw Lab units) and
of the class softmax, each next to the official output's largest |value|.

Shims, all applied from outside (the official files are imported unchanged):
  - `cv2` (both environments): an empty stub module; OpenCV is only used by the official
    image I/O helpers and the dataset reader, neither of which builds the model.
  - `applications.vgg16.VGG16(weights='imagenet')` (both environments): forced to
    `weights=None` (no download; all weights are randomised anyway).
  - Keras 2.15 only, for the Keras 2.2.4 API the 2019 source is written against:
    `keras.layers.merge._Merge` and `keras.layers.advanced_activations.LeakyReLU`, module
    paths registered in `sys.modules` as aliases of Keras 2.15's `_Merge` (in
    `keras.src.layers.merging.base_merge`) and `keras.layers.LeakyReLU`; and
    `Model(input=..., outputs=...)`, the Keras 1 keyword that Keras 2.2.4 still accepted: the
    module's `Model` is replaced by a wrapper that passes it on as `inputs`.
The official `config.py` is imported as it is (paths and sizes only). The official graph hard
codes 224 x 224 (the VGG16 input shape and RepeatVector(28 * 28)), hence `--size 224` only.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import types
from pathlib import Path

import numpy as np

H5_NAME = "chromagan_random.h5"
NPZ_NAME = "chromagan_outputs.npz"
OFFICIAL_SIZE = 224  # fixed by the official graph
# Variance gain of the class logits layer: logits of std ~3 instead of ~0.6, so that the
# softmax is peaked (max ~0.1-0.5) rather than near uniform and its differences mean something.
CLASS_LOGIT_GAIN = 25.0


# Step 1 (TensorFlow environment) -------------------------------------------------------------


def _source_dir(src: Path) -> Path:
    for folder in (src / "SOURCE", src):
        if (folder / "ChromaGAN.py").is_file():
            return folder
    raise SystemExit(f"{src}: not a ChromaGAN checkout (no SOURCE/ChromaGAN.py or ChromaGAN.py)")


def import_official(src: Path) -> types.ModuleType:
    """The official ChromaGAN module, imported under the shims of the module docstring (the
    Keras ones only where Keras is not of the 2.2 line the official code was written for)."""
    import keras

    sys.modules.setdefault("cv2", types.ModuleType("cv2"))
    modern = not hasattr(keras.layers, "merge")  # keras.layers.merge: Keras <= 2.2
    if modern:
        from keras.src.layers.merging.base_merge import _Merge

        aliases = {
            "keras.layers.merge": {"_Merge": _Merge},
            "keras.layers.advanced_activations": {"LeakyReLU": keras.layers.LeakyReLU},
        }
        for name, attributes in aliases.items():
            module = types.ModuleType(name)
            module.__dict__.update(attributes)
            sys.modules[name] = module

    sys.path.insert(0, str(_source_dir(src)))
    official = importlib.import_module("ChromaGAN")

    def model(*args, input=None, **kwargs):  # the Keras 2.2.4 keyword
        if input is not None:
            kwargs["inputs"] = input
        return keras.Model(*args, **kwargs)

    def vgg16(*args, **kwargs):
        return keras.applications.vgg16.VGG16(*args, **{**kwargs, "weights": None})

    if modern:
        official.Model = model
    official.applications = types.SimpleNamespace(vgg16=types.SimpleNamespace(VGG16=vgg16))
    return official


def _all_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)
        else:
            yield layer


def randomise(model, seed: int) -> int:
    """Random values for every weight of the model (nested models included); returns the
    number of values set."""
    from keras import backend as K

    rng = np.random.default_rng(seed)
    count = 0
    for layer in _all_layers(model):
        values = []
        for variable in layer.weights:
            name = variable.name.split("/")[-1].split(":")[0]
            shape = K.int_shape(variable)
            noise = rng.standard_normal(shape)
            if name == "kernel":
                fan_in = int(np.prod(shape[:-1]))
                gain = 2.0 if len(shape) == 4 else 1.0  # ReLU convs; linear dense stacks
                if layer.get_config().get("activation") == "softmax":
                    gain = CLASS_LOGIT_GAIN
                value = noise * np.sqrt(gain / fan_in)
            elif name == "gamma":
                value = 1.0 + 0.2 * noise
            elif name == "moving_variance":
                value = 0.5 + np.abs(noise)
            elif name in ("bias", "beta", "moving_mean"):
                value = 0.1 * noise
            else:
                raise SystemExit(f"{layer.name}: unexpected weight {variable.name}")
            values.append(value.astype(np.float32))
            count += value.size
        if values:
            layer.set_weights(values)
    return count


def grey_inputs(batch: int, size: int, seed: int) -> np.ndarray:
    """Smooth random L8 / 255 images (a coarse pattern upsampled, plus noise) tiled to
    three channels, (batch, size, size, 3), the official model's input."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (batch, size // 16, size // 16, 1))
    l8 = np.repeat(np.repeat(coarse, 16, axis=1), 16, axis=2)
    l8 = np.clip(np.round(l8 + rng.normal(0, 5, l8.shape)), 0, 255)
    return np.tile(l8 / 255.0, (1, 1, 1, 3)).astype(np.float32)


def run_official(args: argparse.Namespace) -> None:
    import keras
    import tensorflow as tf

    start = time.perf_counter()
    if args.size != OFFICIAL_SIZE:
        raise SystemExit(
            f"--size {args.size}: the official graph is fixed to {OFFICIAL_SIZE} x "
            f"{OFFICIAL_SIZE} (VGG16 input shape and RepeatVector(28 * 28) in its source)"
        )
    official = import_official(args.official_src)
    size = OFFICIAL_SIZE
    shapes = types.SimpleNamespace(
        img_shape_1=(size, size, 1), img_shape_2=(size, size, 2), img_shape_3=(size, size, 3)
    )
    official.MODEL.discriminator(shapes)  # built first, as in MODEL.__init__ (layer numbering)
    generator = official.MODEL.colorization_model(shapes)
    generator.compile(loss=["mse", "kld"], optimizer=official.Adam(0.00002, 0.5))
    count = randomise(generator, args.seed)

    args.out.mkdir(parents=True, exist_ok=True)
    h5_path = args.out / H5_NAME
    generator.save(str(h5_path))
    gray = grey_inputs(args.batch, size, args.seed)
    pred_ab, class_softmax = generator.predict(gray, batch_size=args.batch, verbose=0)
    np.savez(
        args.out / NPZ_NAME,
        official_input=gray,
        pred_ab=pred_ab,
        class_softmax=class_softmax,
        meta=json.dumps(
            {"tensorflow": tf.__version__, "keras": keras.__version__, "seed": args.seed}
        ),
    )
    print(f"official ChromaGAN generator (TensorFlow {tf.__version__}, Keras {keras.__version__})")
    print(f"  {count:,} weights randomised, saved to {h5_path}")
    print(f"  inputs and outputs ({args.batch} x {size}x{size}) saved to {args.out / NPZ_NAME}")
    print(
        f"  predAB in [{pred_ab.min():.3f}, {pred_ab.max():.3f}] (std {pred_ab.std():.3f}); "
        "class softmax max per image " + ", ".join(f"{p:.3f}" for p in class_softmax.max(axis=1))
    )
    print(f"  wall time {time.perf_counter() - start:.1f} s")


# Step 2 (project environment) ----------------------------------------------------------------


def _max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def compare(folder: Path) -> None:
    import jax
    import jax.numpy as jnp

    from aiaic_jax.models.backbones.chromagan.convert import convert
    from aiaic_jax.models.backbones.chromagan.model import chromagan, denormalize_ab, normalize_ab

    start = time.perf_counter()
    saved = np.load(folder / NPZ_NAME)
    meta = json.loads(str(saved["meta"]))
    official_input = saved["official_input"]
    official_ab_unit = saved["pred_ab"]
    official_softmax = saved["class_softmax"]

    variables = convert(folder / H5_NAME, "full")
    backbone_vars = {c: v["backbone"] for c, v in variables.items()}
    converted = time.perf_counter()

    gray_l = 100.0 * official_input[..., :1]  # L8 / 255 = L / 100
    model = chromagan("full")
    ab, aux = jax.jit(lambda v, x: model.apply(v, x, train=False))(
        backbone_vars, jnp.asarray(gray_l)
    )
    ab_unit = np.asarray(normalize_ab(ab))
    softmax = np.asarray(jax.nn.softmax(aux["class_logits"], axis=-1))
    official_ab = np.asarray(denormalize_ab(official_ab_unit))

    batch, height, width, _ = official_input.shape
    print(
        f"ChromaGAN (official: TensorFlow {meta['tensorflow']}, Keras {meta['keras']}, random "
        f"weights, seed {meta['seed']}), random grey images: batch {batch}, {height}x{width}"
    )
    print("evaluation mode, largest |flax - official| (and the official's largest |value|):")
    rows = {
        "ab, official units (ab+128)/255": (ab_unit, official_ab_unit),
        "ab, raw Lab": (ab, official_ab),
        "class softmax": (softmax, official_softmax),
    }
    for name, (ours, theirs) in rows.items():
        print(f"  {name:32s} {_max_diff(ours, theirs):.3e}   ({np.abs(theirs).max():.3e})")
    same_top = np.mean(np.argmax(softmax, -1) == np.argmax(official_softmax, -1))
    print(f"  class top-1 agreement            {same_top:.0%}")
    print(
        f"wall time: convert {converted - start:.1f} s, forward and compare "
        f"{time.perf_counter() - converted:.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--official_src", type=Path, help="step 1: official ChromaGAN checkout")
    mode.add_argument("--compare", type=Path, help="step 2: the --out folder of step 1")
    parser.add_argument("--out", type=Path, default=Path("/tmp/parity_chromagan"))
    parser.add_argument("--size", type=int, default=OFFICIAL_SIZE, help="image size (224 only)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.compare is not None:
        compare(args.compare)
    else:
        run_official(args)


if __name__ == "__main__":
    main()
