"""`aiaic export`: the exported StableHLO colorizer, run without the project's model code, and the
ONNX graph, run by onnxruntime, give what the colorizer gives in process, with sound and
without; their batch is symbolic."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from aiaic_jax import cli, color, export, exported, inference, preprocess, runs
from aiaic_jax.convert.common import save_variables
from aiaic_jax.inference import Colorizer
from aiaic_jax.models.aiaic import build_model
from tests import tiny_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 32


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    """A run directory (stage3/final and its config.json), exported by the command."""
    root = tmp_path_factory.mktemp("export")
    config = tiny_model.run_config(image_size=SIZE, audio_seconds=0.5)
    config.model.backbone_overrides.kernels = "auto"  # in process: the CPU rewrites
    variables = tiny_model.random_variables(build_model(config.model), SIZE, seed=2)
    stage = root / "run" / "stage3"
    save_variables(stage / "final", variables)
    (stage / "config.json").write_text(runs.config_document(config, {"name": "stage3"}))
    status = cli.main(["export", "--checkpoint", str(root / "run"), str(root / "out"), "--onnx"])
    assert status == 0
    return root


_RUN_EXPORT = """
import sys, numpy as np
from aiaic_jax.exported import load
folder, data = sys.argv[1], np.load(sys.argv[2])
colorizer = load(folder)
spectrogram = colorizer.spectrogram(data["audio"])
ab, r = colorizer(data["gray_l"], spectrogram, data["has_audio"])
batch = str(colorizer._colorizer.in_avals[0].shape[0])
loaded = [m for m in sys.modules if m.startswith(("aiaic_jax.models", "flax"))]
np.savez(sys.argv[3], spectrogram=spectrogram, ab=ab, r=r, batch=batch, loaded=np.array(loaded))
"""


def test_the_export_run_without_the_model_code_gives_the_in_process_colorization(
    export_dir, tmp_path
):
    """A fresh interpreter loads the export with `aiaic_jax.exported` alone (neither the
    project's models nor flax get imported) and colours a batch of 4, with sound and without;
    its spectrograms, ab and r are the in-process colorizer's. The batch is symbolic."""
    count = 4
    colorizer = Colorizer.from_run(export_dir / "run", batch_size=count)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (count, SIZE, SIZE, 3), np.uint8)
    audio = rng.integers(-9000, 9000, (count, colorizer.num_samples)).astype(np.int16)
    has_audio = np.array([True, True, False, True])
    gray_l = np.asarray(color.rgb_to_l_ab(color.rgb_uint8_to_float(rgb))[0])
    np.savez(tmp_path / "inputs.npz", gray_l=gray_l, audio=audio, has_audio=has_audio)
    done = subprocess.run(
        [sys.executable, "-c", _RUN_EXPORT, str(export_dir / "out"), str(tmp_path / "inputs.npz"),
         str(tmp_path / "outputs.npz")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": REPO},
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    got = np.load(tmp_path / "outputs.npz")
    assert list(got["loaded"]) == [] and str(got["batch"]) == "b"

    np.testing.assert_allclose(
        got["spectrogram"], preprocess.spectrogram(audio, colorizer.config.audio), atol=1e-5
    )
    heard = colorizer.hear(list(audio))
    code = np.stack([h.code if a else np.zeros_like(h.code) for h, a in zip(heard, has_audio)])
    embedding = np.stack([h.embedding for h in heard])
    expected_r = inference._relevance(
        colorizer.variables, rgb, embedding, has_audio, colorizer.controls, model=colorizer.model
    )
    expected_ab = inference._colorize_at(
        colorizer.variables, rgb, code, expected_r, model=colorizer.model
    )
    ab, r = got["ab"], got["r"]
    assert ab.shape == (count, SIZE, SIZE, 2) and r.shape == (count,)
    print("max |ab - in process|", np.abs(ab - expected_ab).max())
    np.testing.assert_allclose(r, expected_r, atol=1e-5)
    np.testing.assert_allclose(ab, expected_ab, atol=1e-3)
    assert np.all(r[~has_audio] == 0) and np.all(r[has_audio] > 0) and np.ptp(ab) > 1


def test_the_manifest_describes_the_programs(export_dir):
    manifest = json.loads((export_dir / "out" / exported.MANIFEST).read_text())
    assert manifest["image_size"] == SIZE and manifest["audio_samples"] == 8000
    assert manifest["mode"] == "auto" and manifest["platforms"] == ["cpu"]
    assert manifest["source"].endswith(os.path.join("run", "stage3", "final"))
    assert manifest["inputs"]["gray_l"][:4] == ["B", SIZE, SIZE, 1]


def test_a_folder_that_is_not_an_export_is_named(tmp_path):
    with pytest.raises(ValueError, match="not a readable aiaic export"):
        exported.load(tmp_path)


def test_the_onnx_graph_in_onnxruntime_gives_the_in_process_colorization(export_dir):
    """colorizer.onnx (native kernels) run by onnxruntime against the in-process program (the
    CPU rewrites) on a batch of 3 with and without sound (the export's own check, which the
    manifest records, and again here: the same ab and r), and on a batch of 5 whose first three
    pairs are those: the batch is symbolic and the pairs independent."""
    import onnxruntime

    colorizer = Colorizer.from_run(export_dir / "run")
    path = str(export_dir / "out" / exported.ONNX_FILE)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["gray_l", "spectrogram", "has_audio"]
    assert session.get_inputs()[0].shape == ["B", SIZE, SIZE, 1]
    bins, frames = session.get_inputs()[1].shape[1:]
    recorded = json.loads((export_dir / "out" / exported.MANIFEST).read_text())["onnx"]["check"]
    check = export.check_onnx(path, colorizer, bins, frames, batch=3)
    assert check == recorded
    print("max |ab - in process|", check["max_abs_diff_ab"])
    assert check["max_abs_diff_ab"] < 1e-3 and check["max_abs_diff_r"] < 1e-5

    rng = np.random.default_rng(3)
    feeds = {
        "gray_l": rng.uniform(0, 100, (5, SIZE, SIZE, 1)).astype(np.float32),
        "spectrogram": rng.normal(size=(5, bins, frames)).astype(np.float32),
        "has_audio": np.array([True, False, True, True, False]),
    }
    ab5, r5 = session.run(["ab", "r"], feeds)
    ab3, r3 = session.run(["ab", "r"], {k: v[:3] for k, v in feeds.items()})
    np.testing.assert_allclose(ab5[:3], ab3, atol=1e-4)
    np.testing.assert_allclose(r5[:3], r3, atol=1e-6)
    assert np.all(r5[~feeds["has_audio"]] == 0) and np.all(r5[feeds["has_audio"]] > 0)
    assert np.ptp(ab5) > 1
