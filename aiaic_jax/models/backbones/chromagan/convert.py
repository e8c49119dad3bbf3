"""The official ChromaGAN checkpoint (`my_model_colorization.h5`, Keras 2.2.4 `Model.save`) ->
Flax variables of the ChromaGAN backbone, `{"params": {"backbone": ...}, "batch_stats":
{"backbone": ...}}` (BatchNorm moving mean/variance in `batch_stats`).

Keras numbers its layers by creation order in the training session (`conv2d_13`,
`batch_normalization_4`, `dense_9`, `model_2`), so the names say nothing about a layer's role.
The layers are found in the graph the file stores in its `model_config` attribute instead: from
the input, the nested VGG16 model (its ten convs in order); from the trunk, the branch whose end
fans out to two Flatten layers (global features) and the one that ends in the Concatenate
(mid-level); from the global features, the dense stack that ends at a model output (class
head) and the one that feeds the Concatenate; from the Concatenate, the six convs of the
colorization head. Each layer's configuration (kernel size, strides, padding, activation,
BatchNorm epsilon) is checked against the Flax module, and its weights are found through the
`weight_names` attribute of its group under `model_weights`. Keras kernels are HWIO and Dense
kernels (in, out), as in Flax, so values are copied unchanged. Anything missing, left over,
of another shape or of another configuration is an error that lists every one.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from aiaic_jax.convert.common import (
    CheckpointMismatch,
    StateDict,
    TargetPath,
    Tree,
    assign,
    save_variables,
)
from aiaic_jax.models.backbones.chromagan.model import (
    CHROMAGAN_SIZES,
    GLOBAL_STRIDES,
    TRUNK_BLOCK_CONVS,
    TRUNK_CONV_NAMES,
    ChromaGAN,
)

BACKBONE = "backbone"  # the composed model's name for its colorization backbone

# Keras weight name (without ":0") -> (Flax collection, Flax leaf), per layer class.
_LEAVES = {
    "Conv2D": {"kernel": ("params", "kernel"), "bias": ("params", "bias")},
    "Dense": {"kernel": ("params", "kernel"), "bias": ("params", "bias")},
    "BatchNormalization": {
        "gamma": ("params", "scale"),
        "beta": ("params", "bias"),
        "moving_mean": ("batch_stats", "mean"),
        "moving_variance": ("batch_stats", "var"),
    },
}
_MODEL_CLASSES = ("Model", "Functional")  # a nested functional model (Keras, tf.keras)


class KerasLayer(NamedTuple):
    name: str
    kind: str  # Keras class_name
    config: dict[str, Any]
    inputs: tuple[str, ...]  # names of the layers it is called on, in order


class KerasGraph:
    """One functional Keras model's layers and edges, from its `get_config()` JSON."""

    def __init__(self, config: Mapping[str, Any], source: str):
        try:
            self.layers = {
                entry["name"]: KerasLayer(
                    entry["name"],
                    entry["class_name"],
                    entry.get("config", {}),
                    tuple(
                        inbound[0] for node in entry.get("inbound_nodes", []) for inbound in node
                    ),
                )
                for entry in config["layers"]
            }
            self.inputs = [self.layers[entry[0]] for entry in config["input_layers"]]
            self.outputs = [self.layers[entry[0]] for entry in config["output_layers"]]
        except (KeyError, IndexError, TypeError) as e:
            raise CheckpointMismatch(
                f"{source}: not a functional Keras model config ({e!r})"
            ) from e
        self._consumers: dict[str, list[KerasLayer]] = {name: [] for name in self.layers}
        for layer in self.layers.values():
            for name in layer.inputs:
                if name not in self._consumers:
                    raise CheckpointMismatch(f"{source}: {layer.name} is called on unknown {name}")
                self._consumers[name].append(layer)

    def consumers(self, layer: KerasLayer) -> list[KerasLayer]:
        return self._consumers[layer.name]

    def chain(self, start: KerasLayer) -> list[KerasLayer]:
        """`start` and the layers after it while the graph runs in a single line (each layer
        with one consumer, that consumer with one input)."""
        layers = [start]
        while len(next_layers := self.consumers(layers[-1])) == 1:
            if len(next_layers[0].inputs) != 1 or next_layers[0].name == start.name:
                break  # a merge (or a cycle, which no Keras graph has)
            layers.append(next_layers[0])
        return layers


