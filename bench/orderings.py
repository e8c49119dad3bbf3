"""The paper's orderings as a study on the demo's world (issue 14; never tuned into the demo).

PYTHONPATH=. python bench/orderings.py --from runs/demo --workdir runs/orderings
PYTHONPATH=. python bench/orderings.py --from runs/demo --workdir runs/orderings \
    --studies noisy --fractions 0.2,0.4
PYTHONPATH=. python bench/orderings.py --from runs/demo --workdir runs/orderings --report

`--from` is a finished demo run (`make demo`, or `bench/seeds.py`'s `seed_<s>`): its world
(`data/`), its full run's baseline (`full/baseline/final`) and its results.json. Every run of
the study starts from that baseline, as the demo's ablations do, with the demo's config
(`--config`, `--seed` = the demo run's seed) and one change:

1. `stage1`: full vs w/o r as stage 1 grows (`--steps`, default 400, 800, 1600, 3200), with the
   backbone's BatchNorm statistics trained (the demo) and frozen (`freeze_backbone_stats`).
   The demo's rate is constant, so stage 1 of N steps is the first N steps of a longer run:
   each point resumes stage 1 from the previous point's last checkpoint (same data order,
   masks and optimiser state as a run from scratch) and then trains stage 2, RNet and stage 3
   as the demo does. The demo's own run is the 400-step point with trained statistics.
   Measured: PSNR and ab error on `ave_like`'s pairs with their own audio, val PSNR, RNet's r.
2. `noisy`: multi-step ("full") vs end to end ("w/o multi-step") when a fraction of the
   training pairs carry another clip's audio (`train_noisy_audio_fraction`, `--fractions`). A
   world is built per fraction; its images are the demo world's, so the demo's baseline is
   that world's baseline too. The demo run is the fraction-0 point.

Each training and evaluation runs as `train.py` / `eval.py` in a subprocess; a point whose
results exist is not run again, so an interrupted study continues. `--report` (also done at the
end) writes `<workdir>/orderings.json` and `orderings.md`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STATS = {"trained": False, "frozen": True}  # label -> stages.stage1.freeze_backbone_stats


def _run(command: Sequence[str], log: Path) -> None:
    print("[orderings] " + " ".join(command[1:]), flush=True)
    started = time.perf_counter()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as output:
        result = subprocess.run(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
    if result.returncode:
        raise SystemExit(f"failed (exit {result.returncode}); see {log}")
    print(f"[orderings]   {time.perf_counter() - started:.0f} s", flush=True)


def _train(args, workdir: Path, pipeline: str, data_dir: Path, settings: Sequence[str]) -> None:
    if (workdir / _LAST_STAGE[pipeline] / "final").is_dir():
        return
    command = [
        sys.executable,
        "train.py",
        f"--config={args.config}",
        f"--workdir={workdir}",
        f"--pipeline={pipeline}",
        f"--from={args.source / 'full'}",
        f"--config.seed={args.seed}",
        f"--config.data.data_dir={data_dir}",
        *(f"--config.{s}" for s in settings),
    ]
    _run(command, workdir.parent / f"{workdir.name}.train.log")


_LAST_STAGE = {"full": "stage3", "wo_r": "stage3", "e2e": "e2e"}


def _evaluate(out: Path, runs: dict[str, Path], variants: str, splits: str) -> dict[str, Any]:
    results = out / "results.json"
    if not results.exists():
        command = [
            sys.executable,
            "eval.py",
            f"--workdir={out}",
            "--runs=" + ",".join(f"{k}={v}" for k, v in runs.items()),
            f"--variants={variants}",
            f"--splits={splits}",
            "--grid_pairs=8",
        ]
        _run(command, out.parent / f"{out.name}.eval.log")
    return json.loads(results.read_text())


def _seed_stage1(previous: Path | None, workdir: Path) -> None:
    """Puts the previous point's last stage-1 checkpoint into `workdir` (to resume from)."""
    target = workdir / "stage1" / "checkpoints"
    if previous is None or target.exists() or (workdir / "stage1" / "final").is_dir():
        return
    source = previous / "stage1" / "checkpoints"
    steps = sorted(int(p.name) for p in source.iterdir() if p.name.isdigit())
    if not steps:
        raise SystemExit(f"{source}: no checkpoint to continue stage 1 from")
    target.mkdir(parents=True)
    shutil.copytree(source / str(steps[-1]), target / str(steps[-1]))


