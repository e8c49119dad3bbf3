"""Decoding of video, audio and image files into frames, 16 kHz windows and RGB images."""

from __future__ import annotations

import fractions

import av
import numpy as np
import pytest
import scipy.io.wavfile
from PIL import Image
from scipy import signal

from aiaic_jax.data import media
from tests.media_factory import (
    audio_file,
    colour_clip,
    colourful_image,
    dominant_hz,
    frame_colour,
    frame_index,
    save_image,
    solid_image,
    text_file,
    tone,
    tone_hz,
    truncated_copy,
)

SR = media.SAMPLE_RATE

# (source sample rate, channels, container): the sound of a clip comes in any of these.
CLIP_KINDS = [(8_000, 1, "mp4"), (44_100, 2, "mp4"), (48_000, 6, "mp4"), (22_050, 2, "ts")]


@pytest.fixture(scope="module")
def decoded_clips(tmp_path_factory):
    """3-s, 10-fps colour-coded clips with a tone per second, decoded once per kind."""
    directory = tmp_path_factory.mktemp("clips")
    clips = {}
    for rate, channels, container in CLIP_KINDS:
        path = colour_clip(
            directory / f"clip_{rate}_{channels}.{container}", sample_rate=rate, channels=channels
        )
        clips[(rate, channels, container)] = media.decode_video(path)
    return clips


@pytest.mark.parametrize("kind", CLIP_KINDS, ids=lambda k: f"{k[0]}Hz-{k[1]}ch-{k[2]}")
def test_each_second_gets_the_frame_nearest_its_middle(decoded_clips, kind):
    clip = decoded_clips[kind]
    assert clip.num_seconds == 3
    # At 10 fps the frame shown at k + 0.5 s is frame 10k + 5; the clip's middle (1.5 s) is 15.
    assert [frame_index(f) for f in clip.second_frames] == [5, 15, 25]
    assert frame_index(clip.middle_frame) == 15


@pytest.mark.parametrize("kind", CLIP_KINDS, ids=lambda k: f"{k[0]}Hz-{k[1]}ch-{k[2]}")
def test_each_second_of_audio_holds_that_seconds_tone(decoded_clips, kind):
    clip = decoded_clips[kind]
    for second in range(clip.num_seconds):
        window = clip.second_audio(second)
        assert window.shape == (SR,)
        assert abs(dominant_hz(window) - tone_hz(second)) <= 1.0


@pytest.mark.parametrize("kind", CLIP_KINDS, ids=lambda k: f"{k[0]}Hz-{k[1]}ch-{k[2]}")
def test_audio_is_16khz_mono_int16_aligned_with_the_frames(decoded_clips, kind):
    clip = decoded_clips[kind]
    assert clip.has_audio
    assert clip.audio.dtype == np.int16
    assert clip.audio.shape == (3 * SR,)
    # Cross-correlation with the tone track as written: no lag beyond a sample.
    reference = tone(3, SR)[:, 0].astype(np.float64)
    correlation = signal.correlate(clip.audio.astype(np.float64), reference, mode="full")
    lags = signal.correlation_lags(clip.audio.size, reference.size)
    near = np.abs(lags) < 800
    assert abs(lags[near][correlation[near].argmax()]) <= 1


def test_variable_frame_rate_frames_are_chosen_by_time_not_index(tmp_path):
    # 4 fps, then 20 fps, then irregular: frame indices say nothing about time.
    times = [0, 0.25, 0.45, 0.8, *(1 + np.arange(20) / 20), 2.0, 2.3, 2.62, 2.95, 3.3, 3.61]
    path = colour_clip(tmp_path / "vfr.mp4", frame_times=[float(t) for t in times], seconds=3.7)
    clip = media.decode_video(path)
    nearest = [int(np.argmin(np.abs(np.array(times) - (k + 0.5)))) for k in range(3)]
    # The last frame lasts one median frame interval (20 fps here).
    assert clip.duration == pytest.approx(3.61 + 0.05)
    assert clip.num_seconds == 3
    assert [frame_index(f) for f in clip.second_frames] == nearest == [2, 14, 26]
    assert frame_index(clip.middle_frame) == int(np.argmin(np.abs(np.array(times) - 3.66 / 2)))


def test_clip_without_audio_stream_has_no_audio(tmp_path):
    clip = media.decode_video(colour_clip(tmp_path / "mute.mp4", sample_rate=None))
    assert not clip.has_audio
    assert clip.audio.size == 0
    assert clip.second_audio(0).size == 0 and clip.middle_audio().size == 0
    assert [frame_index(f) for f in clip.second_frames] == [5, 15, 25]