class Located(NamedTuple):
    """Where each Flax module's weights are: module path -> (weight group, Keras layer)."""

    layers: dict[tuple[str, ...], tuple[str, KerasLayer]]
    input_size: tuple[int, int]  # the model's fixed (H, W): (224, 224) for the official one


def _describe(layers: Sequence[KerasLayer]) -> str:
    return " -> ".join(f"{layer.name} ({layer.kind})" for layer in layers) or "nothing"


def _expect(layers: list[KerasLayer], kinds: Sequence[str], what: str, source: str) -> None:
    if [layer.kind for layer in layers] != list(kinds):
        raise CheckpointMismatch(
            f"{source}: the {what} should be {' -> '.join(kinds)}, found {_describe(layers)}"
        )


def _of_kind(layers: Sequence[KerasLayer], kind: str) -> list[KerasLayer]:
    return [layer for layer in layers if layer.kind == kind]


def locate_layers(model_config: Mapping[str, Any], source: str = "checkpoint") -> Located:
    """Finds every weighted layer of the ChromaGAN generator in its Keras graph (see the module
    docstring). Raises CheckpointMismatch where the graph is not ChromaGAN's."""
    graph = KerasGraph(model_config.get("config", model_config), source)
    if len(graph.inputs) != 1 or len(graph.outputs) != 2:
        raise CheckpointMismatch(
            f"{source}: expected one input and two outputs (ab, classes), found "
            f"{_describe(graph.inputs)} and {_describe(graph.outputs)}"
        )
    image = graph.inputs[0]
    shape = image.config.get("batch_input_shape")
    if not (
        isinstance(shape, list) and len(shape) == 4 and all(isinstance(n, int) for n in shape[1:3])
    ):
        raise CheckpointMismatch(f"{source}: input {image.name} has no fixed size ({shape})")

    # The VGG16 trunk, a nested model called on the input.
    trunk = graph.consumers(image)
    if len(trunk) != 1 or trunk[0].kind not in _MODEL_CLASSES:
        raise CheckpointMismatch(
            f"{source}: the input should feed the nested VGG16 model, it feeds {_describe(trunk)}"
        )
    trunk = trunk[0]
    vgg = KerasGraph(trunk.config, f"{source}: {trunk.name}")
    if len(vgg.inputs) != 1:
        raise CheckpointMismatch(f"{source}: {trunk.name} should have one input")
    vgg_layers = vgg.chain(vgg.inputs[0])[1:]
    vgg_kinds = []
    for block, convs in enumerate(TRUNK_BLOCK_CONVS):
        vgg_kinds += ["MaxPooling2D"] * (block > 0) + ["Conv2D"] * convs
    _expect(vgg_layers, vgg_kinds, f"VGG16 trunk ({trunk.name})", source)
    if vgg_layers[-1] not in vgg.outputs:
        raise CheckpointMismatch(f"{source}: {vgg_layers[-1].name} is not {trunk.name}'s output")

    # Two branches leave the trunk: global features fan out to two dense stacks, mid-level
    # features run straight into the Concatenate.
    branches = [graph.chain(layer) for layer in graph.consumers(trunk)]
    fanning = [b for b in branches if len(graph.consumers(b[-1])) > 1]
    merging = [b for b in branches if [c.kind for c in graph.consumers(b[-1])] == ["Concatenate"]]
    if len(branches) != 2 or len(fanning) != 1 or len(merging) != 1:
        raise CheckpointMismatch(
            f"{source}: the trunk should feed the global branch (fanning out to two dense "
            f"stacks) and the mid-level branch (into the Concatenate); its branches are "
            + "; ".join(_describe(b) for b in branches)
        )
    global_convs, mid_convs = fanning[0], merging[0]
    _expect(global_convs, ["Conv2D", "BatchNormalization"] * 4, "global features", source)
    _expect(mid_convs, ["Conv2D", "BatchNormalization"] * 2, "mid-level features", source)

    stacks = [graph.chain(layer) for layer in graph.consumers(global_convs[-1])]
    class_stacks = [s for s in stacks if s[-1] in graph.outputs]
    global_stacks = [s for s in stacks if s[-1] not in graph.outputs]
    if len(stacks) != 2 or len(class_stacks) != 1:
        raise CheckpointMismatch(
            f"{source}: the global features should feed the class head (to an output) and the "
            "global dense stack; they feed " + "; ".join(_describe(s) for s in stacks)
        )
    class_head, global_dense = class_stacks[0], global_stacks[0]
    _expect(class_head, ["Flatten", "Dense", "Dense", "Dense"], "class head", source)
    _expect(
        global_dense,
        ["Flatten", "Dense", "Dense", "Dense", "RepeatVector", "Reshape"],
        "global dense stack",
        source,
    )

    concatenate = graph.consumers(mid_convs[-1])[0]
    if list(concatenate.inputs) != [mid_convs[-1].name, global_dense[-1].name]:
        raise CheckpointMismatch(
            f"{source}: {concatenate.name} should join [{mid_convs[-1].name} (mid-level), "
            f"{global_dense[-1].name} (global)] in that order, it joins {list(concatenate.inputs)}"
        )
    head = graph.chain(concatenate)[1:]
    up = "UpSampling2D"
    _expect(
        head,
        ["Conv2D", "Conv2D", up, "Conv2D", "Conv2D", up, "Conv2D", "Conv2D", up],
        "fusion and colorization head",
        source,
    )
    if head[-1] not in graph.outputs:
        raise CheckpointMismatch(f"{source}: {head[-1].name} should be the ab output")

    located: dict[tuple[str, ...], tuple[str, KerasLayer]] = {}
    for name, layer in zip(TRUNK_CONV_NAMES, _of_kind(vgg_layers, "Conv2D")):
        located[("trunk", name)] = (trunk.name, layer)
    for prefix, layers in (("global", global_convs), ("mid", mid_convs)):
        for i, layer in enumerate(_of_kind(layers, "Conv2D")):
            located[(f"{prefix}_conv{i}",)] = (layer.name, layer)
        for i, layer in enumerate(_of_kind(layers, "BatchNormalization")):
            located[(f"{prefix}_bn{i}",)] = (layer.name, layer)
    for i, layer in enumerate(_of_kind(global_dense, "Dense")):
        located[(f"global_dense{i}",)] = (layer.name, layer)
    *class_dense, logits = _of_kind(class_head, "Dense")
    for i, layer in enumerate(class_dense):
        located[(f"class_dense{i}",)] = (layer.name, layer)
    located[("class_logits",)] = (logits.name, logits)
    fusion, *color_convs, color_out = _of_kind(head, "Conv2D")
    located[("fusion",)] = (fusion.name, fusion)
    for i, layer in enumerate(color_convs):
        located[(f"color_conv{i}",)] = (layer.name, layer)
    located[("color_out",)] = (color_out.name, color_out)

    _check_configs(located, [*vgg_layers, *head], source)
    return Located(located, (shape[1], shape[2]))


