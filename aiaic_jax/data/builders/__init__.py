"""TFDS builders of image-audio pairs, by the name the build command line uses.

Modules are imported on demand so that one builder's optional needs never break another.
"""

import importlib

from aiaic_jax.data.builders.common import (
    BuildReport,
    PairBuilder,
    pair_features,
    read_report,
)

BUILDERS = {
    "synthetic": "aiaic_jax.data.builders.synthetic:Synthetic",
    "vggsound": "aiaic_jax.data.builders.vggsound:Vggsound",
    "ave": "aiaic_jax.data.builders.ave:Ave",
    "folder": "aiaic_jax.data.builders.folder:Folder",
}


def builder_class(name: str) -> type[PairBuilder]:
    """The builder class registered under `name` (one of `BUILDERS`)."""
    if name not in BUILDERS:
        raise ValueError(f"unknown dataset builder {name!r}; known: {', '.join(BUILDERS)}")
    module, cls = BUILDERS[name].split(":")
    return getattr(importlib.import_module(module), cls)


__all__ = [
    "BUILDERS",
    "BuildReport",
    "PairBuilder",
    "builder_class",
    "pair_features",
    "read_report",
]
