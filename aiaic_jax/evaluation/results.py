"""What an evaluation measured on one split, per image: the data that tables, grids and
results.json are made from (`SplitEvaluation`)."""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.stats

METRICS = ("lpips", "psnr", "ssim", "colorfulness", "ab_error")


@dataclasses.dataclass
class SplitEvaluation:
    """Every variant's per-image numbers on one split, in the split's order.

    Attributes:
      split: the split name.
      index: [n] position of each pair in the split.
      has_audio, relevant: [n] bool, as the dataset stores them.
      scores: variant -> metric -> [n] float64.
      relevance: variant -> [n] r used for each pair (0 for the baseline).
      target_colorfulness: [n] colorfulness of the ground truth.
      grid_targets: [g, H, W, 3] uint8 ground truth of the first g pairs.
      grid_predictions: variant -> [g, H, W, 3] uint8 predictions of the same pairs.
    """

    split: str
    index: np.ndarray
    has_audio: np.ndarray
    relevant: np.ndarray
    scores: dict[str, dict[str, np.ndarray]]
    relevance: dict[str, np.ndarray]
    target_colorfulness: np.ndarray
    grid_targets: np.ndarray
    grid_predictions: dict[str, np.ndarray]

    @property
    def num_pairs(self) -> int:
        return int(self.index.size)

    def summary(self, variant: str) -> dict[str, float | int]:
        """The contract's entry: each metric per image, averaged over the pairs; and n."""
        means = {name: float(np.mean(self.scores[variant][name])) for name in METRICS}
        return {**means, "n": self.num_pairs}

    def kinds(self) -> dict[str, np.ndarray]:
        """Boolean masks of the pairs with relevant audio, irrelevant audio and no audio."""
        return {
            "relevant_audio": self.has_audio & self.relevant,
            "irrelevant_audio": self.has_audio & ~self.relevant,
            "no_audio": ~self.has_audio,
        }

    def by_kind(self, variant: str) -> dict[str, dict[str, float | int]]:
        """The summary's metrics over each kind of pair that occurs in the split."""
        out = {}
        for kind, selected in self.kinds().items():
            if selected.any():
                means = {m: float(np.mean(self.scores[variant][m][selected])) for m in METRICS}
                out[kind] = {**means, "n": int(selected.sum())}
        return out

    def mixed(self) -> bool:
        """Whether the split holds more than one kind of pair (AVE, ave_like)."""
        return sum(bool(selected.any()) for selected in self.kinds().values()) > 1

    def relevance_summary(self, variant: str = "full") -> dict[str, float | int | None]:
        """Mean r over all pairs, pairs with relevant / irrelevant audio, pairs without audio,
        and the AUC of r separating relevant from irrelevant audio (None where undefined)."""
        r = self.relevance[variant]
        kinds = self.kinds()
        relevant, irrelevant = kinds["relevant_audio"], kinds["irrelevant_audio"]
        mean = lambda selected: float(np.mean(r[selected])) if selected.any() else None
        auc = None
        if relevant.any() and irrelevant.any():
            # Mann-Whitney U / (n1 n0): the chance that a relevant pair scores above an
            # irrelevant one (ties count half).
            ranks = scipy.stats.rankdata(np.concatenate([r[relevant], r[irrelevant]]))
            n_rel, n_irr = int(relevant.sum()), int(irrelevant.sum())
            auc = float((ranks[:n_rel].sum() - n_rel * (n_rel + 1) / 2) / (n_rel * n_irr))
        return {
            "mean_r": float(np.mean(r)),
            "mean_r_relevant": mean(relevant),
            "n_relevant": int(relevant.sum()),
            "mean_r_irrelevant": mean(irrelevant),
            "n_irrelevant": int(irrelevant.sum()),
            "mean_r_no_audio": mean(kinds["no_audio"]),
            "n_no_audio": int(kinds["no_audio"].sum()),
            "auc_relevant_vs_irrelevant": auc,
        }
