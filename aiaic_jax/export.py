"""Exporting a trained colorizer as files that run without this project's code.

    aiaic export --checkpoint runs/demo/full OUT/

`export_colorizer` writes into OUT (`aiaic_jax.exported` reads it back):

- `colorizer.jax`: serialized StableHLO (`jax.export`) of (gray_l [B, S, S, 1] float32, L in
  [0, 100]; spectrogram [B, F, T] float32; has_audio [B] bool) -> (ab [B, S, S, 2] float32
  raw Lab units; r [B] float32), the weights inside as constants, the batch B symbolic. r is
  set as the Colorizer's mode sets it ("auto": RNet's; "1"/"0": fixed) and is 0 where a pair
  has no sound, where the backbone colours alone (Eq. 8). The program is the one `aiaic
  colorize` runs (`AIAIC.sound_guidance`, `relevance_heard`, `colorize_heard`), for the CPU
  and, where jax has them, the GPU (`platforms`).
- `spectrogram.jax`: int16 [B, N] 16 kHz mono waveforms (N: the model's audio length) -> the
  spectrogram the model hears.
- `manifest.json`: the shapes, the mode, the config's model and audio sections, the checkpoint
  it came from and the jax version that wrote it.

With `onnx=True` (`aiaic export --onnx`), also `colorizer.onnx`: the same colorizer as an ONNX
graph (jax2onnx; opset 23, batch dimension "B" symbolic), for onnxruntime and the other ONNX
runtimes; the spectrogram stays `spectrogram.jax` (jax2onnx's real FFT lowers to a DFT node
that onnxruntime refuses). The backbone is converted with its native kernels (grouped
convolutions; `layers.use_rewrites`), which are one node each in ONNX where the CPU rewrites
would be dozens. When onnxruntime is installed the graph is run once on a random batch beside
the JAX program, and the largest differences go into the manifest (`onnx.check`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from aiaic_jax import exported, preprocess
from aiaic_jax.data.media import written_whole
from aiaic_jax.inference import Colorizer
from aiaic_jax.models.aiaic import AIAIC

# The names of colorizer.onnx's inputs and outputs.
ONNX_INPUTS = ("gray_l", "spectrogram", "has_audio")
ONNX_OUTPUTS = ("ab", "r")


def colorizer_function(colorizer: Colorizer, model: AIAIC | None = None):
    """(gray_l, spectrogram, has_audio) -> (ab, r) with the colorizer's variables and mode
    (and its model, or `model`: the same network written otherwise, e.g. `native_kernels`)."""
    model, variables = model or colorizer.model, colorizer.variables
    use_rnet = colorizer.mode == "auto"
    fixed = 1.0 if use_rnet else float(colorizer.mode)

    def colorize(gray_l: jax.Array, spectrogram: jax.Array, has_audio: jax.Array):
        code, embedding = model.apply(variables, spectrogram, method=AIAIC.sound_guidance)
        if use_rnet:
            relevance = model.apply(variables, gray_l, embedding, method=AIAIC.relevance_heard)
        else:
            relevance = jnp.full(has_audio.shape, fixed, jnp.float32)
        relevance = jnp.where(has_audio, relevance.astype(jnp.float32), 0.0)
        ab = model.apply(variables, gray_l, code, relevance, method=AIAIC.colorize_heard)
        return ab, relevance

    return colorize


def _spectrogram_shape(colorizer: Colorizer) -> tuple[int, int]:
    waveform = jax.ShapeDtypeStruct((1, colorizer.num_samples), jnp.int16)
    shape = jax.eval_shape(lambda w: preprocess.spectrogram(w, colorizer.config.audio), waveform)
    return shape.shape[1], shape.shape[2]


def export_colorizer(
    colorizer: Colorizer,
    directory: str | os.PathLike,
    *,
    platforms: Sequence[str] = ("cpu",),
    source: str | None = None,
    onnx: bool = False,
) -> dict[str, Any]:
    """Writes the colorizer's programs (and with `onnx` its ONNX graph) and manifest into
    `directory`; returns the manifest."""
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    size, samples = colorizer.image_size, colorizer.num_samples
    bins, frames = _spectrogram_shape(colorizer)
    (batch,) = jax.export.symbolic_shape("b")
    inputs = (
        jax.ShapeDtypeStruct((batch, size, size, 1), jnp.float32),
        jax.ShapeDtypeStruct((batch, bins, frames), jnp.float32),
        jax.ShapeDtypeStruct((batch,), jnp.bool_),
    )
    program = jax.export.export(jax.jit(colorizer_function(colorizer)), platforms=platforms)
    audio = colorizer.config.audio

    def spectrogram(waveforms):
        return preprocess.spectrogram(waveforms, audio)

    sound = jax.export.export(jax.jit(spectrogram), platforms=platforms)
    waveform = jax.ShapeDtypeStruct((batch, samples), jnp.int16)
    files = {
        exported.COLORIZER_FILE: program(*inputs).serialize(),
        exported.SPECTROGRAM_FILE: sound(waveform).serialize(),
    }
    if onnx:
        files[exported.ONNX_FILE] = onnx_colorizer(colorizer, bins, frames).SerializeToString()
    for name, data in files.items():
        with written_whole(os.path.join(directory, name)) as temporary:
            with open(temporary, "wb") as f:
                f.write(data)
    manifest = {
        "format": "aiaic export 1",
        "inputs": {
            "gray_l": ["B", size, size, 1, "float32", "L in [0, 100]"],
            "spectrogram": ["B", bins, frames, "float32", f"from {exported.SPECTROGRAM_FILE}"],
            "has_audio": ["B", "bool"],
        },
        "outputs": {
            "ab": ["B", size, size, 2, "float32", "raw Lab units"],
            "r": ["B", "float32", "0 where has_audio is false"],
        },
        "image_size": size,
        "audio_samples": samples,
        "sample_rate": 16000,
        "mode": colorizer.mode,
        "platforms": list(platforms),
        "source": source,
        "model": colorizer.config.model.to_dict(),
        "audio": audio.to_dict(),
        "jax": jax.__version__,
    }
    if onnx:
        onnx_path = os.path.join(directory, exported.ONNX_FILE)
        manifest["onnx"] = {
            "file": exported.ONNX_FILE,
            "inputs": list(ONNX_INPUTS),
            "outputs": list(ONNX_OUTPUTS),
            "jax2onnx": importlib.metadata.version("jax2onnx"),
            "check": check_onnx(onnx_path, colorizer, bins, frames),
        }
    with written_whole(os.path.join(directory, exported.MANIFEST)) as temporary:
        with open(temporary, "w") as f:
            json.dump(manifest, f, indent=1, default=_plain)
    return manifest


def native_kernels(model: AIAIC) -> AIAIC:
    """The model with its backbone's native kernels, where it has the choice (`kernels`)."""
    if "kernels" not in {f.name for f in dataclasses.fields(model.backbone)}:
        return model
    return model.clone(backbone=model.backbone.clone(kernels="native"))


