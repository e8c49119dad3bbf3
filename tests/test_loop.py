"""The training loop end to end on a tiny synthetic world: every stage, logs, skipping complete
stages, the non-finite stop, and a SIGKILLed run that resumes bit-identical."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from aiaic_jax.convert.common import CheckpointMismatch, restore_variables, save_variables
from aiaic_jax.models.aiaic import build_model
from aiaic_jax.train import checkpoint, loop, pipelines
from tests import tiny_model
from tests.tiny_training import IMAGE_SIZE, build_data, get_config, tiny_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return build_data(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def full_run(data_dir, tmp_path_factory):
    """`--stage all` on the tiny config: (workdir, config, results). The baseline starts from
    random variables (`config.init_from`), which spares compiling the model's initialiser."""
    workdir = tmp_path_factory.mktemp("full")
    config = tiny_config(data_dir)
    start = tiny_model.random_variables(build_model(config.model), IMAGE_SIZE, seed=0)
    config.init_from = str(save_variables(workdir / "start", start))
    results = loop.run(config, str(workdir), "all")
    return workdir, config, results


def _leaves(tree, prefix=""):
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_leaves(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = np.asarray(value)
    return flat


def _final(workdir, stage):
    return _leaves(restore_variables(checkpoint.final_dir(workdir, stage)))


def _changed(before, after):
    return {k for k in before if before[k].tobytes() != after[k].tobytes()}


def _copy_finals(source, target, names):
    for name in names:
        shutil.copytree(checkpoint.final_dir(source, name), checkpoint.final_dir(target, name))


def test_all_stages_complete_and_write_every_final_and_log(full_run):
    workdir, _, results = full_run
    assert list(results) == ["baseline", "stage1", "stage2", "rnet", "stage3"]
    for name, metrics in results.items():
        assert checkpoint.is_complete(workdir, name)
        assert metrics["nonfinite"] == 0 and np.isfinite(metrics["loss"]), name
        stage_dir = workdir / name
        records = [
            json.loads(line) for line in (stage_dir / "metrics.jsonl").read_text().splitlines()
        ]
        assert [r["step"] for r in records] == [1, 2]
        for key in ("loss", "grad_norm", "update_norm", "lr", "images_per_second"):
            assert key in records[-1], (name, key)
        assert any(p.name.startswith("events.out.tfevents") for p in (stage_dir / "tb").iterdir())
        resolved = json.loads((stage_dir / "config.json").read_text())
        assert resolved["stage"]["name"] == name and resolved["stage"]["num_steps"] == 2
        assert checkpoint.StageCheckpoints(workdir, name, 3).all_steps() == [2]
    assert {"l1", "colorfulness"} <= set(results["stage1"])
    assert {"perceptual", "gan", "d_loss"} <= set(results["stage3"])
    assert "semantic" in results["stage2"] and "relevance_bce" in results["rnet"]
    assert 0 < results["stage3"]["relevance_mean"] < 1  # r from RNet


def test_each_stage_changes_only_what_it_trains(full_run):
    workdir, _, _ = full_run
    finals = {name: _final(workdir, name) for name in loop.stages.ALL_ORDER}
    top = lambda keys: {k.split("/")[1] for k in keys}
    stage1 = _changed(finals["baseline"], finals["stage1"])
    assert top(stage1) == {"backbone", "semantic", "guidance"}
    assert any("/dsg/" in k for k in stage1)
    assert top(_changed(finals["stage1"], finals["stage2"])) == {"audio", "a2v"}
    rnet = _changed(finals["stage2"], finals["rnet"])
    assert {k.split("/")[2] for k in rnet} == {"audio_head", "image_head", "fc", "audio_encoder"}
    for key, value in finals["rnet"].items():  # stage 2's E_a became RNet's audio encoder
        if "/relevance/audio_encoder/" in key:
            source = key.replace("/relevance/audio_encoder/", "/audio/")
            np.testing.assert_array_equal(value, finals["stage2"][source])
    assert top(_changed(finals["rnet"], finals["stage3"])) == {"a2v"}


def test_frozen_params_do_not_change_in_stage3(full_run):
    workdir, _, results = full_run
    before, after = _final(workdir, "rnet"), _final(workdir, "stage3")
    changed = _changed(before, after)
    a2v = {k for k in before if k.startswith("params/a2v/")}
    assert changed == a2v  # params and BatchNorm/spectral statistics of the rest: same bits

    # The checkpoint's optimizer state holds Adam's two moments for A2V and nothing else; the
    # discriminator (stage 3's GAN term) trains beside it with its own state.
    stage3 = checkpoint.StageCheckpoints(workdir, "stage3", 3)
    state = stage3.state_leaves(2)
    stage3.close()
    moments = [x for k, x in state.items() if k.startswith("opt_state/") and x.ndim > 0]
    assert sum(m.size for m in moments) == 2 * sum(before[k].size for k in a2v)
    for part in ("params", "opt_state"):
        assert any(k.startswith(f"discriminator/{part}/") for k in state), part
    # The state's small leaves are written packed; it restores to the same bits as the final.
    assert {leaf["path"] for leaf in stage3.layout(2)["leaves"]} == set(state)
    for key in a2v:
        np.testing.assert_array_equal(state[key], after[key])
    assert np.isfinite(results["stage3"]["gan"]) and np.isfinite(results["stage3"]["d_loss"])


def test_a_complete_stage_is_skipped(full_run):
    workdir, config, _ = full_run
    started = time.perf_counter()
    assert loop.run(config, str(workdir), "all") == {}
    assert time.perf_counter() - started < 10


def test_the_e2e_pipeline_trains_backbone_audio_and_a2v_from_the_full_runs_baseline(
    full_run, tmp_path
):
    """`train.py --pipeline e2e --from W_full`: the "w/o multi-step" ablation starts from the
    full run's baseline (not its own), with r = 1, and draws its grids."""
    workdir, config, _ = full_run
    config = config.copy_and_resolve_references()
    config.train.grid_every = 2
    results = pipelines.run(config, "e2e", str(tmp_path), baseline_from=str(workdir))
    assert list(results) == ["e2e"] and not (tmp_path / "baseline").exists()
    assert results["e2e"]["relevance_mean"] == 1.0  # r = 1 for every pair with audio
    changed = _changed(_final(workdir, "baseline"), _final(tmp_path, "e2e"))
    assert {k.split("/")[1] for k in changed} == {"backbone", "audio", "a2v", "guidance"}
    grids = list((tmp_path / "e2e" / "grids").glob("*.png"))
    assert [g.name for g in grids] == ["step_0000002.png"]
    written = json.loads((tmp_path / "e2e" / "config.json").read_text())["config"]
    assert written["init_from"] == str(checkpoint.final_dir(workdir, "baseline"))


def test_without_relevance_stage3_starts_from_stage2_with_r_one(full_run, tmp_path):
    workdir, config, _ = full_run
    _copy_finals(workdir, tmp_path, ["baseline", "stage1", "stage2"])
    config = config.copy_and_resolve_references()
    config.use_relevance = False
    config.stages.stage3.loss.gan_weight = 0.0  # (the full run's stage 3 tests the GAN)
    results = loop.run(config, str(tmp_path), "all")
    assert list(results) == ["stage3"] and results["stage3"]["relevance_mean"] == 1.0
    assert not (tmp_path / "rnet").exists()
    changed = _changed(_final(tmp_path, "stage2"), _final(tmp_path, "stage3"))
    assert {k.split("/")[1] for k in changed} == {"a2v"}


def test_a_nonfinite_loss_stops_naming_the_step_and_saves_nothing_after_it(full_run, tmp_path):
    workdir, config, _ = full_run
    _copy_finals(workdir, tmp_path, ["stage1"])
    config = config.copy_and_resolve_references()
    config.stages.stage2.num_steps = 6
    config.train.checkpoint_every = 2
    config.train.log_every = 5  # the check before the step-4 checkpoint notices it first
    config.train.inject_nan_at_step = 3
    with pytest.raises(loop.NonFiniteError, match="not finite at step 3") as error:
        loop.run(config, str(tmp_path), "2")
    assert "last good checkpoint: step 2" in str(error.value)
    assert checkpoint.StageCheckpoints(tmp_path, "stage2", 3).all_steps() == [2]
    assert not checkpoint.is_complete(tmp_path, "stage2")


KILL_STEPS, KILL_OPTIONS = 6, dict(checkpoint_every=2, log_every=3)


def test_a_killed_run_resumes_from_its_checkpoint_bit_identical(full_run, data_dir, tmp_path):
    """train.py's stage 2, SIGKILLed after its first checkpoint and run again, ends with the same
    bits as an uninterrupted run of the same config here. (All three take the step the full run
    compiled from the session's compilation cache, tests/conftest.py.)"""
    workdir, _, _ = full_run
    uninterrupted, interrupted = tmp_path / "uninterrupted", tmp_path / "interrupted"
    for target in (uninterrupted, interrupted):
        _copy_finals(workdir, target, ["stage1"])
    config = get_config(data_dir)
    config.stages.stage2.num_steps = KILL_STEPS
    config.train.update(KILL_OPTIONS)
    loop.run(config, str(uninterrupted), "2")

    command = [
        sys.executable,
        "train.py",
        f"--config=tests/tiny_training.py:{data_dir}",
        f"--workdir={interrupted}",
        "--stage=2",
        f"--config.stages.stage2.num_steps={KILL_STEPS}",
        *(f"--config.train.{key}={value}" for key, value in KILL_OPTIONS.items()),
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    first_checkpoint = interrupted / "stage2" / "checkpoints" / "2"
    deadline = time.monotonic() + 120
    while not first_checkpoint.exists() and process.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint within 2 minutes"
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not checkpoint.is_complete(interrupted, "stage2"), "killed too late"
    # A save cut short leaves only a temporary directory, which the restart must ignore.
    (interrupted / "stage2" / "checkpoints" / f"{KILL_STEPS}.orbax-checkpoint-tmp-1").mkdir()

    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
    expected, resumed = _final(uninterrupted, "stage2"), _final(interrupted, "stage2")
    assert expected.keys() == resumed.keys()
    assert not _changed(expected, resumed)
    assert _changed(_final(workdir, "stage1"), resumed)  # it did train
    metrics = (interrupted / "stage2" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(metrics[-1])["step"] == KILL_STEPS


def test_a_damaged_checkpoint_is_set_aside_and_training_resumes_from_the_one_before(
    full_run, tmp_path, caplog
):
    """As a power loss can leave it: the newest checkpoint's array data cut short."""
    workdir, config, _ = full_run
    _copy_finals(workdir, tmp_path, ["stage1"])
    config = config.copy_and_resolve_references()
    config.stages.stage2.num_steps = 4
    config.train.checkpoint_every = 2
    loop.run(config, str(tmp_path), "2")
    shutil.rmtree(checkpoint.final_dir(tmp_path, "stage2"))
    checkpoints = tmp_path / "stage2" / "checkpoints"
    for data in (checkpoints / "4" / "state" / "d").iterdir():
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    config.stages.stage2.num_steps = 6
    with caplog.at_level("WARNING"):
        loop.run(config, str(tmp_path), "2")
    assert "the checkpoint at step 4 does not restore" in caplog.text
    assert (checkpoints / "4.damaged").is_dir()
    assert checkpoint.is_complete(tmp_path, "stage2")
    lines = (tmp_path / "stage2" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4, 5, 6]


def test_a_checkpoint_of_another_model_layout_stops_the_run_and_keeps_everything(
    full_run, tmp_path
):
    """A checkpoint written by another version of the model is not damage: nothing is set
    aside, no metrics are dropped, and the error names the variables that differ."""
    workdir, config, _ = full_run
    _copy_finals(workdir, tmp_path, ["stage1"])
    config = config.copy_and_resolve_references()
    config.stages.stage2.num_steps = 4
    config.train.checkpoint_every = 2
    loop.run(config, str(tmp_path), "2")
    shutil.rmtree(checkpoint.final_dir(tmp_path, "stage2"))
    metrics = (tmp_path / "stage2" / "metrics.jsonl").read_text()
    config.stages.stage2.num_steps = 6
    config.model.a2v_hidden = (24,)  # another A2V than the checkpoint's
    with pytest.raises(CheckpointMismatch, match="another layout") as error:
        loop.run(config, str(tmp_path), "2")
    assert "params/a2v/" in str(error.value)
    checkpoints = tmp_path / "stage2" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir() if p.is_dir()) == ["2", "4"]
    assert (tmp_path / "stage2" / "metrics.jsonl").read_text() == metrics
