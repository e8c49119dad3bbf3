"""Numerical parity of the Flax DisColor with the official PyTorch DISCO (`AnchorColorProb`).

Needs the official source (github.com/MenghanXia/DisentangledColorization) and torch (CPU):

    git -C /path/to/DisentangledColorization archive HEAD | tar -x -C /tmp/disco_official
    PYTHONPATH=. python bench/parity_discolor.py --official_src /tmp/disco_official

The official code is imported as it is, never edited: what it needs and the project does not
install (cv2, torchvision, matplotlib) is stubbed, and what it hard-wires to CUDA runs on the
CPU (`Tensor.cuda` is the identity and its colour labeller is built on the CPU while the bench
runs). It is built in the configuration of its inference (enhanced=True, dense positions,
width 64, 8 clusters, 16-pixel superpixels), keeps its own xavier initialisation, gets random
biases and BatchNorm parameters and statistics, and a few training-mode forwards of the
networks with spectral norms move their u, v off their initial values (and the BatchNorm
statistics with them). Its checkpoint, saved as the official training saves it
(`{"epoch", "state_dict", "best_loss"}`), is converted with
`aiaic_jax.models.backbones.discolor.convert` and both models run in evaluation on the same
smooth random grey images. The official test mode (sampled_T=0) picks the anchors by k-means;
its anchor mask and anchor bins are given to the Flax model as `anchors`, so that both decode
with the same anchors. Prints the largest absolute differences of the superpixel affinities,
the intermediate features, the palette and reference logits and the ab output (Lab units).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import tempfile
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from aiaic_jax.models.backbones.discolor import bins
from aiaic_jax.models.backbones.discolor.convert import convert
from aiaic_jax.models.backbones.discolor.model import AB_SCALE, Anchors, discolor

# The official inference configuration.
OFFICIAL_CONFIG = dict(
    inChannel=1,
    outChannel=313,
    sp_size=16,
    d_model=64,
    use_dense_pos=True,
    n_clusters=8,
    hint2regress=False,
    enhanced=True,
)


AFFINITY_SHARPENING = 20.0


def _stub_missing(name: str, **attributes) -> None:
    """A placeholder module for an import the official code makes but never uses here."""
    try:
        importlib.import_module(name)
    except ImportError:
        module = types.ModuleType(name)
        for key, value in attributes.items():
            setattr(module, key, value)
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)


def import_official(src: Path):
    """The official `model` module (AnchorColorProb) and `basic`, importable on a CPU."""
    if not (src / "models" / "model.py").is_file() or not (src / "utils" / "cielab.py").is_file():
        raise SystemExit(f"{src}: not a DisentangledColorization checkout (no models/model.py)")
    _stub_missing("cv2")
    _stub_missing("torchvision")  # network.VGG19 only (the perceptual loss)
    _stub_missing("matplotlib")
    _stub_missing("matplotlib.pyplot")  # cielab's plotting helpers
    _stub_missing("skimage")
    _stub_missing("skimage.segmentation", mark_boundaries=None)
    # The official scripts put the checkout's root, models/ and utils/ on the path.
    for folder in (src, src / "models", src / "utils"):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    model = importlib.import_module("model")
    basic = importlib.import_module("basic")
    cielab = importlib.import_module("cielab")
    if not str(model.__file__).startswith(str(src)):
        raise SystemExit(f"imported {model.__file__}, not the official model.py under {src}")
    # The gamut files are found relative to the working directory of the official scripts.
    for module in {cielab, sys.modules.get("utils.cielab")} - {None}:
        module.ABGamut.RESOURCE_POINTS = str(src / "utils" / "gamut_pts.npy")
        module.ABGamut.RESOURCE_PRIOR = str(src / "utils" / "gamut_probs.npy")
    return model, basic


@contextlib.contextmanager
def cuda_on_cpu(basic):
    """`.cuda()` is the identity and the colour labeller lives on the CPU, for a while."""
    import torch

    cuda, colour_init = torch.Tensor.cuda, basic.ColorLabel.__init__

    def cpu_colour_init(self, lambda_=0.5, device=None):
        colour_init(self, lambda_, device=torch.device("cpu"))

    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    basic.ColorLabel.__init__ = cpu_colour_init
    try:
        yield
    finally:
        torch.Tensor.cuda, basic.ColorLabel.__init__ = cuda, colour_init


def _randomise(official, seed: int) -> None:
    """Random biases and BatchNorm parameters and statistics; the xavier weights stay."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in official.state_dict().items():
            if not tensor.is_floating_point() or tensor.ndim != 1:
                continue
            if name.endswith(("weight_u", "weight_v")):
                continue  # set by the power iterations of the training-mode forwards
            noise = torch.randn(tensor.shape, generator=generator)
            if name.endswith("running_var"):
                tensor.copy_(0.5 + noise.abs())
            elif name.endswith("weight"):  # BatchNorm / LayerNorm scales
                tensor.copy_(1.0 + 0.2 * noise)
            else:  # biases, norm shifts, running means
                tensor.copy_(0.1 * noise)
        # Sharper affinity logits: with the xavier init SpixelNet's softmax is nearly uniform
        # (every pixel ~1/9 to each cell), which would hide errors in its neighbour order.
        official.segnet.net.pred_mask0.weight.mul_(AFFINITY_SHARPENING)


