"""Training losses against independent computations (numpy, direct VGG features): DDColor's
objective (models/backbones/ddcolor/objective.py), the shared terms (loss_terms.py) and the
paper's L_s and RNet BCE (train/losses.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aiaic_jax import loss_terms
from aiaic_jax.models.backbones.ddcolor import objective as ddcolor_objective
from aiaic_jax.models.vgg import VGG16Features, pretrained_vgg16_params
from aiaic_jax.train import losses

B, SIZE = 3, 32


def _rng(seed=0):
    return np.random.default_rng(seed)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _bce(logits, targets):
    p = _sigmoid(np.asarray(logits, np.float64))
    return -(targets * np.log(p) + (1 - targets) * np.log(1 - p))


def test_colour_enhancement_blends_with_the_luma_grey_and_clips():
    rgb = _rng().uniform(0, 1, (B, SIZE, SIZE, 3)).astype(np.float32)
    gray = 0.2989 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    expected = np.clip(gray[..., None] * (1 - 1.2) + rgb * 1.2, 0, 1)
    np.testing.assert_allclose(ddcolor_objective.enhance_colour(rgb, 1.2), expected, atol=1e-6)
    np.testing.assert_allclose(ddcolor_objective.enhance_colour(rgb, 1.0), rgb, atol=1e-7)


def test_l1_on_ab_is_the_mean_absolute_error_in_lab_units():
    pred, target = _rng().normal(0, 30, (2, B, SIZE, SIZE, 2)).astype(np.float32)
    np.testing.assert_allclose(
        ddcolor_objective.l1_ab(pred, target), np.abs(pred - target).mean(), rtol=1e-6
    )


def test_perceptual_loss_is_the_weighted_l1_of_vgg_conv_features():
    vgg = {"params": jax.tree.map(jnp.asarray, pretrained_vgg16_params())}
    pred, target = _rng(1).uniform(0, 1, (2, 2, 16, 16, 3)).astype(np.float32)
    weights = {
        "conv1_1": 1 / 16,
        "conv2_1": 1 / 8,
        "conv3_1": 1 / 4,
        "conv4_1": 1 / 2,
        "conv5_1": 1,
    }

    @jax.jit
    def loss_grads_and_features(pred, target):
        loss, grads = jax.value_and_grad(
            lambda p, t: ddcolor_objective.perceptual(vgg, p, t, weights), argnums=(0, 1)
        )(pred, target)
        network = VGG16Features()
        features = [network.apply(vgg, image, tuple(weights)) for image in (pred, target)]
        return loss, grads, features

    loss, (grad_pred, grad_target), (pred_features, target_features) = loss_grads_and_features(
        pred, target
    )
    expected = sum(
        w * np.abs(np.asarray(pred_features[k]) - np.asarray(target_features[k])).mean()
        for k, w in weights.items()
    )
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    assert np.abs(grad_pred).max() > 0
    assert np.all(np.asarray(grad_target) == 0)  # the target's features carry no gradient


def _colorfulness_numpy(rgb):
    red, green, blue = (rgb[..., i].astype(np.float64) for i in range(3))
    rg = np.abs(red - green).reshape(len(rgb), -1)
    yb = np.abs(0.5 * (red + green) - blue).reshape(len(rgb), -1)
    std_root = np.sqrt(rg.std(axis=1, ddof=1) ** 2 + yb.std(axis=1, ddof=1) ** 2)
    mean_root = np.sqrt(rg.mean(axis=1) ** 2 + yb.mean(axis=1) ** 2)
    return std_root + 0.3 * mean_root


def test_colorfulness_term_is_the_mean_of_one_minus_cf_with_unbiased_std():
    rgb = _rng(2).uniform(0, 1, (4, SIZE, SIZE, 3)).astype(np.float32)
    expected = np.mean(1.0 - _colorfulness_numpy(rgb))
    np.testing.assert_allclose(ddcolor_objective.colorfulness_term(rgb), expected, rtol=1e-5)


def test_colorfulness_weight_two_with_a_mean_equals_the_official_per_gpu_sum():
    # Official: 0.5 x sum over each GPU's 4 images, averaged over 4 GPUs (DDP).
    rgb = _rng(3).uniform(0, 1, (16, SIZE, SIZE, 3)).astype(np.float32)
    per_image = 1.0 - _colorfulness_numpy(rgb)
    official = np.mean([0.5 * per_image[g * 4 : (g + 1) * 4].sum() for g in range(4)])
    weight = ddcolor_objective.loss_config().colorfulness_weight
    np.testing.assert_allclose(
        weight * ddcolor_objective.colorfulness_term(rgb), official, rtol=1e-5
    )


def test_gan_terms_are_the_vanilla_bce_with_logits():
    real, fake = _rng(4).normal(0, 3, (2, B, 169)).astype(np.float32)
    np.testing.assert_allclose(loss_terms.gan_generator(fake), _bce(fake, 1).mean(), rtol=1e-5)
    np.testing.assert_allclose(
        loss_terms.gan_discriminator(real, fake),
        _bce(real, 1).mean() + _bce(fake, 0).mean(),  # no factor 1/2
        rtol=1e-5,
    )


def test_bce_with_logits_stays_finite_for_large_logits():
    logits = jnp.array([-200.0, -30.0, 0.0, 30.0, 200.0])
    values = loss_terms.bce_with_logits(logits, 1.0)
    assert np.all(np.isfinite(values))
    np.testing.assert_allclose(values[-1], 0.0, atol=1e-12)
    np.testing.assert_allclose(values[0], 200.0, rtol=1e-6)
    moderate = np.array([-3.0, 0.0, 3.0], np.float32)
    np.testing.assert_allclose(
        loss_terms.bce_with_logits(moderate, 0.25), _bce(moderate, 0.25), rtol=1e-5
    )


def test_semantic_loss_is_the_squared_distance_over_the_weighted_samples():
    audio, visual = _rng(5).normal(0, 1, (2, 4, 16)).astype(np.float32)
    weight = np.array([1, 0, 1, 1], bool)
    expected = np.sum((audio - visual) ** 2, axis=1)[weight].mean()  # Eq. 7
    loss, (grad_audio, grad_visual) = jax.value_and_grad(
        lambda a, v: losses.semantic(a, v, jnp.asarray(weight)), argnums=(0, 1)
    )(audio, visual)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    assert np.all(np.asarray(grad_visual) == 0)  # f_v^s is the target
    assert np.all(np.asarray(grad_audio)[1] == 0)  # a sample with weight 0 teaches nothing
    assert losses.semantic(audio, visual, jnp.zeros(4, bool)) == 0.0


@pytest.mark.parametrize("batch", [2, 3, 8])
def test_negatives_never_pair_a_sample_with_its_own_audio_and_use_each_audio_once(batch):
    partners = jax.jit(jax.vmap(lambda k: losses.negative_partners(k, batch)))(
        jax.random.split(jax.random.key(0), 200)
    )
    partners = np.asarray(partners)
    assert np.all(partners != np.arange(batch))
    assert np.all(np.sort(partners, axis=1) == np.arange(batch))  # a permutation
    if batch > 2:  # the partners vary with the key
        assert len({tuple(p) for p in partners}) > 1


def test_negatives_need_two_samples():
    with pytest.raises(ValueError, match="at least 2"):
        losses.negative_partners(jax.random.key(0), 1)


def test_relevance_bce_averages_own_pairs_and_negatives_equally():
    own, negative = _rng(6).normal(0, 2, (2, 6)).astype(np.float32)
    relevant = np.array([1, 1, 0, 1, 1, 1], bool)
    own_weight = np.array([1, 1, 1, 0, 1, 1], bool)  # sample 3 has no audio
    negative_weight = np.array([1, 0, 1, 1, 1, 1], bool)  # partner of sample 1: same class
    expected = 0.5 * (
        _bce(own, relevant)[own_weight].mean() + _bce(negative, 0)[negative_weight].mean()
    )
    np.testing.assert_allclose(
        losses.relevance(own, relevant, own_weight, negative, negative_weight), expected, rtol=1e-5
    )
