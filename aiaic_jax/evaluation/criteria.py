"""What the relevance mechanism does, measured on a split with relevance labels, and criteria
that a run's results must meet (the demo's: `DEMO_CRITERIA`).

results.json gains

    "mechanisms": {"split", "r_relevant", "r_irrelevant", "rnet_auc",
                   "ab_error_irrelevant": {variant: mean ab error on pairs with another clip's
                                           audio},
                   "ab_error_no_audio": {variant: mean ab error on pairs without audio},
                   "psnr_no_audio": {variant: mean PSNR on pairs without audio}}
    "criteria":   [{"name", "measure", "value", "op", "bound", "holds"}, ...]

The mechanisms are read on the first evaluated split that holds both pairs with their own audio
and pairs with another clip's (`ave_like` in the synthetic world, AVE's test split on real
data). PSNR on RGB hides what the gate does with another clip's sound or with none: a wrong hue at
the synthetic world's chroma costs little more than no hue (a near-grey guess scores about
18.5 dB), so a model that paints a wrong colour and one that keeps the baseline's near-grey
score within noise of each other, and their order flips between seeds. The ab error (mean
|a - a'|, |b - b'| in Lab units) is the colour difference itself, and the criteria on what
the gate does are stated in it (bench/seeds.py and docs/synthetic.md have the seeds).
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from aiaic_jax.evaluation.results import SplitEvaluation
from aiaic_jax.evaluation.variants import get_variant

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
}


def mechanisms(evaluations: Mapping[str, SplitEvaluation]) -> dict[str, Any] | None:
    """The relevance mechanisms on the first split with relevant and irrelevant audio pairs,
    or None when no split has both or `full` was not evaluated."""
    for split, evaluation in evaluations.items():
        kinds = evaluation.kinds()
        if not (kinds["relevant_audio"].any() and kinds["irrelevant_audio"].any()):
            continue
        if "full" not in evaluation.relevance:
            return None
        summary = evaluation.relevance_summary("full")
        return {
            "split": split,
            "r_relevant": summary["mean_r_relevant"],
            "r_irrelevant": summary["mean_r_irrelevant"],
            "rnet_auc": summary["auc_relevant_vs_irrelevant"],
            "ab_error_irrelevant": _means(evaluation, "ab_error", kinds["irrelevant_audio"]),
            "ab_error_no_audio": _means(evaluation, "ab_error", kinds["no_audio"]),
            "psnr_no_audio": _means(evaluation, "psnr", kinds["no_audio"]),
        }
    return None


def _means(evaluation: SplitEvaluation, metric: str, selected: np.ndarray) -> dict[str, float]:
    """variant -> mean of `metric` over the selected pairs ({} when none is)."""
    if not selected.any():
        return {}
    return {
        variant: float(np.mean(scores[metric][selected]))
        for variant, scores in evaluation.scores.items()
    }


@dataclasses.dataclass(frozen=True)
class Criterion:
    """`value(results) <op> bound`, where `value` reads results.json (None: not measurable)."""

    name: str
    measure: str  # what the value is, in words
    value: Callable[[Mapping[str, Any]], float | None]
    op: str
    bound: float

    def check(self, results: Mapping[str, Any]) -> dict[str, Any]:
        try:
            value = self.value(results)
        except (KeyError, TypeError):
            value = None  # a variant, split or mechanism that was not evaluated
        holds = None if value is None else bool(_OPS[self.op](value, self.bound))
        return {
            "name": self.name,
            "measure": self.measure,
            "value": None if value is None else float(value),
            "op": self.op,
            "bound": self.bound,
            "holds": holds,
        }


def check(criteria: Sequence[Criterion], results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each criterion checked on results.json's content; `holds` None where not measurable."""
    return [criterion.check(results) for criterion in criteria]


def _split(split: str, variant: str, metric: str) -> Callable[[Mapping[str, Any]], float]:
    return lambda results: results[split][variant][metric]


def _difference(
    first: Callable[[Mapping[str, Any]], float], second: Callable[[Mapping[str, Any]], float]
) -> Callable[[Mapping[str, Any]], float]:
    return lambda results: first(results) - second(results)


def _mechanism(key: str, variant: str | None = None) -> Callable[[Mapping[str, Any]], float]:
    if variant is None:
        return lambda results: results["mechanisms"][key]
    return lambda results: results["mechanisms"][key][variant]


