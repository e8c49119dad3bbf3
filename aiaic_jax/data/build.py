"""Builds an AIAIC dataset: `python -m aiaic_jax.data.build BUILDER --data_dir OUT [options]`.

    python -m aiaic_jax.data.build synthetic --data_dir ~/aiaic_data
    python -m aiaic_jax.data.build vggsound --data_dir ~/aiaic_data --manual_dir ~/vggsound \\
        --train_classes classes_164.txt --ood_classes classes_ood20.txt
    python -m aiaic_jax.data.build ave --data_dir ~/aiaic_data --manual_dir ~/AVE_Dataset
    python -m aiaic_jax.data.build folder --data_dir ~/aiaic_data --manual_dir ~/my_clips \\
        --config_name my_clips --per_second

The options of each builder are the fields of its config dataclass (`--help` after the builder's
name lists them). The dataset lands in `<data_dir>/<builder>/<config_name>/<version>`; a
dataset already there is not rebuilt (pick another --config_name for other options). The build
report goes to stdout after the progress bars; its last line is `pairs=<N> skipped=<M>`. Exit
status: 0 when the build ran (even with skipped inputs), 2 for a bad command line or manual_dir,
1 when the build could not finish.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import traceback
from collections.abc import Sequence
from typing import Any

import tensorflow_datasets as tfds

from aiaic_jax.data.builders import BUILDERS, BuildReport, builder_class
from aiaic_jax.data.builders.media_pairs import EmptySplitError

# Fields every tfds.core.BuilderConfig has; they are not builder options.
_BASE_FIELDS = {f.name for f in dataclasses.fields(tfds.core.BuilderConfig)}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_bool(text: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def builder_options(config_class: type) -> list[dataclasses.Field]:
    """The option fields of a builder config class (those beyond tfds.core.BuilderConfig)."""
    if not dataclasses.is_dataclass(config_class):
        return []
    return [f for f in dataclasses.fields(config_class) if f.name not in _BASE_FIELDS]


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def _sequence_parser(default: Sequence, make: type):
    element = type(default[0]) if len(default) else str
    element = parse_bool if element is bool else element

    def parse(text: str):
        return make(element(piece.strip()) for piece in text.split(",") if piece.strip())

    return parse


def add_options(parser: argparse.ArgumentParser, config_class: type) -> None:
    """One flag per option field; its type follows the field's default."""
    group = parser.add_argument_group(f"{config_class.__name__} options")
    for field in builder_options(config_class):
        default = _default(field)
        flag = f"--{field.name}"
        help_text = f"{field.metadata.get('help', '')} (default: {default!r})".strip()
        if isinstance(default, bool):
            help_text += f"; --no-{field.name} is --{field.name}=false"
            group.add_argument(
                flag, nargs="?", const=True, type=parse_bool, default=argparse.SUPPRESS,
                metavar="true|false", help=help_text,
            )  # fmt: skip
            group.add_argument(
                f"--no-{field.name}", f"--no_{field.name}", dest=field.name,
                action="store_false", default=argparse.SUPPRESS, help=argparse.SUPPRESS,
            )  # fmt: skip
        elif isinstance(default, (tuple, list)):
            group.add_argument(
                flag, type=_sequence_parser(default, type(default)), default=argparse.SUPPRESS,
                metavar="A,B,...", help=help_text,
            )  # fmt: skip
        else:
            kind = type(default) if default is not None else str
            group.add_argument(flag, type=kind, default=argparse.SUPPRESS, help=help_text)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m aiaic_jax.data.build",
        description="Build an AIAIC dataset (TFDS, array_record) and print its build report.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="builder", required=True, metavar="BUILDER")
    summaries = []
    for name in BUILDERS:
        try:
            config_class = builder_class(name).BUILDER_CONFIG_CLASS
        except Exception as error:  # one broken builder must not hide the others
            summaries.append(f"  {name}: unavailable ({error})")
            continue
        sub = subparsers.add_parser(name, help=f"build the {name} dataset")
        sub.add_argument("--data_dir", required=True, help="where datasets are written")
        sub.add_argument("--manual_dir", default=None, help="the local input files")
        sub.add_argument(
            "--config_name", default="default", help="names this set of options: the dataset "
            "goes to <data_dir>/<builder>/<config_name>/<version>",
        )  # fmt: skip
        add_options(sub, config_class)
        flags = " ".join(f"--{f.name}" for f in builder_options(config_class))
        summaries.append(f"  {name}: {flags or '(no options)'}")
    parser.epilog = "builder options (details: BUILDER --help):\n" + "\n".join(summaries)
    return parser


def _fail(message: str, status: int, report: BuildReport | None = None) -> int:
    if report is not None:
        print(report.format(), flush=True)
    print(f"error: {message}", file=sys.stderr, flush=True)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    args = vars(make_parser().parse_args(argv))
    name = args.pop("builder")
    data_dir, manual_dir = args.pop("data_dir"), args.pop("manual_dir")
    config_name = args.pop("config_name")
    cls = builder_class(name)
    try:
        config = cls.BUILDER_CONFIG_CLASS(name=config_name, **args)
    except (TypeError, ValueError) as error:
        return _fail(f"{name}: bad options: {error}", 2)
    builder = cls(config=config, data_dir=data_dir)

    check = getattr(builder, "check_manual_dir", None)
    if check is not None and not builder.data_path.exists():
        try:
            check(manual_dir)
        except FileNotFoundError as error:
            return _fail(str(error), 2)
    if builder.data_path.exists():
        print(f"{builder.data_path} is already built; its report:", flush=True)

    try:
        report = builder.build(manual_dir)
    except ValueError as error:
        return _fail(f"{name}: {error}", 2, builder.report)
    except EmptySplitError as error:
        return _fail(f"{name}: {error}", 1, builder.report)
    except Exception as error:  # report what was done before the build stopped
        traceback.print_exc()
        return _fail(f"{name}: build stopped: {type(error).__name__}: {error}", 1, builder.report)
    # TFDS's progress bars write to stderr; flush them before the report goes to stdout.
    sys.stderr.flush()
    print(f"dataset at {builder.data_path}", flush=True)
    print(report.format(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
