"""VGGSound audio network (H.pth.tar) -> AudioResNet18 variables."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aiaic_jax.convert.common import CheckpointMismatch
from aiaic_jax.convert.vggsound import convert_state_dict, convert_vggsound
from aiaic_jax.models.audio_encoder import AudioResNet18

FIXTURE = Path(__file__).parent / "fixtures" / "vggsound_H_state_dict.txt"


def _official_shapes() -> dict[str, tuple[tuple[int, ...], str]]:
    shapes = {}
    for line in FIXTURE.read_text().splitlines():
        if line.startswith("#"):
            continue
        name, *dims, dtype = line.split()
        shape = () if dims == ["scalar"] else tuple(int(d) for d in dims)
        shapes[name] = (shape, dtype)
    return shapes


def _random_state_dict(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    state = {}
    for name, (shape, dtype) in _official_shapes().items():
        if dtype == "int64":
            state[name] = np.array(1000, np.int64)
        elif name.endswith("running_var"):
            state[name] = rng.uniform(0.5, 2.0, shape).astype(np.float32)
        else:
            state[name] = rng.standard_normal(shape).astype(np.float32)
    return state


def _leaf_count(tree) -> int:
    return len(jax.tree.leaves(tree))


def test_every_official_name_maps_and_fills_every_variable():
    state = _random_state_dict()
    variables = convert_state_dict(state)
    template = jax.eval_shape(AudioResNet18().init, jax.random.key(0), jnp.zeros((1, 64, 64)))
    assert jax.tree.map(np.shape, variables["params"]["audio"]) == jax.tree.map(
        lambda x: x.shape, template["params"]
    )
    assert jax.tree.map(np.shape, variables["batch_stats"]["audio"]) == jax.tree.map(
        lambda x: x.shape, template["batch_stats"]
    )
    # Every official tensor except the classifier and the BN counters has one destination.
    used = [k for k in state if not (k.endswith("num_batches_tracked") or ".fc." in k)]
    assert len(used) == _leaf_count(variables) == 100


def test_fake_checkpoint_converts_and_values_land_where_they_should(tmp_path):
    torch = pytest.importorskip("torch")
    state = _random_state_dict()
    path = tmp_path / "H.pth.tar"
    torch.save({"model_state_dict": {k: torch.from_numpy(v) for k, v in state.items()}}, path)

    variables = convert_vggsound(path, into=("audio", "relevance/audio_encoder"))

    for encoder in (
        variables["params"]["audio"],
        variables["params"]["relevance"]["audio_encoder"],
    ):
        np.testing.assert_array_equal(
            encoder["conv1"]["kernel"], state["audnet.conv1.weight"].transpose(2, 3, 1, 0)
        )
        np.testing.assert_array_equal(encoder["bn1"]["scale"], state["audnet.bn1.weight"])
        np.testing.assert_array_equal(
            encoder["layer3_0"]["downsample_conv"]["kernel"][0, 0],
            state["audnet.layer3.0.downsample.0.weight"][:, :, 0, 0].T,
        )
        np.testing.assert_array_equal(
            encoder["layer4_1"]["bn2"]["bias"], state["audnet.layer4.1.bn2.bias"]
        )
    stats = variables["batch_stats"]["audio"]
    np.testing.assert_array_equal(
        stats["layer2_0"]["downsample_bn"]["mean"],
        state["audnet.layer2.0.downsample.1.running_mean"],
    )
    np.testing.assert_array_equal(
        stats["layer1_1"]["bn1"]["var"], state["audnet.layer1.1.bn1.running_var"]
    )


def test_converted_variables_run_in_the_audio_encoder():
    variables = convert_state_dict(_random_state_dict())
    audio = {name: tree["audio"] for name, tree in variables.items()}
    spectrogram = jax.random.normal(jax.random.key(0), (1, 40, 30))
    features = jax.jit(AudioResNet18().apply)(audio, spectrogram)
    assert features.shape == (1, 512)
    assert bool(jnp.all(jnp.isfinite(features)))


def test_missing_unexpected_and_misshaped_keys_are_all_reported():
    state = _random_state_dict()
    del state["audnet.layer1.0.conv2.weight"]
    state["audnet.layer2.1.bn1.weight"] = np.ones(7, np.float32)
    state["audnet.extra.weight"] = np.ones(3, np.float32)
    with pytest.raises(CheckpointMismatch) as error:
        convert_state_dict(state, source="H.pth.tar")
    message = str(error.value)
    assert "H.pth.tar" in message
    assert "missing key layer1.0.conv2.weight" in message
    assert "layer2.1.bn1.weight (7,)" in message
    assert "unexpected key extra.weight" in message


def test_a_checkpoint_of_another_network_is_refused():
    with pytest.raises(CheckpointMismatch, match="not a VGGSound audio-network checkpoint"):
        convert_state_dict({"encoder.weight": np.ones((2, 2), np.float32)})
    with pytest.raises(ValueError, match="into="):
        convert_state_dict(_random_state_dict(), into=("backbone",))
