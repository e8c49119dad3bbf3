"""ChromaGAN's objective (models/backbones/chromagan/objective.py) against numpy, and its colour
stages through the generic colour step: the critic trains beside the generator."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from aiaic_jax.models.aiaic import build_model
from aiaic_jax.models.backbones.chromagan import objective
from aiaic_jax.train import loop, losses, parallel, stages
from aiaic_jax.train.steps import make_step
from aiaic_jax.train.steps.colour import ColourStep
from tests.tiny_training import random_batch, random_variables, tiny_config

B, SIZE = 3, 16


def _rng(seed=0):
    return np.random.default_rng(seed)


def test_mse_is_in_the_official_units():
    ab, target = _rng().uniform(-100, 100, (2, B, SIZE, SIZE, 2)).astype(np.float32)
    expected = np.mean(((ab + 128) / 255 - (target + 128) / 255) ** 2)
    np.testing.assert_allclose(objective.mse_ab(ab, target), expected, rtol=1e-5)


def test_class_term_is_keras_kld_of_the_teachers_softmax_and_the_heads():
    teacher, head = _rng(1).normal(0, 4, (2, B, 1000)).astype(np.float32)

    def softmax(x):
        e = np.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    y, y_hat = np.clip(softmax(teacher), 1e-7, 1), np.clip(softmax(head), 1e-7, 1)
    expected = np.mean(np.sum(y * np.log(y / y_hat), axis=-1))
    np.testing.assert_allclose(objective.class_kl(teacher, head), expected, rtol=1e-4)
    assert abs(float(objective.class_kl(head, head))) < 1e-6
    teacher_grad = jax.grad(lambda t: objective.class_kl(t, head))(jnp.asarray(teacher))
    assert not np.any(np.asarray(teacher_grad))  # the teacher is a constant target


def test_gradient_penalty_uses_the_critics_input_units_and_interpolates_ab_only():
    gray_l = jnp.asarray(_rng(2).uniform(0, 100, (B, SIZE, SIZE, 1)), jnp.float32)
    real, fake = _rng(3).uniform(-100, 100, (2, B, SIZE, SIZE, 2)).astype(np.float32)
    # D = sum_c w_c * unit_ab_c per pixel: grad of its sum is w at every pixel, whatever the
    # interpolation point, so ||grad|| = ||w|| sqrt(H W) per sample.
    w = jnp.array([0.02, -0.01])
    linear = lambda gray, ab: jnp.sum(w * (ab + 128.0) / 255.0, -1, keepdims=True) + 0.0 * gray
    expected = (1.0 - float(jnp.linalg.norm(w)) * SIZE) ** 2
    penalty = objective.gradient_penalty(linear, gray_l, real, fake, jax.random.key(0))
    np.testing.assert_allclose(penalty, expected, rtol=1e-5)
    # D = sum unit_ab^2: grad 2 x at the interpolated point x = e real + (1 - e) fake.
    square = lambda gray, ab: jnp.sum(((ab + 128.0) / 255.0) ** 2, -1, keepdims=True)
    rng = jax.random.key(1)
    epsilon = np.asarray(jax.random.uniform(rng, (B, 1, 1, 1)))
    mixed = epsilon * (real + 128) / 255 + (1 - epsilon) * (fake + 128) / 255
    norms = np.sqrt(np.sum((2 * mixed) ** 2, axis=(1, 2, 3)))
    np.testing.assert_allclose(
        objective.gradient_penalty(square, gray_l, real, fake, rng),
        np.mean((1 - norms) ** 2),
        rtol=1e-4,
    )


def _chromagan_config(data_dir):
    config = tiny_config(data_dir)
    config.model.backbone = "chromagan_demo"
    config.model.backbone_overrides = ml_collections.ConfigDict(
        {"class_units": (16, 16), "num_classes": 10}
    )
    config.loss = losses.loss_config(objective.loss_config())
    config.loss.class_weight = 0.0
    config.discriminator = objective.discriminator_config()
    config.discriminator.size = "demo"
    return config


@pytest.fixture(scope="module")
def chromagan_setup(tmp_path_factory):
    config = _chromagan_config(tmp_path_factory.mktemp("unused"))
    model = build_model(config.model)
    template = loop.abstract_variables(model, config)
    return config, model, template, random_variables(template, seed=0)


@pytest.mark.parametrize("name", ["baseline", "stage1"])
def test_a_colour_stage_trains_chromagan_and_its_critic(chromagan_setup, name):
    config, model, template, variables = chromagan_setup
    stage = stages.resolve(config, name, 16)
    step = make_step(config, stage, model, template["params"])
    assert isinstance(step, ColourStep) and step.discriminator is not None
    critic = random_variables(loop.abstract_discriminator_variables(step, config), seed=1)
    state = jax.jit(step.init_state)(variables, critic)
    rng = loop.stage_rng(config, name)
    mesh = parallel.make_mesh()
    batch = random_batch(4)
    train = loop.compile_train_step(step, mesh, state, batch, rng, step.constants(), fast=True)
    before = jax.device_get(state)  # the step donates the state it is given
    new_state, metrics = train(state, batch, rng, step.constants())
    metrics = jax.device_get(metrics)
    assert {"mse", "gan", "d_loss", "d_gradient_penalty"} <= set(metrics)
    assert "class_kl" not in metrics  # class_weight 0: no teacher, no term
    assert all(np.isfinite(v) for v in metrics.values())
    np.testing.assert_allclose(
        metrics["loss"], metrics["mse"] + 0.1 * metrics["gan"], rtol=1e-5, atol=1e-7
    )
    after = jax.device_get(new_state)
    critic_before, critic_after = before.discriminator.params, after.discriminator.params
    moved = {
        name: not np.array_equal(critic_before[name]["kernel"], critic_after[name]["kernel"])
        for name in critic_before
    }
    assert all(moved.values()), moved  # every critic layer's kernel moved
    # The last bias is not: it adds the same to D(real) and D(fake), and W = D(fake) - D(real).
    np.testing.assert_array_equal(critic_before["score"]["bias"], critic_after["score"]["bias"])
    backbone = jax.tree.map(
        lambda a, b: not np.array_equal(a, b),
        before.params["backbone"]["color_out"],
        after.params["backbone"]["color_out"],
    )
    assert all(jax.tree.leaves(backbone))


def test_without_a_teacher_the_class_term_is_off_and_said_once_per_process(chromagan_setup, caplog):
    config, model, template, _ = chromagan_setup
    config = config.copy_and_resolve_references()
    config.loss.class_weight = 0.003
    stage = stages.resolve(config, "baseline", 16)
    step = make_step(config, stage, model, template["params"])
    with caplog.at_level("WARNING"):
        assert step.constants() == {}
        assert step.constants() == {}  # e.g. the next stage
    assert caplog.text.count("class term is off") == 1
