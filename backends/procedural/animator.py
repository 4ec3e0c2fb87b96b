"""ProceduralAnimator: the replica-facing API that turns audio and a session clock into frames.

Stateless between calls by design: all continuity (clock, mouth memory) travels in AnimState, and
per-avatar precomputation is a cache keyed by the avatar's content, so any replica can render any
segment of any session.
"""

from __future__ import annotations

import threading
from dataclasses import replace

import cv2
import numpy as np
from cachetools import LRUCache

from avatar_core.media import held

from . import motion, mouth
from .avatar import Avatar, prepare_avatar
from .eyelid import paint_lids
from .interior import paint_mouth
from .rig import P, PARAMS, Rig, build_rig
from .state import AnimState

SAMPLE_RATE = 16_000


class ProceduralAnimator:
    """CPU talking head: mesh-warped lips, jaw, lids and head over one reference image."""

    def __init__(self, fps: int = 25, seed: int = 0, cache_size: int = 8) -> None:
        if fps <= 0 or SAMPLE_RATE % fps:
            raise ValueError(f"fps must divide {SAMPLE_RATE} (one video frame = a whole number of samples)")
        self.fps = fps
        self.hop = SAMPLE_RATE // fps
        self.seed = int(seed)
        self._rigs: LRUCache[str, Rig] = LRUCache(maxsize=cache_size)
        self._lock = threading.Lock()

    def prepare_avatar(self, image_rgb: np.ndarray) -> Avatar:
        """Find the face once; raises AvatarError if the image has no usable frontal face."""
        avatar = prepare_avatar(image_rgb)
        self._rig(avatar)
        return avatar

    def prepare_rig(self, avatar: Avatar) -> None:
        """Build and cache the rig of an avatar made some other way (a rung's scaled copy)."""
        self._rig(avatar)

    def render(self, avatar: Avatar, audio_16k: np.ndarray, state: AnimState) -> tuple[np.ndarray, AnimState]:
        """Frames (N, H, W, 3) uint8 RGB for this audio, N = ceil(len / (16000 / fps)), and the new state.

        audio_16k: mono 16 kHz, float in [-1, 1] (integer PCM is scaled). Pass the returned state to
        the next render()/idle() call of the same session.
        """
        audio = np.asarray(audio_16k).reshape(-1)
        if audio.dtype.kind in "iu":  # PCM integers: scale to [-1, 1]
            audio = audio.astype(np.float32) / float(np.iinfo(audio.dtype).max + 1)
        audio = audio.astype(np.float32, copy=False)
        if not len(audio):
            return self._empty(avatar), state
        opens, widths, o, w, peak, tilt, tail = mouth.track(
            audio, state.open, state.width, state.peak_db, state.tilt_db, state.tail, self.hop
        )
        frames = self._frames(avatar, state.frame, opens, widths)
        new = replace(state, frame=state.frame + len(opens), open=o, width=w, peak_db=peak, tilt_db=tilt, tail=tail)
        return frames, new

    def idle(self, avatar: Avatar, n_frames: int, state: AnimState) -> tuple[np.ndarray, AnimState]:
        """Listening frames: the same blinks, gaze, sway and breathing, mouth relaxing to closed."""
        n = int(n_frames)
        if n <= 0:
            return self._empty(avatar), state
        opens, widths = mouth.rest(n, state.open, state.width)
        frames = self._frames(avatar, state.frame, opens, widths)
        tail = np.zeros(0, np.float32)  # silence since the last speech
        new = replace(state, frame=state.frame + n, open=float(opens[-1]), width=float(widths[-1]), tail=tail)
        return frames, new

    def params(self, avatar: Avatar, frame0: int, opens: np.ndarray, widths: np.ndarray) -> np.ndarray:
        """The (N, len(PARAMS)) animation parameters of frames frame0.., in the rig's units."""
        rig = self._rig(avatar)
        n = len(opens)
        t = (frame0 + np.arange(n)) / self.fps
        p = np.zeros((n, len(PARAMS)))
        p[:, P["open"]] = opens
        p[:, P["width"]] = widths
        p[:, P["blink"]] = motion.blink(t, self.seed)
        gx, gy = motion.gaze(t, self.seed)
        p[:, P["gaze_x"]] = gx * 0.05 * rig.iod
        p[:, P["gaze_y"]] = gy * 0.05 * rig.iod
        tx, ty, rot = motion.head(t, self.seed)
        p[:, P["tx"]] = tx * rig.motion_scale
        p[:, P["ty"]] = ty * rig.motion_scale
        p[:, P["rot"]] = rot
        return p

    def _frames(self, avatar: Avatar, frame0: int, opens: np.ndarray, widths: np.ndarray) -> np.ndarray:
        rig = self._rig(avatar)
        params = self.params(avatar, frame0, opens, widths)
        img = avatar.image
        out = np.empty((len(params),) + img.shape, np.uint8)
        y0, y1, x0, x1 = rig.region
        rest = np.zeros(len(PARAMS))
        shown = set(held(len(params), avatar.hold))
        for i, p in enumerate(params):
            f = out[i]
            if i not in shown:  # a lower frame rate: the frame before, held (the mux skips it)
                f[:] = out[i - 1]
                continue
            f[:] = img
            f[y0:y1, x0:x1] = cv2.remap(img, rig.sample_map(p), None, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
            pts = rig.landmarks_at(p)
            amount = float(np.clip((p[P["open"]] - 0.03) / 0.17, 0.0, 1.0))
            paint_mouth(f, pts[60:68], amount, rig.teeth_rgb, rig.mouth_width, rig.rest_gap)
            if p[P["blink"]] > 0.05:
                rest[:] = p
                rest[P["blink"]] = 0.0
                ref = rig.landmarks_at(rest)
                for s, lid in ((36, rig.lid_rgb[0]), (42, rig.lid_rgb[1])):
                    paint_lids(f, ref[s : s + 6], pts[s : s + 6], float(p[P["blink"]]), lid, rig.iod)
        return out

    def _empty(self, avatar: Avatar) -> np.ndarray:
        return np.empty((0,) + avatar.image.shape, np.uint8)

    def _rig(self, avatar: Avatar) -> Rig:
        with self._lock:
            rig = self._rigs.get(avatar.key)
            if rig is not None:
                return rig
        rig = build_rig(avatar)
        with self._lock:
            self._rigs[avatar.key] = rig
        return rig
