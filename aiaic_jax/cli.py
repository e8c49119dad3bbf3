"""The `aiaic` command line: `aiaic colorize` colorizes images, folders and videos with sound;
`aiaic export` writes a colorizer that runs without this code; `aiaic serve` shows it on a
local web page; `aiaic cdc` measures how steady a video's colours are.

    aiaic colorize --checkpoint runs/demo/full film.mp4 film_colour.mp4
    aiaic colorize --checkpoint W/full --stage baseline photos/ out/
    aiaic colorize --checkpoint W/full/stage3/final --audio street.wav street.jpg street_c.jpg
    aiaic export --checkpoint runs/demo/full exported/
    aiaic serve --checkpoint runs/demo/full --port 8000
    aiaic cdc film_colour.mp4 film_reference.mp4 [--json cdc.json]

A thin layer over `aiaic_jax.inference.Colorizer`: it parses the command line and reads and
writes the files. Installed as the console script `aiaic` (pyproject.toml); `python -m
aiaic_jax.cli` also works.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import dataclasses
import importlib.util
import json
import os
import sys
from collections.abc import Sequence

import ml_collections
import numpy as np
from PIL import Image

from aiaic_jax import compile_cache, host_memory, runs
from aiaic_jax.data import folders, media
from aiaic_jax.data.folders import NOT_A_REGULAR_FILE
from aiaic_jax.data.media import written_whole
from aiaic_jax.film import (
    CUT_THRESHOLD,
    HOP_SECONDS,
    SEGMENT_SECONDS,
    SMOOTHING_SECONDS,
    colorize_film,
)
from aiaic_jax.inference import RESIZE_MODES, Colorized, Colorizer

SAMPLE_RATE = media.SAMPLE_RATE
# Containers that hold H.264 video with AAC sound; other video outputs become .mp4.
VIDEO_OUTPUT_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv")

_COLORIZE_DESCRIPTION = """\
Colorizes grayscale images and films with a trained AIAIC model, guided by their sound.

INPUT is one of
  an image     (.jpg .jpeg .png .webp): its sound is --audio FILE, else an audio file with the
               same basename next to it (x.jpg + x.wav/.flac/.ogg/.mp3), else none;
  a video      (.mp4 .mov .mkv .webm .avi ...): streamed frame by frame; the frames of each
               --audio_hop seconds share the sound of a window centred on them (--audio_window
               seconds, tiled to the length the model was trained with), heard once; OUTPUT is
               H.264 with the original sound re-encoded as AAC. Shots are found (--cut_threshold)
               and r and the guidance code averaged within each (--smoothing); OUTPUT.shots.json
               reports each shot's span, mean r and sound windows. It is encoded in segments
               (--segment_seconds) kept in a hidden folder beside OUTPUT, so that a run that is
               interrupted resumes after its last finished segment when run again;
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
0 for a baseline. A video without sound gets r = 0 with a warning.

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
    film_options: dict | None = None,
    overwrite: bool = False,
) -> list[str]:
    """Every image (with its same-basename audio) and video below `root` (links to folders
    followed, each folder read once), into `output_root` with the same layout. Returns the
    failures; the rest is written. An output that exists is left as it is (a failure) unless
    `overwrite`. film_options: keyword arguments of `colorize_film` for the videos."""
    film_options = film_options or {}
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
            print(colorize_film(colorizer, path, output, **film_options), flush=True)
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
    for name in ("audio_window", "audio_hop", "segment_seconds"):
        if (value := getattr(args, name)) is not None and value <= 0:
            raise CommandError(f"--{name} must be positive, got {value}")
    if args.smoothing < 0 or args.steady < 0:
        raise CommandError("--smoothing and --steady must be at least 0")
    if not 0 <= args.cut_threshold <= 1:
        raise CommandError(f"--cut_threshold must be in [0, 1], got {args.cut_threshold}")
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
        failures = colorize_folder(colorizer, source, target, _film_options(args), args.overwrite)
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
        print(colorize_film(colorizer, source, target, **_film_options(args)), flush=True)
    except media.MediaError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def _film_options(args: argparse.Namespace) -> dict:
    return {
        "window_seconds": args.audio_window,
        "hop_seconds": args.audio_hop,
        "segment_seconds": args.segment_seconds,
        "smoothing_seconds": args.smoothing,
        "steady_seconds": args.steady,
        "cut_threshold": args.cut_threshold,
    }


