"""Parity of AudioResNet18 with the official VGGSound audio network (PyTorch), eval mode.

Builds the official network from a checkout of hche11/VGGSound (ResNet-18, avgpool, 309
classes, as behind H.pth.tar) with random weights and random BN running statistics, converts its
state dict with `aiaic_jax.convert.vggsound`, and compares the pooled 512-d features on the
same random spectrogram.

    PYTHONPATH=. python bench/vggsound_parity.py --official_repo /path/to/VGGSound

Needs torch; the official code is imported from the checkout, never copied here.
"""

from __future__ import annotations

import argparse
import sys
import time
from types import SimpleNamespace

import jax
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official_repo", required=True, help="checkout of hche11/VGGSound")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=1004, help="spectrogram width (time)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    sys.path.insert(0, args.official_repo)
    from model import AVENet  # the official wrapper: `audnet` = ResNet-18

    from aiaic_jax.convert.vggsound import convert_state_dict
    from aiaic_jax.models.audio_encoder import AudioResNet18

    torch.manual_seed(args.seed)
    official = AVENet(SimpleNamespace(model_depth=18, n_classes=309, pool="avgpool"))
    with torch.no_grad():
        for module in official.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.2)
                module.running_mean.normal_(0.0, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    official.audnet.fc = torch.nn.Identity()  # the 512-d pooled feature
    official.eval()

    state = {k: v.numpy() for k, v in official.state_dict().items()}
    variables = convert_state_dict(state, source="official AVENet")
    audio = {name: tree["audio"] for name, tree in variables.items()}

    rng = np.random.default_rng(args.seed)
    spectrogram = rng.standard_normal((args.batch, 257, args.frames)).astype(np.float32)
    with torch.no_grad():
        expected = official(torch.from_numpy(spectrogram)[:, None]).numpy()
    start = time.perf_counter()
    ours = np.asarray(jax.jit(AudioResNet18().apply)(audio, spectrogram))
    seconds = time.perf_counter() - start
    difference = np.abs(ours - expected)
    print(f"input [B, F, T] = {spectrogram.shape}, features {ours.shape}")
    print(f"max |official| = {np.abs(expected).max():.4f}")
    print(f"max abs difference = {difference.max():.3e}, mean = {difference.mean():.3e}")
    print(f"(jax compile + run: {seconds:.1f} s on {jax.devices()[0].platform})")


if __name__ == "__main__":
    main()