def test_silent_audio_is_kept_as_audio(tmp_path):
    frames = [solid_image(frame_colour(i)) for i in range(20)]
    path = tmp_path / "silent.mp4"
    media.write_video(path, frames, np.zeros((2 * 44_100, 2), np.int16), 10, 44_100)
    clip = media.decode_video(path)
    assert clip.has_audio
    assert clip.audio.shape == (2 * SR,)
    assert np.abs(clip.audio).max() <= 1


def test_truncated_video_raises_media_error_naming_the_file(tmp_path):
    whole = colour_clip(tmp_path / "whole.mp4")
    broken = truncated_copy(whole, tmp_path / "broken.mp4")
    with pytest.raises(media.MediaError, match=r"broken\.mp4"):
        media.decode_video(broken)


def test_cut_off_faststart_video_keeps_its_decodable_seconds_with_a_warning(tmp_path):
    frames = [solid_image(frame_colour(i)) for i in range(40)]
    whole = tmp_path / "whole.mp4"
    media.write_video(whole, frames, tone(4, 44_100, 2), 10, 44_100, faststart=True)
    clip = media.decode_video(truncated_copy(whole, tmp_path / "cut.mp4", keep=0.5))
    assert 1 <= clip.num_seconds < 4
    assert [frame_index(f) for f in clip.second_frames] == [
        10 * k + 5 for k in range(clip.num_seconds)
    ]
    assert any("truncated" in warning for warning in clip.warnings)


def test_non_media_file_raises_media_error_naming_the_file(tmp_path):
    path = text_file(tmp_path / "notes.mp4")
    with pytest.raises(media.MediaError, match=r"notes\.mp4: cannot decode"):
        media.decode_video(path)


def test_audio_file_is_not_a_video(tmp_path):
    path = audio_file(tmp_path / "only_sound.wav", tone(1, 8_000)[:, 0], 8_000)
    with pytest.raises(media.MediaError, match="no video stream"):
        media.decode_video(path)


def test_frames_are_downscaled_to_max_side(tmp_path):
    clip = media.decode_video(colour_clip(tmp_path / "clip.mp4"), max_side=32)
    assert clip.middle_frame.shape == (24, 32, 3)
    assert frame_index(clip.middle_frame) == 15


def test_a_last_second_a_little_short_still_counts(tmp_path):
    # 2.95 s of video: the third second misses 50 ms, within LAST_SECOND_TOLERANCE.
    clip = media.decode_video(colour_clip(tmp_path / "short.mp4", seconds=2.95, fps=20))
    assert clip.num_seconds == 3
    assert clip.second_audio(2).shape == (SR,)
    assert abs(dominant_hz(clip.second_audio(2)) - tone_hz(2)) <= 1.0


