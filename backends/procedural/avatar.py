"""The prepared avatar: the reference image and its landmarks, found once.

Kept small and picklable (two numpy arrays and a key) because the caller ships it between replicas;
everything derived from it (warp fields, colours) is rebuilt and cached per process by `rig.py`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import cv2
import numpy as np

from .errors import AvatarError
from .landmarks import detect_landmarks

MAX_SIDE = 1024


@dataclass(frozen=True, eq=False)
class Avatar:
    """A face image ready to animate. `image` is RGB uint8 with even sides (yuv420p encodes it);
    `hold`: each rendered frame is shown this many frames (a rung of the quality ladder)."""

    image: np.ndarray
    landmarks: np.ndarray
    key: str = field(default="")
    hold: int = 1

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of every rendered frame."""
        return int(self.image.shape[0]), int(self.image.shape[1])


def scaled(avatar: Avatar, scale: float, hold: int = 1) -> Avatar:
    """The same face at `scale` of its size (each side even), landmarks scaled with it, rendering
    every `hold`-th frame: what a lower rung of the quality ladder renders."""
    h, w = avatar.size
    sw, sh = max(2, round(w * scale / 2) * 2), max(2, round(h * scale / 2) * 2)
    if (sh, sw) == (h, w):
        return Avatar(avatar.image, avatar.landmarks, avatar.key, hold)
    img = np.ascontiguousarray(cv2.resize(avatar.image, (sw, sh), interpolation=cv2.INTER_AREA))
    pts = avatar.landmarks * np.array([sw / w, sh / h], dtype=avatar.landmarks.dtype)
    return Avatar(img, pts, f"{avatar.key}@{sw}x{sh}", hold)


def prepare_avatar(image_rgb: np.ndarray) -> Avatar:
    """Validate, downscale (> 1024 px long side), crop to even sides and find the face once."""
    img = np.asarray(image_rgb)
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise AvatarError(f"expected an HxWx3 uint8 RGB image, got shape {img.shape} dtype {img.dtype}")
    h, w = img.shape[:2]
    if min(h, w) < 64:
        raise AvatarError(f"the image is too small ({w}x{h}); need at least 64 px on each side")
    scale = MAX_SIDE / max(h, w)
    if scale < 1.0:
        img = cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    h, w = img.shape[:2]
    img = np.ascontiguousarray(img[: h - h % 2, : w - w % 2])
    pts = detect_landmarks(img)
    key = hashlib.sha1(img.tobytes() + pts.tobytes()).hexdigest()[:16]
    return Avatar(image=img, landmarks=pts, key=key)
