"""Frames per second of the procedural animator on one core: render only, and render + H.264 encode.

Renders jfk.flac (11 s of speech) in 1 s segments with the state passed along, as a replica would,
at 256x256 and 512x512, and muxes each with `mux_segment` (H.264 + AAC fragmented MP4, the Animator
replica's own path). OpenCV runs on one thread. Real time is 25 fps.

    python -m benchmarks.animator_fps [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from avatar_core.media import decode_audio, mux_segment
from backends.procedural import AnimState, ProceduralAnimator

ROOT = Path(__file__).resolve().parents[1]

AUDIO = ROOT / "assets" / "media" / "jfk.flac"
AVATAR = ROOT / "assets" / "avatars" / "astronaut.png"
FPS = 25


def run(anim: ProceduralAnimator, avatar, audio: np.ndarray, encode: bool) -> tuple[float, int]:
    """Seconds to render (and mux, as the Animator replica does) the clip in 1 s segments; frames."""
    state = AnimState()
    n = 0
    t0 = time.perf_counter()
    for start in range(0, len(audio), 16_000):
        chunk = audio[start : start + 16_000]
        frames, state = anim.render(avatar, chunk, state)
        n += len(frames)
        if encode:
            mux_segment(frames, chunk, 16_000, fps=FPS)
    return time.perf_counter() - t0, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    audio = decode_audio(AUDIO.read_bytes(), 60)
    base = cv2.cvtColor(cv2.imread(str(AVATAR)), cv2.COLOR_BGR2RGB)
    anim = ProceduralAnimator(fps=FPS, seed=0)
    rows = []
    for size in (256, 512):
        img = cv2.resize(base, (size, size), interpolation=cv2.INTER_AREA) if base.shape[0] != size else base
        avatar = anim.prepare_avatar(img)
        run(anim, avatar, audio[:32_000], None)  # warm up: rig cache, page faults
        row = [f"{size}x{size}"]
        for encode in (False, True):
            best = min(run(anim, avatar, audio, encode)[0] for _ in range(args.repeats))
            n = -(-len(audio) // 640)
            row.append(n / best)
        rows.append(row)
    print(f"procedural animator, one thread, {len(audio) / 16000:.1f} s clip in 1 s segments, best of {args.repeats}")
    print("| size | render fps | render + mux_segment fps (H.264 + AAC) | x real time (render + mux) |")
    print("| --- | ---: | ---: | ---: |")
    for size, r, e in rows:
        print(f"| {size} | {r:.0f} | {e:.0f} | {e / FPS:.1f}x |")


if __name__ == "__main__":
    main()