def _check_writable(directory: str) -> None:
    """Creates the output folder, or fails before the model is loaded when it cannot be
    written."""
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as error:
        raise CommandError(f"{directory}: cannot create the output folder ({error})") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise CommandError(f"{directory}: the output folder is not writable")


def _model_arguments(parser: argparse.ArgumentParser, mode_help: str) -> None:
    """The model options of export and serve, read by `load_colorizer` as colorize's are."""
    parser.add_argument(
        "--checkpoint", required=True, metavar="DIR", help="as for colorize: a run, stage or final"
    )
    parser.add_argument("--stage", metavar="NAME", help="with a run directory: the stage")
    parser.add_argument("--config", metavar="FILE", help="as for colorize")
    parser.add_argument(
        "--mode",
        choices=("auto", "1", "0"),
        default=None,
        help=f"{mode_help} (default: as colorize sets it for the run)",
    )


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
    colorize.add_argument(
        "--audio_hop",
        type=float,
        default=HOP_SECONDS,
        metavar="SECONDS",
        help="videos: the frames of each stretch of this length share one sound window, heard "
        f"once (default {HOP_SECONDS:g})",
    )
    colorize.add_argument(
        "--segment_seconds",
        type=float,
        default=SEGMENT_SECONDS,
        metavar="SECONDS",
        help="videos: encoded in finished segments of about this length; an interrupted run "
        f"resumes after the last one (default {SEGMENT_SECONDS:g})",
    )
    colorize.add_argument(
        "--smoothing",
        type=float,
        default=SMOOTHING_SECONDS,
        metavar="SECONDS",
        help="videos: time constant of the moving average of r and the guidance code within a "
        f"shot, reset at cuts; 0 = none (default {SMOOTHING_SECONDS:g})",
    )
    colorize.add_argument(
        "--steady",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="videos: steady the colour: each frame's mean colour follows a moving average with "
        "this time constant within its shot, its detail kept (default 0: off)",
    )
    colorize.add_argument(
        "--cut_threshold",
        type=float,
        default=CUT_THRESHOLD,
        metavar="D",
        help="videos: a cut where the grey-level histograms of consecutive frames differ by more "
        f"than this total variation distance, in [0, 1] (default {CUT_THRESHOLD:g})",
    )
    colorize.set_defaults(handler=colorize_command)

    export = commands.add_parser(
        "export",
        help="write a trained colorizer as StableHLO files that run without this code",
        description=(
            "Writes OUTPUT/colorizer.jax and OUTPUT/spectrogram.jax (serialized StableHLO, "
            "jax.export, the weights inside, any batch size) and OUTPUT/manifest.json; with "
            "--onnx also OUTPUT/colorizer.onnx. "
            "aiaic_jax/exported.py loads and runs them with jax alone: (grey L at the model's "
            "resolution, the sound's spectrogram, has_audio) -> (ab, r). See "
            "aiaic_jax/export.py."
        ),
    )
    export.add_argument("output", metavar="OUTPUT", help="the folder to write")
    _model_arguments(export, "how r is set in the exported program")
    export.add_argument(
        "--platforms",
        default="cpu",
        metavar="LIST",
        help="comma-separated platforms the program is lowered for (default cpu; e.g. cpu,cuda)",
    )
    export.add_argument(
        "--onnx",
        action="store_true",
        help="also OUTPUT/colorizer.onnx (jax2onnx), checked against the JAX program with "
        "onnxruntime when it is installed",
    )
    export.set_defaults(handler=export_command, batch_size=1, resize="pad")

    page = commands.add_parser(
        "serve",
        help="a local web page: drop a photo with its sound, or a video, and see it colourised",
        description=(
            "Serves a page on http://HOST:PORT/ where a photo (with an optional sound file) or a "
            "short video is colourised with the model, shown beside its grey input with the r "
            "the model gave the sound, with a download link (aiaic_jax/serve.py). Binds to "
            "127.0.0.1 unless --host says otherwise."
        ),
    )
    _model_arguments(page, "how r is set")
    page.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    page.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free)")
    page.add_argument(
        "--max_upload_mb", type=float, default=50.0, metavar="MB", help="largest upload (50)"
    )
    page.set_defaults(handler=serve_command, batch_size=8, resize="pad")

    stability = commands.add_parser(
        "cdc",
        help="temporal stability of videos: colour distribution consistency (lower is steadier)",
        description=(
            "The colour distribution consistency (CDC) of each video: the Jensen-Shannon "
            "divergence between the per-channel RGB histograms of frames 1, 2 and 4 apart, "
            "averaged over channels, frame pairs and the three gaps (aiaic_jax/evaluation/"
            "temporal.py). Give a colorized video and its reference (or several videos) to "
            "compare them; the mean over the videos is printed last. With --shots, pairs of "
            "frames across a cut are left out, as the literature measures clips of one shot."
        ),
    )
    stability.add_argument("videos", nargs="+", metavar="VIDEO", help="video files")
    stability.add_argument(
        "--shots",
        action="store_true",
        help="within shots only: cuts found as `aiaic colorize` finds them (--cut_threshold)",
    )
    stability.add_argument(
        "--cut_threshold",
        type=float,
        default=None,
        metavar="T",
        help="with --shots: grey-histogram distance of consecutive frames that makes a cut "
        "(default: colorize's, 0.12)",
    )
    stability.add_argument(
        "--json", metavar="FILE", help="also write every video's CDC, per gap, to this file"
    )
    stability.set_defaults(handler=cdc_command)
    return parser


