"""`aiaic colorize` on images, images with sound, folders and videos, with a tiny model."""

import os

import av
import numpy as np
import pytest
from PIL import Image

from aiaic_jax import cli, color
from aiaic_jax.convert.common import save_variables
from aiaic_jax.data import media
from aiaic_jax.models.aiaic import build_model
from aiaic_jax.train import loop
from tests import broken_media, media_factory, tiny_model
from tests.tiny_training import IMAGE_SIZE, build_data, tiny_config


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A real tiny training run: stage 2 (one step, the quickest to compile) on the tiny
    synthetic world, from random variables; its final holds the whole model like any stage's.
    The command gets the stage directory and reads the config.json training wrote."""
    data_dir = build_data(tmp_path_factory.mktemp("data"))
    workdir = tmp_path_factory.mktemp("run")
    config = tiny_config(data_dir, steps=1)
    start = tiny_model.random_variables(build_model(config.model), IMAGE_SIZE, seed=0)
    config.init_from = str(save_variables(workdir / "start", start))
    loop.run(config, str(workdir), "2")
    return str(workdir / "stage2")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A 50x40 photo, its sound (x.wav beside x.png) and a copy without sound."""
    folder = tmp_path_factory.mktemp("scene")
    image = media_factory.colourful_image((50, 40), seed=3)
    media_factory.save_image(folder / "x.png", image)
    media_factory.save_image(folder / "quiet.png", image)
    media_factory.audio_file(folder / "x.wav", media_factory.tone(0.5, 22050)[:, 0], 22050)
    return folder


def _colorize(capsys, *args):
    status = cli.main(["colorize", *map(str, args)])
    out, err = capsys.readouterr()
    return status, out, err


def _read(path):
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_image_without_sound_is_colorized_at_its_size_by_the_backbone_alone(
    checkpoint, scene, tmp_path, capsys
):
    status, out, _ = _colorize(
        capsys, "--checkpoint", checkpoint, scene / "quiet.png", tmp_path / "q.png"
    )
    assert status == 0
    assert "no audio: r = 0" in out
    result = _read(tmp_path / "q.png")
    assert result.shape == (40, 50, 3)
    # The output keeps the input's own full-resolution L (up to rounding and gamut clipping).
    source_l = np.asarray(color.rgb_to_lab(_read(scene / "quiet.png") / 255.0))[..., 0]
    result_l = np.asarray(color.rgb_to_lab(result / 255.0))[..., 0]
    assert np.median(np.abs(source_l - result_l)) < 1.0
    assert media.is_grey(result) is False  # it has colour


def test_image_with_a_same_basename_wav_is_guided_by_it(checkpoint, scene, tmp_path, capsys):
    status, out, _ = _colorize(
        capsys, "--checkpoint", checkpoint, scene / "x.png", tmp_path / "x.png"
    )
    assert status == 0
    assert "r = 0." in out and "no audio" not in out  # r from RNet
    # The same sound given with --audio colorizes the silent copy the same way.
    status, _, _ = _colorize(
        capsys,
        "--checkpoint",
        checkpoint,
        "--audio",
        scene / "x.wav",
        scene / "quiet.png",
        tmp_path / "q_audio.png",
    )
    assert status == 0
    np.testing.assert_array_equal(_read(tmp_path / "x.png"), _read(tmp_path / "q_audio.png"))
    _colorize(capsys, "--checkpoint", checkpoint, scene / "quiet.png", tmp_path / "q.png")
    assert not np.array_equal(_read(tmp_path / "x.png"), _read(tmp_path / "q.png"))


def test_mode_zero_ignores_the_sound(checkpoint, scene, tmp_path, capsys):
    _colorize(
        capsys, "--checkpoint", checkpoint, "--mode", "0", scene / "x.png", tmp_path / "0.png"
    )
    _colorize(capsys, "--checkpoint", checkpoint, scene / "quiet.png", tmp_path / "q.png")
    np.testing.assert_array_equal(_read(tmp_path / "0.png"), _read(tmp_path / "q.png"))


def test_folder_skips_bad_files_with_a_message_and_colorizes_the_rest(checkpoint, tmp_path, capsys):
    source = tmp_path / "in"
    (source / "sub").mkdir(parents=True)
    media_factory.save_image(source / "a.png", media_factory.colourful_image((64, 32), seed=1))
    media_factory.audio_file(source / "a.wav", media_factory.tone(1.0, 16000)[:, 0], 16000)
    media_factory.save_image(source / "sub" / "b.jpg", media_factory.colourful_image((33, 47)))
    media_factory.text_file(source / "broken.png")
    media_factory.text_file(source / "notes.txt")
    media_factory.colour_clip(source / "clip.ts", seconds=1, fps=5, size=(40, 32))
    status, out, err = _colorize(capsys, "--checkpoint", checkpoint, source, tmp_path / "out")
    assert status == 1
    assert f"{source / 'broken.png'}: not a readable image" in err
    assert f"skipped {source / 'notes.txt'}" in out
    assert _read(tmp_path / "out" / "a.png").shape == (32, 64, 3)
    assert _read(tmp_path / "out" / "sub" / "b.jpg").shape == (47, 33, 3)
    assert not (tmp_path / "out" / "broken.png").exists()
    assert (tmp_path / "out" / "clip.ts.mp4").exists()  # a .ts output becomes an MP4


