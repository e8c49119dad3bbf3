"""What RNet's r costs or gains: the `full` model with r from RNet against r fixed.

PYTHONPATH=. python bench/relevance.py --workdir runs/demo
PYTHONPATH=. python bench/relevance.py --workdir runs/demo --fixed 1,0.9,0.8 --splits ave_like

Restores `<workdir>/full/stage3/final` (a run laid out as `make demo` leaves it, its dataset in
`<workdir>/data`), colours each split once with r from RNet (the `full` variant of eval.py) and
once per fixed r (r = 0 still where a pair has no audio), and prints mean PSNR by kind of pair
(the evaluation protocol of eval.py) and RNet's r by kind. A fixed r = 1 row that beats RNet's
row on relevant pairs is what r < 1 on a clip's own audio costs.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, required=True, help="a demo run (make demo)")
    parser.add_argument("--config", default="demo", help="a module of configs/")
    parser.add_argument("--fixed", default="1,0.95,0.9,0.83,0.5", help="fixed r values")
    parser.add_argument("--splits", default="ave_like,val")
    args = parser.parse_args()

    import importlib

    from aiaic_jax.evaluation import runner, variants
    from aiaic_jax.train import logs

    logs.quiet_dependencies()
    config = importlib.import_module(f"configs.{args.config}").get_config()
    config.data.data_dir = str(args.workdir / "data")
    config = runner.resolve_config(config)
    model = runner.model_from_config(config)
    full = variants.get_variant("full")
    rows = {"full": full}  # r from RNet
    for value in (float(v) for v in args.fixed.split(",")):
        name = f"r = {value:g}"
        rows[name] = dataclasses.replace(full, name=name, use_rnet=False, fixed_relevance=value)
    checkpoint = args.workdir / "full" / "stage3" / "final"
    tree = runner.load_variables(model, str(checkpoint), config.data.image_size)
    # Every row on the same restored variables (replicated once).
    evaluator = runner.Evaluator(
        config, {name: tree for name in rows}, variants=list(rows.values())
    )
    for split in args.splits.split(","):
        evaluation = evaluator.evaluate_split(split)
        kinds = {k: m for k, m in evaluation.kinds().items() if m.any()}
        print(f"\n{split}: mean PSNR (dB) by kind of pair ({checkpoint})")
        print("| r | all | " + " | ".join(f"{k} ({m.sum()})" for k, m in kinds.items()) + " |")
        print("| --- | ---: |" + " ---: |" * len(kinds))
        for name in rows:
            psnr = evaluation.scores[name]["psnr"]
            cells = " | ".join(f"{psnr[m].mean():.2f}" for m in kinds.values())
            label = "RNet's r (full)" if name == "full" else name
            print(f"| {label} | {psnr.mean():.2f} | {cells} |")
        r = evaluation.relevance["full"]
        for kind, m in kinds.items():
            quantiles = np.quantile(r[m], [0.05, 0.5, 0.95])
            print(f"RNet r, {kind}: mean {r[m].mean():.3f}, 5/50/95% {np.round(quantiles, 3)}")


if __name__ == "__main__":
    main()
