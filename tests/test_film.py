"""Films (`aiaic_jax.film`): the sound heard once per window gives what the evaluation's
joint path gives, windows are cut from a lazily decoded sound as from the whole, and a film
is streamed in segments that an interrupted run resumes to the same output."""

import itertools
import json
import os

import av
import jax
import numpy as np
import pytest

from aiaic_jax import film, inference
from aiaic_jax.data import media
from aiaic_jax.data.pipeline import fit_audio
from aiaic_jax.evaluation.variants import colorize_batch, relevance_controls
from aiaic_jax.inference import Colorizer
from aiaic_jax.models.aiaic import build_model
from tests import media_factory, tiny_model

IMAGE_SIZE = 32
BATCH = 4


@pytest.fixture(scope="module")
def colorizer():
    config = tiny_model.run_config(image_size=IMAGE_SIZE, audio_seconds=0.5)
    variables = tiny_model.random_variables(build_model(config.model), IMAGE_SIZE, seed=1)
    return Colorizer(config, variables, mode="auto", batch_size=BATCH)


def test_hearing_once_then_colorizing_equals_the_joint_path(colorizer):
    """`hear`, then r and the guided backbone (films, and every image through
    `colorize_prepared`), against `colorize_batch` (the evaluation): same ab and r, with sound,
    a shared sound and none, with r from RNet and with r fixed at 1."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (BATCH, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    sounds = [rng.integers(-9000, 9000, 5000, dtype=np.int16) for _ in range(2)]
    per_image = [sounds[0], sounds[1], sounds[0], None]
    silence = np.zeros(colorizer.num_samples, np.int16)
    audio = np.stack(
        [silence if s is None else fit_audio(s, colorizer.num_samples) for s in per_image]
    )
    has_audio = np.array([s is not None for s in per_image])
    batch = {"rgb": rgb, "audio": audio, "has_audio": has_audio}
    joint = jax.jit(
        lambda v, b, c: colorize_batch(colorizer.model, colorizer.config, v, b, c, "audio")[:2]
    )
    heard = colorizer.hear(sounds)
    order = [heard[0], heard[1], heard[0]]
    code = np.stack([h.code for h in order] + [np.zeros_like(heard[0].code)])
    embedding = np.stack([h.embedding for h in order] + [np.zeros_like(heard[0].embedding)])
    for use_rnet in (True, False):
        controls = relevance_controls(use_rnet=use_rnet, fixed_relevance=1.0)
        ab_joint, r_joint = joint(colorizer.variables, batch, controls)
        r = inference._relevance(
            colorizer.variables, rgb, embedding, has_audio, controls, model=colorizer.model
        )
        ab = inference._colorize_at(colorizer.variables, rgb, code, r, model=colorizer.model)
        np.testing.assert_allclose(np.asarray(r), np.asarray(r_joint), atol=1e-5)
        np.testing.assert_allclose(np.asarray(ab), np.asarray(ab_joint), atol=1e-3)
        assert float(r[3]) == 0.0 and np.ptp(np.asarray(ab)) > 1.0
        assert (float(r[0]) == 1.0) != use_rnet


def test_sound_windows_of_a_lazily_decoded_sound_are_those_of_the_whole():
    """Window k is centred on (k + 1/2) hop, moved inside the sound at its ends; decoded in
    chunks of any size, the windows are those cut from the whole sound."""
    rate = media.SAMPLE_RATE
    whole = np.arange(5 * rate + 123, dtype=np.int64).astype(np.int16)
    rng = np.random.default_rng(0)
    cuts = np.sort(rng.choice(whole.size, 40, replace=False))

    def expected(k, seconds, hop):
        length = round(seconds * rate)
        start = max(round((k + 0.5) * hop * rate) - length // 2, 0)
        start = max(min(start, whole.size - length), 0)
        return whole[start : start + length]

    for seconds, hop in [(1.0, 1.0), (2.0, 0.5), (7.0, 1.0)]:
        windows = film.SoundWindows(iter(np.split(whole, cuts)), seconds, hop)
        for k in range(int(5.2 / hop) + 2):
            np.testing.assert_array_equal(windows.window(k), expected(k, seconds, hop))
    assert film.SoundWindows(iter([]), 1.0, 1.0).window(0) is None

    # A resumed film asks first for a window far into a long sound (decoded and dropped on the
    # way), then one past the end: the sound's last second.
    long = np.tile(whole, 12)  # about a minute
    windows = film.SoundWindows(iter(np.split(long, range(1000, long.size, 1000))), 1.0, 1.0)
    start = 40 * rate
    np.testing.assert_array_equal(windows.window(40), long[start : start + rate])
    np.testing.assert_array_equal(windows.window(100), long[-rate:])


def _frames(path):
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])]


def test_a_film_interrupted_mid_segment_resumes_to_the_same_output(
    colorizer, tmp_path, monkeypatch
):
    """Two shots of 1.5 s at 10 fps in segments of 12 frames (1 s rounded up to whole batches
    of 4): a run broken off while encoding the second segment leaves no output and one finished
    segment; the rerun colorizes the rest only, and its output and shot report are the
    uninterrupted run's, byte for byte, with the film's sound."""
    source = media_factory.panning_clip(tmp_path / "film.mp4", size=(50, 36))
    whole = tmp_path / "whole.mp4"
    summary = film.colorize_film(colorizer, source, str(whole), segment_seconds=1.0)
    assert "30 frames, 2 shots, r mean" in summary
    assert sorted(os.listdir(tmp_path)) == ["film.mp4", "whole.mp4", "whole.mp4.shots.json"]

    encoded, calls = film._encode_batch, []

    def broken(encoder, frames, pts):
        calls.append(len(frames))
        encoder.encode(frames[0], pts[0])
        if len(calls) == 5:  # the second batch of the second segment
            raise KeyboardInterrupt
        for rgb, stamp in zip(frames[1:], pts[1:]):
            encoder.encode(rgb, stamp)

    output = tmp_path / "out" / "colour.mp4"
    monkeypatch.setattr(film, "_encode_batch", broken)
    with pytest.raises(KeyboardInterrupt):
        film.colorize_film(colorizer, source, str(output), segment_seconds=1.0)
    parts = tmp_path / "out" / ".colour.mp4.parts"
    assert not output.exists()
    assert {"job.json", "segment-00000.mp4", "segment-00000.json"} <= set(os.listdir(parts))
    assert "segment-00001.json" not in os.listdir(parts)

    calls.clear()
    monkeypatch.setattr(film, "_encode_batch", lambda *a: (calls.append(1), encoded(*a)))
    resumed = film.colorize_film(colorizer, source, str(output), segment_seconds=1.0)
    assert resumed == summary.replace(str(whole), str(output))
    assert len(calls) == 5  # frames 12-29 only: batches of 4, 4, 4 and 4 + 2
    assert sorted(os.listdir(output.parent)) == ["colour.mp4", "colour.mp4.shots.json"]
    assert output.read_bytes() == whole.read_bytes()

    report = json.loads((tmp_path / "out" / "colour.mp4.shots.json").read_text())
    assert report["shots"] == json.loads((tmp_path / "whole.mp4.shots.json").read_text())["shots"]
    first, second = report["shots"]
    assert (first["start"], first["end"], first["frames"]) == (0.0, 1.5, 15)
    assert (second["start"], second["end"], second["frames"]) == (1.5, 3.0, 15)
    assert first["sound_windows"] == [[0.25, 0.75], [1.25, 1.75]]  # windows 0 and 1 (0.5 s)
    assert second["sound_windows"] == [[1.25, 1.75], [2.25, 2.75]]
    assert 0 < first["mean_r"] < 1 and 0 < second["mean_r_used"] < 1

    frames = _frames(output)
    assert len(frames) == 30 and frames[0].shape == (36, 50, 3)
    with av.open(str(output)) as container:
        (sound,) = container.streams.audio
        assert sound.codec_context.sample_rate == 44100 and sound.codec_context.channels == 2
        samples = sum(frame.samples for frame in container.decode(sound))
    assert abs(samples / 44100 - 3.0) < 0.1
    kept = media.load_audio(output)
    assert abs(media_factory.dominant_hz(kept[36000:44000]) - media_factory.tone_hz(2)) < 5


def test_shots_are_cut_where_the_picture_changes_and_smooth_r_and_the_code_within(tmp_path):
    """On two panning shots: one cut, at the second shot's first frame. Within a shot r and the
    code follow an exponential average (time constant 1 s at 10 fps: weight 1 - e^-0.1 on each
    new frame); at the cut they restart from the frame's own; a frame without sound keeps the
    code and pulls r towards 0; before anything is heard in a shot, r = 0."""
    source = media_factory.panning_clip(tmp_path / "pan.mp4", size=(64, 48), sample_rate=None)
    frames = [rgb for rgb, _ in media.video_frames(source)]
    distances = [
        film.histogram_distance(film.grey_histogram(a), film.grey_histogram(b))
        for a, b in itertools.pairwise(frames)
    ]
    assert max(distances[:14] + distances[15:]) < film.CUT_THRESHOLD / 2
    assert distances[14] > 2 * film.CUT_THRESHOLD

    shots = film.Shots(film.CUT_THRESHOLD, smoothing=1.0)
    times = [i / 10 for i in range(30)]
    raw = np.array([0.2] * 10 + [0.8] * 10 + [0.5] * 10)
    codes = np.tile(np.arange(30, dtype=np.float32)[:, None], (1, 3)) + 1
    heard = [True] * 30
    heard[3] = False  # a frame without sound
    raw[3] = 0.0
    codes[3] = 0.0
    used_r, used_codes = [], []
    for start in range(0, 30, 8):
        stop = min(start + 8, 30)
        guide, settle = shots.batch(
            frames[start:stop], times[start:stop], [0] * (stop - start), heard[start:stop]
        )
        r, c = guide(raw[start:stop].astype(np.float32), codes[start:stop].copy())
        used_r += list(r)
        used_codes += list(c)
    weight = 1 - np.exp(-0.1)
    expected_r, expected_code, r, code = [], [], None, None
    for i in range(30):
        if i in (0, 15):
            r, code = raw[i], codes[i].astype(np.float64)
        else:
            r = r + weight * (raw[i] - r)
            if heard[i]:
                code = code + weight * (codes[i] - code)
        expected_r.append(r)
        expected_code.append(code)
    np.testing.assert_allclose(used_r, expected_r, rtol=1e-6)
    np.testing.assert_allclose(used_codes, expected_code, rtol=1e-6)
    pieces = shots.take_pieces()
    assert [(p["shot"], p["frames"], p["heard_frames"]) for p in pieces] == [
        (0, 15, 14),
        (1, 15, 15),
    ]

    silent = film.Shots(film.CUT_THRESHOLD, smoothing=0.0)
    r, _ = silent.batch(frames[:2], [0.0, 0.1], [0, 0], [False, True])[0](
        np.array([0.0, 0.6], np.float32), np.stack([np.zeros(3), np.ones(3)]).astype(np.float32)
    )
    np.testing.assert_allclose(r, [0.0, 0.6])  # no smoothing: each frame's own r
    assert settle is None  # the colour is steadied only when asked


def test_steadying_moves_each_frames_colour_moments_along_an_average_and_keeps_its_pattern(
    tmp_path,
):
    """steady = 0.5 s at 10 fps: the mean and deviation of each ab channel over the picture's
    box follow an exponential average (weight 1 - e^-0.2), restarted at the cut; the pattern
    (ab standardised per frame) is untouched; the padding outside the box does not count."""
    source = media_factory.panning_clip(tmp_path / "pan.mp4", size=(64, 48), sample_rate=None)
    frames = [rgb for rgb, _ in media.video_frames(source)]
    rng = np.random.default_rng(0)
    box = inference.Box(4, 0, 24, 32)
    pattern = rng.normal(0, 1, (30, 32, 32, 2))
    inside = pattern[:, 4:28]
    pattern = (pattern - inside.mean(axis=(1, 2), keepdims=True)) / inside.std(
        axis=(1, 2), keepdims=True
    )
    casts = rng.normal(0, 15, (30, 2))  # the cast and saturation jump from frame to frame
    spreads = rng.uniform(5, 15, (30, 2))
    ab = (pattern * spreads[:, None, None] + casts[:, None, None]).astype(np.float32)
    ab[:, :4] = 100.0  # padding, outside the box
    shots = film.Shots(film.CUT_THRESHOLD, smoothing=1.0, steady=0.5)
    steadied = []
    for start in range(0, 30, 8):
        stop = min(start + 8, 30)
        times = [i / 10 for i in range(start, stop)]
        _, settle = shots.batch(
            frames[start:stop], times, [0] * (stop - start), [True] * (stop - start)
        )
        steadied.append(settle(ab[start:stop].copy(), [box] * (stop - start)))
    steadied = np.concatenate(steadied)[:, 4:28]
    weight, moments, expected = 1 - np.exp(-0.2), None, []
    for i in range(30):
        now = np.concatenate([casts[i], spreads[i]])
        moments = now if i in (0, 15) else moments + weight * (now - moments)
        expected.append(moments)
    expected = np.array(expected)
    means, stds = steadied.mean(axis=(1, 2)), steadied.std(axis=(1, 2))
    np.testing.assert_allclose(means, expected[:, :2], atol=1e-3)
    np.testing.assert_allclose(stds, expected[:, 2:], rtol=1e-4)
    restored = (steadied - means[:, None, None]) / stds[:, None, None]
    np.testing.assert_allclose(restored, pattern[:, 4:28], atol=1e-4)
    assert np.std(np.diff(means, axis=0)) < 0.5 * np.std(np.diff(casts, axis=0))


def test_a_film_without_sound_is_coloured_by_the_backbone_with_one_warning(
    colorizer, tmp_path, capsys
):
    source = media_factory.colour_clip(tmp_path / "mute.mkv", seconds=1, fps=10, sample_rate=None)
    summary = film.colorize_film(colorizer, source, str(tmp_path / "mute_colour.mkv"))
    err = capsys.readouterr().err
    assert "no audio: r = 0" in summary and "10 frames" in summary
    assert err.count("warning") == 1 and "no audio stream" in err
    assert len(_frames(tmp_path / "mute_colour.mkv")) == 10
    with av.open(str(tmp_path / "mute_colour.mkv")) as container:
        assert not container.streams.audio