def test_video_keeps_every_frame_its_size_and_its_sound(checkpoint, tmp_path, capsys):
    source = media_factory.colour_clip(
        tmp_path / "film.mp4", seconds=2, fps=10, size=(64, 48), sample_rate=44100, channels=2
    )
    status, out, _ = _colorize(
        capsys, "--checkpoint", checkpoint, "--batch_size", "8", source, tmp_path / "colour.mp4"
    )
    assert status == 0, out
    assert "20 frames" in out and "r mean" in out
    with av.open(str(tmp_path / "colour.mp4")) as container:
        video = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video)]
    with av.open(str(tmp_path / "colour.mp4")) as container:
        (sound,) = container.streams.audio
        assert sound.codec_context.name == "aac"
        assert sound.codec_context.sample_rate == 44100 and sound.codec_context.channels == 2
        samples = sum(frame.samples for frame in container.decode(sound))
    assert len(frames) == 20
    assert frames[0].shape == (48, 64, 3)
    assert abs(samples / 44100 - 2.0) < 0.1
    # The original sound is kept: its second half still holds the tone of second 1.
    kept = media.load_audio(tmp_path / "colour.mp4")
    assert abs(media_factory.dominant_hz(kept[20000:32000]) - media_factory.tone_hz(1)) < 5


def test_an_interrupted_write_leaves_no_output_and_never_replaces_a_complete_one(tmp_path):
    """Outputs (`save_image`, and films through the same `written_whole`) are written under a
    temporary name and renamed when complete: a write that breaks off (here: raises after
    writing part of the file) leaves nothing under the output's name, so a rerun is not skipped
    as done, and an existing output is only replaced by a complete one."""
    output = tmp_path / "out" / "colour.mp4"
    output.parent.mkdir()

    def interrupted():
        with cli.written_whole(str(output)) as temporary:
            assert os.path.dirname(temporary) == str(output.parent)
            assert temporary.endswith(".mp4")  # the format follows the extension
            with open(temporary, "wb") as f:
                f.write(b"\x00" * 1000)  # a truncated file, as a kill mid-encoding leaves
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        interrupted()
    assert os.listdir(output.parent) == []

    with cli.written_whole(str(output)) as temporary:
        with open(temporary, "wb") as f:
            f.write(b"complete")
    assert output.read_bytes() == b"complete"
    with pytest.raises(OSError, match="disk full"):
        interrupted()
    assert output.read_bytes() == b"complete" and os.listdir(output.parent) == ["colour.mp4"]

    image = tmp_path / "out" / "image.jpg"
    cli.save_image(str(image), np.full((8, 8, 3), 128, np.uint8))
    assert _read(image).shape == (8, 8, 3)
    assert sorted(os.listdir(output.parent)) == ["colour.mp4", "image.jpg"]


def test_help_describes_the_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    assert "colorize" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["colorize", "--help"])
    text = capsys.readouterr().out
    for fact in ("--checkpoint", "--audio", "--mode", "auto", "same basename", "bilinear", "own"):
        assert fact in text, fact


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["missing.png", "out.png"], "missing.png: no such file or folder"),
        (["{scene}/x.wav", "out.png"], "not an image"),
        (["{scene}/x.png", "out.mp4"], "the output of an image is an image file"),
        (["--audio", "none.wav", "{scene}/x.png", "out.png"], "none.wav: no such audio file"),
    ],
)
def test_wrong_command_lines_are_named(checkpoint, scene, tmp_path, capsys, arguments, message):
    arguments = [a.replace("{scene}", str(scene)) for a in arguments]
    status, _, err = _colorize(capsys, "--checkpoint", checkpoint, *arguments)
    assert status == 2
    assert message in err


def test_missing_checkpoint_and_unreadable_image_are_named(checkpoint, scene, tmp_path, capsys):
    config = os.path.join(checkpoint, "config.json")
    status, _, err = _colorize(
        capsys, "--checkpoint", tmp_path / "nothing", "--config", config, scene / "x.png", "o.png"
    )
    assert status == 2 and f"{tmp_path / 'nothing'}: no such run, stage or checkpoint" in err
    bad = media_factory.text_file(tmp_path / "bad.jpg")
    status, _, err = _colorize(capsys, "--checkpoint", checkpoint, bad, tmp_path / "o.png")
    assert status == 1 and f"{bad}: not a readable image" in err
    assert not (tmp_path / "o.png").exists()


