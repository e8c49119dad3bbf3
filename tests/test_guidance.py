"""Semantic encoder E_s (Eq. 3), guidance MLP (Eq. 4), AdaIN SG (Eq. 5) and DSG (Eq. 8)."""

import jax
import jax.numpy as jnp
import numpy as np

from aiaic_jax.models.guidance import (
    DynamicSemanticGuidance,
    Guidance,
    GuidanceMLP,
    SemanticEncoder,
    SemanticGuidance,
    l2_normalize,
)

B, H, W, C, DC = 3, 8, 6, 5, 7
# Threefry keys make random initialisers slow to compile on CPU; rbg keys do not.
INIT_KEY = jax.random.key(0, impl="rbg")


def _features_and_code(seed=0):
    kx, kc = jax.random.split(jax.random.key(seed))
    x = 3.0 * jax.random.normal(kx, (B, H, W, C)) + 2.0
    c = jax.random.normal(kc, (B, DC))
    return x, c


def _nontrivial_sg_params(params, seed=1):
    """Random last layers, so gamma(c) and beta(c) differ per sample and channel."""
    k1, k2, k3 = jax.random.split(jax.random.key(seed, impl="rbg"), 3)
    params = jax.tree.map(lambda p: p, params)
    params["gamma_1"]["kernel"] = 0.3 * jax.random.normal(k1, params["gamma_1"]["kernel"].shape)
    params["gamma_1"]["bias"] = 1.5 + jnp.zeros_like(params["gamma_1"]["bias"])
    params["beta_1"]["kernel"] = jax.random.normal(k2, params["beta_1"]["kernel"].shape)
    params["beta_1"]["bias"] = jax.random.normal(k3, params["beta_1"]["bias"].shape)
    return params


def _mlp(p, c):
    h = jax.nn.relu(c @ p[0]["kernel"] + p[0]["bias"])
    return h @ p[1]["kernel"] + p[1]["bias"]


def test_sg_output_has_mean_beta_and_std_gamma_per_channel():
    x, c = _features_and_code()
    sg = SemanticGuidance(features=C, hidden=16)
    params = _nontrivial_sg_params(sg.init(INIT_KEY, x, c)["params"])
    out = sg.apply({"params": params}, x, c)
    gamma = _mlp([params["gamma_0"], params["gamma_1"]], c)  # [B, C]
    beta = _mlp([params["beta_0"], params["beta_1"]], c)
    assert float(jnp.std(gamma)) > 0.1 and float(jnp.std(beta)) > 0.1
    np.testing.assert_allclose(jnp.mean(out, axis=(1, 2)), beta, atol=1e-4)
    # sigma includes eps = 1e-5 against var(x) ~ 9, hence the relative tolerance.
    np.testing.assert_allclose(jnp.std(out, axis=(1, 2)), jnp.abs(gamma), rtol=1e-4)


def test_sg_starts_as_instance_normalisation():
    x, c = _features_and_code()
    sg = SemanticGuidance(features=C, hidden=16)
    out = sg.apply(sg.init(INIT_KEY, x, c), x, c)
    expected = (x - x.mean(axis=(1, 2), keepdims=True)) / jnp.sqrt(
        x.var(axis=(1, 2), keepdims=True) + 1e-5
    )
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_dsg_with_zero_relevance_returns_features_exactly():
    x, c = _features_and_code()
    dsg = DynamicSemanticGuidance(features=C, hidden=16)
    variables = dsg.init(INIT_KEY, x, Guidance(c, jnp.ones(B)))
    variables = {"params": {"sg": _nontrivial_sg_params(variables["params"]["sg"])}}
    out = dsg.apply(variables, x, Guidance(c, jnp.zeros(B)))
    np.testing.assert_array_equal(out, x)


def test_dsg_with_unit_relevance_is_sg_and_mixes_per_sample():
    x, c = _features_and_code()
    dsg = DynamicSemanticGuidance(features=C, hidden=16)
    variables = dsg.init(INIT_KEY, x, Guidance(c, jnp.ones(B)))
    sg_params = _nontrivial_sg_params(variables["params"]["sg"])
    variables = {"params": {"sg": sg_params}}
    sg_out = SemanticGuidance(features=C, hidden=16).apply({"params": sg_params}, x, c)
    np.testing.assert_allclose(dsg.apply(variables, x, Guidance(c, jnp.ones(B))), sg_out, atol=1e-6)
    r = jnp.array([0.0, 0.25, 1.0])
    mixed = dsg.apply(variables, x, Guidance(c, r))
    np.testing.assert_array_equal(mixed[0], x[0])
    np.testing.assert_allclose(mixed[1], 0.25 * sg_out[1] + 0.75 * x[1], atol=1e-5)
    np.testing.assert_allclose(mixed[2], sg_out[2], atol=1e-6)


def test_semantic_encoder_gives_unit_norm_semantics_of_dimension_d():
    rgb = jax.random.uniform(jax.random.key(0), (2, 32, 40, 3))
    encoder = SemanticEncoder(channels=(8, 8, 16, 16), hidden=32, features=24)
    variables = encoder.init(INIT_KEY, rgb)
    f_v = encoder.apply(variables, rgb)
    assert f_v.shape == (2, 24)
    np.testing.assert_allclose(jnp.linalg.norm(f_v, axis=-1), 1.0, rtol=1e-5)
    assert not np.allclose(f_v[0], f_v[1])
    names = set(variables["params"])
    assert names == {"conv0", "conv1", "conv2", "conv3", "fc0", "fc1"}


def test_guidance_mlp_maps_semantics_to_code():
    f = l2_normalize(jax.random.normal(jax.random.key(0), (4, 24)))
    mlp = GuidanceMLP(hidden=32, features=DC)
    c = mlp.apply(mlp.init(INIT_KEY, f), f)
    assert c.shape == (4, DC)


def test_l2_normalize_keeps_zero_vector_finite():
    out = l2_normalize(jnp.zeros((2, 5)))
    np.testing.assert_array_equal(out, 0.0)