# What `make demo` must show, on `val` (pairs with their own audio) and on the mechanisms split.
DEMO_CRITERIA: tuple[Criterion, ...] = (
    Criterion(
        "rnet_r_relevant",
        "mean r of RNet on pairs with their own audio",
        _mechanism("r_relevant"),
        ">=",
        0.6,
    ),
    Criterion(
        "rnet_r_irrelevant",
        "mean r of RNet on pairs with another clip's audio",
        _mechanism("r_irrelevant"),
        "<=",
        0.4,
    ),
    Criterion(
        "rnet_auc",
        "AUC of r separating own from another clip's audio",
        _mechanism("rnet_auc"),
        ">=",
        0.85,
    ),
    Criterion(
        "gate_keeps_colour_on_irrelevant_audio",
        "ab error of full minus w/o r on pairs with another clip's audio (Lab units)",
        _difference(
            _mechanism("ab_error_irrelevant", "full"), _mechanism("ab_error_irrelevant", "wo_r")
        ),
        "<",
        0.0,
    ),
    Criterion(
        "gate_without_audio",
        "ab error of full minus w/o r on pairs without audio (Lab units)",
        _difference(
            _mechanism("ab_error_no_audio", "full"), _mechanism("ab_error_no_audio", "wo_r")
        ),
        "<",
        0.0,
    ),
    Criterion(
        "sound_adds_colour",
        "val PSNR of full minus baseline (dB)",
        _difference(_split("val", "full", "psnr"), _split("val", "baseline", "psnr")),
        ">=",
        2.0,
    ),
    Criterion(
        "sound_lowers_lpips",
        "val LPIPS of full minus baseline",
        _difference(_split("val", "full", "lpips"), _split("val", "baseline", "lpips")),
        "<",
        0.0,
    ),
    Criterion(
        "missing_audio_falls_back_to_baseline",
        "absolute val PSNR difference of full (missing audio) and baseline (dB)",
        lambda results: abs(
            results["val"]["full_missing_audio"]["psnr"] - results["val"]["baseline"]["psnr"]
        ),
        "<=",
        0.5,
    ),
    Criterion(
        "without_r_silence_paints",
        "val ab error of w/o r (missing audio) minus full (missing audio) (Lab units)",
        _difference(
            _split("val", "wo_r_missing_audio", "ab_error"),
            _split("val", "full_missing_audio", "ab_error"),
        ),
        ">=",
        1.0,
    ),
)


def markdown(mechanism: Mapping[str, Any] | None, checked: Sequence[Mapping[str, Any]]) -> str:
    """The results.md sections of the mechanisms and the criteria ("" when there are none)."""
    lines: list[str] = []
    if mechanism is not None:
        lines += [f"## Mechanisms of relevance ({mechanism['split']})", ""]
        lines.append(
            f"RNet's mean r: {_number(mechanism['r_relevant'])} with a pair's own audio, "
            f"{_number(mechanism['r_irrelevant'])} with another clip's; AUC "
            f"{_number(mechanism['rnet_auc'])}."
        )
        lines.append("")
        variants = list(mechanism["ab_error_irrelevant"]) or list(mechanism["psnr_no_audio"])
        lines += [
            "| variant | ab error, another clip's audio ↓ | ab error, no audio ↓ | "
            "PSNR, no audio ↑ |",
            "| --- | ---: | ---: | ---: |",
        ]
        for name in variants:
            irrelevant = mechanism["ab_error_irrelevant"].get(name)
            no_audio = mechanism["ab_error_no_audio"].get(name)
            psnr = mechanism["psnr_no_audio"].get(name)
            lines.append(
                f"| {get_variant(name).label} | {_number(irrelevant, 2)} | "
                f"{_number(no_audio, 2)} | {_number(psnr, 3)} |"
            )
        lines += [
            "",
            "ab error: mean |a - a'| and |b - b'| in Lab units against the ground truth.",
            "",
        ]
    if checked:
        held = sum(1 for entry in checked if entry["holds"])
        lines += [f"## Criteria ({held} of {len(checked)} hold)", ""]
        lines += [
            "| criterion | measure | value | bound | holds |",
            "| --- | --- | ---: | --- | --- |",
        ]
        for entry in checked:
            holds = {True: "yes", False: "**no**", None: "not measured"}[entry["holds"]]
            lines.append(
                f"| {entry['name']} | {entry['measure']} | {_number(entry['value'], 4)} | "
                f"{entry['op']} {entry['bound']:g} | {holds} |"
            )
        lines.append("")
    return "\n".join(lines)


def _number(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"