def test_config_overrides_apply_to_the_runs_config_and_unknown_fields_are_named(
    checkpoint, scene, tmp_path, capsys
):
    status, _, err = _colorize(
        capsys, "--checkpoint", checkpoint, "--config.data.nope=1", scene / "x.png", "o.png"
    )
    assert status == 2 and "nope" in err
    status, out, _ = _colorize(
        capsys,
        "--checkpoint",
        checkpoint,
        "--config.data.audio_seconds=0.25",
        scene / "x.png",
        tmp_path / "short.png",
    )
    assert status == 0, out
    status, _, _ = _colorize(
        capsys, "--checkpoint", checkpoint, scene / "x.png", tmp_path / "x.png"
    )
    # The model hears a quarter second instead of half: another code, other colours.
    assert not np.array_equal(_read(tmp_path / "short.png"), _read(tmp_path / "x.png"))


def test_squash_resize_is_available_and_differs_from_the_default_on_a_wide_image(
    checkpoint, tmp_path, capsys
):
    wide = media_factory.save_image(
        tmp_path / "wide.png", media_factory.colourful_image((160, 90), seed=5)
    )
    for resize in ("pad", "squash"):
        status, _, _ = _colorize(
            capsys, "--checkpoint", checkpoint, "--resize", resize, wide, tmp_path / f"{resize}.png"
        )
        assert status == 0
        assert _read(tmp_path / f"{resize}.png").shape == (90, 160, 3)
    assert not np.array_equal(_read(tmp_path / "pad.png"), _read(tmp_path / "squash.png"))


def test_outputs_never_collide_and_are_not_replaced_without_overwrite(checkpoint, tmp_path, capsys):
    source = tmp_path / "in"
    source.mkdir()
    media_factory.colour_clip(source / "x.ts", seconds=1, fps=4, size=(32, 24))
    media_factory.colour_clip(source / "x.mp4", seconds=1, fps=4, size=(32, 24))
    media_factory.save_image(source / "a.png", media_factory.colourful_image((40, 30), seed=1))
    status, out, _ = _colorize(capsys, "--checkpoint", checkpoint, source, tmp_path / "out")
    assert status == 0, out
    assert (tmp_path / "out" / "x.ts.mp4").exists() and (tmp_path / "out" / "x.mp4").exists()
    before = (tmp_path / "out" / "a.png").stat().st_mtime_ns
    status, _, err = _colorize(capsys, "--checkpoint", checkpoint, source, tmp_path / "out")
    assert status == 1 and "exists; not replaced (--overwrite replaces it)" in err
    assert (tmp_path / "out" / "a.png").stat().st_mtime_ns == before
    status, _, _ = _colorize(
        capsys, "--checkpoint", checkpoint, "--overwrite", source / "a.png", tmp_path / "out/a.png"
    )
    assert status == 0


def test_an_output_folder_that_cannot_be_made_is_named_before_the_model_loads(
    checkpoint, scene, tmp_path, capsys
):
    blocker = media_factory.text_file(tmp_path / "file")
    status, _, err = _colorize(
        capsys, "--checkpoint", checkpoint, scene / "x.png", tmp_path / "file" / "sub" / "o.png"
    )
    assert status == 2 and "cannot create the output folder" in err and blocker in err


def test_a_named_pipe_is_skipped_with_its_reason_instead_of_blocking(checkpoint, tmp_path, capsys):
    source = tmp_path / "in"
    source.mkdir()
    os.mkfifo(source / "pipe.png")
    media_factory.save_image(source / "a.png", media_factory.colourful_image((40, 30), seed=1))
    status, _, err = _colorize(capsys, "--checkpoint", checkpoint, source, tmp_path / "out")
    assert status == 1 and f"{source / 'pipe.png'}: not a regular file" in err
    assert (tmp_path / "out" / "a.png").exists()
    status, _, err = _colorize(
        capsys, "--checkpoint", checkpoint, source / "pipe.png", tmp_path / "p.png"
    )
    assert status == 2 and "not a regular file" in err


def test_every_file_of_a_corpus_of_broken_media_is_colorized_or_skipped_by_name(
    checkpoint, tmp_path, capsys
):
    root = str(tmp_path / "corpus")
    entries = broken_media.write_corpus(root)
    output = str(tmp_path / "out")
    status, out, err = _colorize(capsys, "--checkpoint", checkpoint, root, output)
    assert status == 1  # some files could not be used, and are listed
    differences = broken_media.judge_colorize(entries, root, output, out + err)
    assert not differences, "\n".join(map(str, differences))
