"""The procedural animator against real speech (jfk.flac) and a real portrait (astronaut.png).

Everything is measured from the rendered pixels, never from the animator's internal parameters:
mouth opening vs the audio envelope, the rest of the face vs the reference (SSIM), blinks from the
eye pixels, and the size of the jump where consecutive segments meet.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

from backends.procedural import AnimState, AvatarError, ProceduralAnimator
from avatar_core.media import decode_audio

ROOT = Path(__file__).resolve().parents[1]
JFK = ROOT / "assets" / "media" / "jfk.flac"
ASTRONAUT = ROOT / "assets" / "avatars" / "astronaut.png"
HOP = 640
LUMA = np.array([0.299, 0.587, 0.114], np.float32)


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
        return decode_audio(JFK.read_bytes(), 60)


@pytest.fixture(scope="module")
def anim() -> ProceduralAnimator:
    return ProceduralAnimator(fps=25, seed=0)


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(ASTRONAUT)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def avatar(anim, reference):
    return anim.prepare_avatar(reference)


@pytest.fixture(scope="module")
def speech(anim, avatar, audio) -> np.ndarray:
    frames, _ = anim.render(avatar, audio, AnimState())
    return frames


def grey(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) @ LUMA


def envelope(audio: np.ndarray) -> np.ndarray:
    """RMS of each 40 ms video frame of the audio."""
    n = -(-len(audio) // HOP)
    x = np.pad(audio, (0, n * HOP - len(audio)))
    return np.sqrt((x.reshape(n, HOP) ** 2).mean(1))


def mouth_box(lm: np.ndarray) -> tuple[slice, slice]:
    """The mouth and the room below it that an opening jaw uses (from the reference landmarks)."""
    mw = lm[54, 0] - lm[48, 0]
    return slice(int(lm[50:53, 1].min()), int(lm[57, 1] + 0.4 * mw)), slice(int(lm[48, 0]), int(lm[54, 0]) + 1)


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM (Wang et al. 2004) per pixel, Gaussian window sigma 1.5, on 0..255 grey images."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(x: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(x, (11, 11), 1.5)

    mu_a, mu_b = blur(a), blur(b)
    va, vb, cov = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2, blur(a * b) - mu_a * mu_b
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2))


def step_sizes(frames: np.ndarray) -> np.ndarray:
    """Mean absolute difference between each pair of neighbouring frames."""
    f = frames.astype(np.int16)
    return np.abs(np.diff(f, axis=0)).mean(axis=(1, 2, 3))


def jump(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_frame_count_is_ceil_of_samples_over_640(anim, avatar):
    state = AnimState()
    for n_samples in (1, 639, 640, 641, 16_001):
        frames, state = anim.render(avatar, np.zeros(n_samples, np.float32), state)
        assert frames.shape == (-(-n_samples // HOP),) + avatar.image.shape
        assert frames.dtype == np.uint8
    frames, state2 = anim.render(avatar, np.zeros(0, np.float32), state)
    assert frames.shape[0] == 0 and state2.frame == state.frame
    frames, state3 = anim.idle(avatar, 7, state)
    assert frames.shape[0] == 7 and state3.frame == state.frame + 7


def test_mouth_opening_follows_the_audio_envelope(avatar, speech, audio):
    ys, xs = mouth_box(avatar.landmarks)
    # Openness read from pixels: dark (cavity) pixels in the mouth box.
    dark = (grey(speech[:, ys, xs]) < 70).sum(axis=(1, 2)).astype(np.float64)
    env = envelope(audio)
    assert len(dark) == len(env)
    r = float(np.corrcoef(dark, env)[0, 1])
    assert r >= 0.7, f"mouth opening vs RMS envelope: Pearson r = {r:.3f}"
    # Silence closes the mouth: frames in pauses (quiet for 2 frames either side, as the mouth
    # leads the sound by a frame and closes over a few) show (almost) no cavity.
    loudest_near = np.max([np.roll(np.pad(env, 2), k)[2:-2] for k in range(-2, 3)], axis=0)
    quiet = loudest_near < np.percentile(env, 20)
    assert quiet.sum() >= 20
    ref_dark = (grey(avatar.image[ys, xs]) < 70).sum()
    assert dark[quiet].mean() <= ref_dark + 5
    assert dark.max() > 10 * (ref_dark + 5), "the mouth never visibly opens"


def test_face_outside_mouth_and_eyes_stays_the_reference(avatar, speech):
    """SSIM >= 0.9 on every frame over the face minus mouth/jaw and eyes.

    Head sway moves the whole face on purpose (1-2 px, about 1 degree), which SSIM punishes on fine
    skin and hair texture; so each frame is first aligned back onto the reference by a rigid
    (rotation + translation) transform that ECC estimates from the frame's own pixels over the same
    mask. What SSIM then sees is any non-rigid change: smearing, seams, the mouth leaking upwards.
    """
    lm = avatar.landmarks
    fh = lm[8, 1] - lm[17:27, 1].min()
    face = np.zeros(avatar.size, np.uint8)
    forehead = lm[17:27] - [0, 0.35 * fh]
    cv2.fillPoly(face, [cv2.convexHull(np.concatenate([lm[:27], forehead]).astype(np.int32))], 1)
    face[int(lm[33, 1]) :, :] = 0  # mouth, jaw and chin: below the tip of the nose
    iod = np.linalg.norm(lm[36:42].mean(0) - lm[42:48].mean(0))
    for s in (36, 42):  # eyes and lids, with room for blinks and gaze
        x0, y0 = (lm[s : s + 6].min(0) - 0.15 * iod).astype(int)
        x1, y1 = (lm[s : s + 6].max(0) + 0.15 * iod).astype(int)
        face[y0 - int(0.1 * iod) : y1, x0:x1] = 0
    ys, xs = np.nonzero(face)
    crop = slice(ys.min() - 12, ys.max() + 13), slice(xs.min() - 12, xs.max() + 13)
    mask = face[crop]
    keep = mask.astype(bool)
    assert keep.sum() > 2000
    ref = grey(avatar.image[crop])
    h, w = ref.shape
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-5)
    scores = []
    for f in speech:
        g = grey(f[crop])
        _, m = cv2.findTransformECC(ref, g, np.eye(2, 3, dtype=np.float32), cv2.MOTION_EUCLIDEAN, criteria, mask, 5)
        assert np.abs(m[:, 2]).max() < 4 and abs(m[1, 0]) < np.sin(np.deg2rad(3)), f"head moved too far: {m}"
        back = cv2.warpAffine(g, m, (w, h), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP)
        scores.append(ssim_map(back, ref)[keep].mean())
    scores = np.array(scores)
    assert scores.min() >= 0.9, f"SSIM outside mouth/eyes: min {scores.min():.3f} at frame {scores.argmin()}"


def test_blinks_5_to_15_in_30_s_of_idle(anim, avatar):
    frames, _ = anim.idle(avatar, 30 * 25, AnimState())
    lm = avatar.landmarks
    opening = []
    for s in (36, 42):  # per eye: dark (iris, pupil, lashes) pixels in the eye's box
        x0, y0 = lm[s : s + 6].min(0).astype(int) - 1
        x1, y1 = lm[s : s + 6].max(0).astype(int) + 2
        g = grey(frames[:, y0:y1, x0:x1])
        thr = np.percentile(grey(avatar.image[y0:y1, x0:x1]), 20)
        opening.append((g < thr).sum(axis=(1, 2)))
    opening = np.minimum(*opening).astype(np.float64)
    closed = opening < 0.4 * np.median(opening)
    blinks = int(np.sum(closed[1:] & ~closed[:-1]) + closed[0])
    assert 5 <= blinks <= 15, f"{blinks} blinks in 30 s"
    # Each blink lasts 150-250 ms: never more than ~7 frames closed in a row.
    runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], closed.astype(int), [0]]))))[::2]
    assert runs.max() <= 7, f"a blink held {runs.max()} frames"


def test_segments_join_without_a_jump(anim, avatar, audio):
    cuts = [0, 57_123, 118_999, len(audio)]  # not on frame boundaries, mid-speech
    segs, state = [], AnimState()
    for a, b in zip(cuts[:-1], cuts[1:]):
        frames, state = anim.render(avatar, audio[a:b], state)
        segs.append(frames)
    inside = max(step_sizes(s).max() for s in segs)
    joins = [jump(segs[i][-1], segs[i + 1][0]) for i in range(len(segs) - 1)]
    assert max(joins) <= inside, f"segment joins {joins} vs largest step inside {inside:.3f}"


def test_speech_idle_speech_join_without_a_jump(anim, avatar, audio):
    state = AnimState()
    s1, state = anim.render(avatar, audio[:40_000], state)  # ends mid-phrase, mouth moving
    idle, state = anim.idle(avatar, 50, state)
    s2, state = anim.render(avatar, audio[40_000:90_000], state)
    inside = max(step_sizes(x).max() for x in (s1, idle, s2))
    joins = [jump(s1[-1], idle[0]), jump(idle[-1], s2[0])]
    assert max(joins) <= inside, f"joins {joins} vs largest step inside {inside:.3f}"
    # Idle has life but no talking: the mouth closes within a few frames and stays closed.
    ys, xs = mouth_box(avatar.landmarks)
    dark = (grey(idle[:, ys, xs]) < 70).sum(axis=(1, 2))
    ref_dark = (grey(avatar.image[ys, xs]) < 70).sum()
    assert dark[8:].max() <= ref_dark + 5
    assert step_sizes(idle).max() > 0, "idle frames are frozen"


def test_life_is_a_function_of_the_clock(anim, avatar):
    """Two replicas given the same clock render the same frames (continuity by construction)."""
    other = ProceduralAnimator(fps=25, seed=0)
    a, _ = anim.idle(avatar, 10, AnimState(frame=1234))
    b, _ = other.idle(pickle.loads(pickle.dumps(avatar)), 10, pickle.loads(pickle.dumps(AnimState(frame=1234))))
    assert np.array_equal(a, b)
    c, _ = ProceduralAnimator(fps=25, seed=1).idle(avatar, 10, AnimState(frame=1234))
    assert not np.array_equal(a, c)


def test_head_motion_is_small(anim, avatar):
    """Sway and breathing move the face by at most a few pixels (measured by phase correlation)."""
    frames, _ = anim.idle(avatar, 250, AnimState())
    lm = avatar.landmarks
    y0, y1 = int(lm[19, 1]), int(lm[33, 1])
    x0, x1 = int(lm[0, 0]), int(lm[16, 0])
    ref = grey(avatar.image[y0:y1, x0:x1])
    win = cv2.createHanningWindow(ref.shape[::-1], cv2.CV_32F)
    shifts = np.array([cv2.phaseCorrelate(ref, grey(f[y0:y1, x0:x1]), win)[0] for f in frames[::5]])
    assert np.abs(shifts).max() <= 3.0
    assert np.abs(shifts).max() >= 0.3, "the head never moves"


@pytest.mark.parametrize(
    "image",
    [
        np.full((256, 256, 3), 128, np.uint8),
        np.random.default_rng(0).integers(0, 256, (320, 240, 3), dtype=np.uint8),
    ],
    ids=["grey", "noise"],
)
def test_image_without_a_face_raises(anim, image):
    with pytest.raises(AvatarError, match="no face"):
        anim.prepare_avatar(image)


def test_bad_image_type_raises(anim):
    with pytest.raises(AvatarError):
        anim.prepare_avatar(np.zeros((64, 64), np.float32))


def test_large_images_are_downscaled(anim, reference):
    big = cv2.resize(reference, (1536, 1536), interpolation=cv2.INTER_CUBIC)
    avatar = anim.prepare_avatar(big)
    assert max(avatar.size) <= 1024
    frames, _ = anim.render(avatar, np.zeros(1280, np.float32), AnimState())
    assert frames.shape == (2, *avatar.size, 3)
