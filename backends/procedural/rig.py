"""Per-avatar rig: which landmarks each animation parameter moves, and the warp bases for them.

Built once per avatar per process (tens of ms) and cached by the animator, so the Avatar that the
caller pickles stays small. Units scale with the face (mouth width, eye distance), so any image
size animates the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .avatar import Avatar
from .warp import backward_field, border_anchors, nonzero_box

# Parameter order of a frame's vector (see motion.py and mouth.py for what drives each one).
PARAMS = ("open", "width", "blink", "gaze_x", "gaze_y", "tx", "ty", "rot")
P = {name: i for i, name in enumerate(PARAMS)}

# Jaw contour points dragged down when the mouth opens, with their share of the chin's drop.
_JAW_DROP = {3: 0.08, 4: 0.25, 5: 0.5, 6: 0.75, 7: 0.92, 8: 1.0, 9: 0.92, 10: 0.75, 11: 0.5, 12: 0.25, 13: 0.08}


@dataclass
class Basis:
    """A backward displacement field on a sub-rectangle (y0, y1, x0, x1) of the rig's region."""

    box: tuple[int, int, int, int]
    field: np.ndarray


@dataclass
class Rig:
    """Everything render() needs for one avatar, derived deterministically from it."""

    region: tuple[int, int, int, int]  # y0, y1, x0, x1 of the warped head region in the image
    grid: np.ndarray  # (h, w, 2) absolute pixel coordinates of the region
    head: list[np.ndarray]  # backward fields for unit tx, ty, rot (radians), (h, w, 2) each
    local: dict[str, Basis]  # open, width, blink, gaze_x, gaze_y
    moves: dict[str, np.ndarray]  # forward landmark displacement (68, 2) per unit parameter
    landmarks: np.ndarray
    pivot: np.ndarray
    head_weight_at_landmarks: np.ndarray  # (68,)
    mouth_width: float
    iod: float
    teeth_rgb: np.ndarray
    rest_gap: float  # px between the inner lips at rest when the reference shows teeth, else 0
    lid_rgb: tuple[np.ndarray, np.ndarray]
    motion_scale: float  # px of head translation per unit of the motion model

    def landmarks_at(self, p: np.ndarray) -> np.ndarray:
        """Forward landmark positions (68, 2) for one frame's parameter vector."""
        pts = self.landmarks.astype(np.float64).copy()
        for name in ("open", "width", "blink"):
            if p[P[name]]:
                pts += p[P[name]] * self.moves[name]
        rel = pts - self.pivot
        rot = p[P["rot"]] * np.stack([-rel[:, 1], rel[:, 0]], -1)
        pts += self.head_weight_at_landmarks[:, None] * (rot + [p[P["tx"]], p[P["ty"]]])
        return pts

    def sample_map(self, p: np.ndarray) -> np.ndarray:
        """Absolute remap coordinates (h, w, 2) float32 of the region for one frame."""
        m = self.grid.copy()
        for k, name in enumerate(("tx", "ty", "rot")):
            v = float(p[P[name]])
            if v:
                m += np.float32(v) * self.head[k]
        for name, b in self.local.items():
            v = float(p[P[name]])
            if abs(v) > 1e-3:
                y0, y1, x0, x1 = b.box
                m[y0:y1, x0:x1] += np.float32(v) * b.field
        return m


