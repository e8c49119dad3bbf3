"""A run directory is enough, on any topology: a run trained on 4 devices is evaluated,
colorized and resumed on 1; a run trained on 1 is evaluated on 4; the ablation pipelines start
from the full run's baseline. Every config here is the one a real tiny training run wrote."""

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aiaic_jax import cli, runs
from aiaic_jax.convert.common import save_variables
from aiaic_jax.evaluation import runner
from aiaic_jax.inference import Colorizer
from aiaic_jax.models.aiaic import build_model
from aiaic_jax.train import checkpoint, loop, pipelines
from tests import media_factory, tiny_model
from tests.tiny_training import IMAGE_SIZE, build_data, tiny_config

ROOT = Path(__file__).resolve().parents[1]


def _environment(devices: int) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def _run(command, devices, check=True):
    result = subprocess.run(
        [sys.executable, *map(str, command)],
        cwd=ROOT,
        env=_environment(devices),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check:
        assert result.returncode == 0, result.stderr[-4000:]
    return result


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return build_data(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def four_device_run(data_dir, tmp_path_factory):
    """`train.py --stage baseline` on 4 devices: the run directory. (It starts from random
    variables written here, which spares the subprocess compiling the model's initialiser.)"""
    directory = tmp_path_factory.mktemp("four")
    config = tiny_config(data_dir)
    start = tiny_model.random_variables(build_model(config.model), IMAGE_SIZE, seed=0)
    save_variables(directory / "start", start)
    workdir = directory / "run"
    _run(
        [
            "train.py",
            f"--config=tests/tiny_training.py:{data_dir}",
            f"--workdir={workdir}",
            "--stage=baseline",
            f"--config.init_from={directory / 'start'}",
        ],
        devices=4,
    )
    return workdir


@pytest.fixture(scope="module")
def resumed_run(four_device_run, tmp_path_factory):
    """The 4-device run's baseline continued here, on 1 device, from its step-2 checkpoint to
    step 4, with the config that run wrote (and one override): (workdir, captured log)."""
    workdir = tmp_path_factory.mktemp("resumed") / "run"
    shutil.copytree(four_device_run / "baseline", workdir / "baseline", ignore=_without_final)
    config = runs.apply_overrides(
        runs.read_config(four_device_run / "baseline"),
        ["--config.stages.baseline.num_steps=4"],
    )
    handler, logger = _Capture(), logging.getLogger("absl")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        results = loop.run(config, str(workdir), "baseline")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert list(results) == ["baseline"]
    return workdir, "\n".join(handler.messages)


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _without_final(directory, names):
    return ["final"] if "final" in names else []


def test_training_writes_its_config_with_absolute_paths(four_device_run, data_dir):
    document = json.loads((four_device_run / "baseline" / "config.json").read_text())
    assert document["stage"]["name"] == "baseline"
    assert document["config"]["data"]["data_dir"] == os.path.abspath(data_dir)
    config = runs.read_config(four_device_run)  # the run: its baseline stage
    expected = json.loads(tiny_config(data_dir).model.to_json_best_effort())
    assert json.loads(config.model.to_json_best_effort()) == expected
    assert config.data.eval_splits == ("val",)  # tuples again, as the config files have them


def test_find_checkpoint_picks_the_stage_and_names_what_is_missing(four_device_run):
    assert runs.find_checkpoint(four_device_run).stage == "baseline"
    found = runs.find_checkpoint(four_device_run, "baseline")
    assert found.path == four_device_run / "baseline" / "final"
    assert runs.find_checkpoint(found.path).stage == "baseline"
    assert runs.find_checkpoint(four_device_run / "baseline").path == found.path
    with pytest.raises(FileNotFoundError, match=r"stage stage3 is not complete.*: baseline"):
        runs.find_checkpoint(four_device_run, "3")
    with pytest.raises(FileNotFoundError, match="no such run"):
        runs.find_checkpoint(four_device_run / "missing")


def test_overrides_are_typed_by_the_run_config(four_device_run):
    config = runs.read_config(four_device_run)
    changed = runs.apply_overrides(
        config, ["--config.data.eval_batch_size=8", "--config.data.eval_splits=('val','ood')"]
    )
    assert changed.data.eval_batch_size == 8 and changed.data.eval_splits == ("val", "ood")
    assert config.data.eval_batch_size == 4  # the original is unchanged
    with pytest.raises(ValueError, match="no_such_field"):
        runs.apply_overrides(config, ["--config.data.no_such_field=1"])


def test_a_four_device_run_is_evaluated_on_one_device_from_its_directory(four_device_run, tmp_path):
    """No config is given: eval reads the one training wrote."""
    results = runner.run(None, tmp_path, {"full": str(four_device_run)}, variants=["baseline"])
    val = results.results["val"]["baseline"]
    assert np.isfinite(val["psnr"]) and val["n"] == 8
    assert (tmp_path / "results.md").exists()


def test_a_run_finished_on_one_device_is_evaluated_on_four_from_its_directory(
    resumed_run, tmp_path
):
    """(tests/test_eval.py checks that 1 and 4 devices give the same numbers.)"""
    workdir, _ = resumed_run
    _run(
        ["eval.py", f"--workdir={tmp_path}", f"--runs=full={workdir}", "--variants=baseline"],
        devices=4,
    )
    results = json.loads((tmp_path / "results.json").read_text())
    val = results["val"]["baseline"]
    assert np.isfinite(val["psnr"]) and val["n"] == 8
    assert results["protocol"]["variables"]["baseline"].startswith(str(workdir))


def test_a_four_device_run_colorizes_real_images_from_its_directory(
    four_device_run, tmp_path, capsys
):
    folder = tmp_path / "in"
    folder.mkdir()
    media_factory.save_image(folder / "wide.png", media_factory.colourful_image((96, 54), seed=1))
    media_factory.audio_file(folder / "wide.wav", media_factory.tone(0.5, 44100)[:, 0], 44100)
    media_factory.save_image(folder / "photo.jpg", media_factory.colourful_image((80, 60), seed=2))
    status = cli.main(
        ["colorize", "--checkpoint", str(four_device_run), str(folder), str(tmp_path / "out")]
    )
    out = capsys.readouterr().out
    assert status == 0, out
    assert "wide.png" in out and "r = 0.00" in out  # a baseline: r = 0, the backbone alone
    assert "no audio: r = 0" in out
    with Image.open(tmp_path / "out" / "wide.png") as image:
        assert image.size == (96, 54)
    with Image.open(tmp_path / "out" / "photo.jpg") as image:
        assert image.size == (80, 60)


def test_a_stage_resumes_on_one_device_from_a_four_device_checkpoint(resumed_run):
    workdir, log = resumed_run
    assert "resumed from its checkpoint at step 2" in log
    assert "written by 1 processes, 4 devices; continuing on 1 processes, 1 devices" in log
    steps = [json.loads(line)["step"] for line in (workdir / "baseline" / "metrics.jsonl").open()]
    assert steps == [1, 2, 3, 4]
    assert checkpoint.is_complete(workdir, "baseline")


def test_resuming_where_the_batch_does_not_split_names_both_device_counts(
    four_device_run, tmp_path
):
    """The baseline's checkpoint was written on 4 devices with batch 4; 3 cannot split it."""
    stage = tmp_path / "run" / "baseline"
    shutil.copytree(four_device_run / "baseline", stage, ignore=_without_final)
    result = _run(
        [
            "train.py",
            f"--config=configs/run.py:{stage}",
            f"--workdir={tmp_path / 'run'}",
            "--stage=baseline",
            "--config.stages.baseline.num_steps=4",
        ],
        devices=3,
        check=False,
    )
    assert result.returncode != 0
    assert "written by 1 processes, 4 devices, on 1 processes, 3 devices" in result.stderr
    assert "batch size 4 does not split over 3 devices" in result.stderr


def test_the_ablations_start_from_the_full_runs_baseline(four_device_run):
    """(tests/test_loop.py trains the e2e pipeline from a full run's baseline.)"""
    config = tiny_config("unused")
    config.stages.stage2.init_from = "runs/init/vggsound_audio"
    wo_r = pipelines.pipeline_config(config, "wo_r", str(four_device_run))
    assert wo_r.use_relevance is False
    assert wo_r.init_from == str(four_device_run / "baseline" / "final")
    assert pipelines.stages_of("wo_r", str(four_device_run)) == ("stage1", "stage2", "stage3")
    assert pipelines.stages_of("full") == ("baseline", "stage1", "stage2", "rnet", "stage3")
    assert pipelines.stages_of("e2e") == ("baseline", "e2e")
    e2e_config = pipelines.pipeline_config(config, "e2e", str(four_device_run))
    assert e2e_config.stages.e2e.init_from == "runs/init/vggsound_audio"
    assert config.use_relevance is True and config.init_from == ""  # the input is unchanged


def test_a_pipeline_trains_only_the_stages_asked_for(four_device_run, tmp_path):
    config = tiny_config("unused")
    with pytest.raises(ValueError, match=r"pipeline wo_r has no stages \['rnet'\]"):
        pipelines.run(config, "wo_r", str(tmp_path), str(four_device_run), only=("rnet",))
    assert not any(tmp_path.iterdir())  # refused before anything was written
    # The run holds a complete baseline and nothing else: asked for the baseline alone, nothing
    # trains (without `only` it would go on to stage 1).
    assert pipelines.run(config, "full", str(four_device_run), only=("baseline",)) == {}
    with pytest.raises(FileNotFoundError, match="no complete baseline"):
        pipelines.pipeline_config(config, "wo_r", str(four_device_run / "nothing"))


def test_the_library_colorizes_arrays_from_a_run(four_device_run):
    colorizer = Colorizer.from_run(four_device_run)
    assert colorizer.mode == "0" and colorizer.checkpoint.stage == "baseline"
    # r fixed at 1 runs the audio path (the baseline's guidance is untrained, but it runs).
    colorizer = Colorizer.from_run(four_device_run, mode="1")
    grey = media_factory.colourful_image((70, 40), seed=4).mean(axis=-1).astype(np.uint8)
    wave = media_factory.tone(0.5, 22050)  # [T, 1] int16 at 22.05 kHz
    rgb, relevance = colorizer.colorize(grey, audio=wave, sample_rate=22050)
    assert rgb.shape == (40, 70, 3) and rgb.dtype == np.uint8 and relevance == 1.0
    silent, relevance = colorizer.colorize(grey)
    assert relevance == 0.0 and silent.shape == rgb.shape
    batch, relevance = colorizer.colorize(
        np.stack([grey, grey]), audio=[wave, None], sample_rate=22050
    )
    assert batch.shape == (2, 40, 70, 3)
    np.testing.assert_array_equal(relevance, [1.0, 0.0])
    np.testing.assert_array_equal(batch[0], rgb)
    np.testing.assert_array_equal(batch[1], silent)
