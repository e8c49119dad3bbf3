"""Parameter table of a registered backbone.

    python -m aiaic_jax.models ddcolor_tiny [--depth 2] [--guidance_dim 512]

Counts come from the shapes alone (`jax.eval_shape` of init): no memory, no compute, so the
large models print as fast as the small ones. The last line is `total_params=<N>` (the `params`
collection; modules the backbone itself never trains, such as DisColor's SpixelNet, are in it
and counted apart on the line before).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from aiaic_jax.models.backbones import BACKBONE_NAMES, get_backbone, registered
from aiaic_jax.models.guidance import Guidance


def count(tree: Any) -> int:
    """Number of scalars in a tree of arrays or shape structs."""
    return int(sum(np.prod(leaf.shape, dtype=np.int64) for leaf in jax.tree_util.tree_leaves(tree)))


def parameter_rows(
    params: Mapping[str, Any], depth: int, prefix: str = ""
) -> list[tuple[str, int]]:
    """(module path, parameter count) for every module down to `depth` levels, in tree order."""
    rows = []
    for name, subtree in params.items():
        path = f"{prefix}/{name}" if prefix else name
        rows.append((path, count(subtree)))
        if depth > 1 and isinstance(subtree, Mapping):
            rows += parameter_rows(subtree, depth - 1, path)
    return rows


def variable_shapes(name: str, image_size: int | None = None, guidance_dim: int = 0) -> Any:
    """Shapes of the backbone's variables at `image_size` (default: the resolution it is
    registered with), with the DSG included when guidance_dim > 0."""
    backbone = get_backbone(name)
    image_size = image_size or registered(name).resolution
    gray_l = jax.ShapeDtypeStruct((1, image_size, image_size, 1), jnp.float32)
    guidance = None
    if guidance_dim:
        guidance = Guidance(
            jax.ShapeDtypeStruct((1, guidance_dim), jnp.float32),
            jax.ShapeDtypeStruct((1,), jnp.float32),
        )
    return jax.eval_shape(lambda x, g: backbone.init(jax.random.key(0), x, g), gray_l, guidance)


def main() -> None:
    parser = argparse.ArgumentParser(description="Parameter table of a registered backbone.")
    parser.add_argument("name", choices=BACKBONE_NAMES)
    parser.add_argument("--depth", type=int, default=2, help="module levels to list")
    parser.add_argument(
        "--guidance_dim", type=int, default=0, help="include the DSG for a code of this size"
    )
    args = parser.parse_args()

    variables = variable_shapes(args.name, guidance_dim=args.guidance_dim)
    backbone = get_backbone(args.name)
    params = variables["params"]
    total = count(params)
    rows = parameter_rows(params, args.depth)
    width = max(len(path) for path, _ in rows) + 2
    print(f"{args.name}: guidance at {backbone.guidance_point} ({backbone.guidance_channels} ch)")
    print(f"{'module':{width}s}{'params':>14s}{'share':>8s}")
    for path, n in rows:
        indent = "  " * path.count("/")
        label = indent + path.rsplit("/", 1)[-1]
        print(f"{label:{width}s}{n:>14,d}{100 * n / total:>7.1f}%")
    frozen = [name for name in getattr(backbone, "frozen_modules", ()) if name in params]
    if frozen:
        n = sum(count(params[name]) for name in frozen)
        print(f"frozen by the backbone ({', '.join(frozen)}): {n:,d}; trainable: {total - n:,d}")
    state = {k: count(v) for k, v in variables.items() if k != "params"}
    for collection, n in state.items():
        print(f"non-trainable {collection}: {n:,d}")
    print(f"total_params={total}")


if __name__ == "__main__":
    main()