def stage1_study(args) -> dict[str, Any]:
    rows = {}
    data_dir = args.source / "data"
    for label, frozen in STATS.items():
        previous: dict[str, Path | None] = {"full": None, "wo_r": None}
        for steps in args.steps:
            point = args.workdir / "stage1" / f"{label}_stats" / f"steps_{steps}"
            demo_point = not frozen and steps == 400
            runs = {}
            for pipeline in ("full", "wo_r"):
                if demo_point:
                    runs[pipeline] = args.source / pipeline
                else:
                    runs[pipeline] = point / pipeline
                    _seed_stage1(previous[pipeline], runs[pipeline])
                    settings = [
                        f"stages.stage1.num_steps={steps}",
                        f"stages.stage1.freeze_backbone_stats={frozen}",
                    ]
                    _train(args, runs[pipeline], pipeline, data_dir, settings)
                previous[pipeline] = runs[pipeline]
            if demo_point:
                results = json.loads((args.source / "results.json").read_text())
            else:
                results = _evaluate(point / "eval", runs, "full,wo_r", "val,ave_like")
            rows[f"{label}/{steps}"] = {"stats": label, "steps": steps, **_stage1_row(results)}
            _report(args, {"stage1": rows})
    return rows


def _stage1_row(results: dict[str, Any]) -> dict[str, float]:
    own = results["by_kind"]["ave_like"]
    row = {}
    for variant in ("full", "wo_r"):
        row[f"ave_like_own_psnr/{variant}"] = own[variant]["relevant_audio"]["psnr"]
        row[f"ave_like_own_ab_error/{variant}"] = own[variant]["relevant_audio"]["ab_error"]
        row[f"val_psnr/{variant}"] = results["val"][variant]["psnr"]
    row["r_relevant"] = results["mechanisms"]["r_relevant"]
    row["r_irrelevant"] = results["mechanisms"]["r_irrelevant"]
    return row


def noisy_study(args) -> dict[str, Any]:
    from aiaic_jax import demo
    from configs import demo as demo_config

    rows = {
        "0": {"fraction": 0.0, **_noisy_row(json.loads((args.source / "results.json").read_text()))}
    }
    for fraction in args.fractions:
        point = args.workdir / "noisy" / f"fraction_{fraction:g}"
        data_dir = point / "data"
        config = demo_config.get_config()
        config.data.data_dir = str(data_dir)
        config.data.config_name = f"noisy_{fraction:g}".replace(".", "_")
        config.data.builder_options.seed = args.seed
        config.data.builder_options.train_noisy_audio_fraction = fraction
        demo.build_data(config, str(point))
        settings = [
            f"data.config_name={config.data.config_name}",
            f"data.builder_options.train_noisy_audio_fraction={fraction}",
            f"data.builder_options.seed={args.seed}",
        ]
        runs = {}
        for pipeline in ("full", "e2e"):
            runs[pipeline] = point / pipeline
            _train(args, runs[pipeline], pipeline, data_dir, settings)
        results = _evaluate(point / "eval", runs, "full,wo_multistep", "val,ave_like,ood")
        rows[f"{fraction:g}"] = {"fraction": fraction, **_noisy_row(results)}
        _report(args, {"noisy": rows})
    return rows


def _noisy_row(results: dict[str, Any]) -> dict[str, float]:
    row = {}
    for split in ("val", "ave_like", "ood"):
        for variant in ("full", "wo_multistep"):
            row[f"{split}_psnr/{variant}"] = results[split][variant]["psnr"]
            row[f"{split}_lpips/{variant}"] = results[split][variant]["lpips"]
    own = results["by_kind"]["ave_like"]
    for variant in ("full", "wo_multistep"):
        row[f"ave_like_own_psnr/{variant}"] = own[variant]["relevant_audio"]["psnr"]
    return row