def _pair(value: Any) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, list | tuple) else (value, value)


def _check_configs(
    located: Mapping[tuple[str, ...], tuple[str, KerasLayer]],
    reshaping: Sequence[KerasLayer],
    source: str,
) -> None:
    """The configuration the Flax module hard-codes, layer by layer; all differences at once."""
    problems = []

    def check(layer: KerasLayer, module: str, key: str, expected: Any, default: Any = None):
        value = layer.config.get(key, default)
        if isinstance(expected, tuple):
            value = _pair(value)
        if value != expected:
            problems.append(f"{layer.name} ({module}): {key} is {value!r}, expected {expected!r}")

    for path, (_, layer) in located.items():
        module = "/".join(path)
        if layer.kind == "Conv2D":
            is_global = re.fullmatch(r"global_conv(\d)", module)
            stride = GLOBAL_STRIDES[int(is_global.group(1))] if is_global else 1
            check(layer, module, "kernel_size", (1, 1) if module == "fusion" else (3, 3))
            check(layer, module, "strides", (stride, stride))
            check(layer, module, "padding", "same")
            check(layer, module, "data_format", "channels_last", "channels_last")
            check(layer, module, "dilation_rate", (1, 1), [1, 1])
            check(layer, module, "activation", "sigmoid" if module == "color_out" else "relu")
            check(layer, module, "use_bias", True, True)
        elif layer.kind == "Dense":
            check(layer, module, "activation", "softmax" if module == "class_logits" else "linear")
            check(layer, module, "use_bias", True, True)
        elif layer.kind == "BatchNormalization":
            check(layer, module, "epsilon", 1e-3, 1e-3)
            check(layer, module, "center", True, True)
            check(layer, module, "scale", True, True)
            axis = layer.config.get("axis", -1)
            if axis not in (-1, 3, [-1], [3]):
                problems.append(f"{layer.name} ({module}): axis is {axis!r}, expected -1")
    for layer in reshaping:
        if layer.kind == "MaxPooling2D":
            check(layer, "trunk", "pool_size", (2, 2))
            check(layer, "trunk", "strides", (2, 2))
            check(layer, "trunk", "padding", "valid")
        elif layer.kind == "UpSampling2D":
            check(layer, "head", "size", (2, 2))
            check(layer, "head", "interpolation", "nearest", "nearest")
    if problems:
        raise CheckpointMismatch(
            f"{source}: layers configured unlike ChromaGAN ({len(problems)}):\n  "
            + "\n  ".join(problems)
        )


