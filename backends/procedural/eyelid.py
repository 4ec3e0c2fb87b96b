"""Closing eyelids: skin over the eye opening and a lash line, on top of the lid warp.

The warp pulls the lid down over the eye but squeezes the iris into a thin band; a feathered fill
in the lid's own colour covers that, and a soft dark line marks where the lids meet.
"""

from __future__ import annotations

import cv2
import numpy as np

from .interior import curve


def paint_lids(
    frame: np.ndarray, ref_eye: np.ndarray, eye: np.ndarray, closure: float, lid_rgb: np.ndarray, iod: float
) -> None:
    """Cover the part of one eye the lid has closed over (in place).

    ref_eye: the eye's 6 landmarks at rest, head motion applied; eye: the same with the lid moved.
    """
    if closure < 0.05:
        return
    H, W = frame.shape[:2]
    lift = np.array([0.0, 0.04 * iod])  # reach over the resting lashes too
    top = curve(ref_eye[[0, 1, 2, 3]] - [[0, 0], lift, lift, [0, 0]])
    lid = curve(eye[[0, 1, 2, 3]])
    covered = np.concatenate([top, lid[::-1][1:-1]])
    x0, y0 = np.floor(np.minimum(covered.min(0), eye.min(0))).astype(int) - 3
    x1, y1 = np.ceil(np.maximum(covered.max(0), eye.max(0))).astype(int) + 4
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(W, x1), min(H, y1)
    roi = frame[y0:y1, x0:x1]
    off = np.array([x0, y0])
    mask = np.zeros(roi.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round((covered - off) * 8).astype(np.int32)], 255, cv2.LINE_AA, shift=3)
    a = cv2.GaussianBlur(mask, (0, 0), max(0.5, 0.02 * iod)).astype(np.float32) / 255.0
    a *= float(np.clip(closure * 1.3, 0.0, 1.0))
    # Lid skin, a little darker towards the lash line like a real lid in shadow.
    ys = np.arange(y0, y1, dtype=np.float32)[:, None]
    depth = np.clip((ys - top[:, 1].min()) / max(1.0, float(lid[:, 1].max() - top[:, 1].min())), 0, 1)
    col = lid_rgb * (1.0 - 0.12 * depth)[..., None]
    lash = np.zeros(roi.shape[:2], np.uint8)
    thick = max(1, int(round(0.03 * iod)))
    cv2.polylines(lash, [np.round((lid - off) * 8).astype(np.int32)], False, 255, thick, cv2.LINE_AA, shift=3)
    la = cv2.GaussianBlur(lash, (0, 0), 0.5).astype(np.float32) / 255.0 * (0.5 * closure)
    out = roi * (1 - a[..., None]) + col * a[..., None]
    out = out * (1 - la[..., None]) + (lid_rgb * 0.3) * la[..., None]
    roi[:] = out.astype(np.uint8)
