"""Numerical parity of the Flax DDColor with the official PyTorch DDColor.

Needs a checkout of the official code (github.com/piddnad/DDColor) and torch:

    PYTHONPATH=. python bench/parity_ddcolor.py --official_src /path/to/DDColor [--size tiny]

Builds the official model, gives it random weights (layer scales, norms and BatchNorm
statistics too, so that no branch is hidden behind a near-zero init), runs a few training-mode
forwards so that the spectral-norm vectors are real power-iteration estimates, saves the state
dict, converts it with `aiaic_jax.models.backbones.ddcolor.convert`, and compares on the same grey
images: the ab output in evaluation mode, the intermediate features (encoder, pixel decoder,
colour decoder), and one training-mode forward with the updated BatchNorm and spectral-norm
state.
Prints the largest absolute differences.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from aiaic_jax.color import gray_rgb_from_l
from aiaic_jax.models.backbones import get_backbone
from aiaic_jax.models.backbones.ddcolor.convert import convert_ddcolor
from aiaic_jax.models.backbones.ddcolor.decoder import (
    PixelShuffleUpsample,
    color_maps,
    upsample_subpixel,
)


def import_official(src: Path):
    """The official DDColor class; basicsr's registry (and its heavy utils package) stubbed."""
    if not (src / "basicsr" / "archs" / "ddcolor_arch.py").is_file():
        raise SystemExit(f"{src}: not a DDColor checkout (no basicsr/archs/ddcolor_arch.py)")

    class _Registry:
        def register(self, *args, **kwargs):
            return lambda obj: obj

    utils = types.ModuleType("basicsr.utils")
    registry = types.ModuleType("basicsr.utils.registry")
    registry.ARCH_REGISTRY = _Registry()
    utils.registry = registry
    sys.modules.setdefault("basicsr.utils", utils)
    sys.modules.setdefault("basicsr.utils.registry", registry)
    sys.path.insert(0, str(src))
    return importlib.import_module("basicsr.archs.ddcolor_arch").DDColor


def _randomise(model, seed: int) -> None:
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point() or name in ("mean", "std"):
                continue
            if name.endswith(("weight_u", "weight_v")):
                continue  # set by the power iterations below
            noise = torch.randn(tensor.shape, generator=generator)
            if name.endswith("running_var"):
                tensor.copy_(0.5 + noise.abs())
            elif name.endswith("gamma"):
                tensor.copy_(0.3 * noise)  # layer scale, 1e-6 at init
            elif tensor.ndim == 1 and name.endswith("weight"):
                tensor.copy_(1.0 + 0.2 * noise)  # norm scales
            elif tensor.ndim == 1:
                tensor.copy_(0.1 * noise)  # biases, norm shifts, running means
            else:
                fan_in = max(1, tensor[0].numel())
                tensor.copy_(noise / np.sqrt(fan_in))