def _report(args, update: dict[str, Any]) -> None:
    path = args.workdir / "orderings.json"
    report = json.loads(path.read_text()) if path.exists() else {}
    for study, rows in update.items():  # rows of other runs of the script are kept
        report.setdefault(study, {}).update(rows)
    report["from"] = os.fspath(args.source)
    path.write_text(json.dumps(report, indent=2) + "\n")
    (args.workdir / "orderings.md").write_text(markdown(report))


def markdown(report: dict[str, Any]) -> str:
    lines = [f"Study from the demo run {report.get('from')}.", ""]
    if report.get("stage1"):
        lines += [
            "Stage 1's length: `ave_like` pairs with their own audio (PSNR, ab error), val PSNR, "
            "RNet's mean r on `ave_like` (own / another clip's audio).",
            "",
            "| BN statistics | stage 1 steps | own-audio PSNR full | w/o r | full − w/o r "
            "| own-audio ab error full | w/o r | val PSNR full | w/o r | r own | r other |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in report["stage1"].values():
            full, wo_r = row["ave_like_own_psnr/full"], row["ave_like_own_psnr/wo_r"]
            lines.append(
                f"| {row['stats']} | {row['steps']} | {full:.2f} | {wo_r:.2f} | "
                f"{full - wo_r:+.2f} | {row['ave_like_own_ab_error/full']:.2f} | "
                f"{row['ave_like_own_ab_error/wo_r']:.2f} | {row['val_psnr/full']:.2f} | "
                f"{row['val_psnr/wo_r']:.2f} | {row['r_relevant']:.3f} | "
                f"{row['r_irrelevant']:.3f} |"
            )
        lines.append("")
    if report.get("noisy"):
        lines += [
            "Noisy training audio: PSNR of full (multi-step) and w/o multi-step (end to end).",
            "",
            "| noisy fraction | val full | val w/o ms | full − w/o ms | ave_like full "
            "| ave_like w/o ms | own-audio full | own-audio w/o ms | ood full | ood w/o ms |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in report["noisy"].values():
            cells = [
                row["val_psnr/full"],
                row["val_psnr/wo_multistep"],
                row["val_psnr/full"] - row["val_psnr/wo_multistep"],
                row["ave_like_psnr/full"],
                row["ave_like_psnr/wo_multistep"],
                row["ave_like_own_psnr/full"],
                row["ave_like_own_psnr/wo_multistep"],
                row["ood_psnr/full"],
                row["ood_psnr/wo_multistep"],
            ]
            text = [f"{c:+.2f}" if i == 2 else f"{c:.2f}" for i, c in enumerate(cells)]
            lines.append(f"| {row['fraction']:g} | " + " | ".join(text) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--config", default="configs/demo.py")
    parser.add_argument("--seed", type=int, default=0, help="the demo run's seed")
    parser.add_argument("--studies", default="stage1,noisy")
    parser.add_argument("--steps", default="400,800,1600,3200")
    parser.add_argument("--stats", default="trained,frozen", help="stage 1's BN statistics")
    parser.add_argument("--fractions", default="0.2,0.4")
    parser.add_argument("--report", action="store_true", help="only rewrite orderings.md")
    args = parser.parse_args()
    args.source = args.source.resolve()
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.steps = [int(s) for s in args.steps.split(",")]
    args.fractions = [float(f) for f in args.fractions.split(",")]
    for label in set(STATS) - set(args.stats.split(",")):
        del STATS[label]
    if args.report:
        _report(args, {})
        print((args.workdir / "orderings.md").read_text())
        return
    for study in args.studies.split(","):
        {"stage1": stage1_study, "noisy": noisy_study}[study](args)
    print((args.workdir / "orderings.md").read_text())


if __name__ == "__main__":
    sys.path.insert(0, os.fspath(ROOT))
    main()
