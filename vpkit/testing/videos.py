"""Real video files for tests and benchmarks: synthetic content, encoded by the ffmpeg binary imageio-ffmpeg ships.

`moving_shapes` draws a disc and a square gliding over a smooth gradient: deterministic for a seed, soft-edged so
that h264's 4:2:0 chroma keeps the colours close, and easy to compress. Decoded h264 frames score 35-45 dB PSNR
against the source; mpeg4 (in AVI) about 32 dB at 64x64. `write_test_video` encodes such frames to any container
and codec ffmpeg knows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Width in pixels of the shapes' soft edges: 4:2:0 chroma is half resolution, so a sharp edge between saturated
# colours loses several dB of PSNR in the round trip; a three-pixel ramp keeps it above 35 dB.
EDGE = 3.0


def moving_shapes(num_frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """A disc and a square moving at constant speed and bouncing off the edges: uint8 `[T, H, W, 3]`.

    Positions, speeds, colours and the background gradient come from `seed`; each shape travels about a tenth of
    the frame per 10 frames, smooth enough for motion prediction and for inter-frame compression.
    """
    if num_frames < 1 or height < 4 or width < 4:
        raise ValueError(f"need at least 1 frame of 4x4 pixels, got {num_frames} frames of {height}x{width}")
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    # Background: a gentle diagonal gradient between two dark colours.
    ramp = (ys / height + xs / width)[..., None] / 2
    low, high = rng.uniform(20, 70, 3), rng.uniform(70, 120, 3)
    background = np.round(low + (high - low) * ramp).astype(np.uint8)

    side = min(height, width)
    shapes = []
    for kind in ("disc", "square"):
        radius = side * rng.uniform(0.12, 0.2)
        centre = np.array([rng.uniform(radius, height - radius), rng.uniform(radius, width - radius)])
        angle = rng.uniform(0, 2 * np.pi)
        velocity = side * 0.012 * np.array([np.sin(angle), np.cos(angle)])
        colour = rng.uniform(110, 240, 3) * np.where(rng.permutation(3) == 0, 0.4, 1.0)  # one channel dimmed
        shapes.append((kind, radius, centre, velocity, colour.astype(np.float32)))

    video = np.empty((num_frames, height, width, 3), np.uint8)
    limits = np.array([height, width], np.float64)
    for t in range(num_frames):
        frame = video[t]
        frame[...] = background
        for kind, radius, centre, velocity, colour in shapes:
            # Reflect the straight path off the edges: a triangle wave in each axis over [radius, limit - radius].
            span = limits - 2 * radius
            travel = np.mod(centre - radius + velocity * t, 2 * span)
            cy, cx = radius + np.where(travel > span, 2 * span - travel, travel)
            # Draw only inside the shape's bounding box (plus the soft edge): a 640x360 frame stays cheap.
            top, bottom = int(max(cy - radius - EDGE, 0)), int(min(cy + radius + EDGE + 1, height))
            left, right = int(max(cx - radius - EDGE, 0)), int(min(cx + radius + EDGE + 1, width))
            dy, dx = ys[top:bottom, left:right] - cy, xs[top:bottom, left:right] - cx
            if kind == "disc":
                distance = np.sqrt(dy**2 + dx**2) - radius
            else:
                distance = np.maximum(np.abs(dy), np.abs(dx)) - radius
            cover = np.clip(0.5 - distance / EDGE, 0.0, 1.0)[..., None]
            patch = frame[top:bottom, left:right]
            patch[...] = np.round(patch * (1 - cover) + colour * cover)
    return video


def write_test_video(path: str | Path, frames: np.ndarray, fps: float = 25, codec: str = "libx264",
                     quality: float = 8) -> Path:
    """Encode uint8 RGB frames `[T, H, W, 3]` to `path` with the real ffmpeg (yuv420p), and return the path.

    The container follows the suffix (`.mp4`, `.mkv`, `.avi`, ...); `codec` is any encoder that ffmpeg build has
    (`libx264`, `mpeg4`, ...). `quality` is imageio-ffmpeg's 1-10 scale (8 is crf 10 for h264, near lossless).
    H and W must be even, as yuv420p needs.
    """
    import imageio_ffmpeg

    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {list(frames.shape)}")
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"yuv420p needs an even height and width, got {height}x{width}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = imageio_ffmpeg.write_frames(
        str(path), (width, height), fps=fps, codec=codec, quality=quality, pix_fmt_out="yuv420p",
        macro_block_size=1,  # the even check above is all yuv420p needs; 16 would rescale e.g. 360 rows to 368
        ffmpeg_log_level="error",
    )
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    return path
