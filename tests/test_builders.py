"""The vggsound, ave and folder builders and the build command, on media generated here."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from aiaic_jax.data import build, media
from aiaic_jax.data.builders import builder_class, read_report
from aiaic_jax.data.builders.ave import in_event
from aiaic_jax.data.builders.common import BuildReport
from aiaic_jax.data.builders.vggsound import parse_class_list, read_vggsound_csv
from tests import broken_media
from tests.media_factory import (
    audio_file,
    colour_clip,
    colourful_image,
    dominant_hz,
    frame_index,
    save_image,
    text_file,
    tone,
    tone_hz,
    truncated_copy,
)

SR = media.SAMPLE_RATE


def build_dataset(name: str, manual_dir, data_dir, **options):
    cls = builder_class(name)
    builder = cls(config=cls.BUILDER_CONFIG_CLASS(name="test", **options), data_dir=data_dir)
    report = builder.build(manual_dir)
    return builder.data_dir, report


def read_pairs(dataset_dir) -> dict[str, dict[tuple[str, int], dict]]:
    """split -> (clip_id, second) -> example, read back without TensorFlow."""
    sources = tfds.builder_from_directory(dataset_dir).as_data_source()
    pairs = {}
    for split, source in sources.items():
        examples = [source[i] for i in range(len(source))]
        keyed = {(e["clip_id"].decode(), int(e["second"])): e for e in examples}
        assert len(keyed) == len(examples)
        pairs[split] = keyed
    return pairs


def skipped_reason(report: BuildReport, path_part: str) -> str:
    reasons = [s.reason for s in report.skipped if path_part in s.path]
    assert reasons, f"{path_part} is not in the report: {report.format()}"
    return reasons[0]


# ------------------------------------------------------------------------------------------------
# VGGSound


def make_vggsound_dir(root) -> str:
    video = root / "video"
    video.mkdir(parents=True)
    colour_clip(video / "aaa_000010.mp4", sample_rate=8_000, channels=1)
    colour_clip(video / "bbb_000020.mp4", sample_rate=44_100, channels=2)
    colour_clip(video / "ccc_000030.mp4", sample_rate=None)
    colour_clip(video / "ddd_000000.mp4", sample_rate=48_000, channels=6)
    colour_clip(video / "eee_000005.mp4", sample_rate=22_050, channels=2)
    truncated_copy(video / "aaa_000010.mp4", video / "hhh_000000.mp4")
    text_file(video / "iii_000000.mp4")
    (root / "vggsound.csv").write_text(
        "YouTubeID,start_seconds,label,split\n"
        "aaa,10,dog barking,train\n"
        "bbb,20,dog barking,train\n"
        'ccc,30,"vehicle horn, car horn, honking",train\n'
        "ddd,0,dog barking,test\n"
        "eee,5,lion roaring,test\n"
        "fff,7,lion roaring,train\n"
        "ggg,0,dog barking,train\n"
        "hhh,0,dog barking,train\n"
        "iii,0,dog barking,train\n"
        "jjj,1,cat purring,train\n"
        "kkk,x,dog barking,train\n"
    )
    (root / "ood.txt").write_text("# held-out classes\nlion roaring\n")
    return str(root)


VGGSOUND_OPTIONS = {
    "train_classes": "dog barking,vehicle horn, car horn, honking",
    "ood_classes": "ood.txt",
}


@pytest.fixture(scope="module")
def vggsound(tmp_path_factory):
    manual_dir = make_vggsound_dir(tmp_path_factory.mktemp("vggsound_in"))
    out = tmp_path_factory.mktemp("vggsound_out")
    dataset_dir, report = build_dataset("vggsound", manual_dir, out, **VGGSOUND_OPTIONS)
    return read_pairs(dataset_dir), report


def test_vggsound_splits_train_val_and_ood_by_class_and_csv_split(vggsound):
    pairs, report = vggsound
    assert {split: sorted(p) for split, p in pairs.items()} == {
        "train": [("aaa_000010", -1), ("bbb_000020", -1), ("ccc_000030", -1)],
        "val": [("ddd_000000", -1)],
        "ood": [("eee_000005", -1)],
    }
    assert dict(report.pairs) == {"train": 3, "val": 1, "ood": 1}


def test_vggsound_labels_index_train_classes_then_ood_classes(vggsound):
    pairs, _ = vggsound
    labels = {
        (e["label_name"].decode(), int(e["label"])) for p in pairs.values() for e in p.values()
    }
    assert labels == {
        ("dog barking", 0),
        ("vehicle horn, car horn, honking", 1),
        ("lion roaring", 2),
    }


def test_vggsound_pair_is_the_middle_frame_with_the_whole_clips_audio(vggsound):
    pairs, _ = vggsound
    for key in [("aaa_000010", -1), ("bbb_000020", -1)]:
        example = pairs["train"][key]
        assert frame_index(example["image"]) == 15  # 1.5 s at 10 fps
        assert example["image"].shape == (48, 64, 3)
        audio = example["audio"]
        assert audio.dtype == np.int16 and audio.shape == (3 * SR,)
        assert [round(dominant_hz(audio[k * SR : (k + 1) * SR])) for k in range(3)] == [
            round(tone_hz(k)) for k in range(3)
        ]
        assert example["has_audio"] and example["relevant"]


def test_vggsound_clip_without_audio_gives_has_audio_false(vggsound):
    pairs, report = vggsound
    example = pairs["train"][("ccc_000030", -1)]
    assert not example["has_audio"] and not example["relevant"]
    assert example["audio"].size == 0
    assert any("ccc_000030.mp4: no audio stream" in note for note in report.notes)


def test_vggsound_report_names_each_skipped_file_with_its_reason(vggsound):
    _, report = vggsound
    assert skipped_reason(report, "ggg_000000.mp4") == "clip file not found"
    assert skipped_reason(report, "hhh_000000.mp4").startswith("cannot decode")
    assert skipped_reason(report, "iii_000000.mp4").startswith("cannot decode")
    assert "not a number" in skipped_reason(report, "vggsound.csv:12")
    assert len(report.skipped) == 4
    # Rows of classes in neither list are not used, and not counted as skipped.
    assert any("classes outside the train and ood class lists" in n for n in report.notes)


def test_vggsound_csv_without_header_reads_every_row(tmp_path):
    path = tmp_path / "vggsound.csv"
    path.write_text(
        '---g-f_I2yQ,1,"people marching",test\n--0PQM4-hqg,30,waterfall burbling,train\n'
    )
    rows = read_vggsound_csv(str(path), BuildReport("x"))
    assert [(r.youtube_id, r.start, r.label_name, r.csv_split) for r in rows] == [
        ("---g-f_I2yQ", 1, "people marching", "test"),
        ("--0PQM4-hqg", 30, "waterfall burbling", "train"),
    ]
    assert rows[0].clip_id == "---g-f_I2yQ_000001"


def test_class_lists_rejoin_names_that_contain_commas(tmp_path):
    known = {"vehicle horn, car horn, honking", "dog barking", "a", "b"}
    assert parse_class_list("dog barking, vehicle horn, car horn, honking,a", known) == [
        "dog barking",
        "vehicle horn, car horn, honking",
        "a",
    ]
    (tmp_path / "classes.txt").write_text("a\n\n# comment\nvehicle horn, car horn, honking\n")
    assert parse_class_list("classes.txt", known, (str(tmp_path),)) == [
        "a",
        "vehicle horn, car horn, honking",
    ]


def test_vggsound_class_in_both_lists_is_an_error(tmp_path):
    manual_dir = make_vggsound_dir(tmp_path / "in")
    with pytest.raises(ValueError, match="both train and ood"):
        build_dataset(
            "vggsound", manual_dir, tmp_path / "out", train_classes="dog barking",
            ood_classes="dog barking",
        )  # fmt: skip


def test_vggsound_clip_pattern_with_unknown_fields_is_an_error(tmp_path):
    manual_dir = make_vggsound_dir(tmp_path / "in")
    with pytest.raises(ValueError, match="clip_pattern"):
        build_dataset("vggsound", manual_dir, tmp_path / "out", clip_pattern="{ytid}.mp4")


# ------------------------------------------------------------------------------------------------
# AVE

AVE_TRAIN = """Church bell&vidA&good&2&5
Church bell&VWi2ENBuTbw&good&0&0
Dog bark&vidB&good&0&3
Dog bark&vidB&good&7&9
Dog bark&broken line
Dog bark&vidC&good&x&y
"""
AVE_VAL = "Dog bark&vidD&good&1&10\n"
AVE_TEST = "Church bell&vidE&good&0&10\nChurch bell&vidF&good&0&10\nDog bark&vidG&good&4&6\n"


def make_ave_dir(root) -> str:
    videos = root / "AVE"
    videos.mkdir(parents=True)
    for video_id in ("vidA", "VWi2ENBuTbw", "vidB", "vidC", "vidG"):
        # 2 fps: the frame shown at k + 0.5 s is frame 2k + 1.
        colour_clip(videos / f"{video_id}.mp4", seconds=10, fps=2, sample_rate=8_000)
    colour_clip(videos / "vidD.mp4", seconds=10, fps=2, sample_rate=None)
    truncated_copy(videos / "vidA.mp4", videos / "vidE.mp4")
    lines = AVE_TRAIN + AVE_VAL + AVE_TEST
    (root / "Annotations.txt").write_text("Category&VideoID&Quality&StartTime&EndTime\n" + lines)
    (root / "trainSet.txt").write_text(AVE_TRAIN)
    (root / "valSet.txt").write_text(AVE_VAL)
    (root / "testSet.txt").write_text(AVE_TEST)
    return str(root)


@pytest.fixture(scope="module")
def ave(tmp_path_factory):
    manual_dir = make_ave_dir(tmp_path_factory.mktemp("ave_in"))
    dataset_dir, report = build_dataset("ave", manual_dir, tmp_path_factory.mktemp("ave_out"))
    return read_pairs(dataset_dir), report


def test_ave_gives_ten_one_second_pairs_per_video(ave):
    pairs, report = ave
    assert dict(report.pairs) == {"train": 40, "val": 10, "test": 10}
    videos = {split: sorted({clip for clip, _ in p}) for split, p in pairs.items()}
    assert videos == {
        "train": ["VWi2ENBuTbw", "vidA", "vidB", "vidC"],
        "val": ["vidD"],
        "test": ["vidG"],
    }
    assert sorted(second for clip, second in pairs["test"]) == list(range(10))


def test_ave_pair_is_the_seconds_middle_frame_with_that_seconds_audio(ave):
    pairs, _ = ave
    for second in range(10):
        example = pairs["train"][("vidA", second)]
        assert frame_index(example["image"]) == 2 * second + 1
        assert example["audio"].shape == (SR,)
        assert abs(dominant_hz(example["audio"]) - tone_hz(second)) <= 1.0


def test_ave_relevance_follows_the_annotated_events(ave):
    pairs, _ = ave

    def relevant_seconds(split, video):
        return [s for s in range(10) if pairs[split][(video, s)]["relevant"]]

    assert relevant_seconds("train", "vidA") == [2, 3, 4]
    assert relevant_seconds("train", "vidB") == [0, 1, 2, 7, 8]  # two lines, two events
    assert relevant_seconds("test", "vidG") == [4, 5]


def test_ave_defective_times_keep_the_video_with_no_event(ave):
    pairs, report = ave
    for video in ("VWi2ENBuTbw", "vidC"):
        assert not any(pairs["train"][(video, s)]["relevant"] for s in range(10))
    assert any("trainSet.txt:2" in n and "mark no event" in n for n in report.notes)
    assert any("trainSet.txt:6" in n and "mark no event" in n for n in report.notes)


def test_ave_video_without_audio_is_never_relevant(ave):
    pairs, _ = ave
    examples = [pairs["val"][("vidD", s)] for s in range(10)]
    assert not any(e["has_audio"] or e["relevant"] for e in examples)


def test_ave_report_names_skipped_lines_and_videos(ave):
    _, report = ave
    assert "expected 5 &-separated fields" in skipped_reason(report, "trainSet.txt:5")
    assert skipped_reason(report, "vidE.mp4").startswith("cannot decode")
    assert skipped_reason(report, "vidF.mp4").startswith("video file not found")
    assert len(report.skipped) == 3


def test_ave_labels_index_sorted_categories(ave):
    pairs, _ = ave
    labels = {(e["label_name"].decode(), int(e["label"])) for e in pairs["train"].values()}
    assert labels == {("Church bell", 0), ("Dog bark", 1)}


def test_in_event_uses_the_middle_of_the_second():
    assert [in_event(s, [(2, 5)]) for s in range(6)] == [False, False, True, True, True, False]
    assert [in_event(s, [(1.6, 2.4)]) for s in range(3)] == [False, False, False]
    assert [in_event(s, [(1.4, 2.6)]) for s in range(3)] == [False, True, True]


# ------------------------------------------------------------------------------------------------
# Folder


def make_folder_dir(root) -> str:
    dogs, cats, val = root / "train" / "dogs", root / "train" / "cats", root / "val"
    for directory in (dogs, cats, val):
        directory.mkdir(parents=True)
    rgba = np.concatenate([colourful_image(), np.full((48, 64, 1), 255, np.uint8)], axis=-1)
    rgba[:10, :10, 3] = 0
    save_image(dogs / "a.png", rgba)
    audio_file(dogs / "a.wav", tone(2, 44_100, 2), 44_100)
    save_image(dogs / "b.jpg", colourful_image(seed=1), quality=90)
    audio_file(dogs / "b.mp3", tone(2, 22_050, 1), 22_050)
    grey = colourful_image().mean(axis=-1, keepdims=True).repeat(3, -1).astype(np.uint8)
    save_image(dogs / "grey.jpg", grey)
    audio_file(dogs / "grey.wav", tone(1, 8_000, 1), 8_000)
    save_image(dogs / "tiny.png", colourful_image(size=(40, 20)))
    audio_file(dogs / "tiny.flac", tone(1, 8_000, 1), 8_000)
    save_image(dogs / "lonely.png", colourful_image(seed=2))
    audio_file(dogs / "orphan.ogg", tone(1, 48_000, 2), 48_000)
    colour_clip(dogs / "clip.mp4", sample_rate=16_000)
    save_image(cats / "c.webp", colourful_image(seed=3), lossless=True)
    audio_file(cats / "c.flac", tone(1, 48_000, 2), 48_000)
    save_image(cats / "dup.png", colourful_image(seed=4))
    save_image(cats / "dup.jpg", colourful_image(seed=4))
    audio_file(cats / "dup.wav", np.zeros(8_000, np.int16), 8_000)  # silence is valid audio
    text_file(cats / "notes.txt")
    os.mkfifo(cats / "pipe.png")  # opened, it would block the build forever
    save_image(val / "d.png", colourful_image(seed=5))
    audio_file(val / "d.wav", tone(1, 16_000, 1), 16_000)
    truncated_copy(dogs / "clip.mp4", val / "broken.mp4")
    save_image(root / "stray.png", colourful_image())
    return str(root)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    manual_dir = make_folder_dir(tmp_path_factory.mktemp("folder_in"))
    out = tmp_path_factory.mktemp("folder_out")
    dataset_dir, report = build_dataset("folder", manual_dir, out, per_second=True)
    return read_pairs(dataset_dir), report


def test_folder_pairs_images_with_audio_by_basename_and_videos(folder):
    pairs, _ = folder
    assert sorted(pairs["train"]) == [
        ("cats/c.webp", -1),
        ("cats/dup.jpg", -1),
        ("dogs/a.png", -1),
        ("dogs/b.jpg", -1),
        ("dogs/clip.mp4", -1),
        ("dogs/clip.mp4", 0),
        ("dogs/clip.mp4", 1),
        ("dogs/clip.mp4", 2),
        ("dogs/lonely.png", -1),
    ]
    assert sorted(pairs["val"]) == [("d.png", -1)]


def test_folder_labels_are_class_directories(folder):
    pairs, _ = folder
    assert pairs["train"][("cats/c.webp", -1)]["label"] == 0
    assert pairs["train"][("dogs/a.png", -1)]["label_name"] == b"dogs"
    assert pairs["train"][("dogs/a.png", -1)]["label"] == 1
    assert pairs["val"][("d.png", -1)]["label"] == -1


def test_folder_image_pair_holds_its_picture_and_sound(folder):
    pairs, report = folder
    example = pairs["train"][("dogs/a.png", -1)]
    expected = colourful_image()
    np.testing.assert_array_equal(example["image"][20:], expected[20:])  # PNG: lossless
    np.testing.assert_array_equal(example["image"][0, 0], [255, 255, 255])  # was transparent
    assert any("a.png: transparent pixels composited" in n for n in report.notes)
    assert example["audio"].shape == (2 * SR,) and example["has_audio"] and example["relevant"]
    assert abs(dominant_hz(example["audio"][:SR]) - tone_hz(0)) <= 1.0
    silent = pairs["train"][("cats/dup.jpg", -1)]
    assert silent["has_audio"] and not silent["audio"].any()


def test_folder_image_without_audio_is_kept_without_audio(folder):
    pairs, _ = folder
    example = pairs["train"][("dogs/lonely.png", -1)]
    assert not example["has_audio"] and example["audio"].size == 0


def test_folder_video_gives_middle_and_per_second_pairs(folder):
    pairs, _ = folder
    assert frame_index(pairs["train"][("dogs/clip.mp4", -1)]["image"]) == 15
    for second in range(3):
        example = pairs["train"][("dogs/clip.mp4", second)]
        assert frame_index(example["image"]) == 10 * second + 5
        assert abs(dominant_hz(example["audio"]) - tone_hz(second)) <= 1.0


def test_folder_report_names_each_skipped_file(folder):
    _, report = folder
    assert "grey image" in skipped_reason(report, "grey.jpg")
    assert "below the minimum side" in skipped_reason(report, "tiny.png")
    assert skipped_reason(report, "orphan.ogg") == "no image with the same basename"
    assert "another image has the same basename" in skipped_reason(report, "dup.png")
    assert "not an image, audio or video" in skipped_reason(report, "notes.txt")
    assert skipped_reason(report, "broken.mp4").startswith("cannot decode")
    assert "outside the split directories" in skipped_reason(report, "stray.png")
    assert skipped_reason(report, "pipe.png").startswith("not a regular file")
    assert len(report.skipped) == 8


def test_every_file_of_a_corpus_of_broken_media_is_stored_or_skipped_by_name(tmp_path):
    root = str(tmp_path / "corpus")
    entries = broken_media.write_corpus(root)
    dataset_dir, report = build_dataset("folder", root, tmp_path / "out")
    stored = {
        clip_id: bool(example["has_audio"])
        for (clip_id, second), example in read_pairs(dataset_dir)["train"].items()
        if second == -1
    }
    skipped = [(s.path, s.reason) for s in report.skipped]
    differences = broken_media.judge_build(entries, root, stored, skipped, report.notes)
    assert not differences, "\n".join(map(str, differences))
    # Images stored without sound are counted once each, after decoding (not before).
    without_sound = [
        e for e in entries
        if media.IMAGE_EXTENSIONS.count(os.path.splitext(e.path)[1]) and e.builder.used
        and e.builder.has_audio is False
    ]  # fmt: skip
    assert sum(report.tallies.values()) == len(without_sound) == 7


def test_folder_without_split_directories_is_one_split(tmp_path):
    (tmp_path / "in").mkdir()
    save_image(tmp_path / "in" / "x.png", colourful_image())
    audio_file(tmp_path / "in" / "x.wav", tone(1, 16_000), 16_000)
    dataset_dir, report = build_dataset("folder", tmp_path / "in", tmp_path / "out")
    assert dict(report.pairs) == {"train": 1}
    assert list(read_pairs(dataset_dir)["train"]) == [("x.png", -1)]


def test_stored_images_follow_image_format(tmp_path):
    from aiaic_jax.data.builders.media_pairs import MediaPairConfig, stored_format

    auto = MediaPairConfig(name="x")
    assert stored_format(auto, lossy_source=True) == "jpeg"
    assert stored_format(auto, lossy_source=False) == "png"
    png = dataclasses.replace(auto, image_format="png")
    assert stored_format(png, lossy_source=True) == "png"


def test_every_key_is_clip_id_and_second(folder, ave):
    for pairs, _ in (folder, ave):
        for split_pairs in pairs.values():
            for (clip_id, second), example in split_pairs.items():
                assert example["clip_id"].decode() == clip_id and example["second"] == second


# ------------------------------------------------------------------------------------------------
# The build command


def run_build(capsys, *argv) -> tuple[int, list[str], str]:
    status = build.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out.strip().splitlines(), captured.err


def test_build_command_prints_the_report_last(tmp_path, capsys):
    manual_dir = make_vggsound_dir(tmp_path / "in")
    status, out, _ = run_build(
        capsys, "vggsound", "--data_dir", tmp_path / "out", "--manual_dir", manual_dir,
        "--ood_classes", "lion roaring", "--num_workers", "1", "--no-skip_grey",
    )  # fmt: skip
    assert status == 0
    # vehicle horn and cat purring are train classes now (every class not in ood_classes).
    assert out[-1] == "pairs=5 skipped=5"
    assert any("ggg_000000.mp4: clip file not found" in line for line in out)
    assert os.path.isdir(tmp_path / "out" / "vggsound" / "default" / "1.0.0")
    assert read_report(tmp_path / "out" / "vggsound" / "default" / "1.0.0").total_pairs == 5

    # A second run finds the dataset built and prints the same report.
    status, again, _ = run_build(
        capsys, "vggsound", "--data_dir", tmp_path / "out", "--manual_dir", manual_dir
    )
    assert status == 0 and again[-1] == "pairs=5 skipped=5"
    assert "already built" in again[0]


def test_build_command_fails_clearly_without_manual_dir(tmp_path, capsys):
    status, _, err = run_build(capsys, "ave", "--data_dir", tmp_path / "out")
    assert status == 2
    assert "ave needs --manual_dir" in err


def test_build_command_fails_clearly_without_annotation_files(tmp_path, capsys):
    manual_dir = make_ave_dir(tmp_path / "in")
    os.remove(os.path.join(manual_dir, "testSet.txt"))
    status, _, err = run_build(
        capsys, "ave", "--data_dir", tmp_path / "out", "--manual_dir", manual_dir
    )
    assert status == 2
    assert "testSet.txt not found" in err
    (tmp_path / "empty").mkdir()
    status, _, err = run_build(
        capsys, "vggsound", "--data_dir", tmp_path / "out", "--manual_dir", tmp_path / "empty"
    )
    assert status == 2 and "vggsound.csv not found" in err


def test_build_command_help_lists_every_builders_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--clip_pattern", "--ood_classes", "--seconds_per_video", "--per_second"):
        assert flag in text
    with pytest.raises(SystemExit):
        build.main(["ave", "--help"])
    text = capsys.readouterr().out
    assert "--videos_dir" in text and "--jpeg_quality" in text


@dataclasses.dataclass(eq=False)
class _ExampleConfig(tfds.core.BuilderConfig):
    flag: bool = True
    sizes: tuple[int, ...] = (1, 2)
    names: list[str] = dataclasses.field(default_factory=list)
    rate: float = 0.5


@pytest.mark.parametrize(
    "argv,expected",
    [
        ([], {}),
        (["--flag=false"], {"flag": False}),
        (["--no-flag"], {"flag": False}),
        (["--flag"], {"flag": True}),
        (["--sizes", "3,4,5"], {"sizes": (3, 4, 5)}),
        (["--names", "a,b"], {"names": ["a", "b"]}),
        (["--rate", "2"], {"rate": 2.0}),
    ],
)
def test_options_come_from_the_config_fields(argv, expected):
    import argparse

    parser = argparse.ArgumentParser()
    build.add_options(parser, _ExampleConfig)
    assert vars(parser.parse_args(argv)) == expected


def test_a_split_whose_every_input_is_skipped_is_left_out_and_the_rest_is_built(tmp_path, capsys):
    manual_dir = make_vggsound_dir(tmp_path / "in")
    text_file(os.path.join(manual_dir, "video", "ddd_000000.mp4"))  # the only val clip
    status, out, _ = run_build(
        capsys, "vggsound", "--data_dir", tmp_path / "out", "--manual_dir", manual_dir,
        "--ood_classes", "lion roaring", "--no-skip_grey",
    )  # fmt: skip
    assert status == 0
    assert "split val: every input was skipped, split left out" in "\n".join(out)
    assert any("ddd_000000.mp4: cannot decode" in line for line in out)
    assert not any(line.startswith("  val: ") for line in out)  # no pair count for val
    data = tfds.data_source("vggsound/default", data_dir=str(tmp_path / "out"))
    assert sorted(data) == ["ood", "train"]
    assert len(data["train"]) > 0


def test_build_command_fails_when_no_split_has_a_usable_pair(tmp_path, capsys):
    manual_dir = tmp_path / "in"
    for split in ("train", "val"):
        (manual_dir / split).mkdir(parents=True)
        text_file(manual_dir / split / "a.png")
    status, out, err = run_build(
        capsys, "folder", "--data_dir", tmp_path / "out", "--manual_dir", manual_dir
    )
    assert status == 1
    assert "no split has a usable pair" in err
    assert sum("a.png: " in line for line in out) == 2
    assert not (tmp_path / "out" / "folder").exists() or not any(
        (tmp_path / "out" / "folder").rglob("*.array_record*")
    )
