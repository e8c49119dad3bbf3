"""XLA compile options A/B: one backbone step compiled with each set of options, timed in one
process, one step of each in turn (so that every variant sees the same load), and the time each
took to compile.

    PYTHONPATH=. python bench/compile_options.py --only ddcolor_tiny:256:1 \
        --variants none xla_cpu_prefer_vector_width=512

    PYTHONPATH=. python bench/compile_options.py --variants default \
        default,xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT

A variant is `none` (XLA's defaults) or comma-separated `key=value` XLA options (true/false
and numbers parsed; an item without `=` continues the value before it); `default` is what the
training loop uses (`xla_options.step_compiler_options`), alone or as the first item. The step
is bench/models.py's (forward, or L1/AdamW training step, random variables), in a process
started as train.py starts (`host_memory.retain`; `--host_memory release` for glibc's and JAX's
defaults). Each variant's line ends with the arguments its program copies whole in every step
(XLA's copies of the donated state).
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
import time

import jax

from aiaic_jax.train import xla_options
from bench import models


def _parse(variant: str) -> dict:
    """XLA options from a variant: `none`, or comma-separated items, each `default` (the
    training loop's options) or `key=value`, typed as `models.parse_override` types them; an
    item without `=` continues the value before it (`xla_cpu_experimental_ynn_fusion_type=A,B`)."""
    if variant == "none":
        return {}
    defaults: dict = {}
    items: list[str] = []
    for item in variant.split(","):
        if item == "default":
            defaults = xla_options.step_compiler_options() or {}
        elif "=" in item:
            items.append(item)
        elif items:
            items[-1] += f",{item}"
        else:
            raise SystemExit(f"bench/compile_options.py: {item!r} in {variant!r} is not key=value")
    return {**defaults, **dict(models.parse_override(item) for item in items)}


_COPY = re.compile(r"\n  (?:ROOT )?%[\w.\-]+ = (\w+)\[([\d,]*)\]\S* copy\(%([\w.\-]+)\)")


def _element_bytes(dtype: str) -> int:
    """Bytes of one element of an HLO type: pred 1, else its bits (f32, bf16, s8, c64, ...)."""
    bits = re.search(r"\d+", dtype)
    return max(1, int(bits.group()) // 8) if bits else 1


def argument_copies(hlo_text: str) -> tuple[int, int]:
    """(count, bytes) of the arguments that a compiled program (`Compiled.as_text()`) copies
    whole: XLA copies a donated argument before its buffer is overwritten where it cannot tell
    that every read of the old value comes first. Copies of a reshaped argument are not
    counted."""
    entry = hlo_text[hlo_text.index("\nENTRY") :]
    parameters = set(re.findall(r"\n  %([\w.\-]+) = \S+ parameter\(", entry))
    copies = [(dtype, dims) for dtype, dims, source in _COPY.findall(entry) if source in parameters]
    size = sum(
        _element_bytes(dtype) * math.prod(int(d) for d in dims.split(",") if d)
        for dtype, dims in copies
    )
    return len(copies), size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="ddcolor_tiny:256:1", help="NAME:SIZE:BATCH")
    parser.add_argument("--mode", default="train", choices=("forward", "train"))
    parser.add_argument("--variants", nargs="+", default=["none", "default"])
    parser.add_argument("--steps", type=int, default=8, help="timed rounds after one warm-up")
    parser.add_argument("--host_memory", default="retain", choices=("retain", "release"))
    args = parser.parse_args()
    name, size, batch = args.only.split(":")
    if args.host_memory == "retain":
        from aiaic_jax import host_memory

        host_memory.retain()

    runs, compile_seconds, copies = {}, {}, {}
    for variant in args.variants:
        # bench/models.py compiles with the loop's options; this replaces them per variant.
        with models.recorded_compiles(_parse(variant)) as compiled:
            runs[variant], facts, _ = models._flax_setup(name, int(size), int(batch), args.mode)
        compile_seconds[variant] = facts["compile_s"]
        copies[variant] = argument_copies(compiled[-1].as_text())
    times = {variant: [] for variant in runs}
    for step in range(args.steps + 1):
        for variant, run in runs.items():
            start = time.perf_counter()
            run()
            if step:
                times[variant].append(time.perf_counter() - start)
    print(
        f"{name} {size} bs {batch} {args.mode}, {args.steps} rounds, jax {jax.__version__}, "
        f"host memory: {args.host_memory}"
    )
    for variant, values in times.items():
        print(
            f"{variant:50s} median {statistics.median(values):.3f} s  best {min(values):.3f} s  "
            f"{int(batch) / statistics.median(values):.2f} img/s  "
            f"compiled in {compile_seconds[variant]:.1f} s (tracing and lowering included); "
            f"copies {copies[variant][0]} arguments, {copies[variant][1] / 2**20:.1f} MiB"
        )


if __name__ == "__main__":
    main()