def _warm_spectral_norms(official, gray_n, seed: int) -> None:
    """A few training-mode forwards of the networks with spectral norms (repnet, enhanceNet):
    one power iteration each, and BatchNorm running statistics that move with them."""
    import torch

    generator = torch.Generator().manual_seed(seed + 1)
    batch, _, height, width = gray_n.shape
    official.repnet.train()
    official.enhanceNet.train()
    with torch.no_grad():
        for _ in range(3):
            official.repnet(gray_n)
            features = torch.randn((batch, 64, height, width), generator=generator)
            official.enhanceNet(torch.cat([gray_n, features], dim=1))
    official.eval()


def smooth_gray(batch: int, size: int, seed: int) -> np.ndarray:
    """L in [0, 100], [B, H, W, 1]: a coarse random pattern upsampled, plus a little noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 100, (batch, size // 16, size // 16, 1))
    gray_l = np.repeat(np.repeat(coarse, 16, axis=1), 16, axis=2)
    return np.clip(gray_l + rng.normal(0, 2, gray_l.shape), 0, 100).astype(np.float32)


def _max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _nhwc(tensor) -> np.ndarray:
    return tensor.detach().numpy().transpose(0, 2, 3, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official_src", type=Path, required=True)
    parser.add_argument("--image_size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    official_model, basic = import_official(args.official_src.resolve())
    # The official k-means draws its initial centres from NumPy's global generator.
    np.random.seed(args.seed)  # noqa: NPY002
    torch.manual_seed(args.seed)
    gray_l = smooth_gray(args.batch, args.image_size, args.seed)
    gray_n = torch.from_numpy((gray_l.transpose(0, 3, 1, 2) - 50.0) / 50.0)
    # Official input colours: used only for the training labels, which the test mode ignores.
    colours = torch.zeros((args.batch, 2, args.image_size, args.image_size))

    with cuda_on_cpu(basic):
        official = official_model.AnchorColorProb(**OFFICIAL_CONFIG)
        _randomise(official, args.seed)
        _warm_spectral_norms(official, gray_n, args.seed)

        captured = {}

        def keep(name, pick=lambda output: output):
            def hook(module, inputs, output):
                captured[name] = pick(output)

            return hook

        official.segnet.register_forward_hook(keep("affinity", _nhwc))
        official.repnet.register_forward_hook(keep("repnet features", _nhwc))
        # Encoders return ((L, N, C) tokens, ...); tokens row-major over the grid.
        tokens_first = lambda output: output[0].detach().numpy().transpose(1, 0, 2)
        official.wildpath.register_forward_hook(keep("wildpath tokens", tokens_first))
        official.hintpath.register_forward_hook(keep("hintpath tokens", tokens_first))
        official.enhanceNet.register_forward_hook(keep("enhanceNet (before tanh)", _nhwc))

        with torch.no_grad():
            pal_logit, ref_logit, ab_n, _, spix_colors, hint_mask = official(
                gray_n, colours, test_mode=True, sampled_T=0
            )
            anchor_bins_official = torch.argmax(
                official.colorLabeler.encode_ab2ind(spix_colors), dim=1
            ).numpy()

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "disco_random.pth.tar"
            torch.save({"epoch": 0, "state_dict": official.state_dict(), "best_loss": 0.0}, path)
            variables = convert(path, "full")

    variables = jax.tree_util.tree_map(jnp.asarray, variables)
    backbone_vars = {c: v["backbone"] for c, v in variables.items()}
    model = discolor("full")

    # The official anchors: the mask (a count per token; 2 where two clusters picked the same
    # token) and the bins of the sampled anchor colours (ab / 110 of a bin centre).
    anchor_mask = hint_mask[:, 0].numpy()
    anchor_bins_ours = np.asarray(bins.nearest_bin(jnp.asarray(AB_SCALE * _nhwc(spix_colors))))
    anchors = Anchors(jnp.asarray(anchor_mask), jnp.asarray(anchor_bins_official, jnp.int32))

    watched = {"segnet", "repnet", "wildpath", "hintpath", "enhanceNet"}
    apply = jax.jit(
        lambda v, x, a: model.apply(
            v,
            x,
            anchors=a,
            capture_intermediates=lambda module, method: (
                module.name in watched and method == "__call__"
            ),
            mutable=["intermediates"],
        )
    )
    (ab, outputs), state = apply(backbone_vars, jnp.asarray(gray_l), anchors)
    inter = state["intermediates"]
    ours = {
        name: inter[module]["__call__"][0]
        for name, module in [
            ("affinity", "segnet"),
            ("repnet features", "repnet"),
            ("wildpath tokens", "wildpath"),
            ("hintpath tokens", "hintpath"),
            ("enhanceNet (before tanh)", "enhanceNet"),
        ]
    }

    official_pal = _nhwc(pal_logit)
    official_ref = _nhwc(ref_logit)
    official_ab = AB_SCALE * _nhwc(ab_n)
    grid = official_pal.shape[1:3]
    print(
        f"DisColor-full vs official AnchorColorProb, random weights, smooth random grey images: "
        f"batch {args.batch}, {args.image_size}x{args.image_size}, token grid {grid[0]}x{grid[1]}"
        f"; JAX on {jax.devices()[0].platform}, torch on cpu"
    )
    print(
        f"official anchors: {int((anchor_mask > 0).sum())} tokens "
        f"(mask sums {anchor_mask.reshape(args.batch, -1).sum(1).tolist()}); anchor bins "
        f"official encode == our nearest_bin: "
        f"{bool(np.array_equal(anchor_bins_official, anchor_bins_ours))}"
    )
    print("evaluation mode, largest |flax - official| (and the official's largest |value|):")
    for name, value in ours.items():
        print(
            f"  {name:26s} {_max_diff(value, captured[name]):.3e}   "
            f"({np.abs(captured[name]).max():.3e})"
        )
    for name, value, reference in [
        ("pal_logits", outputs["pal_logits"], official_pal),
        ("ref_logits", outputs["ref_logits"], official_ref),
        ("ab (Lab units)", ab, official_ab),
    ]:
        print(f"  {name:26s} {_max_diff(value, reference):.3e}   ({np.abs(reference).max():.3e})")
    top_ours = np.asarray(jnp.argmax(outputs["pal_logits"], axis=-1))
    print(
        f"  palette top-1 bins equal on {np.mean(top_ours == official_pal.argmax(-1)):.4f} of "
        f"the tokens; reference top-1 on "
        f"{np.mean(np.asarray(outputs['ref_logits']).argmax(-1) == official_ref.argmax(-1)):.4f}"
    )


if __name__ == "__main__":
    main()
