"""The composed AIAIC model with the DDColor demo backbone at 64x64."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from aiaic_jax.models.aiaic import (
    AIAIC,
    MODES,
    build_model,
    init_variables,
)
from aiaic_jax.models.vgg import pretrained_vgg16_params
from tests import tiny_model

B, SIZE, SPECTROGRAM = 2, 64, (257, 98)  # 1 s of 16 kHz audio


def small_config() -> ml_collections.ConfigDict:
    """The tests' small model with the demo backbone's full colour decoder and A2V normalised."""
    config = tiny_model.model_config()
    config.backbone_overrides = ml_collections.ConfigDict()
    config.a2v_normalize = True  # the option; test_aux_holds_what_losses_need checks it
    return config


MODEL = build_model(small_config())


@pytest.fixture(scope="module")
def variables():
    # Threefry keys make random initialisers slow to compile on CPU; rbg keys do not.
    return init_variables(MODEL, jax.random.key(0, impl="rbg"), SIZE)


@pytest.fixture(scope="module")
def inputs():
    k_l, k_rgb, k_spec = jax.random.split(jax.random.key(1), 3)
    return {
        "gray_l": 100.0 * jax.random.uniform(k_l, (B, SIZE, SIZE, 1)),
        "color_rgb": jax.random.uniform(k_rgb, (B, SIZE, SIZE, 3)),
        "spectrogram": jax.random.normal(k_spec, (B, *SPECTROGRAM)),
    }


@jax.jit
def _every_mode(variables, gray_l, color_rgb, spectrogram):
    apply = functools.partial(MODEL.apply, variables, gray_l)
    out = {
        "baseline": apply(mode="baseline"),
        "visual": apply(mode="visual", color_rgb=color_rgb),
        "visual_masked": apply(mode="visual", color_rgb=color_rgb, gt_masked=jnp.ones(B, bool)),
        "visual_half_masked": apply(
            mode="visual", color_rgb=color_rgb, gt_masked=jnp.array([True, False])
        ),
        "audio": apply(mode="audio", spectrogram=spectrogram),
        "audio_r0": apply(mode="audio", spectrogram=spectrogram, force_relevance=0.0),
        "audio_r1": apply(mode="audio", spectrogram=spectrogram, force_relevance=1.0),
        "audio_missing": apply(
            mode="audio", spectrogram=spectrogram, has_audio=jnp.array([False, True])
        ),
    }
    # Stage 3: the backbone in training mode, E_a frozen (its BN on running statistics).
    out["audio_train"] = MODEL.apply(
        variables,
        gray_l,
        mode="audio",
        spectrogram=spectrogram,
        train=True,
        audio_train=False,
        mutable=["batch_stats"],
    )
    pieces = {
        "visual_semantics": MODEL.apply(variables, color_rgb, method=AIAIC.visual_semantics),
        "audio_semantics": MODEL.apply(variables, spectrogram, method=AIAIC.audio_semantics),
        "relevance": MODEL.apply(variables, gray_l, spectrogram, method=AIAIC.relevance),
    }
    return out, pieces


@pytest.fixture(scope="module")
def outputs(variables, inputs):
    return _every_mode(variables, **inputs)


def test_one_init_creates_every_submodule(variables):
    params = variables["params"]
    assert set(params) == {"backbone", "semantic", "guidance", "audio", "a2v", "relevance"}
    assert set(params["relevance"]) == {
        "audio_encoder",
        "image_encoder",
        "audio_head",
        "image_head",
        "fc",
    }
    assert "dsg" in params["backbone"]
    assert {"audio", "relevance"} <= set(variables["batch_stats"])
    assert "audio_encoder" in variables["batch_stats"]["relevance"]


def test_init_loads_the_imagenet_vgg16_into_rnet(variables):
    loaded = variables["params"]["relevance"]["image_encoder"]
    jax.tree.map(np.testing.assert_array_equal, loaded, pretrained_vgg16_params())


def test_visual_mode_with_every_sample_masked_equals_baseline_exactly(outputs):
    modes, _ = outputs
    baseline, _ = modes["baseline"]
    masked, aux = modes["visual_masked"]
    assert baseline.shape == (B, SIZE, SIZE, 2)
    np.testing.assert_array_equal(masked, baseline)
    np.testing.assert_array_equal(aux["relevance"], 0.0)
    guided, _ = modes["visual"]
    assert float(jnp.max(jnp.abs(guided - baseline))) > 1e-4  # guidance changes colours


def test_visual_mode_masks_per_sample(outputs):
    modes, _ = outputs
    baseline, _ = modes["baseline"]
    guided, _ = modes["visual"]
    half, aux = modes["visual_half_masked"]
    np.testing.assert_array_equal(aux["relevance"], [0.0, 1.0])
    np.testing.assert_array_equal(half[0], baseline[0])
    np.testing.assert_allclose(half[1], guided[1], atol=1e-4)


def test_audio_mode_with_relevance_forced_to_zero_equals_baseline_exactly(outputs):
    modes, _ = outputs
    baseline, _ = modes["baseline"]
    ab, aux = modes["audio_r0"]
    np.testing.assert_array_equal(ab, baseline)
    np.testing.assert_array_equal(aux["relevance"], 0.0)
    _, aux_r1 = modes["audio_r1"]
    np.testing.assert_array_equal(aux_r1["relevance"], 1.0)
    assert "relevance_logit" not in aux_r1  # RNet does not run when r is forced


def test_missing_audio_forces_zero_relevance(outputs):
    modes, _ = outputs
    baseline, _ = modes["baseline"]
    _, aux_full = modes["audio"]
    ab, aux = modes["audio_missing"]
    assert float(aux["relevance"][0]) == 0.0
    np.testing.assert_array_equal(ab[0], baseline[0])
    np.testing.assert_allclose(aux["relevance"][1], aux_full["relevance"][1], rtol=1e-6)
    assert float(jnp.max(jnp.abs(ab[1] - baseline[1]))) > 0.0


def test_aux_holds_what_losses_need(outputs):
    modes, pieces = outputs
    assert modes["baseline"][1] == {"backbone": {}}  # DDColor's objective needs only ab
    _, visual_aux = modes["visual"]
    assert set(visual_aux) == {"backbone", "relevance", "visual_semantics"}
    assert visual_aux["visual_semantics"].shape == (B, 16)
    _, audio_aux = modes["audio"]
    assert set(audio_aux) == {"backbone", "relevance", "relevance_logit", "audio_semantics"}
    assert audio_aux["audio_semantics"].shape == (B, 16)
    assert audio_aux["relevance"].shape == (B,)
    assert bool(jnp.all((audio_aux["relevance"] > 0.0) & (audio_aux["relevance"] < 1.0)))
    # The stand-alone methods give what the modes use.
    np.testing.assert_allclose(
        pieces["visual_semantics"], visual_aux["visual_semantics"], atol=1e-6
    )
    np.testing.assert_allclose(pieces["audio_semantics"], audio_aux["audio_semantics"], atol=1e-6)
    relevance, logit = pieces["relevance"]
    np.testing.assert_allclose(relevance, audio_aux["relevance"], atol=1e-6)
    np.testing.assert_allclose(logit, audio_aux["relevance_logit"], atol=1e-5)
    np.testing.assert_allclose(jnp.linalg.norm(pieces["audio_semantics"], axis=-1), 1.0, rtol=1e-5)


def test_training_mode_updates_only_the_batch_stats_of_modules_in_training(variables, outputs):
    modes, _ = outputs
    (ab, _), updates = modes["audio_train"]
    assert ab.shape == (B, SIZE, SIZE, 2)
    before, after = variables["batch_stats"], updates["batch_stats"]
    jax.tree.map(np.testing.assert_array_equal, after["audio"], before["audio"])
    jax.tree.map(np.testing.assert_array_equal, after["relevance"], before["relevance"])
    changed = jax.tree.leaves(
        jax.tree.map(lambda a, b: bool(jnp.any(a != b)), after["backbone"], before["backbone"])
    )
    assert any(changed)


def test_bad_mode_and_missing_inputs_are_errors(variables, inputs):
    gray_l = inputs["gray_l"]
    with pytest.raises(ValueError, match="mode="):
        MODEL.apply(variables, gray_l, mode="colour")
    with pytest.raises(ValueError, match="color_rgb"):
        MODEL.apply(variables, gray_l, mode="visual")
    with pytest.raises(ValueError, match="spectrogram"):
        MODEL.apply(variables, gray_l, mode="audio")
    assert MODES == ("baseline", "visual", "audio")


def test_build_model_reads_the_config():
    config = small_config()
    config.backbone_overrides = ml_collections.ConfigDict({"num_queries": 4})
    config.a2v_hidden = (64, 32)
    model = build_model(config)
    assert model.backbone.num_queries == 4
    assert model.a2v_hidden == (64, 32)
    config.unknown_field = 1
    with pytest.raises(ValueError, match="unknown_field"):
        build_model(config)
