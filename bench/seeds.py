"""The demo over seeds: mean and spread of every cell of its results.

PYTHONPATH=. python bench/seeds.py --workdir runs/seeds                  # seeds 0, 1, 2
PYTHONPATH=. python bench/seeds.py --workdir runs/seeds --seeds 0,1,2,3,4
PYTHONPATH=. python bench/seeds.py --workdir runs/seeds_128 \
    --set data.builder_options.image_size=128                          # any demo config field
PYTHONPATH=. python bench/seeds.py --workdir runs/seeds --aggregate     # tables only

Each seed is one `make demo` (`python -m aiaic_jax.demo`) in a subprocess, into
`<workdir>/seed_<s>`, with `config.seed` (initialisation, data order, stage 1's masks) and the
synthetic world's seed (`data.builder_options.seed`: its textures, jitters, pairings) both set to
s. A seed whose results.json exists is not run again. The script then reads every seed's
results.json and writes `<workdir>/seeds.json` (each cell's values, mean, sample standard
deviation, min and max) and `<workdir>/seeds.md`: the demo's table as mean ± standard deviation,
the mechanisms, and each criterion's range and the number of seeds in which it holds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
_TABLE_METRICS = (("lpips", "LPIPS ↓", 4), ("psnr", "PSNR ↑", 3))


def run_seed(workdir: Path, seed: int, config: str, settings: Sequence[str]) -> float:
    """One demo run into workdir/seed_<seed>; returns its wall time in seconds."""
    command = [
        sys.executable,
        "-m",
        "aiaic_jax.demo",
        f"--workdir={workdir / f'seed_{seed}'}",
        f"--config={config}",
        f"--config.seed={seed}",
        f"--config.data.builder_options.seed={seed}",
        *(f"--config.{setting}" for setting in settings),
    ]
    print("[seeds] " + " ".join(command[1:]), flush=True)
    started = time.perf_counter()
    log = workdir / f"seed_{seed}.log"
    with open(log, "w") as output:
        result = subprocess.run(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
    if result.returncode:
        raise SystemExit(f"seed {seed}: the demo failed (exit {result.returncode}); see {log}")
    return time.perf_counter() - started


def cells(results: Mapping[str, Any]) -> dict[str, float]:
    """Every number of one results.json, keyed by its path ("val/full/psnr", ...)."""
    flat: dict[str, float] = {}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                walk(value, f"{path}/{key}" if path else str(key))
        elif isinstance(node, (int, float)) and not isinstance(node, bool):
            flat[path] = float(node)

    for key, value in results.items():
        if key not in ("protocol", "criteria"):
            walk(value, key)
    for entry in results.get("criteria", []):
        if entry["value"] is not None:
            flat[f"criteria/{entry['name']}"] = float(entry["value"])
    return flat


def aggregate(per_seed: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """{"seeds", "cells": {path: {values, mean, std, min, max}}, "criteria": {name: {...}}}."""
    flats = {seed: cells(results) for seed, results in per_seed.items()}
    paths = sorted(set().union(*(flat.keys() for flat in flats.values())))
    summary: dict[str, Any] = {"seeds": sorted(per_seed), "cells": {}, "criteria": {}}
    for path in paths:
        values = [flats[seed][path] for seed in sorted(per_seed) if path in flats[seed]]
        summary["cells"][path] = {
            "values": values,
            "mean": float(np.mean(values)),
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "min": float(np.min(values)),
            "max": float(np.max(values)),
        }
    first = per_seed[min(per_seed)]
    for entry in first.get("criteria", []):
        name = entry["name"]
        checked = [
            next(e for e in per_seed[seed]["criteria"] if e["name"] == name)
            for seed in sorted(per_seed)
        ]
        summary["criteria"][name] = {
            "measure": entry["measure"],
            "op": entry["op"],
            "bound": entry["bound"],
            "values": [e["value"] for e in checked],
            "holds": [e["holds"] for e in checked],
        }
    return summary


def markdown(summary: Mapping[str, Any], per_seed: Mapping[int, Mapping[str, Any]]) -> str:
    from aiaic_jax.evaluation.variants import VARIANTS

    stats = summary["cells"]
    first = per_seed[min(per_seed)]
    splits = [s for s in first if isinstance(first[s], dict) and "full" in first[s]]
    n = len(summary["seeds"])
    lines = [
        f"Seeds {', '.join(map(str, summary['seeds']))} (mean ± sample standard deviation over "
        f"{n} runs; world and initialisation both seeded).",
        "",
    ]
    header = ["variant"] + [f"{s} {title}" for s in splits for _, title, _ in _TABLE_METRICS]
    lines += [_row(header), _row(["---"] + ["---:"] * (len(header) - 1))]
    for variant in VARIANTS:
        if not any(f"{s}/{variant.name}/psnr" in stats for s in splits):
            continue
        row = [variant.label]
        for split in splits:
            for key, _, digits in _TABLE_METRICS:
                row.append(_mean_std(stats.get(f"{split}/{variant.name}/{key}"), digits))
        lines.append(_row(row))
    lines.append("")

    mechanisms = first.get("mechanisms")
    if mechanisms:
        split = mechanisms["split"]
        lines += [f"Mechanisms of relevance on `{split}`:", ""]
        for key, label in (
            ("r_relevant", "mean r, own audio"),
            ("r_irrelevant", "mean r, another clip's audio"),
            ("rnet_auc", "RNet AUC"),
        ):
            lines.append(f"- {label}: {_mean_std(stats.get(f'mechanisms/{key}'), 3)}")
        lines += [
            "",
            _row(
                [
                    "variant",
                    "ab error, another clip's audio ↓",
                    "ab error, no audio ↓",
                    "PSNR, no audio ↑",
                ]
            ),
            _row(["---", "---:", "---:", "---:"]),
        ]
        for variant in VARIANTS:
            cells_ = [
                stats.get(f"mechanisms/{key}/{variant.name}")
                for key in ("ab_error_irrelevant", "ab_error_no_audio", "psnr_no_audio")
            ]
            if any(cells_):
                digits = (2, 2, 3)
                lines.append(
                    _row([variant.label] + [_mean_std(c, d) for c, d in zip(cells_, digits)])
                )
        lines.append("")

    if summary["criteria"]:
        lines += [
            _row(["criterion", "measure", "bound", "values (per seed)", "holds in"]),
            _row(["---", "---", "---", "---", "---:"]),
        ]
        for name, entry in summary["criteria"].items():
            values = ", ".join("—" if v is None else f"{v:.3g}" for v in entry["values"])
            held = sum(1 for h in entry["holds"] if h)
            lines.append(
                _row(
                    [
                        name,
                        entry["measure"],
                        f"{entry['op']} {entry['bound']:g}",
                        values,
                        f"{held} of {len(entry['holds'])}",
                    ]
                )
            )
        lines.append("")
    return "\n".join(lines)


def _mean_std(cell: Mapping[str, Any] | None, digits: int) -> str:
    if cell is None:
        return "—"
    return f"{cell['mean']:.{digits}f} ± {cell['std']:.{digits}f}"


def _row(cells_: Sequence[str]) -> str:
    return "| " + " | ".join(cells_) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--config", default="configs/demo.py", help="the demo's config file")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a demo config override (as --config.KEY=VALUE), repeatable",
    )
    parser.add_argument(
        "--aggregate", action="store_true", help="only read the seeds' results.json"
    )
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.workdir.mkdir(parents=True, exist_ok=True)
    timings = {}
    for seed in seeds:
        if args.aggregate or (args.workdir / f"seed_{seed}" / "results.json").exists():
            continue
        timings[seed] = run_seed(args.workdir, seed, args.config, args.set)
        print(f"[seeds] seed {seed}: {timings[seed]:.0f} s", flush=True)
    per_seed = {}
    for seed in seeds:
        path = args.workdir / f"seed_{seed}" / "results.json"
        if path.exists():
            per_seed[seed] = json.loads(path.read_text())
    if not per_seed:
        raise SystemExit(f"no results.json under {args.workdir}/seed_*")
    summary = aggregate(per_seed)
    summary["settings"] = {"config": args.config, "set": args.set}
    summary["run_seconds"] = timings
    (args.workdir / "seeds.json").write_text(json.dumps(summary, indent=2) + "\n")
    text = markdown(summary, per_seed)
    (args.workdir / "seeds.md").write_text(text)
    print(text)
    print(f"[seeds] wrote {args.workdir / 'seeds.json'} and {args.workdir / 'seeds.md'}")


if __name__ == "__main__":
    sys.path.insert(0, os.fspath(ROOT))
    main()
