"""Speed and accuracy of the colour, audio and metric maths at production sizes.

    PYTHONPATH=. python bench/maths.py [--batch 8] [--repeats 5]

Prints one JSON line per measurement: compile time, the median run time of the jitted
function over `--repeats` runs (after one warm-up), and for SSIM and the VGGSound
spectrogram the largest difference from the skimage / scipy reference at full size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy.signal
from skimage.metrics import structural_similarity

from aiaic_jax import audio, color
from aiaic_jax.evaluation import metrics


def _time(fn, *args, repeats: int) -> dict:
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    compile_s = time.perf_counter() - start
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        runs.append(time.perf_counter() - start)
    return {"first_call_s": round(compile_s, 3), "median_s": round(statistics.median(runs), 4)}


def _natural_like_images(batch: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth colour fields with edges and texture, and a perturbed copy."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    images = []
    for _ in range(batch):
        phase = rng.uniform(0, 2 * np.pi, 3)
        field = 0.5 + 0.4 * np.sin(2 * np.pi * (xx[..., None] * rng.uniform(1, 4) + phase))
        field *= (yy[..., None] > rng.uniform(0.2, 0.8)) * 0.5 + 0.5
        field += rng.normal(0, 0.03, field.shape)
        images.append(field)
    target = np.clip(np.stack(images) * 255, 0, 255).round().astype(np.uint8)
    noise = rng.normal(0, 6, target.shape)
    pred = np.clip(target + noise, 0, 255).round().astype(np.uint8)
    return pred, target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    batch, repeats = args.batch, args.repeats
    device = str(jax.devices()[0])

    def report(name: str, **values) -> None:
        print(json.dumps({"bench": name, "device": device, "batch": batch, **values}), flush=True)

    # Colour: Lab of a batch of 256x256 images and the gradient through lab -> rgb.
    rgb = jax.random.uniform(jax.random.key(0), (batch, 256, 256, 3))
    report("rgb_to_lab_256", **_time(jax.jit(color.rgb_to_lab), rgb, repeats=repeats))
    lab = color.rgb_to_lab(rgb)
    grad_fn = jax.jit(jax.grad(lambda ab: jnp.sum(color.l_ab_to_rgb(lab[..., :1], ab))))
    report("grad_l_ab_to_rgb_256", **_time(grad_fn, lab[..., 1:], repeats=repeats))

    # Metrics at the protocol's 256x256.
    pred, target = _natural_like_images(batch, 256, seed=0)
    image_metrics = metrics.ImageMetrics(lpips_net="alexnet")
    report("image_metrics_alexnet_256", **_time(image_metrics, pred, target, repeats=repeats))
    ours = np.asarray(jax.jit(metrics.ssim)(pred, target))
    reference = [
        structural_similarity(
            p,
            t,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=255,
            channel_axis=-1,
        )
        for p, t in zip(pred, target)
    ]
    report(
        "ssim_vs_skimage_256",
        max_abs_diff=float(np.abs(ours - reference).max()),
        mean_ssim=float(np.mean(reference)),
    )

    # Audio: 10 s clips at 16 kHz.
    wave = (np.random.default_rng(1).normal(0, 0.1, (batch, 160000)) * 32767).astype(np.int16)
    vggsound = jax.jit(audio.vggsound_spectrogram)
    report("vggsound_spectrogram_10s", **_time(vggsound, wave, repeats=repeats))
    logmel = jax.jit(lambda w: audio.audio_features(w, "logmel"))
    report("logmel_features_10s", **_time(logmel, wave, repeats=repeats))
    samples = wave[0].astype(np.float64) / 32768
    _, _, psd = scipy.signal.spectrogram(samples, 16000, nperseg=512, noverlap=353)
    log_psd = np.log(psd + 1e-7)
    expected = (log_psd - log_psd.mean()) / (log_psd.std() + 1e-9)
    report(
        "vggsound_vs_scipy_10s",
        max_abs_diff=float(np.abs(np.asarray(vggsound(wave))[0] - expected).max()),
    )


if __name__ == "__main__":
    main()
