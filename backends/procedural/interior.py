"""The inside of the open mouth, painted into the inner-lip polygon after the warp.

Stretching the reference's lip pixels apart would show smeared skin; a real open mouth shows a dark
cavity, the upper teeth just under the upper lip, and the tongue low in the mouth. All of it is
shaded by each pixel's place between the upper and lower inner lip, then alpha-blended through a
feathered mask so the lips keep their own edge.
"""

from __future__ import annotations

import cv2
import numpy as np

_CAVITY_TOP = np.array([44.0, 12.0, 10.0])
_CAVITY_LOW = np.array([92.0, 30.0, 27.0])
_TONGUE = np.array([135.0, 55.0, 54.0])


def paint_mouth(
    frame: np.ndarray,
    inner: np.ndarray,
    amount: float,
    teeth_rgb: np.ndarray,
    mouth_width: float,
    rest_gap: float = 0.0,
) -> None:
    """Blend the interior into `frame` (in place) inside `inner`, landmarks 60..67 (8, 2).

    amount: 0 leaves the frame alone, 1 paints the interior fully (the mouth is clearly open).
    rest_gap: px between the lips at rest when the reference shows its teeth (a smile): that much
    of the opening stays teeth (upper and lower rows), so the cavity grows only as the jaw drops
    instead of greying the reference's own teeth.
    """
    if amount <= 0.0:
        return
    H, W = frame.shape[:2]
    x0, y0 = np.floor(inner.min(0)).astype(int) - 2
    x1, y1 = np.ceil(inner.max(0)).astype(int) + 3
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(W, x1), min(H, y1)
    if x1 - x0 < 3 or y1 - y0 < 2:
        return
    roi = frame[y0:y1, x0:x1]
    h, w = roi.shape[:2]
    poly = inner - [x0, y0]
    up = curve(poly[[0, 1, 2, 3, 4]])
    lo = curve(poly[[0, 7, 6, 5, 4]])
    mask = np.zeros((h, w), np.uint8)
    outline = np.concatenate([up, lo[::-1][1:-1]])
    cv2.fillPoly(mask, [np.round(outline * 8).astype(np.int32)], 255, lineType=cv2.LINE_AA, shift=3)
    sigma = max(0.5, 0.025 * mouth_width)
    alpha = cv2.GaussianBlur(mask, (0, 0), sigma).astype(np.float32) * (amount / 255.0)

    # Upper and lower inner-lip curves as functions of x (lists run corner to corner).
    xs = np.arange(w, dtype=np.float64)
    y_up = np.interp(xs, up[:, 0], up[:, 1])
    y_lo = np.interp(xs, lo[:, 0], lo[:, 1])
    gap = np.maximum(y_lo - y_up, 0.5)
    ys = np.arange(h, dtype=np.float64)[:, None]
    v = np.clip((ys - y_up) / gap, 0.0, 1.0)  # 0 at the upper lip, 1 at the lower lip
    below_top = ys - y_up  # px under the upper lip
    # The teeth's edge is a smooth arch even when the inner-lip landmarks are bumpy.
    arch = np.polyval(np.polyfit(xs, y_up, 2), xs) if w >= 4 else y_up
    below_arch = ys - arch
    half = max(0.5 * (poly[4, 0] - poly[0, 0]), 1.0)
    u = np.clip((xs - 0.5 * (poly[0, 0] + poly[4, 0])) / half, -1.0, 1.0)[None, :]

    # Cavity: darker at the top and at the corners, a little lighter low down.
    shade = (1.0 - 0.45 * u**2)[..., None]
    col = (_CAVITY_TOP + (_CAVITY_LOW - _CAVITY_TOP) * v[..., None] ** 1.5) * shade
    # Tongue: a soft mound resting on the lower lip, showing more the wider the mouth opens.
    big = np.clip(gap / (0.22 * mouth_width), 0.0, 1.0)[None, :]
    tw = np.clip(1.0 - u**2 / 0.5 - ((1.0 - v) / (0.25 + 0.2 * big)) ** 2, 0.0, 1.0) ** 0.6
    tongue = _TONGUE * shade * (0.75 + 0.25 * v[..., None])
    col += (tongue - col) * (tw * (0.5 + 0.4 * big) * amount)[..., None]
    corners = np.clip((0.9 - np.abs(u)) / 0.3, 0.0, 1.0)  # corners show cheek-side darkness, not teeth
    # Upper teeth: a light band under the upper lip (the resting smile's share of it at least).
    rest_profile = rest_gap * np.clip(1.0 - u**2, 0.0, 1.0)
    up_h = np.minimum(np.maximum(0.075 * mouth_width, 0.55 * rest_profile), np.maximum(0.32 * gap, 0.55 * rest_profile))
    t = np.clip((up_h - below_arch) / 1.2 + 0.5, 0.0, 1.0) * corners
    # Teeth are shaded by the upper lip at the top and catch the light at their edge.
    tv = np.clip(below_arch / np.maximum(up_h, 1.0), 0, 1)
    teeth = teeth_rgb * (0.78 + 0.22 * np.sqrt(tv))[..., None]
    col += (teeth * shade**0.5 - col) * t[..., None]
    # Lower teeth: the resting smile's lower row rides on the jaw; otherwise a faint hint when wide open.
    above_lo = y_lo[None, :] - ys
    lo_h = np.maximum(0.45 * rest_profile, 0.04 * mouth_width)
    lt = np.clip((lo_h - above_lo) / 1.2 + 0.5, 0.0, 1.0) * corners
    strength = 0.9 if rest_gap > 0 else 0.35 * np.clip((gap - 0.15 * mouth_width) / (0.1 * mouth_width), 0, 1)
    col += (teeth_rgb * shade**0.5 * 0.9 - col) * (lt * strength)[..., None]

    a = alpha[..., None]
    roi[:] = (roi * (1.0 - a) + col * a).astype(np.uint8)


def curve(p: np.ndarray, sub: int = 4) -> np.ndarray:
    """Catmull-Rom through the points (ends clamped): lips are curves, not polylines."""
    q = np.concatenate([p[:1], p, p[-1:]])
    t = np.linspace(0, 1, sub, endpoint=False)[:, None]
    segs = []
    for i in range(1, len(q) - 2):
        p0, p1, p2, p3 = q[i - 1], q[i], q[i + 1], q[i + 2]
        a, b, c = -p0 + p2, 2 * p0 - 5 * p1 + 4 * p2 - p3, -p0 + 3 * p1 - 3 * p2 + p3
        segs.append(0.5 * (2 * p1 + a * t + b * t**2 + c * t**3))
    segs.append(p[-1:])
    return np.concatenate(segs)
