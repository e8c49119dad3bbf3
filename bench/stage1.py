"""How well stage 1 teaches: the guided colorization of val from the colour image itself.

PYTHONPATH=. python bench/stage1.py --workdir runs/demo             # the variants below
PYTHONPATH=. python bench/stage1.py --workdir runs/demo --variants frozen_stats,no_mask
PYTHONPATH=. python bench/stage1.py --workdir runs/demo_discolor --backbone discolor_demo \
    --variants default,no_decay,no_mask --out runs/bench_stage1_discolor

Stage 1 trains the backbone with guidance from f_v^s of the ground-truth colour image, r = 0 for
a fraction of the samples (`mask_fraction`). Everything later (stage 3, and so `full` and
`w/o r`) can at most learn to produce that guidance from audio, so stage 1's own quality bounds
the table. This script trains stage 1 of the demo config from an existing demo run's baseline
(`--workdir`, as `make demo` leaves it: `data/` and `full/baseline/final`) once per variant,
each a set of config overrides, and scores every variant on val with the evaluation protocol
(model ab with the input's own L, sRGB uint8, PSNR peak 255): r = 1 ("guided", the teacher)
and r = 0 (the backbone alone, what "full (missing audio)" falls back to), next to the
baseline. Each variant trains in a fresh subprocess into `--out/<variant>`; rerunning reuses a
finished variant.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Overrides of the demo config (`config.<dotted key>`), by variant name.
FROZEN = {"stages.stage1.freeze_backbone_stats": True}
VARIANTS = {
    "default": {},
    "frozen_stats": FROZEN,
    "no_mask": {"use_relevance": False},  # what the "w/o r" run trains
    "no_mask_frozen_stats": {"use_relevance": False, **FROZEN},
    "frozen_stats_mask_0.15": {"stages.stage1.mask_fraction": 0.15, **FROZEN},
    "frozen_stats_800_steps": {"stages.stage1.num_steps": 800, **FROZEN},
    # A constant rate where the backbone's objective decays it (DisColor's linear decay).
    "no_decay": {"optimizer.lr_end_factor": 1.0},
}


def demo_config(workdir: Path, overrides: dict, backbone: str = "ddcolor_demo"):
    from configs import demo

    config = demo.get_config(backbone)
    config.data.data_dir = str(workdir / "data")
    config.init_from = str(workdir / "full" / "baseline" / "final")
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return config


def train(workdir: Path, out: Path, overrides: dict, backbone: str) -> None:
    """Runs in the child process: stage 1 into `out`."""
    from absl import flags

    from aiaic_jax.train import logs, loop

    logs.quiet_dependencies()
    flags.FLAGS.mark_as_parsed()
    loop.run(demo_config(workdir, overrides, backbone), str(out), "stage1")


def score(
    workdir: Path, directories: dict[str, Path], backbone: str
) -> dict[str, dict[str, float]]:
    """Mean val PSNR of each variables directory with r = 1 ("guided") and r = 0 ("unguided")."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from aiaic_jax import color, preprocess
    from aiaic_jax.data import pipeline
    from aiaic_jax.evaluation import metrics, runner

    config = runner.resolve_config(demo_config(workdir, {}, backbone))
    model = runner.model_from_config(config)

    @jax.jit
    def predictions(variables, batch):
        inputs = preprocess.model_inputs(batch, config)
        colour = inputs.color_rgb
        out = {}
        for name, masked in (("guided", 0.0), ("unguided", 1.0)):
            gt_masked = jnp.full((colour.shape[0],), masked)
            (ab, _), captured = model.apply(
                variables,
                inputs.gray_l,
                mode="visual",
                color_rgb=colour,
                gt_masked=gt_masked,
                capture_intermediates=lambda module, _: module.name == "dsg",
                mutable=["intermediates"],
            )
            out[name] = metrics.psnr(color.l_ab_to_rgb_uint8(inputs.gray_l, ab), batch["rgb"])
        # With r = 0 the DSG returns its input x: the features the backbone colours alone from.
        # AdaIN (SG) removes each sample's channel means of x; how much those means differ
        # between samples says how much of the image the unguided path carries in them.
        (x,) = jax.tree.leaves(captured["intermediates"])
        out["x_channel_means"] = jnp.mean(x, axis=(1, 2))
        out["x_spatial_std"] = jnp.std(x, axis=(1, 2)).mean(axis=-1)
        return out

    size = config.data.image_size
    results = {}
    for name, directory in directories.items():
        variables = runner.load_variables(model, str(directory), size)
        sums: dict[str, list[np.ndarray]] = {}
        for batch in pipeline.eval_batches(config.data, "val", process_index=0, process_count=1):
            real = np.asarray(batch["mask"], bool)
            model_batch = {k: batch[k] for k in ("rgb", "audio", "has_audio", "relevant", "mask")}
            for key, value in predictions(variables, model_batch).items():
                sums.setdefault(key, []).append(np.asarray(value)[real])
        results[name] = {k: float(np.concatenate(v).mean()) for k, v in sums.items()}
        channel_means = np.concatenate(sums["x_channel_means"])  # [pairs, C]
        results[name]["x_channel_mean_spread"] = float(channel_means.std(axis=0).mean())
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, required=True, help="a demo run (make demo)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_stage1"))
    parser.add_argument(
        "--backbone", default="ddcolor_demo", help="the demo config's backbone (configs/demo.py)"
    )
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        train(args.workdir, Path(args.child[0]), json.loads(args.child[1]), args.backbone)
        return
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    for name in names:
        out = args.out / name
        if (out / "stage1" / "final").exists():
            print(f"{name}: reusing {out}", flush=True)
            continue
        overrides = json.dumps(VARIANTS[name])
        command = [sys.executable, __file__, "--workdir", str(args.workdir)]
        command += ["--backbone", args.backbone, "--child", str(out)]
        command.append(overrides)
        environment = {**os.environ, "PYTHONPATH": str(ROOT)}
        subprocess.run(command, check=True, cwd=ROOT, env=environment)
    directories = {name: args.out / name / "stage1" / "final" for name in names}
    baseline = args.workdir / "full" / "baseline" / "final"
    results = score(args.workdir, {**directories, "baseline": baseline}, args.backbone)
    base = results["baseline"]
    print(
        f"val PSNR (dB); the baseline ({baseline}): {base['unguided']:.2f}; its DSG input x: "
        f"channel-mean spread {base['x_channel_mean_spread']:.3f}, "
        f"spatial std {base['x_spatial_std']:.3f}"
    )
    print(
        "| variant | overrides | guided (r = 1) | unguided (r = 0) "
        "| x channel-mean spread | x spatial std |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for name in names:
        row = results[name]
        overrides = ", ".join(f"{k}={v}" for k, v in VARIANTS[name].items()) or "-"
        print(
            f"| {name} | {overrides} | {row['guided']:.2f} | {row['unguided']:.2f} "
            f"| {row['x_channel_mean_spread']:.3f} | {row['x_spatial_std']:.3f} |"
        )


if __name__ == "__main__":
    main()