def test_middle_audio_is_at_most_max_seconds_centred_on_the_middle_frame(tmp_path):
    clip = media.decode_video(colour_clip(tmp_path / "clip.mp4", seconds=3))
    assert clip.middle_audio().shape == (3 * SR,)
    window = clip.middle_audio(max_seconds=1)
    np.testing.assert_array_equal(window, clip.audio[SR // 2 * 2 : SR // 2 * 2 + SR])


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_frames_are_turned_by_the_display_rotation(tmp_path, rotation):
    stored = solid_image((224, 32, 32), size=(64, 48))
    stored[:24, :32] = (32, 224, 32)  # top-left quadrant green
    path = tmp_path / "phone.mp4"
    media.write_video(path, [stored] * 10, None, 10, rotation=rotation)
    shown = media.decode_video(path).middle_frame
    expected = np.rot90(stored, rotation // 90)
    assert shown.shape == expected.shape
    # Compare quadrant centres (H.264 blurs the edges between them).
    height, width = shown.shape[:2]
    for y in (height // 4, 3 * height // 4):
        for x in (width // 4, 3 * width // 4):
            np.testing.assert_allclose(shown[y, x], expected[y, x], atol=12)


def test_write_video_pads_odd_sides_to_even(tmp_path):
    frames = [solid_image(frame_colour(i), size=(33, 21)) for i in range(10)]
    path = tmp_path / "odd.mp4"
    media.write_video(path, frames, None, 10)
    clip = media.decode_video(path)
    assert clip.middle_frame.shape == (22, 34, 3)
    assert frame_index(clip.middle_frame) == 5


# ------------------------------------------------------------------------------------------------
# Audio files


@pytest.mark.parametrize(
    "name,rate,channels",
    [("a.wav", 8_000, 1), ("a.flac", 44_100, 2), ("a.ogg", 48_000, 2), ("a.mp3", 22_050, 2)],
)
def test_audio_files_decode_to_16khz_mono_int16(tmp_path, name, rate, channels):
    path = audio_file(tmp_path / name, tone(2, rate, channels), rate)
    audio = media.load_audio(path)
    assert audio.dtype == np.int16 and audio.ndim == 1
    # Lossy codecs add a few ms of padding; the length stays within 0.1 s.
    assert abs(audio.size - 2 * SR) < 0.1 * SR
    assert abs(dominant_hz(audio[2000 : SR - 2000], SR) - tone_hz(0)) <= 2.0


def test_silent_audio_file_is_kept(tmp_path):
    path = audio_file(tmp_path / "silence.wav", np.zeros(8_000, np.int16), 8_000)
    audio = media.load_audio(path)
    assert audio.shape == (SR,) and not audio.any()


def test_load_audio_stops_at_max_seconds(tmp_path):
    path = audio_file(tmp_path / "long.flac", tone(3, 16_000), 16_000)
    assert media.load_audio(path, max_seconds=1.5).shape == (SR * 3 // 2,)


def test_file_without_audio_stream_raises_media_error(tmp_path):
    path = colour_clip(tmp_path / "mute.mp4", sample_rate=None)
    with pytest.raises(media.MediaError, match=r"mute\.mp4: no audio stream"):
        media.load_audio(path)


def test_non_audio_file_raises_media_error_naming_the_file(tmp_path):
    path = text_file(tmp_path / "fake.wav")
    with pytest.raises(media.MediaError, match=r"fake\.wav"):
        media.load_audio(path)


# ------------------------------------------------------------------------------------------------
# Images


def test_rgba_image_is_composited_on_white(tmp_path):
    rgba = solid_image((200, 40, 10, 255))
    rgba[:, :16, 3] = 0  # transparent
    rgba[:, 16:32, 3] = 128  # half transparent
    loaded = media.load_image(save_image(tmp_path / "cutout.png", rgba))
    np.testing.assert_array_equal(loaded.rgb[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(loaded.rgb[0, 40], [200, 40, 10])
    np.testing.assert_allclose(loaded.rgb[0, 20], [228, 147, 132], atol=1)
    assert any("composited" in r for r in loaded.repairs)


def test_opaque_rgba_image_needs_no_repair(tmp_path):
    loaded = media.load_image(save_image(tmp_path / "opaque.png", solid_image((1, 2, 3, 255))))
    np.testing.assert_array_equal(loaded.rgb[0, 0], [1, 2, 3])
    assert loaded.repairs == []


def test_16_bit_rgb_png_reads_as_8_bit(tmp_path):
    import av

    rgb16 = np.zeros((48, 64, 3), np.uint16)
    rgb16[..., 0], rgb16[..., 1], rgb16[..., 2] = 40_000, 1_000, 65_535
    path = str(tmp_path / "deep.png")
    with av.open(path, "w", format="image2") as container:
        stream = container.add_stream("png", rate=1)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "rgb48be"
        container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb16, format="rgb48le")))
        container.mux(stream.encode(None))
    loaded = media.load_image(path)
    assert loaded.rgb.dtype == np.uint8
    np.testing.assert_allclose(loaded.rgb[0, 0], [156, 4, 255], atol=1)


def test_16_bit_grey_png_is_scaled_not_saturated(tmp_path):
    grey16 = np.full((48, 64), 30_000, np.uint16)
    loaded = media.load_image(save_image(tmp_path / "grey16.png", grey16))
    np.testing.assert_allclose(loaded.rgb[0, 0], [117, 117, 117], atol=1)
    assert media.is_grey(loaded.rgb)
    assert any("16-bit" in r for r in loaded.repairs)


def test_palette_images_become_rgb(tmp_path):
    rgb = colourful_image()
    opaque = Image.fromarray(rgb).quantize(16)
    opaque.save(tmp_path / "palette.png")
    loaded = media.load_image(tmp_path / "palette.png")
    np.testing.assert_array_equal(loaded.rgb, np.asarray(opaque.convert("RGB")))

    transparent = opaque.copy()
    transparent.info["transparency"] = int(np.asarray(opaque)[0, 0])
    transparent.save(tmp_path / "palette_t.png", transparency=int(np.asarray(opaque)[0, 0]))
    loaded = media.load_image(tmp_path / "palette_t.png")
    np.testing.assert_array_equal(loaded.rgb[0, 0], [255, 255, 255])


def test_exif_orientation_is_applied(tmp_path):
    rgb = colourful_image(size=(64, 48))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display turns it 90 degrees clockwise
    Image.fromarray(rgb).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    assert media.load_image(tmp_path / "rotated.jpg").rgb.shape == (64, 48, 3)


@pytest.mark.parametrize("extension", ["png", "jpg", "webp"])
def test_grey_images_are_grey_even_after_lossy_compression(tmp_path, extension):
    grey = colourful_image().mean(axis=-1, keepdims=True).repeat(3, axis=-1).astype(np.uint8)
    path = save_image(tmp_path / f"grey.{extension}", grey, quality=75)
    rgb = media.load_image(path).rgb
    assert media.is_grey(rgb)
    assert "grey image" in media.image_problem(rgb)


def test_colour_images_are_not_grey(tmp_path):
    path = save_image(tmp_path / "colour.jpg", colourful_image(), quality=75)
    rgb = media.load_image(path).rgb
    assert not media.is_grey(rgb)
    assert media.image_problem(rgb, min_side=32) is None


def test_a_small_coloured_spot_leaves_an_image_grey_a_larger_one_does_not():
    rgb = solid_image((90, 90, 90), size=(100, 100))
    rgb[:5, :10] = (200, 30, 30)  # 0.5% of pixels
    assert media.is_grey(rgb)
    rgb[:20, :10] = (200, 30, 30)  # 2% of pixels
    assert not media.is_grey(rgb)


def test_sepia_toned_photo_is_not_grey():
    grey = colourful_image().mean(axis=-1)
    sepia = np.stack([grey * 1.0, grey * 0.85, grey * 0.65], axis=-1).astype(np.uint8)
    assert not media.is_grey(sepia)


def test_tiny_image_is_reported_below_the_minimum_side():
    problem = media.image_problem(colourful_image(size=(40, 20)), min_side=32)
    assert problem == "image is 40x20, below the minimum side of 32 px"


def test_huge_image_is_downscaled_to_max_side(tmp_path):
    big = np.asarray(Image.fromarray(colourful_image()).resize((3000, 2000)))
    for name in ("big.jpg", "big.png"):
        loaded = media.load_image(save_image(tmp_path / name, big), max_side=512)
        assert loaded.rgb.shape == (341, 512, 3)
        # Still the same picture: the gradient's corners keep their colours.
        np.testing.assert_allclose(loaded.rgb[5, 5], big[30, 30], atol=20)


def test_truncated_image_raises_media_error_naming_the_file(tmp_path):
    whole = save_image(tmp_path / "whole.jpg", colourful_image(size=(256, 256)))
    broken = truncated_copy(whole, tmp_path / "broken.jpg", keep=0.4)
    with pytest.raises(media.MediaError, match=r"broken\.jpg: not a readable image"):
        media.load_image(broken)


def test_non_image_file_raises_media_error_naming_the_file(tmp_path):
    with pytest.raises(media.MediaError, match=r"fake\.png: not a readable image"):
        media.load_image(text_file(tmp_path / "fake.png"))


def test_clip_whose_streams_start_late_is_timed_from_its_first_frame(tmp_path):
    import av

    path = colour_clip(tmp_path / "late.ts", sample_rate=44_100, channels=2)
    with av.open(path) as container:
        assert container.streams.video[0].start_time * container.streams.video[0].time_base > 0.1
    clip = media.decode_video(path)
    assert [frame_index(f) for f in clip.second_frames] == [5, 15, 25]
    assert [round(dominant_hz(clip.second_audio(k))) for k in range(3)] == [250, 400, 550]


def test_a_still_picture_over_longer_sound_lasts_as_long_as_the_sound(tmp_path):
    path = tmp_path / "still.mp4"
    media.write_video(path, [solid_image(frame_colour(7))], tone(3, 16_000), 1, 16_000)
    clip = media.decode_video(path)
    assert clip.num_seconds == 3
    assert [frame_index(f) for f in clip.second_frames] == [7, 7, 7]
    assert abs(dominant_hz(clip.second_audio(2)) - tone_hz(2)) <= 1.0


def test_nan_and_infinite_float_audio_is_refused_by_name_and_repaired_in_a_track(tmp_path):
    wave = (0.3 * np.sin(np.arange(16000) / 10)).astype(np.float32)
    wave[100:110], wave[200] = np.nan, np.inf
    path = tmp_path / "nan.wav"
    scipy.io.wavfile.write(path, 22050, wave)
    with pytest.raises(media.MediaError, match="11 of its audio samples are NaN or infinite"):
        media.load_audio(path)
    # In a video's track the bad samples become silence (counted), not full-scale DC.
    track = media._AudioTrack()
    frame = av.AudioFrame.from_ndarray(wave[None], format="flt", layout="mono")
    frame.sample_rate, frame.pts, frame.time_base = 16000, 0, fractions.Fraction(1, 16000)
    track.add(frame)
    samples = track.samples()
    assert track.nonfinite == 11
    assert np.abs(samples.astype(np.int32)).max() < 0.35 * 32768
