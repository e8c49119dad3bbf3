"""The CPU rewrites against their native forms (`layers.use_rewrites`): forward and
forward + backward time of each at DDColor-T's shapes (256 px; the sub-pixel projection also at
128 px and at the DDColor demo's shapes, either side of `layers.SUBPIXEL_LOOP_MIN_ELEMENTS`).

    PYTHONPATH=. python bench/kernels.py [--batch 4] [--repeats 5] [--only attention "attn by head"]

Per operation and shape: the best of --repeats runs of the jitted forward, and of the jitted
gradient of a fixed linear read-out (forward + VJP with respect to every input), for the rewrite
and the native form, and their ratio. This is what `kernels="auto"` bets on: the rewrites win on
the CPU; a GPU or TPU takes the native forms.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from aiaic_jax.models.backbones.ddcolor.decoder import (
    _native_attention,
    attention_by_head,
    dot_product_attention,
)
from aiaic_jax.models.backbones.layers import (
    conv,
    conv_stride1,
    depthwise_conv,
    depthwise_conv_native,
    matmul_by_rows,
    subpixel_projection_by_subpixel,
    subpixel_projection_native,
)


def _cases(batch: int):
    """(operation, shape label, rewrite, native, input shapes) at DDColor-T 256 px."""
    cases = []
    for size, channels in ((64, 96), (16, 384)):  # ConvNeXt stages 0 and 2
        cases.append(
            (
                "depthwise 7x7",
                f"{size}x{size}x{channels}",
                depthwise_conv,
                depthwise_conv_native,
                [(batch, size, size, channels), (7, 7, channels)],
            )
        )
    # Dense layers and 1x1 convs (`layers.matmul_by_rows`): ConvNeXt's pwconv1 and pwconv2 in
    # stages 0 and 2, the 1/8-scale U-Net block's upsampling conv, the colour decoder's FFN.
    for rows, c_in, c_out in (
        ((64, 64), 96, 384),
        ((64, 64), 384, 96),
        ((16, 16), 384, 1536),
        ((16, 16), 1536, 384),
        ((16, 16), 512, 2048),
        ((100,), 256, 2048),
    ):
        cases.append(
            (
                "dense",
                f"{'x'.join(map(str, rows))}x{c_in}->{c_out}",
                matmul_by_rows,
                jnp.matmul,
                [(batch, *rows, c_in), (c_in, c_out)],
            )
        )
    for size, c_in, c_out in ((64, 352, 256), (32, 704, 512), (16, 896, 512)):  # U-Net blocks
        cases.append(
            (
                "conv 3x3",
                f"{size}x{size}x{c_in}->{c_out}",
                lambda x, k: conv_stride1(x, k, 1),
                lambda x, k: conv(x, k, 1, 1),
                [(batch, size, size, c_in), (3, 3, c_in, c_out)],
            )
        )
    # The colour decoder's cross-attention, per scale: all heads at once, and the loop over the
    # heads that the CPU takes from `ATTENTION_LOOP_MIN_KEYS` keys up.
    for name, rewrite, scales in (
        ("attention", dot_product_attention, (4096, 1024, 256)),
        ("attn by head", attention_by_head, (4096, 1024, 256)),
    ):
        for keys in scales:
            cases.append(
                (
                    name,
                    f"100 queries x {keys} keys",
                    rewrite,
                    _native_attention,
                    [(batch, 100, 8, 32), (batch, keys, 8, 32), (batch, keys, 8, 32)],
                )
            )
    # The last upsampling times the refine layer's matrix: DDColor-T at 256 px, at 128 px with one
    # image (the smallest pictures that take the loop, `layers.SUBPIXEL_LOOP_MIN_ELEMENTS`), and
    # the DDColor demo (64 px, 1/32 of that per picture: the native form) at its batch of 16.
    for label, sample, channels, in_channels, samples in (
        ("T 256px", 64, 256, 256, batch),
        ("T 128px", 32, 256, 256, 1),
        ("demo 64px", 16, 32, 32, 16),
    ):
        cases.append(
            (
                "sub-pixel proj",
                f"{label} x{samples}: {sample}x{sample}x{16 * channels}",
                subpixel_projection_by_subpixel,
                subpixel_projection_native,
                [
                    (samples, sample, sample, in_channels),
                    (in_channels, 16 * channels),
                    (16 * channels,),
                    (samples, channels, 2),
                ],
            )
        )
    return cases


def _best(function, args, repeats: int) -> float:
    jax.block_until_ready(function(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(function(*args))
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(dict.fromkeys(case[0] for case in _cases(1))),
        metavar="OPERATION",
        help="these operations only: %(choices)s",
    )
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}, {os.cpu_count()} CPUs")
    print(
        f"{'operation':14s} {'shape':26s} {'fwd rewrite':>11s} {'fwd native':>10s} {'ratio':>6s} "
        f"{'f+b rewrite':>11s} {'f+b native':>10s} {'ratio':>6s} load"
    )
    rng = np.random.default_rng(0)
    for name, label, rewrite, native, shapes in _cases(args.batch):
        if args.only and name not in args.only:
            continue
        inputs = [jnp.asarray(rng.standard_normal(s), jnp.float32) for s in shapes]
        readout = jnp.asarray(rng.standard_normal(jax.eval_shape(native, *inputs).shape))
        argnums = tuple(range(len(inputs)))
        timings = []
        for function in (rewrite, native):
            forward = jax.jit(function)
            gradient = jax.jit(
                jax.grad(lambda *a, f=function, r=readout: jnp.sum(f(*a) * r), argnums)
            )
            timings.append(
                (_best(forward, inputs, args.repeats), _best(gradient, inputs, args.repeats))
            )
        (fwd_r, both_r), (fwd_n, both_n) = timings
        print(
            f"{name:14s} {label:26s} {fwd_r * 1e3:9.1f}ms {fwd_n * 1e3:8.1f}ms "
            f"{fwd_n / fwd_r:6.2f} {both_r * 1e3:9.1f}ms {both_n * 1e3:8.1f}ms "
            f"{both_n / both_r:6.2f} {os.getloadavg()[0]:.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
