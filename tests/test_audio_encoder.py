"""ResNet-18 audio encoder E_a and the A2V projection (Eq. 6)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aiaic_jax.models.audio_encoder import A2V, AudioResNet18

# Threefry keys make random initialisers slow to compile on CPU; rbg keys do not.
INIT_KEY = jax.random.key(1, impl="rbg")
# 16 kHz, 512-sample windows with 353 overlap: 1004 frames for 10 s, 98 for 1 s.
TEN_SECONDS = (257, 1004)
ONE_SECOND = (257, 98)


def _param_count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_official_width_gives_512_features_for_ten_seconds():
    spectrogram = jax.random.normal(jax.random.key(0), (1, *TEN_SECONDS))
    encoder = AudioResNet18()
    variables = jax.jit(encoder.init)(INIT_KEY, spectrogram)
    features = jax.jit(encoder.apply)(variables, spectrogram)
    assert features.shape == (1, 512)
    assert bool(jnp.all(jnp.isfinite(features)))
    # torchvision ResNet-18 without its fc, with a one-channel stem: 11,689,512 - 513,000
    # (fc) - 9,408 (3-channel stem) + 3,136 (1-channel stem).
    assert _param_count(variables["params"]) == 11_170_240


def test_narrow_width_keeps_the_structure():
    spectrogram = jax.random.normal(jax.random.key(0), (2, *ONE_SECOND))
    wide = jax.eval_shape(AudioResNet18().init, jax.random.key(1), spectrogram)
    narrow = jax.eval_shape(AudioResNet18(width=16).init, jax.random.key(1), spectrogram)
    assert jax.eval_shape(AudioResNet18(width=16).apply, narrow, spectrogram).shape == (2, 128)
    same_names = jax.tree.structure(wide) == jax.tree.structure(narrow)
    assert same_names
    assert narrow["params"]["layer4_1"]["conv2"]["kernel"].shape == (3, 3, 128, 128)
    assert narrow["params"]["layer2_0"]["downsample_conv"]["kernel"].shape == (1, 1, 16, 32)
    assert "downsample_conv" not in narrow["params"]["layer1_0"]


SMALL = AudioResNet18(width=8)


@functools.partial(jax.jit, static_argnames="train")
def _small_apply(variables, spectrogram, train=False):
    return SMALL.apply(variables, spectrogram, train=train, mutable=["batch_stats"])


@pytest.fixture(scope="module")
def small():
    spectrogram = 2.0 * jax.random.normal(jax.random.key(0), (3, 40, 30)) + 1.0
    return jax.jit(SMALL.init)(INIT_KEY, spectrogram), spectrogram


def test_eval_mode_uses_running_statistics_and_changes_nothing(small):
    variables, spectrogram = small
    batch, updates = _small_apply(variables, spectrogram)
    # No dependence on the other samples: sample 0 among fresh others gives the same output.
    others = spectrogram.at[1:].set(-spectrogram[1:] * 3.0)
    np.testing.assert_allclose(_small_apply(variables, others)[0][0], batch[0], atol=1e-5)
    jax.tree.map(np.testing.assert_array_equal, updates["batch_stats"], variables["batch_stats"])


def test_train_mode_normalises_with_batch_statistics_and_updates_running_averages(small):
    variables, spectrogram = small
    train_out, updates = _small_apply(variables, spectrogram, train=True)
    eval_out, _ = _small_apply(variables, spectrogram)
    assert not np.allclose(train_out, eval_out, atol=1e-3)
    stem_before = variables["batch_stats"]["bn1"]
    stem_after = updates["batch_stats"]["bn1"]
    # running = 0.9 * running + 0.1 * batch (PyTorch's momentum 0.1)
    assert not np.allclose(stem_after["mean"], stem_before["mean"])
    # Train mode does not read the running statistics at all.
    garbage = jax.tree.map(lambda s: s + 7.0, variables["batch_stats"])
    other_out, _ = _small_apply(
        {"params": variables["params"], "batch_stats": garbage}, spectrogram, train=True
    )
    np.testing.assert_allclose(other_out, train_out, atol=1e-5)


def test_a2v_can_map_audio_features_to_unit_norm_semantics():
    features = jax.random.normal(jax.random.key(0), (4, 512))
    a2v = A2V(hidden=(64, 32), features=24, normalize=True)
    variables = a2v.init(jax.random.key(1), features)
    f_a = a2v.apply(variables, features)
    assert f_a.shape == (4, 24)
    np.testing.assert_allclose(jnp.linalg.norm(f_a, axis=-1), 1.0, rtol=1e-5)
    assert set(variables["params"]) == {"fc0", "fc1", "fc2"}


def test_a2v_without_normalisation_is_a_plain_mlp():
    features = jax.random.normal(jax.random.key(0), (4, 512))
    a2v = A2V(hidden=(), features=24)  # the default: no normalisation
    variables = a2v.init(jax.random.key(1), features)
    p = variables["params"]["fc0"]
    np.testing.assert_allclose(
        a2v.apply(variables, features), features @ p["kernel"] + p["bias"], rtol=1e-5, atol=1e-5
    )