# jax2onnx's optimiser pass that removes pairs of transposes moves NHWC/NCHW layout changes
# across the residual additions of the audio encoder's blocks wrongly (jax2onnx 0.17.1:
# onnxruntime then refuses the graph, "Add: Incompatible dimensions"); the conversion runs
# without it. The graph is checked against the JAX program either way.
_JAX2ONNX_PASSES_LEFT_OUT = ("remove_redundant_transpose_pairs",)


@contextlib.contextmanager
def _jax2onnx_without_broken_passes():
    from jax2onnx.converter import ir_optimizations

    passes = getattr(ir_optimizations, "_OPTIMIZER_PASSES", None)
    if passes is None or not all(hasattr(p, "name") for p in passes):
        raise RuntimeError(
            "this jax2onnx has no optimiser pass list where aiaic_jax expects it; use the "
            "version in constraints.txt"
        )
    ir_optimizations._OPTIMIZER_PASSES = tuple(
        p for p in passes if p.name not in _JAX2ONNX_PASSES_LEFT_OUT
    )
    try:
        yield
    finally:
        ir_optimizations._OPTIMIZER_PASSES = passes


def onnx_colorizer(colorizer: Colorizer, bins: int, frames: int):
    """The colorizer as an ONNX ModelProto (inputs gray_l, spectrogram, has_audio; outputs ab,
    r; batch "B")."""
    try:
        import jax2onnx
    except ImportError as error:
        raise RuntimeError(
            f"ONNX export needs jax2onnx, onnx and onnxruntime ({error}): pip install -e "
            "'.[onnx]' and pip install --no-deps -c constraints.txt jax2onnx (README, Export)"
        ) from None
    size = colorizer.image_size
    inputs = [
        jax.ShapeDtypeStruct(("B", size, size, 1), jnp.float32),
        jax.ShapeDtypeStruct(("B", bins, frames), jnp.float32),
        jax.ShapeDtypeStruct(("B",), jnp.bool_),
    ]
    function = colorizer_function(colorizer, native_kernels(colorizer.model))
    with _jax2onnx_without_broken_passes():
        return jax2onnx.to_onnx(
            function,
            inputs=inputs,
            model_name="aiaic_colorizer",
            input_names=list(ONNX_INPUTS),
            output_names=list(ONNX_OUTPUTS),
        )


def check_onnx(path: str, colorizer: Colorizer, bins: int, frames: int, batch: int = 3) -> dict:
    """Runs the ONNX file with onnxruntime (CPU) and the colorizer's jitted program on the same
    random batch (L in [0, 100], Gaussian spectrograms, the last pair without sound); returns
    the largest absolute differences of ab and r, or {} without onnxruntime."""
    try:
        import onnxruntime
    except ImportError:
        return {}
    rng = np.random.default_rng(0)
    size = colorizer.image_size
    feeds = {
        "gray_l": rng.uniform(0, 100, (batch, size, size, 1)).astype(np.float32),
        "spectrogram": rng.normal(size=(batch, bins, frames)).astype(np.float32),
        "has_audio": np.arange(batch) < batch - 1,
    }
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = session.run(list(ONNX_OUTPUTS), feeds)
    expected = jax.jit(colorizer_function(colorizer))(*feeds.values())
    check = {
        f"max_abs_diff_{name}": float(np.max(np.abs(np.asarray(e) - g)))
        for name, e, g in zip(ONNX_OUTPUTS, expected, got)
    }
    return {"onnxruntime": onnxruntime.__version__, "batch": batch, **check}


def _plain(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    return str(value)