def chromagan_config(located: Located, source: str = "checkpoint") -> dict[str, Any]:
    """ChromaGAN attributes (all widths and the class count) of the located layers."""

    def width(*path: str) -> int:
        config = located.layers[path][1].config
        return config["filters"] if "filters" in config else config["units"]

    trunk = [width("trunk", name) for name in TRUNK_CONV_NAMES]
    starts = np.cumsum((0, *TRUNK_BLOCK_CONVS[:-1]))
    blocks = [trunk[s : s + n] for s, n in zip(starts, TRUNK_BLOCK_CONVS)]
    if any(len(set(block)) != 1 for block in blocks):
        raise CheckpointMismatch(f"{source}: VGG16 trunk widths {trunk} differ within a block")
    if width("color_out") != 2:
        raise CheckpointMismatch(
            f"{source}: the output conv has {width('color_out')} channels, not 2 (ab)"
        )
    return {
        "trunk_widths": tuple(block[0] for block in blocks),
        "global_widths": tuple(width(f"global_conv{i}") for i in range(4)),
        "global_units": tuple(width(f"global_dense{i}") for i in range(3)),
        "class_units": tuple(width(f"class_dense{i}") for i in range(2)),
        "num_classes": width("class_logits"),
        "mid_widths": tuple(width(f"mid_conv{i}") for i in range(2)),
        "fusion_width": width("fusion"),
        "color_widths": tuple(width(f"color_conv{i}") for i in range(4)),
    }


def _text(value: Any) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def attribute_names(attrs: Any, name: str) -> list[str]:
    """A list-of-names attribute; Keras splits one over HDF5's 64 KB limit into name0, name1..."""
    if name in attrs:
        chunks = [attrs[name]]
    else:
        chunks = []
        while f"{name}{len(chunks)}" in attrs:
            chunks.append(attrs[f"{name}{len(chunks)}"])
    return [_text(value) for chunk in chunks for value in np.atleast_1d(chunk)]


def open_hdf5(path: Path) -> Any:
    """An HDF5 file opened for reading (h5py.File); FileNotFoundError / ValueError naming it."""
    import h5py

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: not an HDF5 file ({e})") from e


class KerasFile(NamedTuple):
    model_config: dict[str, Any]
    state: StateDict  # "<layer group>/<weight name>" -> array, e.g. "conv2d_3/conv2d_3/kernel:0"