def export_command(args: argparse.Namespace) -> int:
    """`aiaic export`: the colorizer's programs and manifest into OUTPUT."""
    from aiaic_jax import export

    colorizer = load_colorizer(args)
    platforms = [p.strip() for p in args.platforms.split(",") if p.strip()]
    try:
        os.makedirs(args.output, exist_ok=True)
        manifest = export.export_colorizer(
            colorizer,
            args.output,
            platforms=platforms,
            source=colorizer.checkpoint.path,
            onnx=args.onnx,
        )
    except OSError as error:
        raise CommandError(f"{args.output}: cannot write the export ({error})") from None
    except (ValueError, RuntimeError) as error:  # a platform jax cannot lower for; no jax2onnx
        raise CommandError(str(error)) from None
    sizes = sum(os.path.getsize(os.path.join(args.output, f)) for f in os.listdir(args.output))
    print(
        f"{colorizer.checkpoint.path} -> {args.output}: mode {manifest['mode']}, "
        f"{manifest['image_size']}x{manifest['image_size']}, {', '.join(platforms)}, "
        f"{sizes / 1e6:.1f} MB"
    )
    check = manifest.get("onnx", {}).get("check")
    if check:
        print(
            f"colorizer.onnx against the JAX program (onnxruntime {check['onnxruntime']}): "
            f"largest difference of ab {check['max_abs_diff_ab']:.2e}, of r "
            f"{check['max_abs_diff_r']:.2e}"
        )
    elif args.onnx:
        print("colorizer.onnx not checked: onnxruntime is not installed")
    return 0


def serve_command(args: argparse.Namespace) -> int:
    """`aiaic serve`: the page until interrupted."""
    from aiaic_jax import serve

    colorizer = load_colorizer(args)
    try:
        server, service = serve.serve(
            colorizer, args.host, args.port, args.max_upload_mb, colorizer.checkpoint.path
        )
    except OSError as error:
        raise CommandError(f"cannot listen on {args.host}:{args.port} ({error})") from None
    host, port = server.server_address[:2]
    print(f"aiaic serve: http://{host}:{port}/ ({colorizer.checkpoint.path}); Ctrl-C stops it")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        service.close()
    return 0


def cdc_command(args: argparse.Namespace) -> int:
    """`aiaic cdc`: each video's CDC and per-gap values, then the mean; a video that cannot be
    read is reported by name and left out (exit status 1)."""
    from aiaic_jax.evaluation import temporal

    if args.cut_threshold is not None and not args.shots:
        raise CommandError("--cut_threshold is for --shots")
    threshold = None
    if args.shots:
        from aiaic_jax import film

        threshold = film.CUT_THRESHOLD if args.cut_threshold is None else args.cut_threshold
        if not 0 <= threshold <= 1:
            raise CommandError(f"--cut_threshold {threshold}: a distance in [0, 1]")
    measured: dict[str, temporal.Cdc] = {}
    failed = []
    for path in args.videos:
        try:
            result = temporal.video_cdc(path, cut_threshold=threshold)
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
            "within_shots": args.shots,
            "cut_threshold": threshold,
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
    host_memory.retain()
    try:
        return args.handler(args)
    except CommandError as error:
        print(f"aiaic {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
