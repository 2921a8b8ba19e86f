"""Mean landmark layouts for the face stand-ins (worker/liveportrait/face_standins.py).

The stand-in landmark networks output a template plus small image-dependent terms, so the points
fall where the official pipeline expects a face's features: eye corners, lids, lip corners and the
inner-lip pair that drive the crop and the eye/lip ratios. Every value is built from dyadic
constants with plain float64 + - * /, in the face kit's order of operations, so the rounding to
1/256 that follows gives the same numbers on every machine. Changing an expression's order, even to
an algebraically equal one, may change a last bit and with it the generated files.
"""

from __future__ import annotations

import numpy as np

Point = tuple[float, float]


def parabola_arc(count: int, x_start: float, x_end: float, y_ends: float, bulge: float) -> list[Point]:
    """`count` points from x_start to x_end at even steps; y is y_ends at both ends and
    y_ends + bulge in the middle (a parabola in the step parameter t in [-1, 1])."""
    points: list[Point] = []
    for k in range(count):
        t = -1.0 + 2.0 * k / (count - 1) if count > 1 else 0.0
        points.append((x_start + (x_end - x_start) * (t + 1.0) / 2.0, y_ends + bulge * (1.0 - t * t)))
    return points


def closed_ring(count: int, cx: float, cy: float, rx: float, ry: float) -> list[Point]:
    """`count` points round a rounded diamond (two parabolas above, two below), clockwise on
    screen from the left end: index 0 is the left end, count/4 the top, count/2 the right end,
    3·count/4 the bottom."""
    points: list[Point] = []
    for k in range(count):
        u = 4.0 * k / count
        if u <= 2.0:  # upper half, left to right
            t = u - 1.0
            points.append((cx + rx * t, cy - ry * (1.0 - t * t)))
        else:  # lower half, right to left
            t = 3.0 - u
            points.append((cx + rx * t, cy + ry * (1.0 - t * t)))
    return points


def _place(layout: np.ndarray, indices: list[int], points: list[Point]) -> None:
    if len(indices) != len(points):
        raise ValueError(f"{len(indices)} indices for {len(points)} points")
    for index, point in zip(indices, points, strict=True):
        layout[index] = point


# InsightFace numbers its jaw contour from the chin out: walking the contour from the left temple
# to the right one visits 1, 9..16, 2..8, the chin 0, then 24..18, 32..25, 17.
_JAW_WALK = [1, *range(9, 17), *range(2, 9), 0, *range(24, 17, -1), *range(32, 24, -1), 17]


def _eye106(layout: np.ndarray, first: int, cx: float, left: int, top: int, right: int, bottom: int) -> None:
    ring = closed_ring(8, cx, -0.3125, 0.15625, 0.0625)
    named = {left: ring[0], top: ring[2], right: ring[4], bottom: ring[6]}
    for index, point in named.items():
        layout[index] = point
    # The six unnamed indices (in increasing order) take the ring's diagonals, then the centre twice.
    others = [i for i in range(first, first + 10) if i not in named]
    _place(layout, others, [ring[1], ring[3], ring[5], ring[7], (cx, -0.3125), (cx, -0.3125)])


def template106() -> np.ndarray:
    """InsightFace's 106 points, (106, 2) float64, in detection-box units ([-1, 1]², y down):
    0-32 jaw, 33-42 left eye (corners 35 outer and 39 inner, lids 33 top and 40 bottom), 43-51 left
    brow, 52-71 mouth (corners 52 and 61), 72-86 nose, 87-96 right eye (corners 89 inner and 93
    outer, lids 87 and 94), 97-105 right brow."""
    layout = np.zeros((106, 2))
    _place(layout, _JAW_WALK, parabola_arc(33, -0.9375, 0.9375, -0.25, 1.25))
    _eye106(layout, 33, -0.375, left=35, top=33, right=39, bottom=40)
    _eye106(layout, 87, 0.375, left=89, top=87, right=93, bottom=94)
    _place(layout, list(range(43, 52)), parabola_arc(9, -0.6875, -0.125, -0.5, -0.0625))
    _place(layout, list(range(97, 106)), parabola_arc(9, 0.125, 0.6875, -0.5, -0.0625))
    outer = closed_ring(12, 0.0, 0.5, 0.3125, 0.125)
    inner = closed_ring(8, 0.0, 0.5, 0.1875, 0.03125)
    layout[52], layout[61] = outer[0], outer[6]
    mouth_rest = [i for i in range(52, 72) if i not in (52, 61)]
    _place(layout, mouth_rest, outer[1:6] + outer[7:] + inner)
    bridge = [(0.0, -0.25 + 0.0625 * k) for k in range(7)]
    _place(layout, list(range(72, 87)), bridge + parabola_arc(8, -0.1875, 0.1875, 0.1875, 0.0625))
    return layout


def template203(lip: float) -> np.ndarray:
    """LivePortrait's 203 points, (203, 2) float64, in fractions of the 224 crop: 0-23 left eye
    ring (0 outer corner, 6 top lid, 12 inner corner, 18 bottom lid), 24-47 right eye ring (24
    inner, 30 top, 36 outer, 42 bottom), 48-83 outer lip ring (corners 48 and 66), 84-107 inner lip
    ring (90 top, 102 bottom; `lip` is its half-opening), 108-140 jaw, 141-157 and 158-174 brows,
    175-202 nose."""
    layout = np.zeros((203, 2))
    _place(layout, list(range(0, 24)), closed_ring(24, 0.3671875, 0.40625, 0.0546875, 0.01953125))
    _place(layout, list(range(24, 48)), closed_ring(24, 0.6328125, 0.40625, 0.0546875, 0.01953125))
    _place(layout, list(range(48, 84)), closed_ring(36, 0.5, 0.69140625, 0.10546875, 0.04296875))
    _place(layout, list(range(84, 108)), closed_ring(24, 0.5, 0.69140625, 0.06640625, lip))
    _place(layout, list(range(108, 141)), parabola_arc(33, 0.171875, 0.828125, 0.4140625, 0.453125))
    _place(layout, list(range(141, 158)), parabola_arc(17, 0.2578125, 0.45703125, 0.33203125, -0.02734375))
    _place(layout, list(range(158, 175)), parabola_arc(17, 0.54296875, 0.7421875, 0.33203125, -0.02734375))
    ridge = [(0.5, 0.42578125 + 0.0087890625 * k) for k in range(16)]
    nostrils = parabola_arc(12, 0.43359375, 0.56640625, 0.58984375, 0.015625)
    _place(layout, list(range(175, 203)), ridge + nostrils)
    return layout
