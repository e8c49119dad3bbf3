"""Data parallelism: a step on 4 devices, and on 2 processes joined over localhost, equals the
one-device step on the same global batch; the training loop runs a stage on 2 processes."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from aiaic_jax import runs
from aiaic_jax.convert.common import restore_variables, save_variables
from aiaic_jax.models.aiaic import build_model
from aiaic_jax.train import checkpoint, loop
from aiaic_jax.train.parallel import DATA_AXIS
from tests.parallel_worker import run_steps
from tests.tiny_training import build_data, random_variables, tiny_config

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-5
# Stage 2: E_a's BatchNorm normalises over the global batch, gradients are summed over every
# device. A few steps at a tiny learning rate: Adam divides each gradient by its own
# magnitude, so a parameter whose gradient is analytically zero (e.g. a bias before a
# BatchNorm) and numerically float noise of the reduction order moves by up to +-lr either
# way. With lr = 1e-6 that stays under the tolerance, while the losses, the gradient and
# update norms (compared relatively) and the BatchNorm statistics still have to agree.
STAGES, STEPS, LR = ("2",), 3, 1e-6


@pytest.fixture(scope="module")
def one_device():
    """The reference: every stage's steps on a single device, keyed like the worker's."""
    mesh = Mesh(np.asarray(jax.devices()[:1]), (DATA_AXIS,))
    return {
        f"{stage}/{key}": value
        for stage in STAGES
        for key, value in run_steps(stage, STEPS, mesh, LR).items()
    }


def _environment(**extra):
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    env.update(extra)
    return env


def _worker(stages, out, *extra):
    return [
        sys.executable, "-m", "tests.parallel_worker",
        f"--stages={','.join(stages)}", f"--steps={STEPS}", f"--lr={LR}", f"--out={out}", *extra,
    ]  # fmt: skip


def _assert_same(result, reference):
    result = dict(np.load(result))
    assert result.pop("devices") > 1
    stages = {key.split("/")[0] for key in result}
    reference = {k: v for k, v in reference.items() if k.split("/")[0] in stages}
    assert result.keys() == reference.keys()
    worst = {}
    for key, expected in reference.items():
        difference = np.max(np.abs(result[key] - expected), initial=0.0)
        magnitude = float(np.max(np.abs(expected), initial=0.0))
        # Metrics relative to their size; variables relative to max(1, size).
        scale = max(magnitude, 1e-3) if key.startswith("metrics/") else max(magnitude, 1.0)
        worst[key] = difference / scale
    key = max(worst, key=worst.get)
    assert worst[key] <= TOLERANCE, f"{key} differs by {worst[key]:.2e}"


def test_a_step_on_four_devices_equals_the_one_device_step(one_device, tmp_path):
    out = tmp_path / "four.npz"
    env = _environment(XLA_FLAGS="--xla_force_host_platform_device_count=4")
    subprocess.run(_worker(STAGES, out), cwd=ROOT, env=env, check=True, capture_output=True)
    _assert_same(out, one_device)


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_end_with_the_params_of_one_and_train_a_stage(one_device, tmp_path, caplog):
    """The step on 2 processes of 2 devices each, joined over localhost, equals one device's;
    then the training loop runs a stage on both: each reads its shard, the checkpoint holds
    both iterator states, process 0 alone writes the logs. Here, in one process on one device,
    the stage then resumes from that checkpoint and its final colorizes."""
    data_dir = build_data(tmp_path / "data")
    config = tiny_config(data_dir)
    template = loop.abstract_variables(build_model(config.model), config)
    save_variables(tmp_path / "start", random_variables(template))
    out, workdir, address = tmp_path / "two.npz", tmp_path / "run", f"localhost:{_free_port()}"
    command = _worker(
        STAGES, out, f"--coordinator_address={address}", "--num_processes=2",
        "--loop_stage=rnet", f"--loop_workdir={workdir}", f"--data_dir={data_dir}",
        f"--init_from={tmp_path / 'start'}",
    )  # fmt: skip
    processes = [
        subprocess.Popen(
            [*command, f"--process_id={index}"], cwd=ROOT,
            env=_environment(XLA_FLAGS="--xla_force_host_platform_device_count=2"),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        for index in range(2)
    ]  # fmt: skip
    logs = [p.communicate(timeout=300)[0].decode(errors="replace") for p in processes]
    for process, log in zip(processes, logs):
        assert process.returncode == 0, log[-3000:]
    _assert_same(out, one_device)

    assert checkpoint.is_complete(workdir, "rnet")
    lines = (workdir / "rnet" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2  # steps 1 and 2, written once
    data_state = workdir / "rnet" / "checkpoints" / "2" / "data"
    assert sorted(p.name for p in data_state.glob("process_*")) == [
        "process_0-of-2.json",
        "process_1-of-2.json",
    ]

    # One process: the final restores, the stage resumes at step 2 from the checkpoint.
    final = restore_variables(checkpoint.final_dir(workdir, "rnet"))
    assert jax.tree.structure(final) == jax.tree.structure(
        {"params": template["params"], "batch_stats": template["batch_stats"]}
    )
    shutil.rmtree(checkpoint.final_dir(workdir, "rnet"))
    resumed = runs.apply_overrides(
        runs.read_config(workdir / "rnet"), ["--config.stages.rnet.num_steps=3"]
    )
    with caplog.at_level("INFO"):
        loop.run(resumed, str(workdir), "rnet")
    assert "resumed from its checkpoint at step 2" in caplog.text
    assert "written by 2 processes, this run has 1" in caplog.text
    assert checkpoint.is_complete(workdir, "rnet")
    lines = (workdir / "rnet" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3]
