"""The synthetic world: grayscale hides the class, audio tells it, the scene links the two."""

import dataclasses
import filecmp
import itertools
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from scipy import signal
from skimage import color
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from aiaic_jax.data.builders import builder_class, read_report
from aiaic_jax.data.builders import synthetic as world
from aiaic_jax.data.builders.synthetic import Synthetic, SyntheticConfig

PROBE_OPTIONS = dict(
    image_size=32, train_pairs=600, val_pairs=300, ave_like_videos=12, ood_pairs=64, seed=3
)
TINY_OPTIONS = dict(
    image_size=16, audio_seconds=0.25, train_pairs=6, val_pairs=3, ave_like_videos=3, ood_pairs=3
)


def _build(data_dir, name="default", **options):
    builder = Synthetic(data_dir=os.fspath(data_dir), config=SyntheticConfig(name=name, **options))
    builder.build()
    return builder


@pytest.fixture(scope="module")
def probe_world(tmp_path_factory):
    """A small built dataset, every split decoded: (config, dataset dir, records by split)."""
    builder = _build(tmp_path_factory.mktemp("data"), name="probe", **PROBE_OPTIONS)
    sources = tfds.builder_from_directory(builder.data_dir).as_data_source()
    records = {split: [sources[split][i] for i in range(len(sources[split]))] for split in sources}
    return builder.builder_config, os.fspath(builder.data_dir), records


def _video(record) -> int:
    return int(record["clip_id"].decode().rsplit("_", 1)[1])


def _scene(config, split, record) -> int:
    return world.clip_latents(config, split, _video(record)).scene


def _lightness_statistics(record) -> np.ndarray:
    gray_l = color.rgb2lab(record["image"])[..., 0]
    histogram = np.histogram(gray_l, bins=16, range=(0, 100))[0] / gray_l.size
    percentiles = np.percentile(gray_l, [5, 25, 50, 75, 95])
    return np.concatenate([histogram, [gray_l.mean(), gray_l.std()], percentiles])


def _lightness_orientation_energy(record) -> np.ndarray:
    """Share of L's spectral energy per orientation (4) and radius (3 bands, cycles/image)."""
    gray_l = color.rgb2lab(record["image"])[..., 0]
    power = np.abs(np.fft.fft2(gray_l - gray_l.mean())) ** 2
    size = gray_l.shape[0]
    freq_y, freq_x = np.meshgrid(*[np.fft.fftfreq(size, 1 / size)] * 2, indexing="ij")
    radius = np.hypot(freq_x, freq_y)
    angle = np.degrees(np.arctan2(freq_y, freq_x)) % 180
    energies = []
    for low, high in ((0.5, 2.5), (2.5, 4.5), (4.5, 7.5)):
        for orientation in (0, 45, 90, 135):
            offset = np.abs(angle - orientation)
            sector = np.minimum(offset, 180 - offset) < 22.5
            energies.append(power[(radius >= low) & (radius < high) & sector].sum())
    energies = np.array(energies)
    return np.log(energies / energies.sum() + 1e-6)


def _audio_profile(record) -> np.ndarray:
    """Time-averaged log spectrogram (scipy; the VGGSound STFT settings)."""
    wave = record["audio"].astype(np.float32) / 32768
    _, _, power = signal.spectrogram(wave, 16000, nperseg=512, noverlap=353)
    return np.log(power + 1e-10).mean(axis=1)


def _logistic_probe(train_x, train_y):
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    return model.fit(train_x, train_y).predict


def _nearest_mean_probe(train_x, train_y):
    scaler = StandardScaler().fit(train_x)
    labels = np.unique(train_y)
    means = np.stack([scaler.transform(train_x)[train_y == k].mean(0) for k in labels])

    def predict(x):
        distances = ((scaler.transform(x)[:, None] - means[None]) ** 2).sum(-1)
        return labels[distances.argmin(axis=1)]

    return predict


