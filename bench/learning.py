"""The learning test's run over seeds: its figures, its margins against the test's bounds, and
where its time goes.

PYTHONPATH=. python bench/learning.py                       # seeds 0, 1, 2
PYTHONPATH=. python bench/learning.py --seeds 3,4 --workdir runs/learning
PYTHONPATH=. python bench/learning.py --seeds 0 --set model.backbone_overrides.kernels=native \
    stages.rnet.num_steps=150                                    # another config than the test's

Each seed is tests/test_learning.py's run (`tests.tiny_training.run_learning`: the world, the
five stages of the tiny model, the evaluation of baseline and full), in this process one after
another, into `<workdir>/seed_<s>` (a fresh temporary folder by default). Printed per seed: val
PSNR of baseline and full and their difference, RNet's mean r on ave_like with a pair's own
audio and with another clip's and their AUC; the wall seconds of the world, the training and
the evaluation, and each stage's compile seconds and steps per second. Then, per figure, its
smallest value over the seeds against the test's bound (`LEARNING_BOUNDS`) and the share of that
margin the bound leaves as headroom. `--set NAME=VALUE` changes fields of the test's config
(`learning_config`), typed by the fields as `aiaic_jax.runs.apply_overrides` types them.
Run it with JAX's compilation cache off (`JAX_ENABLE_COMPILATION_CACHE=false`) for the compile
times of a fresh CI run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from tests.tiny_training import LEARNING_BOUNDS, run_learning


def figures(results: dict) -> dict[str, float]:
    val, relevance = results["val"], results["relevance"]["ave_like"]
    return {
        "val_baseline": val["baseline"]["psnr"],
        "val_full": val["full"]["psnr"],
        "psnr_gain": val["full"]["psnr"] - val["baseline"]["psnr"],
        "r_own": relevance["mean_r_relevant"],
        "r_other": relevance["mean_r_irrelevant"],
        "r_gap": relevance["mean_r_relevant"] - relevance["mean_r_irrelevant"],
        "auc": relevance["auc_relevant_vs_irrelevant"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="aiaic_learning_"))
    rows = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        results = run_learning(workdir / f"seed_{seed}", seed, args.set)
        rows[seed] = figures(results)
        stages = results["stages"]
        print(
            json.dumps(
                {
                    "seed": seed,
                    "settings": args.set,
                    **{k: round(v, 3) for k, v in rows[seed].items()},
                    "seconds": {k: round(v, 1) for k, v in results["seconds"].items()},
                    "compile_seconds": {
                        name: round(m.get("compile_seconds", 0.0), 1) for name, m in stages.items()
                    },
                    "steps_per_second": {
                        name: round(m.get("steps_per_second", 0.0), 1) for name, m in stages.items()
                    },
                }
            ),
            flush=True,
        )
    print("\n| seed | val baseline | val full | full − baseline | r own | r other | AUC |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for seed, row in rows.items():
        print(
            f"| {seed} | {row['val_baseline']:.2f} | {row['val_full']:.2f} | "
            f"{row['psnr_gain']:.2f} | {row['r_own']:.3f} | {row['r_other']:.3f} | "
            f"{row['auc']:.3f} |"
        )
    print()
    for name, bound in LEARNING_BOUNDS.items():
        smallest = min(row[name] for row in rows.values())
        # The AUC's margin counts from chance (0.5), the others' from 0.
        floor = 0.5 if name == "auc" else 0.0
        headroom = (smallest - bound) / (smallest - floor) if smallest > floor else float("nan")
        print(
            f"{name}: smallest {smallest:.3f}, bound {bound} "
            f"(headroom {100 * headroom:.0f}% of the margin)"
        )


if __name__ == "__main__":
    main()
