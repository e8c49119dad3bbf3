"""RNet: relevance of the audio to the grayscale image (Eq. 9-10)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from aiaic_jax.models.relevance import RelevanceNet
from aiaic_jax.models.vgg import pretrained_vgg16_params

# Threefry keys make random initialisers slow to compile on CPU; rbg keys do not.
INIT_KEY = jax.random.key(1, impl="rbg")
B = 4
RNET = RelevanceNet(features=16, hidden=32, audio_width=8)


@pytest.fixture(scope="module")
def batch():
    k_img, k_spec = jax.random.split(jax.random.key(0))
    gray = jax.random.uniform(k_img, (B, 32, 32, 1))
    gray_rgb = jnp.repeat(gray, 3, axis=-1)
    spectrogram = jax.random.normal(k_spec, (B, 40, 30))
    return gray_rgb, spectrogram


@pytest.fixture(scope="module")
def variables(batch):
    variables = jax.jit(RNET.init)(INIT_KEY, *batch)
    params = dict(variables["params"])
    params["image_encoder"] = pretrained_vgg16_params()
    return {**variables, "params": params}


apply = jax.jit(RNET.apply)


def test_relevance_is_a_probability_per_sample(variables, batch):
    r, logit = apply(variables, *batch)
    assert r.shape == (B,) and logit.shape == (B,)
    assert bool(jnp.all((r > 0.0) & (r < 1.0)))
    np.testing.assert_allclose(r, jax.nn.sigmoid(logit), rtol=1e-6)
    assert float(jnp.std(r)) > 0.0


def test_pair_logits_score_each_image_with_its_own_audio_and_its_partners(variables, batch):
    gray_rgb, spectrogram = batch
    partner = jnp.array([2, 3, 1, 0])
    own, negative = jax.jit(RNET.apply, static_argnames="method")(
        variables, gray_rgb, spectrogram, partner, method=RelevanceNet.pair_logits
    )
    np.testing.assert_allclose(own, apply(variables, gray_rgb, spectrogram)[1], atol=1e-5)
    np.testing.assert_allclose(
        negative, apply(variables, gray_rgb, spectrogram[partner])[1], atol=1e-5
    )


def test_swapping_audio_between_samples_changes_relevance(variables, batch):
    gray_rgb, spectrogram = batch
    r, _ = apply(variables, gray_rgb, spectrogram)
    r_swapped, _ = apply(variables, gray_rgb, jnp.roll(spectrogram, 1, axis=0))
    assert float(jnp.max(jnp.abs(r - r_swapped))) > 1e-3


def test_relevance_depends_only_on_cosine_similarity_through_the_fc(variables, batch):
    # Scaling the audio head's output does not change a cosine similarity.
    scaled = jax.tree.map(lambda x: x, variables)
    scaled["params"] = dict(scaled["params"])
    head = dict(scaled["params"]["audio_head"])
    head["fc1"] = jax.tree.map(lambda x: 3.0 * x, head["fc1"])
    scaled["params"]["audio_head"] = head
    np.testing.assert_allclose(apply(scaled, *batch)[1], apply(variables, *batch)[1], atol=1e-5)
    fc = variables["params"]["fc"]
    _, logit = apply(variables, *batch)
    similarity = (logit - fc["bias"][0]) / fc["kernel"][0, 0]
    assert bool(jnp.all(jnp.abs(similarity) <= 1.0 + 1e-5))


def test_bce_gradient_reaches_the_heads_and_the_fc(variables, batch):
    labels = jnp.array([1.0, 0.0, 1.0, 0.0])
    trainable = ("audio_head", "image_head", "fc")

    def loss(head_params):
        params = {**variables["params"], **head_params}
        _, logit = RNET.apply({**variables, "params": params}, *batch)
        return optax.sigmoid_binary_cross_entropy(logit, labels).mean()

    grads = jax.jit(jax.grad(loss))({name: variables["params"][name] for name in trainable})
    for name in trainable:
        norm = optax.global_norm(grads[name])
        assert float(norm) > 0.0, name
        assert bool(jnp.isfinite(norm)), name
