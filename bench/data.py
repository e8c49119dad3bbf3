"""Data throughput: how fast datasets build from video, and how fast the pipeline reads batches.

    PYTHONPATH=. python bench/data.py                      # every section, default sizes
    PYTHONPATH=. python bench/data.py --sections build --clips 16 --size 640x360
    PYTHONPATH=. python bench/data.py --sections pipeline --pipeline_sizes 64,256

Section `build`: writes N synthetic 10-s clips (moving textured colour, a tone track) with
`aiaic_jax.data.media.write_video` into a temporary directory laid out as the AVE and VGGSound
releases, then times `builder.build()` (decoding, image encoding, TFDS writing) for each builder
and number of decoding threads (best of --repeats builds), and prints pairs/s. Clip generation is
not timed.

Section `pipeline`: builds a synthetic world (`--pipeline_pairs` train pairs of 1-s audio) at
each image size in `--pipeline_sizes`, then reads training batches with
`aiaic_jax.data.pipeline.train_iterator` (PNG decoding, resize, random crop and flip, audio
fitted to the clip length, batching) for `--pipeline_batches` batches after one warm-up batch,
with each number of grain worker processes in `--pipeline_workers`, and prints pairs/s. This
is the host-side input rate a training step has to stay under.

Each section is a function `(args) -> list[dict]` of table rows, registered in `SECTIONS`.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import numpy as np

from aiaic_jax.data import media
from aiaic_jax.data.builders import builder_class


def textured_frames(seconds: float, fps: float, width: int, height: int, seed: int):
    """Frames of a drifting colour gradient with fixed texture: realistic work for H.264."""
    rng = np.random.default_rng(seed)
    texture = rng.normal(0, 6, (height, width, 3))
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    for i in range(round(seconds * fps)):
        shift = i * 4
        rgb = np.stack(
            [
                128 + 100 * np.sin((x + shift) / 40),
                128 + 100 * np.sin((y + shift) / 30),
                128 + 100 * np.cos((x + y - shift) / 50),
            ],
            axis=-1,
        )
        yield np.clip(rgb + np.roll(texture, shift, axis=1), 0, 255).astype(np.uint8)


def write_clips(directory: str, video_ids: list[str], args: argparse.Namespace) -> dict[str, str]:
    """Writes one clip per id; returns id -> path."""
    width, height = args.size
    os.makedirs(directory, exist_ok=True)
    t = np.arange(round(args.seconds * args.sample_rate)) / args.sample_rate
    paths = {}
    for index, video_id in enumerate(video_ids):
        wave = 0.3 * np.sin(2 * np.pi * (220 + 50 * index + 30 * np.floor(t)) * t)
        audio = np.repeat((wave * 32767).astype(np.int16)[:, None], 2, axis=1)
        frames = list(textured_frames(args.seconds, args.fps, width, height, index))
        paths[video_id] = os.path.join(directory, f"{video_id}.mp4")
        media.write_video(paths[video_id], frames, audio, args.fps, args.sample_rate, crf=23)
    return paths


def _link(paths: dict[str, str], directory: str, pattern: str) -> None:
    os.makedirs(directory, exist_ok=True)
    for video_id, path in paths.items():
        os.link(path, os.path.join(directory, pattern.format(video_id)))


def make_ave_dir(root: str, clips: dict[str, str]) -> None:
    """The AVE release layout over the clips: all but two in train, one in val, one in test."""
    _link(clips, os.path.join(root, "AVE"), "{}.mp4")
    lines = [f"Class {i % 4}&{v}&good&2&7" for i, v in enumerate(clips)]
    splits = {"trainSet.txt": lines[:-2], "valSet.txt": lines[-2:-1], "testSet.txt": lines[-1:]}
    with open(os.path.join(root, "Annotations.txt"), "w") as f:
        f.write("Category&VideoID&Quality&StartTime&EndTime\n" + "\n".join(lines) + "\n")
    for name, split_lines in splits.items():
        with open(os.path.join(root, name), "w") as f:
            f.write("\n".join(split_lines) + "\n")


def make_vggsound_dir(root: str, clips: dict[str, str]) -> None:
    """The VGGSound layout over the clips: one in five is a csv `test` (val) row."""
    _link(clips, os.path.join(root, "video"), "{}_000000.mp4")
    rows = [f"{v},0,class {i % 4},{'test' if i % 5 == 4 else 'train'}" for i, v in enumerate(clips)]
    with open(os.path.join(root, "vggsound.csv"), "w") as f:
        f.write("\n".join(rows) + "\n")


def bench_build(args: argparse.Namespace) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        video_ids = [f"clip{i:04d}" for i in range(args.clips)]
        start = time.perf_counter()
        clips = write_clips(os.path.join(scratch, "clips"), video_ids, args)
        print(f"wrote {args.clips} clips in {time.perf_counter() - start:.1f} s")
        manual_dirs = {}
        for name, make in (("ave", make_ave_dir), ("vggsound", make_vggsound_dir)):
            manual_dirs[name] = os.path.join(scratch, f"{name}_in")
            make(manual_dirs[name], clips)

        for name in ("ave", "vggsound"):
            for workers in args.workers:
                times = []
                for repeat in range(args.repeats):
                    cls = builder_class(name)
                    config = cls.BUILDER_CONFIG_CLASS(
                        name=f"w{workers}_r{repeat}", num_workers=workers
                    )
                    builder = cls(config=config, data_dir=os.path.join(scratch, "out"))
                    start = time.perf_counter()
                    report = builder.build(manual_dirs[name])
                    times.append(time.perf_counter() - start)
                seconds = min(times)  # the least disturbed run
                rows.append(
                    {
                        "builder": name,
                        "threads": workers,
                        "clips": args.clips,
                        "pairs": report.total_pairs,
                        "skipped": len(report.skipped),
                        "seconds": f"{seconds:.2f}",
                        "clips/s": f"{args.clips / seconds:.2f}",
                        "pairs/s": f"{report.total_pairs / seconds:.1f}",
                    }
                )
    return rows


def bench_pipeline(args: argparse.Namespace) -> list[dict]:
    import tensorflow_datasets as tfds

    from aiaic_jax.data import pipeline
    from aiaic_jax.data.builders import synthetic

    tfds.disable_progress_bar()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for size in args.pipeline_sizes:
            config = synthetic.SyntheticConfig(
                name=f"s{size}",
                image_size=size,
                train_pairs=args.pipeline_pairs,
                val_pairs=8,
                ave_like_videos=2,  # irrelevant audio needs another pseudo-video
                ood_pairs=8,
            )
            synthetic.Synthetic(data_dir=scratch, config=config).build()
            for workers in args.pipeline_workers:
                data = {
                    "name": "synthetic",
                    "config_name": f"s{size}",
                    "data_dir": scratch,
                    "train_split": "train",
                    "image_size": size,
                    "audio_seconds": 1.0,
                    "batch_size": args.pipeline_batch,
                    "num_workers": workers,
                }
                iterator = pipeline.train_iterator(data, seed=0)
                next(iterator)  # starts the workers and fills their buffers
                start = time.perf_counter()
                for _ in range(args.pipeline_batches):
                    next(iterator)
                seconds = time.perf_counter() - start
                if hasattr(iterator, "close"):
                    iterator.close()  # stops grain's worker processes
                pairs = args.pipeline_batches * args.pipeline_batch
                rows.append(
                    {
                        "image_size": size,
                        "workers": workers,
                        "batch": args.pipeline_batch,
                        "batches": args.pipeline_batches,
                        "seconds": f"{seconds:.2f}",
                        "pairs/s": f"{pairs / seconds:.0f}",
                    }
                )
    return rows


SECTIONS = {"build": bench_build, "pipeline": bench_pipeline}


def print_table(title: str, rows: list[dict]) -> None:
    if not rows:
        return
    columns = list(rows[0])
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    print(f"\n## {title}")
    print(" | ".join(c.rjust(w) for c, w in zip(columns, widths)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(str(row[c]).rjust(w) for c, w in zip(columns, widths)))


def _size(text: str) -> tuple[int, int]:
    width, height = text.lower().split("x")
    return int(width), int(height)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated")
    parser.add_argument("--clips", type=int, default=10, help="clips per dataset")
    parser.add_argument("--size", type=_size, default=(480, 360), help="clip frame WxH")
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length")
    parser.add_argument("--sample_rate", type=int, default=44_100, help="clip audio rate")
    parser.add_argument("--repeats", type=int, default=3, help="builds per setting; best kept")
    parser.add_argument(
        "--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2],
        help="decoding threads to try, comma-separated",
    )  # fmt: skip
    parser.add_argument("--pipeline_sizes", type=_ints, default=[64, 256], help="image sides")
    parser.add_argument("--pipeline_pairs", type=int, default=512, help="train pairs built")
    parser.add_argument("--pipeline_batch", type=int, default=16)
    parser.add_argument("--pipeline_batches", type=int, default=40, help="timed batches")
    parser.add_argument(
        "--pipeline_workers", type=_ints, default=[0, 2], help="grain worker processes to try"
    )
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.processor() or ''}; "
        f"clips {args.size[0]}x{args.size[1]}, {args.fps:g} fps, {args.seconds:g} s, "
        f"{args.sample_rate} Hz stereo AAC"
    )
    for section in args.sections.split(","):
        print_table(section, SECTIONS[section](args))


if __name__ == "__main__":
    main()