def build_rig(avatar: Avatar) -> Rig:
    """Design the landmark motions for this face and precompute their warp fields."""
    img, L = avatar.image, avatar.landmarks.astype(np.float64)
    H, W = img.shape[:2]
    eye_l, eye_r = L[36:42].mean(0), L[42:48].mean(0)
    iod = float(np.linalg.norm(eye_r - eye_l))
    mw = float(np.linalg.norm(L[54] - L[48]))
    brow_top = float(L[17:27, 1].min())
    chin = float(L[8, 1])
    fh = chin - brow_top
    fw = float(L[16, 0] - L[0, 0])

    # Head region: face plus hair and some neck, where head motion fades out to zero.
    centre = np.array([L[:17, 0].mean(), brow_top + 0.35 * fh])
    radii = np.array([0.5 * fw * 1.3, 0.5 * fh * 1.9])
    reach = 1.5
    x0, x1 = int(max(0, centre[0] - reach * radii[0])), int(min(W, centre[0] + reach * radii[0] + 1))
    y0, y1 = int(max(0, centre[1] - reach * radii[1])), int(min(H, centre[1] + reach * radii[1] + 1))
    h, w = y1 - y0, x1 - x0
    gy, gx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    grid = np.stack([gx, gy], -1)
    r = np.sqrt(((gx - centre[0]) / radii[0]) ** 2 + ((gy - centre[1]) / radii[1]) ** 2)
    wt = _smoothstep(1.4, 1.0, r).astype(np.float32)
    pivot = np.array([centre[0], chin + 0.3 * fh])
    head = [
        -np.stack([wt, np.zeros_like(wt)], -1),
        -np.stack([np.zeros_like(wt), wt], -1),
        -np.stack([-(gy - pivot[1]) * wt, (gx - pivot[0]) * wt], -1).astype(np.float32),
    ]
    rl = np.sqrt(((L[:, 0] - centre[0]) / radii[0]) ** 2 + ((L[:, 1] - centre[1]) / radii[1]) ** 2)

    moves = _landmark_moves(L, mw)
    skin = _skin_colour(img, L)
    teeth, real_teeth = _teeth_colour(img, L)
    # Fixed anchors: the region border, plus a ring below/around the jaw so the neck stays put.
    origin = np.array([x0, y0], np.float64)
    face_c = L[:17].mean(0)
    ring = face_c + (L[2:15] - face_c) * 1.7
    # Lid creases above each upper lid: they follow the lid part way, spreading the stretch.
    lids = L[[37, 38, 43, 44]]
    eye_h = (L[[41, 40, 47, 46], 1] - lids[:, 1])[:, None]
    crease = lids - [0.0, 1.0] * eye_h
    # Mid-cheek points level with the nose hold the mouth's motion to the lower face.
    cheeks = np.stack([(L[2] + L[31]) / 2, (L[14] + L[35]) / 2, (L[1] + L[31]) / 2, (L[15] + L[35]) / 2])
    extra = np.concatenate([ring, cheeks, crease])
    pts = np.concatenate([L, extra]) - origin
    anchors = border_anchors(w, h, step=max(w, h) / 6)
    all_pts = np.concatenate([pts, anchors])
    pad = np.zeros((len(extra) + len(anchors), 2))
    crease_moves = 0.45 * moves["blink"][[37, 38, 43, 44]]
    extra_moves = {
        "open": pad,
        "width": pad,
        "blink": np.concatenate([np.zeros((len(ring) + len(cheeks), 2)), crease_moves, np.zeros((len(anchors), 2))]),
    }
    local: dict[str, Basis] = {}
    blur = {"open": 0.03 * mw, "width": 0.03 * mw, "blink": 0.012 * iod}
    for name in ("open", "width", "blink"):
        f = backward_field((h, w), all_pts, np.concatenate([moves[name], extra_moves[name]]), blur[name])
        by0, by1, bx0, bx1 = nonzero_box(f)
        local[name] = Basis((by0, by1, bx0, bx1), np.ascontiguousarray(f[by0:by1, bx0:bx1]))
    local.update(_gaze_bases(L, origin, (h, w)))

    return Rig(
        region=(y0, y1, x0, x1), grid=grid, head=head, local=local, moves=moves, landmarks=L,
        pivot=pivot, head_weight_at_landmarks=_smoothstep(1.4, 1.0, rl), mouth_width=mw, iod=iod,
        teeth_rgb=teeth,
        rest_gap=float(np.mean(L[[67, 66, 65], 1] - L[[61, 62, 63], 1])) if real_teeth else 0.0,
        lid_rgb=(0.25 * _lid_colour(img, L, 36) + 0.7 * skin, 0.25 * _lid_colour(img, L, 42) + 0.7 * skin),
        motion_scale=fw / 80.0,
    )


def _landmark_moves(L: np.ndarray, mw: float) -> dict[str, np.ndarray]:
    """Forward displacement of each landmark for a unit parameter (the face's 'muscles')."""
    down = np.array([0.0, 1.0])
    # open: the jaw rotates down; the lower lip rides on it, the upper lip lifts a little.
    drop = 0.25 * mw
    o = np.zeros((68, 2))
    for i, s in _JAW_DROP.items():
        o[i] = down * 1.05 * drop * s
        o[i, 0] += (L[8, 0] - L[i, 0]) * 0.04 * s  # the jaw narrows slightly as it drops
    # The lower lip bows: full drop in the middle, less towards the corners (no flat-bottomed box).
    for i, s in ((57, 1.0), (66, 1.0), (56, 0.88), (58, 0.88), (65, 0.82), (67, 0.82), (55, 0.6), (59, 0.6)):
        o[i] = down * s * drop
    for i in (48, 54, 60, 64):
        o[i] = down * 0.3 * drop
        o[i, 0] += np.sign(L[51, 0] - L[i, 0]) * 0.04 * mw  # corners come in when the jaw opens
    for i in (61, 62, 63):
        o[i] = -down * 0.10 * drop
    for i in (50, 51, 52):
        o[i] = -down * 0.06 * drop
    # width: +1 spreads the lips (ee), -1 rounds them (oo); corners move, lips thin or purse.
    wd = np.zeros((68, 2))
    cx = L[51, 0]
    for i, s in ((48, 1.0), (60, 0.9), (54, 1.0), (64, 0.9), (49, 0.45), (59, 0.45), (53, 0.45), (55, 0.45)):
        wd[i, 0] = np.sign(L[i, 0] - cx) * 0.10 * mw * s
        wd[i, 1] = -0.02 * mw * s
    for i in (61, 62, 63):
        wd[i, 1] = 0.025 * mw
    for i in (65, 66, 67):
        wd[i, 1] = -0.025 * mw
    # blink: the upper lid comes down to just above the lower lid.
    b = np.zeros((68, 2))
    for up, lo in ((37, 41), (38, 40), (43, 47), (44, 46)):
        b[up] = 0.92 * (L[lo] - L[up])
    return {"open": o, "width": wd, "blink": b}


