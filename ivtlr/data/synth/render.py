"""Drawing a scene as the image the model sees."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw

from .config import ARROW_RGB, BORDER_RGB, DOT_BORDER_RGB, DOT_PALETTE, PALETTE, START_COLOUR, START_RGB
from .scene import Scene


def _arrow_polygon(x0: int, y0: int, s: int, direction: str) -> list[tuple[float, float]]:
    # (u along the arrow, v across it) in cell units around the centre; the head half carries ~2x the ink of the
    # shaft half, so the direction is visible to a patch-level encoder, not only to the eye.
    uv = [(-0.32, -0.08), (0.0, -0.08), (0.0, -0.28), (0.36, 0.0), (0.0, 0.28), (0.0, 0.08), (-0.32, 0.08)]
    cx, cy = x0 + s / 2, y0 + s / 2
    to_xy = {"right": lambda u, v: (u, v), "left": lambda u, v: (-u, v),
             "down": lambda u, v: (v, u), "up": lambda u, v: (v, -u)}[direction]
    return [(cx + dx * s, cy + dy * s) for dx, dy in (to_xy(u, v) for u, v in uv)]


def dot_box(cell: int, style: str = "small") -> tuple[int, int]:
    """First and last pixel offset (on both axes) of a cell's square dot: small 8..19 (12 px) in a 28 px cell,
    large 6..21 (16 px), quadrant 14..26 (the bottom-right quarter inside the 1 px border). The cell's centre
    pixel is inside the dot in every style (``read_scene`` reads it there)."""
    if style == "quadrant":
        return cell // 2, cell - 2
    side = max(2, cell * (3 if style == "small" else 6) // (7 if style == "small" else 10))
    lo = (cell - side) // 2
    return lo, lo + side - 1


def render(scene: Scene, cell: int = 28, palette: dict[str, tuple[int, int, int]] | None = None,
           dot_style: str = "small") -> Image.Image:
    """Draw the scene: an RGB image of side grid*cell, one filled cell per grid position with a 1 px border, plus
    a centred square dot per cell (dots family; ``palette``: name -> RGB, default DOT_PALETTE) or a black arrow
    (arrows family)."""
    size = scene.grid * cell
    if scene.dots:
        img = Image.new("RGB", (size, size), DOT_BORDER_RGB)
        draw = ImageDraw.Draw(img)
        lo, hi = dot_box(cell, dot_style)
        rgb = (palette or DOT_PALETTE) | {START_COLOUR: START_RGB}
        for i, (colour, dot) in enumerate(zip(scene.colours, scene.dots)):
            r, c = divmod(i, scene.grid)
            x0, y0 = c * cell, r * cell
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=rgb[colour], outline=DOT_BORDER_RGB)
            draw.rectangle([x0 + lo, y0 + lo, x0 + hi, y0 + hi], fill=rgb[dot])
        return img
    img = Image.new("RGB", (size, size), BORDER_RGB)
    draw = ImageDraw.Draw(img)
    for i, (colour, arrow) in enumerate(zip(scene.colours, scene.arrows)):
        r, c = divmod(i, scene.grid)
        x0, y0 = c * cell, r * cell
        rgb = START_RGB if colour == START_COLOUR else PALETTE[colour]
        draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=rgb, outline=BORDER_RGB)
        if arrow is not None:
            draw.polygon(_arrow_polygon(x0, y0, cell, arrow), fill=ARROW_RGB)
    return img


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")  # no timestamps or other varying chunks: same image, same bytes
    return buf.getvalue()
