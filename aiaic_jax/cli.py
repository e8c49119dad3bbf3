"""The `aiaic` command line: `aiaic colorize` colorizes images, folders and videos with sound;
`aiaic cdc` measures how steady a video's colours are.

    aiaic colorize --checkpoint runs/demo/full film.mp4 film_colour.mp4
    aiaic colorize --checkpoint W/full --stage baseline photos/ out/
    aiaic colorize --checkpoint W/full/stage3/final --audio street.wav street.jpg street_c.jpg
    aiaic cdc film_colour.mp4 film_reference.mp4 [--json cdc.json]

A thin layer over `aiaic_jax.inference.Colorizer`: it parses the command line and reads and
writes the files. Installed as the console script `aiaic` (pyproject.toml); `python -m
aiaic_jax.cli` also works.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import dataclasses
import fractions
import importlib.util
import itertools
import json
import os
import sys
from collections.abc import Iterator, Sequence

import av
import ml_collections
import numpy as np
from PIL import Image

from aiaic_jax import compile_cache, runs
from aiaic_jax.data import folders, media
from aiaic_jax.data.folders import NOT_A_REGULAR_FILE
from aiaic_jax.inference import RESIZE_MODES, Colorized, Colorizer

SAMPLE_RATE = media.SAMPLE_RATE
# Containers that hold H.264 video with AAC sound; other video outputs become .mp4.
VIDEO_OUTPUT_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv")
_CHANNEL_LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1"}

_COLORIZE_DESCRIPTION = """\
Colorizes grayscale images and films with a trained AIAIC model, guided by their sound.

INPUT is one of
  an image     (.jpg .jpeg .png .webp): its sound is --audio FILE, else an audio file with the
               same basename next to it (x.jpg + x.wav/.flac/.ogg/.mp3), else none;
  a video      (.mp4 .mov .mkv .webm .avi ...): every frame is colorized with the sound of the
               window centred on it (--audio_window seconds, tiled to the length the model was
               trained with); OUTPUT is H.264 with the original sound re-encoded as AAC;
  a folder     images (paired with audio files by basename) and videos, anywhere below it;
               OUTPUT is a folder with the same layout (a video in another container than
               .mp4/.m4v/.mov/.mkv becomes NAME.EXT.mp4). Files that cannot be read are
               reported and skipped.

An output that exists is not replaced unless --overwrite is given (it is reported).

The model: --checkpoint is a training run W (its stage3, else e2e, else baseline), a stage
W/<stage> or its variables W/<stage>/final; --stage picks another stage of a run. Its config
is the config.json training wrote beside the variables, unless --config names a config file;
--config.FIELD=VALUE overrides a field of either (e.g. --config.data.image_size=128).

Without sound, r = 0: the model falls back to its visual backbone (Eq. 8). --mode sets r
otherwise: by default from RNet for the full method, 1 for runs without RNet ("w/o r", e2e),
0 for a baseline. A video's colorized frames are kept in memory until it is encoded (width x
height x 3 bytes a frame).

Resolution: the model sees the picture at the resolution it was trained at
(config.data.image_size, square). With --resize pad (the default) the picture keeps its aspect
ratio: its longer side is resized (bilinear) to that size and the square is filled by
mirroring its edges; with --resize squash the whole picture is resized to the square, aspect
ratio not kept, as DDColor's own inference does. The predicted ab of the picture is resized
(bilinear) back to the input's size and combined with the input's own full-resolution L, as
colorization tools commonly do. The output has the input's size and keeps all of its detail;
only the colour is at the model's resolution. A colour input is treated as gray: only its L is
used.

Exit status: 0 when every input was colorized, 1 when some could not be read or written (each
one is named), 2 for a wrong command line (paths, config, checkpoint).
"""

_COLORIZE_EPILOG = """\
examples:
  aiaic colorize --checkpoint runs/demo/full street.jpg street_colour.jpg
  aiaic colorize --checkpoint W/full --audio rain.wav photo.png photo_c.png
  aiaic colorize --checkpoint W/full --mode 0 old_film.mp4 old_film_c.mp4
  aiaic colorize --checkpoint W/full/stage3/final --config configs/demo.py scans/ scans_c/
  aiaic colorize --checkpoint W/full --config.data.audio_seconds=5 film.mkv film_c.mkv
