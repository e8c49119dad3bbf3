"""What a stage writes while it trains, on process 0 only: metrics as JSON lines and TensorBoard
scalars, image grids as PNG (and in TensorBoard), and a progress bar with rate and ETA.

    W/<stage>/metrics.jsonl   one object per logged step: step, every loss term, grad/update
                              norms and lr averaged over the steps since the previous line,
                              images/s, steps/s
    W/<stage>/tb/             TensorBoard event files
    W/<stage>/grids/          step_<step>.png: gray | unguided (r = 0) | ours | ground truth
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont


class _ProjectInfo(logging.Filter):
    """Lets through this project's INFO lines and everyone's warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or "aiaic_jax" in record.pathname


def quiet_dependencies() -> None:
    """Keeps absl's log to this project's INFO lines and warnings (orbax's INFO is noisy)."""
    from absl import logging as absl_logging

    handler = absl_logging.get_absl_handler()
    if not any(isinstance(f, _ProjectInfo) for f in handler.filters):
        handler.addFilter(_ProjectInfo())


def _step_of(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None  # a line cut short by a kill


GRID_COLUMNS = ("gray", "unguided", "ours", "truth")
_MIN_TILE = 96  # small images are enlarged (nearest) so the grid stays readable
_CAPTION_HEIGHT = 14


class StageLog:
    """Metrics and grids of one stage; every method does nothing when `enabled` is False."""

    def __init__(self, stage_dir: str | os.PathLike, *, enabled: bool):
        self.enabled = enabled
        self.dir = Path(stage_dir)
        self._jsonl = None
        self._tb = None
        if enabled:
            from tensorboardX import SummaryWriter

            self.dir.mkdir(parents=True, exist_ok=True)
            self._jsonl = open(self.dir / "metrics.jsonl", "a")
            self._tb = SummaryWriter(str(self.dir / "tb"))

    def keep_until(self, step: int) -> None:
        """Drops the metrics lines past `step` (the step training resumes from), so that a
        resumed run's metrics.jsonl holds each step once."""
        if not self.enabled:
            return
        path = self.dir / "metrics.jsonl"
        lines = path.read_text().splitlines(keepends=True)
        kept = [line for line in lines if _step_of(line) is not None and _step_of(line) <= step]
        if len(kept) == len(lines):
            return
        self._jsonl.close()
        partial = path.with_suffix(".jsonl.tmp")
        partial.write_text("".join(kept))
        os.replace(partial, path)
        self._jsonl = open(path, "a")

    def write_config(self, config_json: str) -> None:
        if self.enabled:
            (self.dir / "config.json").write_text(config_json)

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        """One JSON line and one TensorBoard scalar per value."""
        if not self.enabled:
            return
        record = {"step": int(step), **{k: _json_number(v) for k, v in values.items()}}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        for name, value in values.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self._tb.add_scalar(name, value, int(step))
        self._tb.flush()

    def grid(self, step: int, images: Mapping[str, np.ndarray]) -> Path | None:
        """Writes grids/step_<step>.png and the same image to TensorBoard."""
        if not self.enabled:
            return None
        grid = make_grid(images)
        path = self.dir / "grids" / f"step_{step:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid).save(path)
        self._tb.add_image("grid", grid, int(step), dataformats="HWC")
        self._tb.flush()
        return path

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


def make_grid(images: Mapping[str, np.ndarray]) -> np.ndarray:
    """One row per sample: gray | unguided (r = 0) | ours | ground truth, r written under it.

    images: uint8 [B, H, W, 3] under each of GRID_COLUMNS, and "relevance" [B] (NaN: none).
    Returns uint8 [rows * (h + caption), 4 * w, 3].
    """
    tiles = [np.asarray(images[name]) for name in GRID_COLUMNS]
    relevance = np.asarray(images["relevance"], np.float64)
    batch, height, width, _ = tiles[0].shape
    scale = max(1, math.ceil(_MIN_TILE / max(height, width)))
    tile_h, tile_w = height * scale, width * scale
    row_h = tile_h + _CAPTION_HEIGHT
    canvas = Image.new("RGB", (len(tiles) * tile_w, batch * row_h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for row in range(batch):
        top = row * row_h
        for column, tile in enumerate(tiles):
            enlarged = np.repeat(np.repeat(tile[row], scale, axis=0), scale, axis=1)
            canvas.paste(Image.fromarray(enlarged), (column * tile_w, top))
        r = relevance[row]
        caption = "r = n/a" if not math.isfinite(r) else f"r = {r:.2f}"
        if row == 0:
            caption += "   (gray | unguided r=0 | ours | truth)"
        draw.text((2, top + tile_h + 1), caption, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def progress_bar(total: int, initial: int, *, enabled: bool, description: str):
    """tqdm bar with rate and ETA (steps), on process 0 only."""
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        disable=not enabled,
        desc=description,
        unit="step",
        file=sys.stderr,
        dynamic_ncols=True,
    )


def _json_number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/Inf
    return value
