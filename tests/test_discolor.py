"""DisColor as a backbone: its official size, its anchors, its DSG point, and a colour stage
trained through the plug-in (`aiaic_jax/models/backbones/discolor/model.py`)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from aiaic_jax.models import __main__ as model_table
from aiaic_jax.models.aiaic import build_model
from aiaic_jax.models.backbones import get_backbone
from aiaic_jax.models.backbones.discolor import bins
from aiaic_jax.models.backbones.discolor.model import Anchors
from aiaic_jax.models.guidance import Guidance
from aiaic_jax.train import loop, losses, parallel, stages
from aiaic_jax.train.steps import make_step
from tests.tiny_training import random_batch, random_variables, tiny_config

SIZE = 32  # a 2 x 2 token grid
B = 2


def test_full_model_has_the_official_parameter_counts():
    variables = model_table.variable_shapes("discolor", image_size=256)
    params = variables["params"]
    assert model_table.count(params) == 43_063_739
    assert model_table.count(params["segnet"]) == 2_269_497  # frozen: 40,794,242 train
    sizes = {name: model_table.count(tree) for name, tree in params.items()}
    assert sizes["repnet"] == 32_529_216
    assert sizes["enhanceNet"] == 7_600_962
    assert sizes["wildpath"] == sizes["hintpath"] == 299_904
    assert sizes["trg_word_emb"] == 24_192
    assert get_backbone("discolor").guidance_channels == 64


@pytest.fixture(scope="module")
def demo():
    backbone = get_backbone("discolor_demo")
    gray_l = jax.random.uniform(jax.random.key(0), (B, SIZE, SIZE, 1), minval=0.0, maxval=100.0)
    target_ab = jax.random.uniform(jax.random.key(1), (B, SIZE, SIZE, 2), minval=-60, maxval=60)
    guidance = Guidance(jax.random.normal(jax.random.key(2), (B, 16)), jnp.ones((B,)))
    # An rbg key: threefry makes XLA:CPU compile this init for about a minute. (Random values
    # of the shapes would not do: spectral norms need their power-iterated vectors.)
    init = jax.jit(lambda key: backbone.init(key, gray_l, guidance))
    variables = init(jax.random.key(3, impl="unsafe_rbg"))
    return backbone, variables, gray_l, target_ab, guidance


_JITTED: dict = {}


def _apply(backbone, *args, **kwargs):
    """backbone.apply, jitted (op by op it takes seconds per call on a CPU); one jitted function
    per backbone and static arguments, so that calls of the same structure share a compile."""
    static = ("train", "mutable", "capture_intermediates")
    fixed = {k: (tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items() if k in static}
    dynamic = {k: v for k, v in kwargs.items() if k not in static}
    key = (id(backbone), tuple(sorted(fixed.items())))
    if key not in _JITTED:
        _JITTED[key] = jax.jit(lambda a, k: backbone.apply(*a, **k, **fixed))
    return _JITTED[key](args, dynamic)


def test_forward_returns_full_size_ab_and_the_token_logits(demo):
    backbone, variables, gray_l, target_ab, _ = demo
    ab, outputs = _apply(backbone, variables, gray_l, target_ab=target_ab)
    assert ab.shape == (B, SIZE, SIZE, 2)
    assert np.all(np.isfinite(ab))
    assert float(jnp.max(jnp.abs(ab))) < 110.0  # 110 tanh
    grid = (B, SIZE // 16, SIZE // 16)
    assert outputs["pal_logits"].shape == outputs["ref_logits"].shape == (*grid, bins.NUM_BINS)
    assert outputs["token_labels"].shape == outputs["anchor_mask"].shape == grid
    assert outputs["token_labels"].dtype == jnp.int32


def test_inference_is_deterministic_and_independent_of_the_batch_order(demo):
    backbone, variables, gray_l, _, _ = demo
    first, _ = _apply(backbone, variables, gray_l)
    again, _ = _apply(backbone, variables, gray_l)
    np.testing.assert_allclose(first, again, atol=1e-4)
    # A picture's anchors do not depend on its place in the batch (at 64 x 64: 4 anchors among
    # 16 tokens; the variables do not depend on the size).
    pictures = jax.random.uniform(jax.random.key(5), (B, 64, 64, 1), minval=0.0, maxval=100.0)
    _, outputs = _apply(backbone, variables, pictures)
    _, swapped = _apply(backbone, variables, pictures[::-1])
    np.testing.assert_array_equal(swapped["anchor_mask"][::-1], outputs["anchor_mask"])


def test_given_anchors_replace_k_means(demo):
    backbone, variables, gray_l, _, _ = demo
    mask = jnp.zeros((B, 2, 2)).at[:, 0, 1].set(1.0)
    colours = jnp.full((B, 2, 2), 100, jnp.int32)
    anchors = Anchors(mask, colours)
    ab, outputs = _apply(backbone, variables, gray_l, anchors=anchors)
    np.testing.assert_array_equal(outputs["anchor_mask"], mask)
    other, _ = _apply(backbone, variables, gray_l, anchors=Anchors(mask, colours + 50))
    assert float(jnp.max(jnp.abs(ab - other))) > 0  # the anchor colour reaches ab


def test_training_places_anchors_on_the_true_bins(demo):
    backbone, variables, gray_l, target_ab, _ = demo
    with pytest.raises(ValueError, match="target_ab"):
        _apply(backbone, variables, gray_l, train=True, mutable=["batch_stats"])
    (_, outputs), _ = _apply(
        backbone,
        variables,
        gray_l,
        train=True,
        target_ab=target_ab,
        mutable=["batch_stats"],
        rngs={"dropout": jax.random.key(0), "anchors": jax.random.key(1)},
    )
    mask = np.asarray(outputs["anchor_mask"]) > 0
    assert mask.any()
    np.testing.assert_array_equal(
        np.asarray(outputs["anchor_bins"])[mask], np.asarray(outputs["token_labels"])[mask]
    )


def test_r_zero_leaves_the_backbone_output_unchanged(demo):
    backbone, variables, gray_l, _, guidance = demo
    plain, _ = _apply(backbone, variables, gray_l)
    gated, _ = _apply(backbone, variables, gray_l, Guidance(guidance.c, jnp.zeros((B,))))
    np.testing.assert_allclose(plain, gated, atol=1e-5)


def test_dsg_modulates_the_first_refinement_conv(demo):
    backbone, variables, gray_l, _, guidance = demo

    def ab_sum(params):
        (ab, _), captured = backbone.apply(
            {**variables, "params": params},
            gray_l,
            guidance,
            capture_intermediates=lambda module, _: module.name == "dsg",
            mutable=["intermediates"],
        )
        return jnp.sum(ab), captured["intermediates"]["dsg"]["__call__"]

    grads, (dsg_out,) = jax.jit(jax.grad(ab_sum, has_aux=True))(variables["params"])
    assert dsg_out.shape == (B, SIZE, SIZE, backbone.guidance_channels)
    assert float(jnp.abs(grads["dsg"]["sg"]["gamma_1"]["kernel"]).sum()) > 0
    # SpixelNet is frozen inside the model: no gradient reaches it.
    assert all(float(jnp.abs(g).sum()) == 0 for g in jax.tree.leaves(grads["segnet"]))


def test_size_must_be_a_multiple_of_16():
    backbone = get_backbone("discolor_demo")
    with pytest.raises(ValueError, match="multiples of 16"):
        backbone.init(jax.random.key(0), jnp.zeros((1, 40, 32, 1)))


@pytest.fixture(scope="module")
def discolor_setup(tmp_path_factory):
    from aiaic_jax.models.backbones.discolor import objective

    config = tiny_config(tmp_path_factory.mktemp("unused"))
    config.model.backbone = "discolor_demo"
    config.model.backbone_overrides = ml_collections.ConfigDict()
    config.loss = losses.loss_config(objective.loss_config())
    config.optimizer = ml_collections.ConfigDict(
        {**config.optimizer.to_dict(), **objective.optimizer_config()}
    )
    config.discriminator = objective.discriminator_config()
    model = build_model(config.model)
    template = loop.abstract_variables(model, config)
    return config, model, template, random_variables(template, seed=0)


def test_a_colour_stage_trains_discolor_but_not_its_spixelnet(discolor_setup):
    config, model, template, variables = discolor_setup
    name = "stage1"  # the baseline's step is the same without the guidance
    stage = stages.resolve(config, name, 16)
    assert stage.optimizer.lr_decay_steps == stage.num_steps  # the linear decay spans the stage
    step = make_step(config, stage, model, template["params"])
    assert step.discriminator is None
    state = jax.jit(step.init_state)(variables, None)
    rng = loop.stage_rng(config, name)
    batch = random_batch(4)
    train = loop.compile_train_step(
        step, parallel.make_mesh(), state, batch, rng, step.constants(), fast=True
    )
    before = jax.device_get(state)
    new_state, metrics = train(state, batch, rng, step.constants())
    metrics, after = jax.device_get((metrics, new_state))
    assert {"pal_ce", "ref_ce", "perceptual"} <= set(metrics)
    assert all(np.isfinite(v) for v in metrics.values())
    moved = lambda tree_a, tree_b: any(
        not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(tree_a), jax.tree.leaves(tree_b))
    )
    backbone_before, backbone_after = before.params["backbone"], after.params["backbone"]
    for trained in ("repnet", "wildpath", "hintpath", "enhanceNet", "mid_word_prj"):
        assert moved(backbone_before[trained], backbone_after[trained]), trained
    assert not moved(backbone_before["segnet"], backbone_after["segnet"])
    stats_before, stats_after = before.batch_stats["backbone"], after.batch_stats["backbone"]
    assert not moved(stats_before["segnet"], stats_after["segnet"])
