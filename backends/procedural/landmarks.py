"""Face detection and 68-point landmarks with dlib, run once per avatar image.

dlib's HOG detector and the iBUG-68 shape predictor (shipped by face-recognition-models) are the
only face model here: they are CPU-only, numpy-2 compatible and take ~20 ms for a 512² image.
"""

from __future__ import annotations

import threading

import numpy as np

from .errors import AvatarError

_lock = threading.Lock()
_models: tuple[object, object] | None = None


def _load() -> tuple[object, object]:
    """Load the detector and predictor once per process (the predictor file is 100 MB)."""
    global _models
    with _lock:
        if _models is None:
            import dlib
            import face_recognition_models

            _models = (
                dlib.get_frontal_face_detector(),
                dlib.shape_predictor(face_recognition_models.pose_predictor_model_location()),
            )
    return _models


def detect_landmarks(image_rgb: np.ndarray) -> np.ndarray:
    """Return the 68 landmarks (float32, (68, 2), x/y pixels) of the best frontal face.

    Tries the detector at native size first and once upsampled (small faces); of several faces the
    one with the highest detector score wins, so printed faces (badges, patches) lose to the sitter.
    Raises AvatarError when there is no face or the face is too small, cut off or turned away.
    """
    import dlib

    detector, predictor = _load()
    h, w = image_rgb.shape[:2]
    rects, scores = [], []
    for upsample in (0, 1):
        rects, scores, _ = detector.run(image_rgb, upsample, 0.0)
        if len(rects):
            break
    if not len(rects):
        raise AvatarError("no face found in the image: use a frontal portrait with the face clearly visible")
    best = rects[int(np.argmax(scores))]
    shape = predictor(image_rgb, dlib.rectangle(best.left(), best.top(), best.right(), best.bottom()))
    pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
    _check_usable(pts, w, h)
    return pts


def _check_usable(pts: np.ndarray, w: int, h: int) -> None:
    """Reject faces the mesh warp cannot animate well: tiny, cut by the border, or in profile."""
    eye_l, eye_r = pts[36:42].mean(0), pts[42:48].mean(0)
    iod = float(np.linalg.norm(eye_r - eye_l))
    if iod < 16:
        raise AvatarError(f"the face is too small to animate ({iod:.0f} px between the eyes, need >= 16)")
    margin = 0.05 * iod
    lo, hi = pts.min(0), pts.max(0)
    if lo[0] < margin or lo[1] < margin or hi[0] > w - 1 - margin or hi[1] > h - 1 - margin:
        raise AvatarError("the face is cut off by the image border: use an image with the whole face inside")
    nose = pts[30]
    d_l, d_r = np.linalg.norm(nose - eye_l), np.linalg.norm(nose - eye_r)
    if abs(d_l - d_r) / (d_l + d_r) > 0.25:
        raise AvatarError("the face is turned too far sideways: use a frontal portrait")