def _accuracy(probe, feature, target, train, test) -> float:
    predict = probe(np.stack([feature(r) for r in train]), np.array([target(r) for r in train]))
    predicted = predict(np.stack([feature(r) for r in test]))
    return float(np.mean(predicted == np.array([target(r) for r in test])))


def test_grayscale_lightness_carries_no_class_information(probe_world):
    config, _, records = probe_world
    accuracy = _accuracy(
        _logistic_probe,
        _lightness_statistics,
        lambda r: r["label"],
        records["train"],
        records["val"],
    )
    chance = 1 / config.train_classes
    assert accuracy < chance + 0.07, accuracy


def test_audio_spectrum_tells_the_class(probe_world):
    _, _, records = probe_world
    accuracy = _accuracy(
        _nearest_mean_probe, _audio_profile, lambda r: r["label"], records["train"], records["val"]
    )
    assert accuracy > 0.9, accuracy


def test_scene_is_visible_in_lightness_and_audible(probe_world):
    config, _, records = probe_world
    train, val = records["train"], records["val"]
    train_scenes = np.array([_scene(config, "train", r) for r in train])
    val_scenes = np.array([_scene(config, "val", r) for r in val])

    def accuracy(probe, feature):
        predict = probe(np.stack([feature(r) for r in train]), train_scenes)
        return np.mean(predict(np.stack([feature(r) for r in val])) == val_scenes)

    visible = accuracy(_logistic_probe, _lightness_orientation_energy)
    audible = accuracy(_nearest_mean_probe, _audio_profile)
    assert visible > 0.8, visible
    assert audible > 0.95, audible


def test_ave_like_has_exactly_the_configured_fractions(probe_world):
    config, _, records = probe_world
    pairs = records["ave_like"]
    assert len(pairs) == 10 * config.ave_like_videos
    missing = [r for r in pairs if not r["has_audio"]]
    irrelevant = [r for r in pairs if r["has_audio"] and not r["relevant"]]
    assert len(missing) == round(config.missing_audio_fraction * len(pairs))
    assert len(irrelevant) == round(config.irrelevant_fraction * len(pairs))
    assert all(r["audio"].size == 0 and not r["relevant"] for r in missing)
    assert sorted({r["second"] for r in pairs}) == list(range(10))
    # The ten segments of a pseudo-video share its class.
    by_video = {}
    for record in pairs:
        by_video.setdefault(record["clip_id"], set()).add(record["label"])
    assert all(len(labels) == 1 for labels in by_video.values())


def test_irrelevant_audio_tells_another_class(probe_world):
    _, _, records = probe_world
    predict = _nearest_mean_probe(
        np.stack([_audio_profile(r) for r in records["train"]]),
        np.array([r["label"] for r in records["train"]]),
    )
    with_audio = [r for r in records["ave_like"] if r["has_audio"]]
    predicted = predict(np.stack([_audio_profile(r) for r in with_audio]))
    matches = predicted == np.array([r["label"] for r in with_audio])
    relevant = np.array([bool(r["relevant"]) for r in with_audio])
    assert matches[relevant].mean() > 0.9
    assert matches[~relevant].mean() < 0.1


def test_ood_classes_are_held_out_and_lie_between_training_classes(probe_world):
    config, _, records = probe_world
    train_labels = {r["label"] for r in records["train"]} | {r["label"] for r in records["val"]}
    ood_labels = {r["label"] for r in records["ood"]}
    assert ood_labels == set(world.ood_labels(config))
    assert not train_labels & ood_labels
    assert min(train_labels) < min(ood_labels) and max(ood_labels) < max(train_labels)
    infos = world.classes(config)
    # Labels order the classes by signature: pitch and hue both rise with the label.
    assert np.all(np.diff([c.f0_hz for c in infos]) > 0)
    assert np.all(np.diff([c.hue_deg for c in infos]) > 0)
    names = {r["label"]: r["label_name"].decode() for r in records["ood"]}
    assert all(names[k] == infos[k].name for k in names)


