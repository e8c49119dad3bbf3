"""Builds the default synthetic world and measures it: build time, size, and the probes.

PYTHONPATH=. python bench/synthetic.py [--data_dir DIR]

Prints the wall and CPU time of the build, the size of each split on disk, the chroma of `val`,
the PSNR of a grey and of a class-hue prediction made from the true L, and the accuracy of the
probes of tests/test_synthetic.py trained on `train` and tested on `val`: class from grayscale L
statistics (should be chance), class and scene from the audio spectrum, scene from L.
"""

import os
import tempfile
import time

import numpy as np
import tensorflow_datasets as tfds
from absl import app, flags
from skimage import color

from aiaic_jax.data.builders import synthetic as world
from tests import test_synthetic as probes

_DATA_DIR = flags.DEFINE_string("data_dir", None, "Build here (default: a temporary directory).")


def main(argv):
    del argv
    tfds.disable_progress_bar()
    data_dir = _DATA_DIR.value or tempfile.mkdtemp(prefix="synthetic_")
    config = world.SyntheticConfig(name="default")
    builder = world.Synthetic(data_dir=data_dir, config=config)
    wall, cpu = time.perf_counter(), time.process_time()
    report = builder.build()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(report.format())
    print(f"build: {wall:.1f} s wall, {cpu:.1f} s CPU ({os.cpu_count()} cores)")
    total = 0
    for split in world.SPLITS:
        size = sum(
            os.path.getsize(os.path.join(builder.data_dir, f))
            for f in os.listdir(builder.data_dir)
            if f.startswith(f"synthetic-{split}.")
        )
        total += size
        print(f"  {split}: {size / 2**20:.1f} MiB")
    print(f"  total: {total / 2**20:.1f} MiB")

    sources = tfds.builder_from_directory(builder.data_dir).as_data_source()
    train = [sources["train"][i] for i in range(len(sources["train"]))]
    val = [sources["val"][i] for i in range(len(sources["val"]))]

    def scene(split):
        return lambda record: probes._scene(config, split, record)

    def accuracy(probe, feature, train_target, val_target):
        predict = probe(
            np.stack([feature(r) for r in train]), np.array([train_target(r) for r in train])
        )
        predicted = predict(np.stack([feature(r) for r in val]))
        return np.mean(predicted == np.array([val_target(r) for r in val]))

    label = lambda record: record["label"]
    results = {
        "class from L statistics (logistic)": accuracy(
            probes._logistic_probe, probes._lightness_statistics, label, label
        ),
        "class from audio (nearest mean)": accuracy(
            probes._nearest_mean_probe, probes._audio_profile, label, label
        ),
        "scene from L orientation energy (logistic)": accuracy(
            probes._logistic_probe,
            probes._lightness_orientation_energy,
            scene("train"),
            scene("val"),
        ),
        "scene from audio (nearest mean)": accuracy(
            probes._nearest_mean_probe, probes._audio_profile, scene("train"), scene("val")
        ),
    }
    _print_colour_statistics(config, val)
    print(f"probes, trained on train ({len(train)}), tested on val ({len(val)}):")
    majority = np.bincount([r["label"] for r in val]).max() / len(val)
    print(
        f"  chance: class {1 / config.train_classes:.3f} (most frequent class in val "
        f"{majority:.3f}), scene {1 / config.scenes:.3f}"
    )
    for name, value in results.items():
        print(f"  {name}: {value:.3f}")


def _psnr(prediction: np.ndarray, target: np.ndarray) -> float:
    error = np.mean((prediction.astype(np.float64) - target.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / error))


def _print_colour_statistics(config: world.SyntheticConfig, val: list) -> None:
    """Chroma of the stored images, and PSNR of two predictions made from the true L.

    grey: ab = 0 (what a model that cannot know the hue is pushed towards); class hue: the
    class's hue without the per-clip jitter and the mean saturation (what the audio allows).
    """
    chroma, grey_psnr, class_psnr = [], [], []
    infos = world.classes(config)
    for record in val:
        lab = color.rgb2lab(record["image"])
        gray_l = lab[..., 0]
        chroma.append(np.hypot(lab[..., 1], lab[..., 2]).ravel())
        grey = np.stack([gray_l, 0 * gray_l, 0 * gray_l], axis=-1)
        grey_psnr.append(_psnr(np.round(color.lab2rgb(grey) * 255), record["image"]))
        hue = np.deg2rad(infos[record["label"]].hue_deg)
        mean_saturation = np.mean(world.SATURATION_RANGE)
        guess = np.minimum(config.max_chroma, mean_saturation * world.gamut_chroma(gray_l))
        lab = np.stack([gray_l, guess * np.cos(hue), guess * np.sin(hue)], axis=-1)
        class_psnr.append(_psnr(np.round(color.lab2rgb(lab) * 255), record["image"]))
    chroma = np.concatenate(chroma)
    print(
        f"val chroma (Lab units): mean {chroma.mean():.1f}, median {np.median(chroma):.1f}, "
        f"95th percentile {np.percentile(chroma, 95):.1f}"
    )
    print(
        f"val PSNR from the true L (RGB uint8, peak 255, per image): grey {np.mean(grey_psnr):.2f}"
        f" dB, class hue {np.mean(class_psnr):.2f} dB"
    )


if __name__ == "__main__":
    app.run(main)
