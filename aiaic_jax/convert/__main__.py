"""Convert an official checkpoint to Flax variables, written as an orbax checkpoint.

    python -m aiaic_jax.convert ddcolor  ddcolor_paper_tiny.pth     runs/init/ddcolor_tiny
    python -m aiaic_jax.convert convnext convnext_tiny_22k_224.pth  runs/init/convnext_tiny
    python -m aiaic_jax.convert vggsound H.pth.tar                  runs/init/vggsound_audio
    python -m aiaic_jax.convert discolor disco-beta.pth.tar          runs/init/discolor

The output directory holds a partial variable tree of the composed model (`backbone`, or
`audio` for VGGSound) to name as a stage's `init_from`, or a frozen network a loss reads
(vgg16, vgg19). `--size` makes sure that a DDColor, ConvNeXt or ChromaGAN checkpoint is of the
expected size (without it the size is read from the checkpoint); DisColor's is "full" unless
`--size demo` is given, and a checkpoint of the other size is named as such.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from aiaic_jax.convert.common import CheckpointMismatch, save_variables
from aiaic_jax.models import backbones

# The backbones' converters (their registry) and the audio network's.
CONVERTERS: dict[str, backbones.Converter] = {
    **backbones.CONVERTERS,
    "vggsound": backbones.Converter(
        "aiaic_jax.convert.vggsound", "convert_vggsound", description="VGGSound audio network"
    ),
}
_SIZED = tuple(name for name, entry in CONVERTERS.items() if entry.sized)


def converter(name: str) -> Callable[..., Any]:
    """The conversion function registered as `name` (path -> variables)."""
    module, function = CONVERTERS[name].module, CONVERTERS[name].function
    try:
        return getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError) as e:
        raise SystemExit(
            f"error: the {name} converter ({module}:{function}) is unavailable: {e}"
        ) from e


def _summary(tree: Mapping[str, Any], depth: int = 3, prefix: str = "") -> list[str]:
    lines = []
    for key, value in tree.items():
        path = f"{prefix}/{key}" if prefix else key
        leaves = jax.tree_util.tree_leaves(value)
        n = sum(int(np.prod(np.shape(leaf))) for leaf in leaves)
        lines.append(f"  {path}: {len(leaves)} arrays, {n:,d} values")
        if depth > 1 and isinstance(value, Mapping):
            lines += _summary(value, depth - 1, path)
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Convert an official checkpoint to an orbax checkpoint of Flax variables."
    )
    parser.add_argument("kind", choices=sorted(CONVERTERS))
    parser.add_argument("input", type=Path, help="the official checkpoint file")
    parser.add_argument("output", type=Path, help="directory to write (must not exist)")
    parser.add_argument(
        "--size",
        default=None,
        help="ddcolor/convnext: expected size (tiny, large); chromagan (full, demo); "
        "discolor (full, the default; demo)",
    )
    args = parser.parse_args(argv)

    if args.output.exists():
        parser.error(f"{args.output} already exists; choose a new directory")
    if args.size is not None and args.kind not in _SIZED:
        parser.error(f"--size applies to {', '.join(_SIZED)}, not {args.kind}")
    convert = converter(args.kind)
    try:
        variables = convert(args.input, args.size) if args.kind in _SIZED else convert(args.input)
    except (CheckpointMismatch, FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from e
    written = save_variables(args.output, variables)
    print(f"wrote {written} from {args.input} ({args.kind}):")
    print("\n".join(_summary(variables)))


if __name__ == "__main__":
    main()