def test_stored_images_are_the_generated_colours_and_keep_their_lightness(probe_world):
    config, _, records = probe_world
    for record in records["val"][:40]:
        pair = world.generate_pair(config, "val", _video(record))
        np.testing.assert_array_equal(record["image"], pair.rgb)  # PNG is lossless
        lab = color.rgb2lab(record["image"])
        # Only uint8 rounding separates the stored lightness from the generated one.
        np.testing.assert_allclose(lab[..., 0], pair.gray_l, atol=0.5)
    chroma = np.hypot(lab[..., 1], lab[..., 2])
    assert chroma.max() > 25  # a grey prediction is measurably wrong


def test_build_report_and_world_description_are_stored(probe_world):
    config, data_dir, records = probe_world
    report = read_report(data_dir)
    assert dict(report.pairs) == {split: len(records[split]) for split in world.SPLITS}
    assert not report.skipped
    assert report.format().splitlines()[-1] == f"pairs={report.total_pairs} skipped=0"
    description = world.read_world(data_dir)
    assert description["options"]["seed"] == config.seed
    assert len(description["classes"]) == config.train_classes + config.ood_classes


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path):
    paths = [
        _build(tmp_path / name, **TINY_OPTIONS, seed=seed).data_dir
        for name, seed in (("a", 7), ("b", 7), ("c", 8))
    ]
    record_files = sorted(f for f in os.listdir(paths[0]) if ".array_record" in f)
    assert len(record_files) == len(world.SPLITS)
    assert record_files == sorted(f for f in os.listdir(paths[2]) if ".array_record" in f)
    same = [filecmp.cmp(f"{paths[0]}/{f}", f"{paths[1]}/{f}", shallow=False) for f in record_files]
    other = [filecmp.cmp(f"{paths[0]}/{f}", f"{paths[2]}/{f}", shallow=False) for f in record_files]
    assert all(same)
    assert not any(other)


def test_noisy_train_pairs_carry_another_class_audio_and_stay_labelled_relevant():
    options = {**TINY_OPTIONS, "train_pairs": 10}
    clean = SyntheticConfig(name="clean", **options)
    noisy = SyntheticConfig(name="noisy", train_noisy_audio_fraction=0.4, **options)
    listed = world.world_spec(noisy)["noisy_train_pairs"]
    assert len(listed) == 4 and world.world_spec(clean)["noisy_train_pairs"] == []
    for index in range(10):
        before = world.generate_pair(clean, "train", index)
        after = world.generate_pair(noisy, "train", index)
        assert after.example["image"] == before.example["image"]  # the image never changes
        assert after.example["relevant"] and after.example["has_audio"]
        if index in listed:
            donor = world._donor_clip(noisy, "train", after.latents.label, index, -1)
            assert world.clip_latents(noisy, "train", donor).label != after.latents.label
            np.testing.assert_array_equal(
                after.example["audio"], world.generate_pair(clean, "train", donor).example["audio"]
            )
        else:
            np.testing.assert_array_equal(after.example["audio"], before.example["audio"])
    # The other splits are the same world with or without noisy training audio.
    for split in ("val", "ave_like", "ood"):
        np.testing.assert_array_equal(
            world.generate_pair(noisy, split, 1).example["audio"],
            world.generate_pair(clean, split, 1).example["audio"],
        )


def test_pairs_do_not_depend_on_generation_order():
    config = SyntheticConfig(name="order", **TINY_OPTIONS)
    first = world.generate_pair(config, "ave_like", 7)
    for index in range(10):
        world.generate_pair(config, "ave_like", index)
    again = world.generate_pair(config, "ave_like", 7)
    assert first.example["image"] == again.example["image"]
    np.testing.assert_array_equal(first.example["audio"], again.example["audio"])


def test_lab_to_srgb_matches_skimage_inside_the_gamut():
    rgb = np.random.default_rng(0).uniform(0, 1, size=(500, 3))
    lab = color.rgb2lab(rgb)
    np.testing.assert_allclose(world.lab_to_srgb(lab), rgb, atol=1e-6)
    np.testing.assert_allclose(world.lab_to_srgb(lab), color.lab2rgb(lab), atol=1e-6)