def read_keras_h5(path: str | os.PathLike) -> KerasFile:
    """The model config and every weight of a Keras `Model.save` HDF5 file (optimizer state,
    if any, is not read)."""
    path = Path(path)
    with open_hdf5(path) as file:
        if "model_config" not in file.attrs or "model_weights" not in file:
            raise CheckpointMismatch(
                f"{path}: no model_config attribute or model_weights group; the converter needs "
                "the file that Keras' Model.save writes (my_model_colorization.h5), not weights "
                "saved alone"
            )
        model_config = json.loads(_text(file.attrs["model_config"]))
        weights = file["model_weights"]
        state: StateDict = {}
        for layer in attribute_names(weights.attrs, "layer_names"):
            if layer not in weights:
                continue  # its weights will be reported missing
            group = weights[layer]
            for weight in attribute_names(group.attrs, "weight_names"):
                if weight in group:
                    state[f"{layer}/{weight}"] = np.asarray(group[weight])
    return KerasFile(model_config, state)


def _weight_key(state: StateDict, group: str, layer: str, weight: str) -> str:
    """The state key of a layer's weight ("kernel", "gamma", ...). Keras names a weight after
    the layer's name scope, which TensorFlow makes unique with a suffix ("block1_conv1_1") when
    a session built a layer of that name before; an exact name wins over a suffixed one."""
    pattern = re.compile(rf"{re.escape(group)}/(?:.*/)?({re.escape(layer)}(?:_\d+)?)/{weight}:\d+")
    found = [(m.group(1) != layer, key) for key in state if (m := re.fullmatch(pattern, key))]
    if not found:
        return f"{group}/{layer}/{weight}:0"  # reported as missing, with the layer's name
    return min(found)[1]


def key_map(state: StateDict, located: Located) -> dict[TargetPath, tuple[str, Any]]:
    """Flax path (collection first) -> (state key, transform), for every located layer."""
    mapping = {}
    for path, (group, layer) in located.layers.items():
        for weight, (collection, leaf) in _LEAVES[layer.kind].items():
            key = _weight_key(state, group, layer.name, weight)
            mapping[(collection, *path, leaf)] = (key, np.asarray)
    return mapping


def chromagan_template(model: ChromaGAN, input_size: tuple[int, int] = (224, 224)) -> Tree:
    """Shapes of the model's variables at an input size (H, W) (no memory, no compute)."""
    gray_l = jax.ShapeDtypeStruct((1, *input_size, 1), jnp.float32)
    return jax.eval_shape(model.init, jax.random.key(0), gray_l)


def convert_keras(keras: KerasFile, size: str | None = None, source: str = "checkpoint") -> Tree:
    """A read Keras file -> {"params": {"backbone": ...}, "batch_stats": {"backbone": ...}}.

    size: 'full' or 'demo'; when given, the checkpoint must have its widths. When not, the
    widths are read from the checkpoint.
    """
    located = locate_layers(keras.model_config, source)
    config = chromagan_config(located, source)
    if size is not None:
        if size not in CHROMAGAN_SIZES:
            raise ValueError(f"unknown ChromaGAN size {size!r}; one of {sorted(CHROMAGAN_SIZES)}")
        differences = [
            f"{k} is {config[k]}, expected {v}"
            for k, v in CHROMAGAN_SIZES[size].items()
            if config[k] != v
        ]
        if differences:
            raise CheckpointMismatch(f"{source} is not ChromaGAN-{size}: " + ", ".join(differences))
    template = chromagan_template(ChromaGAN(**config), located.input_size)
    tree = assign(keras.state, key_map(keras.state, located), template, source=source)
    return {collection: {BACKBONE: variables} for collection, variables in tree.items()}


def convert(path: str | os.PathLike, size: str | None = None) -> Tree:
    """Reads the official ChromaGAN `.h5` file and converts it (see `convert_keras`)."""
    return convert_keras(read_keras_h5(path), size, source=str(path))


def convert_to_checkpoint(
    path: str | os.PathLike, output: str | os.PathLike, size: str | None = None
) -> Path:
    """Converts the official `.h5` file and writes the variables as an orbax checkpoint at
    `output` (a stage's `init_from`). Returns the directory written."""
    return save_variables(output, convert(path, size))
