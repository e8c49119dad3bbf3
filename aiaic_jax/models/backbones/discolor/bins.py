"""DisColor's 313 colour classes: quantised ab bins, their empirical prior and the class weights
that rebalance its cross-entropy.

The bins are those of Zhang et al. 2016 ("Colorful Image Colorization"): the centres of the
10 x 10 ab cells, on a grid of multiples of 10 (a in [-90, 100], b in [-110, 100]), that hold
in-gamut colours; the prior is how often ImageNet pixels fall in each. Both ship as data beside
this file (`data/`, provenance in `data/PROVENANCE.md`), byte for byte the files of the official
DisColor repository. Class q is row q of both files; the rows run in order of a, then b, which
is also the order in which the official code numbers the in-gamut cells, so the official labels
and prior agree with these.

Units: ab in raw Lab units (as everywhere in the project), not DisColor's ab / 110.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

NUM_BINS = 313
DATA_DIR = Path(__file__).resolve().parent / "data"
_CENTRES_FILE = "gamut_pts.npy"
_PRIOR_FILE = "gamut_probs.npy"


@functools.cache
def _load(name: str, shape: tuple[int, ...]) -> np.ndarray:
    path = DATA_DIR / name
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: DisColor's colour-bin data is missing; the package was installed without "
            "its data files (see pyproject.toml, [tool.setuptools.package-data])"
        )
    values = np.load(path, allow_pickle=False)
    if values.shape != shape:
        raise ValueError(f"{path}: expected shape {shape}, found {values.shape}")
    values.setflags(write=False)  # cached: shared by every caller
    return values


def bin_centres() -> np.ndarray:
    """The 313 bin centres [313, 2] (a, b) in raw Lab units, float32."""
    return _load(_CENTRES_FILE, (NUM_BINS, 2)).astype(np.float32)


def bin_prior() -> np.ndarray:
    """The empirical probability of each bin [313], float32; every entry > 0, sum 1."""
    return _load(_PRIOR_FILE, (NUM_BINS,)).astype(np.float32)


def nearest_bin(ab: jax.Array) -> jax.Array:
    """The class of each colour: the index of the nearest bin centre (Euclidean in ab).

    ab: [..., 2] raw Lab units. Returns int32 [...]. DisColor labels a colour by the argmax of
    its soft encoding (Gaussian weights, sigma 5, on its 5 nearest bins), which is the nearest
    bin: the weights fall with distance.
    """
    ab = jnp.asarray(ab, jnp.float32)
    if ab.ndim < 1 or ab.shape[-1] != 2:
        raise ValueError(f"ab must have shape [..., 2], got {ab.shape}")
    centres = jnp.asarray(bin_centres())
    squared = jnp.sum(jnp.square(ab[..., None, :] - centres), axis=-1)  # [..., 313]
    return jnp.argmin(squared, axis=-1).astype(jnp.int32)


@functools.cache
def _rebalance_weights(lam: float) -> np.ndarray:
    prior = _load(_PRIOR_FILE, (NUM_BINS,)).astype(np.float64)
    weights = 1.0 / ((1.0 - lam) * prior + lam / NUM_BINS)
    weights = weights / np.sum(prior * weights)
    weights = weights.astype(np.float32)
    weights.setflags(write=False)
    return weights


def rebalance_weights(lam: float = 0.5) -> np.ndarray:
    """Class weights [313], float32: w = 1 / ((1 - lam) p + lam / 313) over the prior p,
    scaled so that sum p w = 1 (the expected weight of a pixel is 1).

    lam in [0, 1] mixes the prior with the uniform distribution: 0 weighs each class by
    1 / p, 1 weighs all alike. DisColor's default 0.5 gives w in about [0.097, 6.17].
    """
    lam = float(lam)
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"rebalance lambda must be in [0, 1], got {lam}")
    return np.array(_rebalance_weights(lam))