def test_gamut_chroma_is_in_gamut_for_every_hue_and_not_much_less():
    rng = np.random.default_rng(1)
    gray_l = rng.uniform(1, 99, size=4000)
    hue = rng.uniform(0, 2 * np.pi, size=4000)
    chroma = world.gamut_chroma(gray_l)
    lab = np.stack([gray_l, chroma * np.cos(hue), chroma * np.sin(hue)], axis=-1)
    rgb = world.lab_to_srgb(lab)
    assert rgb.min() >= 0 and rgb.max() <= 1
    # 3% more chroma leaves the gamut for some hue at every lightness: the bound is tight.
    for value in (20.0, 50.0, 72.0):
        hues = np.linspace(0, 2 * np.pi, 721)
        wider = 1.03 * world.gamut_chroma(np.array(value))
        lab = np.stack(
            [np.full_like(hues, value), wider * np.cos(hues), wider * np.sin(hues)], axis=-1
        )
        rgb = world.lab_to_srgb(lab)
        assert rgb.min() < 0 or rgb.max() > 1


@pytest.mark.parametrize(
    "options",
    [
        dict(scenes=7),
        dict(ood_classes=12),
        dict(irrelevant_fraction=0.9),
        dict(train_pairs=-1),
        dict(train_noisy_audio_fraction=1.5),
    ],
)
def test_unusable_options_are_rejected_by_name(options):
    config = dataclasses.replace(SyntheticConfig(name="bad"), **options)
    with pytest.raises(ValueError, match=next(iter(options))):
        world.validate(config)


def test_registry_finds_the_builder():
    assert builder_class("synthetic") is Synthetic


def test_films_are_deterministic_pans_and_zooms_over_val_clips_with_their_sound():
    """A film: three shots of 20 frames at 10 fps, each on a val clip; within a shot the camera
    moves a little each frame over one picture of the clip's hue, and the sound is the clip's
    (its pitch tells its class)."""
    config = SyntheticConfig(name="films", image_size=32, val_pairs=16)
    film = world.render_film(config, 3)
    again = world.render_film(config, 3)
    assert len(film.frames) == 60 and film.fps == 10
    assert all(a.shape == (32, 32, 3) and a.dtype == np.uint8 for a in film.frames)
    assert all(np.array_equal(a, b) for a, b in zip(film.frames, again.frames))
    assert np.array_equal(film.audio, again.audio)
    assert film.audio.shape == (3 * 2 * 16000,)
    assert [s["motion"] for s in film.shots] == ["pan", "zoom", "pan"]
    assert [s["first_frame"] for s in film.shots] == [0, 20, 40]
    for shot in film.shots:
        frames = film.frames[shot["first_frame"] : shot["first_frame"] + 20]
        lab = color.rgb2lab(np.stack(frames))
        hue = np.rad2deg(np.arctan2(lab[..., 2].mean(), lab[..., 1].mean())) % 360
        info = world.classes(config)[shot["label"]]
        assert shot["label"] == world.clip_latents(config, "val", shot["clip"]).label
        assert abs((hue - info.hue_deg + 180) % 360 - 180) < 12
        steps = [np.abs(a.astype(int) - b).mean() for a, b in itertools.pairwise(frames)]
        assert 0 < max(steps) < 20  # it moves, slowly
        second = film.audio[(shot["first_frame"] // 10) * 16000 :][:16000]
        spectrum = np.abs(np.fft.rfft(second * np.hanning(second.size)))
        peak = np.fft.rfftfreq(second.size, 1 / 16000)[spectrum[: second.size // 4].argmax()]
        assert abs(np.log2(peak / info.f0_hz)) < 0.2  # the loudest partial below 4 kHz: f0
    assert not np.array_equal(world.render_film(config, 4).frames[0], film.frames[0])
