"""The colour distribution consistency (CDC) against a direct computation with scipy, streamed
and whole, within shots, on frames and on video files, and the `aiaic cdc` command."""

import json

import numpy as np
import pytest
from scipy.spatial import distance

from aiaic_jax import cli
from aiaic_jax.data import media
from aiaic_jax.evaluation import temporal


def _frames(count, seed=0, size=(12, 16)):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(count)]


def _reference_cdc(frames, gaps=(1, 2, 4)):
    """CDC written out independently: numpy histograms, scipy's Jensen-Shannon distance squared
    (natural log)."""

    def hist(frame, c):
        counts, _ = np.histogram(frame[..., c], bins=256, range=(0, 256))
        return counts / counts.sum()

    per_gap = []
    for gap in gaps:
        pairs = [
            np.mean([distance.jensenshannon(hist(a, c), hist(b, c)) ** 2 for c in range(3)])
            for a, b in zip(frames[:-gap], frames[gap:])
        ]
        if pairs:
            per_gap.append(np.mean(pairs))
    return float(np.mean(per_gap))


def test_js_divergence_equals_scipys_squared_distance():
    rng = np.random.default_rng(1)
    p, q = rng.random((2, 5, 256))
    p[:, :40] = 0  # empty bins on one side only
    p /= p.sum(-1, keepdims=True)
    q /= q.sum(-1, keepdims=True)
    expected = [distance.jensenshannon(a, b) ** 2 for a, b in zip(p, q)]
    np.testing.assert_allclose(temporal.js_divergence(p, q), expected, rtol=1e-10)
    assert np.all(temporal.js_divergence(p, p) == 0)
    disjoint = np.eye(256)[[0, 1]]
    np.testing.assert_allclose(temporal.js_divergence(disjoint[0], disjoint[1]), np.log(2))


def test_cdc_equals_the_direct_computation():
    frames = _frames(9)
    result = temporal.cdc(frames)
    assert result.frames == 9 and set(result.per_gap) == {1, 2, 4}
    np.testing.assert_allclose(result.value, _reference_cdc(frames), rtol=1e-10)


def test_a_steady_video_has_zero_cdc_and_flicker_shows_in_gap_one():
    a, b = _frames(2, seed=3)
    assert temporal.cdc([a] * 6).value == 0.0
    alternating = temporal.cdc([a, b] * 4)  # frames 2 and 4 apart are identical
    assert alternating.per_gap[2] == 0.0 and alternating.per_gap[4] == 0.0
    np.testing.assert_allclose(alternating.per_gap[1], _reference_cdc([a, b], gaps=(1,)))
    np.testing.assert_allclose(alternating.value, alternating.per_gap[1] / 3)


def test_short_videos_leave_out_the_gaps_they_lack():
    frames = _frames(3)
    result = temporal.cdc(frames)
    assert set(result.per_gap) == {1, 2}
    np.testing.assert_allclose(result.value, _reference_cdc(frames, gaps=(1, 2)))
    assert temporal.cdc(frames[:1]).value is None
    assert temporal.mean_cdc([result, temporal.cdc(frames[:1])]) == result.value


def test_cuts_leave_out_the_pairs_across_them():
    """Within shots: the mean over the pairs of each shot, per gap (a shot shorter than a gap
    gives that gap no pairs); without cuts the whole sequence."""
    frames = _frames(11, seed=4)
    shots = [frames[:3], frames[3:9], frames[9:]]  # 3, 6 and 2 frames
    result = temporal.cdc(frames, cuts=[3, 9])
    assert set(result.per_gap) == {1, 2, 4}
    for gap in (1, 2, 4):
        pairs = [
            _reference_cdc([shot[i], shot[i + gap]], gaps=(1,))
            for shot in shots
            for i in range(len(shot) - gap)
        ]
        np.testing.assert_allclose(result.per_gap[gap], np.mean(pairs), rtol=1e-10)
    assert temporal.cdc(frames, cuts=[0]) == temporal.cdc(frames)


def test_bad_frames_and_gaps_are_refused():
    with pytest.raises(ValueError, match="uint8"):
        temporal.cdc([np.zeros((4, 4, 3), np.float32)])
    with pytest.raises(ValueError, match="positive"):
        temporal.CdcMeter(gaps=(0, 1))


def _write(path, frames):
    media.write_video(path, np.stack(frames), None, fps=10)
    return str(path)


def test_video_files_and_the_cdc_command(tmp_path, capsys):
    rng = np.random.default_rng(0)
    base = rng.integers(60, 200, (32, 48, 3), dtype=np.uint8)
    steady = _write(tmp_path / "steady.mp4", [base] * 8)
    shift = np.array([40, 0, -40])
    tints = [np.clip(base.astype(int) + shift * (i % 2), 0, 255) for i in range(8)]
    flicker = _write(tmp_path / "flicker.mp4", [t.astype(np.uint8) for t in tints])
    decoded = [frame for frame, _ in media.video_frames(flicker)]
    assert temporal.video_cdc(flicker) == temporal.cdc(decoded)
    assert temporal.video_cdc(flicker).value > 20 * temporal.video_cdc(steady).value

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    report = tmp_path / "cdc.json"
    status = cli.main(["cdc", steady, flicker, str(broken), "--json", str(report)])
    out, err = capsys.readouterr()
    assert status == 1
    assert f"{steady}: CDC" in out and f"{flicker}: CDC" in out and "mean CDC over 2 videos" in out
    assert str(broken) in err
    written = json.loads(report.read_text())
    assert set(written["videos"]) == {steady, flicker} and written["unreadable"] == [str(broken)]
    assert written["videos"][flicker]["cdc"] == pytest.approx(temporal.video_cdc(flicker).value)


def test_within_shots_the_cuts_are_found_as_colorize_finds_them(tmp_path, capsys):
    """Two still shots of different pictures: over the whole video the cut makes the CDC; within
    shots (the film path's detector) it is zero, as the decoded frames cut by hand."""
    rng = np.random.default_rng(1)
    dark = rng.integers(0, 90, (32, 48, 3), dtype=np.uint8)
    light = rng.integers(150, 256, (32, 48, 3), dtype=np.uint8)
    video = _write(tmp_path / "two_shots.mp4", [dark] * 5 + [light] * 6)
    decoded = [frame for frame, _ in media.video_frames(video)]
    whole = temporal.video_cdc(video)
    shots = temporal.video_cdc(video, cut_threshold=0.12)
    assert shots == temporal.cdc(decoded, cuts=[5])
    assert whole.value > 0.1 and shots.value < 0.01 * whole.value

    report = tmp_path / "cdc.json"
    assert cli.main(["cdc", video, "--shots", "--json", str(report)]) == 0
    assert f"{video}: CDC {shots.value:.5f}" in capsys.readouterr().out
    written = json.loads(report.read_text())
    assert written["within_shots"] is True and written["cut_threshold"] == 0.12
    assert cli.main(["cdc", video, "--cut_threshold", "0.2"]) == 2
    assert "--cut_threshold is for --shots" in capsys.readouterr().err
