"""DisColor's colour bins (models/backbones/discolor/bins.py): the shipped data, the labels of
colours against the official soft-encoding argmax (written here in numpy), and the class
weights."""

import hashlib

import jax.numpy as jnp
import numpy as np
import pytest

from aiaic_jax.models.backbones.discolor import bins

SHA256 = {
    "gamut_pts.npy": "b5dec01315c34f43f1c8c089e84c45ae35d1838d8e77ed0e7ca930f79ffa450e",
    "gamut_probs.npy": "19d00659c7d6f6ee47456fd2c19c86a073f7124875e3d5ab9d601864e062b56c",
}


def test_data_files_are_the_official_bytes_with_their_provenance():
    for name, digest in SHA256.items():
        assert hashlib.sha256((bins.DATA_DIR / name).read_bytes()).hexdigest() == digest
    assert "3c48626" in (bins.DATA_DIR / "PROVENANCE.md").read_text()


def test_313_bins_on_the_10_unit_grid_ordered_by_a_then_b():
    centres = bins.bin_centres()
    assert centres.shape == (313, 2) and centres.dtype == np.float32
    assert np.all(centres % 10 == 0)
    assert len({tuple(c) for c in centres}) == 313
    assert centres[:, 0].min() == -90 and centres[:, 0].max() == 100
    assert centres[:, 1].min() == -110 and centres[:, 1].max() == 100
    # The official code numbers the in-gamut cells of its grid in this order (a, then b), so its
    # labels index the prior's rows as ours do.
    order = np.lexsort((centres[:, 1], centres[:, 0]))
    np.testing.assert_array_equal(order, np.arange(313))


def test_prior_is_a_distribution_with_every_bin_possible():
    prior = bins.bin_prior()
    assert prior.shape == (313,)
    assert abs(float(prior.sum()) - 1.0) < 1e-5
    assert np.all(prior > 0)


def _soft_encoding_argmax(ab: np.ndarray, neighbours: int = 5, sigma: float = 5.0) -> np.ndarray:
    """The official label: Gaussian weights on the 5 nearest bins, normalised, scattered into
    313 classes, argmax."""
    centres = bins.bin_centres().astype(np.float64)
    flat = ab.reshape(-1, 2).astype(np.float64)
    distances = np.linalg.norm(flat[:, None, :] - centres[None], axis=-1)  # [N, 313]
    nearest = np.argsort(distances, axis=1)[:, :neighbours]
    gauss = np.exp(-(np.take_along_axis(distances, nearest, 1) ** 2) / (2 * sigma**2))
    gauss /= gauss.sum(axis=1, keepdims=True)
    encoding = np.zeros_like(distances)
    np.put_along_axis(encoding, nearest, gauss, axis=1)
    return encoding.argmax(axis=1).reshape(ab.shape[:-1])


def test_nearest_bin_is_the_argmax_of_the_official_soft_encoding():
    rng = np.random.default_rng(0)
    ab = rng.uniform(-110, 110, (4, 16, 16, 2)).astype(np.float32)
    labels = bins.nearest_bin(jnp.asarray(ab))
    assert labels.shape == (4, 16, 16) and labels.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(labels), _soft_encoding_argmax(ab))


def test_a_bin_centre_is_its_own_label():
    centres = bins.bin_centres()
    np.testing.assert_array_equal(np.asarray(bins.nearest_bin(centres + 1.0)), np.arange(313))


def test_rebalance_weights_match_the_official_formula_and_range():
    prior = bins.bin_prior().astype(np.float64)
    weights = bins.rebalance_weights(0.5)
    assert weights.shape == (313,) and weights.dtype == np.float32
    np.testing.assert_allclose(np.sum(prior * weights), 1.0, rtol=1e-5)
    assert weights.min() == pytest.approx(0.0965, abs=5e-4)
    assert weights.max() == pytest.approx(6.175, abs=5e-3)
    # Rarer bins weigh more; lambda 1 weighs every bin alike.
    assert np.all(np.diff(weights[np.argsort(prior)]) <= 1e-6)
    np.testing.assert_allclose(bins.rebalance_weights(1.0), np.ones(313), rtol=1e-5)
    with pytest.raises(ValueError, match="lambda"):
        bins.rebalance_weights(1.5)


def test_returned_arrays_are_copies():
    bins.bin_centres()[0] = 1e6
    bins.rebalance_weights()[0] = 1e6
    assert bins.bin_centres()[0, 0] == -90
    assert bins.rebalance_weights()[0] < 1e6
