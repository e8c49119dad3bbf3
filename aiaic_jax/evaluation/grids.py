"""Image grids of an evaluated split: gray | baseline | full | w/o r | ground truth, one pair a row.

Under each row: the pair's position in the split (gray column), the r that `full` used (full
column) and, where the pair's audio is another clip's or missing, that fact (truth column).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from aiaic_jax import color
from aiaic_jax.evaluation.results import SplitEvaluation
from aiaic_jax.evaluation.variants import get_variant

GRID_VARIANTS = ("baseline", "full", "wo_r")
MIN_TILE = 96  # small model resolutions are enlarged (nearest) to at least this many pixels
_MARGIN = 4
_TEXT_HEIGHT = 14
_BACKGROUND = (255, 255, 255)
_TEXT = (0, 0, 0)


def gray_uint8(rgb_u8: np.ndarray) -> np.ndarray:
    """The grey image the model sees: L of `rgb_u8` [..., 3] with a = b = 0, as uint8 sRGB."""
    gray_l, _ = color.rgb_to_l_ab(color.rgb_uint8_to_float(rgb_u8))
    return np.asarray(color.rgb_float_to_uint8(color.gray_rgb_from_l(gray_l)))


def caption_font() -> ImageFont.ImageFont:
    """Pillow's built-in bitmap font: 6 pixels a character, spaces included, the same on every
    machine. (Its scalable default, drawn at 10 pixels, narrows a space to about 2 pixels and
    run words together: "irrelevantaudio".)"""
    return ImageFont.load_default_imagefont()


def grid_image(
    columns: list[tuple[str, np.ndarray]],
    captions: list[list[str]] | None = None,
) -> Image.Image:
    """Tiles images into a grid with a title over each column and a caption under each tile.

    columns: (title, [N, H, W, 3] uint8) for each column, all of the same N, H, W.
    captions: [N][len(columns)] strings (may be empty).
    """
    num_rows, height, width, _ = columns[0][1].shape
    scale = max(1, math.ceil(MIN_TILE / min(height, width)))
    tile_h, tile_w = height * scale, width * scale
    cell_w, cell_h = tile_w + _MARGIN, tile_h + _TEXT_HEIGHT + _MARGIN
    canvas = Image.new(
        "RGB",
        (_MARGIN + cell_w * len(columns), _TEXT_HEIGHT + _MARGIN + cell_h * num_rows),
        _BACKGROUND,
    )
    draw = ImageDraw.Draw(canvas)
    font = caption_font()
    for c, (title, images) in enumerate(columns):
        left = _MARGIN + c * cell_w
        draw.text((left, 1), title, fill=_TEXT, font=font)
        for r in range(num_rows):
            top = _TEXT_HEIGHT + _MARGIN + r * cell_h
            tile = Image.fromarray(images[r]).resize((tile_w, tile_h), Image.Resampling.NEAREST)
            canvas.paste(tile, (left, top))
            if captions and captions[r][c]:
                draw.text((left, top + tile_h + 1), captions[r][c], fill=_TEXT, font=font)
    return canvas


def split_grid(evaluation: SplitEvaluation) -> Image.Image:
    """The grid of an evaluated split's first pairs (`SplitEvaluation.grid_*`)."""
    targets = evaluation.grid_targets
    count = len(targets)
    if count == 0:
        return Image.new("RGB", (MIN_TILE, MIN_TILE), _BACKGROUND)
    shown = [name for name in GRID_VARIANTS if name in evaluation.grid_predictions]
    columns = [("gray", gray_uint8(targets))]
    columns += [(get_variant(name).label, evaluation.grid_predictions[name]) for name in shown]
    columns.append(("ground truth", targets))
    captions = []
    for row in range(count):
        cells = [f"#{int(evaluation.index[row])}"]
        for name in shown:
            r = evaluation.relevance[name][row]
            cells.append(f"r={r:.2f}" if name == "full" else "")
        if not evaluation.has_audio[row]:
            cells.append("no audio")
        elif not evaluation.relevant[row]:
            cells.append("irrelevant audio")
        else:
            cells.append("")
        captions.append(cells)
    return grid_image(columns, captions)