def _max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official_src", type=Path, required=True)
    parser.add_argument("--size", choices=("tiny", "large"), default="tiny")
    parser.add_argument("--image_size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    torch.manual_seed(args.seed)
    official = import_official(args.official_src)(
        encoder_name="convnext-t" if args.size == "tiny" else "convnext-l",
        decoder_name="MultiScaleColorDecoder",
        input_size=(args.image_size, args.image_size),
        num_output_channels=2,
        last_norm="Spectral",
        do_normalize=False,
        num_queries=100,
        num_scales=3,
        dec_layers=9,
    )
    _randomise(official, args.seed)

    rng = np.random.default_rng(args.seed)
    size = args.image_size
    # Smooth random L images: a low-resolution pattern upsampled, plus a little noise.
    coarse = rng.uniform(0, 100, (args.batch, size // 16, size // 16, 1))
    gray_l = np.repeat(np.repeat(coarse, 16, axis=1), 16, axis=2)
    gray_l = np.clip(gray_l + rng.normal(0, 2, gray_l.shape), 0, 100).astype(np.float32)
    gray_rgb = np.asarray(gray_rgb_from_l(jnp.asarray(gray_l)))  # the official model's input
    torch_input = torch.from_numpy(gray_rgb.transpose(0, 3, 1, 2).copy())

    # Warm the spectral-norm vectors with training-mode forwards (BatchNorm stats move too).
    official.train()
    with torch.no_grad():
        for _ in range(3):
            official(torch_input)
    official.eval()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"ddcolor_{args.size}_random.pth"
        torch.save({"params": official.state_dict()}, path)
        variables = convert_ddcolor(path, args.size)
    variables = jax.tree_util.tree_map(jnp.asarray, variables)
    backbone_vars = {c: v["backbone"] for c, v in variables.items()}
    model = get_backbone(f"ddcolor_{args.size}")

    # Official intermediate features: hooks on the encoder norms, decoder blocks, colour maps.
    captured = {}

    def keep(name):
        def hook(module, inputs, output):
            captured[name] = output.detach().numpy().transpose(0, 2, 3, 1)

        return hook

    arch = official.encoder.arch
    for i in range(4):
        getattr(arch, f"norm{i}").register_forward_hook(keep(f"encoder f{i}"))
    for i in range(3):
        official.decoder.layers[i].register_forward_hook(keep(f"pixel_decoder block{i}"))
    official.decoder.last_shuf.register_forward_hook(keep("pixel_decoder full size"))
    official.decoder.color_decoder.register_forward_hook(keep("color_decoder maps"))

    with torch.no_grad():
        official_ab = official(torch_input).numpy().transpose(0, 2, 3, 1)
    apply = jax.jit(
        lambda v, x: model.apply(v, x, capture_intermediates=True, mutable=["intermediates"])
    )
    (ab, _), state = apply(backbone_vars, jnp.asarray(gray_l))
    inter = state["intermediates"]
    features, _ = inter["encoder"]["__call__"][0]
    multi_scale, _ = inter["pixel_decoder"]["__call__"][0]
    # The model applies the last upsampling's features times the refine layer's matrix (see
    # DDColor); the features themselves, from the same layer on the 1/4 map:
    last_upsample = PixelShuffleUpsample(model.decoder_widths[-1], 4, batch_norm=False)
    subpixel_features = last_upsample.apply(
        {c: v["pixel_decoder"]["last_upsample"] for c, v in backbone_vars.items()},
        multi_scale[-1],
        train=False,
        subpixel_output=True,
    )
    full_size = upsample_subpixel(subpixel_features, 4)
    ours = {
        **{f"encoder f{i}": features[i] for i in range(4)},
        **{f"pixel_decoder block{i}": multi_scale[i] for i in range(3)},
        "pixel_decoder full size": full_size,
        "color_decoder maps": color_maps(inter["color_decoder"]["__call__"][0], full_size),
    }
    print(f"DDColor-{args.size[0].upper()}, random grey images: batch {args.batch}, {size}x{size}")
    print("evaluation mode, largest |flax - official| (and the official's largest |value|):")
    for name, value in ours.items():
        print(
            f"  {name:26s} {_max_diff(value, captured[name]):.3e}   "
            f"({np.abs(captured[name]).max():.3e})"
        )
    print(f"  {'ab':26s} {_max_diff(ab, official_ab):.3e}   ({np.abs(official_ab).max():.3e})")

    # One training-mode forward: batch statistics and a power-iteration step on both sides.
    official.train()
    with torch.no_grad():
        official_train_ab = official(torch_input).numpy().transpose(0, 2, 3, 1)
    (train_ab, _), updated = jax.jit(
        lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"])
    )(backbone_vars, jnp.asarray(gray_l))
    official_state = official.state_dict()
    u_ours = updated["batch_stats"]["refine"]["u"]
    u_official = official_state["refine_net.0.0.weight_u"].numpy()
    mean_ours = updated["batch_stats"]["pixel_decoder"]["block0"]["conv_bn"]["mean"]
    mean_official = official_state["decoder.layers.0.conv.2.running_mean"].numpy()
    print("training mode (one step):")
    print(
        f"  {'ab':26s} {_max_diff(train_ab, official_train_ab):.3e}   "
        f"({np.abs(official_train_ab).max():.3e})"
    )
    print(f"  {'refine u after the step':26s} {_max_diff(u_ours, u_official):.3e}")
    print(f"  {'block0 BN running mean':26s} {_max_diff(mean_ours, mean_official):.3e}")


if __name__ == "__main__":
    main()
