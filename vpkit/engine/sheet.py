"""Sample sheets, like SRVP's figures: for each example video, the ground truth, the best and the worst sample by a
metric and a few random samples, as a PNG (time along x, one labelled row each) and an animated GIF (one column
each, all videos stacked). Context frames have a green border, predictions red, the true future blue."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from vpkit.engine import media

PAD = 2


def _rows(example: dict[str, Any], metric: str) -> list[tuple[str, torch.Tensor]]:
    """The sheet rows of one example: (label, future `[horizon, C, H, W]`)."""
    rows = [("truth", example["truth"])]
    if metric in example.get("best", {}):
        rows.append((f"best {metric} ({example['best_score'][metric]:.3g})", example["best"][metric]))
    if metric in example.get("worst", {}):
        rows.append((f"worst {metric} ({example['worst_score'][metric]:.3g})", example["worst"][metric]))
    rows += [(f"random {k + 1}", sample) for k, sample in enumerate(example["samples"])]
    return rows


def _strip(context: torch.Tensor, future: torch.Tensor, kind: str) -> np.ndarray:
    """One row: the context then `future`, frames side by side with coloured borders, uint8 `[h, w, 3]`."""
    frames = [media.add_border(media.to_uint8(context[t:t + 1]), media.BORDER_COLOURS["context"])[0]
              for t in range(context.shape[0])]
    frames += [media.add_border(media.to_uint8(future[t:t + 1]), media.BORDER_COLOURS[kind])[0]
               for t in range(future.shape[0])]
    return media.join_columns([f[None] for f in frames], pad=PAD)[0]


def _label_column(labels: Sequence[str], heights: Sequence[int], width: int) -> np.ndarray:
    image = Image.new("RGB", (width, sum(heights)), "white")
    draw = ImageDraw.Draw(image)
    top = 0
    for label, height in zip(labels, heights, strict=True):
        draw.text((4, top + max(0, height // 2 - 6)), label, fill="black")
        top += height
    return np.asarray(image)


def sheet_image(examples: Sequence[dict[str, Any]], metric: str) -> np.ndarray:
    """The PNG sheet as uint8 `[H, W, 3]`: a block of labelled rows per example, white between blocks."""
    blocks = []
    for example in examples:
        rows = _rows(example, metric)
        strips = [_strip(example["context"], future, "truth" if i == 0 else "sample")
                  for i, (_, future) in enumerate(rows)]
        gap = np.full((PAD, strips[0].shape[1], 3), 255, np.uint8)
        body = np.concatenate([part for s in strips for part in (s, gap)][:-1])
        heights = [s.shape[0] + PAD for s in strips]
        heights[-1] -= PAD
        labels = _label_column([label for label, _ in rows], heights, width=150)
        blocks.append(np.concatenate([labels, body], axis=1))
    width = max(b.shape[1] for b in blocks)
    padded = [np.pad(b, ((0, 3 * PAD), (0, width - b.shape[1]), (0, 0)), constant_values=255) for b in blocks]
    return np.concatenate(padded)[: -3 * PAD]


def sheet_frames(examples: Sequence[dict[str, Any]], metric: str) -> np.ndarray:
    """The GIF: per example a panel whose columns are the sheet's rows after the truth (best, worst, random...) and
    the truth last, playing context then future; examples stacked top to bottom. uint8 `[T0 + horizon, H, W, 3]`."""
    panels = []
    for example in examples:
        samples = torch.stack([future for _, future in _rows(example, metric)[1:]])
        panels.append(media.sample_panel_frames(example["context"], samples, example["truth"]))
    return media.stack_panels(panels)


def save_sample_sheet(examples: Sequence[dict[str, Any]], metric: str, png_path: Path | str,
                      gif_path: Path | str, fps: float = 4.0) -> tuple[Path, Path]:
    """Write the sheet of `examples` (the evaluator's `EvalResult.examples`) ranked by `metric` as PNG and GIF."""
    png = media.save_png(png_path, sheet_image(examples, metric))
    gif = media.save_gif(gif_path, sheet_frames(examples, metric), fps=fps)
    return png, gif