"""


class CommandError(Exception):
    """A problem with the command's inputs; its message is printed as is."""


# ------------------------------------------------------------------------------------------------
# Configuration and model


def load_config_file(path: str) -> ml_collections.ConfigDict:
    """A config file: Python (`get_config()`) or JSON (a `config.json` training wrote)."""
    if not os.path.isfile(path):
        raise CommandError(f"{path}: no such config file")
    try:
        if path.endswith(".json"):
            return runs.read_config(path)
        return _python_config(path)
    except CommandError:
        raise
    except Exception as error:
        raise CommandError(
            f"{path}: not a usable config ({type(error).__name__}: {error})"
        ) from None


def _python_config(path: str) -> ml_collections.ConfigDict:
    # A config inside a package (configs/demo.py imports configs.common) needs the package's
    # parent on the import path, which a console script does not have.
    directory = os.path.dirname(os.path.abspath(path))
    root = os.path.dirname(directory) if os.path.exists(f"{directory}/__init__.py") else directory
    added = root not in sys.path
    if added:
        sys.path.insert(0, root)
    try:
        spec = importlib.util.spec_from_file_location("_aiaic_colorize_config", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        if added:
            sys.path.remove(root)
    if not hasattr(module, "get_config"):
        raise CommandError(f"{path}: a config file defines get_config()")
    return module.get_config()


def load_colorizer(args: argparse.Namespace) -> Colorizer:
    """The model the command line names: --checkpoint (a run, stage or variables directory),
    --stage, the config training wrote beside it unless --config names another, then the
    --config.x=y overrides."""
    try:
        found = runs.find_checkpoint(args.checkpoint, args.stage)
        if args.config is not None:
            config = load_config_file(args.config)
        elif found.config_file is not None:
            config = runs.read_config(found.config_file)
        else:
            raise CommandError(
                f"{found.path}: no {runs.CONFIG_FILE} beside the checkpoint (a converted one?); "
                "pass --config, the config the model was trained with"
            )
        config = runs.apply_overrides(config, args.overrides)
        return Colorizer.from_checkpoint(
            found.path,
            config,
            mode=args.mode,
            batch_size=args.batch_size,
            resize=args.resize,
        )
    except (FileNotFoundError, ValueError) as error:
        raise CommandError(str(error)) from None


# ------------------------------------------------------------------------------------------------
# Images


@contextlib.contextmanager
def written_whole(path: str) -> Iterator[str]:
    """A temporary name beside `path` (same extension, so the format is the same) to write to;
    renamed to `path` when the block ends without an error, removed when it raises. An output
    that exists is therefore complete: an interrupted run leaves none (or a hidden `.partial`
    file that the next run replaces), never a truncated file that a rerun would keep."""
    directory, name = os.path.split(os.path.abspath(path))
    stem, extension = os.path.splitext(name)
    temporary = os.path.join(directory, f".{stem}.partial-{os.getpid()}{extension}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if os.path.lexists(temporary):
            os.remove(temporary)


def save_image(path: str, rgb: np.ndarray) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    extension = os.path.splitext(path)[1].lower()
    options = {"quality": 95, "subsampling": 0} if extension in (".jpg", ".jpeg") else {}
    if extension == ".webp":
        options = {"quality": 95}
    with written_whole(path) as temporary:
        Image.fromarray(rgb).save(temporary, **options)


def _describe_r(result: Colorized) -> str:
    if not result.has_audio:
        return "no audio: r = 0, the backbone alone"
    return f"r = {result.relevance:.2f}"


@dataclasses.dataclass(frozen=True)
class ImageJob:
    """An image to colorize into `output`, with its sound: the first of `audio` that decodes
    (the same-basename audio files), or, with `audio_required`, `audio[0]` or nothing."""

    image: str
    output: str
    audio: tuple[str, ...] = ()
    audio_required: bool = False


@dataclasses.dataclass
class _Loaded:
    job: ImageJob
    rgb: np.ndarray
    audio: np.ndarray | None
    audio_failures: list[tuple[str, str]]
    audio_unused: list[tuple[str, str]]


def _load_job(job: ImageJob, audio_seconds: float) -> _Loaded | media.MediaError:
    """Decodes one job; a MediaError names the file that stops it. An unreadable
    same-basename audio file does not stop it: the image is colorized without audio."""
    try:
        rgb = media.load_image(job.image).rgb
        if job.audio_required:
            audio = media.load_audio(job.audio[0], max_seconds=audio_seconds)
            return _Loaded(job, rgb, audio, [], [])
    except media.MediaError as error:
        return error
    chosen = folders.first_readable_audio(job.audio, max_seconds=audio_seconds)
    return _Loaded(job, rgb, chosen.value, folders.audio_failures(job.image, chosen), chosen.unused)


def _save_job(image_path: str, output: str, result: Colorized) -> str | None:
    """Writes one result; returns the failure message, or None after printing the success."""
    try:
        save_image(output, result.rgb)
    except (OSError, ValueError) as error:
        message = f"{output}: cannot write ({error})"
        print(f"failed {message}", file=sys.stderr, flush=True)
        return message
    print(f"{image_path} -> {output} ({_describe_r(result)})", flush=True)
    return None


def colorize_images(colorizer: Colorizer, jobs: Sequence[ImageJob]) -> list[str]:
    """Colorizes image jobs in batches. Returns the failures, each a message naming the file
    (an image not colorized, or an audio file it was colorized without); the other outputs are
    written.

    Decoding (images and sound, each file once) and writing run on a pool of threads, ahead of
    and behind the model, so that the model waits on the files as little as possible; at most
    two batches of decoded pictures are held at a time.
    """
    failures: list[str] = []
    workers = max(2, os.cpu_count() or 1)
    lookahead = 2 * colorizer.batch_size
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        pending: collections.deque = collections.deque()
        saves: list[concurrent.futures.Future] = []
        remaining = iter(jobs)

        def fill() -> None:
            while len(pending) < lookahead:
                job = next(remaining, None)
                if job is None:
                    return
                pending.append(pool.submit(_load_job, job, colorizer.audio_seconds))

        fill()
        while pending:
            ready: list[_Loaded] = []
            while pending and len(ready) < colorizer.batch_size:
                loaded = pending.popleft().result()
                fill()
                if isinstance(loaded, media.MediaError):
                    failures.append(str(loaded))
                    print(f"skipped {loaded}", file=sys.stderr, flush=True)
                    continue
                for path, reason in loaded.audio_failures:
                    failures.append(f"{path}: {reason}")
                    print(f"skipped {path}: {reason}", file=sys.stderr, flush=True)
                for path, reason in loaded.audio_unused:
                    print(f"not used {path}: {reason}", flush=True)
                ready.append(loaded)
            if not ready:
                continue
            results = colorizer.colorize_prepared([r.rgb for r in ready], [r.audio for r in ready])
            for loaded, result in zip(ready, results):
                job = loaded.job
                saves.append(pool.submit(_save_job, job.image, job.output, result))
        failures += [message for future in saves if (message := future.result()) is not None]
    return failures


# ------------------------------------------------------------------------------------------------
# Videos


@dataclasses.dataclass
class Soundtrack:
    """A video's sound on the clock of its video stream (sample 0 at the video's start)."""

    samples: np.ndarray  # [N, C] int16 at `sample_rate`, the original channels (C of 1, 2, 6)
    sample_rate: int
    model_audio: np.ndarray  # [M] int16 16 kHz mono, what the model hears


def read_soundtrack(path: str, video_start: float) -> Soundtrack | None:
    """Decodes a file's first audio stream twice over: at its own rate and channels (for the
    output) and as 16 kHz mono (for the model). None when there is no audio stream.

    Channel layouts other than mono, stereo and 5.1 are mixed down to stereo.
    """
    try:
        with av.open(path) as container:
            if not container.streams.audio:
                return None
            stream = container.streams.audio[0]
            channels = stream.codec_context.channels
            layout = _CHANNEL_LAYOUTS.get(channels, "stereo")
            channels = 2 if channels not in _CHANNEL_LAYOUTS else channels
            rate = stream.codec_context.sample_rate or SAMPLE_RATE
            native = av.AudioResampler(format="s16", layout=layout, rate=rate)
            mono = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
            native_chunks, mono_chunks, start = [], [], None
            for packet in container.demux(stream):
                try:
                    decoded = packet.decode()
                except av.FFmpegError:
                    continue  # a damaged packet: its stretch of sound is lost
                for frame in decoded:
                    if start is None and frame.time is not None:
                        start = float(frame.time)
                    native_chunks += [f.to_ndarray().reshape(-1) for f in native.resample(frame)]
                    mono_chunks += [f.to_ndarray().reshape(-1) for f in mono.resample(frame)]
            native_chunks += [f.to_ndarray().reshape(-1) for f in native.resample(None)]
            mono_chunks += [f.to_ndarray().reshape(-1) for f in mono.resample(None)]
    except (av.FFmpegError, OSError, ValueError) as error:
        raise media.MediaError(path, f"cannot decode its audio ({error})") from None
    if not mono_chunks or sum(c.size for c in mono_chunks) == 0:
        return None
    offset = (start if start is not None else video_start) - video_start
    samples = np.concatenate(native_chunks).astype(np.int16).reshape(-1, channels)
    model_audio = np.concatenate(mono_chunks).astype(np.int16)
    return Soundtrack(
        samples=_shift(samples, round(offset * rate)),
        sample_rate=rate,
        model_audio=_shift(model_audio, round(offset * SAMPLE_RATE)),
    )


def _shift(samples: np.ndarray, offset: int) -> np.ndarray:
    """Delays (offset > 0: silence first) or advances (offset < 0: cut) a sound."""
    if offset > 0:
        return np.concatenate([np.zeros((offset, *samples.shape[1:]), samples.dtype), samples])
    return samples[-offset:] if offset < 0 else samples


def audio_window(audio: np.ndarray, centre: float, seconds: float) -> np.ndarray:
    """The `seconds` of 16 kHz audio centred on time `centre`, moved inside the clip at its ends;
    the whole clip when it is shorter."""
    length = round(seconds * SAMPLE_RATE)
    if audio.size <= length:
        return audio
    start = round(centre * SAMPLE_RATE) - length // 2
    start = min(max(start, 0), audio.size - length)
    return audio[start : start + length]


@dataclasses.dataclass
class _VideoHeader:
    start: float  # seconds: the first frame's time
    fps: float
    frames: int  # the frame count the container declares; 0 when it declares none


def _video_header(path: str) -> _VideoHeader:
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise media.MediaError(path, "no video stream")
            stream = container.streams.video[0]
            start = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
            rate = stream.average_rate or stream.guessed_rate or fractions.Fraction(25)
            return _VideoHeader(start, float(rate), max(int(stream.frames or 0), 0))
    except media.MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError) as error:
        raise media.MediaError(path, f"cannot decode ({error})") from None


def colorize_video(
    colorizer: Colorizer, path: str, output: str, window_seconds: float | None = None
) -> str:
    """Colorizes every frame of a video and writes it with its sound; returns a summary line.

    Each frame hears the `window_seconds` (default: the model's audio length) of sound centred
    on it. The output holds every colorized frame in memory until it is encoded.
    """
    window_seconds = window_seconds or colorizer.audio_seconds
    try:
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    except OSError as error:
        raise media.MediaError(output, f"cannot create its folder ({error})") from None
    header = _video_header(path)
    start, fps = header.start, header.fps
    soundtrack = read_soundtrack(path, start)
    frames_out: list[np.ndarray] = []
    times: list[float | None] = []
    relevance: list[float] = []
    pending: list[tuple[np.ndarray, float | None]] = []

    def flush() -> None:
        audios = []
        for index, (_, time) in enumerate(pending):
            if soundtrack is None:
                audios.append(None)
                continue
            centre = (time - start) if time is not None else (len(frames_out) + index) / fps
            audios.append(audio_window(soundtrack.model_audio, centre, window_seconds))
        for result in colorizer.colorize_prepared([frame for frame, _ in pending], audios):
            frames_out.append(result.rgb)
            relevance.append(result.relevance)
        times.extend(time for _, time in pending)
        pending.clear()

    for frame, time in media.video_frames(path):
        pending.append((frame, time))
        if len(pending) == colorizer.batch_size:
            flush()
    if pending:
        flush()
    if not frames_out:
        raise media.MediaError(path, "no video frame could be decoded")

    frame_times = None
    if all(t is not None for t in times):
        relative = [t - start for t in times]
        if all(b > a for a, b in itertools.pairwise(relative)) and relative[0] >= 0:
            frame_times = relative  # keeps a variable frame rate and the video's start
    try:
        with written_whole(output) as temporary:
            media.write_video(
                temporary,
                frames_out,
                None if soundtrack is None else soundtrack.samples,
                fps,
                SAMPLE_RATE if soundtrack is None else soundtrack.sample_rate,
                frame_times=frame_times,
            )
    except (av.FFmpegError, OSError, ValueError) as error:
        raise media.MediaError(output, f"cannot write the video ({error})") from None
    if soundtrack is None:
        sound = "no audio: r = 0, the backbone alone"
    else:
        sound = (
            f"r mean {np.mean(relevance):.2f} (min {np.min(relevance):.2f}, "
            f"max {np.max(relevance):.2f})"
        )
    summary = f"{path} -> {output}: {len(frames_out)} frames, {sound}"
    if len(frames_out) < header.frames:
        warning = (
            f"{path}: only {len(frames_out)} of the {header.frames} frames its header declares "
            "could be decoded (a damaged or cut-off file); the output is that much shorter"
        )
        print(f"warning: {warning}", file=sys.stderr, flush=True)
        summary += f" (warning: {len(frames_out)} of {header.frames} frames decoded)"
    return summary


# ------------------------------------------------------------------------------------------------
# The command


def _video_output(path: str) -> str:
    """The output of a video in a folder: its own name when the container holds H.264 + AAC,
    else the whole name + ".mp4" (x.ts -> x.ts.mp4, so that it never meets x.mp4's output)."""
    extension = os.path.splitext(path)[1]
    return path if extension.lower() in VIDEO_OUTPUT_EXTENSIONS else path + ".mp4"


def _exists(output: str, overwrite: bool) -> str | None:
    """The failure message for an output that exists and may not be replaced, else None."""
    if overwrite or not os.path.lexists(output):
        return None
    return f"{output}: exists; not replaced (--overwrite replaces it)"


def colorize_folder(
    colorizer: Colorizer,
    root: str,
    output_root: str,
    window_seconds: float | None,
    overwrite: bool = False,
) -> list[str]:
    """Every image (with its same-basename audio) and video below `root` (links to folders
    followed, each folder read once), into `output_root` with the same layout. Returns the
    failures; the rest is written. An output that exists is left as it is (a failure) unless
    `overwrite`."""
    output_abs = os.path.abspath(output_root)
    failures: list[str] = []

    def skip(path: str, reason: str, failure: bool = True) -> None:
        if failure:
            failures.append(f"{path}: {reason}")
        print(f"skipped {path}: {reason}", file=sys.stderr if failure else sys.stdout, flush=True)

    found = folders.scan(root)
    for path, reason in found.repeated:
        skip(path, reason, failure=False)
    for path, reason in found.unreadable:
        skip(path, reason)
    inputs = [p for p in found.files if not os.path.abspath(p).startswith(output_abs + os.sep)]
    groups, unused = folders.group(inputs)
    for path, reason in unused:
        skip(path, reason, failure=reason != folders.NOT_MEDIA)

    images, videos = [], []
    for group in groups:
        for path in [*group.images, *group.videos]:
            output = os.path.join(output_root, os.path.relpath(path, root))
            if path in group.videos:
                output = _video_output(output)
            if (message := _exists(output, overwrite)) is not None:
                skip(path, message)
            elif path in group.videos:
                videos.append((path, output))
            else:
                images.append(ImageJob(path, output, audio=group.audio))
    if not images and not videos and not failures:
        raise CommandError(f"{root}: no images or videos in this folder")
    failures += colorize_images(colorizer, images)
    for path, output in videos:
        try:
            print(colorize_video(colorizer, path, output, window_seconds), flush=True)
        except media.MediaError as error:
            failures.append(str(error))
            print(f"skipped {error}", file=sys.stderr, flush=True)
    return failures


def colorize_command(args: argparse.Namespace) -> int:
    source, target = args.input, args.output
    if not os.path.exists(source):
        raise CommandError(f"{source}: no such file or folder")
    if not os.path.isdir(source) and not os.path.isfile(source):
        raise CommandError(f"{source}: {NOT_A_REGULAR_FILE}")
    kind = "folder" if os.path.isdir(source) else folders.kind(source)
    if kind not in ("folder", "image", "video"):
        raise CommandError(
            f"{source}: not an image ({', '.join(media.IMAGE_EXTENSIONS)}), a video "
            f"({', '.join(media.VIDEO_EXTENSIONS)}) or a folder"
        )
    if args.audio_window is not None and args.audio_window <= 0:
        raise CommandError(f"--audio_window must be positive, got {args.audio_window}")
    if args.audio is not None and kind != "image":
        raise CommandError("--audio goes with a single image; a video brings its own sound")
    if args.audio is not None and not os.path.isfile(args.audio):
        raise CommandError(f"{args.audio}: no such audio file")
    if kind == "image" and folders.kind(target) != "image":
        raise CommandError(f"{target}: the output of an image is an image file (.png, .jpg, ...)")
    if kind == "video" and os.path.splitext(target)[1].lower() not in VIDEO_OUTPUT_EXTENSIONS:
        raise CommandError(
            f"{target}: the output video is H.264 + AAC; name it "
            f"{' or '.join(VIDEO_OUTPUT_EXTENSIONS)}"
        )
    if kind == "folder" and os.path.isfile(target):
        raise CommandError(f"{target}: the output of a folder is a folder, and this is a file")
    if kind != "folder" and (message := _exists(target, args.overwrite)) is not None:
        raise CommandError(message)
    _check_writable(target if kind == "folder" else os.path.dirname(os.path.abspath(target)))

    colorizer = load_colorizer(args)
    if kind == "folder":
        failures = colorize_folder(colorizer, source, target, args.audio_window, args.overwrite)
        if failures:
            print(f"{len(failures)} files could not be colorized:", file=sys.stderr)
            for failure in failures:
                print(f"  {failure}", file=sys.stderr)
        return 1 if failures else 0
    try:
        if kind == "image":
            if args.audio is not None:
                job = ImageJob(source, target, audio=(args.audio,), audio_required=True)
            else:
                job = ImageJob(source, target, audio=folders.same_basename_audio(source))
            failures = colorize_images(colorizer, [job])
            return 1 if failures else 0
        print(colorize_video(colorizer, source, target, args.audio_window), flush=True)
    except media.MediaError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def _check_writable(directory: str) -> None:
    """Creates the output folder, or fails before the model is loaded when it cannot be
    written."""
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as error:
        raise CommandError(f"{directory}: cannot create the output folder ({error})") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise CommandError(f"{directory}: the output folder is not writable")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aiaic",
        description=(
            "Audio-Infused Automatic Image Colorization (Zhao et al., arXiv 2401.13270): "
            "colorize grayscale images and films with the help of their sound."
        ),
        epilog="Run `aiaic COMMAND --help` for a command's options.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    colorize = commands.add_parser(
        "colorize",
        help="colorize an image, a folder or a video with a trained model",
        description=_COLORIZE_DESCRIPTION,
        epilog=_COLORIZE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    colorize.add_argument("input", metavar="INPUT", help="an image, a video or a folder")
    colorize.add_argument(
        "output", metavar="OUTPUT", help="the output image, video (.mp4/.m4v/.mov/.mkv) or folder"
    )
    colorize.add_argument(
        "--checkpoint",
        required=True,
        metavar="DIR",
        help="a training run W (its stage3, e2e or baseline), a stage W/<stage>, or variables "
        "W/<stage>/final",
    )
    colorize.add_argument(
        "--stage",
        metavar="NAME",
        help="with a run directory: the stage to colorize with (stage3, e2e, baseline, ...)",
    )
    colorize.add_argument(
        "--config",
        metavar="FILE",
        help="a config file (.py or a config.json) instead of the config.json the run wrote; "
        "--config.FIELD=VALUE overrides a field either way",
    )
    colorize.add_argument(
        "--audio", metavar="FILE", help="the sound of a single image INPUT (wav, flac, ogg, mp3)"
    )
    colorize.add_argument(
        "--mode",
        choices=("auto", "1", "0"),
        default=None,
        help="the relevance r of the audio guidance (Eq. 8): auto = from RNet, 1 = always follow "
        "the audio, 0 = ignore it (the visual backbone alone); r = 0 wherever there is no "
        "sound. Default: auto for the full method, 1 for runs without RNet, 0 for a baseline",
    )
    colorize.add_argument(
        "--resize",
        choices=RESIZE_MODES,
        default="pad",
        help="how a picture meets the model's square: pad = aspect ratio kept, edges mirrored "
        "(default); squash = resized to the square",
    )
    colorize.add_argument(
        "--batch_size", type=int, default=8, metavar="N", help="images per model call (default 8)"
    )
    colorize.add_argument(
        "--overwrite",
        action="store_true",
        help="replace outputs that exist (by default they are left as they are and reported)",
    )
    colorize.add_argument(
        "--audio_window",
        type=float,
        metavar="SECONDS",
        help="videos: seconds of sound around each frame (default: the model's audio length)",
    )
    colorize.set_defaults(handler=colorize_command)

    stability = commands.add_parser(
        "cdc",
        help="temporal stability of videos: colour distribution consistency (lower is steadier)",
        description=(
            "The colour distribution consistency (CDC) of each video: the Jensen-Shannon "
            "divergence between the per-channel RGB histograms of frames 1, 2 and 4 apart, "
            "averaged over channels, frame pairs and the three gaps (aiaic_jax/evaluation/"
            "temporal.py). Give a colorized video and its reference (or several videos) to "
            "compare them; the mean over the videos is printed last."
        ),
    )
    stability.add_argument("videos", nargs="+", metavar="VIDEO", help="video files")
    stability.add_argument(
        "--json", metavar="FILE", help="also write every video's CDC, per gap, to this file"
    )
    stability.set_defaults(handler=cdc_command)
    return parser


def cdc_command(args: argparse.Namespace) -> int:
    """`aiaic cdc`: each video's CDC and per-gap values, then the mean; a video that cannot be
    read is reported by name and left out (exit status 1)."""
    from aiaic_jax.evaluation import temporal

    measured: dict[str, temporal.Cdc] = {}
    failed = []
    for path in args.videos:
        try:
            result = temporal.video_cdc(path)
        except media.MediaError as error:
            print(f"aiaic cdc: {error}", file=sys.stderr)
            failed.append(path)
            continue
        measured[path] = result
        gaps = ", ".join(f"gap {g}: {v:.5f}" for g, v in result.per_gap.items())
        value = "— (fewer than two frames)" if result.value is None else f"{result.value:.5f}"
        print(f"{path}: CDC {value} ({result.frames} frames; {gaps or 'no pairs'})")
    mean = temporal.mean_cdc(measured.values())
    if len(measured) > 1 and mean is not None:
        print(f"mean CDC over {len(measured)} videos: {mean:.5f}")
    if args.json:
        report = {
            "videos": {path: result.to_json() for path, result in measured.items()},
            "mean_cdc": mean,
            "unreadable": failed,
        }
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """The `aiaic` console script. Returns the exit status."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    overrides = [item for item in unknown if item.startswith("--config.")]
    if len(overrides) != len(unknown):
        parser.error(f"unrecognized arguments: {' '.join(set(unknown) - set(overrides))}")
    args.overrides = overrides
    compile_cache.enable()
    try:
        return args.handler(args)
    except CommandError as error:
        print(f"aiaic {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
