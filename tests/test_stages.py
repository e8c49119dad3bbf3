"""Stage names, order and how a config resolves into a stage (no training here)."""

import jax
import pytest

from aiaic_jax.models.aiaic import build_model
from aiaic_jax.train import loop, optim, stages
from configs import common, ddcolor_tiny, demo
from tests.tiny_training import tiny_config


def test_stage_arguments_map_to_directory_names():
    assert [stages.stage_name(a) for a in ("baseline", "1", "2", "rnet", "3", "e2e")] == list(
        stages.STAGE_NAMES
    )
    assert stages.stage_name("stage1") == "stage1"
    with pytest.raises(ValueError, match="unknown stage"):
        stages.stage_name("4")


def test_all_runs_every_stage_in_order_and_skips_rnet_without_relevance():
    assert stages.stages_to_run("all", True) == ["baseline", "stage1", "stage2", "rnet", "stage3"]
    assert stages.stages_to_run("all", False) == ["baseline", "stage1", "stage2", "stage3"]
    assert stages.stages_to_run("e2e", True) == ["e2e"]
    with pytest.raises(ValueError, match="no RNet"):
        stages.stages_to_run("rnet", False)


def test_each_stage_starts_from_the_previous_final_of_the_contract():
    assert stages.previous_stage("baseline", True) is None
    assert stages.previous_stage("stage1", True) == "baseline"
    assert stages.previous_stage("stage2", True) == "stage1"
    assert stages.previous_stage("rnet", True) == "stage2"
    assert stages.previous_stage("stage3", True) == "rnet"
    assert stages.previous_stage("stage3", False) == "stage2"
    assert stages.previous_stage("e2e", True) == "baseline"


def test_epochs_become_steps_with_the_stage_batch_size():
    config = common.get_config()
    config.stages.stage2.num_epochs = 2.5
    config.stages.stage2.batch_size = 64
    stage = stages.resolve(config, "2", train_size=1000)
    assert (stage.num_steps, stage.batch_size) == (40, 64)  # ceil(2.5 * 1000 / 64)
    config.stages.stage2.num_steps = 7
    assert stages.resolve(config, "stage2", 1000).num_steps == 7
    config.stages.baseline.batch_size = 0
    assert stages.resolve(config, "baseline", 1000).batch_size == config.data.batch_size


def test_stage_overrides_lay_over_the_run_defaults():
    config = common.get_config()
    config.stages.stage3.loss.gan_weight = 0.0
    stage3 = stages.resolve(config, "3", 100)
    assert stage3.loss.gan_weight == 0.0
    assert stage3.loss.l1_weight == config.loss.l1_weight
    stage2 = stages.resolve(config, "2", 100)
    assert (stage2.optimizer.name, stage2.optimizer.lr) == ("adam", 1e-3)  # Sec. 4.1
    assert stages.resolve(config, "1", 100).loss.gan_weight == 1.0


def test_the_papers_stages_keep_their_optimizer_whatever_the_backbone():
    for backbone in ("ddcolor_tiny", "chromagan"):
        config = common.get_config(backbone)
        for name in ("2", "rnet"):
            optimizer = stages.resolve(config, name, 100).optimizer
            assert (optimizer.name, optimizer.lr, optimizer.b1, optimizer.b2) == (
                "adam",
                1e-3,
                0.9,
                0.99,
            ), (backbone, name)
    assert common.get_config("chromagan").optimizer.b1 == 0.5  # the backbone's own stages


def test_without_relevance_stage1_masks_nothing_and_stage3_uses_r_one():
    config = common.get_config()
    assert stages.resolve(config, "1", 100).mask_fraction == pytest.approx(0.3)
    assert stages.resolve(config, "3", 100).force_relevance is None  # r from RNet
    assert stages.resolve(config, "e2e", 100).force_relevance == 1.0
    config.use_relevance = False
    assert stages.resolve(config, "1", 100).mask_fraction == 0.0
    assert stages.resolve(config, "3", 100).force_relevance == 1.0
    assert stages.resolve(config, "3", 100).previous == "stage2"


def test_a_stage_needs_a_length():
    config = common.get_config()
    config.stages.rnet.num_epochs = 0.0
    with pytest.raises(ValueError, match="num_steps or num_epochs"):
        stages.resolve(config, "rnet", 100)


@pytest.fixture(scope="module")
def params_template(tmp_path_factory):
    config = tiny_config(tmp_path_factory.mktemp("unused"))
    return loop.abstract_variables(build_model(config.model), config)["params"]


def _trained_modules(params, name):
    config = common.get_config()
    spec = config.stages[name]
    mask = optim.trainable_mask(params, spec.trainable, spec.frozen)
    paths = [optim.param_path(p) for p, m in jax.tree_util.tree_flatten_with_path(mask)[0] if m]
    return paths, {p.split("/")[0] for p in paths}


def test_default_stages_train_what_the_paper_trains(params_template):
    paths, modules = _trained_modules(params_template, "baseline")
    assert modules == {"backbone"} and not any("/dsg/" in p for p in paths)
    paths, modules = _trained_modules(params_template, "stage1")
    assert modules == {"backbone", "semantic", "guidance"} and any("/dsg/" in p for p in paths)
    assert _trained_modules(params_template, "stage2")[1] == {"audio", "a2v"}
    paths, modules = _trained_modules(params_template, "rnet")
    assert modules == {"relevance"}
    assert {p.split("/")[1] for p in paths} == {"audio_head", "image_head", "fc"}
    assert _trained_modules(params_template, "stage3")[1] == {"a2v"}
    assert _trained_modules(params_template, "e2e")[1] == {"backbone", "audio", "a2v", "guidance"}


@pytest.mark.parametrize("module", [common, demo, ddcolor_tiny])
def test_configs_resolve_every_stage(module):
    config = module.get_config()
    for name in stages.STAGE_NAMES:
        stage = stages.resolve(config, name, train_size=1000)
        assert stage.num_steps > 0 and stage.batch_size > 0