def _gaze_bases(L: np.ndarray, origin: np.ndarray, shape: tuple[int, int]) -> dict[str, Basis]:
    """Iris shift: a smooth bump inside each eye's opening, zero on the lids and corners."""
    h, w = shape
    pts_all = np.concatenate([L[36:42], L[42:48]]) - origin
    ex0, ey0 = np.floor(pts_all.min(0)).astype(int) - 2
    ex1, ey1 = np.ceil(pts_all.max(0)).astype(int) + 3
    ex0, ey0, ex1, ey1 = max(0, ex0), max(0, ey0), min(w, ex1), min(h, ey1)
    gy, gx = np.mgrid[ey0:ey1, ex0:ex1].astype(np.float64)
    bump_all = np.zeros(gx.shape)
    for s in (36, 42):
        e = L[s : s + 6] - origin
        c = e.mean(0)
        a = 0.5 * np.linalg.norm(e[3] - e[0]) * 0.85
        bh = 0.5 * (np.linalg.norm(e[1] - e[5]) + np.linalg.norm(e[2] - e[4])) * 0.5 * 0.9
        q = 1 - ((gx - c[0]) / a) ** 2 - ((gy - c[1]) / max(bh, 1.0)) ** 2
        bump_all += np.clip(q, 0, 1) ** 2
    bump = bump_all.astype(np.float32)
    box = (int(ey0), int(ey1), int(ex0), int(ex1))
    zero = np.zeros_like(bump)
    return {"gaze_x": Basis(box, -np.stack([bump, zero], -1)), "gaze_y": Basis(box, -np.stack([zero, bump], -1))}


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _teeth_colour(img: np.ndarray, L: np.ndarray) -> tuple[np.ndarray, bool]:
    """Teeth colour and whether the reference shows teeth: its own teeth if so, else ivory lit like the skin."""
    mask = np.zeros(img.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(L[60:68]).astype(np.int32)], 1)
    inner = img[mask > 0].astype(np.float64)
    skin = _skin_colour(img, L)
    lum = float(skin @ [0.299, 0.587, 0.114])
    # Ivory in the photo's own light (its colour cast kept, or teeth look blue next to the skin),
    # a little brighter than the skin.
    ivory = 0.7 * skin + 0.3 * lum + np.array([4.0, 2.0, -6.0])
    default = ivory * np.clip(1.15 * lum / float(ivory @ [0.299, 0.587, 0.114]), 0.45, 1.0)
    if len(inner) >= 12:
        bright = inner[inner.sum(1) > np.percentile(inner.sum(1), 70)]
        c = bright.mean(0)
        if c.min() > 120 and c.max() - c.min() < 70:  # light and not lip-red: real teeth
            return np.clip(0.5 * c + 0.5 * default, 0, 255), True
    return np.clip(default, 0, 255), False


def _skin_colour(img: np.ndarray, L: np.ndarray) -> np.ndarray:
    """Median colour of the cheeks between the nose and the jaw."""
    samples = []
    for a, b in ((31, 2), (35, 14), (33, 8)):
        p = (L[a] * 0.5 + L[b] * 0.5).round().astype(int)
        y, x = np.clip(p[1], 2, img.shape[0] - 3), np.clip(p[0], 2, img.shape[1] - 3)
        samples.append(img[y - 2 : y + 3, x - 2 : x + 3].reshape(-1, 3))
    return np.median(np.concatenate(samples), axis=0).astype(np.float64)


def _lid_colour(img: np.ndarray, L: np.ndarray, start: int) -> np.ndarray:
    """Eyelid skin colour: the band between the upper lid and the brow above it."""
    eye = L[start : start + 6]
    brow = L[17:22] if start == 36 else L[22:27]
    top = eye[[1, 2]].mean(0)
    by = brow[:, 1].max()
    ys = np.linspace(top[1] - 0.2 * (top[1] - by), top[1] - 0.6 * (top[1] - by), 4)
    xs = np.linspace(eye[1, 0], eye[2, 0], 4)
    yy, xx = np.meshgrid(ys.round().astype(int), xs.round().astype(int))
    yy, xx = np.clip(yy, 0, img.shape[0] - 1), np.clip(xx, 0, img.shape[1] - 1)
    return np.median(img[yy.ravel(), xx.ravel()].astype(np.float64), axis=0)
