"""The method learns: the tiny model trained through every stage on a small world, evaluated as
the paper's tables are (part of `make test`; `make test-learning` runs it alone: about two
minutes on a 2-core CPU, of which about 90 s for the five stages).

It guards what unit tests cannot see: a change that leaves every stage running and every shape
right but stops the guidance from carrying colour, or RNet from telling a clip's own audio from
another clip's. Measured with this config on a 2-core CPU, seeds 0, 1, 2 of the world and the
initialisation (`AIAIC_LEARNING_SEED`): full - baseline on val 4.58, 7.20, 6.34 dB; RNet's mean r
on ave_like, own audio - another clip's, 0.196, 0.341, 0.108 (AUC 0.887, 0.863, 0.819). The
bounds below keep at least 40% of the smallest margin as headroom (docs/synthetic.md, "A test
that the method learns").
"""

import os

import pytest

from tests.tiny_training import LEARNING_BOUNDS, run_learning

pytestmark = pytest.mark.learning
SEED = int(os.environ.get("AIAIC_LEARNING_SEED", "0"))


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory):
    """The full pipeline on the learning config, then baseline and full on val and ave_like."""
    results = run_learning(tmp_path_factory.mktemp("learning"), SEED)
    print("val", results["val"], "relevance", results["relevance"]["ave_like"])
    return results


def test_full_beats_its_baseline_on_val(evaluation):
    val = evaluation["val"]
    assert val["full"]["psnr"] > val["baseline"]["psnr"] + LEARNING_BOUNDS["psnr_gain"]
    assert val["full"]["lpips"] < val["baseline"]["lpips"]


def test_rnet_gives_own_audio_a_higher_r_than_another_clips(evaluation):
    relevance = evaluation["relevance"]["ave_like"]
    gap = relevance["mean_r_relevant"] - relevance["mean_r_irrelevant"]
    assert gap > LEARNING_BOUNDS["r_gap"]
    assert relevance["auc_relevant_vs_irrelevant"] > LEARNING_BOUNDS["auc"]
